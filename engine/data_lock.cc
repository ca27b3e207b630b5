#include "engine/data_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "common/dates.h"

namespace mailark {

Result<std::unique_ptr<DataLock>> DataLock::acquire(const std::string& data_dir, const std::string& command) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  const std::string path = data_dir + "/lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return make_error(ErrorCode::kIo, "cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[512] = {0};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) return make_error(ErrorCode::kIo, "cannot lock " + path + ": " + std::strerror(err));
    std::string holder = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("another process");
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\r')) holder.pop_back();
    return make_error(ErrorCode::kIo, "the data folder " + data_dir + " is in use by " + holder,
                      "one process writes a data folder at a time: run this once it has ended, or stop it first "
                      "(`mailark serve` stops cleanly on SIGTERM; senders retry while it is down); search, show, "
                      "verify, stats, queue and quarantine work beside it");
  }
  std::unique_ptr<DataLock> lock(new DataLock());
  lock->fd_ = fd;
  std::string who = "`mailark " + command + "` (pid " + std::to_string(::getpid()) + ", since " +
                    iso8601_date(unix_now()) + ")\n";
  if (::ftruncate(fd, 0) == 0) {
    ssize_t w = ::pwrite(fd, who.data(), who.size(), 0);
    (void)w;  // the holder's description is informative; the flock is the lock
  }
  return lock;
}

DataLock::~DataLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace mailark
