#include "engine/codec.h"

#define ZSTD_STATIC_LINKING_ONLY
#define ZDICT_STATIC_LINKING_ONLY
#include <zdict.h>
#include <zstd.h>

#include <mutex>

namespace mailark {
namespace {

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

ZSTD_CCtx* thread_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> ctx(ZSTD_createCCtx());
  return ctx.get();
}
ZSTD_DCtx* thread_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> ctx(ZSTD_createDCtx());
  return ctx.get();
}

}  // namespace

// A dictionary's zstd tables are built when first used, not when the archive opens: building the
// compression tables of a 110 KB dictionary costs about a millisecond, which every short command
// (search, show) would otherwise pay without compressing anything (docs/BENCHMARKS.md "Segment
// stores (archive format 5), lazy dictionaries, header-only phrase checks").
struct Codec::Dict {
  std::string bytes;
  std::once_flag dflag, cflag;
  ZSTD_DDict* ddict = nullptr;
  ZSTD_CDict* cdict = nullptr;
  ~Dict() {
    ZSTD_freeCDict(cdict);
    ZSTD_freeDDict(ddict);
  }
  const ZSTD_DDict* decompression() {
    // By reference: `bytes` lives as long as the table, and a copy of a 110 KB dictionary is about
    // 27 more pages to touch for the search that first reads a message.
    std::call_once(dflag, [&] {
      ddict = ZSTD_createDDict_byReference(bytes.data(), bytes.size());
    });
    return ddict;
  }
  const ZSTD_CDict* compression(int level) {
    std::call_once(cflag, [&] { cdict = ZSTD_createCDict(bytes.data(), bytes.size(), level); });
    return cdict;
  }
};

Result<std::shared_ptr<const Codec>> Codec::create(std::map<std::uint32_t, std::string> dictionaries,
                                                   std::uint32_t active, int level) {
  std::shared_ptr<Codec> c(new Codec());
  c->level_ = level;
  c->active_ = active;
  for (auto& [id, bytes] : dictionaries) {
    auto d = std::make_unique<Dict>();
    // What zstd needs of a dictionary to use it at all is checked now (its header and entropy
    // tables); the tables are built on first use.
    if (ZDICT_isError(ZDICT_getDictHeaderSize(bytes.data(), bytes.size()))) {
      return make_error(ErrorCode::kCorrupt, "zstd dictionary " + std::to_string(id) + " cannot be loaded");
    }
    d->bytes = std::move(bytes);  // taken, not copied: each page of a copy is a page fault more
    c->dicts_.emplace(id, std::move(d));
  }
  if (active != 0 && !c->dicts_.count(active)) {
    return make_error(ErrorCode::kCorrupt,
                      "active zstd dictionary " + std::to_string(active) + " is missing");
  }
  return std::shared_ptr<const Codec>(std::move(c));
}

Codec::~Codec() = default;

Result<std::string> Codec::compress(std::string_view raw) const {
  std::string out;
  out.resize(ZSTD_compressBound(raw.size()));
  ZSTD_CCtx* ctx = thread_cctx();
  std::size_t n;
  if (active_ != 0) {
    const ZSTD_CDict* cdict = dicts_.at(active_)->compression(level_);
    if (!cdict) return make_error(ErrorCode::kCorrupt, "zstd dictionary " + std::to_string(active_) + " cannot be loaded");
    n = ZSTD_compress_usingCDict(ctx, out.data(), out.size(), raw.data(), raw.size(), cdict);
  } else {
    n = ZSTD_compressCCtx(ctx, out.data(), out.size(), raw.data(), raw.size(), level_);
  }
  if (ZSTD_isError(n)) return make_error(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

Result<std::string> Codec::decompress(std::uint32_t dict_id, std::string_view frame,
                                      std::uint64_t expected_size, std::uint64_t max_bytes) const {
  unsigned long long declared = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR || declared == ZSTD_CONTENTSIZE_UNKNOWN) {
    return make_error(ErrorCode::kCorrupt, "stored frame has no valid zstd header");
  }
  if (declared != expected_size) {
    return make_error(ErrorCode::kCorrupt, "stored frame declares " + std::to_string(declared) +
                                               " bytes, the record says " + std::to_string(expected_size));
  }
  if (declared > max_bytes) {
    return make_error(ErrorCode::kLimit, "stored message of " + std::to_string(declared) +
                                             " bytes exceeds Limits::max_decompressed_bytes");
  }
  const ZSTD_DDict* ddict = nullptr;
  if (dict_id != 0) {
    auto it = dicts_.find(dict_id);
    if (it == dicts_.end()) {
      return make_error(ErrorCode::kNotFound,
                        "zstd dictionary " + std::to_string(dict_id) + " is not in the archive");
    }
    ddict = it->second->decompression();
    if (!ddict) return make_error(ErrorCode::kCorrupt, "zstd dictionary " + std::to_string(dict_id) + " cannot be loaded");
  }
  std::string out;
  out.resize(declared);
  ZSTD_DCtx* ctx = thread_dctx();
  std::size_t n =
      ddict ? ZSTD_decompress_usingDDict(ctx, out.data(), out.size(), frame.data(), frame.size(), ddict)
            : ZSTD_decompressDCtx(ctx, out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) return make_error(ErrorCode::kCorrupt, std::string("zstd: ") + ZSTD_getErrorName(n));
  if (n != declared) return make_error(ErrorCode::kCorrupt, "stored frame decompressed to the wrong size");
  return out;
}

Result<std::string> train_dictionary(const std::vector<std::string>& samples, std::size_t dict_bytes) {
  std::string joined;
  std::vector<std::size_t> sizes;
  for (const auto& s : samples) {
    if (s.empty()) continue;
    joined += s;
    sizes.push_back(s.size());
  }
  if (sizes.size() < 8 || joined.size() < dict_bytes) {
    return make_error(ErrorCode::kInvalidArgument, "too few sample messages to train a dictionary");
  }
  std::string dict(dict_bytes, '\0');
  ZDICT_fastCover_params_t params{};
  params.k = 200;
  params.d = 8;
  params.f = 20;
  params.steps = 0;
  params.accel = 1;
  params.zParams.compressionLevel = 3;
  std::size_t n = ZDICT_trainFromBuffer_fastCover(dict.data(), dict.size(), joined.data(), sizes.data(),
                                                  static_cast<unsigned>(sizes.size()), params);
  if (ZDICT_isError(n)) {
    return make_error(ErrorCode::kInvalidArgument,
                      std::string("training a dictionary: ") + ZDICT_getErrorName(n));
  }
  dict.resize(n);
  return dict;
}

}  // namespace mailark
