// mailark-scan: the scan host (scanner/scan_host.h). Started by mailark with its control socket as
// descriptor 3; loads the signature engine and forks the single-threaded processes that scan, each
// under the seccomp filter of tools/sandbox.h (files stay writable: libclamav writes what it
// extracts) and without core dumps.
//
//   mailark-scan --check-sandbox   installs the filter, tries what it refuses, says what got through
#include <fcntl.h>
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
  int through = mailark::try_refused_calls();
  // What libclamav needs: its temporary files.
  const std::string path = "/tmp/mailark-scan-sandbox-" + std::to_string(::getpid());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::printf("temporary file: %s\n", fd >= 0 ? "allowed" : "REFUSED");
  if (fd < 0) ++through;
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
