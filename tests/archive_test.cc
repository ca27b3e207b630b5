#include "engine/archive.h"

#include <gtest/gtest.h>
#include <lmdb.h>

#include "engine/verify.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

PendingAppend pending(const Archive& a, const std::string& raw, bool skip_if_archived = false) {
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
  p.skip_if_archived = skip_if_archived;
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
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  mdb_env_set_mapsize(env, std::size_t{1} << 30);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0640), 0);
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
  std::vector<PendingAppend> batch{pending(*a, raw, true), pending(*a, raw, true)};
  auto out = a->append(batch);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE((*out)[0].duplicate);
  EXPECT_TRUE((*out)[1].duplicate) << "a duplicate within the same batch is found too";
  EXPECT_EQ(a->head().seq, 1u);
}

TEST(Archive, TwoDifferentMessagesWithTheSameMessageIdAreTwoRecords) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  std::vector<PendingAppend> batch{pending(*a, test::make_message("one", "first", {}, {}, "same@id"), true),
                                   pending(*a, test::make_message("two", "second", {}, {}, "same@id"), true)};
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

  QueueEntry e = (*entries)[0];
  e.recipients[0].state = RecipientState::kDelivered;
  e.recipients[1].attempts = 3;
  e.recipients[1].last_response = "451 4.3.0 try later";
  e.held = true;
  ASSERT_TRUE(a->queue_update(e).ok());
  auto back = a->queue_entry(1);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->held);
  EXPECT_EQ(back->recipients[0].state, RecipientState::kDelivered);
  EXPECT_EQ(back->recipients[1].last_response, "451 4.3.0 try later");
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

}  // namespace
}  // namespace mailark
