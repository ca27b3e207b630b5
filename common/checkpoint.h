// Signed checkpoints of the archive's Merkle tree, in two published formats so that anyone can check
// them without mailark:
//   - the checkpoint body is a C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): the origin
//     line (which archive), the tree size, the base64 root hash, then extension lines (mailark writes
//     one: "time <Unix seconds>");
//   - the signature is a C2SP signed note (https://c2sp.org/signed-note) with an Ed25519 key: after a
//     blank line, "— <key name> <base64(4-byte key id || 64-byte signature)>"; the key id is the first
//     4 bytes of SHA-256(key name || "\n" || 0x01 || public key), and the verifier key that names the
//     public key is "<key name>+<key id, 8 hex digits>+<base64(0x01 || public key)>" (as Go's
//     golang.org/x/mod/sumdb/note writes it).
// Ed25519 is OpenSSL's; this file is its one translation point.
//
// parse_* read bytes from outside (a checkpoint file handed to `verify --checkpoint`, an export's
// head): bounded (a note over kMaxNoteBytes is refused unread: Checkpoint.Ed25519MatchesRfc8032AndSignedNotesCheck),
// strict (canonical base64, lines at LF), never throwing; fuzzed by fuzz/checkpoint.cc.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/sha256.h"

namespace mailark {

using Ed25519Public = std::array<std::uint8_t, 32>;

// An Ed25519 private key, from its 32-byte seed.
class SigningKey {
 public:
  static Result<SigningKey> from_seed(std::string_view seed);
  const Ed25519Public& public_key() const { return public_; }
  std::string sign(std::string_view message) const;  // 64 bytes

 private:
  std::string seed_;
  Ed25519Public public_{};
};

bool ed25519_verify(const Ed25519Public& key, std::string_view message, std::string_view signature);

constexpr std::size_t kMaxNoteBytes = 64 * 1024;

// A signed note's verifier: who signed (the key name) and with what.
struct NoteVerifier {
  std::string name;
  Ed25519Public key{};
  std::uint32_t id() const;
  std::string text() const;  // the verifier key string
};
Result<NoteVerifier> parse_verifier_key(std::string_view text);

// text must end with "\n"; returns text, a blank line and the signature line.
std::string sign_note(std::string_view text, const std::string& name, const SigningKey& key);

struct NoteSignature {
  std::string name;
  std::uint32_t id = 0;
  std::string signature;  // 64 bytes for Ed25519
};
struct Note {
  std::string text;  // up to and including the newline before the blank line
  std::vector<NoteSignature> signatures;
};
// Splits a note into its text and signature lines (no signature is checked here).
Result<Note> parse_note(std::string_view bytes);
// Whether one of the note's signatures is by `verifier` and checks.
bool note_signed_by(const Note& note, const NoteVerifier& verifier);

struct Checkpoint {
  std::string origin;
  std::uint64_t size = 0;
  Digest root{};
  std::int64_t time = 0;  // from the "time" extension line; 0 when absent
  std::vector<std::string> extensions;  // every extension line, "time ..." included
};
std::string checkpoint_text(const Checkpoint& c);  // the body; writes the time line when time != 0
Result<Checkpoint> parse_checkpoint_text(std::string_view text);

}  // namespace mailark
