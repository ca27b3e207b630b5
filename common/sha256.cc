#include "common/sha256.h"

// OpenSSL's SHA-256 itself (SHA256_Init/Update/Final: its assembly, with the CPU's SHA extensions
// where present), not the EVP interface. OpenSSL 3 marks these deprecated in favour of EVP, but EVP's
// first digest in a process loads the configuration and activates the default provider: 0.6-2 ms,
// paid by every short command that reads one message (`show`, a search whose phrase reads a few),
// where the digest of a 9 KB message takes 0.01 ms. Same code, same speed on long input
// (docs/BENCHMARKS.md, "Phrase checks at 306,642: the first read, the head of the index, reads side by
// side"; test Sha256.KnownAnswersAndPiecesGiveTheSameDigest). TLS, scrypt and random stay on EVP.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstdlib>

namespace mailark {

// OpenSSL's SHA-256 fails only on a null context, which these never pass; a failure would be a
// broken build, fatal for a process whose every acknowledgement depends on digests.
static void check(int rc) {
  if (rc != 1) std::abort();
}

Sha256::Sha256() : ctx_(new SHA256_CTX) {
  check(SHA256_Init(static_cast<SHA256_CTX*>(ctx_)));
}

Sha256::~Sha256() {
  delete static_cast<SHA256_CTX*>(ctx_);
}

void Sha256::update(std::string_view bytes) {
  check(SHA256_Update(static_cast<SHA256_CTX*>(ctx_), bytes.data(), bytes.size()));
}

Digest Sha256::finish() {
  Digest d{};
  check(SHA256_Final(d.data(), static_cast<SHA256_CTX*>(ctx_)));
  return d;
}

Digest sha256(std::string_view bytes) {
  // On the stack: every archived and every read message is hashed once.
  SHA256_CTX ctx;
  Digest d{};
  check(SHA256_Init(&ctx));
  check(SHA256_Update(&ctx, bytes.data(), bytes.size()));
  check(SHA256_Final(d.data(), &ctx));
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
