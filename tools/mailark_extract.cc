// mailark-extract: the worker process of attachment text (engine/extract.h). Reads requests on
// standard input and answers on standard output, one at a time, until its input ends. It runs the
// parsers that read hostile documents (engine/extract_formats.h) so that no mailark process holding
// the archive does: no core dumps, a bounded address space, a parent that kills it when it hangs,
// and a seccomp filter (install_sandbox) that refuses what no parser of ours needs: the network,
// starting programs or processes, and writing or removing files.
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/file_util.h"
#include "tools/sandbox.h"
#include "engine/extract_formats.h"

namespace {

constexpr std::size_t kMaxRequest = 64u << 20;
constexpr std::size_t kMaxText = 4u << 20;

bool answer(char status, const std::string& body) {
  char h[5] = {status, static_cast<char>(body.size() >> 24), static_cast<char>(body.size() >> 16),
               static_cast<char>(body.size() >> 8), static_cast<char>(body.size())};
  return mailark::write_all(1, std::string_view(h, 5)) && mailark::write_all(1, body);
}

// `mailark-extract --check-sandbox`: installs the filter, tries what it refuses, and says what got
// through (exit 0: nothing did).
int check_sandbox() {
  if (!mailark::install_sandbox(/*files_read_only=*/true)) {
    std::puts("the filter could not be installed");
    return 1;
  }
  int through = mailark::try_refused_calls();
  auto expect_refused = [&](const char* what, bool refused) {
    std::printf("%s: %s\n", what, refused ? "refused" : "ALLOWED");
    if (!refused) ++through;
  };
  const std::string path = "/tmp/mailark-extract-sandbox-" + std::to_string(::getpid());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  expect_refused("open for writing", fd < 0 && errno == EPERM);
  if (fd >= 0) ::unlink(path.c_str());
  expect_refused("openat O_RDWR", ::openat(AT_FDCWD, "/dev/null", O_RDWR) < 0 && errno == EPERM);
  expect_refused("unlink", ::unlink("/tmp/mailark-extract-no-such-file") < 0 && errno == EPERM);
  const int rd = ::open("/proc/self/status", O_RDONLY);
  std::printf("open for reading: %s\n", rd >= 0 ? "allowed" : "REFUSED");
  if (rd < 0) ++through;
  return through == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--check-sandbox") == 0) return check_sandbox();
  rlimit none{0, 0};
  ::setrlimit(RLIMIT_CORE, &none);
#if !defined(__SANITIZE_ADDRESS__)
  // A document that makes a parser allocate without end fails here, not on the machine (the
  // sanitizer build reserves terabytes of shadow memory, so it goes without).
  rlimit as{std::uint64_t{2} << 30, std::uint64_t{2} << 30};
  ::setrlimit(RLIMIT_AS, &as);
#endif
  if (!mailark::install_sandbox(/*files_read_only=*/true)) return 3;  // the parent gives the document no text, and says why
  std::string body;
  for (;;) {
    char h[5];
    if (!mailark::read_exact(0, h, 5)) return 0;  // the parent closed: done
    const std::uint32_t n = static_cast<std::uint8_t>(h[1]) << 24 | static_cast<std::uint8_t>(h[2]) << 16 |
                            static_cast<std::uint8_t>(h[3]) << 8 | static_cast<std::uint8_t>(h[4]);
    if (n > kMaxRequest) return 2;
    body.resize(n);
    if (!mailark::read_exact(0, body.data(), n)) return 2;
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
