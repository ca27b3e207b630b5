#include "engine/mime_tree.h"

#include <algorithm>

#include "common/ascii.h"
#include "engine/message.h"

namespace mailark {
namespace {

// The end of the line starting at pos (index of '\n', or size), and the start of the next.
std::size_t line_end(std::string_view s, std::size_t pos) {
  std::size_t lf = s.find('\n', pos);
  return lf == std::string_view::npos ? s.size() : lf;
}

bool is_blank_line(std::string_view s, std::size_t pos, std::size_t end) {
  return pos == end || (end == pos + 1 && s[pos] == '\r');
}

// Splits [begin, end) into header section and body at the first blank line.
void split_header(std::string_view raw, std::size_t begin, std::size_t end, MimeNode& n) {
  n.header_begin = begin;
  std::size_t pos = begin;
  while (pos < end) {
    std::size_t le = std::min(line_end(raw, pos), end);
    if (is_blank_line(raw, pos, le)) {
      n.header_end = std::min(le + 1, end);
      n.body_begin = n.header_end;
      n.body_end = end;
      return;
    }
    pos = le + 1;
  }
  // No blank line: all header, no body.
  n.header_end = end;
  n.body_begin = end;
  n.body_end = end;
}

std::size_t count_lines(std::string_view body) {
  std::size_t n = 0;
  for (char c : body) n += c == '\n';
  if (!body.empty() && body.back() != '\n') ++n;
  return n;
}

struct Walker {
  std::string_view raw;
  std::string charset;  // declared_charset: raw 8-bit bytes in parameters (file names) read in it
  std::size_t parts = 0;

  void headers(MimeNode& n, bool digest_child) {
    std::string_view h = raw.substr(n.header_begin, n.header_end - n.header_begin);
    bool typed = false;
    if (auto ct = mime_header(h, "Content-Type")) {
      if (auto mt = parse_content_type(*ct, charset)) {
        n.type = mt->type;
        n.subtype = mt->subtype;
        n.params = std::move(mt->params);
        typed = true;
      }
    }
    if (!typed) {
      if (digest_child) {
        n.type = "message";
        n.subtype = "rfc822";
      } else {
        n.params = {{"charset", "us-ascii"}};
      }
    }
    if (auto v = mime_header(h, "Content-Transfer-Encoding")) {
      std::string e = ascii_lower(*v);
      while (!e.empty() && (e.back() == ' ' || e.back() == '\t' || e.back() == '\r')) e.pop_back();
      if (!e.empty() && e.size() < 100) n.encoding = e;
    }
    n.id = mime_header(h, "Content-ID");
    n.description = mime_header(h, "Content-Description");
    n.md5 = mime_header(h, "Content-MD5");
    n.language = mime_header(h, "Content-Language");
    n.location = mime_header(h, "Content-Location");
    if (auto v = mime_header(h, "Content-Disposition")) {
      if (auto d = parse_content_disposition(*v, charset)) {
        n.disposition = d->disposition;
        n.disposition_params = std::move(d->params);
      }
    }
  }

  // The delimiter lines of the multiparts open around the entity being read, outermost first:
  // "--" + boundary. One level a multipart, so at most kMaxMimeDepth.
  std::vector<std::string> open;

  struct Delimiter {
    int level = -1;  // index in `open`, -1: not a delimiter line
    bool closing = false;
  };

  // Whether the line [pos, le) is a delimiter of an open multipart. RFC 2046 5.1.1's note to
  // implementors: the boundary is compared with the beginning of the line, the whole line need not
  // match (a delimiter line with text after it is one, as Dovecot reads it). Of the open delimiters
  // that begin the line the longest wins, so an inner boundary that extends an outer one
  // ("--b" and "--b-1") is the inner one's; of equal ones the innermost (the same boundary nested).
  // Tests: MimeTree.DelimiterLinesAreMatchedByTheirBeginning, MimeTree.SameBoundaryNested.
  Delimiter delimiter(std::size_t pos, std::size_t le) const {
    Delimiter d;
    if (le - pos < 2 || raw[pos] != '-' || raw[pos + 1] != '-') return d;
    std::size_t best = 0;
    for (int i = static_cast<int>(open.size()) - 1; i >= 0; --i) {
      const std::string& o = open[static_cast<std::size_t>(i)];
      if (o.size() > best && o.size() <= le - pos && raw.compare(pos, o.size(), o) == 0) {
        best = o.size();
        d.level = i;
      }
    }
    if (d.level >= 0) d.closing = pos + best + 2 <= le && raw[pos + best] == '-' && raw[pos + best + 1] == '-';
    return d;
  }

  // The start of the first delimiter line at or after pos (a line start) before limit, or limit.
  std::size_t next_delimiter(std::size_t pos, std::size_t limit, Delimiter& d) const {
    while (pos < limit) {
      std::size_t le = std::min(line_end(raw, pos), limit);
      d = delimiter(pos, le);
      if (d.level >= 0) return pos;
      pos = le + 1;
    }
    d = Delimiter{};
    return limit;
  }

  // Where the content before a delimiter line at `at` ends: the line end before the delimiter
  // belongs to the delimiter (RFC 2046 5.1.1), never before `from`.
  std::size_t before_delimiter(std::size_t at, std::size_t from) const {
    std::size_t end = at;
    if (end > from && raw[end - 1] == '\n') --end;
    if (end > from && raw[end - 1] == '\r') --end;
    return std::max(end, from);
  }

  // An entity whose extent is known, [begin, end), read without looking into its body (the parts
  // past kMaxMimeParts).
  void opaque_entity(MimeNode& n, std::size_t begin, std::size_t end, bool digest_child) {
    ++parts;
    split_header(raw, begin, end, n);
    headers(n, digest_child);
    count_body_lines(n);
  }

  void count_body_lines(MimeNode& n) {
    if (n.type == "text" || n.is_message())
      n.lines = count_lines(raw.substr(n.body_begin, n.body_end - n.body_begin));
  }

  // Reads the entity (header and body) starting at `begin` into n. It ends at the first delimiter
  // line of a multipart open around it, or at limit; returns where, with the delimiter in d.
  std::size_t entity(MimeNode& n, std::size_t begin, std::size_t limit, unsigned depth, bool digest_child,
                     Delimiter& d) {
    ++parts;
    // The header section: to the first blank line, unless a delimiter comes first.
    std::size_t pos = begin;
    bool blank = false;
    while (pos < limit) {
      std::size_t le = std::min(line_end(raw, pos), limit);
      if (is_blank_line(raw, pos, le)) {
        blank = true;
        pos = std::min(le + 1, limit);
        break;
      }
      d = delimiter(pos, le);
      if (d.level >= 0) break;
      pos = le + 1;
    }
    if (!blank) {  // all header, no body
      std::size_t stop = std::min(pos, limit);
      if (stop == limit) d = Delimiter{};
      split_header(raw, begin, d.level >= 0 ? before_delimiter(stop, begin) : stop, n);
      headers(n, digest_child);
      return stop;
    }
    split_header(raw, begin, pos, n);
    headers(n, digest_child);
    const std::size_t body_begin = pos;
    std::size_t stop;
    const bool deeper = depth < kMaxMimeDepth && parts < kMaxMimeParts;  // else the body stays opaque
    std::string boundary;
    if (n.is_multipart())
      for (const auto& [k, v] : n.params)
        if (ascii_iequals(k, "boundary")) boundary = v;
    if (deeper && n.is_message()) {
      MimeNode inner;
      stop = entity(inner, body_begin, limit, depth + 1, false, d);
      n.children.push_back(std::move(inner));
    } else if (deeper && n.is_multipart() && !boundary.empty()) {
      stop = multipart(n, body_begin, limit, depth, "--" + boundary, d);
    } else {
      // A leaf, or a multipart without a boundary (one opaque body).
      stop = next_delimiter(body_begin, limit, d);
    }
    std::size_t end = d.level >= 0 ? before_delimiter(stop, begin) : stop;
    // A part may begin right at that line end ("--in CRLF --outer": the empty last part of "in" is
    // after the CRLF the outer delimiter takes): the entity holds its parts whatever the delimiter.
    if (!n.children.empty()) end = std::max(end, n.children.back().body_end);
    if (end < body_begin) {
      // The delimiter right after the blank line takes that line's end: no blank line is left, so
      // the entity is all header (as it would be read with its end known first).
      split_header(raw, begin, end, n);
      n.children.clear();
      if (deeper && n.is_message()) {  // an empty encapsulated message, so that it still has one
        MimeNode inner;
        opaque_entity(inner, end, end, false);
        n.children.push_back(std::move(inner));
      }
    }
    n.body_end = std::max(end, n.body_begin);
    count_body_lines(n);
    return stop;
  }

  // The parts of a multipart whose body starts at body_begin; returns where the multipart ends (the
  // first delimiter line of an enclosing multipart after its own closing one, or limit).
  std::size_t multipart(MimeNode& n, std::size_t body_begin, std::size_t limit, unsigned depth, std::string delim,
                        Delimiter& d) {
    const bool digest = n.subtype == "digest";
    open.push_back(std::move(delim));
    const int own = static_cast<int>(open.size()) - 1;
    // Past kMaxMimeParts the parts left in this multipart are one opaque last part, from the first
    // of them to the end of the last (their delimiters inside it), as Dovecot does: nothing of the
    // message drops out of its structure (MimeTree.PartsPastTheLimitAreOneLastPart). One such part
    // at most for each multipart open at the time, so at most kMaxMimeDepth more parts in all.
    std::size_t rest_start = std::string_view::npos, rest_end = 0;
    std::size_t at = next_delimiter(body_begin, limit, d);  // the preamble ends
    while (d.level == own && !d.closing) {
      const std::size_t part_start = std::min(line_end(raw, at) + 1, limit);
      if (parts >= kMaxMimeParts) {
        if (rest_start == std::string_view::npos) rest_start = part_start;
        at = next_delimiter(part_start, limit, d);
        rest_end = d.level >= 0 ? before_delimiter(at, part_start) : limit;
        continue;
      }
      MimeNode child;
      at = entity(child, part_start, limit, depth + 1, digest, d);
      n.children.push_back(std::move(child));
    }
    if (rest_start != std::string_view::npos) {
      MimeNode child;
      opaque_entity(child, rest_start, std::max(rest_end, rest_start), digest);
      n.children.push_back(std::move(child));
    }
    open.pop_back();
    if (d.level == own)  // the closing delimiter: the epilogue runs to an enclosing delimiter
      at = next_delimiter(std::min(line_end(raw, at) + 1, limit), limit, d);
    return at;  // an enclosing multipart's delimiter (this one unclosed) or the end
  }
};

// Calls fn(name, start, end) for each field of a header section: [start, end) spans the field with
// its continuation lines and line end.
template <typename Fn>
void each_field(std::string_view h, Fn&& fn) {
  std::size_t pos = 0;
  while (pos < h.size()) {
    std::size_t le = line_end(h, pos);
    if (is_blank_line(h, pos, le)) return;
    std::size_t start = pos;
    std::size_t next = le + 1;
    while (next < h.size() && (h[next] == ' ' || h[next] == '\t')) {
      std::size_t le2 = line_end(h, next);
      if (is_blank_line(h, next, le2)) break;
      next = le2 + 1;
    }
    std::size_t end = std::min(next, h.size());
    std::string_view field = h.substr(start, end - start);
    std::size_t colon = field.find(':');
    std::string_view name = colon == std::string_view::npos ? std::string_view() : field.substr(0, colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
    if (!fn(name, start, end)) return;
    pos = next;
  }
}

}  // namespace

MimeNode parse_mime_tree(std::string_view raw) {
  Walker w{raw, declared_charset(raw)};
  MimeNode top;
  Walker::Delimiter d;
  w.entity(top, 0, raw.size(), 0, false, d);
  return top;
}

std::size_t crlf_lines_size(std::string_view raw) {
  std::size_t n = raw.size();
  for (std::size_t pos = raw.find('\n'); pos != std::string_view::npos; pos = raw.find('\n', pos + 1))
    if (pos == 0 || raw[pos - 1] != '\r') ++n;
  return n;
}

std::string crlf_lines(std::string raw) {
  const std::size_t size = crlf_lines_size(raw);
  if (size == raw.size()) return raw;
  std::string out;
  out.reserve(size);
  std::size_t from = 0;
  for (std::size_t pos = raw.find('\n'); pos != std::string::npos; pos = raw.find('\n', pos + 1)) {
    if (pos > 0 && raw[pos - 1] == '\r') continue;
    out.append(raw, from, pos - from);
    out += "\r\n";
    from = pos + 1;
  }
  out.append(raw, from, std::string::npos);
  return out;
}

namespace {
// A field's value: after the name and the colon, line breaks of the folding removed, blanks trimmed.
std::string field_value(std::string_view h, std::string_view field_name, std::size_t start, std::size_t end) {
  std::string_view v = h.substr(start + field_name.size(), end - start - field_name.size());
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  if (!v.empty() && v.front() == ':') v.remove_prefix(1);
  std::string value;
  for (char c : v)
    if (c != '\r' && c != '\n') value += c;
  std::size_t a = value.find_first_not_of(" \t");
  std::size_t b = value.find_last_not_of(" \t");
  return a == std::string::npos ? std::string() : value.substr(a, b - a + 1);
}
}  // namespace

std::optional<std::string> mime_header(std::string_view h, std::string_view name) {
  std::optional<std::string> out;
  each_field(h, [&](std::string_view field_name, std::size_t start, std::size_t end) {
    if (!ascii_iequals(field_name, name)) return true;
    out = field_value(h, field_name, start, end);
    return false;
  });
  return out;
}

std::optional<std::string> mime_header_last(std::string_view h, std::string_view name) {
  std::optional<std::pair<std::size_t, std::size_t>> last;
  std::string_view last_name;
  each_field(h, [&](std::string_view field_name, std::size_t start, std::size_t end) {
    if (ascii_iequals(field_name, name)) {
      last = {start, end};
      last_name = field_name;
    }
    return true;
  });
  if (!last) return std::nullopt;
  return field_value(h, last_name, last->first, last->second);
}

std::optional<std::string> mime_header_joined(std::string_view h, std::string_view name) {
  std::optional<std::string> out;
  each_field(h, [&](std::string_view field_name, std::size_t start, std::size_t end) {
    if (!ascii_iequals(field_name, name)) return true;
    std::string value = field_value(h, field_name, start, end);
    if (!out) {
      out = std::move(value);
    } else if (!value.empty()) {
      if (out->size() + value.size() + 2 > kMaxJoinedHeaderBytes) return false;
      if (!out->empty()) *out += ", ";
      *out += value;
    }
    return true;
  });
  return out;
}

std::vector<std::pair<std::string, std::string>> mime_header_list(std::string_view h, std::size_t max) {
  std::vector<std::pair<std::string, std::string>> out;
  each_field(h, [&](std::string_view field_name, std::size_t start, std::size_t end) {
    // Only lines that are header fields (RFC 5322 2.2: a name of printable characters but the
    // colon); an mbox "From " line or a stray line is not one.
    const bool field = !field_name.empty() && std::all_of(field_name.begin(), field_name.end(), [](char c) {
      return c > 32 && c < 127 && c != ':';
    });
    if (field) out.emplace_back(std::string(field_name), field_value(h, field_name, start, end));
    return out.size() < max;
  });
  return out;
}

std::string mime_header_fields(std::string_view h, const std::vector<std::string>& names, bool exclude) {
  std::string out;
  each_field(h, [&](std::string_view field_name, std::size_t start, std::size_t end) {
    bool listed = false;
    for (const auto& n : names) listed = listed || ascii_iequals(n, field_name);
    if (listed != exclude) {
      out.append(h.substr(start, end - start));
      if (out.back() != '\n') out += "\r\n";
    }
    return true;
  });
  out += "\r\n";
  return out;
}

}  // namespace mailark
