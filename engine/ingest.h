// The ingest pipeline: parse -> scan -> compress -> append -> index, for imports and SMTP.
//
//   submit() --> [work queue] --> N workers: check, hash, parse (GMime), scan (libclamav),
//                                            compress (zstd), build the index document
//            --> [append queue] --> 1 archive writer: group commit, many messages per LMDB transaction
//            --> [index queues] --> 1 index writer per shard: Xapian documents in archive order
//
// A message's result is reported once its record is durable (or once it is refused, deferred, found a
// duplicate, or failed). Queues are bounded, so memory is bounded by queue depth times
// Limits::max_message_bytes, whatever the input size.
//
// Failures stay with what they hit:
// - A failed archive commit is retried (three attempts over about a second); if it still fails, that
//   batch's messages are reported kFailed and the next batch is tried afresh: nothing latches
//   (tests: Ingest.FailedCommitFailsThatBatchOnly, tests/e2e/test_failures.py
//   test_archive_disk_full_defers_that_message_and_recovers).
// - An index failure never fails a message: the archive is the truth. The shard stops taking
//   documents, and every few seconds reopens and catches up from the archive (tests:
//   Ingest.IndexFailureNeverFailsAMessage, tests/e2e/test_failures.py
//   test_index_disk_full_never_refuses_mail). Meanwhile search lags, it never lies.
// - A message that cannot be indexed (its document is refused) is indexed as a placeholder under
//   is:unindexed, which `stats` counts and `verify` lists.
//
// Thread safety: submit(), try_submit() and finish() are called from one thread. on_result and each
// item's on_done are called from pipeline threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/limits.h"
#include "common/result.h"
#include "engine/archive.h"
#include "engine/queue.h"
#include "engine/record.h"

namespace mailark {

class Archive;
namespace indexer {
class IndexWriter;
}
namespace scanner {
class Scanner;
}

struct IngestResult;

// What a scan that is not clean does to a message that has a delivery (a queue entry). kReject and
// kQuarantine both archive it quarantined and hold it from delivery (a quarantine entry that an
// administrator may release); kReject also means the SMTP client was told 554. kDeliver queues it as
// if it were clean (allowed for unscannable only: an infected message is never delivered).
enum class ScanAction : std::uint8_t { kReject, kQuarantine, kDeliver };

struct IngestItem {
  std::string origin;  // for reports: file path, mbox position, or SMTP session and transaction
  std::string raw;
  Envelope envelope;
  // Delivery: when set, this queue entry is committed in the same transaction as the record; with
  // Route::kNone (kept for the mailbox views only) none is written, but a quarantine entry is when
  // the scan holds the message back.
  std::optional<QueueEntry> queue;
  ScanAction on_infected = ScanAction::kReject;
  ScanAction on_unscannable = ScanAction::kReject;
  // Unscannable messages are kept out of mailbox views (flagged quarantined) unless delivered.
  // A temporary scanner failure: true (SMTP) -> not archived, outcome kDeferred, the client retries;
  // false (imports) -> archived as unscanned with the reason.
  bool defer_on_scan_error = false;
  // A DSN: the recipients it reports (see DsnNotice in archive.h).
  std::optional<DsnNotice> dsn_for;
  // Called once, from a pipeline thread, with this item's final result: after its record is durable,
  // or when it was refused, deferred, found a duplicate, or failed. SMTP sessions answer from here.
  std::function<void(const IngestResult&)> on_done;
};

enum class IngestOutcome { kArchived, kDuplicate, kRefused, kFailed, kDeferred };

struct IngestResult {
  std::string origin;
  IngestOutcome outcome = IngestOutcome::kFailed;
  std::uint64_t seq = 0;  // kArchived
  scanner::VerdictKind verdict = scanner::VerdictKind::kUnscanned;
  std::vector<std::string> signatures;
  std::string scan_reason;  // kUnscannable, kDeferred: why (starts with "encrypted:", "limit:", ...)
  bool malformed = false;
  bool queued = false;       // kArchived: a queue entry was committed with the record
  bool quarantined = false;  // kArchived: held in quarantine instead
  std::string reason;        // kRefused, kFailed, kDeferred: why; kArchived + malformed: the problems
  bool store_failed = false; // kFailed: the archive's commit failed (a full disk, an I/O error), not the message
};

struct IngestOptions {
  unsigned workers = 0;         // 0: one per core
  // Imports keep submission order (the n-th message of an mbox gets the n-th id). Servers (false)
  // append mail from outside in completion order, so one slow scan never holds up other sessions'
  // 250 replies, and an import handed to them in its own submission order, as a lone import is
  // (tests: Ingest.CompletionOrderLetsASmallMessagePassASlowOne,
  // Ingest.AnImportHandedToAServerKeepsItsOrder).
  bool preserve_order = true;
  std::size_t queue_depth = 64;  // items waiting for a worker; try_submit refuses beyond it
  std::size_t max_batch = 512;  // messages per archive transaction, at most
  // How long the archive writer waits for a batch to fill before committing. Imports trade a little
  // latency for far fewer fsyncs; SMTP sessions waiting for their 250 use a small value.
  unsigned linger_ms = 50;
  // A server's short linger makes small batches of an import handed to it. While every message of a
  // batch is an import (none waits for a reply), the writer waits up to this long in all for a
  // fuller batch; a message from SMTP, IMAP or the web that arrives meanwhile ends the wait at once
  // (BoundedQueue's urgent items: test Ingest.QueueLingerEndsAtAnUrgentItem).
  // Not above linger_ms (0): no longer wait.
  unsigned bulk_linger_ms = 0;
  // Xapian commit interval (documents, over all shards). Smaller than Xapian's own 10,000 a shard:
  // an import of 200,000 messages with pair terms took 87 s and 731 MB at 20,000, 72 s and 447 MB at
  // 2,500 (docs/BENCHMARKS.md, "Commit interval").
  std::size_t index_commit_every = 2500;
  // Commit the index at least this often while documents are waiting (0: only by count and at the
  // end). Readers that ask (sync_index) have it committed at once; this is for those that do not.
  unsigned index_commit_interval_ms = 0;
  // Imports are searchable within this long instead (a shard whose uncommitted documents all came
  // from imports commits by count, index_commit_every, or after this long): commits of a few
  // documents each second cost a handed import much of its rate. 0: index_commit_interval_ms.
  unsigned index_bulk_commit_interval_ms = 0;
  // With no dictionary in the archive yet, the first this-many messages are held back and used to
  // train one, so even the first import compresses well. 0 disables training.
  std::size_t train_after = 2000;
  std::size_t dictionary_bytes = 64 * 1024;
  // How long an index shard waits after a failure before it reopens and catches up.
  unsigned index_retry_ms = 5000;
  // A shard catching up from the archive after a failure indexes this many records at a time,
  // emptying its queue (dropping what it holds: the next chunk reaches those records) between them,
  // so that the archive writer, which waits while that queue is full, waits at most a chunk, not a
  // whole catch-up (mail archived during a long index failure is a long catch-up). That the chunks
  // catch up completely: Ingest.IndexFailureNeverFailsAMessage (chunks of 7); what a catch-up costs
  // an SMTP session beside it (nothing that shows): docs/BENCHMARKS.md "The SMTP door during a handed
  // import", bench/import/door_catch_up.py.
  unsigned index_catch_up_chunk = 500;
  // How often a low-priority thread seals the index's closed segments in place
  // (indexer::seal_closed_segments), so that a running server keeps them compacted and read-only
  // (0: never; imports seal at their compaction instead).
  unsigned seal_interval_ms = 0;
  // Compact each shard of the live index segment when it has grown by half since its last compaction
  // (indexer::IndexWriter::compact_if_grown, after a commit). A server, which commits often (when
  // readers ask, and every index_commit_interval_ms), would otherwise keep an index about twice its
  // compact size; an import compacts the whole index at
  // its end instead.
  bool compact_live_index = false;
  // Warnings worth a log line (index failures and recoveries). May be null. Called from pipeline
  // threads.
  std::function<void(const std::string&)> on_warning;
  // Events worth an informational log line (segments sealed). May be null. Called from pipeline
  // threads.
  std::function<void(const std::string&)> on_info;
};

class Ingest {
 public:
  // scanner may be null: messages are then recorded as unscanned ("scanning disabled").
  Ingest(Archive& archive, indexer::IndexWriter& index, const scanner::Scanner* scanner, const Limits& limits,
         IngestOptions options, std::function<void(const IngestResult&)> on_result);
  ~Ingest();  // finishes if finish() was not called
  Ingest(const Ingest&) = delete;
  Ingest& operator=(const Ingest&) = delete;

  // Blocks while the pipeline is full.
  void submit(IngestItem item);
  // Never blocks: false when the pipeline is full (the item is left as it was). Servers answer
  // 451 4.3.2 then rather than stall their event loop. May be called from any one thread.
  bool try_submit(IngestItem& item);
  // False while an index shard's queue is more than half full. An import handed to a server waits
  // then (api/import_socket.cc), so that its documents never fill a shard's queue: the archive writer
  // waits while one is full, and every session's 250 behind it (a shard compacting or committing
  // takes none for a while). Test: Ingest.ImportsWaitWhileAShardsQueueIsHalfFull.
  bool room_for_imports() const;
  // Makes what the archive holds now searchable, for a reader about to open the index: each shard
  // commits its documents up to the archive's head at the call (rather than at its next timed
  // commit, index_commit_interval_ms), and this returns once all have (kCurrent); kTimedOut after
  // `timeout`; kBroken at once while a shard is broken (the reader goes on with what is committed,
  // and says the index is behind). Readers asking together share the commits. Any thread.
  // Tests: Ingest.AReaderFindsMailArchivedJustBeforeItAsks, Ingest.ABrokenShardAnswersAReaderAtOnce.
  enum class Synced { kCurrent, kBroken, kTimedOut };
  Synced sync_index(std::chrono::milliseconds timeout);
  // How many times the index threads have committed or compacted a shard so far: a reader opened
  // when this had the same value sees what one opened now would.
  std::uint64_t index_commits() const;
  // Every archive record up to this one is in the index's shards, committed or not: what a search
  // that asks (sync_index) finds now, read without asking for a commit (the server's /metrics, whose
  // scrapes must not commit the index). A broken shard holds it back. Test:
  // Ingest.WhatTheIndexHasTakenInIsReadWithoutACommit.
  std::uint64_t index_taken_in() const;
  // Drains every queue, commits the index. Returns the first archive write failure (the messages it
  // hit were reported as kFailed), else ok: an index failure is not an error here (the next open
  // catches the index up).
  Status finish();

  // Tests only: called on a worker thread before each message is prepared; what it throws stands for
  // a fault in the parse, scan or compression (Ingest.AMessageWhosePreparationThrowsFailsAlone).
  static inline std::function<void(const IngestItem&)> prepare_hook_for_test;
  // Tests only: called on an index shard's thread before it adds a document (archive id).
  static inline std::function<void(std::uint64_t)> index_hook_for_test;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailark
