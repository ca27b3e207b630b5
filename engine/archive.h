// The archive: an append-only, tamper-evident LMDB store of every message mailark accepted. It is the
// source of truth; the Xapian index is derived from it.
//
// One LMDB environment (directory DATA/archive) with named databases (docs/FORMAT.md):
//   records  seq (u64 big-endian) -> encoded ArchiveRecord (record.h), seq = 1, 2, 3, ... without gaps
//   blobs    pack id (u64 big-endian, 1, 2, 3, ...) -> a pack: encoded blobs (dictionary id, raw size,
//            zstd frame; record.h) back to back, up to about 1 MiB; each raw message is stored once
//            however many records point at it
//   blob_index  SHA-256 of raw bytes -> pack id (u64 BE), offset (u32 BE), length (u32 BE)
//   queue    seq (u64 BE) -> queue entry (queue.h) for messages still to be delivered
//   dicts    dictionary id (u32 big-endian) -> zstd dictionary
//   meta     "format", "head" (last seq + hash), "active_dict", "counters"
// Invariants kept by append(): records are only ever added at head+1; a blob exists for every record;
// head and counters change in the same transaction as the records they describe.
//
// Thread safety: all const methods may run concurrently with each other and with one append() at a
// time (LMDB readers never block the writer). Writers across processes are serialised by LMDB's lock.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/limits.h"
#include "common/result.h"
#include "engine/codec.h"
#include "engine/queue.h"
#include "engine/record.h"

typedef struct MDB_env MDB_env;

namespace mailark {

struct ChainHead {
  std::uint64_t seq = 0;  // 0 for an empty archive
  Digest hash{};          // zero for an empty archive
};

// Running totals, kept in meta and updated with every append.
struct ArchiveCounters {
  std::uint64_t records = 0;
  std::uint64_t raw_bytes = 0;  // sum of raw sizes over records (what dedup saves from)
  std::uint64_t blobs = 0;
  std::uint64_t unique_raw_bytes = 0;  // sum of raw sizes over blobs
  std::uint64_t stored_bytes = 0;      // sum of compressed frame sizes over blobs
  std::uint64_t clean = 0, infected = 0, unscanned = 0, malformed = 0;
  std::uint64_t packs = 0;
};

// One message to append, prepared (hashed, compressed) outside the write transaction.
struct PendingAppend {
  Envelope envelope;
  StoredVerdict verdict;
  std::uint32_t flags = 0;
  Digest content_sha256{};
  std::uint64_t raw_size = 0;
  std::uint32_t dict_id = 0;
  std::string frame;              // zstd frame of the raw bytes, written only if the blob is new
  bool skip_if_archived = false;  // imports: an identical message already archived adds no record
  // When set, a queue entry for the new record is written in the same transaction (its seq is filled
  // in): the record and its delivery obligation become durable together.
  std::optional<QueueEntry> queue;
};

struct AppendOutcome {
  bool duplicate = false;  // skip_if_archived and the blob existed: no record was added
  ArchiveRecord record;    // the appended record (seq, hash, ...) unless duplicate
};

class Archive {
 public:
  // Opens or creates the archive in `dir`. read_only opens without creating. Errors: kIo, kCorrupt,
  // kUnsupported (a newer format).
  static Result<std::unique_ptr<Archive>> open(const std::string& dir, const Limits& limits, bool read_only);
  ~Archive();
  Archive(const Archive&) = delete;
  Archive& operator=(const Archive&) = delete;

  // Appends the batch in one durable transaction (group commit): when this returns ok, every record is
  // on disk. On error nothing of the batch is stored.
  Result<std::vector<AppendOutcome>> append(std::vector<PendingAppend>& batch);

  ChainHead head() const;
  ArchiveCounters counters() const;
  Result<ArchiveRecord> record(std::uint64_t seq) const;
  bool has_blob(const Digest& sha) const;
  // The exact original bytes, decompressed and checked against the record's SHA-256.
  Result<std::string> raw(const ArchiveRecord& record) const;

  // Calls fn for records from..head in order with the decoded record and the stored value (for
  // verification). fn returns false to stop. A record that fails to decode is passed to on_bad.
  using RecordFn = std::function<bool(const ArchiveRecord&, std::string_view value)>;
  using BadRecordFn = std::function<bool(std::uint64_t key, const Error&)>;
  Status scan(std::uint64_t from, const RecordFn& fn, const BadRecordFn& on_bad) const;

  std::shared_ptr<const Codec> codec() const;
  // Stores a new dictionary and makes it the one new blobs are compressed with. Returns its id.
  Result<std::uint32_t> add_dictionary(const std::string& dictionary);
  std::uint64_t file_bytes() const;  // size of the LMDB data file

  // The delivery queue (table `queue`, same environment). Entries are created by append().
  Result<std::vector<QueueEntry>> queue_entries() const;
  Result<QueueEntry> queue_entry(std::uint64_t seq) const;
  // Replaces an existing entry (delivery results, hold, release). kNotFound if it was removed.
  Status queue_update(const QueueEntry& entry);
  // Removes the entry; the archive record stays. kNotFound if there is none.
  Status queue_remove(std::uint64_t seq);
  // Many updates and removals in one durable transaction (the delivery agent's group commit).
  // Entries removed meanwhile (an administrator's delete) are skipped, not recreated.
  Status queue_apply(const std::vector<QueueEntry>& updates, const std::vector<std::uint64_t>& removals);
  const std::string& dir() const { return dir_; }

 private:
  Archive() = default;
  Status load_codec();

  std::string dir_;
  Limits limits_;
  MDB_env* env_ = nullptr;
  unsigned records_dbi_ = 0, blobs_dbi_ = 0, dicts_dbi_ = 0, meta_dbi_ = 0, blob_index_dbi_ = 0, queue_dbi_ = 0;
  bool read_only_ = false;
  bool has_queue_ = true;
  mutable std::mutex codec_mu_;
  std::shared_ptr<const Codec> codec_;
};

}  // namespace mailark
