// Fuzzes the IMAP response reader (api/imap/response.cc): a server's bytes in chunks whose sizes come
// from the input. Checks what must hold for any input: responses come out whole (a tagged, untagged
// or continuation response), the reader's buffer stays bounded, and it stops for good after an error.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/imap/response.h"
#include "fuzz/chunks.h"

using namespace mailark::api::imap;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  ResponseReader reader;
  mailark::fuzz::feed_in_chunks(data, size, [&](std::string_view chunk, std::size_t) {
    reader.feed(chunk);
    while (auto r = reader.next()) {
      if (r->kind == Response::Kind::kTagged && r->tag.empty()) std::abort();
      if (r->text.size() > ResponseReader::kMaxResponseBytes) std::abort();
    }
    if (!reader.error().empty() && reader.next()) std::abort();
    return true;
  });
  (void)quote(std::string_view(reinterpret_cast<const char*>(data) + 1, std::min<std::size_t>(size - 1, 64)));
  return 0;
}
