// One writer per data folder: `serve`, `import`, `reindex` and `train-dictionary` hold DATA/lock
// (an exclusive flock) while they run. A second writer fails at once with an error naming the holder;
// readers (`search`, `show`, `verify`, `stats`) and the queue and quarantine commands, whose changes
// LMDB serialises, never take it, so they work beside a running server. The lock goes with the
// process (the kernel drops a flock when its holder dies), so a crash never leaves a stale lock.
// Tests: DataLock.SecondWriterIsRefusedNamingTheHolder, tests/e2e/test_failures.py
// test_one_writer_per_data_folder.
#pragma once

#include <memory>
#include <string>

#include "common/result.h"

namespace mailark {

class DataLock {
 public:
  // Takes the lock for `command` (shown to whoever is refused). Errors: kIo naming the holder (pid,
  // command, since when) when another process has it, or when the folder cannot be written.
  static Result<std::unique_ptr<DataLock>> acquire(const std::string& data_dir, const std::string& command);
  ~DataLock();
  DataLock(const DataLock&) = delete;
  DataLock& operator=(const DataLock&) = delete;

 private:
  DataLock() = default;
  int fd_ = -1;
};

}  // namespace mailark
