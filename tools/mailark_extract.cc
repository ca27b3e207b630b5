// mailark-extract: the worker process of attachment text (engine/extract.h). Reads requests on
// standard input and answers on standard output, one at a time, until its input ends. It runs the
// parsers that read hostile documents (engine/extract_formats.h) so that no mailark process holding
// the archive does: no core dumps, a bounded address space, and a parent that kills it when it hangs.
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "engine/extract_formats.h"

namespace {

constexpr std::size_t kMaxRequest = 64u << 20;
constexpr std::size_t kMaxText = 4u << 20;

bool read_all(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t k = ::read(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t k = ::write(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

bool answer(char status, const std::string& body) {
  char h[5] = {status, static_cast<char>(body.size() >> 24), static_cast<char>(body.size() >> 16),
               static_cast<char>(body.size() >> 8), static_cast<char>(body.size())};
  return write_all(1, h, 5) && write_all(1, body.data(), body.size());
}

}  // namespace

int main() {
  rlimit none{0, 0};
  ::setrlimit(RLIMIT_CORE, &none);
#if !defined(__SANITIZE_ADDRESS__)
  // A document that makes a parser allocate without end fails here, not on the machine (the
  // sanitizer build reserves terabytes of shadow memory, so it goes without).
  rlimit as{std::uint64_t{2} << 30, std::uint64_t{2} << 30};
  ::setrlimit(RLIMIT_AS, &as);
#endif
  std::string body;
  for (;;) {
    char h[5];
    if (!read_all(0, h, 5)) return 0;  // the parent closed: done
    const std::uint32_t n = static_cast<std::uint8_t>(h[1]) << 24 | static_cast<std::uint8_t>(h[2]) << 16 |
                            static_cast<std::uint8_t>(h[3]) << 8 | static_cast<std::uint8_t>(h[4]);
    if (n > kMaxRequest) return 2;
    body.resize(n);
    if (!read_all(0, body.data(), n)) return 2;
    mailark::Result<std::string> text = mailark::make_error(mailark::ErrorCode::kUnsupported, "an unknown request");
    try {
      if (h[0] == 'p') text = mailark::extract::pdf_text(body, kMaxText);
      if (h[0] == 'z') text = mailark::extract::office_text(body, kMaxText);
    } catch (const std::exception& e) {
      text = mailark::make_error(mailark::ErrorCode::kUnsupported, std::string("the parser failed: ") + e.what());
    }
    if (!(text ? answer('t', *text) : answer('e', text.error().context))) return 0;
  }
}
