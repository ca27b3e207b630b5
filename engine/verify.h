// Archive verification: walks the hash chain from the first record, recomputes every record hash,
// decompresses every message and checks its SHA-256, and compares the end of the chain with the head
// stored in meta. Reports the first bad record and what is wrong with it. It reads one snapshot, so it
// works on a live archive (tests: Verify.LiveArchiveVerifiesAsOfItsSnapshot).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/result.h"
#include "engine/archive.h"

namespace mailark {

struct VerifyReport {
  bool intact = true;
  std::uint64_t records_checked = 0;
  std::uint64_t messages_checked = 0;  // distinct blobs decompressed and hashed
  std::uint64_t first_bad = 0;         // seq of the first bad record (0 if intact, or if the head is bad)
  std::string problem;                 // what is wrong, for the first bad record
  ChainHead head;                      // the verified end of the chain
};

// Errors only when the archive cannot be read at all; damage is reported in the VerifyReport.
Result<VerifyReport> verify_archive(
    const Archive& archive, const std::function<void(std::uint64_t done, std::uint64_t total)>& progress);

}  // namespace mailark
