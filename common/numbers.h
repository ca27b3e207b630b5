// Decimal numbers from outside text (configuration, SMTP parameters and replies, file names, queries):
// digits only, never a sign, a space or an exponent, and never an exception. std::stoul and its
// relatives throw on too many digits, which once let a configuration with port 99999999999999999999
// abort the server (found by fuzz/config_fuzz.cc; regression in fuzz/regressions/config/).
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace mailark {

// The value of `text` if it is one or more ASCII digits and at most `max`; otherwise nothing.
inline std::optional<std::uint64_t> parse_decimal(std::string_view text, std::uint64_t max = UINT64_MAX) {
  if (text.empty()) return std::nullopt;
  for (char c : text)
    if (c < '0' || c > '9') return std::nullopt;
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v > max) return std::nullopt;
  return v;
}

}  // namespace mailark
