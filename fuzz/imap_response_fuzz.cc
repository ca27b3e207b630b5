// Fuzzes the IMAP response reader (api/imap/response.cc): a server's bytes in chunks whose sizes come
// from the input. Checks what must hold for any input: responses come out whole (a tagged, untagged
// or continuation response), the reader's buffer stays bounded, and it stops for good after an error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/imap/response.h"

using namespace mailark::api::imap;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  ResponseReader reader;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::size_t pos = 0, step = 1 + data[0] % 61;
  while (pos < in.size()) {
    std::size_t n = std::min(step, in.size() - pos);
    reader.feed(in.substr(pos, n));
    pos += n;
    while (auto r = reader.next()) {
      if (r->kind == Response::Kind::kTagged && r->tag.empty()) std::abort();
      if (r->text.size() > ResponseReader::kMaxResponseBytes) std::abort();
    }
    if (!reader.error().empty() && reader.next()) std::abort();
  }
  (void)quote(in.substr(0, 64));
  return 0;
}
