// The parts of the message model that need no GMime (engine/message.h): cheap checks on raw bytes and
// plain helpers. Linked into every binary; the GMime half (message.cc) is linked statically into the
// server, the tests and the fuzzers, and loaded on first use by the `mailark` CLI
// (engine/message_loader.cc), whose commands that parse no mail so start without GMime and GLib.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <random>

#include "common/ascii.h"
#include "common/dates.h"
#include "engine/message.h"

namespace mailark {
namespace {

std::string_view first_line(std::string_view s) {
  std::size_t nl = s.find('\n');
  return nl == std::string_view::npos ? s : s.substr(0, nl);
}

}  // namespace

bool is_header_field_line(std::string_view line) {
  std::size_t colon = line.find(':');
  if (colon == 0 || colon == std::string_view::npos || colon > 200) return false;
  // RFC 5322 4.5: the obsolete syntax, which receivers must still read, allows blanks between the
  // field name and its colon ("Subject : x"). Test: MessageModel.ObsoleteBlanksBeforeTheColonAreMail.
  std::size_t name_end = colon;
  while (name_end > 0 && (line[name_end - 1] == ' ' || line[name_end - 1] == '\t')) --name_end;
  if (name_end == 0) return false;
  for (std::size_t i = 0; i < name_end; ++i) {
    unsigned char c = static_cast<unsigned char>(line[i]);
    if (c < 33 || c > 126) return false;
  }
  return true;
}

std::string Address::to_string() const {
  if (name.empty()) return addr;
  if (addr.empty()) return name;
  return name + " <" + addr + ">";
}

std::string join_addresses(const std::vector<Address>& list) {
  std::string s;
  for (const auto& a : list) {
    if (!s.empty()) s += ", ";
    s += a.to_string();
  }
  return s;
}

bool ParsedMessage::has_attachment() const {
  return std::any_of(parts.begin(), parts.end(), [](const MimePart& p) { return p.is_attachment; });
}

bool ParsedMessage::is_plain_single_part() const {
  if (malformed || parts.size() != 1) return false;
  const MimePart& p = parts[0];
  return p.content_type == "text/plain" && !p.is_attachment &&
         (p.transfer_encoding.empty() || p.transfer_encoding == "7bit" || p.transfer_encoding == "8bit" ||
          p.transfer_encoding == "binary");
}

std::optional<std::string> header_field(std::string_view msg, std::string_view name) {
  std::size_t pos = 0;
  while (pos < msg.size()) {
    std::size_t eol = msg.find('\n', pos);
    std::string_view line = msg.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) return std::nullopt;  // end of the header section
    if (line.size() > name.size() && line[name.size()] == ':' && ascii_iequals(line.substr(0, name.size()), name)) {
      std::string value(line.substr(name.size() + 1));
      std::size_t next = eol == std::string_view::npos ? msg.size() : eol + 1;
      while (next < msg.size() && (msg[next] == ' ' || msg[next] == '\t')) {
        std::size_t e2 = msg.find('\n', next);
        std::string_view cont = msg.substr(next, e2 == std::string_view::npos ? std::string_view::npos : e2 - next);
        if (!cont.empty() && cont.back() == '\r') cont.remove_suffix(1);
        value += cont;
        next = e2 == std::string_view::npos ? msg.size() : e2 + 1;
      }
      return value;
    }
    if (eol == std::string_view::npos) break;
    pos = eol + 1;
  }
  return std::nullopt;
}

namespace {

// A declared charset as the readers pass it to iconv: the superset a label is read as in practice
// (the WHATWG Encoding Standard's mapping, for the labels mail uses: senders that say GB2312 or
// EUC-KR write GBK or CP949, ISO-8859-1 is read as windows-1252), or empty where windows-1252, the
// last fallback, reads it already. Nothing for a label that says nothing of 8-bit header bytes
// (US-ASCII, UTF-8, which is tried first anyway, "unknown").
std::optional<std::string> charset_for_reading(std::string label) {
  static constexpr std::string_view kNone[] = {"us-ascii", "ascii", "ansi_x3.4-1968", "utf-8", "utf8",
                                               "unknown-8bit", "x-unknown", "unknown"};
  for (std::string_view n : kNone)
    if (label == n) return std::nullopt;
  static constexpr std::pair<std::string_view, std::string_view> kAs[] = {
      {"iso-8859-1", ""},        {"iso_8859-1", ""},      {"iso8859-1", ""},      {"latin1", ""},
      {"l1", ""},                {"windows-1252", ""},    {"cp1252", ""},         {"gb2312", "gb18030"},
      {"gbk", "gb18030"},        {"x-gbk", "gb18030"},    {"csgb2312", "gb18030"}, {"euc-cn", "gb18030"},
      {"ks_c_5601-1987", "cp949"}, {"euc-kr", "cp949"},   {"ks_c_5601", "cp949"}, {"iso-8859-9", "windows-1254"},
      {"shift_jis", "cp932"},    {"shift-jis", "cp932"},  {"sjis", "cp932"},      {"x-sjis", "cp932"},
      {"big5", "big5-hkscs"},    {"tis-620", "cp874"},    {"iso-8859-11", "cp874"}};
  for (const auto& [from, to] : kAs)
    if (label == from) return std::string(to);
  return label;
}

}  // namespace

std::string declared_charset(std::string_view raw) {
  raw = raw.substr(0, 1 << 20);  // bounded: a reader may ask for each message it shows
  // A message of ASCII alone has nothing to read in it (the common case: one pass, no line walk)
  if (std::none_of(raw.begin(), raw.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) return {};
  constexpr std::string_view kName = "content-type";
  std::size_t pos = 0;
  while (pos < raw.size()) {
    std::size_t eol = raw.find('\n', pos);
    if (eol == std::string_view::npos) eol = raw.size();
    std::string_view line = raw.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.size() <= kName.size() || !ascii_iequals(line.substr(0, kName.size()), kName)) continue;
    std::size_t colon = kName.size();
    while (colon < line.size() && (line[colon] == ' ' || line[colon] == '\t')) ++colon;
    if (colon >= line.size() || line[colon] != ':') continue;
    // The field's value with its continuation lines, lower case, at most 4 KiB
    std::string value = ascii_lower(line.substr(colon + 1, 4096));
    while (pos < raw.size() && (raw[pos] == ' ' || raw[pos] == '\t') && value.size() < 4096) {
      std::size_t e = raw.find('\n', pos);
      if (e == std::string_view::npos) e = raw.size();
      value += ascii_lower(raw.substr(pos, std::min<std::size_t>(e - pos, 4096)));
      pos = e + 1;
    }
    for (std::size_t at = value.find("charset"); at != std::string::npos; at = value.find("charset", at + 7)) {
      if (at == 0 || (value[at - 1] != ';' && value[at - 1] != ' ' && value[at - 1] != '\t')) continue;
      std::size_t i = at + 7;
      while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
      if (i >= value.size() || value[i] != '=') continue;
      ++i;
      while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
      if (i < value.size() && value[i] == '"') ++i;
      std::string label;
      while (i < value.size() && label.size() <= 40 &&
             ((value[i] >= 'a' && value[i] <= 'z') || (value[i] >= '0' && value[i] <= '9') || value[i] == '-' ||
              value[i] == '_' || value[i] == '.' || value[i] == ':'))
        label += value[i++];
      if (label.empty() || label.size() > 40) continue;
      if (auto cs = charset_for_reading(std::move(label))) return *cs;
    }
  }
  return {};
}

std::string with_origin_fields(std::string raw, std::int64_t now, std::string_view hostname) {
  const bool date = !header_field(raw, "Date").has_value();
  const bool id = !header_field(raw, "Message-ID").has_value();
  if (!date && !id) return raw;
  // The end of the header section: the start of its blank line, or the end of a message that has no
  // body; and the line end it uses.
  std::size_t pos = 0, at = raw.size();
  std::string eol = "\r\n";
  while (pos < raw.size()) {
    std::size_t nl = raw.find('\n', pos);
    if (nl == std::string::npos) break;
    const bool cr = nl > pos && raw[nl - 1] == '\r';
    if (pos == 0) eol = cr ? "\r\n" : "\n";
    if (nl == pos || (cr && nl == pos + 1)) {
      at = pos;
      break;
    }
    pos = nl + 1;
  }
  std::string fields;
  if (at == raw.size() && !raw.empty() && raw.back() != '\n') fields += eol;  // a last field without its line end
  if (date) fields += "Date: " + rfc5322_date(now) + eol;
  if (id) {
    std::random_device rd;
    char rnd[17];
    std::snprintf(rnd, sizeof rnd, "%08x%08x", rd(), rd());
    fields += "Message-ID: <" + std::to_string(now) + "." + rnd + "@" + std::string(hostname) + ">" + eol;
  }
  raw.insert(at, fields);
  return raw;
}

std::string not_mail_reason(std::string_view raw) {
  if (raw.empty()) return "empty file";
  std::string_view line = first_line(raw);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.substr(0, 5) == "From ") return {};
  // An empty header section followed by a body is still RFC 5322 syntax (mail stores hold such
  // messages); it is archived and flagged malformed.
  if (line.empty()) return raw.size() > first_line(raw).size() + 1 ? std::string() : "empty message";
  if (!is_header_field_line(line)) {
    return "not an email message: the first line is not a header field";
  }
  return {};
}

bool has_eight_bit_body(std::string_view raw) {
  // The header section ends at the first empty line (a message that starts with one has none).
  std::size_t body = std::string_view::npos;
  if (raw.substr(0, 1) == "\n") body = 1;
  else if (raw.substr(0, 2) == "\r\n") body = 2;
  else if (std::size_t lf = raw.find("\n\n"), crlf = raw.find("\n\r\n"); lf != std::string_view::npos || crlf != std::string_view::npos)
    body = lf < crlf ? lf + 2 : crlf + 3;
  if (body == std::string_view::npos) return false;
  return std::any_of(raw.begin() + static_cast<std::ptrdiff_t>(body), raw.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

ParsedMessage parse_message_or_flag(std::string_view raw, const Limits& limits, bool headers_only,
                                    bool extract_documents) {
  auto parsed = parse_message(raw, limits, headers_only, extract_documents);
  if (parsed) return std::move(parsed).value();
  ParsedMessage msg;
  msg.malformed = true;
  msg.problems.push_back(parsed.error().context);
  return msg;
}

namespace {

// Charsets whose ASCII bytes mean ASCII (their conversion of an ASCII text is that text). Lower case.
bool ascii_compatible_charset(std::string_view c) {
  static constexpr std::string_view kSame[] = {"us-ascii", "ascii", "ansi_x3.4-1968", "utf-8", "utf8",
                                                "windows-1250", "windows-1251", "windows-1252", "windows-1253",
                                                "windows-1254", "windows-1255", "windows-1256", "windows-1257",
                                                "windows-1258", "cp1252", "koi8-r", "koi8-u"};
  for (std::string_view s : kSame)
    if (c == s) return true;
  // iso-8859-1 ... iso-8859-16
  if (c.substr(0, 9) == "iso-8859-" && c.size() <= 11 && c.size() > 9) {
    for (char d : c.substr(9))
      if (d < '0' || d > '9') return false;
    return true;
  }
  return false;
}

// A Content-Type value (one line or folded, ASCII) that is text/plain with only harmless parameters.
bool plain_text_type(std::string_view value) {
  // Whitespace may stand around the separators ("text / plain; charset = utf-8"), never inside a
  // token: GMime reads "t ext/plain" as another type (found by fuzz/message_fuzz.cc; regression
  // fuzz/regressions/message/plain-type-space-inside-token).
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  const auto separator = [](char c) { return c == ';' || c == '/' || c == '='; };
  for (std::size_t i = 0; i < value.size();) {
    if (!space(value[i])) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < value.size() && space(value[end])) ++end;
    if (i > 0 && end < value.size() && !separator(value[i - 1]) && !separator(value[end])) return false;
    i = end;
  }
  std::string v;
  for (char c : value)
    if (!space(c)) v.push_back(ascii_lower(c));
  if (v.find('(') != std::string::npos || v.find('\\') != std::string::npos) return false;  // comments, escapes
  std::string_view rest = v;
  if (rest.substr(0, 10) != "text/plain") return false;
  rest.remove_prefix(10);
  while (!rest.empty()) {
    if (rest[0] != ';') return false;
    rest.remove_prefix(1);
    if (rest.empty()) break;  // a trailing ';'
    std::size_t end = rest.find(';');
    std::string_view param = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    std::size_t eq = param.find('=');
    if (eq == std::string_view::npos) return false;
    std::string_view name = param.substr(0, eq), val = param.substr(eq + 1);
    if (val.size() >= 2 && val.front() == '"' && val.back() == '"') val = val.substr(1, val.size() - 2);
    if (val.find('"') != std::string_view::npos) return false;
    if (name == "charset") {
      if (!ascii_compatible_charset(val)) return false;
    } else if (name != "format" && name != "delsp" && name != "reply-type") {
      return false;  // name= makes it an attachment; RFC 2231 continuations; anything else: GMime decides
    }
  }
  return true;
}

}  // namespace

std::optional<ParsedMessage> parse_plain_text(std::string_view raw, const Limits& limits) {
  if (!not_mail_reason(raw).empty() || raw.substr(0, 5) == "From ") return std::nullopt;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(raw[i]);
    if (c == '\r') {
      if (i + 1 == raw.size() || raw[i + 1] != '\n') return std::nullopt;
    } else if ((c < 0x20 && c != '\t' && c != '\n') || c > 0x7e) {
      return std::nullopt;
    }
  }
  // The header section, field by field (a field and its continuation lines), up to the first empty
  // line whatever ends the lines around it (a header line ending in LF, then CRLF: GMime's end too).
  struct Field {
    std::string_view name, value;  // value: after the colon, continuation lines and line ends included
  };
  std::vector<Field> fields;
  std::size_t pos = 0, body_start = std::string_view::npos;
  while (pos < raw.size()) {
    std::size_t eol = raw.find('\n', pos);
    if (eol == std::string_view::npos) return std::nullopt;  // no body: nothing to gain
    std::string_view line = raw.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      body_start = eol + 1;
      break;
    }
    if (eol > limits.max_header_bytes) return std::nullopt;
    if (line[0] == ' ' || line[0] == '\t') {
      if (fields.empty()) return std::nullopt;
      Field& f = fields.back();
      f.value = std::string_view(f.value.data(), line.data() + line.size() - f.value.data());
    } else {
      if (!is_header_field_line(line)) return std::nullopt;
      std::size_t colon = line.find(':');
      // Blanks before the colon (the obsolete syntax): GMime decides (fuzz/regressions/message/
      // obsolete-blanks-before-colon: this reader took "Subject " for another field than Subject).
      if (line[colon - 1] == ' ' || line[colon - 1] == '\t') return std::nullopt;
      fields.push_back({line.substr(0, colon), line.substr(colon + 1)});
    }
    pos = eol + 1;
  }
  if (body_start == std::string_view::npos || fields.empty()) return std::nullopt;
  if (raw.substr(0, body_start).find("=?") != std::string_view::npos) return std::nullopt;  // encoded words
  const Field* subject = nullptr;
  unsigned types = 0, encodings = 0, subjects = 0;
  for (const Field& f : fields) {
    if (ascii_iequals(f.name, "Subject")) {
      ++subjects;
      subject = &f;
    } else if (ascii_iequals(f.name, "Content-Type")) {
      if (++types > 1 || !plain_text_type(f.value)) return std::nullopt;
    } else if (ascii_iequals(f.name, "Content-Transfer-Encoding")) {
      std::string v = ascii_lower(f.value);
      v.erase(0, v.find_first_not_of(" \t\r\n"));
      v.erase(v.find_last_not_of(" \t\r\n") + 1);
      if (++encodings > 1 || (v != "7bit" && v != "8bit" && v != "binary")) return std::nullopt;
    } else if (ascii_iequals(f.name, "Content-Disposition")) {
      return std::nullopt;
    }
  }
  if (subjects > 1) return std::nullopt;
  std::string_view body = raw.substr(body_start);
  if (body.size() > limits.max_part_bytes) return std::nullopt;

  ParsedMessage out;
  if (subject) {
    std::string_view v = subject->value;
    // Leading whitespace, line ends included: a subject folded from an empty first line ("Subject:",
    // then " words") is "words", as GMime gives it (fuzz/regressions/message/folded-blank-subject).
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t' || v.front() == '\r' || v.front() == '\n'))
      v.remove_prefix(1);
    // Unfolded as GMime unfolds (the line ends dropped, the whitespace after them kept), tabs made
    // spaces as parse_message makes them.
    for (char c : v) {
      if (c == '\r' || c == '\n') continue;
      out.subject.push_back(c == '\t' ? ' ' : c);
    }
    while (!out.subject.empty() && out.subject.back() == ' ') out.subject.pop_back();  // as GMime trims
  }
  out.body_text.assign(body.substr(0, limits.max_index_text_bytes));
  return out;
}

}  // namespace mailark
