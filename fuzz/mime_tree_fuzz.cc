// Fuzzes the MIME byte-range tree (engine/mime_tree.cc, with GMime reading Content-Type and
// Content-Disposition) and what IMAP FETCH makes of it (api/imap/fetch.cc): ENVELOPE, BODYSTRUCTURE
// and section bytes, BINARY's decoded sections, and the CRLF form IMAP sends. Checks what must hold
// for any message: every node's ranges lie inside the message and in order, children inside their
// parent, a section is a piece of the message (or built from its header lines), a decoded section is
// no longer than its part, and the CRLF form has no bare LF and the size crlf_lines_size says.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "api/imap/fetch.h"
#include "engine/mime_tree.h"

using namespace mailark;

namespace {
void check(const MimeNode& n, std::size_t begin, std::size_t end, unsigned depth) {
  if (n.header_begin < begin || n.header_begin > n.header_end || n.header_end > n.body_begin ||
      n.body_begin > n.body_end || n.body_end > end || depth > kMaxMimeDepth + 1)
    std::abort();
  for (const auto& c : n.children) check(c, n.body_begin, n.body_end, depth + 1);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  std::string_view raw(reinterpret_cast<const char*>(data) + 2, size - 2);
  MimeNode top = parse_mime_tree(raw);
  check(top, 0, raw.size(), 0);
  for (const auto& [name, value] : mime_header_list(raw.substr(0, top.header_end), 50))
    if (name.empty() || name.size() > top.header_end || name.find_first_of(" \t:\r\n") != std::string::npos ||
        value.find_first_of("\r\n") != std::string::npos)
      std::abort();
  (void)api::imap::body_structure(raw, top, true);
  (void)api::imap::envelope(raw, top);
  api::imap::Section s;
  if (data[0] % 4) s.part.push_back(1 + data[0] % 4);
  if (data[1] % 3) s.part.push_back(1 + data[1] % 3);
  s.text = static_cast<api::imap::Section::Text>(data[1] % 6);
  if (s.text == api::imap::Section::Text::kHeaderFields || s.text == api::imap::Section::Text::kHeaderFieldsNot)
    s.fields = {"Subject", "From"};
  if (s.text == api::imap::Section::Text::kMime && s.part.empty()) s.text = api::imap::Section::Text::kAll;
  auto bytes = api::imap::section_bytes(raw, top, s);
  if (bytes && s.text != api::imap::Section::Text::kHeaderFields && s.text != api::imap::Section::Text::kHeaderFieldsNot &&
      raw.find(*bytes) == std::string_view::npos)
    std::abort();
  api::imap::Section b;
  b.part = s.part;
  bool unknown_cte = false;
  auto decoded = api::imap::binary_section(raw, top, b, &unknown_cte);
  if (decoded && (unknown_cte || decoded->size() > raw.size())) std::abort();
  std::string crlf = crlf_lines(std::string(raw));
  if (crlf.size() != crlf_lines_size(raw) || crlf.size() < raw.size()) std::abort();
  for (std::size_t i = crlf.find('\n'); i != std::string::npos; i = crlf.find('\n', i + 1))
    if (i == 0 || crlf[i - 1] != '\r') std::abort();
  return 0;
}
