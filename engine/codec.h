// Compression of archived messages: zstd with dictionaries trained on the archive's own mail. The one
// translation point to libzstd.
//
// Dictionary id 0 means "no dictionary" (plain zstd frame). Ids 1, 2, ... are dictionaries stored in the
// archive; every blob names the id it was written with, so old blobs stay readable after a new
// dictionary is trained. A Codec is immutable once built; the archive swaps in a new one when a
// dictionary is added. Thread safety: all methods are safe to call concurrently (contexts are per thread).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace mailark {

class Codec {
 public:
  // dictionaries: id -> dictionary bytes. active: the id new blobs are compressed with (0 = none).
  static Result<std::shared_ptr<const Codec>> create(std::map<std::uint32_t, std::string> dictionaries,
                                                     std::uint32_t active, int level = 3);
  ~Codec();

  std::uint32_t active_dictionary() const { return active_; }
  // Compresses with the active dictionary.
  Result<std::string> compress(std::string_view raw) const;
  // Decompresses a frame written with dictionary `dict_id`. The frame must declare its content size,
  // which must equal expected_size and not exceed max_bytes; errors are kCorrupt (or kNotFound for an
  // unknown dictionary).
  Result<std::string> decompress(std::uint32_t dict_id, std::string_view frame, std::uint64_t expected_size,
                                 std::uint64_t max_bytes) const;

 private:
  Codec() = default;
  struct Dict;
  std::map<std::uint32_t, std::unique_ptr<Dict>> dicts_;
  std::uint32_t active_ = 0;
  int level_ = 3;
};

// Trains a dictionary from sample messages (ZDICT). Errors: kInvalidArgument when the samples are too
// few or too small to train from (the caller keeps using plain zstd).
Result<std::string> train_dictionary(const std::vector<std::string>& samples, std::size_t dict_bytes);

}  // namespace mailark
