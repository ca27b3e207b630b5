// Fuzzes what `verify --checkpoint` and an export's verifier read from outside: a signed note, the
// checkpoint text inside it and a verifier key (common/checkpoint.h). Hostile bytes must be refused
// with an error, never read out of bounds; what parses, written again, must parse to the same thing;
// no signature checks with a key that did not make it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string_view v(reinterpret_cast<const char*>(data) + 1, size - 1);
  static const auto key = mailark::SigningKey::from_seed(std::string(32, 'f'));
  switch (data[0] % 3) {
    case 0: {
      auto note = mailark::parse_note(v);
      if (!note) break;
      if (note->text.empty() || note->text.back() != '\n' || note->signatures.empty()) std::abort();
      if (mailark::note_signed_by(*note, mailark::NoteVerifier{"fuzz", key->public_key()})) std::abort();
      if (auto c = mailark::parse_checkpoint_text(note->text)) {
        auto again = mailark::parse_checkpoint_text(mailark::checkpoint_text(*c));
        if (!again || again->origin != c->origin || again->size != c->size || again->root != c->root ||
            again->time != c->time)
          std::abort();
      }
      break;
    }
    case 1: {
      auto c = mailark::parse_checkpoint_text(v);
      if (!c) break;
      // A text that parses, signed, opens again with the signer's key.
      const std::string signed_note = mailark::sign_note(mailark::checkpoint_text(*c), "fuzz", *key);
      auto note = mailark::parse_note(signed_note);
      if (note && !mailark::note_signed_by(*note, mailark::NoteVerifier{"fuzz", key->public_key()})) std::abort();
      break;
    }
    case 2: {
      auto k = mailark::parse_verifier_key(v);
      if (k) {
        auto again = mailark::parse_verifier_key(k->text());
        if (!again || again->name != k->name || again->key != k->key) std::abort();
      }
      break;
    }
  }
  return 0;
}
