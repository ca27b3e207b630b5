// The archive: an append-only, tamper-evident LMDB store of every message mailark accepted. It is the
// source of truth; the Xapian index is derived from it.
//
// One LMDB environment (directory DATA/archive) with named databases (docs/FORMAT.md):
//   records     seq (u64 big-endian) -> encoded ArchiveRecord (record.h), seq = 1, 2, 3, ... without gaps
//   blobs       pack id (u64 big-endian, 1, 2, 3, ...) -> a pack: encoded blobs (dictionary id, raw size,
//               zstd frame; record.h) back to back, up to about 1 MiB; each raw message is stored once
//               however many records point at it
//   blob_index  SHA-256 of raw bytes -> pack id (u64 BE), offset (u32 BE), length (u32 BE)
//   queue       seq (u64 BE) -> queue entry (queue.h) for messages still to be delivered
//   quarantine  seq (u64 BE) -> quarantine entry (quarantine.h) for messages held back from delivery
//   rcpt_cache  lower-case address -> the primary's last answer about it (recipient verification)
//   dicts       dictionary id (u32 big-endian) -> zstd dictionary
//   meta        "format", "head" (last seq + hash), "active_dict", "counters"
// Invariants kept by append(): records are only ever added at head+1; a blob exists for every record;
// head and counters change in the same transaction as the records they describe; a record's queue or
// quarantine entry is written in the same transaction as the record.
//
// Format 2 (this release) adds the quarantine and rcpt_cache tables, queue entries v2 and the verdict
// "unscannable". A format 1 archive opened read-write is migrated in place (tables created, marker
// rewritten; nothing else changes); opened read-only it is read as it is
// (tests/e2e/test_upgrade.py test_format_one_data_folder_opens_migrates_and_delivers).
//
// Thread safety: all const methods may run concurrently with each other and with one writer at a time
// (LMDB readers never block the writer). A Snapshot is one consistent read view, used by one thread at a
// time. Writers across processes are serialised by LMDB's lock; one process per data folder writes
// records (DATA/lock, engine/data_lock.h), while queue and quarantine changes may come from the CLI.
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
#include "engine/quarantine.h"
#include "engine/queue.h"
#include "engine/record.h"

typedef struct MDB_env MDB_env;
typedef struct MDB_txn MDB_txn;

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
  std::uint64_t unscannable = 0;  // added in archive format 2; 0 in counters written before
};

// A DSN that was archived: the recipients of entry `seq` it reports flip from kFailed to kBounced in
// the same transaction as the DSN's record, so a crash can neither lose nor repeat it.
struct DsnNotice {
  std::uint64_t seq = 0;
  std::vector<std::string> recipients;
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
  // When set (instead of queue), the message is held in quarantine (seq and created_at filled in).
  std::optional<QuarantineEntry> quarantine;
  // When set, this message is the DSN for these recipients (see DsnNotice).
  std::optional<DsnNotice> dsn_for;
};

struct AppendOutcome {
  bool duplicate = false;  // no record was added: skip_if_archived and the blob existed, or a DSN whose
                           // failures were already reported by another
  ArchiveRecord record;    // the appended record (seq, hash, ...) unless duplicate
};

// The primary server's last answer about a recipient (inbound.verify_recipients = "primary").
struct CachedRecipient {
  std::string address;  // lower case
  bool exists = false;  // the primary accepted RCPT TO (2xx); false: it refused (5xx)
  std::int64_t checked_at = 0;
  std::string reply;    // the primary's reply, for the rejection text
};

class Archive;

// One consistent read view of the archive (an LMDB read transaction): everything read through it
// belongs to the same moment, however much is appended meanwhile. Hold it briefly: LMDB cannot reuse
// pages that a live snapshot still sees.
class ArchiveSnapshot {
 public:
  ~ArchiveSnapshot();
  ArchiveSnapshot(const ArchiveSnapshot&) = delete;
  ArchiveSnapshot& operator=(const ArchiveSnapshot&) = delete;

  ChainHead head() const;
  ArchiveCounters counters() const;
  Result<ArchiveRecord> record(std::uint64_t seq) const;
  // The exact original bytes, decompressed and checked against the record's SHA-256.
  Result<std::string> raw(const ArchiveRecord& record) const;
  // Calls fn for records from..head in order with the decoded record and the stored value (for
  // verification). fn returns false to stop. A record that fails to decode is passed to on_bad.
  using RecordFn = std::function<bool(const ArchiveRecord&, std::string_view value)>;
  using BadRecordFn = std::function<bool(std::uint64_t key, const Error&)>;
  Status scan(std::uint64_t from, const RecordFn& fn, const BadRecordFn& on_bad) const;

 private:
  friend class Archive;
  ArchiveSnapshot(const Archive& a, MDB_txn* txn) : archive_(a), txn_(txn) {}
  const Archive& archive_;
  MDB_txn* txn_;
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
  // on disk. On error nothing of the batch is stored, and the archive is as before.
  Result<std::vector<AppendOutcome>> append(std::vector<PendingAppend>& batch);

  Result<std::unique_ptr<ArchiveSnapshot>> snapshot() const;
  // Shorthands that each read their own snapshot.
  ChainHead head() const;
  ArchiveCounters counters() const;
  Result<ArchiveRecord> record(std::uint64_t seq) const;
  bool has_blob(const Digest& sha) const;
  Result<std::string> raw(const ArchiveRecord& record) const;
  Status scan(std::uint64_t from, const ArchiveSnapshot::RecordFn& fn, const ArchiveSnapshot::BadRecordFn& on_bad) const;

  std::shared_ptr<const Codec> codec() const;
  // Stores a new dictionary and makes it the one new blobs are compressed with. Returns its id.
  Result<std::uint32_t> add_dictionary(const std::string& dictionary);
  std::uint64_t file_bytes() const;  // size of the LMDB data file
  std::uint32_t format() const { return format_; }

  // The delivery queue (table `queue`, same environment). Entries are created by append().
  Result<std::vector<QueueEntry>> queue_entries() const;
  Result<QueueEntry> queue_entry(std::uint64_t seq) const;
  // Reads, changes (fn) and writes one entry in one transaction; fn returning an error leaves it as
  // it was. Returns the entry as written. kNotFound if there is none.
  Result<QueueEntry> queue_modify(std::uint64_t seq, const std::function<Status(QueueEntry&)>& fn);
  // Removes the entry; the archive record stays. kNotFound if there is none.
  Status queue_remove(std::uint64_t seq);
  // Delivery results in one durable transaction (the delivery agent's group commit): each changes
  // only its recipient, if still pending, in the entry as stored now (a hold made meanwhile stays);
  // entries left finished are removed; entries removed meanwhile are skipped. Returns the entries as
  // written (finished ones included), for the DSNs they need.
  Result<std::vector<QueueEntry>> queue_apply(const std::vector<DeliveryResult>& results);

  // Quarantine (table `quarantine`). include_decided: released and deleted entries too.
  Result<std::vector<QuarantineEntry>> quarantine_entries(bool include_decided) const;
  Result<QuarantineEntry> quarantine_entry(std::uint64_t seq) const;
  // Releases a held message: the entry records who and when, and a queue entry to its recipients is
  // written in the same transaction. Or deletes it from the quarantine (the message stays archived).
  // Errors: kNotFound, kInvalidArgument when it was already decided.
  Result<QuarantineEntry> quarantine_decide(std::uint64_t seq, QuarantineStatus decision, const std::string& by);

  // Recipient verification cache (table `rcpt_cache`).
  Result<std::vector<CachedRecipient>> recipient_cache() const;
  Status store_recipients(const std::vector<CachedRecipient>& entries);

  const std::string& dir() const { return dir_; }

 private:
  friend class ArchiveSnapshot;
  Archive() = default;
  Status load_codec();

  std::string dir_;
  Limits limits_;
  MDB_env* env_ = nullptr;
  unsigned records_dbi_ = 0, blobs_dbi_ = 0, dicts_dbi_ = 0, meta_dbi_ = 0, blob_index_dbi_ = 0, queue_dbi_ = 0,
           quarantine_dbi_ = 0, rcpt_cache_dbi_ = 0;
  bool read_only_ = false;
  // Tables a read-only open of an older archive may lack: they read as empty.
  bool has_queue_ = true, has_quarantine_ = true, has_rcpt_cache_ = true;
  std::uint32_t format_ = 0;
  mutable std::mutex codec_mu_;
  std::shared_ptr<const Codec> codec_;
};

}  // namespace mailark
