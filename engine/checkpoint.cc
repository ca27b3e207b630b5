#include "engine/checkpoint.h"

#include <filesystem>

#include "common/secret_file.h"

namespace mailark {

std::string checkpoint_origin(const std::string& archive_id) { return "mailark.archive/" + archive_id; }

Result<SigningKey> archive_signing_key(const std::string& data_dir, bool create) {
  const std::string path = (std::filesystem::path(data_dir) / kCheckpointKeyFile).string();
  std::error_code ec;
  if (!create && !std::filesystem::exists(path, ec))
    return make_error(ErrorCode::kNotFound, "no checkpoint signing key in " + data_dir,
                      "`mailark checkpoint` makes one; `verify --checkpoint` can take the verifier key with --key");
  MAILARK_ASSIGN_OR_RETURN(std::string hex, read_or_create_secret(path, 32, 64));
  Digest seed;
  if (hex.size() != 64 || !from_hex(hex, seed))
    return make_error(ErrorCode::kInvalidArgument, path + " is not a 32-byte Ed25519 seed as 64 hex digits");
  return SigningKey::from_seed(std::string_view(reinterpret_cast<const char*>(seed.data()), seed.size()));
}

NoteVerifier archive_verifier(const std::string& archive_id, const SigningKey& key) {
  return NoteVerifier{checkpoint_origin(archive_id), key.public_key()};
}

Result<SignedCheckpoint> sign_checkpoint(const ArchiveSnapshot& snapshot, const SigningKey& key, std::int64_t now) {
  if (!snapshot.has_tree())
    return make_error(ErrorCode::kUnsupported, "this archive has no Merkle tree yet (an older format)",
                      "any writing command (`mailark import`, `serve`) builds it");
  const std::string id = snapshot.archive_id();
  SignedCheckpoint out;
  out.checkpoint.origin = checkpoint_origin(id);
  out.checkpoint.size = snapshot.tree_size();
  MAILARK_ASSIGN_OR_RETURN(out.checkpoint.root, merkle::root(out.checkpoint.size, snapshot.tree_nodes()));
  out.checkpoint.time = now;
  out.note = sign_note(checkpoint_text(out.checkpoint), out.checkpoint.origin, key);
  return out;
}

Result<ReadCheckpoint> read_checkpoint(std::string_view note, const std::string& archive_id) {
  ReadCheckpoint out;
  MAILARK_ASSIGN_OR_RETURN(out.note, parse_note(note));
  MAILARK_ASSIGN_OR_RETURN(out.checkpoint, parse_checkpoint_text(out.note.text));
  if (!archive_id.empty() && out.checkpoint.origin != checkpoint_origin(archive_id))
    return make_error(ErrorCode::kInvalidArgument,
                      "the checkpoint is of another archive (" + out.checkpoint.origin + "; this one is " +
                          checkpoint_origin(archive_id) + ")");
  return out;
}

Status check_signature(const ReadCheckpoint& read, const NoteVerifier& verifier) {
  if (!note_signed_by(read.note, verifier))
    return make_error(ErrorCode::kInvalidArgument,
                      "the checkpoint's signature does not check with the key " + verifier.text(),
                      "the checkpoint was changed, or signed by another key");
  return ok_status();
}

Result<Checkpoint> open_checkpoint(std::string_view note, const NoteVerifier& verifier, const std::string& archive_id) {
  MAILARK_ASSIGN_OR_RETURN(ReadCheckpoint read, read_checkpoint(note, archive_id));
  MAILARK_TRY(check_signature(read, verifier));
  return read.checkpoint;
}

}  // namespace mailark
