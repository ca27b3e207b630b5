// Signed checkpoints of the archive: tamper evidence that stands outside it. A checkpoint names the
// archive (its origin line), a number of records and the Merkle tree's root over them, signed with
// the archive's Ed25519 key (formats: common/checkpoint.h; the tree: common/merkle.h). Kept by someone
// else (a file on another machine, a ticket, a webhook's log), it lets `mailark verify --checkpoint`
// detect records removed from the end, records rewritten (even with the hash chain and the stored
// head rewritten to match) and an older copy of the archive put back (a rollback): tests
// Verify.ACheckpointCatchesARewrittenChainThatVerifiesAlone, tests/e2e/test_checkpoint.py.
//
// The signing key is DATA/checkpoint.key (0600, the 32-byte Ed25519 seed as 64 hex digits), made by
// the first command that signs; `mailark checkpoint key` prints its public half as a verifier key,
// which is what a verifier should keep (with the checkpoints) outside the data folder.
#pragma once

#include <string>

#include "common/checkpoint.h"
#include "engine/archive.h"

namespace mailark {

constexpr const char* kCheckpointKeyFile = "checkpoint.key";

// "mailark.archive/<archive id>": the checkpoint's origin line and the signing key's name.
std::string checkpoint_origin(const std::string& archive_id);

// The archive's signing key (DATA/checkpoint.key); made when missing and `create`.
Result<SigningKey> archive_signing_key(const std::string& data_dir, bool create);

// The verifier key of `key` for this archive.
NoteVerifier archive_verifier(const std::string& archive_id, const SigningKey& key);

// A checkpoint of the snapshot's tree (its whole size), signed. Errors: kUnsupported (no tree: an
// older archive opened read-only).
struct SignedCheckpoint {
  Checkpoint checkpoint;
  std::string note;  // the signed note, as published
};
Result<SignedCheckpoint> sign_checkpoint(const ArchiveSnapshot& snapshot, const SigningKey& key, std::int64_t now);

// A signed checkpoint handed from outside, in two steps (so that a checkpoint of another archive is
// named as such before any key is looked for): read_checkpoint parses it and checks that its origin
// is `archive_id` (when not empty); check_signature checks it is signed by `verifier`.
// open_checkpoint does both. Errors say which (kInvalidArgument).
struct ReadCheckpoint {
  Note note;
  Checkpoint checkpoint;
};
Result<ReadCheckpoint> read_checkpoint(std::string_view note, const std::string& archive_id);
Status check_signature(const ReadCheckpoint& read, const NoteVerifier& verifier);
Result<Checkpoint> open_checkpoint(std::string_view note, const NoteVerifier& verifier, const std::string& archive_id);

}  // namespace mailark
