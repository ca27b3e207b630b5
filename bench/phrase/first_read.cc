// What a phrase check pays per message, first read included: opens an archive read-only and, for
// each archive id given, times the record lookup, the stored bytes (Archive::raw: decompression and
// its SHA-256) and the parse, in milliseconds. With --digests it first times one call of OpenSSL's
// EVP digest and one of its SHA256_Init/Update/Final (each process starts cold: run it once per
// figure). With --tuned first, malloc is set up as mailark's programs set it (common/malloc_tuning.h);
// the last line sums each column.
//
//   build/bench/first_read [--tuned] DATA/archive 285725 263822 ...
//   build/bench/first_read --digests
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/malloc_tuning.h"
#include "engine/archive.h"
#include "engine/index_fields.h"
#include "engine/message.h"

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }
}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--digests") == 0) {
    unsigned char md[32];
    unsigned n = 0;
    auto t = Clock::now();
    EVP_Digest("x", 1, md, &n, EVP_sha256(), nullptr);
    std::printf("first EVP_Digest %.3f ms\n", ms_since(t));
    t = Clock::now();
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, "x", 1);
    SHA256_Final(md, &c);
    std::printf("then SHA256_Init/Update/Final %.3f ms (run with --sha-first for it cold)\n", ms_since(t));
    return 0;
  }
  if (argc >= 2 && std::strcmp(argv[1], "--sha-first") == 0) {
    unsigned char md[32];
    auto t = Clock::now();
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, "x", 1);
    SHA256_Final(md, &c);
    std::printf("first SHA256_Init/Update/Final %.3f ms\n", ms_since(t));
    return 0;
  }
  if (argc >= 2 && std::strcmp(argv[1], "--tuned") == 0) {
    mailark::tune_malloc();
    --argc;
    ++argv;
  }
  if (argc < 3) {
    std::fprintf(stderr, "usage: first_read [--tuned] ARCHIVE_DIR ID... | --digests | --sha-first\n");
    return 2;
  }
  mailark::Limits limits;
  auto t = Clock::now();
  auto archive = mailark::Archive::open(argv[1], limits, /*read_only=*/true);
  if (!archive) {
    std::fprintf(stderr, "%s\n", archive.error().to_string().c_str());
    return 1;
  }
  std::printf("open %.3f ms\n", ms_since(t));
  double sums[3] = {0, 0, 0};
  for (int i = 2; i < argc; ++i) {
    const std::uint64_t id = std::stoull(argv[i]);
    t = Clock::now();
    auto rec = (*archive)->record(id);
    const double record_ms = ms_since(t);
    if (!rec) {
      std::fprintf(stderr, "%s\n", rec.error().to_string().c_str());
      return 1;
    }
    t = Clock::now();
    auto raw = (*archive)->raw(*rec);
    const double raw_ms = ms_since(t);
    if (!raw) {
      std::fprintf(stderr, "%s\n", raw.error().to_string().c_str());
      return 1;
    }
    t = Clock::now();
    auto fields = mailark::index_fields(mailark::parse_message_or_flag(*raw, limits), *rec);
    const double parse_ms = ms_since(t);
    std::printf("%8llu record %.3f raw %.3f parse %.3f ms (%zu bytes)\n", static_cast<unsigned long long>(id), record_ms,
                raw_ms, parse_ms, raw->size());
    sums[0] += record_ms;
    sums[1] += raw_ms;
    sums[2] += parse_ms;
  }
  std::printf("all %d record %.3f raw %.3f parse %.3f ms\n", argc - 2, sums[0], sums[1], sums[2]);
  return 0;
}
