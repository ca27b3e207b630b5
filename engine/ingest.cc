#include "engine/ingest.h"

#include "engine/metrics.h"

#include <xapian.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
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
  std::uint64_t ticket = 0;  // submission order of the items appended in it (Impl::ordered)
  PendingAppend append;
  std::optional<Xapian::Document> doc;
  IngestResult result;
  std::function<void(const IngestResult&)> on_done;
  bool prompt = true;  // someone waits for its result (SMTP, IMAP, the web); false: an import
};

// Someone waits for its result (SMTP, IMAP, the web); an import's message has no one.
bool is_prompt(const IngestItem& item) { return item.envelope.direction != Direction::kImport; }

struct ToIndex {
  std::uint64_t seq = 0;  // 0: no document, a reader asks for a commit (Ingest::sync_index)
  Xapian::Document doc;
  bool prompt = true;  // as Prepared::prompt
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
  // A message someone waits for is prepared before every import's message waiting with it: an
  // import handed to a server holds up to 256 of them here (Ingest.PromptMailIsPreparedBeforeImports).
  BoundedQueue<std::pair<std::uint64_t, IngestItem>> work;
  std::uint64_t next_ticket = 0;
  // A message someone waits for (an SMTP session's 250) ends the archive writer's linger for a
  // fuller batch of imports at once.
  BoundedQueue<Prepared> to_append{1024, [](const Prepared& p) { return p.prompt; }};
  // One queue and one thread per index shard: Xapian's document inversion is the most expensive
  // serial step, and shards let it use every core.
  std::vector<std::unique_ptr<BoundedQueue<ToIndex>>> to_index;
  std::vector<std::thread> workers, indexers;
  std::thread appender, sealer;
  std::mutex seal_mu;
  std::condition_variable seal_cv;
  bool seal_stop = false;
  std::atomic<std::uint64_t> last_appended{0};  // the highest seq handed to the index queues
  std::uint64_t head_at_start = 0;                // the archive's head when this ingest began
  std::atomic<unsigned> broken_shards{0};        // index shards waiting to recover
  // Commits asked for by readers (sync_index): the highest archive head asked for, and under sync_mu
  // what each shard has committed (its coverage, indexer::shard_coverage) and whether it is broken.
  std::atomic<std::uint64_t> sync_want{0};
  std::mutex sync_mu;
  std::condition_variable sync_cv;
  std::vector<std::uint64_t> sync_done;
  std::vector<char> sync_broken;
  bool sync_closed = false;
  std::atomic<std::uint64_t> commits{0};  // index commits and compactions so far (index_commits)
  // What each shard has taken in, committed or not (its coverage of the ids it has added): index_taken_in.
  std::unique_ptr<std::atomic<std::uint64_t>[]> taken;
  std::mutex error_mu;
  std::optional<Error> archive_error;  // the first archive write failure, for finish()
  bool finished = false;

  // Dictionary bootstrap: items held back until a dictionary is trained from them.
  std::vector<IngestItem> held;
  std::size_t held_bytes = 0;
  bool training_done = false;

  Impl(Archive& a, indexer::IndexWriter& i, const scanner::Scanner* s, const Limits& l, IngestOptions o,
       std::function<void(const IngestResult&)> cb)
      : archive(a), index(i), scanner(s), limits(l), options(std::move(o)), on_result(std::move(cb)),
        work(std::max<std::size_t>(1, options.queue_depth),
             [](const std::pair<std::uint64_t, IngestItem>& e) { return is_prompt(e.second); }) {
    training_done = options.train_after == 0 || archive.codec()->active_dictionary() != 0;
    // Every structure the threads share is built before the first thread starts: an index thread
    // reads to_index while a later push_back could still move the vector (ASan caught that once in
    // Ingest.FailedCommitFailsThatBatchOnly).
    taken = std::make_unique<std::atomic<std::uint64_t>[]>(index.shard_count());
    for (unsigned k = 0; k < index.shard_count(); ++k) {
      to_index.push_back(std::make_unique<BoundedQueue<ToIndex>>(1024));
      sync_done.push_back(indexer::shard_coverage(index.shard_watermark(k), k, index.shard_count()));
      sync_broken.push_back(0);
      taken[k] = sync_done.back();
    }
    // Records archived before this ingest began and not yet indexed (a server started on an index
    // that lags the archive: it does not catch up before its door opens) are caught up by each
    // shard's thread as after a failure (index_loop).
    last_appended = head_at_start = archive.head().seq;
    unsigned n = options.workers ? options.workers : std::max(1u, std::thread::hardware_concurrency());
    try {
      for (unsigned k = 0; k < n; ++k) workers.emplace_back([this] { work_loop(); });
      appender = std::thread([this] { append_loop(); });
      for (unsigned k = 0; k < index.shard_count(); ++k) indexers.emplace_back([this, k] { index_loop(k); });
      if (options.seal_interval_ms) sealer = std::thread([this] { seal_loop(); });
    } catch (...) {
      // A thread that cannot be started (std::system_error): those that were are stopped and joined
      // (a joinable std::thread destroyed would end the process), and the caller hears why.
      stop_threads();
      throw;
    }
  }

  // Ends every thread that runs, in the order the work flows through them (finish(), and a
  // constructor that could not start them all).
  void stop_threads() {
    if (sealer.joinable()) {
      {
        std::lock_guard lock(seal_mu);
        seal_stop = true;
      }
      seal_cv.notify_all();
      sealer.join();
    }
    work.close();
    for (auto& t : workers) t.join();
    to_append.close();
    if (appender.joinable()) appender.join();
    for (auto& q : to_index) q->close();  // the appender closes them; again, in case it never ran
    for (auto& t : indexers) t.join();
    {
      std::lock_guard lock(sync_mu);
      sync_closed = true;
    }
    sync_cv.notify_all();
  }

  // What a shard's thread tells readers waiting in sync_index: what it has committed now, and
  // whether it is broken (they do not wait for a broken shard: search says the index is behind).
  void report_synced(unsigned shard, bool broken) {
    {
      std::lock_guard lock(sync_mu);
      sync_done[shard] = indexer::shard_coverage(index.shard_watermark(shard), shard, index.shard_count());
      sync_broken[shard] = broken;
      // A failed shard has dropped what it held uncommitted (the archive has it; recovery adds it).
      if (broken) taken[shard].store(sync_done[shard]);
      note_taken(shard, sync_done[shard]);
    }
    sync_cv.notify_all();
  }
  // Only the shard's own thread writes its entry (readers only load it).
  void note_taken(unsigned shard, std::uint64_t coverage) {
    if (coverage > taken[shard].load()) taken[shard].store(coverage);
  }
  std::uint64_t index_taken_in() const {
    std::uint64_t low = UINT64_MAX;
    for (unsigned k = 0; k < index.shard_count(); ++k) low = std::min(low, taken[k].load());
    return low;
  }

  Ingest::Synced sync_index(std::chrono::milliseconds timeout) {
    // The archive's head, not last_appended: a message is reported (an SMTP 250) before its
    // document is queued, and whoever searches right after the reply must find it.
    const std::uint64_t want = archive.head().seq;
    std::uint64_t asked = sync_want.load();
    while (asked < want && !sync_want.compare_exchange_weak(asked, want)) {
    }
    // Wakes each shard's thread; a full queue needs no wake-up (its thread checks after every document).
    for (auto& q : to_index) {
      ToIndex wake;
      (void)q->try_push(wake);
    }
    std::unique_lock lock(sync_mu);
    sync_cv.wait_for(lock, timeout, [&] {
      if (sync_closed) return true;
      for (std::size_t s = 0; s < sync_done.size(); ++s)
        if (!sync_broken[s] && sync_done[s] < want) return false;
      return true;
    });
    bool broken = false, behind = false;
    for (std::size_t s = 0; s < sync_done.size(); ++s) {
      broken = broken || sync_broken[s];
      behind = behind || (!sync_broken[s] && sync_done[s] < want);
    }
    return behind ? Ingest::Synced::kTimedOut : broken ? Ingest::Synced::kBroken : Ingest::Synced::kCurrent;
  }

  // Seals closed segments in place while the server runs. Compaction is CPU work that must not take
  // cores from mail: the thread runs at the lowest priority (Linux threads have their own nice value).
  void seal_loop() {
    (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
    std::unique_lock lock(seal_mu);
    while (!seal_cv.wait_for(lock, std::chrono::milliseconds(options.seal_interval_ms), [this] { return seal_stop; })) {
      lock.unlock();
      if (auto stores = archive.seal_stores(); !stores)
        warn("sealing closed segment stores: " + stores.error().to_string() + "; tried again later");
      auto sealed = indexer::seal_closed_segments(index.dir(), index.min_free_bytes());
      if (!sealed)
        warn("sealing closed index segments: " + sealed.error().to_string() + "; tried again later");
      else if (*sealed && options.on_info)
        options.on_info("sealed " + std::to_string(*sealed) + " closed index segment" + (*sealed == 1 ? "" : "s") +
                        " in place");
      lock.lock();
    }
  }

  void warn(const std::string& what) {
    if (options.on_warning) options.on_warning(what);
  }

  void report(Prepared& p) {
    if (p.on_done) p.on_done(p.result);
    std::lock_guard lock(result_mu);
    if (on_result) on_result(p.result);
  }

  void work_loop() {
    std::pair<std::uint64_t, IngestItem> item;
    while (work.pop(item)) {
      auto on_done = std::move(item.second.on_done);
      const std::string origin = item.second.origin;
      const bool prompt = is_prompt(item.second);
      Prepared p;
      try {
        if (Ingest::prepare_hook_for_test) Ingest::prepare_hook_for_test(item.second);
        p = prepare(std::move(item.second));
      } catch (...) {
        // Nothing a message holds may end the process (this thread is the MX's too): the message
        // fails alone, as a failed write would (SMTP answers 451; the sender tries again), whatever
        // was thrown: Xapian's errors are not std::exceptions (test
        // Ingest.AMessageWhosePreparationThrowsFailsAlone).
        p = Prepared{};
        p.result.origin = origin;
        p.result.outcome = IngestOutcome::kFailed;
        p.result.reason = "internal error while preparing the message: " + indexer::describe_current_exception();
      }
      p.ticket = item.first;
      p.on_done = std::move(on_done);
      p.prompt = prompt;
      to_append.push(std::move(p));  // every item, so the appender can restore submission order
    }
  }

  Prepared prepare(IngestItem item) {
    using scanner::VerdictKind;
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
    if (is_mailbox_import(item.envelope) && archive.has_copy(sha, item.envelope)) {
      r.outcome = IngestOutcome::kDuplicate;  // checked again inside the write transaction
      return p;
    }
    ParsedMessage msg = parse_message_or_flag(item.raw, limits, /*headers_only=*/false, /*extract_documents=*/true);

    StoredVerdict verdict;
    if (scanner) {
      const auto scan_start = std::chrono::steady_clock::now();
      scanner::ScanVerdict v = scanner->scan(item.raw);
      static auto& scan_time = metrics::histogram("mailark_scan_seconds", "Time to scan one message (libclamav)");
      scan_time.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - scan_start).count());
      metrics::counter("mailark_scan_verdicts_total", "Scan verdicts", {{"verdict", scanner::verdict_name(v.kind)}}).inc();
      if (v.kind == VerdictKind::kTemporaryError) {
        if (item.defer_on_scan_error) {
          r.outcome = IngestOutcome::kDeferred;
          r.reason = v.reason;
          r.scan_reason = v.reason;
          return p;
        }
        v.kind = VerdictKind::kUnscanned;  // imports archive everything, and say why
      }
      verdict.kind = v.kind;
      verdict.signatures = std::move(v.signatures);
      verdict.reason = std::move(v.reason);
    } else {
      verdict.kind = VerdictKind::kUnscanned;
      verdict.reason = "scanning disabled";
    }
    const bool infected = verdict.kind == VerdictKind::kInfected;
    const bool unscannable = verdict.kind == VerdictKind::kUnscannable;
    // An infected message is never delivered, whatever the item asks.
    const bool quarantined = infected || (unscannable && item.on_unscannable != ScanAction::kDeliver);

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
    a.flags = (msg.malformed ? std::uint32_t{kFlagMalformed} : 0u) | (quarantined ? std::uint32_t{kFlagQuarantined} : 0u);
    a.content_sha256 = sha;
    a.raw_size = item.raw.size();
    a.dict_id = codec->active_dictionary();
    a.frame = std::move(frame).value();
    a.dsn_for = std::move(item.dsn_for);
    if (item.queue) {
      if (quarantined) {
        QuarantineEntry q;
        q.refused = (infected ? item.on_infected : item.on_unscannable) == ScanAction::kReject;
        q.reason = infected ? "infected: " + (verdict.signatures.empty() ? std::string("?") : verdict.signatures[0])
                            : verdict.reason;
        q.route = item.queue->route;
        for (const auto& rc : item.queue->recipients) q.recipients.push_back(rc.address);
        a.quarantine = std::move(q);
      } else if (item.queue->route != Route::kNone) {
        a.queue = std::move(item.queue);
        if (a.queue->message_id.empty()) a.queue->message_id = msg.message_id.substr(0, 400);
      }
    }

    ArchiveRecord draft;
    draft.envelope = a.envelope;
    draft.verdict = verdict;
    draft.flags = a.flags;
    draft.content_sha256 = a.content_sha256;
    draft.raw_size = a.raw_size;
    p.doc = indexer::build_document(document_fields(msg, draft, item.raw, limits), index.pair_words().get());

    r.outcome = IngestOutcome::kArchived;
    r.verdict = verdict.kind;
    r.signatures = verdict.signatures;
    if (verdict.kind != VerdictKind::kClean && verdict.kind != VerdictKind::kInfected) r.scan_reason = verdict.reason;
    r.malformed = msg.malformed;
    for (const auto& problem : msg.problems) r.reason += (r.reason.empty() ? "" : "; ") + problem;
    return p;
  }

  // Workers finish out of order. With preserve_order, records are appended in submission order (the
  // reorder buffer holds at most the items in flight: queue + workers); without it, in completion
  // order, so a slow scan delays only its own message.
  void append_loop() {
    std::map<std::uint64_t, Prepared> waiting;
    std::uint64_t next = 0;
    std::vector<Prepared> incoming, ready;
    while (to_append.pop_batch(incoming, options.max_batch, std::chrono::milliseconds(options.linger_ms))) {
      // Only imports so far: a fuller batch is worth waiting for (bulk_linger_ms in all).
      if (options.bulk_linger_ms > options.linger_ms && incoming.size() < options.max_batch &&
          std::none_of(incoming.begin(), incoming.end(), [](const Prepared& p) { return p.prompt; })) {
        (void)to_append.pop_batch_until(
            incoming, options.max_batch,
            std::chrono::steady_clock::now() + std::chrono::milliseconds(options.bulk_linger_ms - options.linger_ms));
      }
      auto route = [&](Prepared& p) {
        if (p.result.outcome == IngestOutcome::kArchived)
          ready.push_back(std::move(p));
        else
          report(p);
      };
      for (auto& p : incoming) {
        if (ordered(p.prompt))
          waiting.emplace(p.ticket, std::move(p));
        else
          route(p);
      }
      for (auto it = waiting.begin(); it != waiting.end() && it->first == next; it = waiting.erase(it), ++next)
        route(it->second);
      incoming.clear();
      if (!ready.empty()) commit_batch(ready);
      ready.clear();
    }
    for (auto& q : to_index) q->close();
  }

  void commit_batch(std::vector<Prepared>& batch) {
    std::vector<PendingAppend> appends;
    appends.reserve(batch.size());
    for (auto& p : batch) appends.push_back(std::move(p.append));
    // A failed commit leaves the archive as it was, so the same batch can be tried again; a lasting
    // failure (disk full) fails this batch only, and the next batch tries afresh.
    const auto commit_start = std::chrono::steady_clock::now();
    Result<std::vector<AppendOutcome>> outcomes = archive.append(appends);
    static auto& commit_time =
        metrics::histogram("mailark_archive_commit_seconds", "Time to commit one batch to the archive (with its fsync)");
    commit_time.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - commit_start).count());
    for (int attempt = 1; !outcomes && attempt < 3; ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(attempt == 1 ? 100 : 700));
      outcomes = archive.append(appends);
    }
    if (!outcomes) {
      {
        std::lock_guard lock(error_mu);
        if (!archive_error) archive_error = outcomes.error();
      }
      for (auto& p : batch) fail(p, "not archived: " + outcomes.error().to_string());
      return;
    }
    // Every result is reported as soon as the batch is durable, before any of its documents is
    // queued for the index: a push waits while a shard's queue is full, and a session's 250 must not
    // wait for the documents of the imports committed with it.
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& out = (*outcomes)[i];
      IngestResult& r = batch[i].result;
      if (out.duplicate) {
        r.outcome = IngestOutcome::kDuplicate;
      } else {
        r.seq = out.record.seq;
        r.queued = appends[i].queue.has_value();
        r.quarantined = appends[i].quarantine.has_value();
      }
      report(batch[i]);
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& out = (*outcomes)[i];
      if (out.duplicate) continue;
      const std::uint64_t seq = out.record.seq;
      // A new time segment: every shard learns of it before any of its documents reaches one.
      if (out.starts_segment) index.add_segment(seq);
      if (out.copy) indexer::mark_copy(*batch[i].doc);  // as document_for_record finds it
      // Known before it is queued: a shard catching up that takes and drops it from its queue then
      // catches up to it (recover_shard).
      last_appended = seq;
      to_index[index.shard_of(seq)]->push(ToIndex{seq, std::move(*batch[i].doc), batch[i].prompt});
    }
  }

  bool room_for_imports() const {
    for (const auto& q : to_index)
      if (q->depth() > q->capacity() / 2) return false;
    return true;
  }

  void fail(Prepared& p, const std::string& why) {
    p.result.outcome = IngestOutcome::kFailed;
    p.result.store_failed = true;
    p.result.reason = why;
    report(p);
  }

  // Indexes, from the archive, the failed shard's records after its watermark, up to the last one
  // appended or `chunk` of them (0: no limit), and commits them; `reopen`s the shard first (not
  // between the chunks of one catch-up). Returns whether it reached the last record appended.
  // Documents still queued for those records are then skipped by IndexWriter::add.
  Result<bool> recover_shard(unsigned shard, bool reopen, std::size_t chunk = 0) {
    if (reopen) MAILARK_TRY(index.reopen_shard(shard));
    const std::uint64_t head = last_appended;
    const unsigned n = index.shard_count();
    std::uint64_t from = index.shard_watermark(shard) + 1;
    while (from <= head && index.shard_of(from) != shard) ++from;
    std::uint64_t to = head;
    if (chunk > 0 && from <= head && (head - from) / n >= chunk) to = from + (chunk - 1) * std::uint64_t{n};
    if (from <= to) {
      MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
      for (std::uint64_t seq = from; seq <= to; seq += n)
        MAILARK_TRY(index.add(seq, document_for_id(*snap, seq, limits, index.pair_words().get())));
    }
    MAILARK_TRY(index.commit_shard(shard, to));
    commits++;
    return to == head;
  }

  // The document of an appended record, built again from the archive with the index's pair words.
  Xapian::Document rebuild(std::uint64_t seq) {
    auto snap = archive.snapshot();
    if (!snap) return indexer::build_unindexed_document(seq, snap.error().context);
    return document_for_id(**snap, seq, limits, index.pair_words().get());
  }

  // Commits the shard; after the commit that chose the index's pair words, its documents built
  // before them get their pair terms (pair_unpaired_documents; once, then nothing to do).
  // Then, for a server, compacts the shard once it has grown enough (compact_live).
  // `compact` false: the caller compacts after telling waiting readers (sync_index) of the commit.
  Status commit_shard(unsigned shard, std::uint64_t last, bool compact = true) {
    MAILARK_TRY(index.commit_shard(shard, last));
    commits++;
    MAILARK_TRY(pair_unpaired_documents(archive, index, shard, limits));
    return compact ? compact_live(shard, /*idle=*/false) : ok_status();
  }

  // A server's live shards are compacted as they grow and once mail stops arriving (`idle`: no
  // document since the last commit; IndexWriter::compact_if_grown). A failed compaction (a full disk)
  // leaves the shard as it was and is only warned about, unless the shard could not be opened again.
  Status compact_live(unsigned shard, bool idle) {
    if (!options.compact_live_index) return ok_status();
    auto compacted = index.compact_if_grown(shard, idle);
    if (!compacted) {
      if (!index.shard_open(shard)) return compacted.error();  // recovered as after any failure
      warn("index shard " + std::to_string(shard) + ": " + compacted.error().to_string() + "; left as it was");
    } else if (compacted->compacted) {
      commits++;  // readers kept from before read the shard's old files
      if (options.on_info)
        options.on_info("index shard " + std::to_string(shard) + " compacted: " +
                        std::to_string(compacted->before >> 10) + " KiB to " + std::to_string(compacted->after >> 10) +
                        " KiB");
    }
    return ok_status();
  }

  void index_loop(unsigned shard) {
    ToIndex item;
    std::size_t since_commit = 0;
    std::uint64_t last = 0;
    bool broken = false;
    auto retry_at = std::chrono::steady_clock::now();
    BoundedQueue<ToIndex>& queue = *to_index[shard];
    const auto interval =
        std::chrono::milliseconds(options.index_commit_interval_ms ? options.index_commit_interval_ms : 3600000);
    // While only imports' documents wait uncommitted, commits come by count or after this long.
    const auto bulk_interval = std::max<std::chrono::milliseconds>(
        interval, std::chrono::milliseconds(options.index_bulk_commit_interval_ms));
    bool prompt_waiting = false;  // an uncommitted document of mail someone may search for now
    const auto retry = std::chrono::milliseconds(std::max(1u, options.index_retry_ms));
    auto last_commit = std::chrono::steady_clock::now();
    auto say_why = [&](const Error& e) {
      warn("index shard " + std::to_string(shard) + ": " + e.to_string() +
           "; mail is still archived, and the index catches up from the archive once it can write again");
    };
    auto failed = [&](const Error& e) {
      say_why(e);
      broken = true;
      broken_shards++;
      retry_at = std::chrono::steady_clock::now() + retry;
      since_commit = 0;
      prompt_waiting = false;
      report_synced(shard, true);
    };
    // A reader asked for what is archived to be searchable (sync_index): once this shard has added
    // every document of its own up to the head asked for, it commits them and says so.
    std::uint64_t answered = 0;
    auto answer_readers = [&](std::chrono::steady_clock::time_point now) {
      const std::uint64_t want = sync_want.load();
      if (want <= answered) return;
      const unsigned n = index.shard_count();
      if (indexer::shard_coverage(std::max(last, index.shard_watermark(shard)), shard, n) < want) return;
      if (since_commit > 0) {
        if (auto s = commit_shard(shard, last, /*compact=*/false); !s) {
          failed(s.error());
          return;
        }
        since_commit = 0;
        prompt_waiting = false;
        last_commit = now;
      }
      answered = want;
      report_synced(shard, false);
      if (auto c = compact_live(shard, /*idle=*/false); !c) failed(c.error());
    };
    bool reopen = true;  // the shard, at the next recovery: not between chunks of one catch-up
    bool said_why = true;  // the reason the shard is behind has been logged (failed() logs it)
    // A shard behind the archive at the start catches up from it in chunks, with the door open, as a
    // shard does after a failure: a server whose index lags (stopped while its index disk was full, a
    // crash, an archive restored without its index) starts at once and answers 250 while the shard
    // catches up, whatever the index's disk (test_failures.py
    // test_server_starts_with_its_index_behind_and_its_disk_full).
    // (head_at_start, not last_appended: a record appended since is this thread's to index as usual.)
    if (const std::uint64_t head = head_at_start;
        indexer::shard_coverage(index.shard_watermark(shard), shard, index.shard_count()) < head) {
      warn("index shard " + std::to_string(shard) + ": indexed up to message " +
           std::to_string(index.shard_watermark(shard)) + " of " + std::to_string(head) +
           "; catching up from the archive while mail is taken");
      broken = true;
      broken_shards++;
      reopen = false;
      said_why = false;  // the first failed catch-up says why (a full disk), once
      report_synced(shard, true);
    }
    while (true) {
      auto wait = broken ? std::min<std::chrono::milliseconds>(interval, retry) : interval;
      if (broken && !reopen) wait = std::chrono::milliseconds(0);  // catching up: the next chunk at once
      auto got = queue.pop_for(item, wait);
      if (got == BoundedQueue<ToIndex>::PopResult::kClosed) break;
      const auto now = std::chrono::steady_clock::now();
      if (broken) {
        if (now >= retry_at) {
          auto s = recover_shard(shard, reopen, options.index_catch_up_chunk);
          if (s && *s) {
            broken = false;
            broken_shards--;
            reopen = true;
            last_commit = now;
            report_synced(shard, false);
            warn("index shard " + std::to_string(shard) + ": recovered, caught up to message " +
                 std::to_string(index.shard_watermark(shard)));
          } else if (s) {
            // Part of the way: what the queue holds now is dropped (the next chunk reaches it:
            // last_appended is set before a document is queued), so the archive writer never waits
            // for more than a chunk; then the next chunk.
            reopen = false;
            ToIndex dropped;
            while (queue.pop_for(dropped, std::chrono::milliseconds(0)) == BoundedQueue<ToIndex>::PopResult::kItem) {
            }
          } else {
            if (!said_why) say_why(s.error());
            said_why = true;
            reopen = true;
            retry_at = now + retry;
          }
        }
        if (broken) continue;  // the archive has it; recovery indexes it from there
        if (got == BoundedQueue<ToIndex>::PopResult::kTimeout || item.seq == 0) continue;
      } else if (got == BoundedQueue<ToIndex>::PopResult::kTimeout || now - last_commit >= interval) {
        if (since_commit > 0) {
          if (prompt_waiting || now - last_commit >= bulk_interval) {
            if (auto s = commit_shard(shard, last); !s) {
              failed(s.error());
              continue;
            }
            since_commit = 0;
            prompt_waiting = false;
            last_commit = now;
          }
        } else if (auto s = pair_unpaired_documents(archive, index, shard, limits); !s) {
          // Another shard's commit chose the words after this one's last commit.
          failed(s.error());
          continue;
        } else if (auto c = compact_live(shard, got == BoundedQueue<ToIndex>::PopResult::kTimeout); !c) {
          failed(c.error());
          continue;
        } else {
          last_commit = now;
        }
        if (got == BoundedQueue<ToIndex>::PopResult::kTimeout) {
          answer_readers(now);
          continue;
        }
      }
      if (item.seq == 0) {  // a reader's wake-up, no document
        answer_readers(now);
        continue;
      }
      // A document prepared before the index chose its pair words and added after: built again with
      // them, so the shard, once written again with them (commit_shard), never takes one without.
      if (index.pair_words() && indexer::lacks_pair_terms(item.doc)) item.doc = rebuild(item.seq);
      if (Ingest::index_hook_for_test) Ingest::index_hook_for_test(item.seq);
      if (auto s = index.add(item.seq, item.doc); !s) {
        failed(s.error());
        continue;
      }
      last = item.seq;
      note_taken(shard, indexer::shard_coverage(last, shard, index.shard_count()));
      prompt_waiting = prompt_waiting || item.prompt;
      // Until the index has its pair words, commit often enough for it to choose them from what it
      // holds once it is big enough (IndexWriter::commit_shard), whatever the commit interval.
      const std::size_t every = index.pair_words() ? options.index_commit_every / index.shard_count()
                                                   : indexer::kPairTrainCommitEvery;
      if (++since_commit >= every) {
        if (auto s = commit_shard(shard, last); !s) {
          failed(s.error());
          continue;
        }
        since_commit = 0;
        prompt_waiting = false;
      }
      answer_readers(now);
    }
    if (broken) {
      if (auto s = recover_shard(shard, reopen); s) {  // the whole rest: the queue is closed
        broken = false;
        broken_shards--;
      }
    } else if (since_commit > 0) {
      if (auto s = commit_shard(shard, last); !s) failed(s.error());
    } else if (auto s = pair_unpaired_documents(archive, index, shard, limits); !s) {
      failed(s.error());
    }
    report_synced(shard, broken);
  }

  // Items appended in submission order: every item with preserve_order, else the imports' (a server
  // appends mail from outside in completion order, and an import handed to it in its own order, as a
  // lone import: Ingest.AnImportHandedToAServerKeepsItsOrder). The others need no ticket.
  bool ordered(bool prompt) const { return options.preserve_order || !prompt; }

  void enqueue(IngestItem item) {
    const std::uint64_t ticket = ordered(is_prompt(item)) ? next_ticket++ : 0;
    work.push({ticket, std::move(item)});
  }

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
    // The index's pair words from the same messages (their bodies, past the header block), before
    // any document is built: then none is built without them, and none has to be built again
    // (pair_unpaired_documents). A failure only leaves the index to choose them later itself.
    if (!index.pair_words()) {
      std::vector<std::string_view> texts;
      for (const auto& s : samples) {
        std::size_t body = s.find("\n\n");
        if (std::size_t crlf = s.find("\r\n\r\n"); crlf < body) body = crlf;
        texts.push_back(body == std::string::npos ? std::string_view() : std::string_view(s).substr(body));
      }
      if (auto adopted = index.adopt_pair_words(indexer::choose_pair_words(texts)); !adopted)
        warn("index: " + adopted.error().to_string());
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

  bool try_submit(IngestItem& item) {
    if (!training_done) {
      submit(std::move(item));
      return true;
    }
    const bool in_order = ordered(is_prompt(item));
    std::pair<std::uint64_t, IngestItem> entry{in_order ? next_ticket : 0, std::move(item)};
    if (!work.try_push(entry)) {
      item = std::move(entry.second);
      return false;
    }
    if (in_order) ++next_ticket;
    return true;
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
    stop_threads();
    // Every shard has everything up to the last appended record: say so in all of them (unless one is
    // still broken; the next open catches it up).
    if (broken_shards == 0 && last_appended > index.watermark()) {
      if (auto s = index.commit(last_appended); !s) warn("index: " + s.error().to_string());
    }
    // A shard whose thread ended before another shard's last commit chose the pair words. Then a
    // server leaves its live shards compact as it stops (compact_live).
    if (broken_shards == 0) {
      for (unsigned s = 0; s < index.shard_count(); ++s)
        if (auto st = pair_unpaired_documents(archive, index, s, limits); !st) warn("index: " + st.error().to_string());
      for (unsigned s = 0; s < index.shard_count(); ++s)
        if (auto st = compact_live(s, /*idle=*/true); !st) warn("index: " + st.error().to_string());
    }
    std::lock_guard lock(error_mu);
    if (archive_error) return *archive_error;
    return ok_status();
  }
};

Ingest::Ingest(Archive& archive, indexer::IndexWriter& index, const scanner::Scanner* scanner,
               const Limits& limits, IngestOptions options,
               std::function<void(const IngestResult&)> on_result)
    : impl_(std::make_unique<Impl>(archive, index, scanner, limits, std::move(options), std::move(on_result))) {}

Ingest::~Ingest() {
  (void)impl_->finish();
}

void Ingest::submit(IngestItem item) {
  impl_->submit(std::move(item));
}

bool Ingest::try_submit(IngestItem& item) {
  return impl_->try_submit(item);
}

Ingest::Synced Ingest::sync_index(std::chrono::milliseconds timeout) {
  return impl_->sync_index(timeout);
}

std::uint64_t Ingest::index_commits() const {
  return impl_->commits.load();
}

std::uint64_t Ingest::index_taken_in() const {
  return impl_->index_taken_in();
}

bool Ingest::room_for_imports() const {
  return impl_->room_for_imports();
}

Status Ingest::finish() {
  return impl_->finish();
}

}  // namespace mailark
