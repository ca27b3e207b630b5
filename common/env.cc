#include "common/env.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace mailark {
namespace {

class PosixEnv final : public Env {
 public:
  Result<std::string> read_file(const std::string& path, std::size_t max_bytes) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return make_error(ErrorCode::kIo, "open " + path + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      return make_error(ErrorCode::kIo, "stat " + path + ": " + std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return make_error(ErrorCode::kBadInput, path + " is not a regular file");
    }
    if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
      ::close(fd);
      return make_error(ErrorCode::kLimit,
                        path + " is " + std::to_string(st.st_size) + " bytes, over the limit of " +
                            std::to_string(max_bytes),
                        "raise Limits::max_message_bytes if such messages are expected");
    }
    std::string out;
    out.resize(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    while (got < out.size()) {
      ssize_t n = ::read(fd, out.data() + got, out.size() - got);
      if (n < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        ::close(fd);
        return make_error(ErrorCode::kIo, "read " + path + ": " + std::strerror(e));
      }
      if (n == 0) break;  // the file shrank while we read it: keep what is there
      got += static_cast<std::size_t>(n);
    }
    out.resize(got);
    ::close(fd);
    return out;
  }
};

}  // namespace

Env* Env::standard() {
  static PosixEnv env;
  return &env;
}

}  // namespace mailark
