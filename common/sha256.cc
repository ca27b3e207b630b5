#include "common/sha256.h"

#include <openssl/crypto.h>

#include <openssl/evp.h>

#include <cstdlib>

namespace mailark {

// OpenSSL can only fail here on allocation failure or a broken build; both are fatal for a process
// whose every acknowledgement depends on digests, so they abort rather than return.
static void check(int rc) {
  if (rc != 1) std::abort();
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_) std::abort();
  check(EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr));
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void Sha256::update(std::string_view bytes) {
  check(EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), bytes.data(), bytes.size()));
}

Digest Sha256::finish() {
  Digest d{};
  unsigned len = 0;
  check(EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), d.data(), &len));
  return d;
}

Digest sha256(std::string_view bytes) {
  Digest d{};
  unsigned len = 0;
  check(EVP_Digest(bytes.data(), bytes.size(), d.data(), &len, EVP_sha256(), nullptr));
  return d;
}

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

bool from_hex(std::string_view hex, Digest& out) {
  if (hex.size() != 64) return false;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < 32; ++i) {
    int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool same_secret(std::string_view a, std::string_view b) {
  Digest x = sha256(a), y = sha256(b);
  return CRYPTO_memcmp(x.data(), y.data(), x.size()) == 0;
}

}  // namespace mailark
