#include "engine/engine.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "engine/index_fields.h"
#include "engine/ingest.h"
#include "indexer/schema.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

struct Counts {
  int archived = 0, duplicate = 0, refused = 0, failed = 0, infected = 0;
  std::vector<IngestResult> results;
};

Counts ingest(Engine& e, const std::vector<std::string>& raws, bool scan = true) {
  Counts c;
  const scanner::Scanner* s = nullptr;
  if (scan) s = e.scanner().value();
  IngestOptions opts;
  opts.train_after = 0;
  Ingest in(e.archive(), *e.index_writer().value(), s, e.options().limits, opts, [&](const IngestResult& r) {
    c.results.push_back(r);
    switch (r.outcome) {
      case IngestOutcome::kArchived:
        c.archived++;
        break;
      case IngestOutcome::kDuplicate:
        c.duplicate++;
        break;
      case IngestOutcome::kRefused:
        c.refused++;
        break;
      case IngestOutcome::kFailed:
      case IngestOutcome::kDeferred:  // not for an import (it archives what the scanner failed on, unscanned)
        c.failed++;
        break;
    }
    if (r.verdict == scanner::VerdictKind::kInfected) c.infected++;
  });
  int n = 0;
  for (const auto& raw : raws) {
    IngestItem item;
    item.origin = "test#" + std::to_string(++n);
    item.raw = raw;
    item.envelope.received_at = 1000000000;
    in.submit(std::move(item));
  }
  EXPECT_TRUE(in.finish().ok());
  return c;
}

std::unique_ptr<Engine> open(const std::string& dir, bool read_only = false) {
  EngineOptions o;
  o.data_dir = dir;
  o.read_only = read_only;
  o.signature_dirs = {test::signature_dir()};
  auto e = Engine::open(o);
  EXPECT_TRUE(e.ok()) << (e.ok() ? "" : e.error().to_string());
  return std::move(e).value();
}

// What a crash between the two commits leaves: records in the archive that the index never saw.
void append_without_index(const std::string& dir, const std::vector<std::string>& raws) {
  auto archive = Archive::open(dir + "/archive", Limits{}, false).value();
  std::vector<PendingAppend> batch;
  for (const auto& raw : raws) {
    PendingAppend p;
    p.content_sha256 = sha256(raw);
    p.raw_size = raw.size();
    p.frame = archive->codec()->compress(raw).value();
    p.dict_id = archive->codec()->active_dictionary();
    p.verdict.kind = scanner::VerdictKind::kClean;
    batch.push_back(std::move(p));
  }
  ASSERT_TRUE(archive->append(batch).ok());
}

std::vector<std::string> messages(int n, const std::string& word) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i)
    v.push_back(test::make_message(word + " " + std::to_string(i), "body of " + word));
  return v;
}

// The store of a cut whose batch never committed (segment-N.mdb past the head, not in the table) is
// removed by the next writer that holds the data lock; a writer beside a running server (no lock:
// `segments policy`) and a reader leave it, and the stores the table names stay.
TEST(Engine, AStoreOfACutThatNeverCommittedIsRemovedByTheNextLockedWriter) {
  test::ScratchDir dir;
  const auto raws = messages(5, "berth");
  {
    auto a = Archive::open(dir.path() + "/archive", Limits{}, false);
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE((*a)->set_segment_policy({SegmentPeriod::kMonth, 2}).ok());
  }
  append_without_index(dir.path(), raws);  // records 1-5: segments from 1, 3 and 5
  const std::string archive = dir.path() + "/archive";
  const std::string stray = archive + "/segment-6.mdb", later = archive + "/segment-40.mdb";
  std::filesystem::copy_file(archive + "/segment-5.mdb", stray);
  std::filesystem::copy_file(archive + "/segment-5.mdb", later);
  { std::ofstream(stray + "-lock") << "lock"; }
  {
    EngineOptions beside;
    beside.data_dir = dir.path();
    beside.writer = "";  // as `segments policy` beside a server
    beside.signature_dirs = {test::signature_dir()};
    auto e = Engine::open(beside);
    ASSERT_TRUE(e.ok()) << e.error().to_string();
  }
  { auto ro = open(dir.path(), /*read_only=*/true); }
  EXPECT_TRUE(std::filesystem::exists(stray)) << "neither a writer without the lock nor a reader removes it";
  EXPECT_TRUE(std::filesystem::exists(later));
  auto e = open(dir.path());
  EXPECT_FALSE(std::filesystem::exists(stray));
  EXPECT_FALSE(std::filesystem::exists(stray + "-lock"));
  EXPECT_FALSE(std::filesystem::exists(later));
  for (const char* kept : {"/segment-1.mdb", "/segment-3.mdb", "/segment-5.mdb"})
    EXPECT_TRUE(std::filesystem::exists(archive + kept)) << kept;
  for (std::uint64_t id = 1; id <= 5; ++id) {
    auto rec = e->archive().record(id);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ(*e->archive().raw(*rec), raws[id - 1]);
  }
}

TEST(Engine, ImportedMessagesAreArchivedIndexedAndSearchable) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  Counts c = ingest(*e, messages(20, "harbour"));
  EXPECT_EQ(c.archived, 20);
  auto res = e->search("harbour", indexer::SearchOptions{0, 5});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 20u);
  EXPECT_EQ(res->hits.size(), 5u);
}

TEST(Engine, MessagesGetIdsInSubmissionOrder) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  Counts c = ingest(*e, messages(200, "ordered"));
  for (const auto& r : c.results) EXPECT_EQ("test#" + std::to_string(r.seq), r.origin);
}

TEST(Engine, ReimportAddsNothing) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  auto msgs = messages(30, "again");
  EXPECT_EQ(ingest(*e, msgs).archived, 30);
  Counts second = ingest(*e, msgs);
  EXPECT_EQ(second.archived, 0);
  EXPECT_EQ(second.duplicate, 30);
  EXPECT_EQ(e->archive().head().seq, 30u);
}

TEST(Engine, InfectedMessageIsArchivedAndQuarantinedNotDropped) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  Counts c = ingest(*e, {test::make_message("bad", "attached", "eicar.com", test::kEicar)});
  EXPECT_EQ(c.archived, 1);
  EXPECT_EQ(c.infected, 1);
  auto rec = e->archive().record(1);
  ASSERT_TRUE(rec.ok());
  EXPECT_TRUE(rec->flags & kFlagQuarantined);
  EXPECT_EQ(rec->verdict.kind, scanner::VerdictKind::kInfected);
  auto res = e->search("verdict:infected is:quarantined", {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 1u);
}

TEST(Engine, NonMailIsRefusedAndTheRestGoesOn) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  std::vector<std::string> in = messages(3, "fine");
  in.insert(in.begin() + 1, std::string("\x89PNG\r\n\x1a\nbinary", 14));
  in.insert(in.begin() + 2, "");
  Counts c = ingest(*e, in);
  EXPECT_EQ(c.archived, 3);
  EXPECT_EQ(c.refused, 2);
}

TEST(Engine, IndexCatchesUpAfterACrashBetweenArchiveAndIndexCommits) {
  test::ScratchDir dir;
  {
    auto e = open(dir.path());
    ingest(*e, messages(10, "before"));
  }
  // The crash: records reach the archive, the process dies before the index commits them.
  append_without_index(dir.path(), messages(5, "afterwards"));
  {
    auto stale = open(dir.path(), /*read_only=*/true);
    EXPECT_EQ(stale->archive().head().seq, 15u);
  }
  auto e = open(dir.path());  // read-write open catches up
  EXPECT_EQ(e->index_watermark(), 15u);
  auto res = e->search("afterwards", {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 5u);
}

TEST(Engine, ReadOnlySearchCatchesUpALaggingIndex) {
  test::ScratchDir dir;
  {
    auto e = open(dir.path());
    ingest(*e, messages(3, "first"));
  }
  append_without_index(dir.path(), {test::make_message("lagging", "not yet indexed")});
  auto e = open(dir.path(), /*read_only=*/true);
  auto res = e->search("lagging", {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->total, 1u);
}

TEST(Engine, ReindexRebuildsTheSameResults) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  ingest(*e, messages(25, "rebuild"));
  auto before = e->search("rebuild", indexer::SearchOptions{0, 100});
  ASSERT_TRUE(before.ok());
  auto n = e->reindex(nullptr);
  ASSERT_TRUE(n.ok()) << n.error().to_string();
  EXPECT_EQ(*n, 25u);
  auto after = e->search("rebuild", indexer::SearchOptions{0, 100});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->total, before->total);
  for (std::size_t i = 0; i < after->hits.size(); ++i) EXPECT_EQ(after->hits[i].id, before->hits[i].id);
}

// The index keeps the texts of a message that a MIME parser must decode (quoted-printable, base64, an
// attachment), so that a phrase check of it reads neither the archive nor GMime; a plain message's
// are read from the archive as cheaply and are not kept. An import and a reindex build the same.
TEST(Engine, TextsOfMessagesThatNeedAMimeParserAreKeptInTheIndex) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  const std::string head = "From: a@example.com\nTo: b@example.com\nDate: Tue, 15 May 2001 10:00:00 +0000\nMIME-Version: 1.0\n";
  const std::vector<std::string> raws = {
      test::make_message("plain", "the power crisis in plain words"),
      head + "Subject: qp\nMessage-ID: <qp@example.com>\nContent-Type: text/plain; charset=utf-8\n"
             "Content-Transfer-Encoding: quoted-printable\n\nthe power =\ncrisis, caf=C3=A9\n",
      head + "Subject: b64\nMessage-ID: <b64@example.com>\nContent-Type: text/plain\n"
             "Content-Transfer-Encoding: base64\n\ndGhlIHBvd2VyIGNyaXNpcyBpbiBiYXNlNjQ=\n",
      test::make_message("attached", "see the file", "crisis.txt", "no power here"),
  };
  ASSERT_EQ(ingest(*e, raws).archived, 4);
  auto check = [&](const char* when) {
    auto res = e->search("\"power crisis\"", indexer::SearchOptions{0, 10});
    ASSERT_TRUE(res.ok());
    std::vector<std::uint64_t> got;
    for (const auto& h : res->hits) got.push_back(h.id);
    EXPECT_EQ(got, (std::vector<std::uint64_t>{3, 2, 1})) << when;
    Xapian::Database db(dir.path() + "/index");
    auto kept = [&](std::uint64_t id) -> std::optional<indexer::IndexFields> {
      Xapian::PostingIterator p = db.postlist_begin(std::string(indexer::schema::kPrefixId) + std::to_string(id));
      EXPECT_NE(p, db.postlist_end(std::string(indexer::schema::kPrefixId) + std::to_string(id))) << id;
      return indexer::decode_kept_texts(db.get_document(*p).get_value(indexer::schema::kSlotTexts));
    };
    EXPECT_FALSE(kept(1)) << when << ": a plain message is read from the archive";
    auto qp = kept(2);
    ASSERT_TRUE(qp) << when;
    EXPECT_EQ(qp->subject, "qp");
    EXPECT_NE(qp->body.find("the power crisis, caf\xC3\xA9"), std::string::npos) << qp->body;
    auto b64 = kept(3);
    ASSERT_TRUE(b64) << when;
    EXPECT_NE(b64->body.find("the power crisis in base64"), std::string::npos) << b64->body;
    auto att = kept(4);
    ASSERT_TRUE(att) << when;
    ASSERT_EQ(att->attachments.size(), 1u);
    EXPECT_EQ(att->attachments[0].name, "crisis.txt");
  };
  check("after the import");
  ASSERT_TRUE(e->reindex(nullptr).ok());
  check("after reindex");
}

TEST(Engine, FirstImportTrainsADictionaryFromItsOwnMail) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  EXPECT_EQ(e->archive().codec()->active_dictionary(), 0u);
  IngestOptions opts;
  opts.train_after = 300;
  opts.dictionary_bytes = 16 * 1024;
  {
    Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, opts, nullptr);
    for (int i = 0; i < 600; ++i) {
      IngestItem item;
      item.raw =
          test::make_message("status report " + std::to_string(i),
                             "Weekly status of the Rotterdam terminal, crane " + std::to_string(i % 7));
      in.submit(std::move(item));
    }
    ASSERT_TRUE(in.finish().ok());
  }
  EXPECT_EQ(e->archive().codec()->active_dictionary(), 1u);
  ArchiveCounters c = e->archive().counters();
  EXPECT_EQ(c.records, 600u);
  EXPECT_GT(static_cast<double>(c.unique_raw_bytes) / static_cast<double>(c.stored_bytes), 4.0);
}

}  // namespace
}  // namespace mailark

namespace mailark {
namespace {

TEST(Engine, DeliveriesAreQueuedWithTheirRecordAndInfectedOnesAreNot) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  IngestOptions opts;
  opts.train_after = 0;
  opts.linger_ms = 0;
  std::vector<IngestResult> done;
  std::mutex mu;
  {
    Ingest in(e->archive(), *e->index_writer().value(), e->scanner().value(), e->options().limits, opts, nullptr);
    for (const std::string& raw : {test::make_message("hello", "fine"), test::make_message("hello", "fine"),
                                   test::make_message("bad", "x", "e.com", test::kEicar)}) {
      IngestItem item;
      item.raw = raw;
      item.envelope.direction = Direction::kInbound;
      item.envelope.rcpt_to = {"bob@example.com"};
      QueueEntry q;
      q.route = Route::kPrimary;
      q.recipients = {{"bob@example.com"}};
      item.queue = q;
      item.on_done = [&](const IngestResult& r) {
        std::lock_guard lock(mu);
        done.push_back(r);
      };
      in.submit(std::move(item));
    }
    ASSERT_TRUE(in.finish().ok());
  }
  ASSERT_EQ(done.size(), 3u);
  std::sort(done.begin(), done.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
  EXPECT_EQ(done[0].outcome, IngestOutcome::kArchived);
  EXPECT_TRUE(done[0].queued);
  EXPECT_EQ(done[1].outcome, IngestOutcome::kArchived) << "the same bytes delivered twice are two records";
  EXPECT_TRUE(done[1].queued);
  EXPECT_EQ(done[2].verdict, scanner::VerdictKind::kInfected);
  EXPECT_FALSE(done[2].queued);
  auto q = e->archive().queue_entries();
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 2u);
  EXPECT_EQ((*q)[0].seq, 1u);
  EXPECT_EQ((*q)[1].seq, 2u);
  EXPECT_EQ(e->archive().counters().blobs, 2u);
}

TEST(Engine, TimedIndexCommitsMakeMailSearchableBeforeTheEnd) {
  test::ScratchDir dir;
  auto e = open(dir.path());
  IngestOptions opts;
  opts.train_after = 0;
  opts.linger_ms = 0;
  opts.index_commit_interval_ms = 50;
  Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, opts, nullptr);
  std::promise<void> stored;
  IngestItem item;
  item.raw = test::make_message("searchable soon", "while the pipeline runs");
  item.on_done = [&](const IngestResult&) { stored.set_value(); };
  in.submit(std::move(item));
  stored.get_future().wait();
  // Poll a separate reader until the timed commit lands (bounded: 200 x 25 ms).
  std::uint64_t total = 0;
  for (int i = 0; i < 200 && total == 0; ++i) {
    auto r = indexer::IndexReader::open(dir / "index");
    if (r.ok()) {
      auto res = (*r)->search("searchable", {}, nullptr);
      if (res.ok()) total = res->total;
    }
    if (total == 0) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(total, 1u);
  ASSERT_TRUE(in.finish().ok());
}

}  // namespace
}  // namespace mailark
