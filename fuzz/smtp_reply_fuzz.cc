// Fuzzes the SMTP reply reader (api/smtp/reply.cc): a server's bytes in chunks whose sizes come from
// the input, as the delivery client reads them. Checks what must hold for any input: a reply has a
// code of 200 to 599, or 0 with the reason once the reader has failed (and then stays failed); no
// reply's text outgrows kMaxReplyBytes; no control byte reaches a reply's text or lines.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/smtp/reply.h"
#include "fuzz/chunks.h"

using namespace mailark::smtp;

namespace {
void check_text(std::string_view text) {
  if (text.size() > ReplyReader::kMaxReplyBytes + 64) std::abort();
  for (char c : text)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ReplyReader reader;
  mailark::fuzz::feed_in_chunks(data, size, [&](std::string_view chunk, std::size_t) {
    reader.feed(chunk);
    while (auto r = reader.next()) {
      check_text(r->text);
      if (reader.failed()) {
        if (r->code != 0 || r->text.empty()) std::abort();
        auto again = reader.next();
        if (!again || again->code != 0 || again->text != r->text) std::abort();
        break;
      }
      if (r->code < 200 || r->code > 599) std::abort();
      if (reader.last_lines().empty()) std::abort();
      for (const auto& line : reader.last_lines()) check_text(line);
    }
    return true;
  });
  return 0;
}
