// The seam between mailark and the operating system for the files mailark reads itself.
//
// LMDB and Xapian do their own I/O behind their own contracts; import sources go through an Env so
// tests can inject failures.
// Thread safety: Env implementations must be safe to call from any thread.
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace mailark {

class Env {
 public:
  virtual ~Env() = default;
  // Reads a whole regular file. Files larger than max_bytes fail with kLimit without being read.
  virtual Result<std::string> read_file(const std::string& path, std::size_t max_bytes) = 0;

  // The process-wide default, backed by POSIX calls. Never null.
  static Env* standard();
};

}  // namespace mailark
