#include "engine/archive.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <lmdb.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "common/encoding.h"
#include "engine/checkpoint.h"
#include "engine/record.h"
#include "engine/verify.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

PendingAppend pending(const Archive& a, const std::string& raw) {
  PendingAppend p;
  p.envelope.direction = Direction::kInbound;
  p.envelope.mail_from = "alice@example.com";
  p.envelope.rcpt_to = {"bob@example.com"};
  p.envelope.received_at = 1700000000;
  p.verdict.kind = scanner::VerdictKind::kClean;
  p.content_sha256 = sha256(raw);
  p.raw_size = raw.size();
  auto codec = a.codec();
  p.dict_id = codec->active_dictionary();
  p.frame = codec->compress(raw).value();
  return p;
}

// A message as `mailark import` archives it (a custodian's mailbox copy).
PendingAppend imported(const Archive& a, const std::string& raw, const std::string& custodian) {
  PendingAppend p = pending(a, raw);
  p.envelope.direction = Direction::kImport;
  p.envelope.custodian = custodian;
  p.envelope.folder = custodian.empty() ? "" : "Inbox/Projects";
  return p;
}

std::unique_ptr<Archive> open_archive(const std::string& dir) {
  auto a = Archive::open(dir, Limits{}, false);
  EXPECT_TRUE(a.ok()) << (a.ok() ? "" : a.error().to_string());
  return std::move(a).value();
}

std::vector<std::string> sample_messages(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i)
    v.push_back(test::make_message("message " + std::to_string(i), "body " + std::to_string(i)));
  return v;
}

void append_all(Archive& a, const std::vector<std::string>& raws) {
  std::vector<PendingAppend> batch;
  for (const auto& r : raws) batch.push_back(pending(a, r));
  ASSERT_TRUE(a.append(batch).ok());
}

// Rewrites one stored value through LMDB itself, as an attacker with write access to the file would.
void tamper(const std::string& dir, const char* table, const std::string& key,
            const std::function<void(std::string&)>& change, bool remove = false) {
  // Records and packs are in the first segment's store (a single-segment archive), the rest in the
  // main environment.
  const bool in_store = std::string_view(table) == "records" || std::string_view(table) == "blobs";
  const std::string path = in_store ? dir + "/segment-1.mdb" : dir;
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  mdb_env_set_mapsize(env, std::size_t{1} << 30);
  ASSERT_EQ(mdb_env_open(env, path.c_str(), in_store ? MDB_NOSUBDIR : 0, 0640), 0);
  MDB_txn* txn;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi dbi;
  ASSERT_EQ(mdb_dbi_open(txn, table, 0, &dbi), 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
  ASSERT_EQ(mdb_get(txn, dbi, &k, &v), 0);
  if (remove) {
    ASSERT_EQ(mdb_del(txn, dbi, &k, nullptr), 0);
  } else {
    std::string value(static_cast<const char*>(v.mv_data), v.mv_size);
    change(value);
    MDB_val nv{value.size(), value.data()};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &nv, 0), 0);
  }
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

// verify_archive must find the chain intact, with `records` records.
void expect_intact(const Archive& a, std::uint64_t records) {
  auto report = verify_archive(a, nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->intact) << report->problem;
  EXPECT_EQ(report->records_checked, records);
}

// Record i + 1 reads back as raws[message_of[i]] (message_of empty: raws[i]).
void expect_reads_back(const Archive& a, const std::vector<std::string>& raws, const std::vector<int>& message_of = {}) {
  const std::size_t n = message_of.empty() ? raws.size() : message_of.size();
  for (std::uint64_t seq = 1; seq <= n; ++seq) {
    auto r = a.record(seq);
    ASSERT_TRUE(r.ok()) << seq << ": " << r.error().to_string();
    auto raw = a.raw(*r);
    ASSERT_TRUE(raw.ok()) << seq << ": " << raw.error().to_string();
    EXPECT_EQ(*raw, raws[message_of.empty() ? seq - 1 : message_of[seq - 1]]) << seq;
  }
}

std::string seq_key(std::uint64_t seq) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(seq >> (56 - 8 * i));
  return s;
}

TEST(Archive, AppendedMessagesReadBackByteForByte) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  auto raws = sample_messages(50);
  append_all(*a, raws);
  EXPECT_EQ(a->head().seq, 50u);
  for (std::uint64_t seq = 1; seq <= 50; ++seq) {
    auto rec = a->record(seq);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ(rec->envelope.rcpt_to, std::vector<std::string>{"bob@example.com"});
    auto raw = a->raw(*rec);
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(*raw, raws[seq - 1]);
  }
  EXPECT_EQ(a->record(51).error().code, ErrorCode::kNotFound);
}

TEST(Archive, RecordsSurviveReopen) {
  test::ScratchDir dir;
  auto raws = sample_messages(3);
  {
    auto a = open_archive(dir.path());
    append_all(*a, raws);
  }
  auto a = open_archive(dir.path());
  EXPECT_EQ(a->head().seq, 3u);
  EXPECT_EQ(a->raw(a->record(2).value()).value(), raws[1]);
}

TEST(Archive, IdenticalMessageIsStoredOnceButEachDeliveryGetsARecord) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  std::string raw = test::make_message("same", "same body");
  append_all(*a, {raw, raw, raw});
  ArchiveCounters c = a->counters();
  EXPECT_EQ(c.records, 3u);
  EXPECT_EQ(c.blobs, 1u);
  EXPECT_EQ(c.raw_bytes, 3 * raw.size());
  EXPECT_EQ(c.unique_raw_bytes, raw.size());
}

TEST(Archive, ImportOfAnArchivedMessageAddsNoRecord) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  std::string raw = test::make_message("once", "body");
  std::vector<PendingAppend> batch{imported(*a, raw, ""), imported(*a, raw, "")};
  auto out = a->append(batch);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE((*out)[0].duplicate);
  EXPECT_TRUE((*out)[1].duplicate) << "a duplicate within the same batch is found too";
  EXPECT_EQ(a->head().seq, 1u);
}


std::vector<std::uint64_t> copies(const Archive& a, const std::string& raw) {
  auto s = a.snapshot();
  auto c = (*s)->copies(sha256(raw));
  EXPECT_TRUE(c) << c.error().to_string();
  return c ? *c : std::vector<std::uint64_t>{};
}

// Makes the archive in `dir` look as an older release left it: `table` dropped whole (which tamper()
// cannot), the meta keys `gone` removed, the format marker `format`.
void as_older_format(const std::string& dir, std::uint32_t format, const char* table, std::vector<std::string> gone = {}) {
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0640), 0);
  MDB_txn* txn;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi dropped, meta;
  ASSERT_EQ(mdb_dbi_open(txn, table, 0, &dropped), 0);
  ASSERT_EQ(mdb_drop(txn, dropped, 1), 0);
  ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  for (auto& key : gone) {
    MDB_val k{key.size(), key.data()};
    ASSERT_EQ(mdb_del(txn, meta, &k, nullptr), 0);
  }
  std::string fk = "format", fv(4, '\0');
  fv[3] = static_cast<char>(format);
  MDB_val k{fk.size(), fk.data()}, v{fv.size(), fv.data()};
  ASSERT_EQ(mdb_put(txn, meta, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

TEST(Custody, EachCustodiansCopyIsARecordOverOneStoredMessage) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  const std::string raw = test::make_message("held twice", "body"), other = test::make_message("other", "body");
  std::vector<PendingAppend> batch{imported(*a, raw, "alice"), imported(*a, raw, "Bob Example"),
                                   imported(*a, raw, "ALICE"), imported(*a, raw, ""), imported(*a, other, "alice"),
                                   imported(*a, raw, "bob example")};
  auto out = a->append(batch);
  ASSERT_TRUE(out) << out.error().to_string();
  std::vector<bool> dup;
  for (const auto& o : *out) dup.push_back(o.duplicate);
  EXPECT_EQ(dup, (std::vector<bool>{false, false, true, false, false, true}))
      << "a custodian holds a message once (names compared without case), within one batch too";
  EXPECT_EQ(a->counters().records, 4u);
  EXPECT_EQ(a->counters().blobs, 2u) << "the bytes are stored once";
  EXPECT_EQ(copies(*a, raw), (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(copies(*a, other), (std::vector<std::uint64_t>{4}));
  EXPECT_TRUE(a->has_copy(sha256(raw), imported(*a, raw, "Alice").envelope));
  EXPECT_FALSE(a->has_copy(sha256(raw), imported(*a, raw, "carol").envelope));
  EXPECT_FALSE(a->has_copy(sha256(other), imported(*a, other, "").envelope));
  // Each record says whose copy it is (record v2), read back after a reopen.
  a.reset();
  a = open_archive(dir.path());
  auto r2 = a->record(2);
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->envelope.custodian, "Bob Example");
  EXPECT_EQ(r2->envelope.folder, "Inbox/Projects");
  EXPECT_EQ(custodians_of(*r2), (std::vector<std::string>{"Bob Example"}));
  auto held = a->copies_of(*r2);
  ASSERT_TRUE(held);
  ASSERT_EQ(held->size(), 3u);
  EXPECT_EQ((*held)[0].envelope.custodian, "alice");
  EXPECT_EQ((*held)[2].envelope.custodian, "");
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep);
  EXPECT_TRUE(rep->intact) << rep->problem;
}

TEST(Custody, EveryDeliveryOfTheSameBytesIsARecordAndACopy) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  const std::string raw = test::make_message("delivered twice", "body");
  append_all(*a, {raw, raw});
  std::vector<PendingAppend> batch{imported(*a, raw, "")};
  ASSERT_TRUE(a->append(batch));
  EXPECT_EQ(copies(*a, raw), (std::vector<std::uint64_t>{1, 2, 3}))
      << "SMTP deliveries are events of their own; an import is the mailbox's copy";
  auto r1 = a->record(1);
  EXPECT_EQ(custodians_of(*r1), (std::vector<std::string>{"bob@example.com"})) << "inbound: the recipients";
}

TEST(Custody, AnArchiveWithoutHoldingsGetsThemWhenOpenedForWriting) {
  test::ScratchDir dir;
  const std::string raw = test::make_message("old", "body");
  {
    auto a = open_archive(dir.path());
    append_all(*a, {raw, raw});
    std::vector<PendingAppend> batch{imported(*a, raw, ""), imported(*a, raw, "alice")};
    ASSERT_TRUE(a->append(batch));
    for (int i = 0; i < 40; ++i) append_all(*a, {test::make_message("more " + std::to_string(i), "b")});
  }
  // As a format 6 archive: no holdings table, no meta "holdings", the marker 6.
  as_older_format(dir.path(), 6, "holdings", {"holdings"});
  {
    auto ro = Archive::open(dir.path(), Limits{}, /*read_only=*/true);
    ASSERT_TRUE(ro);
    EXPECT_EQ((*ro)->format(), 6u);
    EXPECT_EQ(copies(**ro, raw), std::vector<std::uint64_t>{}) << "read-only: no holdings to read";
    EXPECT_FALSE((*(*ro)->snapshot())->has_copies_index());
    auto rec = (*ro)->record(2);
    auto held = (*ro)->copies_of(*rec);
    ASSERT_TRUE(held);
    ASSERT_EQ(held->size(), 1u) << "a record is always its own copy";
  }
  auto a = open_archive(dir.path());
  EXPECT_EQ(a->format(), kArchiveFormat);
  EXPECT_TRUE((*a->snapshot())->has_copies_index());
  EXPECT_EQ(copies(*a, raw), (std::vector<std::uint64_t>{1, 2, 3, 4}));
  std::vector<PendingAppend> again{imported(*a, raw, "Alice"), imported(*a, raw, "bob")};
  auto out = a->append(again);
  ASSERT_TRUE(out);
  EXPECT_TRUE((*out)[0].duplicate) << "the rebuilt holdings know alice's copy";
  EXPECT_FALSE((*out)[1].duplicate);
  EXPECT_EQ(copies(*a, raw), (std::vector<std::uint64_t>{1, 2, 3, 4, 45}));
}

TEST(Archive, TwoDifferentMessagesWithTheSameMessageIdAreTwoRecords) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  std::vector<PendingAppend> batch{imported(*a, test::make_message("one", "first", {}, {}, "same@id"), ""),
                                   imported(*a, test::make_message("two", "second", {}, {}, "same@id"), "")};
  auto out = a->append(batch);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE((*out)[1].duplicate);
  EXPECT_EQ(a->head().seq, 2u);
}

TEST(Archive, DictionaryTrainedLaterKeepsOldRecordsReadable) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  auto first = sample_messages(20);
  append_all(*a, first);
  std::vector<std::string> samples;
  for (int i = 0; i < 400; ++i)
    samples.push_back(test::make_message("sample " + std::to_string(i), std::string(200, 'a' + i % 26)));
  auto dict = train_dictionary(samples, 8 * 1024);
  ASSERT_TRUE(dict.ok()) << dict.error().to_string();
  auto id = a->add_dictionary(*dict);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(a->codec()->active_dictionary(), *id);
  auto later = std::vector<std::string>{test::make_message("after dict", "compressed with the dictionary")};
  append_all(*a, later);
  EXPECT_EQ(a->raw(a->record(1).value()).value(), first[0]);
  EXPECT_EQ(a->raw(a->record(21).value()).value(), later[0]);
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->intact) << rep->problem;
}

TEST(Archive, DictionariesAreCheckedOnOpenAndBuiltOnFirstUse) {
  std::vector<std::string> samples;
  for (int i = 0; i < 400; ++i)
    samples.push_back(test::make_message("sample " + std::to_string(i), std::string(200, 'a' + i % 26)));
  auto dict = train_dictionary(samples, 8 * 1024);
  ASSERT_TRUE(dict.ok());
  // Its tables are built lazily, from several threads at once: each gets the same, and round trips.
  auto codec = Codec::create({{1, *dict}}, 1);
  ASSERT_TRUE(codec.ok());
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string raw = test::make_message("thread " + std::to_string(t), std::string(300, 'q'));
      auto frame = (*codec)->compress(raw);
      if (!frame.ok()) return;
      auto back = (*codec)->decompress(1, *frame, raw.size(), raw.size());
      if (back.ok() && *back == raw) good++;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 4);
  // A damaged dictionary is still refused when the archive opens, not at the first message.
  std::string bad = *dict;
  bad[0] ^= 0x55;  // its magic number
  auto broken = Codec::create({{1, *dict}, {2, bad}}, 1);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().context.find("dictionary 2"), std::string::npos) << broken.error().context;
}

TEST(Verify, IntactArchiveVerifies) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  append_all(*a, sample_messages(30));
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->intact) << rep->problem;
  EXPECT_EQ(rep->records_checked, 30u);
  EXPECT_EQ(rep->head.seq, 30u);
}

TEST(Verify, ChangedEnvelopeByteIsReportedWithItsRecord) {
  test::ScratchDir dir;
  {
    auto a = open_archive(dir.path());
    append_all(*a, sample_messages(10));
  }
  tamper(dir.path(), "records", seq_key(7), [](std::string& v) {
    std::size_t at = v.find("bob@example.com");
    v[at] = 'B';
  });
  auto a = open_archive(dir.path());
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep.ok());
  EXPECT_FALSE(rep->intact);
  EXPECT_EQ(rep->first_bad, 7u);
  EXPECT_NE(rep->problem.find("changed"), std::string::npos) << rep->problem;
}

TEST(Verify, ChangedMessageBytesAreReported) {
  test::ScratchDir dir;
  {
    auto a = open_archive(dir.path());
    append_all(*a, sample_messages(5));
  }
  // Flip a byte near the end of the first pack: that is inside the last message's zstd frame.
  tamper(dir.path(), "blobs", seq_key(1), [](std::string& v) { v[v.size() - 6] ^= 0x20; });
  auto a = open_archive(dir.path());
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep.ok());
  EXPECT_FALSE(rep->intact);
  EXPECT_EQ(rep->first_bad, 5u) << rep->problem;
}

TEST(Verify, RemovedRecordIsReported) {
  test::ScratchDir dir;
  {
    auto a = open_archive(dir.path());
    append_all(*a, sample_messages(10));
  }
  tamper(dir.path(), "records", seq_key(4), nullptr, /*remove=*/true);
  auto a = open_archive(dir.path());
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep.ok());
  EXPECT_FALSE(rep->intact);
  EXPECT_EQ(rep->first_bad, 4u);
  EXPECT_NE(rep->problem.find("missing"), std::string::npos) << rep->problem;
}

TEST(Verify, RemovedLastRecordIsReported) {
  test::ScratchDir dir;
  {
    auto a = open_archive(dir.path());
    append_all(*a, sample_messages(10));
  }
  tamper(dir.path(), "records", seq_key(10), nullptr, /*remove=*/true);
  auto a = open_archive(dir.path());
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep.ok());
  EXPECT_FALSE(rep->intact);
  EXPECT_EQ(rep->first_bad, 10u) << rep->problem;
}

TEST(Verify, SwappedRecordsAreReported) {
  test::ScratchDir dir;
  {
    auto a = open_archive(dir.path());
    append_all(*a, sample_messages(10));
  }
  std::string v3, v4;
  tamper(dir.path(), "records", seq_key(3), [&](std::string& v) { v3 = v; });
  tamper(dir.path(), "records", seq_key(4), [&](std::string& v) {
    v4 = v;
    v = v3;
  });
  tamper(dir.path(), "records", seq_key(3), [&](std::string& v) { v = v4; });
  auto a = open_archive(dir.path());
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep.ok());
  EXPECT_FALSE(rep->intact);
  EXPECT_EQ(rep->first_bad, 3u) << rep->problem;
}

// The tree rebuilt from the records' stored values, as an outside verifier would.
Digest root_from_records(const ArchiveSnapshot& s, std::uint64_t size) {
  merkle::Frontier f;
  for (std::uint64_t seq = 1; seq <= size; ++seq) {
    auto v = s.record_value(seq);
    EXPECT_TRUE(v) << seq;
    if (!v) return {};
    f.push(merkle::leaf_hash(*v));
  }
  return f.root();
}

TEST(Tree, TheMerkleTreeGrowsWithEveryAppendAndProvesEveryRecord) {
  test::ScratchDir dir;
  std::uint64_t total = 0;
  int n = 0;
  for (int batch : {1, 2, 5, 17, 1, 31}) {
    auto a = open_archive(dir.path());  // reopened between batches: the tree goes on from the stored one
    std::vector<std::string> raws;
    for (int i = 0; i < batch; ++i) raws.push_back(test::make_message("tree " + std::to_string(n++), "body"));
    append_all(*a, raws);
    total += batch;
    auto snap = a->snapshot();
    ASSERT_TRUE(snap);
    const ArchiveSnapshot& s = **snap;
    ASSERT_EQ(s.tree_size(), total);
    ASSERT_EQ(s.head().seq, total);
    auto root = merkle::root(total, s.tree_nodes());
    ASSERT_TRUE(root) << root.error().context;
    EXPECT_EQ(*root, root_from_records(s, total)) << total;
    for (std::uint64_t seq = 1; seq <= total; ++seq) {
      auto proof = merkle::inclusion_proof(seq - 1, total, s.tree_nodes());
      ASSERT_TRUE(proof);
      EXPECT_TRUE(merkle::verify_inclusion(seq - 1, total, merkle::leaf_hash(*s.record_value(seq)), *proof, *root));
    }
    EXPECT_EQ(s.archive_id().size(), 32u);
  }
}

TEST(Tree, AnArchiveWithoutATreeGetsOneWhenOpenedForWriting) {
  test::ScratchDir dir;
  Digest root;
  std::string id;
  {
    auto a = open_archive(dir.path());
    append_all(*a, sample_messages(23));
    auto s = a->snapshot();
    root = *merkle::root(23, (*s)->tree_nodes());
    id = (*s)->archive_id();
  }
  // As a format 5 archive: no tree, the marker 5.
  as_older_format(dir.path(), 5, "merkle");
  {
    auto ro = Archive::open(dir.path(), Limits{}, /*read_only=*/true);
    ASSERT_TRUE(ro);
    EXPECT_EQ((*ro)->format(), 5u);
    auto s = (*ro)->snapshot();
    EXPECT_FALSE((*s)->has_tree());
    EXPECT_EQ((*s)->tree_size(), 0u);
    EXPECT_FALSE((*s)->tree_node(0, 0));
  }
  auto a = open_archive(dir.path());
  EXPECT_EQ(a->format(), kArchiveFormat);
  auto s = a->snapshot();
  EXPECT_EQ((*s)->tree_size(), 23u);
  EXPECT_EQ(*merkle::root(23, (*s)->tree_nodes()), root) << "the same records make the same tree";
  EXPECT_EQ((*s)->archive_id(), id) << "an id once made is kept";
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep);
  EXPECT_TRUE(rep->intact) << rep->problem;
  EXPECT_EQ(rep->tree_root, root);
}

// Rewrites the archive from record `from` on as an attacker with write access to the files would
// after changing a record: every later record re-linked and re-hashed, the head and the stored tree
// made to match. The chain alone then verifies.
void rewrite_chain(const std::string& dir, std::uint64_t from, std::uint64_t last,
                   const std::function<void(std::string& body)>& change) {
  Digest prev{};
  if (from > 1) tamper(dir, "records", seq_key(from - 1), [&](std::string& v) { std::memcpy(prev.data(), v.data() + v.size() - 32, 32); });
  for (std::uint64_t seq = from; seq <= last; ++seq) {
    tamper(dir, "records", seq_key(seq), [&](std::string& v) {
      std::string body = v.substr(0, v.size() - 32);
      if (seq == from) change(body);
      std::memcpy(body.data() + body.size() - 32, prev.data(), 32);  // prev_hash ends the body
      prev = record_hash(prev, seq, body);
      v = body + std::string(reinterpret_cast<const char*>(prev.data()), 32);
    });
  }
  tamper(dir, "meta", "head", [&](std::string& v) { v = seq_key(last) + std::string(reinterpret_cast<const char*>(prev.data()), 32); });
  // The stored tree, rebuilt over the rewritten records.
  merkle::Frontier f;
  std::vector<Digest> completed;
  for (std::uint64_t seq = 1; seq <= last; ++seq) {
    std::string value;
    tamper(dir, "records", seq_key(seq), [&](std::string& v) { value = v; });
    f.push(merkle::leaf_hash(value), &completed);
    std::string row;
    for (const auto& d : completed) row.append(reinterpret_cast<const char*>(d.data()), 32);
    tamper(dir, "merkle", seq_key(seq), [&](std::string& v) { v = row; });
  }
}

TEST(Verify, ACheckpointCatchesARewrittenChainThatVerifiesAlone) {
  test::ScratchDir dir;
  auto key = SigningKey::from_seed(std::string(32, 'k'));
  ASSERT_TRUE(key);
  Checkpoint signed10;
  {
    auto a = open_archive(dir.path());
    append_all(*a, sample_messages(10));
    auto s = a->snapshot();
    auto cp = sign_checkpoint(**s, *key, 1764500000);
    ASSERT_TRUE(cp) << cp.error().context;
    auto opened = open_checkpoint(cp->note, archive_verifier((*s)->archive_id(), *key), (*s)->archive_id());
    ASSERT_TRUE(opened) << opened.error().context;
    signed10 = *opened;
    EXPECT_EQ(signed10.size, 10u);
    VerifyOptions options{{signed10}};
    auto rep = verify_archive(*a, nullptr, options);
    ASSERT_TRUE(rep);
    EXPECT_TRUE(rep->intact) << rep->problem;
    ASSERT_EQ(rep->checkpoints.size(), 1u);
    EXPECT_TRUE(rep->checkpoints[0].holds);
  }
  // Record 4's sender changed (byte 4 is the first of mail_from), the chain after it rewritten.
  rewrite_chain(dir.path(), 4, 10, [](std::string& body) { body[4] ^= 0x20; });
  auto a = open_archive(dir.path());
  auto alone = verify_archive(*a, nullptr);
  ASSERT_TRUE(alone);
  EXPECT_TRUE(alone->intact) << "the chain and the stored tree were rewritten to match: " << alone->problem;
  auto rep = verify_archive(*a, nullptr, VerifyOptions{{signed10}});
  ASSERT_TRUE(rep);
  EXPECT_FALSE(rep->intact);
  ASSERT_EQ(rep->checkpoints.size(), 1u);
  EXPECT_FALSE(rep->checkpoints[0].holds);
  EXPECT_NE(rep->checkpoints[0].problem.find("rewritten"), std::string::npos) << rep->checkpoints[0].problem;

  // A stored tree left as it was (only the chain rewritten) is caught without any checkpoint.
  rewrite_chain(dir.path(), 2, 10, [](std::string& body) { body[4] ^= 0x20; });
  tamper(dir.path(), "merkle", seq_key(2), [](std::string& v) { v[0] ^= 1; });
  auto tree_bad = verify_archive(*a, nullptr);
  ASSERT_TRUE(tree_bad);
  EXPECT_FALSE(tree_bad->intact);
  EXPECT_EQ(tree_bad->first_bad, 2u) << tree_bad->problem;
}

TEST(Verify, ACheckpointCatchesRecordsCutFromTheEnd) {
  test::ScratchDir dir;
  auto key = SigningKey::from_seed(std::string(32, 'k'));
  Checkpoint signed10, signed7;
  {
    auto a = open_archive(dir.path());
    append_all(*a, sample_messages(7));
    auto s7 = a->snapshot();
    signed7 = sign_checkpoint(**s7, *key, 1).value().checkpoint;
    s7->reset();
    append_all(*a, sample_messages(3));
    auto s = a->snapshot();
    signed10 = sign_checkpoint(**s, *key, 2).value().checkpoint;
  }
  // Records 9 and 10 cut, with their tree rows, and the head set back to record 8: what restoring
  // an older copy of the files looks like.
  std::string head8;
  tamper(dir.path(), "records", seq_key(8), [&](std::string& v) { head8 = seq_key(8) + v.substr(v.size() - 32); });
  for (std::uint64_t seq : {9, 10}) {
    tamper(dir.path(), "records", seq_key(seq), nullptr, /*remove=*/true);
    tamper(dir.path(), "merkle", seq_key(seq), nullptr, /*remove=*/true);
  }
  tamper(dir.path(), "meta", "head", [&](std::string& v) { v = head8; });
  auto a = open_archive(dir.path());
  auto alone = verify_archive(*a, nullptr);
  ASSERT_TRUE(alone);
  EXPECT_TRUE(alone->intact) << alone->problem;
  auto rep = verify_archive(*a, nullptr, VerifyOptions{{signed7, signed10}});
  ASSERT_TRUE(rep);
  EXPECT_FALSE(rep->intact);
  ASSERT_EQ(rep->checkpoints.size(), 2u);
  EXPECT_TRUE(rep->checkpoints[0].holds) << "the first 7 records are those signed: " << rep->checkpoints[0].problem;
  EXPECT_FALSE(rep->checkpoints[1].holds);
  EXPECT_NE(rep->checkpoints[1].problem.find("removed from the end"), std::string::npos) << rep->checkpoints[1].problem;
}

}  // namespace
}  // namespace mailark

namespace mailark {
namespace {

TEST(Queue, EntryIsWrittenWithItsRecordAndOutlivesNothingButItself) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  std::vector<PendingAppend> batch{pending(*a, test::make_message("queued", "body")),
                                   pending(*a, test::make_message("archived only", "body"))};
  QueueEntry q;
  q.route = Route::kPrimary;
  q.recipients = {{"bob@example.com"}, {"carol@example.com"}};
  batch[0].queue = q;
  ASSERT_TRUE(a->append(batch).ok());
  auto entries = a->queue_entries();
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].seq, 1u);
  EXPECT_EQ((*entries)[0].route, Route::kPrimary);
  EXPECT_GT((*entries)[0].created_at, 0);
  ASSERT_EQ((*entries)[0].recipients.size(), 2u);

  ASSERT_TRUE(a->queue_modify(1, [](QueueEntry& e) {
                 e.held = true;
                 return ok_status();
               }).ok());
  auto written = a->queue_apply({{1, "bob@example.com", RecipientState::kDelivered, 0, "250 2.0.0 Ok"},
                                 {1, "carol@example.com", RecipientState::kPending, 123, "451 4.3.0 try later"}});
  ASSERT_TRUE(written.ok());
  auto back = a->queue_entry(1);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->held);
  EXPECT_EQ(back->recipients[0].state, RecipientState::kDelivered);
  EXPECT_EQ(back->recipients[1].last_response, "451 4.3.0 try later");
  EXPECT_EQ(back->recipients[1].attempts, 1u);
  EXPECT_EQ(back->recipients[1].next_attempt_at, 123);
  EXPECT_FALSE(back->finished());

  ASSERT_TRUE(a->queue_remove(1).ok());
  EXPECT_EQ(a->queue_entry(1).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(a->queue_remove(1).error().code, ErrorCode::kNotFound);
  EXPECT_TRUE(a->raw(a->record(1).value()).ok()) << "removing a queue entry never touches the archive";
  auto rep = verify_archive(*a, nullptr);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->intact);
}

TEST(Queue, EntryFormatRejectsDamage) {
  QueueEntry e;
  e.seq = 9;
  e.route = Route::kInternet;
  e.recipients = {{"x@example.org", RecipientState::kBounced, 4, 123, "550 5.1.1 no such user"}};
  std::string v = encode_queue_entry(e);
  auto back = decode_queue_entry(9, v);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->recipients[0].state, RecipientState::kBounced);
  EXPECT_EQ(back->recipients[0].attempts, 4u);
  EXPECT_FALSE(decode_queue_entry(9, v.substr(0, v.size() - 3)).ok());
  v[0] = 7;
  EXPECT_EQ(decode_queue_entry(9, v).error().code, ErrorCode::kUnsupported);
}

TEST(Archive, DeliveryResultNeverUndoesAHold) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  std::vector<PendingAppend> batch{pending(*a, test::make_message("held", "body"))};
  QueueEntry q;
  q.route = Route::kInternet;
  q.recipients = {{"x@remote.example"}, {"y@remote.example"}};
  batch[0].queue = q;
  ASSERT_TRUE(a->append(batch).ok());
  // The delivery agent read the entry (not held), then an administrator held it, then the agent's
  // result for one recipient arrives.
  QueueEntry seen_by_agent = a->queue_entry(1).value();
  ASSERT_FALSE(seen_by_agent.held);
  ASSERT_TRUE(a->queue_modify(1, [](QueueEntry& e) {
                 e.held = true;
                 return ok_status();
               }).ok());
  ASSERT_TRUE(a->queue_apply({{1, "x@remote.example", RecipientState::kPending, 99, "421 busy"}}).ok());
  auto after = a->queue_entry(1).value();
  EXPECT_TRUE(after.held) << "the result changed only its recipient";
  EXPECT_EQ(after.recipients[0].attempts, 1u);
  // A result for a recipient that is no longer pending (delivered meanwhile) changes nothing.
  ASSERT_TRUE(a->queue_apply({{1, "y@remote.example", RecipientState::kDelivered, 0, "250 ok"}}).ok());
  ASSERT_TRUE(a->queue_apply({{1, "y@remote.example", RecipientState::kKept, 0, "550 late"}}).ok());
  EXPECT_EQ(a->queue_entry(1).value().recipients[1].state, RecipientState::kDelivered);
  // An administrator's delete wins over a result arriving later.
  ASSERT_TRUE(a->queue_remove(1).ok());
  ASSERT_TRUE(a->queue_apply({{1, "x@remote.example", RecipientState::kDelivered, 0, "250 ok"}}).ok());
  EXPECT_EQ(a->queue_entry(1).error().code, ErrorCode::kNotFound) << "not recreated";
}

TEST(Archive, DsnIsArchivedOnce) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  std::vector<PendingAppend> batch{pending(*a, test::make_message("to bounce", "body"))};
  QueueEntry q;
  q.route = Route::kInternet;
  q.recipients = {{"gone@remote.example"}};
  batch[0].queue = q;
  ASSERT_TRUE(a->append(batch).ok());
  auto written = a->queue_apply({{1, "gone@remote.example", RecipientState::kFailed, 0, "550 5.1.1 no such user"}});
  ASSERT_TRUE(written.ok());
  ASSERT_EQ(written->size(), 1u);
  EXPECT_EQ((*written)[0].recipients[0].state, RecipientState::kFailed);
  EXPECT_FALSE((*written)[0].finished()) << "a failed recipient waits for its DSN";
  ASSERT_TRUE(a->queue_entry(1).ok());
  // Two DSNs for the same failure reach the archive (a race, or one made again after a crash): the
  // first is archived and marks the failure reported in the same transaction; the second adds nothing.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::vector<PendingAppend> dsn{pending(*a, test::make_message("Undelivered Mail", "dsn " + std::to_string(attempt)))};
    dsn[0].dsn_for = DsnNotice{1, {"gone@remote.example"}};
    QueueEntry to_sender;
    to_sender.route = Route::kPrimary;
    to_sender.recipients = {{"sender@example.com"}};
    dsn[0].queue = to_sender;
    auto out = a->append(dsn);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ((*out)[0].duplicate, attempt == 1) << attempt;
  }
  EXPECT_EQ(a->head().seq, 2u);
  EXPECT_EQ(a->queue_entry(1).error().code, ErrorCode::kNotFound) << "the entry is finished once its DSN is archived";
  EXPECT_EQ(a->queue_entry(2).value().recipients[0].address, "sender@example.com");
}

TEST(Archive, ReleaseQueuesTheMessageAndRecordsTheDecision) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  std::vector<PendingAppend> batch{pending(*a, test::make_message("held back", "body")),
                                   pending(*a, test::make_message("also held", "body"))};
  for (auto& p : batch) {
    QuarantineEntry q;
    q.reason = "encrypted: Heuristics.Encrypted.Zip";
    q.refused = false;
    q.route = Route::kPrimary;
    q.recipients = {"ana@example.com", "ben@example.com"};
    p.quarantine = q;
  }
  ASSERT_TRUE(a->append(batch).ok());
  EXPECT_TRUE(a->queue_entries().value().empty()) << "quarantined mail is not queued";
  ASSERT_EQ(a->quarantine_entries(false).value().size(), 2u);
  auto released = a->quarantine_decide(1, QuarantineStatus::kReleased, "admin");
  ASSERT_TRUE(released.ok()) << released.error().to_string();
  EXPECT_EQ(released->decided_by, "admin");
  EXPECT_GT(released->decided_at, 0);
  auto queued = a->queue_entry(1);
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(queued->route, Route::kPrimary);
  ASSERT_EQ(queued->recipients.size(), 2u);
  EXPECT_EQ(queued->recipients[1].address, "ben@example.com");
  auto again = a->quarantine_decide(1, QuarantineStatus::kDeleted, "someone");
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().context.find("already released by admin"), std::string::npos);
  ASSERT_TRUE(a->quarantine_decide(2, QuarantineStatus::kDeleted, "admin").ok());
  EXPECT_EQ(a->queue_entry(2).error().code, ErrorCode::kNotFound) << "deleting never delivers";
  EXPECT_TRUE(a->quarantine_entries(false).value().empty());
  EXPECT_EQ(a->quarantine_entries(true).value().size(), 2u) << "decisions stay recorded";
  EXPECT_TRUE(a->raw(a->record(2).value()).ok()) << "the archive keeps the message either way";
}

TEST(Queue, VersionOneEntriesStillDecode) {
  // A v1 entry as the first release wrote it: version 1, route 0, not held, created 10, one recipient.
  std::string v1 = std::string("\x01\x00\x00\x14\x01", 5) + std::string("\x0f", 1) + "bob@example.com" +
                   std::string("\x00\x02\x00\x00", 4);
  auto e = decode_queue_entry(3, v1);
  ASSERT_TRUE(e.ok()) << e.error().to_string();
  EXPECT_EQ(e->created_at, 10);
  EXPECT_EQ(e->recipients[0].address, "bob@example.com");
  EXPECT_EQ(e->recipients[0].attempts, 2u);
  std::string bad_state = v1;
  bad_state[5 + 1 + 15] = 3;  // state 3 did not exist in v1
  EXPECT_FALSE(decode_queue_entry(3, bad_state).ok());
}

TEST(Verify, LiveArchiveVerifiesAsOfItsSnapshot) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  append_all(*a, sample_messages(20));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    int n = 0;
    while (!stop) append_all(*a, {test::make_message("live " + std::to_string(n++), "body")});
  });
  // Verify over and over while the writer appends, until it has appended a good number meanwhile.
  int rounds = 0;
  for (; rounds < 5000 && (rounds < 20 || a->head().seq < 40); ++rounds) {
    auto rep = verify_archive(*a, nullptr);
    ASSERT_TRUE(rep.ok());
    ASSERT_TRUE(rep->intact) << rep->problem;
  }
  stop = true;
  writer.join();
  EXPECT_GT(a->head().seq, 20u) << "the writer did append meanwhile";
}

TEST(Archive, SnapshotIsOneMomentWhileAppendsGoOn) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  append_all(*a, sample_messages(5));
  auto snap = a->snapshot();
  ASSERT_TRUE(snap.ok());
  append_all(*a, sample_messages(5));
  EXPECT_EQ((*snap)->head().seq, 5u);
  EXPECT_EQ((*snap)->counters().records, 5u);
  EXPECT_EQ((*snap)->record(6).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(a->head().seq, 10u);
}

}  // namespace
}  // namespace mailark

namespace mailark {
namespace {

std::vector<std::uint64_t> seqs_of(const Result<std::vector<QueueEntry>>& r) {
  std::vector<std::uint64_t> out;
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().to_string());
  if (r.ok())
    for (const auto& e : *r) out.push_back(e.seq);
  return out;
}

void append_queued(Archive& a, const std::string& subject, Route route, std::vector<std::string> rcpts,
                   const std::string& message_id = "") {
  std::vector<PendingAppend> batch{pending(a, test::make_message(subject, "body of " + subject))};
  QueueEntry q;
  q.route = route;
  q.message_id = message_id;
  for (auto& r : rcpts) q.recipients.push_back({r});
  batch[0].queue = q;
  ASSERT_TRUE(a.append(batch).ok());
}

TEST(Archive, DueIndexFollowsEveryQueueChange) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  const std::uint8_t primary = lane_of(Route::kPrimary), internet = lane_of(Route::kInternet);
  append_queued(*a, "one", Route::kPrimary, {"a@example.com"});
  append_queued(*a, "two", Route::kInternet, {"b@partner.example"});
  append_queued(*a, "three", Route::kNone, {"c@example.com"});
  append_queued(*a, "four", Route::kPrimary, {"d@example.com", "e@example.com"});
  const std::int64_t now = 2000000000;
  EXPECT_EQ(seqs_of(a->queue_due(primary, now, 100)), (std::vector<std::uint64_t>{1, 4})) << "arrival order";
  EXPECT_EQ(seqs_of(a->queue_due(internet, now, 100)), (std::vector<std::uint64_t>{2}));
  EXPECT_EQ(seqs_of(a->queue_due(lane_of(Route::kNone), now, 100)), (std::vector<std::uint64_t>{}))
      << "route none is never delivered";
  EXPECT_EQ(seqs_of(a->queue_due(primary, now, 1)), (std::vector<std::uint64_t>{1})) << "limit";
  EXPECT_EQ(seqs_of(a->queue_due(primary, now, 100, [](std::uint64_t s) { return s == 1; })),
            (std::vector<std::uint64_t>{4}))
      << "skip";

  // A deferral moves the entry to its retry time, behind entries due earlier.
  ASSERT_TRUE(a->queue_apply({{1, "a@example.com", RecipientState::kPending, now + 100, "451 4.3.0 later"}}).ok());
  EXPECT_EQ(seqs_of(a->queue_due(primary, now, 100)), (std::vector<std::uint64_t>{4}));
  EXPECT_EQ(seqs_of(a->queue_due(primary, now + 100, 100)), (std::vector<std::uint64_t>{4, 1}));

  // One recipient of two delivered: still due for the other; both: gone from the index.
  ASSERT_TRUE(a->queue_apply({{4, "d@example.com", RecipientState::kDelivered, 0, "250 ok"}}).ok());
  EXPECT_EQ(seqs_of(a->queue_due(primary, now, 100)), (std::vector<std::uint64_t>{4}));
  ASSERT_TRUE(a->queue_apply({{4, "e@example.com", RecipientState::kDelivered, 0, "250 ok"}}).ok());
  EXPECT_EQ(seqs_of(a->queue_due(primary, now, 100)), (std::vector<std::uint64_t>{}));

  // A hold takes the entry out of the index; releasing the hold puts it back.
  auto hold = [&](bool h) {
    return a->queue_modify(2, [h](QueueEntry& e) {
      e.held = h;
      return ok_status();
    });
  };
  ASSERT_TRUE(hold(true).ok());
  EXPECT_EQ(seqs_of(a->queue_due(internet, now, 100)), (std::vector<std::uint64_t>{}));
  ASSERT_TRUE(hold(false).ok());
  EXPECT_EQ(seqs_of(a->queue_due(internet, now, 100)), (std::vector<std::uint64_t>{2}));

  // A permanent failure waits in the DSN lane until its DSN is archived.
  ASSERT_TRUE(a->queue_apply({{2, "b@partner.example", RecipientState::kFailed, 0, "550 no"}}).ok());
  EXPECT_EQ(seqs_of(a->queue_due(internet, now, 100)), (std::vector<std::uint64_t>{}));
  EXPECT_EQ(seqs_of(a->queue_due(kDsnLane, now, 100)), (std::vector<std::uint64_t>{2}));
  ASSERT_TRUE(a->queue_modify(2, [](QueueEntry& e) {
                 e.recipients[0].state = RecipientState::kBounced;
                 return ok_status();
               }).ok());
  EXPECT_EQ(seqs_of(a->queue_due(kDsnLane, now, 100)), (std::vector<std::uint64_t>{}));

  // Removal by the administrator.
  ASSERT_TRUE(a->queue_remove(1).ok());
  EXPECT_EQ(seqs_of(a->queue_due(primary, now + 100, 100)), (std::vector<std::uint64_t>{}));

  // Reopened, the index is what was written.
  append_queued(*a, "five", Route::kPrimary, {"f@example.com"});
  a.reset();
  a = open_archive(dir.path());
  EXPECT_EQ(seqs_of(a->queue_due(primary, now, 100)), (std::vector<std::uint64_t>{5}));
}

TEST(Archive, QueueRetryNowPutsWaitingEntriesBackInArrivalOrder) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  const std::uint8_t primary = lane_of(Route::kPrimary);
  for (int i = 1; i <= 4; ++i) append_queued(*a, "m" + std::to_string(i), Route::kPrimary, {"a@example.com"});
  const std::int64_t now = 2000000000;
  // 1 and 3 were tried and wait for a retry; 2 and 4 were never tried.
  ASSERT_TRUE(a->queue_apply({{1, "a@example.com", RecipientState::kPending, now + 600, "451"},
                              {3, "a@example.com", RecipientState::kPending, now + 300, "451"}})
                  .ok());
  EXPECT_EQ(seqs_of(a->queue_due(primary, now + 1000, 100)), (std::vector<std::uint64_t>{2, 4, 3, 1}));
  auto changed = a->queue_retry_now(Route::kPrimary, 1, 2);
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(*changed, 1u) << "only entries in the range";
  EXPECT_EQ(seqs_of(a->queue_due(primary, now, 100)), (std::vector<std::uint64_t>{1, 2, 4}));
  ASSERT_TRUE(a->queue_retry_now(Route::kPrimary, 1, 100).ok());
  EXPECT_EQ(seqs_of(a->queue_due(primary, now, 100)), (std::vector<std::uint64_t>{1, 2, 3, 4}));

  auto figures = a->queue_range(Route::kPrimary, 2, 3, false);
  ASSERT_TRUE(figures.ok());
  EXPECT_EQ(figures->pending_messages, 2u);
  ASSERT_TRUE(a->queue_apply({{2, "a@example.com", RecipientState::kDelivered, 0, "250"},
                              {3, "a@example.com", RecipientState::kKept, 0, "550 no such user"}})
                  .ok());
  figures = a->queue_range(Route::kPrimary, 2, 3, false);
  EXPECT_EQ(figures->pending_messages, 0u);
  EXPECT_EQ(figures->kept_recipients, 1u);
  figures = a->queue_range(Route::kPrimary, 1, 4, true);
  EXPECT_EQ(figures->pending_messages, 1u) << "stops at the first pending entry";
}

TEST(Archive, DeliveredLogRecordsWhatReachedThePrimary) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  append_queued(*a, "to the primary", Route::kPrimary, {"Ana@Example.com", "bo@example.com"}, "abc@sender.example");
  append_queued(*a, "to the internet", Route::kInternet, {"x@partner.example"}, "def@example.com");
  append_queued(*a, "no message id", Route::kPrimary, {"ana@example.com"});
  ASSERT_TRUE(a->queue_apply({{1, "Ana@Example.com", RecipientState::kDelivered, 0, "250"},
                              {1, "bo@example.com", RecipientState::kPending, 99, "451"},
                              {2, "x@partner.example", RecipientState::kDelivered, 0, "250"},
                              {3, "ana@example.com", RecipientState::kDelivered, 0, "250"}})
                  .ok());
  auto hit = a->delivered_lookup("ABC@sender.example", "ana@example.COM");
  ASSERT_TRUE(hit.ok());
  ASSERT_TRUE(hit->has_value()) << "Message-ID and address compare without case";
  EXPECT_EQ((*hit)->seq, 1u);
  EXPECT_GT((*hit)->at, 0);
  EXPECT_FALSE(a->delivered_lookup("abc@sender.example", "bo@example.com")->has_value()) << "deferred is not delivered";
  EXPECT_FALSE(a->delivered_lookup("def@example.com", "x@partner.example")->has_value()) << "only the primary route";
  EXPECT_FALSE(a->delivered_lookup("", "ana@example.com")->has_value());

  auto pruned = a->delivered_prune((*hit)->at);
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 0u) << "entries as old as the bound stay";
  pruned = a->delivered_prune((*hit)->at + 1);
  EXPECT_EQ(*pruned, 1u);
  EXPECT_FALSE(a->delivered_lookup("abc@sender.example", "ana@example.com")->has_value());
}

TEST(Archive, ContinuityStateWritesAllOrNothing) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  ASSERT_TRUE(a->state_write([](StateWriter& w) -> Status {
                 MAILARK_TRY(w.put("event/0001", "one"));
                 MAILARK_TRY(w.put("event/0002", "two"));
                 MAILARK_TRY(w.put("event/0003", "three"));
                 return w.put("state", "normal");
               }).ok());
  Status failed = a->state_write([](StateWriter& w) -> Status {
    MAILARK_TRY(w.put("state", "active"));
    return make_error(ErrorCode::kInvalidArgument, "changed my mind");
  });
  EXPECT_FALSE(failed.ok());
  std::vector<std::string> forward, backward;
  std::optional<std::string> state;
  ASSERT_TRUE(a->state_read([&](const StateView& v) {
                 state = v.get("state");
                 v.scan("event/", [&](std::string_view, std::string_view value) {
                   forward.emplace_back(value);
                   return true;
                 });
                 v.scan("event/", [&](std::string_view, std::string_view value) {
                   backward.emplace_back(value);
                   return backward.size() < 2;
                 }, true);
                 return ok_status();
               }).ok());
  EXPECT_EQ(state, "normal") << "the failed write left nothing";
  EXPECT_EQ(forward, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_EQ(backward, (std::vector<std::string>{"three", "two"}));
}

TEST(Archive, FormatTwoArchiveGetsItsDueIndexOnOpen) {
  test::ScratchDir dir;
  {
    auto a = open_archive(dir.path());
    append_queued(*a, "old one", Route::kPrimary, {"a@example.com"});
    append_queued(*a, "old two", Route::kInternet, {"b@partner.example"});
  }
  // Make it what the previous release left: format 2, no due index.
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  mdb_env_set_mapsize(env, std::size_t{1} << 30);
  ASSERT_EQ(mdb_env_open(env, dir.path().c_str(), 0, 0640), 0);
  MDB_txn* txn;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi due, meta;
  ASSERT_EQ(mdb_dbi_open(txn, "queue_due", 0, &due), 0);
  ASSERT_EQ(mdb_drop(txn, due, 1), 0);
  ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  std::string two("\0\0\0\2", 4);
  MDB_val k{6, const_cast<char*>("format")}, v{4, two.data()};
  ASSERT_EQ(mdb_put(txn, meta, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  auto ro = Archive::open(dir.path(), Limits{}, true);
  ASSERT_TRUE(ro.ok());
  EXPECT_EQ((*ro)->format(), 2u);
  EXPECT_EQ(seqs_of((*ro)->queue_due(lane_of(Route::kPrimary), 2000000000, 10)), (std::vector<std::uint64_t>{1}))
      << "read-only: the queue is read whole";
  ro->reset();
  auto a = open_archive(dir.path());
  EXPECT_EQ(a->format(), kArchiveFormat);
  EXPECT_EQ(seqs_of(a->queue_due(lane_of(Route::kPrimary), 2000000000, 10)), (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(seqs_of(a->queue_due(lane_of(Route::kInternet), 2000000000, 10)), (std::vector<std::uint64_t>{2}));
}

}  // namespace
}  // namespace mailark

namespace mailark {
namespace {

TEST(Segments, FullSegmentsAreCutAndTheTableSurvivesReopen) {
  test::ScratchDir dir;
  {
    auto a = open_archive(dir.path());
    auto one = a->segments();
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].first, 1u);
    EXPECT_EQ(one[0].last, 0u) << "an empty live segment";
    ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kMonth, 3}).ok());
    EXPECT_EQ(a->segment_policy().max_records, 3u);
    // Two batches: a cut inside a batch and one at a batch's first record.
    std::vector<PendingAppend> batch;
    for (const auto& r : sample_messages(5)) batch.push_back(pending(*a, r));
    auto out = a->append(batch);
    ASSERT_TRUE(out.ok());
    std::vector<bool> starts;
    for (const auto& o : *out) starts.push_back(o.starts_segment);
    EXPECT_EQ(starts, (std::vector<bool>{false, false, false, true, false}));
    batch.clear();
    auto more = sample_messages(9);
    for (int i = 5; i < 9; ++i) batch.push_back(pending(*a, more[i]));
    out = a->append(batch);
    ASSERT_TRUE(out.ok());
    EXPECT_TRUE((*out)[1].starts_segment);  // record 7
  }
  auto a = open_archive(dir.path());
  auto segs = a->segments();
  ASSERT_EQ(segs.size(), 3u);
  EXPECT_EQ(segs[0].first, 1u);
  EXPECT_EQ(segs[0].last, 3u);
  EXPECT_EQ(segs[1].first, 4u);
  EXPECT_EQ(segs[1].last, 6u);
  EXPECT_EQ(segs[2].first, 7u);
  EXPECT_EQ(segs[2].last, 9u);
  const std::string month = segment_period_label(SegmentPeriod::kMonth, std::time(nullptr));
  for (const auto& s : segs) {
    EXPECT_EQ(s.period, month);
    EXPECT_GT(s.opened_at, 0);
  }
  EXPECT_EQ(a->segment_policy().max_records, 3u) << "the policy is the archive's, for every writer";
  // The chain runs on across segments: verify sees one history.
  auto report = verify_archive(*a, nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->intact) << report->problem;
  EXPECT_EQ(report->records_checked, 9u);
}

TEST(Segments, AFirstSegmentWithoutAPeriodClosesWhenPeriodsBegin) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kNone, 0}).ok());
  append_all(*a, sample_messages(2));
  ASSERT_EQ(a->segments().size(), 1u);
  EXPECT_EQ(a->segments()[0].period, "");
  // As an archive written before segments is, on its first append by this release.
  ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kYear, 0}).ok());
  auto raws = sample_messages(4);
  append_all(*a, {raws[2], raws[3]});
  auto segs = a->segments();
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].last, 2u);
  EXPECT_EQ(segs[1].first, 3u);
  EXPECT_EQ(segs[1].period, segment_period_label(SegmentPeriod::kYear, std::time(nullptr)));
}

TEST(Segments, EachSegmentHasAStoreOfItsOwn) {
  test::ScratchDir dir;
  auto raws = sample_messages(8);
  {
    auto a = open_archive(dir.path());
    ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kMonth, 3}).ok());
    append_all(*a, {raws[0], raws[1], raws[2], raws[3], raws[4]});
    // Record 8 is message 0 again: its bytes stay in the first segment's pack, read from there.
    append_all(*a, {raws[5], raws[6], raws[0]});
    auto segs = a->segments();
    ASSERT_EQ(segs.size(), 3u);
    for (const auto& s : segs) {
      EXPECT_TRUE(s.own_store);
      EXPECT_GT(a->store_bytes(s.first), 0u) << a->store_path(s.first);
    }
    EXPECT_EQ(segs[0].first_pack, 1u);
    EXPECT_LT(segs[0].first_pack, segs[1].first_pack) << "a pack belongs to one segment";
    EXPECT_LT(segs[1].first_pack, segs[2].first_pack);
    EXPECT_GE(a->file_bytes(), a->store_bytes(1) + a->store_bytes(4) + a->store_bytes(7));
  }
  // Read back from a read-only open (as `search` and `show` beside the server): every record from its
  // segment's store, the chain unbroken, the shared blob from the earlier store.
  auto ro = Archive::open(dir.path(), Limits{}, true);
  ASSERT_TRUE(ro.ok()) << ro.error().to_string();
  Archive& a = **ro;
  EXPECT_EQ(a.format(), kArchiveFormat);
  expect_reads_back(a, raws, {0, 1, 2, 3, 4, 5, 6, 0});
  EXPECT_EQ(a.record(9).error().code, ErrorCode::kNotFound);
  std::vector<std::uint64_t> seen;
  ASSERT_TRUE(a.scan(2, [&](const ArchiveRecord& r, std::string_view) { seen.push_back(r.seq); return true; },
                     [](std::uint64_t, const Error&) { return true; }).ok());
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{2, 3, 4, 5, 6, 7, 8}));
  expect_intact(a, 8);
  EXPECT_EQ(verify_archive(a, nullptr)->messages_checked, 7u) << "the shared message once";
}

TEST(Segments, AStoreTailPastTheHeadIsNeverReadAndIsOverwritten) {
  test::ScratchDir dir;
  auto raws = sample_messages(9);
  auto a = open_archive(dir.path());
  ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kMonth, 3}).ok());
  append_all(*a, {raws[0], raws[1]});
  // A crash between the stores' commit and the main one: records 3 and 4 (a cut at 4, so a new
  // store file too) are in the stores, but the head still says 2, and the batch answers an error.
  std::vector<PendingAppend> batch;
  for (int i : {2, 3}) batch.push_back(pending(*a, raws[i]));
  a->fail_next_main_commit_for_test();
  ASSERT_FALSE(a->append(batch).ok());
  EXPECT_TRUE(std::filesystem::exists(a->store_path(4))) << "the failed batch wrote its new store";
  EXPECT_EQ(a->head().seq, 2u);
  EXPECT_EQ(a->record(3).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(a->segments().size(), 1u);
  {
    auto ro = Archive::open(dir.path(), Limits{}, true);
    ASSERT_TRUE(ro.ok());
    EXPECT_EQ((*ro)->record(3).error().code, ErrorCode::kNotFound);
    expect_intact(**ro, 2);
  }
  // The next batch (other messages) appends at 3 as if nothing had been there, and cuts at 4 again.
  append_all(*a, {raws[5], raws[6], raws[7], raws[8]});
  a.reset();
  a = open_archive(dir.path());
  ASSERT_EQ(a->segments().size(), 2u);
  EXPECT_EQ(a->segments()[1].first, 4u);
  expect_reads_back(*a, raws, {0, 1, 5, 6, 7, 8});
  expect_intact(*a, 6);
  // Messages 2 and 3 were never archived: importing them now adds them as new.
  std::vector<PendingAppend> again;
  for (int i : {2, 3}) again.push_back(imported(*a, raws[i], ""));
  auto out = a->append(again);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE((*out)[0].duplicate);
  EXPECT_FALSE((*out)[1].duplicate);
  EXPECT_EQ(*a->raw(*a->record(8)), raws[3]);
}

TEST(Segments, ClosedStoresAreSealedReadOnly) {
  test::ScratchDir dir;
  auto raws = sample_messages(5);
  raws.push_back(test::make_message("six", "six"));
  raws.push_back(test::make_message("after the seal", "seven"));
  {
    auto a = open_archive(dir.path());
    ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kMonth, 2}).ok());
    append_all(*a, {raws.begin(), raws.begin() + 5});
    EXPECT_EQ(*a->seal_stores(), 2u) << "segments 1-2 and 3-4; 5 is live";
    EXPECT_TRUE(a->store_sealed(1));
    EXPECT_TRUE(a->store_sealed(3));
    EXPECT_FALSE(a->store_sealed(5));
    EXPECT_EQ(std::filesystem::status(a->store_path(1)).permissions() & std::filesystem::perms::all,
              std::filesystem::perms::owner_read | std::filesystem::perms::group_read);
    EXPECT_EQ(*a->seal_stores(), 0u) << "once";
    append_all(*a, {raws[5]});  // the live segment goes on: 5-6
  }
  // A writing process opens sealed stores read-only and goes on: every record reads back.
  auto a = open_archive(dir.path());
  append_all(*a, {raws[6]});
  expect_reads_back(*a, raws);
  EXPECT_EQ(*a->seal_stores(), 1u) << "segment 5-6 closed at 7";
  expect_intact(*a, 7);
}

TEST(Segments, StoresLeftBehindByACutAreClosedWhenUnused) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kMonth, 2}).ok());
  auto raws = sample_messages(21);
  append_all(*a, {raws[0], raws[1]});
  // A snapshot that read the first segment while it was live keeps its store open past the cut.
  auto snap = a->snapshot();
  ASSERT_TRUE(snap.ok());
  ASSERT_TRUE((*snap)->raw(*(*snap)->record(1)).ok());
  for (int i = 2; i < 21; ++i) append_all(*a, {raws[i]});  // a cut every second message
  EXPECT_EQ(a->segments().size(), 11u);
  const std::uint64_t live_map = std::uint64_t{1} << 36;
  EXPECT_EQ(a->store_map_bytes_for_test(), 2 * live_map) << "the live store, and the one the snapshot holds";
  EXPECT_EQ(*(*snap)->raw(*(*snap)->record(2)), raws[1]) << "the old snapshot still reads through it";
  snap->reset();
  EXPECT_EQ(a->store_map_bytes_for_test(), live_map) << "ten cuts leave one writable map";
  // Every record reads back; the closed stores open again read-only, mapped at their size.
  expect_reads_back(*a, raws);
  EXPECT_LT(a->store_map_bytes_for_test(), live_map + (std::uint64_t{64} << 20));
  expect_intact(*a, 21);
}

TEST(Segments, AFullStoreBeginsANewSegmentWhateverThePolicy) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kYear, 0}).ok());  // no record limit
  a->set_store_full_bytes_for_test(64 * 1024);
  std::vector<std::string> raws;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 12; ++i) {
    std::string body;  // incompressible: about 20 KB stored each
    for (int w = 0; w < 2000; ++w) body += std::to_string(rng() % 1000000000) + (w % 12 == 11 ? "\n" : " ");
    raws.push_back(test::make_message("big " + std::to_string(i), body));
  }
  for (int i = 0; i < 12; i += 3) append_all(*a, {raws[i], raws[i + 1], raws[i + 2]});
  auto segs = a->segments();
  ASSERT_GT(segs.size(), 2u) << "the store filled up: new segments were cut";
  for (std::size_t i = 0; i + 1 < segs.size(); ++i) {
    EXPECT_LT(a->store_bytes(segs[i].first), 64 * 1024 + 128 * 1024) << segs[i].first;
    EXPECT_EQ(segs[i].period, segs[i + 1].period) << "same year: cut for size";
  }
  expect_reads_back(*a, raws);
}

TEST(Segments, ALiveSegmentAskedToCloseClosesAtTheNextRecordOnce) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kYear, 0}).ok());  // nothing else cuts
  auto msgs = sample_messages(8);
  auto append = [&](std::size_t from, std::size_t n) {
    std::vector<PendingAppend> batch;
    for (std::size_t i = from; i < from + n; ++i) batch.push_back(pending(*a, msgs[i]));
    auto out = a->append(batch);
    EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().context);
    std::vector<bool> starts;
    if (out.ok())
      for (const auto& o : *out) starts.push_back(o.starts_segment);
    return starts;
  };
  // An empty live segment is not cut: the request is dropped.
  a->close_live_segment_at_next_append();
  EXPECT_EQ(append(0, 2), (std::vector<bool>{false, false}));
  EXPECT_FALSE(a->live_segment_closing());
  EXPECT_EQ(a->segments().size(), 1u);
  // Asked with records in it: the next batch's first record begins a new segment, once.
  a->close_live_segment_at_next_append();
  EXPECT_TRUE(a->live_segment_closing());
  EXPECT_EQ(append(2, 3), (std::vector<bool>{true, false, false}));
  EXPECT_FALSE(a->live_segment_closing());
  EXPECT_EQ(append(5, 3), (std::vector<bool>{false, false, false}));
  auto segs = a->segments();
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].last, 2u);
  EXPECT_EQ(segs[1].first, 3u);
  EXPECT_EQ(segs[1].period, segs[0].period) << "the same year: cut as asked";
  expect_reads_back(*a, msgs);
}

TEST(Segments, AMissingStoreIsNamedByVerify) {
  test::ScratchDir dir;
  {
    auto a = open_archive(dir.path());
    ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kMonth, 2}).ok());
    append_all(*a, sample_messages(5));
  }
  ASSERT_TRUE(std::filesystem::remove(dir.path() + "/segment-3.mdb"));
  auto ro = Archive::open(dir.path(), Limits{}, true);
  ASSERT_TRUE(ro.ok());
  auto r = (*ro)->record(3);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().context.find("segment-3.mdb"), std::string::npos) << r.error().context;
  auto report = verify_archive(**ro, nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->intact);
  EXPECT_EQ(report->first_bad, 3u);
  EXPECT_NE(report->problem.find("missing"), std::string::npos) << report->problem;
  EXPECT_TRUE((*ro)->raw(*(*ro)->record(2)).ok()) << "the other segments still read";
  ro->reset();
  // Another segment's store put in its place is refused, not read as this one.
  std::filesystem::copy_file(dir.path() + "/segment-1.mdb", dir.path() + "/segment-3.mdb");
  ro = Archive::open(dir.path(), Limits{}, true);
  ASSERT_TRUE(ro.ok());
  r = (*ro)->record(3);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().context.find("another segment"), std::string::npos) << r.error().context;
}

// A segment table that does not decode whole (a byte flipped, cut short, entries out of order) is
// refused at open, read-only or not, with what is wrong; before, it was kept up to its first bad
// entry and the later segments' records were looked for in the wrong stores.
TEST(Segments, ADamagedSegmentTableIsRefusedAtOpen) {
  test::ScratchDir dir;
  {
    auto a = open_archive(dir.path());
    ASSERT_TRUE(a->set_segment_policy({SegmentPeriod::kMonth, 2}).ok());
    append_all(*a, sample_messages(5));
    ASSERT_EQ(a->segments().size(), 3u);
  }
  std::string intact;
  tamper(dir.path(), "meta", "segments", [&](std::string& v) { intact = v; });
  const std::vector<std::pair<std::string, std::function<void(std::string&)>>> damages = {
      {"cut short", [](std::string& v) { v.resize(v.size() - 3); }},
      {"bytes after the last entry", [](std::string& v) { v += "xy"; }},
      {"unknown version", [](std::string& v) { v[0] = 9; }},
      // The second entry's first record made 1: not after the first entry's.
      {"not after",
       [](std::string& v) {
         Reader in(v);
         std::uint8_t version = 0, flags = 0;
         std::uint64_t n = 0, first = 0, first_pack = 0;
         std::int64_t opened = 0;
         std::string period;
         ASSERT_TRUE(in.u8(version) && version == 2 && in.varint(n) && in.varint(first) && in.svarint(opened) &&
                     in.str(period) && in.u8(flags) && in.varint(first_pack));
         ASSERT_EQ(v[in.pos()], 3) << "the second segment starts at record 3";
         v[in.pos()] = 1;
       }},
  };
  for (const auto& [what, damage] : damages) {
    tamper(dir.path(), "meta", "segments", [&](std::string& v) {
      v = intact;
      damage(v);
    });
    for (bool read_only : {true, false}) {
      auto a = Archive::open(dir.path(), Limits{}, read_only);
      ASSERT_FALSE(a.ok()) << what;
      EXPECT_EQ(a.error().code, ErrorCode::kCorrupt) << what;
      EXPECT_NE(a.error().context.find("damaged segment table"), std::string::npos) << a.error().context;
      EXPECT_NE(a.error().context.find(what), std::string::npos) << what << ": " << a.error().context;
    }
  }
  tamper(dir.path(), "meta", "segments", [&](std::string& v) { v = intact; });
  auto a = open_archive(dir.path());
  EXPECT_EQ(a->segments().size(), 3u) << "the table put back opens as before";
  EXPECT_TRUE(a->raw(*a->record(5)).ok());
}

// The data folder of the format 4 release (tests/fixtures/format4-data.tar.gz: segments 1-4, 5-8 and
// 9-10 of the demo mailbox, every record in the main environment), unpacked into `dir`; returns its
// archive folder.
std::string unpack_format4(const test::ScratchDir& dir) {
  const std::string cmd = "tar -xzf '" + std::string(MAILARK_SOURCE_DIR) + "/tests/fixtures/format4-data.tar.gz' -C '" +
                          dir.path() + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return dir / "data/archive";
}

// How many entries a table of the main environment holds (the archive closed).
std::size_t main_entries(const std::string& dir, const char* table) {
  MDB_env* env = nullptr;
  EXPECT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 32);
  EXPECT_EQ(mdb_env_open(env, dir.c_str(), MDB_RDONLY, 0640), 0);
  MDB_txn* txn = nullptr;
  EXPECT_EQ(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), 0);
  MDB_dbi dbi;
  MDB_stat st{};
  EXPECT_EQ(mdb_dbi_open(txn, table, 0, &dbi), 0);
  EXPECT_EQ(mdb_stat(txn, dbi, &st), 0);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return st.ms_entries;
}

// Every record's bytes, read through the archive.
std::vector<std::string> all_raws(const Archive& a) {
  std::vector<std::string> out;
  for (std::uint64_t seq = 1; seq <= a.head().seq; ++seq) {
    auto r = a.record(seq);
    EXPECT_TRUE(r.ok()) << seq;
    if (!r.ok()) return out;
    auto raw = a.raw(*r);
    EXPECT_TRUE(raw.ok()) << seq << ": " << raw.error().to_string();
    out.push_back(raw.ok() ? *raw : "");
  }
  return out;
}

// Commits to the main environment until its last transaction id is even: what a compaction must
// make odd before it renames its copy (with an even one, a process holding the old lock table would
// read the copy's empty meta page 0).
void make_last_txnid_even(const std::string& path) {
  for (int i = 0;; ++i) {
    ASSERT_LT(i, 4);
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_open(env, path.c_str(), MDB_RDONLY, 0640), 0);
    MDB_envinfo info{};
    mdb_env_info(env, &info);
    mdb_env_close(env);
    if (info.me_last_txnid % 2 == 0) return;
    auto a = open_archive(path);
    ASSERT_TRUE(a->update_setting("test", [&](std::optional<std::string>& v) {
                   v = std::to_string(i);
                   return ok_status();
                 }).ok());
  }
}

// A process that, once it reads a byte on `go`, opens the archive's main environment for writing
// (a server starting: LMDB takes the lock before it opens the data file, so it waits for a
// compaction), reads the segment table and (with `commit`) commits a write, then writes 'y' (or 'n')
// on `result`.
pid_t fork_waiting_writer(const std::string& path, int go, int result, bool commit) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  char c = 0;
  (void)!::read(go, &c, 1);
  MDB_env* env = nullptr;
  mdb_env_create(&env);
  mdb_env_set_maxdbs(env, 32);
  mdb_env_set_mapsize(env, std::size_t{1} << 30);
  char out = 'n';
  if (mdb_env_open(env, path.c_str(), MDB_NOTLS, 0640) == 0) {
    MDB_txn* txn = nullptr;
    MDB_dbi meta, mine;
    MDB_val k{8, const_cast<char*>("segments")}, v, wk{1, const_cast<char*>("k")}, wv{1, const_cast<char*>("v")};
    if (mdb_txn_begin(env, nullptr, 0, &txn) == 0 && mdb_dbi_open(txn, "meta", 0, &meta) == 0 &&
        mdb_get(txn, meta, &k, &v) == 0 &&
        (!commit || (mdb_dbi_open(txn, "test_waiter", MDB_CREATE, &mine) == 0 && mdb_put(txn, mine, &wk, &wv, 0) == 0)))
      out = 'y';
    if (txn && (commit ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), 0)) != 0) out = 'n';
  }
  (void)!::write(result, &out, 1);
  mdb_env_close(env);
  ::_exit(0);
}

TEST(Segments, MainEnvironmentSegmentsMoveIntoStoresOfTheirOwn) {
  test::ScratchDir dir;
  const std::string path = unpack_format4(dir);
  auto a = open_archive(path);
  std::vector<SegmentInfo> segs = a->segments();
  ASSERT_EQ(segs.size(), 3u);
  for (const auto& s : segs) EXPECT_FALSE(s.own_store);
  // The live segment is in the main environment too: nothing can move before a segment with a store.
  EXPECT_EQ(a->move_segments_to_stores(0).error().code, ErrorCode::kUnsupported);
  // Three more records (the fixture's policy: 4 a segment) begin the first segment with a store,
  // whatever month this runs in.
  append_all(*a, sample_messages(3));
  segs = a->segments();
  ASSERT_GE(segs.size(), 4u);
  ASSERT_TRUE(segs.back().own_store);
  ASSERT_FALSE(segs[segs.size() - 2].own_store);
  const std::size_t old_segments = segs.size() - 1;
  const std::vector<std::string> before = all_raws(*a);
  ASSERT_EQ(before.size(), 13u);
  auto beside = a->snapshot();  // a reader that began before the move (a search beside it)
  ASSERT_TRUE(beside.ok());

  EXPECT_EQ(a->move_segments_to_stores(99).error().code, ErrorCode::kInvalidArgument);
  // Down to the second segment: the last one in the main environment moves first, the first stays.
  std::vector<std::uint64_t> order;
  auto moved = a->move_segments_to_stores(segs[1].first, [&](const SegmentMove& m) { order.push_back(m.first); });
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  ASSERT_EQ(moved->size(), old_segments - 1);
  for (std::size_t i = 0; i < moved->size(); ++i) {
    EXPECT_EQ((*moved)[i].first, segs[old_segments - 1 - i].first);
    EXPECT_EQ((*moved)[i].records, segs[old_segments - 1 - i].last - segs[old_segments - 1 - i].first + 1);
    EXPECT_EQ(order[i], (*moved)[i].first);
    EXPECT_TRUE(a->store_sealed((*moved)[i].first));
  }
  EXPECT_FALSE(a->segments()[0].own_store);
  EXPECT_TRUE(a->segments()[1].own_store);
  EXPECT_EQ(all_raws(*a), before) << "records read from the new stores, packs from where they are";
  moved = a->move_segments_to_stores(0);
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  ASSERT_EQ(moved->size(), 1u);
  EXPECT_EQ((*moved)[0].first, 1u);
  EXPECT_EQ((*moved)[0].first_pack, 1u);
  EXPECT_GE((*moved)[0].packs, 1u) << "the demo mailbox's pack goes with the segment that began it";
  EXPECT_TRUE(a->move_segments_to_stores(0)->empty()) << "nothing is left to move";
  segs = a->segments();
  for (std::size_t i = 0; i < segs.size(); ++i) {
    EXPECT_TRUE(segs[i].own_store) << i;
    if (i > 0) {
      EXPECT_LE(segs[i - 1].first_pack, segs[i].first_pack);
    }
  }
  EXPECT_EQ(all_raws(*a), before);
  expect_intact(*a, 13);
  // The reader that began before still reads every record from where it was then.
  for (std::uint64_t seq = 1; seq <= 13; ++seq) {
    auto r = (*beside)->record(seq);
    ASSERT_TRUE(r.ok()) << seq;
    auto raw = (*beside)->raw(*r);
    ASSERT_TRUE(raw.ok()) << seq << ": " << raw.error().to_string();
    EXPECT_EQ(*raw, before[seq - 1]) << seq;
  }
  beside->reset();
  // Appends go on; a read-only open (a search beside a server) reads every record from its store.
  append_all(*a, {test::make_message("after the move", "after")});
  a.reset();
  EXPECT_EQ(main_entries(path, "records"), 0u) << "the main environment keeps no record";
  EXPECT_EQ(main_entries(path, "blobs"), 0u) << "nor any pack";
  auto ro = Archive::open(path, Limits{}, true);
  ASSERT_TRUE(ro.ok()) << ro.error().to_string();
  std::vector<std::string> now = all_raws(**ro);
  ASSERT_EQ(now.size(), 14u);
  now.pop_back();
  EXPECT_EQ(now, before);
  expect_intact(**ro, 14);
}

TEST(Segments, AnInterruptedMoveIsDoneAgainOrFinished) {
  test::ScratchDir dir;
  const std::string path = unpack_format4(dir);
  std::vector<std::string> before;
  std::uint64_t last_old = 0;
  {
    auto a = open_archive(path);
    append_all(*a, sample_messages(3));
    before = all_raws(*a);
    const auto segs = a->segments();
    last_old = segs[segs.size() - 2].first;
    // A crash after the store is written and before the main environment's commit: the table does
    // not name the store, every record is still read from the main environment.
    a->stop_next_move_for_test(1);
    ASSERT_FALSE(a->move_segments_to_stores(0).ok());
    EXPECT_TRUE(std::filesystem::exists(a->store_path(last_old)));
    EXPECT_FALSE(a->segments()[segs.size() - 2].own_store);
    EXPECT_EQ(all_raws(*a), before);
  }
  {
    // The next move writes that store again, and goes on; this one stops after its commit.
    auto a = open_archive(path);
    EXPECT_EQ(all_raws(*a), before);
    a->stop_next_move_for_test(2);
    ASSERT_FALSE(a->move_segments_to_stores(0).ok());
    EXPECT_TRUE(a->segments()[a->segments().size() - 2].own_store);
    EXPECT_EQ(all_raws(*a), before);
  }
  EXPECT_GT(main_entries(path, "records"), 0u) << "the moved records were not removed yet";
  std::uint64_t still_main = 0;
  {
    // A writable open removes what the committed move left in the main environment.
    auto a = open_archive(path);
    for (const auto& s : a->segments())
      if (!s.own_store) still_main += s.last - s.first + 1;
  }
  EXPECT_EQ(main_entries(path, "records"), still_main);
  {
    auto a = open_archive(path);
    EXPECT_EQ(all_raws(*a), before);
    auto moved = a->move_segments_to_stores(0);
    ASSERT_TRUE(moved.ok()) << moved.error().to_string();
    EXPECT_FALSE(moved->empty()) << "the segments before the interrupted one";
    for (const auto& s : a->segments()) EXPECT_TRUE(s.own_store);
    EXPECT_EQ(all_raws(*a), before);
    expect_intact(*a, before.size());
  }
  EXPECT_EQ(main_entries(path, "records"), 0u);
  EXPECT_EQ(main_entries(path, "blobs"), 0u);
}

// The format 4 fixture with a segment of this release after its old ones, every old one moved into
// a store (the main environment left with their free pages); `before` gets every message.
void move_all_of_format4(const std::string& path, std::vector<std::string>& before) {
  auto a = open_archive(path);
  append_all(*a, sample_messages(3));
  ASSERT_TRUE(a->move_segments_to_stores(0).ok());
  before = all_raws(*a);
}

TEST(Segments, TheMainEnvironmentIsCompactedOnlyWhenNobodyElseHasItOpen) {
  test::ScratchDir dir;
  const std::string path = unpack_format4(dir);
  std::vector<std::string> before;
  ASSERT_NO_FATAL_FAILURE(move_all_of_format4(path, before));
  const auto file_size = [&] { return std::filesystem::file_size(path + "/data.mdb"); };
  const auto size_after_move = file_size();
  // Another process with the environment open (a search beside): nothing is done.
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    MDB_env* env = nullptr;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    const int rc = mdb_env_open(env, path.c_str(), MDB_RDONLY | MDB_NOTLS, 0640);
    char c = rc == 0 ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    (void)!::read(done[0], &c, 1);
    mdb_env_close(env);
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  auto busy = Archive::compact_main_environment(path, 0);
  ASSERT_TRUE(busy.ok()) << busy.error().to_string();
  EXPECT_TRUE(busy->busy);
  EXPECT_EQ(busy->after_bytes, 0u);
  EXPECT_EQ(file_size(), size_after_move);
  ASSERT_EQ(::write(done[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
  // Alone: a threshold above what is free leaves it; none at all compacts it.
  auto kept = Archive::compact_main_environment(path, std::uint64_t{1} << 40);
  ASSERT_TRUE(kept.ok());
  EXPECT_FALSE(kept->busy);
  EXPECT_GT(kept->free_bytes, 0u) << "the moved records' pages";
  EXPECT_EQ(kept->after_bytes, 0u);
  // A process that begins to open the folder for writing while the compaction runs waits for it,
  // then reads the new file: LMDB's lock table was set up again from it. (The last transaction id
  // made even first: with the old table as it was, the new file's empty meta page 0 would be the one
  // it reads. Both the table set up again and the id made odd before the copy prevent that; the
  // test below checks the second alone.)
  make_last_txnid_even(path);
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  const pid_t waiter = fork_waiting_writer(path, done[0], ready[1], /*commit=*/false);
  ASSERT_GE(waiter, 0);
  Archive::compaction_hook_for_test = [&] {
    (void)!::write(done[1], "x", 1);  // the waiter opens now, and waits for the lock
    ::usleep(300 * 1000);
  };
  auto done_ = Archive::compact_main_environment(path, 0);
  Archive::compaction_hook_for_test = nullptr;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  EXPECT_EQ(c, 'y') << "the process that waited reads the compacted file";
  ASSERT_EQ(::waitpid(waiter, &status, 0), waiter);
  for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
  ASSERT_TRUE(done_.ok()) << done_.error().to_string();
  ASSERT_GT(done_->after_bytes, 0u) << "free " << done_->free_bytes << " of " << done_->file_bytes;
  EXPECT_LT(done_->after_bytes, done_->file_bytes);
  EXPECT_EQ(file_size(), done_->after_bytes);
  EXPECT_FALSE(std::filesystem::exists(path + "/data.mdb.compact"));
  // The compacted environment (its transaction ids begin again) reads and takes appends as before.
  {
    auto a = open_archive(path);
    EXPECT_EQ(all_raws(*a), before);
    expect_intact(*a, before.size());
    append_all(*a, {test::make_message("after compaction", "after")});
    before.push_back(test::make_message("after compaction", "after"));
  }
  auto ro = Archive::open(path, Limits{}, true);
  ASSERT_TRUE(ro.ok()) << ro.error().to_string();
  EXPECT_EQ(all_raws(**ro), before);
  expect_intact(**ro, before.size());
}

TEST(Segments, ACompactionThatDiesAfterItsRenameLeavesWhoWaitsOnTheCopy) {
  test::ScratchDir dir;
  const std::string path = unpack_format4(dir);
  std::vector<std::string> before;
  ASSERT_NO_FATAL_FAILURE(move_all_of_format4(path, before));
  make_last_txnid_even(path);
  int go[2], result[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(result), 0);
  // A process about to open the folder for writing (a server starting): it waits on the lock.
  const pid_t waiter = fork_waiting_writer(path, go[0], result[1], /*commit=*/true);
  ASSERT_GE(waiter, 0);
  // The compaction, in a process that dies right after its rename.
  const pid_t compactor = ::fork();
  ASSERT_GE(compactor, 0);
  if (compactor == 0) {
    Archive::compaction_hook_for_test = [&] {
      (void)!::write(go[1], "x", 1);
      ::usleep(300 * 1000);
    };
    Archive::compaction_renamed_hook_for_test = [] { ::_exit(0); };
    (void)Archive::compact_main_environment(path, 0);
    ::_exit(1);  // never reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(compactor, &status, 0), compactor);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "it died after the rename";
  char c = 0;
  ASSERT_EQ(::read(result[0], &c, 1), 1);
  EXPECT_EQ(c, 'y') << "the waiting writer reads and writes the compacted file";
  ASSERT_EQ(::waitpid(waiter, &status, 0), waiter);
  for (int fd : {go[0], go[1], result[0], result[1]}) ::close(fd);
  EXPECT_FALSE(std::filesystem::exists(path + "/data.mdb.compact"));
  auto a = open_archive(path);
  EXPECT_EQ(all_raws(*a), before);
  expect_intact(*a, before.size());
}

TEST(Segments, PeriodLabels) {
  const std::int64_t t = 1732924800;  // 2024-11-30T00:00:00Z
  EXPECT_EQ(segment_period_label(SegmentPeriod::kMonth, t), "2024-11");
  EXPECT_EQ(segment_period_label(SegmentPeriod::kQuarter, t), "2024-Q4");
  EXPECT_EQ(segment_period_label(SegmentPeriod::kYear, t), "2024");
  EXPECT_EQ(segment_period_label(SegmentPeriod::kNone, t), "");
  EXPECT_EQ(segment_period_label(SegmentPeriod::kMonth, t - 1), "2024-11");
  EXPECT_EQ(segment_period_label(SegmentPeriod::kQuarter, 1727740800), "2024-Q4");  // 2024-10-01
  EXPECT_EQ(segment_period_label(SegmentPeriod::kQuarter, 1727740799), "2024-Q3");
  EXPECT_EQ(parse_segment_period("quarter"), SegmentPeriod::kQuarter);
  EXPECT_FALSE(parse_segment_period("week").has_value());
}

}  // namespace
}  // namespace mailark

namespace mailark {
namespace {

// Resident kilobytes of this process's mapping of `file` (/proc/self/smaps).
std::uint64_t mapped_rss_kb(const std::string& file) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in = false;
  std::uint64_t kb = 0;
  while (std::getline(smaps, line)) {
    const bool header = line.find(" r") != std::string::npos && line.find('-') < line.find(' ');
    if (header) in = line.size() >= file.size() && line.compare(line.size() - file.size(), file.size(), file) == 0;
    else if (in && line.rfind("Rss:", 0) == 0) kb += std::stoull(line.substr(4));
  }
  return kb;
}

TEST(Archive, MappedPagesAreReleased) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  // Enough distinct messages that their blob_index and packs span many pages, then read back through
  // the map.
  std::vector<std::string> raws;
  for (int i = 0; i < 3000; ++i)
    raws.push_back(test::make_message("mapped " + std::to_string(i), std::string(2000, 'a' + i % 26) + std::to_string(i)));
  for (int b = 0; b < 6; ++b) append_all(*a, std::vector<std::string>(raws.begin() + b * 500, raws.begin() + (b + 1) * 500));
  for (std::uint64_t seq = 1; seq <= 3000; ++seq) {
    auto r = a->record(seq);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE(a->raw(*r).ok());
  }
  const std::string file = dir.path() + "/segment-1.mdb";  // the records and packs read
  const std::uint64_t before = mapped_rss_kb(file);
  EXPECT_GT(before, 1000u) << "the reads went through the map";
  EXPECT_GT(a->release_mapped_pages(), 0u);
  EXPECT_LT(mapped_rss_kb(file), before / 10);
  // Everything still reads back (from the page cache).
  auto r = a->record(1234);
  ASSERT_TRUE(r.ok());
  auto raw = a->raw(*r);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(*raw, raws[1233]);
}

}  // namespace
}  // namespace mailark
