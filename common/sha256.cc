#include "common/sha256.h"

// Nettle's SHA-256 (its assembly, with the CPU's SHA extensions where present: 1.36 GB/s here against
// OpenSSL's 1.54). Not OpenSSL's: loading libcrypto.so costs every process that links it about 130
// page faults and 4.7 ms on this project's test machines (relocations and its initialisers), and
// the short commands (search, show, stats) need SHA-256 and nothing else of it
// (docs/BENCHMARKS.md "libcrypto out of the short commands"; test
// Sha256.KnownAnswersAndPiecesGiveTheSameDigest; tests/e2e/test_cli.py
// test_short_commands_do_not_load_libcrypto).
#include <nettle/memops.h>
#include <nettle/sha2.h>

namespace mailark {

Sha256::Sha256() : ctx_(new sha256_ctx) {
  sha256_init(static_cast<sha256_ctx*>(ctx_));
}

Sha256::~Sha256() {
  delete static_cast<sha256_ctx*>(ctx_);
}

void Sha256::update(std::string_view bytes) {
  sha256_update(static_cast<sha256_ctx*>(ctx_), bytes.size(), reinterpret_cast<const std::uint8_t*>(bytes.data()));
}

Digest Sha256::finish() {
  Digest d{};
  sha256_digest(static_cast<sha256_ctx*>(ctx_), d.size(), d.data());
  return d;
}

Digest sha256(std::string_view bytes) {
  // On the stack: every archived and every read message is hashed once.
  sha256_ctx ctx;
  Digest d{};
  sha256_init(&ctx);
  sha256_update(&ctx, bytes.size(), reinterpret_cast<const std::uint8_t*>(bytes.data()));
  sha256_digest(&ctx, d.size(), d.data());
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
  return memeql_sec(x.data(), y.data(), x.size()) != 0;
}

}  // namespace mailark
