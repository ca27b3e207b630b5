// The ingest pipeline under failure: a full disk under the archive or the index, a slow scan, a full
// queue, an index left with documents past its watermark. Disk-full cases use a real small tmpfs
// (root only; skipped with the reason otherwise).
#include "engine/ingest.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "engine/bounded_queue.h"
#include "engine/engine.h"
#include "engine/index_fields.h"
#include "indexer/index.h"
#include "indexer/schema.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

using test::open_engine;

struct Outcomes {
  std::mutex mu;
  std::vector<IngestResult> results;
  std::vector<std::string> warnings;
  int count(IngestOutcome o) {
    std::lock_guard lock(mu);
    int n = 0;
    for (const auto& r : results) n += r.outcome == o;
    return n;
  }
};

IngestOptions server_options(Outcomes& out) {
  IngestOptions o;
  o.train_after = 0;
  o.preserve_order = false;
  o.linger_ms = 1;
  o.index_commit_interval_ms = 50;
  o.index_commit_every = 2;
  o.index_retry_ms = 50;
  o.on_warning = [&out](const std::string& w) {
    std::lock_guard lock(out.mu);
    out.warnings.push_back(w);
  };
  return o;
}

IngestItem item(const std::string& subject, Outcomes& out) {
  IngestItem it;
  it.origin = subject;
  it.raw = test::make_message(subject, "body of " + subject);
  it.envelope.direction = Direction::kInbound;
  it.envelope.received_at = 1000000000;
  it.on_done = [&out](const IngestResult& r) {
    std::lock_guard lock(out.mu);
    out.results.push_back(r);
  };
  return it;
}

// Ingest::prepare_hook_for_test set for one test, and cleared as it ends, however it ends.
struct PrepareHook {
  explicit PrepareHook(std::function<void(const IngestItem&)> hook) { Ingest::prepare_hook_for_test = std::move(hook); }
  ~PrepareHook() { Ingest::prepare_hook_for_test = nullptr; }
};

template <typename Pred>
void wait_until(Pred pred) {
  for (int i = 0; i < 2000 && !pred(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

TEST(Ingest, FailedCommitFailsThatBatchOnly) {
  test::ScratchDir dir;
  test::SmallTmpfs disk(dir / "archive", 2u << 20);
  REQUIRE_TMPFS(disk);
  auto e = open_engine(dir.path());
  Outcomes out;
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, server_options(out), nullptr);
  in.submit(item("before the disk filled", out));
  wait_until([&] { return out.count(IngestOutcome::kArchived) == 1; });
  disk.fill();
  in.submit(item("while the disk is full", out));
  wait_until([&] { return out.count(IngestOutcome::kFailed) == 1; });
  EXPECT_EQ(out.count(IngestOutcome::kFailed), 1) << "the commit failed, after its retries";
  {
    std::lock_guard lock(out.mu);
    for (const auto& r : out.results)
      if (r.outcome == IngestOutcome::kFailed) {
        EXPECT_TRUE(r.store_failed) << "the archive's failure, not the message's";
      }
  }
  disk.free();
  for (int i = 0; i < 5; ++i) in.submit(item("after space came back " + std::to_string(i), out));
  Status finished = in.finish();
  EXPECT_FALSE(finished.ok()) << "finish() reports the write failure that happened";
  EXPECT_EQ(out.count(IngestOutcome::kArchived), 6) << "the failure did not latch: later messages are archived";
  EXPECT_EQ(e->archive().head().seq, 6u);
  auto res = e->search("subject:after", {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 5u);
}

TEST(Ingest, AMessageWhosePreparationThrowsFailsAlone) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  // Whatever is thrown: Xapian's errors are not std::exceptions.
  const std::map<std::string, std::string> poisons = {
      {"poison", "std::runtime_error: a bug in the parse"},
      {"xapian", "Xapian::InvalidArgumentError: a term too long"},
      {"odd", "an exception of type int"}};
  PrepareHook hook([](const IngestItem& it) {
    if (it.origin == "poison") throw std::runtime_error("a bug in the parse");
    if (it.origin == "xapian") throw Xapian::InvalidArgumentError("a term too long");
    if (it.origin == "odd") throw 42;
  });
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, server_options(out), nullptr);
  in.submit(item("before", out));
  for (const auto& [origin, why] : poisons) in.submit(item(origin, out));
  in.submit(item("after", out));
  EXPECT_TRUE(in.finish().ok()) << "not a write failure: the server goes on";
  ASSERT_EQ(out.results.size(), 5u);
  for (const auto& r : out.results) {
    if (poisons.count(r.origin)) {
      EXPECT_EQ(r.outcome, IngestOutcome::kFailed);
      EXPECT_FALSE(r.store_failed) << "the message's own failure: an import goes on";
      EXPECT_NE(r.reason.find(poisons.at(r.origin)), std::string::npos) << r.reason;
    } else {
      EXPECT_EQ(r.outcome, IngestOutcome::kArchived) << r.origin << ": " << r.reason;
    }
  }
  EXPECT_EQ(e->archive().head().seq, 2u);
  auto res = e->search("subject:after", {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 1u);
}

// For a test whose index gets a disk of its own: the index is made, then moved to DIR/index.real so
// that a small file system can be mounted at DIR/index; open_on_moved_index copies it there and
// opens the engine.
void move_index_aside(const test::ScratchDir& dir) {
  auto e = open_engine(dir.path());
  (void)e->search("anything", {});  // the index exists before its disk fills
  e.reset();
  std::filesystem::rename(dir / "index", dir / "index.real");
}
auto open_on_moved_index(const test::ScratchDir& dir) {
  std::filesystem::copy(dir / "index.real", dir / "index", std::filesystem::copy_options::recursive);
  return open_engine(dir.path());
}

TEST(Ingest, IndexFailureNeverFailsAMessage) {
  test::ScratchDir dir;
  // The index gets a disk of its own, which then fills up.
  move_index_aside(dir);
  test::SmallTmpfs disk(dir / "index", 8u << 20);
  REQUIRE_TMPFS(disk);
  auto e = open_on_moved_index(dir);  // the index leaves 512 KiB of its 8 MiB free (a sixteenth)
  Outcomes out;
  {
    IngestOptions options = server_options(out);
    options.index_catch_up_chunk = 7;  // each shard's 20 caught up in three chunks
    Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, options, nullptr);
    disk.fill();
    for (int i = 0; i < 40; ++i) in.submit(item("indexless " + std::to_string(i), out));
    wait_until([&] { return out.count(IngestOutcome::kArchived) == 40; });
    EXPECT_EQ(out.count(IngestOutcome::kArchived), 40) << "every message archived while the index cannot write";
    wait_until([&] {
      std::lock_guard lock(out.mu);
      return !out.warnings.empty();
    });
    {
      std::lock_guard lock(out.mu);
      ASSERT_FALSE(out.warnings.empty()) << "the index failure was reported";
      EXPECT_NE(out.warnings[0].find("catches up from the archive"), std::string::npos) << out.warnings[0];
      // Refused before Xapian wrote into a full disk (which can end the process: IndexRoom.*).
      EXPECT_NE(out.warnings[0].find("is always left free"), std::string::npos) << out.warnings[0];
    }
    disk.free();  // the shard reopens and catches up from the archive
    wait_until([&] {
      std::lock_guard lock(out.mu);
      return out.warnings.size() >= 2 && out.warnings.back().find("recovered") != std::string::npos;
    });
    EXPECT_TRUE(in.finish().ok());
  }
  EXPECT_EQ(e->index_watermark(), 40u);
  auto res = e->search("subject:indexless", {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 40u) << "nothing lost: the index caught up from the archive";
}

// Messages matching `q` in what the index at `dir` has committed (0 without an index).
std::uint64_t committed_hits(const std::string& dir, const std::string& q) {
  auto r = indexer::IndexReader::open(dir);
  if (!r.ok()) return 0;
  auto res = (*r)->search(q, indexer::SearchOptions{0, 1}, nullptr);
  return res.ok() ? res->total : 0;
}

// A server's index commits every index_commit_interval_ms while mail someone may search for waits
// uncommitted, but an import handed to it (nobody waits for each of its messages) is committed by
// count or every index_bulk_commit_interval_ms: commits of a few documents a second cost a handed
// import much of its rate. Mail from outside arriving then is committed at once, with the imports its
// shard holds.
TEST(Ingest, ImportsAloneAreIndexedInBulkAndMailFromOutsideAtOnce) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  IngestOptions o = server_options(out);
  o.index_commit_every = 100000;
  o.index_bulk_commit_interval_ms = 3600000;
  o.bulk_linger_ms = 50;
  auto found = [&](const std::string& q) { return committed_hits(dir / "index", q); };
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, o, nullptr);
  for (int i = 0; i < 10; ++i) {
    IngestItem it = item("imported " + std::to_string(i), out);
    it.envelope.direction = Direction::kImport;
    in.submit(std::move(it));
  }
  wait_until([&] { return out.count(IngestOutcome::kArchived) == 10; });
  ASSERT_EQ(out.count(IngestOutcome::kArchived), 10);
  // Ten commit intervals later the imports are archived, not yet searchable.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(found("subject:imported"), 0u);
  // Two messages from outside, one for each shard (records 11 and 12): each shard commits at once,
  // the imports it holds with them.
  in.submit(item("from outside", out));
  in.submit(item("also outside", out));
  wait_until([&] { return found("subject:outside") == 2; });
  EXPECT_EQ(found("subject:outside"), 2u);
  EXPECT_EQ(found("subject:imported"), 10u) << "committed with the mail from outside";
  EXPECT_TRUE(in.finish().ok());
}

// A reader about to search asks the index threads to commit what the archive holds (a server
// commits otherwise only every index_commit_interval_ms, here never): mail whose result was just
// reported (an SMTP 250, sent before its document reaches its shard) is found by the search that
// follows at once, every time.
TEST(Ingest, AReaderFindsMailArchivedJustBeforeItAsks) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  IngestOptions o = server_options(out);
  o.index_commit_interval_ms = 3600000;
  o.index_commit_every = 100000;
  auto found = [&](const std::string& q) { return committed_hits(dir / "index", q); };
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, o, nullptr);
  for (int i = 0; i < 9; ++i) in.submit(item("early " + std::to_string(i), out));
  wait_until([&] { return out.count(IngestOutcome::kArchived) == 9; });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(found("subject:early"), 0u) << "nothing commits by itself here";
  EXPECT_EQ(in.sync_index(std::chrono::minutes(5)), Ingest::Synced::kCurrent);
  EXPECT_EQ(found("subject:early"), 9u);
  // Each message asked for as soon as its result is reported.
  for (int i = 1; i <= 30; ++i) {
    IngestItem it = item("late " + std::to_string(i), out);
    // The archive writer reports a result before it queues the document: here it lingers there, so
    // that the reader asks while the document has not reached its shard.
    it.on_done = [report = std::move(it.on_done)](const IngestResult& r) {
      report(r);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    };
    in.submit(std::move(it));
    wait_until([&] { return out.count(IngestOutcome::kArchived) == 9 + i; });
    ASSERT_EQ(in.sync_index(std::chrono::minutes(5)), Ingest::Synced::kCurrent);
    ASSERT_EQ(found("subject:late"), static_cast<std::uint64_t>(i)) << "message " << i;
  }
  // Nothing new: answered at once, from what is committed.
  EXPECT_EQ(in.sync_index(std::chrono::minutes(5)), Ingest::Synced::kCurrent);
  EXPECT_TRUE(in.finish().ok());
  EXPECT_EQ(in.sync_index(std::chrono::minutes(5)), Ingest::Synced::kCurrent) << "after the end, too";
}

// What the index has taken in is read without a commit (the server's /metrics: a scrape is not a
// commit), and a broken shard holds it back.
TEST(Ingest, WhatTheIndexHasTakenInIsReadWithoutACommit) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  IngestOptions o = server_options(out);
  o.index_commit_interval_ms = 3600000;
  o.index_commit_every = 100000;
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, o, nullptr);
  EXPECT_EQ(in.index_taken_in(), 0u);
  for (int i = 0; i < 7; ++i) in.submit(item("taken " + std::to_string(i), out));
  wait_until([&] { return out.count(IngestOutcome::kArchived) == 7; });
  wait_until([&] { return in.index_taken_in() == 7; });
  const std::uint64_t commits = in.index_commits();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(in.index_taken_in(), 7u);
  EXPECT_EQ(in.index_commits(), commits) << "reading it commits nothing";
  EXPECT_EQ(committed_hits(dir / "index", "subject:taken"), 0u);
  EXPECT_EQ(in.sync_index(std::chrono::minutes(5)), Ingest::Synced::kCurrent);
  EXPECT_GT(in.index_commits(), commits);
  EXPECT_EQ(committed_hits(dir / "index", "subject:taken"), 7u);
  EXPECT_TRUE(in.finish().ok());
}

// A server's shard, once large, commits its new documents into its small tier (a commit writes that
// small database's blocks only) and merges the two when mail stops (indexer/index.h set_small_tier).
TEST(Ingest, ALargeShardsMailGoesToItsSmallTierAndIsMergedOnceIdle) {
  namespace fs = std::filesystem;
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  IngestOptions o = server_options(out);
  o.compact_live_index = true;
  indexer::IndexWriter* w = e->index_writer().value();
  auto pairs = std::make_shared<indexer::PairWords>();
  pairs->words = {"natural", "gas"};
  ASSERT_TRUE(w->adopt_pair_words(pairs).ok());
  w->set_small_tier(96u << 10, std::uint64_t{1} << 40, /*idle_merge_bytes=*/1);  // merged only once idle
  const fs::path index = dir / "index";
  int n = 0;
  {
    Ingest in(e->archive(), *w, nullptr, e->options().limits, o, nullptr);
    while (!fs::exists(index / "fresh0.g1") || !fs::exists(index / "fresh1.g1")) {
      ASSERT_LT(n, 20000) << "no small tier began";
      for (int k = 0; k < 100; ++k) in.submit(item("tier " + std::to_string(n++), out));
      wait_until([&] { return out.count(IngestOutcome::kArchived) == static_cast<std::size_t>(n); });
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (int k = 0; k < 50; ++k) in.submit(item("tier " + std::to_string(n++), out));
    wait_until([&] { return out.count(IngestOutcome::kArchived) == static_cast<std::size_t>(n); });
    EXPECT_EQ(in.sync_index(std::chrono::minutes(5)), Ingest::Synced::kCurrent);
    EXPECT_EQ(committed_hits(index, "subject:tier"), static_cast<std::uint64_t>(n));
    // Idle (nothing for a commit interval): each shard merges its small tier into shardK.g1.
    // (The new shard is written before the stub names it, the old two removed after.)
    wait_until([&] {
      return !fs::exists(index / "fresh0.g1") && !fs::exists(index / "fresh1.g1") && !fs::exists(index / "shard0") &&
             !fs::exists(index / "shard1");
    });
    EXPECT_TRUE(fs::exists(index / "shard0.g1"));
    EXPECT_TRUE(fs::exists(index / "shard1.g1"));
    EXPECT_FALSE(fs::exists(index / "fresh0.g1"));
    EXPECT_FALSE(fs::exists(index / "shard0"));
    EXPECT_EQ(committed_hits(index, "subject:tier"), static_cast<std::uint64_t>(n));
    EXPECT_TRUE(in.finish().ok());
  }
  EXPECT_EQ(committed_hits(index, "subject:tier"), static_cast<std::uint64_t>(n));
}

// Documents a shard added and then could not commit (its disk filled) are dropped (the archive has
// them; recovery adds them again): not taken in, for /metrics' lag.
TEST(Ingest, ABrokenShardHoldsBackWhatTheIndexHasTakenIn) {
  test::ScratchDir dir;
  move_index_aside(dir);
  test::SmallTmpfs disk(dir / "index", 8u << 20);
  REQUIRE_TMPFS(disk);
  auto e = open_on_moved_index(dir);
  Outcomes out;
  IngestOptions o = server_options(out);
  o.index_commit_interval_ms = 3600000;
  o.index_commit_every = 100000;
  o.index_retry_ms = 3600000;  // stays broken for the test
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, o, nullptr);
  for (int i = 0; i < 6; ++i) in.submit(item("held back " + std::to_string(i), out));
  wait_until([&] { return out.count(IngestOutcome::kArchived) == 6; });
  wait_until([&] { return in.index_taken_in() == 6; });
  disk.fill();
  EXPECT_EQ(in.sync_index(std::chrono::hours(1)), Ingest::Synced::kBroken) << "the commit it asks for fails";
  EXPECT_EQ(in.index_taken_in(), 0u) << "a shard that cannot commit has not taken its documents in";
  disk.free();
  EXPECT_TRUE(in.finish().ok());
}

// A shard that cannot write (its disk full) answers a reader at once: the reader goes on with what
// is committed and says the index is behind, rather than wait for a commit that cannot come.
TEST(Ingest, ABrokenShardAnswersAReaderAtOnce) {
  test::ScratchDir dir;
  move_index_aside(dir);
  test::SmallTmpfs disk(dir / "index", 8u << 20);
  REQUIRE_TMPFS(disk);
  auto e = open_on_moved_index(dir);
  Outcomes out;
  IngestOptions o = server_options(out);
  o.index_retry_ms = 3600000;  // stays broken for the test
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, o, nullptr);
  disk.fill();
  for (int i = 0; i < 6; ++i) in.submit(item("stuck " + std::to_string(i), out));
  wait_until([&] { return out.count(IngestOutcome::kArchived) == 6; });
  wait_until([&] {
    std::lock_guard lock(out.mu);
    return !out.warnings.empty();
  });
  // Not kTimedOut: a reader never waits out its whole timeout for a broken shard.
  EXPECT_EQ(in.sync_index(std::chrono::hours(1)), Ingest::Synced::kBroken);
  disk.free();
  EXPECT_TRUE(in.finish().ok());
}

TEST(Ingest, CompletionOrderLetsASmallMessagePassASlowOne) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  IngestOptions o = server_options(out);
  o.workers = 2;
  Ingest in(e->archive(), *e->index_writer().value(), e->scanner().value(), e->options().limits, o, nullptr);
  // A message whose scan takes a while (a large attachment) ahead of a small one.
  IngestItem slow = item("slow", out);
  slow.raw = test::make_message("slow", "big attachment", "big.bin", std::string(24u << 20, 'q'));
  in.submit(std::move(slow));
  in.submit(item("quick", out));
  ASSERT_TRUE(in.finish().ok());
  ASSERT_EQ(out.results.size(), 2u);
  EXPECT_EQ(out.results[0].origin, "quick") << "the quick message's reply did not wait for the slow scan";
  EXPECT_EQ(out.results[0].seq, 1u) << "and got the first id";
}

// A server appends mail from outside in completion order, and an import handed to it in the
// import's own order, as a lone import: the n-th message of a mailbox gets the n-th id of the import.
TEST(Ingest, AnImportHandedToAServerKeepsItsOrder) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  PrepareHook hook([](const IngestItem& it) {
    if (it.origin == "import 0") std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a slow scan
  });
  IngestOptions o = server_options(out);
  o.workers = 2;
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, o, nullptr);
  for (int i = 0; i < 6; ++i) {
    IngestItem it = item("import " + std::to_string(i), out);
    it.envelope.direction = Direction::kImport;
    in.submit(std::move(it));
    if (i == 1) in.submit(item("session", out));
  }
  ASSERT_TRUE(in.finish().ok());
  ASSERT_EQ(out.count(IngestOutcome::kArchived), 7);
  std::map<std::string, std::uint64_t> seq;
  for (const auto& r : out.results) seq[r.origin] = r.seq;
  for (int i = 1; i < 6; ++i)
    EXPECT_LT(seq["import " + std::to_string(i - 1)], seq["import " + std::to_string(i)]) << i;
  EXPECT_LT(seq["session"], seq["import 0"]) << "mail from outside passes the slow import";
}

TEST(Ingest, TemporaryScannerErrorDefersForServersAndArchivesForImports) {
  test::ScratchDir dir;
  test::SmallTmpfs scratch(dir / "scantmp", 4u << 20);
  REQUIRE_TMPFS(scratch);
  EngineOptions opts;
  opts.data_dir = dir / "data";
  opts.signature_dirs = {test::signature_dir()};
  opts.scanner_temp_dir = dir / "scantmp";
  auto e = Engine::open(opts).value();
  scratch.fill();
  Outcomes out;
  {
    Ingest in(e->archive(), *e->index_writer().value(), e->scanner().value(), e->options().limits, server_options(out),
              nullptr);
    IngestItem smtp = item("from a client", out);
    smtp.defer_on_scan_error = true;
    in.submit(std::move(smtp));
    in.submit(item("from an import", out));
    ASSERT_TRUE(in.finish().ok());
  }
  ASSERT_EQ(out.results.size(), 2u);
  for (const auto& r : out.results) {
    if (r.origin == "from a client") {
      EXPECT_EQ(r.outcome, IngestOutcome::kDeferred);
      EXPECT_NE(r.reason.find("temporary folder"), std::string::npos) << r.reason;
    } else {
      EXPECT_EQ(r.outcome, IngestOutcome::kArchived);
      EXPECT_EQ(r.verdict, scanner::VerdictKind::kUnscanned) << "never clean";
      EXPECT_NE(r.scan_reason.find("temporary folder"), std::string::npos) << r.scan_reason;
    }
  }
  EXPECT_EQ(e->archive().head().seq, 1u) << "only the import was archived";
}

TEST(Ingest, UnscannableMessagesFollowTheirPolicy) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  // An encrypted zip, flagged so by hand: unscannable.
  std::string zip;
  {
    test::ScratchDir tmp;
    test::write_file(tmp / "a.txt", "secret\n");
    ASSERT_EQ(std::system(("cd " + tmp.path() + " && zip -q -P pw enc.zip a.txt").c_str()), 0) << "needs zip";
    zip = test::read_file(tmp / "enc.zip");
  }
  Outcomes out;
  {
    Ingest in(e->archive(), *e->index_writer().value(), e->scanner().value(), e->options().limits, server_options(out),
              nullptr);
    for (auto action : {ScanAction::kReject, ScanAction::kQuarantine, ScanAction::kDeliver}) {
      IngestItem it = item("policy " + std::to_string(static_cast<int>(action)), out);
      it.raw = test::make_message(it.origin, "locked", "enc.zip", zip);
      QueueEntry q;
      q.route = Route::kPrimary;
      q.recipients = {{"ana@example.com"}};
      it.queue = q;
      it.on_unscannable = action;
      in.submit(std::move(it));
    }
    ASSERT_TRUE(in.finish().ok());
  }
  ASSERT_EQ(out.results.size(), 3u);
  std::map<std::string, IngestResult> by;
  for (const auto& r : out.results) by[r.origin] = r;
  for (const auto& [origin, r] : by) {
    EXPECT_EQ(r.outcome, IngestOutcome::kArchived) << origin;
    EXPECT_EQ(r.verdict, scanner::VerdictKind::kUnscannable) << origin;
    EXPECT_EQ(r.scan_reason.rfind("encrypted: ", 0), 0u) << r.scan_reason;
  }
  EXPECT_TRUE(by["policy 0"].quarantined && !by["policy 0"].queued) << "reject: archived and held";
  EXPECT_TRUE(by["policy 1"].quarantined && !by["policy 1"].queued) << "quarantine: archived and held";
  EXPECT_TRUE(!by["policy 2"].quarantined && by["policy 2"].queued) << "deliver: queued";
  ASSERT_EQ(e->archive().quarantine_entries(false).value().size(), 2u);
  EXPECT_TRUE(e->archive().quarantine_entry(by["policy 0"].seq).value().refused) << "reject: the client was refused";
  EXPECT_FALSE(e->archive().quarantine_entry(by["policy 1"].seq).value().refused);
  auto res = e->search("verdict:unscannable", {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 3u);
  EXPECT_EQ(e->archive().counters().unscannable, 3u);
}

TEST(Ingest, FullQueueRefusesInsteadOfBlocking) {
  BoundedQueue<int> q(2);
  int a = 1, b = 2, c = 3;
  EXPECT_TRUE(q.try_push(a));
  EXPECT_TRUE(q.try_push(b));
  EXPECT_FALSE(q.try_push(c));
  EXPECT_EQ(c, 3) << "a refused item is left as it was";
  int got = 0;
  ASSERT_TRUE(q.pop(got));
  EXPECT_TRUE(q.try_push(c));
}

// A blocked thread is woken only when it can go on (engine/bounded_queue.h): a consumer lingering for
// a batch once the batch is full, not at every item; producers blocked on a full queue once it is
// down to half, not at every slot freed. Without this the import woke about two threads a message.
// pop_batch_until adds to a batch: it waits for a first item and then for the batch to fill only until
// its deadline, takes no more than `max` in all, and says false only for a closed, empty queue.
TEST(Ingest, QueueBatchUntilADeadline) {
  BoundedQueue<int> q(16);
  std::vector<int> out = {0};
  const auto soon = [] { return std::chrono::steady_clock::now() + std::chrono::milliseconds(20); };
  EXPECT_TRUE(q.pop_batch_until(out, 4, soon()));
  EXPECT_EQ(out, (std::vector<int>{0})) << "nothing came: the batch as it was";
  for (int i = 1; i <= 5; ++i) q.push(i);
  EXPECT_TRUE(q.pop_batch_until(out, 4, soon()));
  EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3})) << "four in all";
  EXPECT_TRUE(q.pop_batch_until(out, 4, soon()));
  EXPECT_EQ(out.size(), 4u) << "full already";
  out.clear();
  std::thread later([&] { q.push(6); });
  EXPECT_TRUE(q.pop_batch_until(out, 8, std::chrono::steady_clock::now() + std::chrono::milliseconds(200)));
  later.join();
  // 4 and 5 were waiting, and the batch never filled to 8: it waited until the deadline, taking 6 if
  // it came by then.
  ASSERT_GE(out.size(), 2u);
  EXPECT_EQ(out[0], 4);
  EXPECT_EQ(out[1], 5);
  q.close();
  std::vector<int> rest;
  while (q.pop_batch_until(rest, 8, soon())) {
    if (rest.empty()) break;
    rest.clear();
  }
  std::vector<int> none;
  EXPECT_FALSE(q.pop_batch_until(none, 8, soon())) << "closed and empty";
}

// An item someone waits for (urgent: a session's message) ends a linger for a fuller batch at once;
// items no one waits for (an import's) leave the consumer lingering, unwoken.
TEST(Ingest, QueueLingerEndsAtAnUrgentItem) {
  BoundedQueue<int> q(64, [](const int& i) { return i < 0; });  // negative: urgent
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::vector<int> out;
  q.push(1);
  std::thread consumer([&] { q.pop_batch_until(out, 16, deadline); });
  wait_until([&] { return q.waiting().lingering == 1; });
  ASSERT_EQ(q.waiting().lingering, 1u);
  const std::size_t woken = q.wakeups();
  q.push(2);
  q.push(3);
  EXPECT_EQ(q.wakeups(), woken) << "items no one waits for: the consumer lingers on";
  EXPECT_EQ(q.waiting().lingering, 1u);
  q.push(-4);
  consumer.join();  // without the rule: until the deadline
  EXPECT_LT(std::chrono::steady_clock::now(), deadline);
  EXPECT_EQ(out, (std::vector<int>{-4, 1, 2, 3})) << "the urgent item first";
  // One already there: no linger at all.
  q.push(5);
  q.push(-6);
  std::vector<int> again;
  EXPECT_TRUE(q.pop_batch_until(again, 16, deadline));
  EXPECT_EQ(again, (std::vector<int>{-6, 5}));
  // Taken, it counts no more: the next batch of imports lingers again.
  q.push(7);
  std::vector<int> third;
  std::thread lingering([&] { q.pop_batch_until(third, 16, deadline); });
  wait_until([&] { return q.waiting().lingering == 1; });
  EXPECT_EQ(q.waiting().lingering, 1u);
  q.push(-8);
  lingering.join();
  EXPECT_EQ(third, (std::vector<int>{-8, 7}));
}

// Urgent items are taken before the others, each class in the order pushed, by every way of taking.
TEST(Ingest, QueueGivesUrgentItemsFirst) {
  BoundedQueue<int> q(64, [](const int& i) { return i < 0; });
  for (int i : {1, 2, -3, 4, -5, 6}) q.push(i);
  int one = 0;
  ASSERT_TRUE(q.pop(one));
  EXPECT_EQ(one, -3);
  std::vector<int> batch;
  ASSERT_TRUE(q.pop_batch(batch, 3));
  EXPECT_EQ(batch, (std::vector<int>{-5, 1, 2}));
  q.push(-7);
  ASSERT_EQ(q.pop_for(one, std::chrono::milliseconds(0)), BoundedQueue<int>::PopResult::kItem);
  EXPECT_EQ(one, -7);
  std::vector<int> rest;
  q.close();
  ASSERT_TRUE(q.pop_batch(rest, 16));
  EXPECT_EQ(rest, (std::vector<int>{4, 6}));
  // Without a rule of urgency: the order pushed.
  BoundedQueue<int> plain(8);
  for (int i : {1, -2, 3}) plain.push(i);
  std::vector<int> all;
  ASSERT_TRUE(plain.pop_batch(all, 8));
  EXPECT_EQ(all, (std::vector<int>{1, -2, 3}));
}

// A server's pipeline holds up to 256 messages of an import handed to it (api/import_socket.h); a
// session's message that arrives behind them is prepared next, not after them (its 250 waited for
// the whole queue: docs/BENCHMARKS.md "The SMTP door during a handed import").
TEST(Ingest, PromptMailIsPreparedBeforeImports) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  std::atomic<bool> entered{false}, release{false};
  PrepareHook hook([&](const IngestItem& it) {
    if (it.origin != "import 0") return;
    entered = true;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  IngestOptions o = server_options(out);
  o.workers = 1;
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, o, nullptr);
  auto import = [&](int i) {
    IngestItem it = item("import " + std::to_string(i), out);
    it.envelope.direction = Direction::kImport;
    return it;
  };
  in.submit(import(0));
  wait_until([&] { return entered.load(); });
  ASSERT_TRUE(entered) << "the worker took the first import";
  for (int i = 1; i <= 20; ++i) in.submit(import(i));
  in.submit(item("session", out));
  release = true;
  ASSERT_TRUE(in.finish().ok());
  ASSERT_EQ(out.count(IngestOutcome::kArchived), 22);
  for (const auto& r : out.results)
    if (r.origin == "session") {
      EXPECT_LE(r.seq, 2u) << "archived with the import in hand (before or after it), not after the 20 queued";
    }
}

TEST(Ingest, QueueWakesBlockedThreadsOnlyWhenTheyCanGoOn) {
  {
    BoundedQueue<int> q(64);
    std::vector<int> batch;
    std::thread consumer([&] { q.pop_batch(batch, 16, std::chrono::minutes(10)); });
    wait_until([&] { return q.waiting().consumers == 1; });
    ASSERT_EQ(q.waiting().consumers, 1u);
    q.push(0);  // wakes the consumer, which then lingers for the rest of its batch
    wait_until([&] { return q.waiting().lingering == 1; });
    ASSERT_EQ(q.waiting().lingering, 1u);
    const std::size_t woken = q.wakeups();
    EXPECT_EQ(woken, 1u);
    for (int i = 1; i < 15; ++i) q.push(i);
    EXPECT_EQ(q.wakeups(), woken) << "no wake-up before the batch is full";
    EXPECT_EQ(q.waiting().lingering, 1u);
    q.push(15);
    consumer.join();  // within the linger of ten minutes only because the full batch woke it
    EXPECT_EQ(batch.size(), 16u);
    EXPECT_EQ(q.wakeups(), woken + 1);
  }
  {
    BoundedQueue<int> q(8);
    for (int i = 0; i < 8; ++i) q.push(i);
    std::atomic<bool> pushed{false};
    std::thread producer([&] {
      q.push(8);
      pushed = true;
    });
    wait_until([&] { return q.waiting().producers == 1; });
    ASSERT_EQ(q.waiting().producers, 1u);
    int got = -1;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(q.pop(got));  // 5 left: more than half
    EXPECT_EQ(q.wakeups(), 0u);
    EXPECT_EQ(q.waiting().producers, 1u) << "still blocked with the queue more than half full";
    EXPECT_FALSE(pushed);
    ASSERT_TRUE(q.pop(got));  // 4 left: half
    producer.join();
    EXPECT_TRUE(pushed);
    EXPECT_EQ(q.wakeups(), 1u);
    std::vector<int> rest;
    ASSERT_TRUE(q.pop_batch(rest, 100));
    EXPECT_EQ(rest, (std::vector<int>{4, 5, 6, 7, 8})) << "order kept";
  }
  {
    // Closing wakes every waiter, whatever it waits for: a consumer waiting for an item, a consumer
    // lingering for a batch, a producer waiting for room.
    BoundedQueue<int> q(2);
    bool got_any = true;
    std::thread waiting_for_item([&] {
      std::vector<int> none;
      got_any = q.pop_batch(none, 4, std::chrono::minutes(10));
    });
    wait_until([&] { return q.waiting().consumers == 1; });
    ASSERT_EQ(q.waiting().consumers, 1u);
    q.close();
    waiting_for_item.join();
    EXPECT_FALSE(got_any);

    BoundedQueue<int> r(8);
    std::vector<int> batch;
    std::thread lingering([&] { r.pop_batch(batch, 4, std::chrono::minutes(10)); });
    r.push(1);
    wait_until([&] { return r.waiting().lingering == 1; });
    ASSERT_EQ(r.waiting().lingering, 1u);
    r.close();
    lingering.join();
    EXPECT_EQ(batch, std::vector<int>{1});

    BoundedQueue<int> s(1);
    s.push(1);
    std::thread producer([&] { s.push(2); });
    wait_until([&] { return s.waiting().producers == 1; });
    ASSERT_EQ(s.waiting().producers, 1u);
    s.close();
    producer.join();
  }
}

// Xapian commits by itself every so many documents, so a crash can leave documents past a shard's
// watermark. The next open must succeed, and the index must hold each message once.
// The documents indexed before the index chose its pair words are built again with them right after
// the commit that chose them (Ingest's commit_shard, pair_unpaired_documents), so a phrase of two pair
// words, or of two words in a header, is answered from the index without reading the archive.
TEST(Ingest, DocumentsIndexedBeforeThePairWordsGetTheirPairTerms) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  const int total = static_cast<int>(indexer::schema::kPairTrainDocs) + 300;
  {
    IngestOptions o = server_options(out);
    o.index_commit_every = 256;
    Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, o, nullptr);
    for (int i = 0; i < total; ++i) {
      IngestItem it = item("gas report " + std::to_string(i), out);
      it.raw = test::make_message("gas report " + std::to_string(i), i % 2 ? "natural gas prices" : "gas natural world");
      in.submit(std::move(it));
    }
    wait_until([&] { return out.count(IngestOutcome::kArchived) == total; });
    ASSERT_EQ(out.count(IngestOutcome::kArchived), total);
    ASSERT_TRUE(in.finish().ok());
  }
  auto& writer = *e->index_writer().value();
  ASSERT_TRUE(writer.pair_words() && writer.pair_words()->has("natural") && writer.pair_words()->has("gas"));
  for (unsigned s = 0; s < writer.shard_count(); ++s) EXPECT_FALSE(writer.has_unpaired(s)) << "shard " << s;
  // Every check the search would make is counted.
  struct Counting : indexer::FieldSource {
    explicit Counting(const Archive& a) : inner(a, Limits{}) {}
    std::optional<indexer::IndexFields> load(std::uint64_t id) override {
      ++loads;
      return inner.load(id);
    }
    std::optional<indexer::IndexFields> load_headers(std::uint64_t id) override {
      ++loads;
      return inner.load_headers(id);
    }
    ArchiveFieldSource inner;
    int loads = 0;
  } source(e->archive());
  auto reader = indexer::IndexReader::open(dir / "index");
  ASSERT_TRUE(reader.ok());
  indexer::SearchOptions exact{0, 5};
  exact.exact_total = true;
  for (const auto& [q, want] : std::vector<std::pair<std::string, int>>{
           {"\"natural gas\"", total / 2}, {"\"gas natural\"", total / 2}, {"subject:\"gas report\"", total}}) {
    auto res = (*reader)->search(q, exact, &source);
    ASSERT_TRUE(res.ok()) << q;
    EXPECT_EQ(res->total, static_cast<std::uint64_t>(want)) << q;
    EXPECT_TRUE(res->total_exact) << q;
  }
  EXPECT_EQ(source.loads, 0) << "answered from pair terms alone, the oldest documents included";
}

// An import chooses the index's pair words from the messages it holds back to train the zstd
// dictionary, before any of them is indexed: no document is built without them, so no shard is
// written again (the shards are the ones created at the start), and phrases of two pair words read
// nothing from the archive.
TEST(Ingest, AnImportChoosesPairWordsBeforeItIndexes) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  auto& writer = *e->index_writer().value();
  std::vector<std::string> uuids;
  for (unsigned s = 0; s < writer.shard_count(); ++s)
    uuids.push_back(Xapian::Database(dir / ("index/shard" + std::to_string(s))).get_uuid());
  Outcomes out;
  const int total = static_cast<int>(indexer::schema::kPairTrainDocs) + 300;
  {
    IngestOptions o = server_options(out);
    o.train_after = indexer::schema::kPairTrainDocs;  // as an import: the first messages held back
    Ingest in(e->archive(), writer, nullptr, e->options().limits, o, nullptr);
    for (int i = 0; i < total; ++i) {
      IngestItem it = item("gas report " + std::to_string(i), out);
      it.raw = test::make_message("gas report " + std::to_string(i), i % 2 ? "natural gas prices" : "gas natural world");
      in.submit(std::move(it));
    }
    ASSERT_TRUE(in.finish().ok());
  }
  ASSERT_EQ(out.count(IngestOutcome::kArchived), total);
  ASSERT_TRUE(writer.pair_words() && writer.pair_words()->has("natural") && writer.pair_words()->has("gas"));
  for (unsigned s = 0; s < writer.shard_count(); ++s) {
    EXPECT_FALSE(writer.has_unpaired(s)) << "shard " << s;
    EXPECT_EQ(Xapian::Database(dir / ("index/shard" + std::to_string(s))).get_uuid(), uuids[s])
        << "shard " << s << " was never written again";
  }
  ArchiveFieldSource source(e->archive(), Limits{});
  auto reader = indexer::IndexReader::open(dir / "index");
  ASSERT_TRUE(reader.ok());
  indexer::SearchOptions exact{0, 5};
  exact.exact_total = true;
  auto res = (*reader)->search("\"natural gas\"", exact, &source);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, static_cast<std::uint64_t>(total / 2));
  EXPECT_TRUE(res->total_exact);
}

// Index shards that take one document each and then hold it until release() (Ingest's index hook),
// and a server's pipeline options with room for thousands of messages and no commit by count.
struct HeldIndex {
  std::atomic<bool> hold{true};
  HeldIndex() {
    Ingest::index_hook_for_test = [this](std::uint64_t) {
      while (hold) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
  }
  ~HeldIndex() { Ingest::index_hook_for_test = nullptr; }
  void release() { hold = false; }
  IngestOptions options(Outcomes& out) {
    IngestOptions o = server_options(out);
    o.queue_depth = 4096;
    o.index_commit_every = 100000;
    return o;
  }
};

void submit_imports(Ingest& in, Outcomes& out, int total) {
  for (int i = 0; i < total; ++i) {
    IngestItem it = item("import " + std::to_string(i), out);
    it.envelope.direction = Direction::kImport;
    in.submit(std::move(it));
  }
}

// An import handed to a server waits while an index shard's queue is more than half full
// (Ingest::room_for_imports), so that its documents never fill one: the archive writer waits while a
// queue is full, and every session's 250 behind it.
TEST(Ingest, ImportsWaitWhileAShardsQueueIsHalfFull) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  HeldIndex held;
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, held.options(out), nullptr);
  EXPECT_TRUE(in.room_for_imports());
  // Each shard takes one document and holds it; the rest wait in its queue (1,024 deep).
  const int total = 1200;
  submit_imports(in, out, total);
  wait_until([&] { return out.count(IngestOutcome::kArchived) == total; });
  ASSERT_EQ(out.count(IngestOutcome::kArchived), total);
  EXPECT_FALSE(in.room_for_imports()) << "about 599 documents wait in each shard's queue of 1,024";
  held.release();
  wait_until([&] { return in.room_for_imports(); });
  EXPECT_TRUE(in.room_for_imports());
  EXPECT_TRUE(in.finish().ok());
  auto res = e->search("subject:import", {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, static_cast<std::uint64_t>(total));
}

// A batch's results are reported once it is durable, before its documents are queued for the index:
// the push of one waits while its shard's queue is full, and the 250 of a session's message in the
// same batch must not wait for it.
TEST(Ingest, ResultsAreReportedBeforeTheirDocumentsWaitForTheIndex) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  Outcomes out;
  HeldIndex held;
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, held.options(out), nullptr);
  // Each shard holds one document and takes no more; its queue takes 1,024: at most 2,050 documents
  // can be handed to the index, and the archive writer then waits to hand it the next.
  const int total = 3000, handed_at_most = 2 * (1024 + 1);
  submit_imports(in, out, total);
  wait_until([&] { return out.count(IngestOutcome::kArchived) > handed_at_most; });
  EXPECT_GT(out.count(IngestOutcome::kArchived), handed_at_most)
      << "the batch whose document waits for a full queue is reported all the same";
  held.release();
  EXPECT_TRUE(in.finish().ok());
  EXPECT_EQ(out.count(IngestOutcome::kArchived), total);
}

TEST(Index, DocumentsCommittedPastTheWatermarkAreKept) {
  test::ScratchDir dir;
  std::vector<std::string> raws;
  for (int i = 0; i < 12; ++i) raws.push_back(test::make_message("orphan " + std::to_string(i), "body"));
  {
    auto e = open_engine(dir.path());
    Outcomes out;
    Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, server_options(out), nullptr);
    for (int i = 0; i < 6; ++i) {
      IngestItem it = item("x", out);
      it.raw = raws[i];
      in.submit(std::move(it));
    }
    ASSERT_TRUE(in.finish().ok());
  }
  {
    // Records 7..12 reach the archive, and their documents reach the shards (committed), but the
    // watermark stays at 6: what an autoflush before a crash leaves.
    auto archive = Archive::open(dir / "archive", Limits{}, false).value();
    std::vector<PendingAppend> batch;
    for (int i = 6; i < 12; ++i) {
      PendingAppend p;
      p.content_sha256 = sha256(raws[i]);
      p.raw_size = raws[i].size();
      p.frame = archive->codec()->compress(raws[i]).value();
      p.verdict.kind = scanner::VerdictKind::kClean;
      batch.push_back(std::move(p));
    }
    ASSERT_TRUE(archive->append(batch).ok());
    auto snap = archive->snapshot().value();
    for (std::uint64_t seq = 7; seq <= 12; ++seq) {
      unsigned shard = static_cast<unsigned>((seq - 1) % 2);
      Xapian::WritableDatabase db(dir / ("index/shard" + std::to_string(shard)),
                                  Xapian::DB_OPEN | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
      db.add_document(document_for_record(*snap, snap->record(seq).value(), Limits{}, nullptr));
      db.commit();
    }
  }
  auto e = open_engine(dir.path());  // catches up: must not fail on the documents already there
  EXPECT_EQ(e->index_watermark(), 12u);
  auto res = e->search("subject:orphan", {0, 100});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 12u) << "each message once";
}

TEST(Index, UnreadableRecordGetsAPlaceholderNotASkip) {
  test::ScratchDir dir;
  {
    auto archive = Archive::open(dir / "archive", Limits{}, false).value();
    std::vector<PendingAppend> batch;
    for (int i = 0; i < 3; ++i) {
      std::string raw = test::make_message("kept " + std::to_string(i), "body");
      PendingAppend p;
      p.content_sha256 = sha256(raw);
      p.raw_size = raw.size();
      p.frame = archive->codec()->compress(raw).value();
      p.verdict.kind = scanner::VerdictKind::kClean;
      if (i == 1) p.frame = "not a zstd frame";  // stored damaged
      batch.push_back(std::move(p));
    }
    ASSERT_TRUE(archive->append(batch).ok());
  }
  auto e = open_engine(dir.path());
  EXPECT_EQ(e->index_watermark(), 3u);
  auto un = e->unindexed(10);
  ASSERT_TRUE(un.ok());
  ASSERT_EQ(un->first, 1u);
  EXPECT_EQ(un->second[0].first, 2u);
  EXPECT_FALSE(un->second[0].second.empty()) << "with the reason";
  auto res = e->search("subject:kept", {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 2u);
  EXPECT_EQ(e->search("is:unindexed", {}).value().total, 1u);
}

TEST(DataLock, SecondWriterIsRefusedNamingTheHolder) {
  test::ScratchDir dir;
  auto first = DataLock::acquire(dir.path(), "serve");
  ASSERT_TRUE(first.ok());
  auto second = DataLock::acquire(dir.path(), "import");
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().context.find("`mailark serve` (pid " + std::to_string(::getpid())), std::string::npos)
      << second.error().context;
  EngineOptions o;
  o.data_dir = dir.path();
  auto writer = Engine::open(o);
  EXPECT_FALSE(writer.ok()) << "a writing engine needs the lock";
  o.writer = "";  // the queue and quarantine commands
  EXPECT_TRUE(Engine::open(o).ok());
  first->reset();
  EXPECT_TRUE(DataLock::acquire(dir.path(), "import").ok()) << "released with its holder";
}

}  // namespace
}  // namespace mailark
