#include "engine/ingest.h"

#include <xapian.h>

#include <atomic>
#include <map>
#include <optional>
#include <thread>

#include "common/sha256.h"
#include "engine/archive.h"
#include "engine/bounded_queue.h"
#include "engine/index_fields.h"
#include "engine/message.h"
#include "indexer/index.h"
#include "scanner/scanner.h"

namespace mailark {

namespace {

struct Prepared {
  std::uint64_t ticket = 0;  // submission order; records are appended in this order
  PendingAppend append;
  std::optional<Xapian::Document> doc;
  IngestResult result;
  std::function<void(const IngestResult&)> on_done;
};

struct ToIndex {
  std::uint64_t seq = 0;
  Xapian::Document doc;
};

}  // namespace

struct Ingest::Impl {
  Archive& archive;
  indexer::IndexWriter& index;
  const scanner::Scanner* scanner;
  Limits limits;
  IngestOptions options;
  std::function<void(const IngestResult&)> on_result;

  std::mutex result_mu;
  BoundedQueue<std::pair<std::uint64_t, IngestItem>> work{64};
  std::uint64_t next_ticket = 0;
  BoundedQueue<Prepared> to_append{1024};
  // One queue and one thread per index shard: Xapian's document inversion is the most expensive
  // serial step, and shards let it use every core.
  std::vector<std::unique_ptr<BoundedQueue<ToIndex>>> to_index;
  std::vector<std::thread> workers, indexers;
  std::thread appender;
  std::uint64_t last_appended = 0;  // written by the appender, read after it is joined
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  std::optional<Error> fatal;
  bool finished = false;

  // Dictionary bootstrap: items held back until a dictionary is trained from them.
  std::vector<IngestItem> held;
  std::size_t held_bytes = 0;
  bool training_done = false;

  Impl(Archive& a, indexer::IndexWriter& i, const scanner::Scanner* s, const Limits& l, IngestOptions o,
       std::function<void(const IngestResult&)> cb)
      : archive(a), index(i), scanner(s), limits(l), options(o), on_result(std::move(cb)) {
    unsigned n = options.workers ? options.workers : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned k = 0; k < n; ++k) workers.emplace_back([this] { work_loop(); });
    appender = std::thread([this] { append_loop(); });
    for (unsigned k = 0; k < index.shard_count(); ++k) {
      to_index.push_back(std::make_unique<BoundedQueue<ToIndex>>(1024));
      indexers.emplace_back([this, k] { index_loop(k); });
    }
    training_done = options.train_after == 0 || archive.codec()->active_dictionary() != 0;
  }

  void report(Prepared& p) {
    if (p.on_done) p.on_done(p.result);
    std::lock_guard lock(result_mu);
    if (on_result) on_result(p.result);
  }

  void set_fatal(const Error& e) {
    std::lock_guard lock(error_mu);
    if (!fatal) fatal = e;
    failed = true;
  }

  void work_loop() {
    std::pair<std::uint64_t, IngestItem> item;
    while (work.pop(item)) {
      auto on_done = std::move(item.second.on_done);
      Prepared p = prepare(std::move(item.second));
      p.ticket = item.first;
      p.on_done = std::move(on_done);
      to_append.push(std::move(p));  // every item, so the appender can restore submission order
    }
  }

  Prepared prepare(IngestItem item) {
    Prepared p;
    IngestResult& r = p.result;
    r.origin = item.origin;
    if (item.raw.size() > limits.max_message_bytes) {
      r.outcome = IngestOutcome::kRefused;
      r.reason = "message of " + std::to_string(item.raw.size()) + " bytes exceeds the limit of " +
                 std::to_string(limits.max_message_bytes);
      return p;
    }
    if (std::string why = not_mail_reason(item.raw); !why.empty()) {
      r.outcome = IngestOutcome::kRefused;
      r.reason = why;
      return p;
    }
    Digest sha = sha256(item.raw);
    if (item.skip_if_archived && archive.has_blob(sha)) {
      r.outcome = IngestOutcome::kDuplicate;  // checked again inside the write transaction
      return p;
    }
    ParsedMessage msg = parse_message_or_flag(item.raw, limits);

    StoredVerdict verdict;
    if (scanner) {
      // Scanning without libclamav's mail parser skips its temporary files, about half of the
      // per-message cost, and is only used when the parser would find nothing the raw bytes do not
      // show: one identity-encoded text/plain part with no uuencoded or BinHex block in it.
      bool simple = msg.is_plain_single_part() && item.raw.find("\nbegin ") == std::string::npos &&
                    item.raw.find("BinHex") == std::string::npos;
      scanner::ScanVerdict v = scanner->scan(item.raw, /*with_mail_parsing=*/!simple);
      verdict.kind = v.kind;
      verdict.signatures = std::move(v.signatures);
      verdict.reason = std::move(v.reason);
    } else {
      verdict.kind = scanner::VerdictKind::kUnscanned;
      verdict.reason = "scanning disabled";
    }

    auto codec = archive.codec();
    auto frame = codec->compress(item.raw);
    if (!frame) {
      r.outcome = IngestOutcome::kFailed;
      r.reason = frame.error().to_string();
      return p;
    }

    PendingAppend& a = p.append;
    a.envelope = std::move(item.envelope);
    a.verdict = verdict;
    a.flags = (msg.malformed ? std::uint32_t{kFlagMalformed} : 0u) |
              (verdict.kind == scanner::VerdictKind::kInfected ? std::uint32_t{kFlagQuarantined} : 0u);
    a.content_sha256 = sha;
    a.raw_size = item.raw.size();
    a.dict_id = codec->active_dictionary();
    a.frame = std::move(frame).value();
    a.skip_if_archived = item.skip_if_archived;
    if (item.queue && (verdict.kind != scanner::VerdictKind::kInfected || item.queue_if_infected)) {
      a.queue = std::move(item.queue);
    }

    ArchiveRecord draft;
    draft.envelope = a.envelope;
    draft.verdict = verdict;
    draft.flags = a.flags;
    draft.raw_size = a.raw_size;
    p.doc = indexer::build_document(index_fields(msg, draft));

    r.outcome = IngestOutcome::kArchived;
    r.verdict = verdict.kind;
    r.signatures = verdict.signatures;
    r.malformed = msg.malformed;
    for (const auto& problem : msg.problems) r.reason += (r.reason.empty() ? "" : "; ") + problem;
    return p;
  }

  // Workers finish out of order; records are appended in submission order, so the n-th message of an
  // mbox gets the n-th id. The reorder buffer holds at most the items in flight (queue + workers).
  void append_loop() {
    std::map<std::uint64_t, Prepared> waiting;
    std::uint64_t next = 0;
    std::vector<Prepared> incoming, ready;
    while (to_append.pop_batch(incoming, options.max_batch, std::chrono::milliseconds(options.linger_ms))) {
      for (auto& p : incoming) waiting.emplace(p.ticket, std::move(p));
      incoming.clear();
      for (auto it = waiting.begin(); it != waiting.end() && it->first == next;
           it = waiting.erase(it), ++next) {
        if (it->second.result.outcome == IngestOutcome::kArchived)
          ready.push_back(std::move(it->second));
        else
          report(it->second);
      }
      if (!ready.empty()) commit_batch(ready);
      ready.clear();
    }
    for (auto& q : to_index) q->close();
  }

  void commit_batch(std::vector<Prepared>& batch) {
    if (failed) {
      for (auto& p : batch) fail(p, "not archived: an earlier write failed");
      return;
    }
    std::vector<PendingAppend> appends;
    appends.reserve(batch.size());
    for (auto& p : batch) appends.push_back(std::move(p.append));
    auto outcomes = archive.append(appends);
    if (!outcomes) {
      set_fatal(outcomes.error());
      for (auto& p : batch) fail(p, "not archived: " + outcomes.error().to_string());
      return;
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& out = (*outcomes)[i];
      IngestResult& r = batch[i].result;
      if (out.duplicate) {
        r.outcome = IngestOutcome::kDuplicate;
      } else {
        r.seq = out.record.seq;
        r.queued = appends[i].queue.has_value();
        last_appended = r.seq;
        to_index[index.shard_of(r.seq)]->push(ToIndex{r.seq, std::move(*batch[i].doc)});
      }
      report(batch[i]);
    }
  }

  void fail(Prepared& p, const std::string& why) {
    p.result.outcome = IngestOutcome::kFailed;
    p.result.reason = why;
    report(p);
  }

  void index_loop(unsigned shard) {
    ToIndex item;
    std::size_t since_commit = 0;
    std::uint64_t last = 0;
    bool index_failed = false;
    BoundedQueue<ToIndex>& queue = *to_index[shard];
    const auto interval = std::chrono::milliseconds(options.index_commit_interval_ms ? options.index_commit_interval_ms : 3600000);
    auto last_commit = std::chrono::steady_clock::now();
    while (true) {
      auto got = queue.pop_for(item, interval);
      if (got == BoundedQueue<ToIndex>::PopResult::kClosed) break;
      if (got == BoundedQueue<ToIndex>::PopResult::kTimeout ||
          std::chrono::steady_clock::now() - last_commit >= interval) {
        if (!index_failed && since_commit > 0) {
          if (auto s = index.commit_shard(shard, last); !s) {
            set_fatal(s.error());
            index_failed = true;
          }
          since_commit = 0;
        }
        last_commit = std::chrono::steady_clock::now();
        if (got == BoundedQueue<ToIndex>::PopResult::kTimeout) continue;
      }
      if (index_failed) continue;  // the archive has it; the next open catches the index up
      if (auto s = index.add(item.seq, item.doc); !s) {
        set_fatal(s.error());
        index_failed = true;
        continue;
      }
      last = item.seq;
      if (++since_commit >= options.index_commit_every / index.shard_count()) {
        if (auto s = index.commit_shard(shard, last); !s) {
          set_fatal(s.error());
          index_failed = true;
        }
        since_commit = 0;
      }
    }
    if (!index_failed && since_commit > 0) {
      if (auto s = index.commit_shard(shard, last); !s) set_fatal(s.error());
    }
  }

  void enqueue(IngestItem item) { work.push({next_ticket++, std::move(item)}); }

  void release_held() {
    for (auto& it : held) enqueue(std::move(it));
    held.clear();
    held_bytes = 0;
  }

  void train_from_held() {
    training_done = true;
    std::vector<std::string> samples;
    for (const auto& it : held) samples.push_back(it.raw.substr(0, 64 * 1024));
    auto dict = train_dictionary(samples, options.dictionary_bytes);
    if (dict) {
      // A failure here only costs compression ratio; messages still go to the archive.
      auto added = archive.add_dictionary(*dict);
      (void)added;
    }
    release_held();
  }

  void submit(IngestItem item) {
    if (!training_done) {
      held_bytes += item.raw.size();
      held.push_back(std::move(item));
      if (held.size() >= options.train_after || held_bytes >= (32u << 20)) train_from_held();
      return;
    }
    enqueue(std::move(item));
  }

  Status finish() {
    if (finished) return ok_status();
    finished = true;
    if (!training_done) {
      if (held.size() >= 64)
        train_from_held();
      else
        release_held();
    }
    work.close();
    for (auto& t : workers) t.join();
    to_append.close();
    appender.join();
    for (auto& t : indexers) t.join();
    std::lock_guard lock(error_mu);
    if (fatal) return *fatal;
    // Every shard has everything up to the last appended record: say so in all of them.
    if (last_appended > index.watermark()) {
      if (auto s = index.commit(last_appended); !s) return s.error();
    }
    return ok_status();
  }
};

Ingest::Ingest(Archive& archive, indexer::IndexWriter& index, const scanner::Scanner* scanner,
               const Limits& limits, IngestOptions options,
               std::function<void(const IngestResult&)> on_result)
    : impl_(std::make_unique<Impl>(archive, index, scanner, limits, options, std::move(on_result))) {}

Ingest::~Ingest() {
  (void)impl_->finish();
}

void Ingest::submit(IngestItem item) {
  impl_->submit(std::move(item));
}

Status Ingest::finish() {
  return impl_->finish();
}

}  // namespace mailark
