// Fuzzes the MIME byte-range tree (engine/mime_tree.cc, with GMime reading Content-Type and
// Content-Disposition) and what IMAP FETCH makes of it (api/imap/fetch.cc): ENVELOPE, BODYSTRUCTURE
// and section bytes. Checks what must hold for any message: every node's ranges lie inside the
// message and in order, children inside their parent, and a section is a piece of the message (or
// built from its header lines).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
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
  return 0;
}
