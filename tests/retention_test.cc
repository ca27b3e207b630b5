// Retention (engine/retention.h): the policy and its minimum, expiry of whole closed segments with
// legal holds kept, signed tombstones, and verify across them (engine/archive.h Archive::expire).
#include "engine/retention.h"

#include <gtest/gtest.h>
#include <lmdb.h>
#include <xapian.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>

#include "engine/checkpoint.h"
#include "engine/engine.h"
#include "engine/ingest.h"
#include "engine/verify.h"
#include "indexer/schema.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

using test::open_engine;

// Archives each message as inbound SMTP mail (every delivery its own record, even of the same bytes).
void deliver(Engine& e, const std::vector<std::string>& raws) {
  IngestOptions opts;
  opts.train_after = 0;
  Ingest in(e.archive(), *e.index_writer().value(), nullptr, e.options().limits, opts, [](const IngestResult& r) {
    EXPECT_EQ(r.outcome, IngestOutcome::kArchived) << r.reason;
  });
  int n = 0;
  for (const auto& raw : raws) {
    IngestItem item;
    item.origin = "smtp#" + std::to_string(++n);
    item.raw = raw;
    item.envelope.direction = Direction::kInbound;
    item.envelope.connector = "mx";
    item.envelope.mail_from = "sender@example.net";
    item.envelope.rcpt_to = {n % 2 ? "ana@corp.example" : "bo@sales.corp.example"};
    item.envelope.received_at = 1000000000;
    in.submit(std::move(item));
  }
  ASSERT_TRUE(in.finish().ok());
}

std::uint64_t count(Engine& e, const std::string& query) {
  indexer::SearchOptions o;
  o.exact_total = true;
  auto r = e.search(query, o);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().to_string());
  return r.ok() ? r->total : 0;
}

TEST(Retention, RulesParseAndTheLongestMatchingRuleWins) {
  EXPECT_EQ(parse_retention_days("7y").value(), 2555);
  EXPECT_EQ(parse_retention_days("90d").value(), 90);
  EXPECT_FALSE(parse_retention_days("-1").ok());
  EXPECT_FALSE(parse_retention_days("1000y").ok());
  EXPECT_FALSE(parse_retention_days("").ok());
  auto r = parse_retention_rule("inbound,domain=Corp.Example:1y").value();
  EXPECT_EQ(r.direction, "inbound");
  EXPECT_EQ(r.domain, "corp.example");
  EXPECT_EQ(r.days, 365);
  EXPECT_FALSE(parse_retention_rule("30").ok());
  EXPECT_FALSE(parse_retention_rule("sideways:30").ok());
  EXPECT_FALSE(parse_retention_rule("inbound:0").ok());
  EXPECT_FALSE(parse_retention_rule(":30").ok());
  EXPECT_FALSE(parse_retention_rule("domain=a@b:30").ok());

  RetentionPolicy p;
  p.default_days = 3650;
  p.rules = {parse_retention_rule("inbound:400").value(), parse_retention_rule("domain=sales.corp.example:2000").value()};
  ArchiveRecord rec;
  rec.envelope.direction = Direction::kInbound;
  rec.envelope.rcpt_to = {"ana@corp.example"};
  EXPECT_EQ(retention_days(p, rec), 400);
  rec.envelope.rcpt_to = {"bo@SALES.corp.example"};
  EXPECT_EQ(retention_days(p, rec), 2000) << "the longest of the matching rules";
  rec.envelope.rcpt_to = {"x@notsales.corp.example"};
  EXPECT_EQ(retention_days(p, rec), 400) << "a domain matches itself and its subdomains only";
  rec.envelope.direction = Direction::kOutbound;
  EXPECT_EQ(retention_days(p, rec), 3650);
  p.default_days = 0;
  EXPECT_EQ(retention_days(p, rec), 0) << "0: forever";
}

TEST(Retention, TheMinimumIsNeverShortened) {
  test::ScratchDir dir;
  auto a = Archive::open(dir / "archive", Limits{}, false).value();
  EXPECT_TRUE(retention_policy(*a).value().empty());
  RetentionPolicy p;
  p.minimum_days = 365;
  p.default_days = 2555;
  ASSERT_TRUE(set_retention_policy(*a, p).ok());
  RetentionPolicy shorter = p;
  shorter.minimum_days = 300;
  auto refused = set_retention_policy(*a, shorter);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().context.find("can never be shortened"), std::string::npos) << refused.error().context;
  RetentionPolicy short_rule = p;
  short_rule.rules = {parse_retention_rule("outbound:30").value()};
  EXPECT_FALSE(set_retention_policy(*a, short_rule).ok()) << "a rule below the minimum";
  RetentionPolicy short_default = p;
  short_default.default_days = 100;
  EXPECT_FALSE(set_retention_policy(*a, short_default).ok()) << "a default below the minimum";
  RetentionPolicy longer = p;
  longer.minimum_days = 400;
  ASSERT_TRUE(set_retention_policy(*a, longer).ok());
  a.reset();
  a = Archive::open(dir / "archive", Limits{}, true).value();
  EXPECT_EQ(retention_policy(*a).value().minimum_days, 400) << "kept in the archive";
}

// Ten deliveries in segments of four: [1-4] [5-8] [9-10 live]. Record 2 is held (it holds "zebra");
// record 3's bytes are delivered again as record 10, in the live segment.
struct Fixture {
  test::ScratchDir dir;
  std::unique_ptr<Engine> engine;
  SigningKey key = archive_signing_key(dir.path(), true).value();
  std::vector<std::string> raws;
  std::string checkpoint_note;
  Checkpoint checkpoint;

  std::unique_ptr<test::SmallTmpfs> index_disk;  // the index's own file system, when asked for

  // `shape` may change the ten messages before they are delivered; `index_disk_bytes` puts the index
  // on a file system of that size.
  explicit Fixture(const std::function<void(std::vector<std::string>&)>& shape = {}, std::size_t index_disk_bytes = 0) {
    if (index_disk_bytes) index_disk = std::make_unique<test::SmallTmpfs>(dir / "index", index_disk_bytes);
    engine = open_engine(dir.path());
    EXPECT_TRUE(engine->archive().set_segment_policy({SegmentPeriod::kNone, 4}).ok());
    for (int i = 1; i <= 9; ++i)
      raws.push_back(test::make_message("report " + std::to_string(i), i == 2 ? "the zebra file" : "quarterly figures " + std::to_string(i), {}, {},
                                        "<m" + std::to_string(i) + "@example.net>"));
    raws.push_back(raws[2]);
    if (shape) shape(raws);
    deliver(*engine, raws);
    auto snap = engine->archive().snapshot().value();
    auto signed_cp = sign_checkpoint(*snap, key, 1700000000).value();
    checkpoint = signed_cp.checkpoint;
  }

  Result<RetentionReport> run(std::vector<std::string> held, bool dry_run = false) {
    RetentionPolicy p;
    p.default_days = 30;
    RetentionOptions o;
    o.now = std::time(nullptr) + 31 * 86400;
    o.dry_run = dry_run;
    o.by = "test";
    o.held_queries = std::move(held);
    o.key = &key;
    return run_retention(*engine, p, o);
  }
  // The run as a server's pass makes it, without reading older segments again first (what it does
  // when that cannot be done: no room for a shard's copy, a record that does not read).
  Result<RetentionReport> run_as_is(std::vector<std::string> held) {
    RetentionPolicy p;
    p.default_days = 30;
    RetentionOptions o;
    o.now = std::time(nullptr) + 31 * 86400;
    o.by = "test";
    o.held_queries = std::move(held);
    o.key = &key;
    RetentionContext ctx;
    ctx.archive = &engine->archive();
    ctx.index_dir = engine->index_dir();
    ctx.search = [this](const std::string& q, const indexer::SearchOptions& so) { return engine->search(q, so); };
    ctx.index_watermark = engine->index_watermark();
    return run_retention(ctx, p, o);
  }

  // What a retention pass does first: reads again the sealed segments an older release indexed, or
  // left with gaps (reread_older_segments).
  Result<RereadReport> reread() {
    RetentionContext ctx;
    ctx.archive = &engine->archive();
    ctx.index_dir = engine->index_dir();
    return reread_older_segments(ctx);
  }

  VerifyReport verify(bool with_key = true) {
    VerifyOptions o;
    o.checkpoints = {checkpoint};
    if (with_key) o.tombstone_key = key.public_key();
    auto rep = verify_archive(engine->archive(), nullptr, o);
    EXPECT_TRUE(rep.ok());
    return rep.ok() ? *rep : VerifyReport{};
  }
};

// A legal hold is a case's searches OR'ed, its custodians in each: past the bounds of one typed
// query (indexer/index.h kMaxQueryTerms) for a case of many, and still held, not refused.
TEST(Retention, AHoldPastOneQuerysBoundsStillHolds) {
  Fixture f;
  std::string held = "zebra";
  for (std::size_t i = 0; i < indexer::kMaxQueryTerms + 100; ++i) held += " OR custodian:c" + std::to_string(i) + "@example.com";
  auto dry = f.run({held}, /*dry_run=*/true);
  ASSERT_TRUE(dry.ok()) << dry.error().to_string();
  EXPECT_EQ(dry->held, 1u);
  EXPECT_EQ(dry->expirable, 7u);
}

// An expired segment's index is written again beside itself only with room for the copy and the free
// space the index keeps (limits.index_min_free_bytes: a commit that meets a full disk can end the
// process, indexer/index.h IndexWriter::set_min_free_bytes). The archive's expiry stands; the next
// run writes the index.
TEST(Retention, AnExpiredSegmentsIndexIsWrittenOnlyWithRoomForItsCopy) {
  Fixture f({}, 64u << 20);  // the index keeps 4 MiB of it free (a sixteenth)
  REQUIRE_TMPFS(*f.index_disk);
  f.index_disk->fill(2u << 20);
  auto short_of_room = f.run({"zebra"});
  ASSERT_FALSE(short_of_room.ok());
  EXPECT_EQ(short_of_room.error().code, ErrorCode::kIo);
  EXPECT_NE(short_of_room.error().context.find("is always left free"), std::string::npos)
      << short_of_room.error().context;
  f.index_disk->free();
  auto rep = f.run({"zebra"});
  ASSERT_TRUE(rep.ok()) << rep.error().to_string();
  EXPECT_EQ(rep->index_documents_rebuilt, 1u) << "the held record 2, alone in its segment's new index";
  EXPECT_EQ(count(*f.engine, "zebra"), 1u);
  EXPECT_EQ(count(*f.engine, "quarterly"), 2u) << "records 9 and 10, in the live segment";
}

TEST(Retention, ExpiryRemovesWhatIsDueKeepsWhatIsHeldAndVerifies) {
  Fixture f;
  ASSERT_EQ(f.engine->archive().segments().size(), 3u);
  // Not yet due: nothing happens.
  {
    RetentionOptions o;
    o.now = std::time(nullptr);
    o.key = &f.key;
    auto early = run_retention(*f.engine, RetentionPolicy{0, 30, {}}, o).value();
    EXPECT_EQ(early.due, 0u);
  }
  auto dry = f.run({"zebra"}, /*dry_run=*/true).value();
  EXPECT_EQ(dry.due, 8u);
  EXPECT_EQ(dry.held, 1u);
  EXPECT_EQ(dry.expired, 0u);
  EXPECT_EQ(dry.expirable, 7u) << "what the run below removes";
  EXPECT_TRUE(f.engine->archive().record(1).ok()) << "a dry run removes nothing";

  auto rep = f.run({"zebra"}).value();
  EXPECT_EQ(rep.expired, 7u);
  EXPECT_EQ(rep.held, 1u);
  ASSERT_EQ(rep.segments.size(), 2u);
  ASSERT_TRUE(rep.segments[0].outcome.has_value());
  EXPECT_EQ(rep.segments[0].outcome->blobs_carried, 2u) << "record 2 (held) and record 3's bytes (held by record 10)";
  EXPECT_FALSE(rep.segments[0].outcome->store_removed);
  EXPECT_TRUE(rep.segments[1].outcome->store_removed) << "nothing of segment 5-8 is left";
  EXPECT_FALSE(std::filesystem::exists(f.engine->archive().store_path(5)));

  Archive& a = f.engine->archive();
  for (std::uint64_t s : {1, 3, 4, 5, 6, 7, 8}) {
    auto r = a.record(s);
    ASSERT_FALSE(r.ok()) << s;
    EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
    EXPECT_NE(r.error().context.find("removed by retention"), std::string::npos) << r.error().context;
  }
  for (std::uint64_t s : {2, 9, 10}) {
    auto r = a.record(s);
    ASSERT_TRUE(r.ok()) << s;
    auto raw = a.raw(*r);
    ASSERT_TRUE(raw.ok()) << raw.error().to_string();
    EXPECT_EQ(*raw, f.raws[s - 1]);
  }
  std::vector<std::uint64_t> scanned;
  ASSERT_TRUE(a.scan(1, [&](const ArchiveRecord& r, std::string_view) { scanned.push_back(r.seq); return true; },
                     [](std::uint64_t, const Error&) { return false; })
                  .ok());
  EXPECT_EQ(scanned, (std::vector<std::uint64_t>{2, 9, 10}));

  // The chain and the tree are proved across the gaps, and a checkpoint signed before still holds.
  VerifyReport v = f.verify();
  EXPECT_TRUE(v.intact) << v.problem;
  EXPECT_EQ(v.records_checked, 3u);
  EXPECT_EQ(v.records_expired, 7u);
  EXPECT_EQ(v.tombstones, 2u);
  ASSERT_EQ(v.checkpoints.size(), 1u);
  EXPECT_TRUE(v.checkpoints[0].holds) << v.checkpoints[0].problem;
  EXPECT_FALSE(f.verify(/*with_key=*/false).intact) << "tombstones need the key to be believed";

  // A second run finds nothing more to do; a later one, with the hold released, removes record 2.
  EXPECT_EQ(f.run({"zebra"}).value().expired, 0u);
  EXPECT_EQ(f.run({}).value().expired, 1u);
  EXPECT_FALSE(a.record(2).ok());
  EXPECT_TRUE(a.raw(a.record(10).value()).ok()) << "record 3's bytes, carried forward, are still held by record 10";
  v = f.verify();
  EXPECT_TRUE(v.intact) << v.problem;
  EXPECT_EQ(v.tombstones, 3u);

  // After a reopen, as before.
  f.engine.reset();
  f.engine = open_engine(f.dir.path());
  v = f.verify();
  EXPECT_TRUE(v.intact) << v.problem;
  EXPECT_EQ(v.records_expired, 8u);
}

// The fixture with record 7 (segment 5-8) a second delivery of record 3's bytes (stored in segment
// 1-4's pack) and record 10 a message of its own. Both segments expire in one run: the newer first, so
// record 3's bytes have no holder left when segment 1-4 expires and are not carried into the live
// segment (oldest first carried them there, to be dropped from the blob index right after while
// their bytes stayed in the live store).
TEST(Retention, ExpiryNewestFirstCarriesOnlyWhatOutlivesTheRun) {
  Fixture f([](std::vector<std::string>& raws) {
    raws[6] = raws[2];
    raws[9] = test::make_message("report 10", "quarterly figures 10", {}, {}, "<m10@example.net>");
  });
  Archive& a = f.engine->archive();
  ASSERT_EQ(a.segments().size(), 3u);
  auto rep = f.run({}).value();
  EXPECT_EQ(rep.expired, 8u);
  ASSERT_EQ(rep.segments.size(), 2u);
  EXPECT_EQ(rep.segments[0].first, 1u) << "reported oldest first";
  ASSERT_TRUE(rep.segments[0].outcome && rep.segments[1].outcome);
  EXPECT_EQ(rep.segments[0].outcome->blobs_carried + rep.segments[1].outcome->blobs_carried, 0u)
      << "nothing was carried into the live segment";
  EXPECT_TRUE(rep.segments[0].outcome->store_removed);
  EXPECT_TRUE(rep.segments[1].outcome->store_removed);
  EXPECT_EQ(a.counters().blobs, 2u) << "records 9 and 10";
  for (std::uint64_t s : {9, 10}) EXPECT_EQ(a.raw(a.record(s).value()).value(), f.raws[s - 1]);
  VerifyReport v = f.verify();
  EXPECT_TRUE(v.intact) << v.problem;
  EXPECT_EQ(v.records_expired, 8u);
}

TEST(Retention, ExpiredMessagesLeaveTheIndex) {
  Fixture f;
  EXPECT_EQ(count(*f.engine, "quarterly"), 8u);
  ASSERT_TRUE(f.run({"zebra"}).ok());
  EXPECT_EQ(count(*f.engine, "quarterly"), 2u) << "records 9 and 10";
  EXPECT_EQ(count(*f.engine, "zebra"), 1u) << "the held message is still found";
  EXPECT_EQ(count(*f.engine, "report"), 3u);
}

// The shard directories of the index's first segment (at the top of DATA/index), the engine closed.
std::vector<std::string> first_segment_shards(const std::string& data_dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(data_dir + "/index"))
    if (e.is_directory() && e.path().filename().string().rfind("shard", 0) == 0) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A hold is a search of the index, so what the index cannot answer for is kept while any hold
// stands: a segment whose documents an older release read (a word it wrote otherwise: the hold's
// search may miss it) waits until it is read again (SegmentsAnOlderReleaseIndexedAreReadAgain; here
// a run that could not, run_as_is) or `mailark reindex`, and a record the index could not read (a
// placeholder, is:unindexed) is held.
TEST(Retention, WhatAHoldsSearchCannotJudgeIsKept) {
  {
    Fixture f;
    ASSERT_TRUE(f.run({"zebra"}, /*dry_run=*/true).ok());  // seals the closed segments
    f.engine.reset();
    const auto shards = first_segment_shards(f.dir.path());
    ASSERT_FALSE(shards.empty());
    for (const auto& path : shards) {
      SCOPED_TRACE(path);
      Xapian::WritableDatabase db(path, Xapian::DB_OPEN | Xapian::DB_NO_TERMLIST);
      db.set_metadata(indexer::schema::kMetaReading, "3");  // as the release before read it
      db.commit();
    }
    f.engine = open_engine(f.dir.path());
    auto rep = f.run_as_is({"zebra"});
    ASSERT_TRUE(rep.ok()) << rep.error().to_string();
    ASSERT_EQ(rep->segments.size(), 2u);
    EXPECT_NE(rep->segments[0].skipped.find("an older release read"), std::string::npos) << rep->segments[0].skipped;
    EXPECT_EQ(rep->expired, 4u) << "segment 5-8, of this release's reading, expires";
    EXPECT_TRUE(f.engine->archive().record(1).ok());
    auto without_holds = f.run({}, /*dry_run=*/true).value();
    EXPECT_EQ(without_holds.expirable, 4u) << "no hold, nothing to miss: 1, 2, 3 and 4 would expire";
    ASSERT_TRUE(f.engine->reindex(nullptr).ok());
    rep = f.run({"zebra"});
    ASSERT_TRUE(rep.ok()) << rep.error().to_string();
    EXPECT_EQ(rep->expired, 3u) << "after the reindex: 1, 3 and 4; 2 is held";
    EXPECT_TRUE(f.engine->archive().record(2).ok());
  }
  {
    Fixture f;
    auto segments = indexer::index_segments(f.engine->index_dir()).value();
    ASSERT_FALSE(segments.empty());
    const unsigned n = segments[0].shards;
    f.engine.reset();
    // The index written again with record 1 a placeholder (as for a record that does not decode),
    // committed past the watermark: the engine's catch-up adds every other record and keeps it (the
    // first document of shard 0).
    std::filesystem::remove_all(f.dir / "index");
    {
      auto w = indexer::IndexWriter::open(f.dir / "index", n);
      ASSERT_TRUE(w.ok()) << w.error().to_string();
      ASSERT_TRUE((*w)->add(1, indexer::build_unindexed_document(1, "a test's placeholder")).ok());
      ASSERT_TRUE((*w)->commit(0).ok());
    }
    f.engine = open_engine(f.dir.path());
    EXPECT_EQ(count(*f.engine, "is:unindexed"), 1u);
    EXPECT_EQ(count(*f.engine, "zebra"), 1u);
    EXPECT_EQ(count(*f.engine, "quarterly"), 7u) << "8 with record 1 indexed (ExpiredMessagesLeaveTheIndex)";
    auto rep = f.run({"zebra"});
    ASSERT_TRUE(rep.ok()) << rep.error().to_string();
    EXPECT_EQ(rep->held, 2u) << "2 (zebra) and 1 (unread by the index)";
    EXPECT_EQ(rep->expired, 6u);
    EXPECT_TRUE(f.engine->archive().record(1).ok());
    EXPECT_EQ(f.run({}).value().expired, 2u) << "no hold: 1 and 2 expire";
  }
}

// The documents an expiry keeps are built again from the archive: the segment's index is then of
// this release's reading, whatever it was before (else a later hold would wait for a reindex it does
// not need, and `stats` would count them).
TEST(Retention, AnExpiredSegmentsIndexIsBuiltWithThisReading) {
  Fixture f;
  ASSERT_TRUE(f.run({"zebra"}, /*dry_run=*/true).ok());  // seals the closed segments
  f.engine.reset();
  for (const auto& path : first_segment_shards(f.dir.path())) {
    Xapian::WritableDatabase db(path, Xapian::DB_OPEN | Xapian::DB_NO_TERMLIST);
    db.set_metadata(indexer::schema::kMetaReading, "3");
    db.commit();
  }
  const std::string index = f.dir / "index";
  EXPECT_EQ(indexer::index_segments(index).value()[0].older_reading, 4u);
  auto built = indexer::expire_segment_documents(index, 1, {2, 3}, [](std::uint64_t id) {
    return indexer::build_unindexed_document(id, "rebuilt by the test");
  });
  ASSERT_TRUE(built.ok()) << built.error().to_string();
  EXPECT_EQ(*built, 2u);
  EXPECT_EQ(indexer::index_segments(index).value()[0].older_reading, 0u);
}

// After an upgrade that changes the reading, the sealed segments an older release indexed are read
// again from the archive (no reindex of the whole archive, no server stopped): searches and holds then
// judge them, and a retention run goes on expiring.
TEST(Retention, SegmentsAnOlderReleaseIndexedAreReadAgain) {
  Fixture f;
  ASSERT_TRUE(f.run({"zebra"}, /*dry_run=*/true).ok());  // seals the closed segments
  f.engine.reset();
  const std::string index = f.dir / "index";
  const auto before = indexer::index_segments(index).value();
  for (const auto& path : first_segment_shards(f.dir.path())) {
    Xapian::WritableDatabase db(path, Xapian::DB_OPEN | Xapian::DB_NO_TERMLIST);
    db.set_metadata(indexer::schema::kMetaReading, "3");  // as the release before read it
    db.commit();
  }
  EXPECT_EQ(indexer::index_segments(index).value()[0].older_reading, 4u);
  f.engine = open_engine(f.dir.path());
  const auto zebra = count(*f.engine, "zebra"), quarterly = count(*f.engine, "quarterly");
  auto rep = f.reread();
  ASSERT_TRUE(rep.ok()) << rep.error().to_string();
  EXPECT_EQ(rep->segments, 1u);
  EXPECT_EQ(rep->documents, 4u);
  EXPECT_TRUE(rep->left.empty());
  const auto after = indexer::index_segments(index).value();
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].older_reading, 0u) << i;
    EXPECT_EQ(after[i].documents, before[i].documents) << i;
    EXPECT_TRUE(after[i].sealed || i + 1 == after.size()) << i;
  }
  EXPECT_EQ(count(*f.engine, "zebra"), zebra) << "the same documents, read again";
  EXPECT_EQ(count(*f.engine, "quarterly"), quarterly);
  EXPECT_EQ(f.reread().value().segments, 0u) << "nothing left to read again";
  // A retention run under a hold expires what it left before (WhatAHoldsSearchCannotJudgeIsKept): 1,
  // 3 and 4 of the first segment, 5-8 of the second; 2 is held.
  auto run = f.run({"zebra"});
  ASSERT_TRUE(run.ok()) << run.error().to_string();
  EXPECT_EQ(run->expired, 7u);
  EXPECT_TRUE(f.engine->archive().record(2).ok());
}

// The retention of an earlier release left expired records out of a sealed segment's shards, which
// left gaps in their ids, where Xapian cannot search a term every document holds
// (indexer/index.h build_expired_document; IndexExpiry.ASegmentThatLostDocumentsIsSearchedWhole).
// This release writes placeholders; a segment with gaps is found and written whole again from the
// archive, as one an older release read.
TEST(Retention, ASegmentAnEarlierReleaseExpiredIsWrittenWithoutGaps) {
  Fixture f;
  auto run = f.run({"zebra", "\"report 3\""});
  ASSERT_TRUE(run.ok()) << run.error().to_string();
  EXPECT_EQ(run->expired, 6u) << "1 and 4 of the first segment, 5-8 of the second";
  const std::string index = f.dir / "index";
  EXPECT_EQ(indexer::index_segments(index).value()[0].gaps, 0u) << "written whole, with placeholders";
  EXPECT_EQ(indexer::index_segments(index).value()[0].documents, 2u);
  const auto report = count(*f.engine, "report");
  EXPECT_EQ(report, 3u) << "2, 3 and 9 (10 is a copy of 3)";
  f.engine.reset();
  // As the release before wrote it: shard 0 of the first segment (records 1 and 3) holds record 3
  // alone, at its document id 2.
  const std::string shard0 = first_segment_shards(f.dir.path()).at(0);
  {
    Xapian::Database old(shard0);
    Xapian::WritableDatabase db(shard0 + ".old", Xapian::DB_CREATE | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
    for (auto key = old.metadata_keys_begin(); key != old.metadata_keys_end(); ++key)
      db.set_metadata(*key, old.get_metadata(*key));
    db.replace_document(2, indexer::build_unindexed_document(3, "as the release before wrote it"));
    db.commit();
  }
  std::filesystem::remove_all(shard0);
  std::filesystem::rename(shard0 + ".old", shard0);
  EXPECT_EQ(indexer::index_segments(index).value()[0].gaps, 1u);
  f.engine = open_engine(f.dir.path());
  auto rep = f.reread();
  ASSERT_TRUE(rep.ok()) << rep.error().to_string();
  EXPECT_EQ(rep->segments, 1u);
  EXPECT_EQ(rep->documents, 2u) << "records 2 and 3";
  EXPECT_TRUE(rep->left.empty());
  EXPECT_EQ(indexer::index_segments(index).value()[0].gaps, 0u);
  EXPECT_EQ(count(*f.engine, "report"), report);
  EXPECT_EQ(count(*f.engine, "is:unindexed"), 0u);
  EXPECT_EQ(f.reread().value().segments, 0u) << "nothing left to write";
}

// `mailark reindex` after an expiry builds every segment from the archive, which passes over the
// expired records: their ids get placeholders there too (IndexExpiry.IdsPassedOverArePlaceholders).
TEST(Retention, AReindexAfterAnExpiryLeavesNoGaps) {
  Fixture f;
  ASSERT_TRUE(f.run({"zebra", "\"report 3\""}).ok());
  auto n = f.engine->reindex(nullptr);
  ASSERT_TRUE(n.ok()) << n.error().to_string();
  const auto segs = indexer::index_segments(f.dir / "index").value();
  ASSERT_FALSE(segs.empty());
  EXPECT_EQ(segs[0].gaps, 0u) << "record 1 expired, 3 kept, in the same shard";
  EXPECT_EQ(segs[0].documents, 2u);
  EXPECT_EQ(count(*f.engine, "report"), 3u) << "2, 3 and 9 (10 is a copy of 3)";
  EXPECT_EQ(count(*f.engine, ""), 3u);
}

// The live segment's shards are the writer's, so its older documents are not read again in place:
// the report counts them (a server then closes the live segment at its next message), and once closed
// and sealed the segment is read again as any other.
TEST(Retention, TheLiveSegmentsOlderDocumentsAreReadOnceItIsClosed) {
  Fixture f;
  ASSERT_TRUE(f.run({"zebra"}, /*dry_run=*/true).ok());  // seals the closed segments
  f.engine.reset();
  const std::string index = f.dir / "index";
  ASSERT_EQ(indexer::index_segments(index).value().back().first, 9u);
  for (unsigned i = 0; i < 2; ++i) {
    Xapian::WritableDatabase db(index + "/segment-9/shard" + std::to_string(i), Xapian::DB_OPEN | Xapian::DB_NO_TERMLIST);
    db.set_metadata(indexer::schema::kMetaReading, "3");  // as the release before read it
    db.commit();
  }
  f.engine = open_engine(f.dir.path());
  auto rep = f.reread();
  ASSERT_TRUE(rep.ok()) << rep.error().to_string();
  EXPECT_EQ(rep->segments, 0u) << "the live segment is not written beside its writer";
  EXPECT_EQ(rep->live_older, 2u);
  // As a server's pass does: the live segment closes at the next message.
  f.engine->archive().close_live_segment_at_next_append();
  deliver(*f.engine, {test::make_message("report 11", "after the upgrade", {}, {}, "<m11@example.net>"),
                      test::make_message("report 12", "after the upgrade", {}, {}, "<m12@example.net>")});
  auto segs = f.engine->archive().segments();
  ASSERT_EQ(segs.size(), 4u);
  EXPECT_EQ(segs[2].last, 10u) << "closed at the next message, before its four";
  EXPECT_EQ(segs[3].first, 11u);
  ASSERT_TRUE(indexer::seal_closed_segments(index).ok());
  rep = f.reread();
  ASSERT_TRUE(rep.ok()) << rep.error().to_string();
  EXPECT_EQ(rep->segments, 1u);
  EXPECT_EQ(rep->documents, 2u);
  EXPECT_EQ(rep->live_older, 0u);
  for (const auto& ix : indexer::index_segments(index).value()) EXPECT_EQ(ix.older_reading, 0u) << ix.first;
  EXPECT_EQ(count(*f.engine, "upgrade"), 2u);
}

// The CLI's retention run reads such segments again itself before it searches the holds.
TEST(Retention, ARunReadsOlderSegmentsAgainFirst) {
  Fixture f;
  ASSERT_TRUE(f.run({"zebra"}, /*dry_run=*/true).ok());
  f.engine.reset();
  for (const auto& path : first_segment_shards(f.dir.path())) {
    Xapian::WritableDatabase db(path, Xapian::DB_OPEN | Xapian::DB_NO_TERMLIST);
    db.set_metadata(indexer::schema::kMetaReading, "3");
    db.commit();
  }
  f.engine = open_engine(f.dir.path());
  auto dry = f.run({"zebra"}, /*dry_run=*/true);
  ASSERT_TRUE(dry.ok());
  EXPECT_EQ(dry->reread.segments, 0u) << "a dry run writes nothing";
  EXPECT_EQ(indexer::index_segments(f.dir / "index").value()[0].older_reading, 4u);
  auto rep = f.run({"zebra"});
  ASSERT_TRUE(rep.ok()) << rep.error().to_string();
  EXPECT_EQ(rep->reread.segments, 1u);
  EXPECT_EQ(rep->expired, 7u);
  EXPECT_TRUE(f.engine->archive().record(2).ok());
}

TEST(Retention, AHoldOfEverythingKeepsEverything) {
  Fixture f;
  auto rep = f.run({""}).value();
  EXPECT_EQ(rep.due, 8u);
  EXPECT_EQ(rep.held, 8u);
  EXPECT_EQ(rep.expired, 0u);
  EXPECT_TRUE(f.engine->archive().record(1).ok());
}

// A write transaction straight on an archive's main environment (as someone with the file could),
// the archive closed.
template <typename F>
void in_main_environment(const std::string& archive_dir, F&& fn) {
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  mdb_env_set_mapsize(env, std::size_t{1} << 30);
  ASSERT_EQ(mdb_env_open(env, archive_dir.c_str(), 0, 0640), 0);
  MDB_txn* txn = nullptr;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  fn(txn);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

TEST(Retention, AChangedTombstoneOrExpiredMarkIsFound) {
  Fixture f;
  ASSERT_TRUE(f.run({"zebra"}).ok());
  const std::string archive_dir = f.engine->archive_dir();
  f.engine.reset();
  // One byte of the first tombstone's body changed (its reason): the signature no longer holds.
  in_main_environment(archive_dir, [](MDB_txn* txn) {
    MDB_dbi dbi = 0;
    ASSERT_EQ(mdb_dbi_open(txn, "tombstones", 0, &dbi), 0);
    std::string key(8, '\0');
    key[7] = 1;
    MDB_val k{key.size(), key.data()}, v;
    ASSERT_EQ(mdb_get(txn, dbi, &k, &v), 0);
    std::string value(static_cast<const char*>(v.mv_data), v.mv_size);
    const auto at = value.find("retention policy");
    ASSERT_NE(at, std::string::npos);
    value[at] = 'R';
    MDB_val nv{value.size(), value.data()};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &nv, 0), 0);
  });
  f.engine = open_engine(f.dir.path());
  VerifyReport v = f.verify();
  EXPECT_FALSE(v.intact);
  EXPECT_NE(v.problem.find("tombstone 1"), std::string::npos) << v.problem;
  f.engine.reset();

  // A record marked expired that no tombstone names (someone hiding a message): found.
  Fixture g;
  ASSERT_TRUE(g.run({"zebra"}).ok());
  const std::string gdir = g.engine->archive_dir();
  g.engine.reset();
  in_main_environment(gdir, [](MDB_txn* txn) {
    MDB_dbi dbi = 0;
    ASSERT_EQ(mdb_dbi_open(txn, "expired", 0, &dbi), 0);
    std::string key(8, '\0'), value(16, '\0');
    key[7] = 9;    // record 9, in the live segment
    value[7] = 9;
    value[15] = 1;
    MDB_val k{key.size(), key.data()}, v{value.size(), value.data()};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
  });
  g.engine = open_engine(g.dir.path());
  v = g.verify();
  EXPECT_FALSE(v.intact);
  EXPECT_NE(v.problem.find("no tombstone says so"), std::string::npos) << v.problem;
}

TEST(Retention, AnInterruptedExpiryIsFinishedAtTheNextOpen) {
  Fixture f;
  const std::string store = f.engine->archive().store_path(1);
  const std::string saved = f.dir / "segment-1.before";
  std::filesystem::copy_file(store, saved);
  ASSERT_TRUE(f.run({"zebra"}).ok());
  f.engine.reset();
  // A crash before the swap: the old store, with every record, is still in place.
  std::filesystem::permissions(store, std::filesystem::perms::owner_write, std::filesystem::perm_options::add);
  std::filesystem::copy_file(saved, store, std::filesystem::copy_options::overwrite_existing);
  {
    auto ro = Archive::open(f.dir / "archive", Limits{}, true).value();
    EXPECT_FALSE(ro->record(1).ok()) << "an expired record is never read, whatever its store still holds";
    std::vector<std::uint64_t> scanned;
    ASSERT_TRUE(ro->scan(1, [&](const ArchiveRecord& r, std::string_view) { scanned.push_back(r.seq); return true; },
                         [](std::uint64_t, const Error&) { return false; })
                    .ok());
    EXPECT_EQ(scanned, (std::vector<std::uint64_t>{2, 9, 10}));
  }
  const auto before = std::filesystem::file_size(store);
  {
    auto rw = Archive::open(f.dir / "archive", Limits{}, false).value();  // finish_expiries
  }
  EXPECT_LT(std::filesystem::file_size(store), before) << "rewritten without the expired records";
  f.engine = open_engine(f.dir.path());
  VerifyReport v = f.verify();
  EXPECT_TRUE(v.intact) << v.problem;
}


// Record 2 stays held while the segment its bytes were carried into (9-12) expires in turn: they are
// carried again, into the next live segment, and still read.
TEST(Retention, CarriedMessagesAreCarriedAgain) {
  Fixture f;
  ASSERT_EQ(f.run({"zebra"}).value().expired, 7u);  // record 2's bytes go into segment 9's pack
  std::vector<std::string> more;
  for (int i = 11; i <= 14; ++i)
    more.push_back(test::make_message("report " + std::to_string(i), "quarterly figures " + std::to_string(i), {}, {},
                                      "<m" + std::to_string(i) + "@example.net>"));
  deliver(*f.engine, more);  // 9-12 closes, 13-14 is live
  ASSERT_EQ(f.engine->archive().segments().size(), 4u);
  auto rep = f.run({"zebra"}).value();
  EXPECT_EQ(rep.expired, 4u) << "9 to 12";
  Archive& a = f.engine->archive();
  auto r2 = a.record(2);
  ASSERT_TRUE(r2.ok());
  auto raw = a.raw(*r2);
  ASSERT_TRUE(raw.ok()) << raw.error().to_string();
  EXPECT_EQ(*raw, f.raws[1]);
  EXPECT_FALSE(std::filesystem::exists(a.store_path(9))) << "nothing of 9-12 is left";
  VerifyReport v = f.verify();
  EXPECT_TRUE(v.intact) << v.problem;
  EXPECT_EQ(v.records_expired, 11u);
  EXPECT_EQ(count(*f.engine, "zebra"), 1u);
}

}  // namespace
}  // namespace mailark
