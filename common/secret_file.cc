#include "common/secret_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "common/random.h"
#include "common/sha256.h"

namespace mailark {

Result<std::string> read_or_create_secret(const std::string& path, std::size_t bytes, std::size_t min_length) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::ifstream in(path);
    std::string line;
    if (in && std::getline(in, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
      if (line.size() < min_length)
        return make_error(ErrorCode::kInvalidArgument, path + ": the secret is shorter than " + std::to_string(min_length) + " characters");
      return line;
    }
    std::vector<unsigned char> raw(bytes);
    if (!random_bytes(raw.data(), raw.size()))
      return make_error(ErrorCode::kInternal, "no random bytes for " + path);
    std::string secret = to_hex(std::span<const std::uint8_t>(raw.data(), raw.size()));
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) continue;  // another process made it meanwhile: read theirs
    if (fd < 0) return make_error(ErrorCode::kIo, "creating " + path + ": " + std::strerror(errno));
    std::string text = secret + "\n";
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) return make_error(ErrorCode::kIo, "writing " + path);
    return secret;
  }
  return make_error(ErrorCode::kIo, "cannot read " + path);
}

}  // namespace mailark
