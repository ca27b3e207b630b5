// SHA-256, the one translation point to OpenSSL's SHA-256.
// Thread safety: Sha256 objects are not shared; the free function is reentrant.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace mailark {

using Digest = std::array<std::uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::string_view bytes);
  Digest finish();

 private:
  void* ctx_;  // SHA256_CTX
};

Digest sha256(std::string_view bytes);
std::string to_hex(std::span<const std::uint8_t> bytes);
// Compares two secrets in constant time, over their digests, so neither the contents nor the length
// leak through timing (bearer tokens, CSRF tokens).
bool same_secret(std::string_view a, std::string_view b);
// Parses 64 hex digits; returns false on anything else.
bool from_hex(std::string_view hex, Digest& out);

}  // namespace mailark
