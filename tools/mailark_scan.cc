// mailark-scan: the scan host (scanner/scan_host.h). Started by mailark with its control socket as
// descriptor 3; loads the signature engine and forks the single-threaded processes that scan, each
// under the seccomp filter of tools/sandbox.h (files stay writable: libclamav writes what it
// extracts) and without core dumps.
//
//   mailark-scan --check-sandbox   installs the filter, tries what it refuses, says what got through
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "scanner/scan_host.h"
#include "tools/sandbox.h"

namespace {

bool confine() { return mailark::install_sandbox(/*files_read_only=*/false); }

int check_sandbox() {
  if (!confine()) {
    std::puts("the filter could not be installed");
    return 1;
  }
  int through = 0;
  auto expect = [&](const char* what, bool refused, bool want_refused = true) {
    std::printf("%s: %s\n", what, refused ? "refused" : "allowed");
    if (refused != want_refused) ++through;
  };
  expect("socket", ::socket(AF_INET, SOCK_STREAM, 0) < 0 && errno == EPERM);
  int sv[2];
  expect("socketpair", ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 && errno == EPERM);
  char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
  expect("execve", ::execve("/bin/true", argv, nullptr) < 0 && errno == EPERM);
  expect("io_uring", ::syscall(__NR_io_uring_setup, 1, nullptr) < 0 && errno == EPERM);
#if !defined(__SANITIZE_ADDRESS__)
  expect("signal to another process", ::kill(::getppid(), 0) < 0 && errno == EPERM);
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  if (child > 0) ::waitpid(child, nullptr, 0);
  expect("fork", child < 0);
#endif
  // What libclamav needs: its temporary files.
  const std::string path = "/tmp/mailark-scan-sandbox-" + std::to_string(::getpid());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  expect("temporary file", fd < 0, /*want_refused=*/false);
  if (fd >= 0) {
    ::close(fd);
    ::unlink(path.c_str());
  }
  return through == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--check-sandbox") == 0) return check_sandbox();
  return mailark::scanner::scan_host_main(argc, argv, confine);
}
