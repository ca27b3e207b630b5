#include "common/base64.h"

#include <nettle/base64.h>

#include <cstdlib>
#include <vector>

#include "common/random.h"

namespace mailark {

std::string base64_encode(std::string_view bytes) {
  std::string out(BASE64_ENCODE_RAW_LENGTH(bytes.size()), '\0');
  base64_encode_raw(out.data(), bytes.size(), reinterpret_cast<const std::uint8_t*>(bytes.data()));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text, std::size_t max_input) {
  if (text.empty()) return std::string();
  if (text.size() % 4 != 0 || text.size() > max_input) return std::nullopt;
  // Strict before Nettle sees it (Nettle skips white space): the alphabet, padding only at the end.
  std::size_t pad = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (c == '=') {
      if (i + 2 < text.size()) return std::nullopt;  // padding only in the last two places
      ++pad;
    } else if (!alpha || pad) {
      return std::nullopt;
    }
  }
  // The bits the last character before the padding does not use are ignored, as every decoder but
  // Nettle's does (a client's odd encoder is no reason to refuse it); canonical_base64 in
  // common/checkpoint.cc refuses such spellings where they matter. Only the last group is copied to
  // clear them: Nettle decodes the rest in place.
  const std::string_view head = text.substr(0, text.size() - 4);
  char tail[4];
  text.copy(tail, 4, text.size() - 4);
  if (pad > 0) {
    static constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char& last = tail[3 - pad];
    last = kAlphabet[kAlphabet.find(last) & (pad == 1 ? 0x3C : 0x30)];
  }
  std::string out(BASE64_DECODE_LENGTH(text.size()), '\0');
  base64_decode_ctx ctx;
  base64_decode_init(&ctx);
  std::size_t n = out.size(), m = 0;
  if (!base64_decode_update(&ctx, &n, reinterpret_cast<std::uint8_t*>(out.data()), head.size(), head.data()))
    return std::nullopt;
  m = out.size() - n;
  if (!base64_decode_update(&ctx, &m, reinterpret_cast<std::uint8_t*>(out.data()) + n, 4, tail) ||
      !base64_decode_final(&ctx))
    return std::nullopt;
  n += m;
  out.resize(n);
  return out;
}

std::string random_token(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  // A token is a credential: without random bytes there is none (never a predictable one).
  if (!random_bytes(raw.data(), raw.size())) std::abort();
  std::string out;
  for (char c : base64_encode(std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()))) {
    if (c == '=') continue;
    out += c == '+' ? '-' : c == '/' ? '_' : c;
  }
  return out;
}

}  // namespace mailark
