// The ingest pipeline: parse -> scan -> compress -> append -> index, for imports now and SMTP later.
//
//   submit() --> [work queue] --> N workers: check, hash, parse (GMime), scan (libclamav),
//                                            compress (zstd), build the index document
//            --> [append queue] --> 1 archive writer: group commit, many messages per LMDB transaction
//            --> [index queue]  --> 1 index writer: Xapian documents in archive order, batched commits
//
// A message's result is reported once its record is durable (or once it is refused or found to be a
// duplicate). The index lags the archive and is caught up from it on the next open if the process dies
// in between (Engine::open). Queues are bounded, so memory is bounded by queue depth times
// Limits::max_message_bytes, whatever the input size.
//
// Thread safety: submit() and finish() are called from one thread. on_result is called from pipeline
// threads, one call at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/limits.h"
#include "common/result.h"
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

struct IngestItem {
  std::string origin;  // for reports: file path, mbox position, or SMTP session and transaction
  std::string raw;
  Envelope envelope;
  bool skip_if_archived = true;  // imports: an identical message already archived is a duplicate
  // Delivery: when set, this queue entry is committed in the same transaction as the record.
  std::optional<QueueEntry> queue;
  // With a queue entry: queue an infected message too (policy "accept and quarantine"); by default an
  // infected message is archived, quarantined and not delivered.
  bool queue_if_infected = false;
  // Called once, from a pipeline thread, with this item's final result: after its record is durable,
  // or when it was refused, found a duplicate, or failed. SMTP sessions answer from here.
  std::function<void(const IngestResult&)> on_done;
};

enum class IngestOutcome { kArchived, kDuplicate, kRefused, kFailed };

struct IngestResult {
  std::string origin;
  IngestOutcome outcome = IngestOutcome::kFailed;
  std::uint64_t seq = 0;  // kArchived
  scanner::VerdictKind verdict = scanner::VerdictKind::kUnscanned;
  std::vector<std::string> signatures;
  bool malformed = false;
  bool queued = false;  // kArchived: a queue entry was committed with the record
  std::string reason;   // kRefused, kFailed: why; kArchived + malformed: the problems
};

struct IngestOptions {
  unsigned workers = 0;         // 0: one per core
  std::size_t max_batch = 512;  // messages per archive transaction, at most
  // How long the archive writer waits for a batch to fill before committing. Imports trade a little
  // latency for far fewer fsyncs; SMTP sessions waiting for their 250 use a small value.
  unsigned linger_ms = 50;
  std::size_t index_commit_every = 20000;  // Xapian commit interval (documents)
  // Commit the index at least this often while documents are waiting (0: only by count and at the
  // end). Servers set it so that new mail is searchable within about this time.
  unsigned index_commit_interval_ms = 0;
  // With no dictionary in the archive yet, the first this-many messages are held back and used to
  // train one, so even the first import compresses well. 0 disables training.
  std::size_t train_after = 2000;
  std::size_t dictionary_bytes = 64 * 1024;
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
  // Drains every queue, commits the index. Returns the first fatal error (an archive or index write
  // failure); messages not archived because of it were reported as kFailed.
  Status finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailark
