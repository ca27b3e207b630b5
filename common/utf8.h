// Text from mail made valid UTF-8: every byte or run of bytes that is not part of a well-formed
// sequence (RFC 3629: no overlong form, no surrogate, nothing past U+10FFFF) becomes U+FFFD, one for
// each such byte; valid text comes back unchanged
// (tests/record_test.cc Utf8.InvalidBytesBecomeReplacementCharacters).
#pragma once

#include <string>
#include <string_view>

namespace mailark {

inline std::string valid_utf8(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size();) {
    const auto c = static_cast<unsigned char>(in[i]);
    std::size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    bool ok = len > 0 && i + len <= in.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(in[i + k]);
      if (b < 0x80 || b > 0xBF) ok = false;
      if (k == 1 && ((c == 0xE0 && b < 0xA0) || (c == 0xED && b > 0x9F) || (c == 0xF0 && b < 0x90) || (c == 0xF4 && b > 0x8F)))
        ok = false;
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
