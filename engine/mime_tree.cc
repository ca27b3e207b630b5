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
  std::size_t parts = 0;

  void headers(MimeNode& n, bool digest_child) {
    std::string_view h = raw.substr(n.header_begin, n.header_end - n.header_begin);
    bool typed = false;
    if (auto ct = mime_header(h, "Content-Type")) {
      if (auto mt = parse_content_type(*ct)) {
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
      if (auto d = parse_content_disposition(*v)) {
        n.disposition = d->disposition;
        n.disposition_params = std::move(d->params);
      }
    }
  }

  // Parses the entity [begin, end) (header and body) into n.
  void entity(MimeNode& n, std::size_t begin, std::size_t end, unsigned depth, bool digest_child) {
    ++parts;
    split_header(raw, begin, end, n);
    headers(n, digest_child);
    body(n, depth);
  }

  void body(MimeNode& n, unsigned depth) {
    std::string_view b = raw.substr(n.body_begin, n.body_end - n.body_begin);
    if (n.type == "text" || n.is_message()) n.lines = count_lines(b);
    if (depth >= kMaxMimeDepth || parts >= kMaxMimeParts) return;  // deeper structure stays opaque
    if (n.is_message()) {
      MimeNode inner;
      entity(inner, n.body_begin, n.body_end, depth + 1, false);
      n.children.push_back(std::move(inner));
      return;
    }
    if (!n.is_multipart()) return;
    std::string boundary;
    for (const auto& [k, v] : n.params)
      if (ascii_iequals(k, "boundary")) boundary = v;
    if (boundary.empty() || boundary.size() > 200) {
      // A multipart without a boundary is read as one opaque body.
      return;
    }
    const std::string delim = "--" + boundary;
    const bool digest = n.subtype == "digest";
    // Each delimiter line: at a line start, "--boundary", optional "--", then only blanks to the line end.
    std::size_t pos = n.body_begin;
    std::size_t part_start = std::string_view::npos;
    // Past kMaxMimeParts the parts left in this multipart are one opaque last part, from the first
    // of them to the end of the last (their delimiters inside it), as Dovecot does: nothing of the
    // message drops out of its structure (MimeTree.PartsPastTheLimitAreOneLastPart). One such part
    // at most for each multipart open at the time, so at most kMaxMimeDepth more parts in all.
    std::size_t rest_start = std::string_view::npos, rest_end = 0;
    auto close_part = [&](std::size_t delim_line_start) {
      if (part_start == std::string_view::npos) return;
      // The line end before the delimiter belongs to the delimiter.
      std::size_t end = delim_line_start;
      if (end > part_start && raw[end - 1] == '\n') --end;
      if (end > part_start && raw[end - 1] == '\r') --end;
      if (parts >= kMaxMimeParts) {
        if (rest_start == std::string_view::npos) rest_start = part_start;
        rest_end = std::max(end, part_start);
        return;
      }
      MimeNode child;
      entity(child, part_start, std::max(end, part_start), depth + 1, digest);
      n.children.push_back(std::move(child));
    };
    auto close_rest = [&] {
      if (rest_start == std::string_view::npos) return;
      MimeNode child;
      entity(child, rest_start, rest_end, depth + 1, digest);  // opaque: parts >= kMaxMimeParts
      n.children.push_back(std::move(child));
    };
    while (pos < n.body_end) {
      std::size_t le = std::min(line_end(raw, pos), n.body_end);
      std::string_view line = raw.substr(pos, le - pos);
      if (line.size() >= delim.size() && line.compare(0, delim.size(), delim) == 0) {
        std::string_view rest = line.substr(delim.size());
        bool closing = rest.size() >= 2 && rest[0] == '-' && rest[1] == '-';
        if (closing) rest.remove_prefix(2);
        bool only_blanks = true;
        for (char c : rest) only_blanks = only_blanks && (c == ' ' || c == '\t' || c == '\r');
        if (only_blanks) {
          close_part(pos);
          if (closing) {
            close_rest();
            return;  // the epilogue follows
          }
          part_start = std::min(le + 1, n.body_end);
        }
      }
      pos = le + 1;
    }
    // No closing delimiter: the last part runs to the end.
    if (part_start != std::string_view::npos && parts >= kMaxMimeParts) {
      if (rest_start == std::string_view::npos) rest_start = part_start;
      rest_end = n.body_end;
    } else if (part_start != std::string_view::npos) {
      MimeNode child;
      entity(child, part_start, n.body_end, depth + 1, digest);
      n.children.push_back(std::move(child));
    }
    close_rest();
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
  Walker w{raw};
  MimeNode top;
  w.entity(top, 0, raw.size(), 0, false);
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
