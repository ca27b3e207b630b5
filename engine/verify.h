// Archive verification: walks the hash chain from the first record, recomputes every record hash,
// decompresses every message and checks its SHA-256, and compares the end of the chain with the head
// stored in meta. Reports the first bad record and what is wrong with it. It reads one snapshot, so it
// works on a live archive (tests: Verify.LiveArchiveVerifiesAsOfItsSnapshot).
//
// The chain alone proves nothing against someone who rewrites the whole file (chain and head made to
// match): verify also rebuilds the Merkle tree from the records, checks the tree the archive stores
// against it, and checks signed checkpoints kept outside the archive (engine/checkpoint.h): a
// checkpoint of more records than the archive has means records removed from the end or an older
// copy put back; a root that differs means the records it covers were rewritten
// (Verify.ACheckpointCatchesARewrittenChainThatVerifiesAlone).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "common/checkpoint.h"
#include "common/result.h"
#include "engine/archive.h"

namespace mailark {

struct VerifyReport {
  bool intact = true;
  std::uint64_t records_checked = 0;
  std::uint64_t records_expired = 0;  // removed by retention, proved by their tombstones and the tree
  std::uint64_t tombstones = 0;
  std::uint64_t messages_checked = 0;  // distinct blobs decompressed and hashed
  std::uint64_t first_bad = 0;         // seq of the first bad record (0 if intact, or if the head is bad)
  std::string problem;                 // what is wrong, for the first bad record
  ChainHead head;                      // the verified end of the chain
  Digest tree_root{};                  // the Merkle root over the records checked, rebuilt from them
  bool tree_stored = false;            // the archive stores a tree (format 6), checked against the rebuilt one
  struct CheckpointResult {
    Checkpoint checkpoint;
    bool holds = false;
    std::string problem;  // why not
  };
  std::vector<CheckpointResult> checkpoints;
};

// Checkpoints to check, already opened (signature and origin checked: open_checkpoint).
struct VerifyOptions {
  std::vector<Checkpoint> checkpoints;
  // The archive's public key, that tombstones are checked against (retention). Without it, an archive
  // with tombstones does not verify.
  std::optional<Ed25519Public> tombstone_key;
};

// Errors only when the archive cannot be read at all; damage is reported in the VerifyReport.
Result<VerifyReport> verify_archive(
    const Archive& archive, const std::function<void(std::uint64_t done, std::uint64_t total)>& progress,
    const VerifyOptions& options = {});

}  // namespace mailark
