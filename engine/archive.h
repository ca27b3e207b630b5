// The archive: an append-only, tamper-evident LMDB store of every message mailark accepted. It is the
// source of truth; the Xapian index is derived from it.
//
// The main LMDB environment (directory DATA/archive) with named databases (docs/FORMAT.md), and one
// store per time segment (DATA/archive/segment-FIRST.mdb, an LMDB environment in one file) holding
// that segment's records and packs (format 5; the segments of an older archive keep theirs in the main
// environment, which has the same two tables):
//   records     seq (u64 big-endian) -> encoded ArchiveRecord (record.h), seq = 1, 2, 3, ... without gaps
//   blobs       pack id (u64 big-endian, 1, 2, 3, ...) -> a pack: encoded blobs (dictionary id, raw size,
//               zstd frame; record.h) back to back, up to about 1 MiB; each raw message is stored once
//               however many records point at it; a pack belongs to the segment that wrote it
//   blob_index  SHA-256 of raw bytes -> pack id (u64 BE), offset (u32 BE), length (u32 BE)
//   queue       seq (u64 BE) -> queue entry (queue.h) for messages still to be delivered
//   quarantine  seq (u64 BE) -> quarantine entry (quarantine.h) for messages held back from delivery
//   rcpt_cache  lower-case address -> the primary's last answer about it (recipient verification)
//   queue_due   lane, due time, seq -> empty: the queue's entries with work to do, by route and due time
//   continuity  the continuity monitor's and events' state (engine/continuity.h): short keys -> JSON
//   delivered   SHA-256(Message-ID, recipient) -> time, seq: what reached the primary (drain dedupe)
//   dicts       dictionary id (u32 big-endian) -> zstd dictionary
//   meta        "format", "head" (last seq + hash), "active_dict", "counters", "segments" (the time
//               segments' table; absent: one segment from 1), "segment_policy" (absent: the default)
// Invariants kept by append(): records are only ever added at head+1; a blob exists for every record;
// head and counters change in the same transaction as the records they describe; a record's queue or
// quarantine entry is written in the same transaction as the record. With segment stores, a batch
// commits its records and packs to the stores first and then the main environment, whose head is the
// commit point: whatever a store holds past the head (a crash between the two commits) was never
// answered 250, is never read, and is overwritten by the next append
// (Segments.AStoreTailPastTheHeadIsNeverReadAndIsOverwritten).
//
// Format 2 added the quarantine and rcpt_cache tables, queue entries v2 and the verdict "unscannable";
// format 3 the queue_due, continuity and delivered tables, queue entries v3 and the direction "probe";
// format 4 time segments (meta "segments"; an archive without it is one segment); format 5
// a store file per segment for the segments begun after it (the table's version 2); format 6
// the Merkle tree; format 7 holdings; format 8 retention's `expired` runs and signed `tombstones`. An
// older archive opened read-write is migrated in place (tables created, the due index built from the
// queue, marker rewritten; nothing else changes); opened read-only it is read as it is
// (tests/e2e/test_upgrade.py test_format_one_data_folder_opens_migrates_and_delivers,
// test_format_two_data_folder_opens_migrates_and_delivers).
//
// Thread safety: all const methods may run concurrently with each other and with one writer at a time
// (LMDB readers never block the writer). A Snapshot is one consistent read view, used by one thread at a
// time. Writers across processes are serialised by LMDB's lock; one process per data folder writes
// records (DATA/lock, engine/data_lock.h), while queue and quarantine changes may come from the CLI.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.h"
#include "common/merkle.h"
#include "common/result.h"
#include "engine/codec.h"
#include "engine/quarantine.h"
#include "engine/queue.h"
#include "engine/record.h"

typedef struct MDB_env MDB_env;
typedef struct MDB_txn MDB_txn;

namespace mailark {

// The archive format this release writes (docs/FORMAT.md); it reads every one from 1 and migrates
// older ones in place on a writable open.
inline constexpr std::uint32_t kArchiveFormat = 8;

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
  // Some message has more than one record (custodians' copies): archive-wide searches show each once.
  bool has_copies() const { return records > blobs; }
};

// Time segments: the archive's records are cut into consecutive runs of seqs, each belonging to one
// period (month, quarter or year of archiving) and at most max_records long. A new segment begins with
// the first record archived in a later period than the live segment's, or when the live one is full.
// Each segment gets its own index shards (indexer/index.h), so the index being written stays small
// whatever the archive's size, and a closed segment is sealed (compacted, never written again).
// Test: Segments.* in tests/archive_test.cc.
enum class SegmentPeriod : std::uint8_t { kNone, kMonth, kQuarter, kYear };
struct SegmentPolicy {
  SegmentPeriod period = SegmentPeriod::kMonth;
  std::uint64_t max_records = 250000;  // 0: no limit (docs/BENCHMARKS.md "Time segments")
};
// The period label of a time (UTC): "2026-11", "2026-Q4", "2026", or "" for kNone.
std::string segment_period_label(SegmentPeriod period, std::int64_t unix_time);
std::optional<SegmentPeriod> parse_segment_period(std::string_view name);

struct SegmentInfo {
  std::uint64_t first = 1;     // its first record's seq
  std::uint64_t last = 0;      // its last record's seq (0 while the live segment is empty)
  std::string period;          // the period label it was opened in
  std::int64_t opened_at = 0;  // when its first record was archived (0: unknown, an older archive)
  // Where its records and packs are: its own store file (every segment begun by format 5; always a
  // suffix of the table), or the main environment (the segments of an older archive).
  bool own_store = false;
  std::uint64_t first_pack = 0;  // own store: the id of the first pack it wrote (its packs run to the
                                 // next segment's first_pack)
};

// Retention (format 8): records removed by expiry, in runs of consecutive seqs, each standing under
// the signed tombstone that removed it (docs/FORMAT.md "Expiry and tombstones").
struct ExpiredRun {
  std::uint64_t first = 0, last = 0;  // the run's seqs
  std::uint64_t tombstone = 0;        // the tombstone that expired them
};
struct Tombstone {
  std::uint64_t id = 0;   // 1, 2, ... in the order written
  std::string body;       // JSON, exactly as signed
  std::string signature;  // 64-byte Ed25519 signature of body by the archive's key (checkpoint.key)
};
// SHA-256("mailark-tombstone-v1\n" || body): what the next tombstone names as its `prev`.
Digest tombstone_hash(std::string_view body);

// An expiry: records of one closed segment that retention removes. Test: Retention.* in
// tests/retention_test.cc.
struct ExpiryRequest {
  std::uint64_t segment = 0;         // the segment's first seq
  std::vector<std::uint64_t> seqs;   // ascending, all in that segment, none expired yet
  std::string by;                    // who ran it (an audit actor)
  std::string reason;                // the policy that decided it, in words
  std::int64_t now = 0;
  std::function<std::string(std::string_view body)> sign;  // 64-byte Ed25519 signature
};
// One segment moved out of the main environment into a store of its own (Archive::move_segments_to_stores).
struct SegmentMove {
  std::uint64_t first = 0, last = 0;
  std::uint64_t records = 0;     // records copied into the store
  std::uint64_t packs = 0;       // packs copied (the first_pack..next first_pack - 1 the main environment had)
  std::uint64_t first_pack = 0;  // the store's first pack id, now in the segment table
  std::uint64_t store_bytes = 0; // the store file's size
};

struct ExpiryOutcome {
  std::uint64_t expired = 0;        // records removed
  std::uint64_t kept = 0;           // records of the segment left (held, or not due)
  std::uint64_t blobs_removed = 0;  // messages no record holds any more (their bytes are gone)
  std::uint64_t blobs_carried = 0;  // messages still held, carried forward into the live segment
  std::uint64_t bytes_carried = 0;
  bool store_removed = false;       // the segment's store file was deleted (nothing kept)
  bool store_deferred = false;      // the store was being read: written again at the next pass or open
  Tombstone tombstone;
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
  // When set, a queue entry for the new record is written in the same transaction (its seq is filled
  // in): the record and its delivery obligation become durable together.
  std::optional<QueueEntry> queue;
  // When set (instead of queue), the message is held in quarantine (seq and created_at filled in).
  std::optional<QuarantineEntry> quarantine;
  // When set, this message is the DSN for these recipients (see DsnNotice).
  std::optional<DsnNotice> dsn_for;
};

struct AppendOutcome {
  bool duplicate = false;  // no record was added: a mailbox import its custodian holds, or a DSN whose
                           // failures were already reported by another
  bool starts_segment = false;  // this record is the first of a new time segment
  bool copy = false;            // an earlier record holds the same bytes (they were stored already)
  ArchiveRecord record;    // the appended record (seq, hash, ...) unless duplicate
};

// The primary server's last answer about a recipient (inbound.verify_recipients = "primary").
struct CachedRecipient {
  std::string address;  // lower case
  bool exists = false;  // the primary accepted RCPT TO (2xx); false: it refused (5xx)
  std::int64_t checked_at = 0;
  std::string reply;    // the primary's reply, for the rejection text
};

// When a message (by Message-ID) reached a recipient at the primary.
struct DeliveredAt {
  std::int64_t at = 0;
  std::uint64_t seq = 0;
};

// What is left in the queue for one route over a range of messages (a continuity event's).
// pending_messages: entries with a recipient still to deliver, not held by an administrator
// (held_by_admin counts those); recipients are counted over all entries.
struct QueueRangeFigures {
  std::uint64_t pending_messages = 0, pending_recipients = 0, kept_recipients = 0, held_by_admin = 0;
};

// Key-value access to the continuity table inside one transaction (Archive::state_read/state_write).
class StateView {
 public:
  virtual ~StateView() = default;
  virtual std::optional<std::string> get(std::string_view key) const = 0;
  // Keys starting with prefix in order (reverse: from the last); fn returns false to stop.
  virtual void scan(std::string_view prefix, const std::function<bool(std::string_view, std::string_view)>& fn,
                    bool reverse = false) const = 0;
};
class StateWriter : public StateView {
 public:
  virtual Status put(std::string_view key, std::string_view value) = 0;
  virtual Status del(std::string_view key) = 0;
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
  std::vector<SegmentInfo> segments() const;
  Result<ArchiveRecord> record(std::uint64_t seq) const;
  // The exact original bytes, decompressed and checked against the record's SHA-256.
  Result<std::string> raw(const ArchiveRecord& record) const;
  // Calls fn for records from..head in order with the decoded record and the stored value (for
  // verification). fn returns false to stop. A record that fails to decode is passed to on_bad.
  using RecordFn = std::function<bool(const ArchiveRecord&, std::string_view value)>;
  using BadRecordFn = std::function<bool(std::uint64_t key, const Error&)>;
  Status scan(std::uint64_t from, const RecordFn& fn, const BadRecordFn& on_bad) const;
  // A record's stored value, exactly as stored (not decoded): kNotFound past the head.
  Result<std::string> record_value(std::uint64_t seq) const;

  // The Merkle tree over the records (common/merkle.h; leaf i is record i + 1's stored value;
  // docs/FORMAT.md "The Merkle tree"). tree_size() is how many records it covers: the head once a
  // writable open has built it, 0 for an archive older than format 6 opened read-only (no tree).
  std::uint64_t tree_size() const;
  bool has_tree() const;
  Result<Digest> tree_node(unsigned level, std::uint64_t index) const;
  merkle::NodeFn tree_nodes() const;  // tree_node, bound to this snapshot (which must outlive it)
  // Every record that holds this content (ascending ids): the custodians' copies of one message,
  // and each SMTP delivery of the same bytes (table `holdings`, format 7). An archive older than
  // format 7 opened read-only has no such table: empty (has_copies_index() says so).
  Result<std::vector<std::uint64_t>> copies(const Digest& content) const;
  bool has_copies_index() const;
  // The archive's identity (16 random bytes made with the tree, as 32 hex digits): the origin line
  // of its checkpoints. Empty for an archive older than format 6 opened read-only.
  std::string archive_id() const;

  // Retention (format 8; none in an older archive): the run holding seq, if it was expired; every
  // run, ascending; every tombstone, in order.
  Result<std::optional<ExpiredRun>> expired_run(std::uint64_t seq) const;
  Result<std::vector<ExpiredRun>> expired_runs() const;
  Result<std::vector<Tombstone>> tombstones() const;

 private:
  friend class Archive;
  ArchiveSnapshot(const Archive& a, MDB_txn* txn) : archive_(a), txn_(txn) {}
  // Where a record or a pack is: a transaction and the table to read (the main environment's, or a
  // read transaction on a segment's store, begun when first needed and kept for the snapshot).
  struct Place {
    MDB_txn* txn = nullptr;
    unsigned dbi = 0;
  };
  struct StoreRead {
    MDB_txn* txn = nullptr;
    unsigned records_dbi = 0, blobs_dbi = 0;
  };
  Result<Place> record_place(std::uint64_t seq) const;
  Result<Place> pack_place(std::uint64_t pack) const;
  Result<StoreRead> store_read(std::size_t segment) const;
  const std::vector<SegmentInfo>& table() const;
  const Archive& archive_;
  MDB_txn* txn_;
  mutable std::optional<std::vector<SegmentInfo>> segments_;  // as this snapshot sees them
  mutable std::map<std::uint64_t, StoreRead> store_reads_;
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
  // The time segments, oldest first; the last is the live one. Never empty.
  std::vector<SegmentInfo> segments() const;
  // How appends cut segments: stored in the archive (meta "segment_policy"), so that every writer
  // (serve, import, reindex) follows the same; SegmentPolicy{} until set.
  SegmentPolicy segment_policy() const;
  Status set_segment_policy(const SegmentPolicy& policy);
  // Closes the live segment at the next append that adds a record (that record begins a new one), as
  // if it were full, once; a live segment without records is not cut. Not kept on disk: a server asks
  // again after a restart. So that a segment whose index an older release wrote can be sealed and
  // read again (engine/retention.h reread_older_segments) without waiting for its period to end.
  // Test: Segments.ALiveSegmentAskedToCloseClosesAtTheNextRecordOnce.
  void close_live_segment_at_next_append() { close_live_.store(true); }
  bool live_segment_closing() const { return close_live_.load(); }
  Result<ArchiveRecord> record(std::uint64_t seq) const;
  // An import with this envelope would be a duplicate: its custodian's copy of this content is
  // already recorded (append checks again inside its transaction).
  bool has_copy(const Digest& content, const Envelope& envelope) const;
  // Every record holding this record's content (it included), oldest first: who held the message.
  Result<std::vector<ArchiveRecord>> copies_of(const ArchiveRecord& record) const;
  Result<std::string> raw(const ArchiveRecord& record) const;
  Status scan(std::uint64_t from, const ArchiveSnapshot::RecordFn& fn, const ArchiveSnapshot::BadRecordFn& on_bad) const;

  std::shared_ptr<const Codec> codec() const;
  // Stores a new dictionary and makes it the one new blobs are compressed with. Returns its id.
  Result<std::uint32_t> add_dictionary(const std::string& dictionary);
  std::uint64_t file_bytes() const;  // bytes on disk: the main environment and every segment store
  // A segment's store file (own_store segments), and its bytes on disk (0 when it has none).
  std::string store_path(std::uint64_t first) const;
  std::uint64_t store_bytes(std::uint64_t first) const;
  // Seals the stores of closed segments: made read-only on disk (mode 0440), as nothing writes them
  // again. They need no compaction: records and packs are appended in key order (MDB_APPEND), which
  // fills every page (a closed 250,000-message store had 14 free pages of 82,539). Returns how many
  // it sealed now. Test: Segments.ClosedStoresAreSealedReadOnly.
  Result<std::uint64_t> seal_stores();
  bool store_sealed(std::uint64_t first) const;
  std::uint32_t format() const { return format_; }

  // Removes records of a closed segment (retention), in one transaction of the main environment:
  // the records' holdings rows go; a message no record holds any more leaves blob_index (its bytes
  // are no longer reachable); one still held by a record of this segment or a later one, whose bytes
  // are in this segment's packs, is carried forward into a pack of the live segment; the runs are
  // recorded and a signed tombstone (hash-chained to the previous one) is written, naming for each
  // run the hash it links from, the hash of its last record and a digest of its Merkle leaves, so
  // that verify walks the chain and rebuilds the tree across the gap. The Merkle tree's rows are never
  // removed. Then the segment's store is written again without the expired records and packs (or
  // deleted when nothing is left), swapped in by rename; a crash before the swap leaves the old file,
  // whose expired records are never read and which the next writable open rewrites
  // (finish_expiries). Segments in the main environment (archives from before format 5) are refused
  // (kUnsupported): retention moves them into stores first (move_segments_to_stores). Errors: kInvalidArgument for a seq outside the closed segment, already expired,
  // with mail still queued or undecided in quarantine.
  Result<ExpiryOutcome> expire(const ExpiryRequest& request);
  // Moves closed segments of an archive from before format 5 (their records and packs in the main
  // environment) into stores of their own, so that retention can expire them like any other: from the
  // last such segment down to the one beginning at record `down_to` (0: every one), as segments with
  // stores must stay a suffix of the table. Each store is written beside (segment-N.mdb.moving),
  // synced, sealed and renamed into place; then one transaction of the main environment gives the
  // segment its store in the table (the commit point: a crash before it leaves the records where
  // they were, and the next move writes the store again); then the moved records and packs leave
  // the main environment (drop_moved_leftovers, also run by every writable open, finishes it after a
  // crash). A segment's packs are those past every pack its earlier segments' records point at, up
  // to the next segment's first: a pack an older release filled across a cut stays with the earlier
  // segment, and a message of this segment stored in it is carried forward when that one expires.
  // Errors: kUnsupported while the live segment is itself in the main environment (nothing can move
  // until a segment with a store follows); kInvalidArgument when `down_to` begins no segment.
  // Tests: Segments.MainEnvironmentSegmentsMoveIntoStoresOfTheirOwn,
  // Segments.AnInterruptedMoveIsDoneAgainOrFinished; tests/e2e/test_upgrade.py
  // test_format_four_segments_move_into_stores_and_expire.
  Result<std::vector<SegmentMove>> move_segments_to_stores(
      std::uint64_t down_to, const std::function<void(const SegmentMove&)>& progress = {});
  // Removes from the main environment the records and packs that a move gave to stores (the table
  // reads them from there): what a move interrupted after its commit left. Returns how many
  // entries it removed.
  Result<std::uint64_t> drop_moved_leftovers();
  // Gives the pages LMDB holds free in the main environment back to the file system, when there are
  // at least `min_free_bytes` of them and they are at least half the file (a move out of an older
  // archive leaves the main environment's file at its size): a compacting copy (mdb_env_copyfd2,
  // MDB_CP_COMPACT) renamed over data.mdb. Only when no other process has the environment open: the
  // first byte of LMDB's lock file, which every process with it open holds shared, is held
  // exclusively throughout, so a process opening it meanwhile waits. Before it is let go, a second
  // environment on the new file makes LMDB set its lock table up again from that file (a compacted
  // copy begins its transaction ids again, and a writable open, which locks before it opens the data
  // file, would otherwise start from the wrong meta page); should this process die before that, the
  // old table still leads to the copy's data, as the old file's last transaction id was made odd
  // first. A read-only open that had already opened
  // the old file when it began to wait goes on reading that file, which nothing writes again: a
  // state of the archive from before the compaction. Call it with no Archive open on `dir` in this
  // process; Engine::open does (64 MiB free at least), holding the data lock, and `segments move`.
  // Tests: Segments.TheMainEnvironmentIsCompactedOnlyWhenNobodyElseHasItOpen.
  struct MainCompaction {
    std::uint64_t file_bytes = 0;   // data.mdb before
    std::uint64_t free_bytes = 0;   // in pages LMDB holds free
    bool busy = false;              // another process had it open: nothing done
    std::uint64_t after_bytes = 0;  // data.mdb after (0: not compacted)
  };
  static Result<MainCompaction> compact_main_environment(const std::string& dir, std::uint64_t min_free_bytes);
  // Tests only: called by a compaction once it holds the lock file's first byte, before it copies.
  static inline std::function<void()> compaction_hook_for_test;
  // Tests only: called once the copy is in place, before the lock table is set up again.
  static inline std::function<void()> compaction_renamed_hook_for_test;
  // Tests only: the next move stops after writing its store, before the main environment's commit
  // (stage 1), or after that commit, before the leftovers go (stage 2), as a crash would.
  void stop_next_move_for_test(int stage) { stop_move_stage_ = stage; }
  // Rewrites the stores that still hold expired records (an expiry interrupted before its swap).
  // Returns how many it rewrote. Called by a writable open.
  Result<std::uint64_t> finish_expiries();
  // A small setting kept in meta (the retention policy: key "retention"): read, or changed in one
  // transaction by fn (which sees the stored value, or nullopt, and sets the new one; its error
  // leaves it as it was).
  Result<std::optional<std::string>> setting(std::string_view key) const;
  Status update_setting(std::string_view key, const std::function<Status(std::optional<std::string>&)>& fn);
  std::string archive_id() const;

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

  // The due index: entries of one lane (lane_of(route), or kDsnLane) due at or before `until`, in
  // order of due time and then seq (arrival order), at most `limit`; entries for which skip(seq) is
  // true (being delivered now) are passed over without being read.
  Result<std::vector<QueueEntry>> queue_due(std::uint8_t lane, std::int64_t until, std::size_t limit,
                                            const std::function<bool(std::uint64_t)>& skip = nullptr) const;
  // Makes every pending recipient of `route` with seq in [from_seq, to_seq] that waits for a retry due
  // now (a continuity drain starts in arrival order). Returns the entries changed.
  Result<std::uint64_t> queue_retry_now(Route route, std::uint64_t from_seq, std::uint64_t to_seq);
  // What is left for `route` among entries with seq in [from_seq, to_seq]; stop_at_first_pending
  // stops at the first entry with a pending recipient (enough to know a drain is not over).
  Result<QueueRangeFigures> queue_range(Route route, std::uint64_t from_seq, std::uint64_t to_seq,
                                        bool stop_at_first_pending) const;

  // The delivered log (table `delivered`): written by queue_apply for recipients the primary
  // accepted (route primary, entries with a Message-ID). Lookup by Message-ID and recipient (case
  // insensitive); prune drops entries older than a time, at most max_removed in one transaction (so
  // it never holds up appends for long). Returns the entries removed.
  Result<std::optional<DeliveredAt>> delivered_lookup(std::string_view message_id, std::string_view rcpt) const;
  Result<std::uint64_t> delivered_prune(std::int64_t older_than, std::uint64_t max_removed = 20000);

  // The continuity table, in one read or one write transaction (engine/continuity.h gives it
  // meaning). fn's error aborts the write.
  Status state_read(const std::function<Status(const StateView&)>& fn) const;
  Status state_write(const std::function<Status(StateWriter&)>& fn);

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

  // Drops the archive's pages from this process's page tables (they stay in the page cache). append()
  // calls it at most every few seconds, and an export every few thousand messages, so that what a long import has read through LMDB's map does
  // not pile up in its resident set. Returns the bytes of the map covered (0 if nothing was done).
  // Test: Archive.MappedPagesAreReleased.
  std::uint64_t release_mapped_pages() const;

  // Tests only: makes the next append fail after its stores committed and before the main
  // environment commits (a crash between the two commits).
  void fail_next_main_commit_for_test() { fail_main_commit_ = true; }
  // Tests only: a live store this large is full (a new segment begins), instead of 56 GiB.
  void set_store_full_bytes_for_test(std::uint64_t bytes) { store_full_bytes_for_test_ = bytes; }

 private:
  friend class ArchiveSnapshot;
  Archive() = default;
  Status load_codec();
  // Brings the Merkle tree up to the head: a writable open of an archive older than format 6 builds
  // it from every record, 65,536 records a transaction (an interrupted build goes on at the next
  // open). Errors: a record missing below the head (kCorrupt).
  Status grow_tree();
  // Brings the holdings table (format 7) up to the head the same way, from the records' envelopes.
  Status grow_holdings();
  // Writes segment `first`'s store again holding only its records that are not expired (and no
  // packs: every blob still held was carried forward), or deletes it when none is left (true). A
  // store this process is reading is left for later (*busy set).
  Result<bool> rewrite_expired_store(std::uint64_t first, bool* busy = nullptr);

  // A segment's store: its own LMDB environment with the tables records, blobs and meta.
  struct Store {
    MDB_env* env = nullptr;
    unsigned records_dbi = 0, blobs_dbi = 0, meta_dbi = 0;
    bool writable = false;
    int users = 0;  // snapshots and appends using it now (under stores_mu_)
    ~Store();
  };
  // Opens (once per process, while in use) the store of the segment beginning at `first`, and counts
  // the caller as a user until release_store(first). The live segment's in a writable archive is
  // created if missing and opened for writing, with a 64 GiB map; every other is opened read-only, a
  // closed one (any before the live one, whatever the caller's snapshot says) with a map as large as
  // its file and no lock (it never changes).
  Result<Store*> store(std::uint64_t first, bool closed) const;
  void release_store(std::uint64_t first) const;
  // After a cut: the stores opened for writing before the live one are closed once no snapshot uses
  // them (the next use opens them read-only, mapped at their size), so that a server cutting a segment
  // every few minutes never piles up 64 GiB maps (Segments.StoresLeftBehindByACutAreClosedWhenUnused).
  void retire_writable_stores() const;
  // Test only: the address space the open stores' maps reserve.
 public:
  std::uint64_t store_map_bytes_for_test() const;

 private:

  std::string dir_;
  Limits limits_;
  MDB_env* env_ = nullptr;
  unsigned records_dbi_ = 0, blobs_dbi_ = 0, dicts_dbi_ = 0, meta_dbi_ = 0, blob_index_dbi_ = 0, queue_dbi_ = 0,
           quarantine_dbi_ = 0, rcpt_cache_dbi_ = 0, queue_due_dbi_ = 0, continuity_dbi_ = 0, delivered_dbi_ = 0,
           merkle_dbi_ = 0, holdings_dbi_ = 0, expired_dbi_ = 0, tombstones_dbi_ = 0;
  bool read_only_ = false;
  // Tables a read-only open of an older archive may lack: they read as empty.
  bool has_queue_ = true, has_quarantine_ = true, has_rcpt_cache_ = true, has_queue_due_ = true,
       has_continuity_ = true, has_delivered_ = true, has_merkle_ = true,
       has_holdings_ = true, has_expired_ = true;
  std::uint32_t format_ = 0;
  static constexpr std::chrono::seconds kReleaseMappedEvery{5};
  std::chrono::steady_clock::time_point last_release_{};  // append()'s thread only
  mutable std::mutex codec_mu_;
  std::shared_ptr<const Codec> codec_;
  mutable std::mutex stores_mu_;
  mutable std::map<std::uint64_t, std::unique_ptr<Store>> stores_;
  // The live segment's first record as this process last wrote or opened it: every store before it is
  // closed. Only grows.
  mutable std::atomic<std::uint64_t> live_first_{0};
  bool fail_main_commit_ = false;
  int stop_move_stage_ = 0;
  std::uint64_t store_full_bytes_for_test_ = 0;
  std::atomic<bool> close_live_{false};  // close_live_segment_at_next_append
};

}  // namespace mailark
