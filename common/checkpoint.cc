#include "common/checkpoint.h"

#include <nettle/eddsa.h>

#include <charconv>
#include <cstring>

#include "common/base64.h"
#include "common/encoding.h"

namespace mailark {
namespace {

constexpr std::string_view kDash = "\xE2\x80\x94 ";  // U+2014 and a space: a signature line
constexpr std::uint8_t kAlgEd25519 = 0x01;

std::uint32_t key_id(const std::string& name, const Ed25519Public& key) {
  Sha256 h;
  h.update(name);
  h.update("\n");
  const char alg = static_cast<char>(kAlgEd25519);
  h.update(std::string_view(&alg, 1));
  h.update(std::string_view(reinterpret_cast<const char*>(key.data()), key.size()));
  const Digest d = h.finish();
  return (std::uint32_t{d[0]} << 24) | (std::uint32_t{d[1]} << 16) | (std::uint32_t{d[2]} << 8) | d[3];
}

// A key name: non-empty, printable, no space and no '+' (signed-note).
bool good_name(std::string_view name) {
  if (name.empty() || name.size() > 256) return false;
  for (unsigned char c : name)
    if (c <= 0x20 || c == '+' || c == 0x7f) return false;
  return true;
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 20 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

Error bad(const std::string& what) {
  return make_error(ErrorCode::kInvalidArgument, what);
}

// Base64 in its one canonical spelling (RFC 4648 3.5: the unused bits of the last character zero), so
// that no two texts of a note carry the same bytes: a changed character is always a changed note.
std::optional<std::string> canonical_base64(std::string_view text, std::size_t max_input) {
  auto raw = base64_decode(text, max_input);
  if (!raw || base64_encode(*raw) != text) return std::nullopt;
  return raw;
}

}  // namespace

// Ed25519 (RFC 8032) by Nettle, as the SHA-256 (common/sha256.cc: libcrypto stays out of the short
// commands). A key is its 32-byte seed, a signature 64 bytes, as before with OpenSSL: checkpoints
// signed by either verify with the other (test Checkpoint.Ed25519MatchesRfc8032AndSignedNotesCheck;
// tests/e2e/test_checkpoint.py checks the notes with its own verifier). Like OpenSSL, Nettle refuses
// a signature whose S is not below the group order (malleability).
Result<SigningKey> SigningKey::from_seed(std::string_view seed) {
  if (seed.size() != 32) return bad("an Ed25519 seed is 32 bytes");
  SigningKey k;
  k.seed_ = std::string(seed);
  ed25519_sha512_public_key(k.public_.data(), reinterpret_cast<const std::uint8_t*>(k.seed_.data()));
  return k;
}

std::string SigningKey::sign(std::string_view message) const {
  std::string sig(ED25519_SIGNATURE_SIZE, '\0');
  ed25519_sha512_sign(public_.data(), reinterpret_cast<const std::uint8_t*>(seed_.data()), message.size(),
                      reinterpret_cast<const std::uint8_t*>(message.data()), reinterpret_cast<std::uint8_t*>(sig.data()));
  return sig;
}

bool ed25519_verify(const Ed25519Public& key, std::string_view message, std::string_view signature) {
  if (signature.size() != ED25519_SIGNATURE_SIZE) return false;
  return ed25519_sha512_verify(key.data(), message.size(), reinterpret_cast<const std::uint8_t*>(message.data()),
                               reinterpret_cast<const std::uint8_t*>(signature.data())) == 1;
}

std::uint32_t NoteVerifier::id() const { return key_id(name, key); }

std::string NoteVerifier::text() const {
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", id());
  std::string raw(1, static_cast<char>(kAlgEd25519));
  raw.append(reinterpret_cast<const char*>(key.data()), key.size());
  return name + "+" + hex + "+" + base64_encode(raw);
}

Result<NoteVerifier> parse_verifier_key(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  const auto p1 = text.find('+');
  const auto p2 = p1 == std::string_view::npos ? p1 : text.find('+', p1 + 1);
  if (p2 == std::string_view::npos) return bad("a verifier key is NAME+KEYID+KEY");
  NoteVerifier v;
  v.name = std::string(text.substr(0, p1));
  if (!good_name(v.name)) return bad("the verifier key's name is empty or has a space or '+'");
  const std::string_view hex = text.substr(p1 + 1, p2 - p1 - 1);
  std::uint32_t id = 0;
  if (hex.size() != 8) return bad("the verifier key's id is not 8 hex digits");
  auto [p, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), id, 16);
  if (ec != std::errc() || p != hex.data() + hex.size()) return bad("the verifier key's id is not 8 hex digits");
  auto raw = canonical_base64(text.substr(p2 + 1), 1024);
  if (!raw || raw->size() != 33 || static_cast<std::uint8_t>((*raw)[0]) != kAlgEd25519)
    return bad("the verifier key is not an Ed25519 key (base64 of 0x01 and 32 bytes)");
  std::memcpy(v.key.data(), raw->data() + 1, 32);
  if (v.id() != id) return bad("the verifier key's id does not match its name and key");
  return v;
}

std::string sign_note(std::string_view text, const std::string& name, const SigningKey& key) {
  NoteVerifier v{name, key.public_key()};
  std::string out(text);
  out += "\n";
  out += kDash;
  out += name;
  out += " ";
  out += base64_encode(be32(v.id()) + key.sign(text));
  out += "\n";
  return out;
}

Result<Note> parse_note(std::string_view bytes) {
  if (bytes.size() > kMaxNoteBytes) return bad("the note is larger than " + std::to_string(kMaxNoteBytes) + " bytes");
  if (bytes.empty() || bytes.back() != '\n') return bad("the note does not end with a newline");
  for (unsigned char c : bytes)
    if ((c < 0x20 && c != '\n') || c == 0x7f) return bad("the note has a control character");
  const auto split = bytes.rfind("\n\n");
  if (split == std::string_view::npos) return bad("the note has no signature block (a blank line, then signatures)");
  Note note;
  note.text = std::string(bytes.substr(0, split + 1));
  std::string_view sigs = bytes.substr(split + 2);
  while (!sigs.empty()) {
    const auto nl = sigs.find('\n');
    std::string_view line = sigs.substr(0, nl);
    sigs.remove_prefix(nl + 1);
    if (line.substr(0, kDash.size()) != kDash) return bad("a signature line does not begin with an em dash and a space");
    line.remove_prefix(kDash.size());
    const auto sp = line.rfind(' ');
    if (sp == std::string_view::npos) return bad("a signature line has no key name");
    NoteSignature s;
    s.name = std::string(line.substr(0, sp));
    if (!good_name(s.name)) return bad("a signature line's key name is empty or has a space or '+'");
    auto raw = canonical_base64(line.substr(sp + 1), 4096);
    if (!raw || raw->size() < 5) return bad("a signature is not base64 of a key id and a signature");
    s.id = (std::uint32_t{static_cast<std::uint8_t>((*raw)[0])} << 24) |
           (std::uint32_t{static_cast<std::uint8_t>((*raw)[1])} << 16) |
           (std::uint32_t{static_cast<std::uint8_t>((*raw)[2])} << 8) | static_cast<std::uint8_t>((*raw)[3]);
    s.signature = raw->substr(4);
    note.signatures.push_back(std::move(s));
  }
  if (note.signatures.empty()) return bad("the note has no signature");
  return note;
}

bool note_signed_by(const Note& note, const NoteVerifier& verifier) {
  const std::uint32_t id = verifier.id();
  for (const auto& s : note.signatures)
    if (s.name == verifier.name && s.id == id && ed25519_verify(verifier.key, note.text, s.signature)) return true;
  return false;
}

std::string checkpoint_text(const Checkpoint& c) {
  std::string root(reinterpret_cast<const char*>(c.root.data()), c.root.size());
  std::string out = c.origin + "\n" + std::to_string(c.size) + "\n" + base64_encode(root) + "\n";
  if (c.time) out += "time " + std::to_string(c.time) + "\n";
  for (const auto& e : c.extensions)
    if (e.rfind("time ", 0) != 0) out += e + "\n";
  return out;
}

Result<Checkpoint> parse_checkpoint_text(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    if (nl == std::string_view::npos) return bad("the checkpoint does not end with a newline");
    lines.push_back(text.substr(0, nl));
    text.remove_prefix(nl + 1);
  }
  if (lines.size() < 3) return bad("a checkpoint has an origin, a tree size and a root hash line");
  Checkpoint c;
  c.origin = std::string(lines[0]);
  if (c.origin.empty()) return bad("the checkpoint's origin line is empty");
  auto size = parse_u64(lines[1]);
  if (!size) return bad("the checkpoint's second line is not a tree size");
  c.size = *size;
  auto root = canonical_base64(lines[2], 256);
  if (!root || root->size() != 32) return bad("the checkpoint's third line is not a base64 SHA-256 root hash");
  std::memcpy(c.root.data(), root->data(), 32);
  for (std::size_t i = 3; i < lines.size(); ++i) {
    if (lines[i].empty()) return bad("the checkpoint has an empty extension line");
    c.extensions.emplace_back(lines[i]);
    if (lines[i].rfind("time ", 0) == 0) {
      auto t = parse_u64(lines[i].substr(5));
      if (!t || *t > static_cast<std::uint64_t>(INT64_MAX)) return bad("the checkpoint's time line is not Unix seconds");
      c.time = static_cast<std::int64_t>(*t);
    }
  }
  return c;
}

}  // namespace mailark
