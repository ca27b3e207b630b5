// Text from mail made valid UTF-8: every byte or run of bytes that is not part of a well-formed
// sequence (RFC 3629: no overlong form, no surrogate, nothing past U+10FFFF) becomes U+FFFD, one for
// each such byte; valid text comes back unchanged
// (tests/record_test.cc Utf8.InvalidBytesBecomeReplacementCharacters).
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace mailark {

// The UTF-8 sequence length a lead byte starts (0: not a lead byte). Also tools/terminal_safe.cc's.
inline std::size_t utf8_sequence_length(unsigned char lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// May `c` follow `lead` as its second byte (no overlong form, no surrogate, nothing past U+10FFFF)?
inline bool utf8_second_byte_ok(unsigned char lead, unsigned char c) {
  if (c < 0x80 || c > 0xBF) return false;
  if (lead == 0xE0) return c >= 0xA0;
  if (lead == 0xED) return c <= 0x9F;
  if (lead == 0xF0) return c >= 0x90;
  if (lead == 0xF4) return c <= 0x8F;
  return true;
}

// The code point of the well-formed UTF-8 sequence at `i` and its length, or (0, 1) for a byte that
// does not start one (the index's CJK letters, the search listing's columns).
inline std::pair<char32_t, std::size_t> utf8_code_point(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return {c, 1};
  const std::size_t len = utf8_sequence_length(c);
  if (len == 0 || i + len > s.size() || !utf8_second_byte_ok(c, static_cast<unsigned char>(s[i + 1]))) return {0, 1};
  char32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < 0x80 || b > 0xBF) return {0, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, len};
}

inline std::string valid_utf8(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size();) {
    const auto c = static_cast<unsigned char>(in[i]);
    const std::size_t len = c < 0x80 ? 1 : utf8_sequence_length(c);
    bool ok = len > 0 && i + len <= in.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(in[i + k]);
      ok = k == 1 ? utf8_second_byte_ok(c, b) : (b >= 0x80 && b <= 0xBF);
    }
    if (ok) {
      out.append(in.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace mailark
