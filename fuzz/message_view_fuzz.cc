// Fuzzes the web portal's message view (engine/message_view.cc): the body and attachments chosen from
// the MIME tree, the parts decoded by GMime, the HTML body sanitised with inline images embedded, and
// part lookup by IMAP section number. For any message: every attachment's section fetches a part (or
// an attached message), and a section that was never listed may fetch nothing but never crashes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "engine/message_view.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string_view raw(reinterpret_cast<const char*>(data) + 1, size - 1);
  mailark::MessageView v = mailark::view_message(raw, 1 << 16);
  for (const auto& a : v.attachments) {
    if (a.section.empty()) std::abort();
    auto c = mailark::part_content(raw, a.section, 1 << 16);
    if (!c) std::abort();
  }
  unsigned blocked = 0;
  (void)mailark::view_html(raw, data[0] & 1, &blocked);
  static const char* kSections[] = {"1", "2", "1.1", "1.2", "2.1", "3.1.1", "0", "1.", ".1", "9999"};
  (void)mailark::part_content(raw, kSections[data[0] % 10], 1 << 16);
  return 0;
}
