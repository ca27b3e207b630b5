#include "api/smtp/spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/file_util.h"
#include "common/random.h"

namespace mailark::api {

namespace {

Error io_error(const std::string& what, int err) {
  return make_error(ErrorCode::kIo, what + ": " + std::strerror(err), "free space where the data folder is");
}

}  // namespace

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
}

void Spool::append(std::uint64_t at, std::string_view bytes) {
  if (at == 0) clear();
  if (failed_) return;
  if (at != size_) {
    failed_ = make_error(ErrorCode::kInternal, "spool: content at " + std::to_string(at) + " after " +
                                                   std::to_string(size_) + " bytes kept");
    return;
  }
  if (fd_ < 0) {
    fd_ = ::open(dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
      // No O_TMPFILE here: a named file, removed at once.
      unsigned char r[8] = {};
      char name[17] = {};
      if (!random_bytes(r, sizeof r)) std::memcpy(r, &size_, sizeof r);  // O_EXCL still keeps it unique
      for (int i = 0; i < 8; ++i) std::snprintf(name + 2 * i, 3, "%02x", r[i]);
      std::string path = dir_ + "/spool-" + name;
      fd_ = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
      if (fd_ >= 0) ::unlink(path.c_str());
    }
    if (fd_ < 0) {
      failed_ = io_error("spool: cannot make a file in " + dir_, errno);
      return;
    }
  }
  if (reserve_ && !reserve_->room_for(bytes.size(), "spool")) {
    failed_ = make_error(ErrorCode::kIo,
                         "spool: " + std::to_string(size_ + bytes.size()) + " bytes of the message would leave less than " +
                             std::to_string(reserve_->reserve()) + " bytes free in " + dir_ + " (limits.disk_reserve_bytes)",
                         "free space where the data folder is");
    free_blocks();  // what was kept of the message is of no use now
    return;
  }
  if (!write_all(fd_, bytes)) {
    failed_ = io_error("spool: writing " + std::to_string(bytes.size()) + " bytes in " + dir_, errno);
    return;
  }
  size_ += bytes.size();
}

Result<std::string> Spool::read_back(std::uint64_t spilled, std::string_view tail) {
  if (failed_) return *failed_;
  if (spilled != size_)
    return make_error(ErrorCode::kInternal, "spool: the message says " + std::to_string(spilled) + " bytes were kept, " +
                                                std::to_string(size_) + " were");
  std::string out;
  out.resize(spilled + tail.size());
  std::uint64_t done = 0;
  while (done < spilled) {
    ssize_t n = ::pread(fd_, out.data() + done, spilled - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return io_error("spool: reading back " + std::to_string(spilled) + " bytes", n < 0 ? errno : EIO);
    done += static_cast<std::uint64_t>(n);
  }
  if (!tail.empty()) std::memcpy(out.data() + spilled, tail.data(), tail.size());
  return out;
}

void Spool::clear() {
  failed_.reset();
  free_blocks();
}

void Spool::free_blocks() {
  if (fd_ >= 0 && size_ > 0 && (::ftruncate(fd_, 0) != 0 || ::lseek(fd_, 0, SEEK_SET) != 0)) {
    ::close(fd_);  // a fresh file next time
    fd_ = -1;
  }
  size_ = 0;
}

Status prepare_spool_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error(ErrorCode::kIo, "cannot make the spool folder " + dir + ": " + ec.message());
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().filename().string().rfind("spool-", 0) == 0) std::filesystem::remove(e.path(), ec);
  }
  if (ec) return make_error(ErrorCode::kIo, "cannot read the spool folder " + dir + ": " + ec.message());
  return ok_status();
}

}  // namespace mailark::api
