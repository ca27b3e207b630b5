// The parts of the message model that need no GMime (engine/message.h): cheap checks on raw bytes and
// plain helpers. Linked into every binary; the GMime half (message.cc) is linked statically into the
// server, the tests and the fuzzers, and loaded on first use by the `mailark` CLI
// (engine/message_loader.cc), whose commands that parse no mail so start without GMime and GLib.
#include <algorithm>

#include "common/ascii.h"
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
  for (std::size_t i = 0; i < colon; ++i) {
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

ParsedMessage parse_message_or_flag(std::string_view raw, const Limits& limits, bool headers_only,
                                    bool extract_documents) {
  auto parsed = parse_message(raw, limits, headers_only, extract_documents);
  if (parsed) return std::move(parsed).value();
  ParsedMessage msg;
  msg.malformed = true;
  msg.problems.push_back(parsed.error().context);
  return msg;
}

}  // namespace mailark
