// Cases, legal holds and the audit log (engine/cases.h).
#include "engine/cases.h"

#include <gtest/gtest.h>
#include <lmdb.h>

#include <nlohmann/json.hpp>

#include "engine/export.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

std::unique_ptr<CaseStore> open_store(const test::ScratchDir& dir) {
  auto s = CaseStore::open(dir / "cases", false);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().to_string());
  return std::move(s).value();
}

// A write transaction straight on the store's LMDB environment (as someone with the file could).
template <typename F>
void raw_txn(const std::string& dir, F&& f) {
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0640), 0);
  MDB_txn* txn = nullptr;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi audit = 0, meta = 0;
  ASSERT_EQ(mdb_dbi_open(txn, "audit", 0, &audit), 0);
  ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  f(txn, audit, meta);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

TEST(Cases, NamesAreUniqueAndFoundByIdNameOrTheirStart) {
  test::ScratchDir dir;
  auto s = open_store(dir);
  ASSERT_TRUE(s->create("Acme v. Northwind", "", {"Ana Ortega"}, "cli:ann").ok());
  ASSERT_TRUE(s->create("Acme audit 2026", "", {}, "cli:ann").ok());
  EXPECT_FALSE(s->create("acme V. NORTHWIND", "", {}, "cli:ann").ok());
  EXPECT_FALSE(s->create("  ", "", {}, "cli:ann").ok());
  EXPECT_FALSE(s->create("7", "", {}, "cli:ann").ok());
  EXPECT_FALSE(s->create("line\nbreak", "", {}, "cli:ann").ok());
  EXPECT_FALSE(s->create("x", "", {std::string(201, 'a')}, "cli:ann").ok());
  EXPECT_EQ(s->find("1").value().name, "Acme v. Northwind");
  EXPECT_EQ(s->find("ACME V. northwind").value().id, 1u);
  EXPECT_EQ(s->find("acme v").value().id, 1u);
  EXPECT_EQ(s->find("acme a").value().id, 2u);
  auto several = s->find("acme");
  ASSERT_FALSE(several.ok());
  EXPECT_NE(several.error().context.find("several cases"), std::string::npos);
  EXPECT_EQ(s->find("zeta").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(s->find("9").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(s->list().value().size(), 2u);
}

TEST(Cases, TheQueriesAHoldKeepsAreItsSearchesWithinItsCustodiansAndDates) {
  test::ScratchDir dir;
  auto s = open_store(dir);
  Case c = s->create("Acme", "", {"Ana Ortega", "ben@northwind.example"}, "cli:ann").value();
  EXPECT_FALSE(s->add_search(c.id, {"power", "2001-13-01", "", 0, ""}, "cli:ann").ok());
  EXPECT_FALSE(s->add_search(c.id, {"power", "2001-06-01", "2001-05-01", 0, ""}, "cli:ann").ok());
  c = s->add_search(c.id, {"power OR gas", "2001-05-01", "2001-06-30", 0, ""}, "cli:ann").value();
  c = s->add_search(c.id, {"\"crisis\"", "", "", 0, ""}, "cli:ann").value();
  EXPECT_EQ(case_query(c, c.searches[0]),
            "(power OR gas) AND (custodian:\"Ana Ortega\" OR custodian:\"ben@northwind.example\") AND "
            "date:2001-05-01..2001-06-30");
  EXPECT_TRUE(s->held_queries().value().empty());
  c = s->set_hold(c.id, true, "notice", "cli:ann").value();
  auto held = s->held_queries().value();
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0], "(" + case_query(c, c.searches[0]) + ") OR (" + case_query(c, c.searches[1]) + ")");
  // A held case without a saved search holds everything its custodians have.
  Case all = s->create("Everything", "", {"Ana Ortega"}, "cli:ann").value();
  ASSERT_TRUE(s->set_hold(all.id, true, "", "cli:ann").ok());
  EXPECT_EQ(s->held_queries().value().back(), "custodian:\"Ana Ortega\"");
}

TEST(Cases, AHoldIsNeverDroppedByAClose) {
  test::ScratchDir dir;
  auto s = open_store(dir);
  Case c = s->create("Acme", "", {}, "cli:ann").value();
  ASSERT_TRUE(s->set_hold(c.id, true, "notice", "cli:ann").ok());
  EXPECT_FALSE(s->set_hold(c.id, true, "again", "cli:ann").ok());
  auto closed = s->close(c.id, "cli:ann");
  ASSERT_FALSE(closed.ok());
  EXPECT_NE(closed.error().context.find("under legal hold"), std::string::npos);
  EXPECT_TRUE(s->get(c.id).value().hold);
  ASSERT_TRUE(s->set_hold(c.id, false, "settled", "cli:ann").ok());
  ASSERT_TRUE(s->close(c.id, "cli:ann").ok());
  EXPECT_FALSE(s->set_hold(c.id, true, "reopen?", "cli:ann").ok());
  EXPECT_FALSE(s->add_search(c.id, {"x", "", "", 0, ""}, "cli:ann").ok());
  EXPECT_TRUE(s->add_note(c.id, "archived with the court's file", "cli:ann").ok());  // notes stay possible
}

TEST(Audit, EveryCaseChangeIsAnEntryInTheSameTransaction) {
  test::ScratchDir dir;
  auto s = open_store(dir);
  Case c = s->create("Acme", "", {}, "cli:ann").value();
  ASSERT_TRUE(s->add_search(c.id, {"power", "", "", 0, ""}, "cli:ann").ok());
  ASSERT_TRUE(s->set_hold(c.id, true, "notice", "web:bo@example.com").ok());
  EXPECT_FALSE(s->close(c.id, "cli:ann").ok());  // refused: no change, no entry
  ASSERT_TRUE(s->audit("cli:ann", "search", "power", R"({"total":3})").ok());
  EXPECT_FALSE(s->audit("cli:ann", "search", "power", "not json").ok());
  auto entries = s->audit_entries(1, 100).value();
  std::vector<std::string> actions;
  for (const auto& e : entries) actions.push_back(e.action + " " + e.actor);
  EXPECT_EQ(actions, (std::vector<std::string>{"case.create cli:ann", "case.search.save cli:ann",
                                               "case.hold web:bo@example.com", "search cli:ann"}));
  EXPECT_EQ(nlohmann::json::parse(entries[2].detail)["reason"], "notice");
  AuditCheck check = s->verify_audit();
  EXPECT_TRUE(check.ok) << check.problem;
  EXPECT_EQ(check.entries, 4u);
  EXPECT_EQ(check.head, entries.back().hash);
}

// Changes made under the store (as someone with the file could): each is found.
class AuditTamper : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = open_store(dir_);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(s->audit("cli:ann", "search", "q" + std::to_string(i)).ok());
  }
  template <typename F>
  void raw(F&& f) {
    raw_txn(dir_ / "cases", std::forward<F>(f));
  }
  static std::string key(std::uint64_t seq) {
    std::string k(8, '\0');
    for (int i = 0; i < 8; ++i) k[i] = static_cast<char>(seq >> (56 - 8 * i));
    return k;
  }
  std::string problem() {
    auto s = open_store(dir_);
    AuditCheck c = s->verify_audit();
    EXPECT_FALSE(c.ok);
    return c.problem;
  }
  test::ScratchDir dir_;
};

TEST_F(AuditTamper, AChangedEntryIsFound) {
  raw([](MDB_txn* txn, MDB_dbi audit, MDB_dbi) {
    std::string k = key(3);
    MDB_val kv{k.size(), k.data()}, v;
    ASSERT_EQ(mdb_get(txn, audit, &kv, &v), 0);
    std::string changed(static_cast<const char*>(v.mv_data), v.mv_size);
    changed.replace(changed.find("\"q2\""), 4, "\"q9\"");
    MDB_val nv{changed.size(), changed.data()};
    ASSERT_EQ(mdb_put(txn, audit, &kv, &nv, 0), 0);
  });
  EXPECT_EQ(problem(), "audit entry 3 was changed (its hash does not chain)");
}

TEST_F(AuditTamper, ARemovedEntryIsFound) {
  raw([](MDB_txn* txn, MDB_dbi audit, MDB_dbi) {
    std::string k = key(2);
    MDB_val kv{k.size(), k.data()};
    ASSERT_EQ(mdb_del(txn, audit, &kv, nullptr), 0);
  });
  EXPECT_EQ(problem(), "audit entry 2 is missing");
}

TEST_F(AuditTamper, EntriesCutFromTheEndAreFound) {
  raw([](MDB_txn* txn, MDB_dbi audit, MDB_dbi) {
    for (std::uint64_t seq : {4, 5}) {
      std::string k = key(seq);
      MDB_val kv{k.size(), k.data()};
      ASSERT_EQ(mdb_del(txn, audit, &kv, nullptr), 0);
    }
  });
  EXPECT_NE(problem().find("the audit log ends at entry 3 but its head names entry 5"), std::string::npos);
}

TEST(Cases, AStoreOfANewerReleaseIsRefused) {
  test::ScratchDir dir;
  { open_store(dir); }
  raw_txn(dir / "cases", [](MDB_txn* txn, MDB_dbi, MDB_dbi meta) {
    std::string k = "format", v("\0\0\0\x09", 4);
    MDB_val kv{k.size(), k.data()}, vv{v.size(), v.data()};
    ASSERT_EQ(mdb_put(txn, meta, &kv, &vv, 0), 0);
  });
  auto s = CaseStore::open(dir / "cases", true);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().context.find("newer release"), std::string::npos);
}

// An export's messages are one bit a record, read back in ascending order whatever order they came in.
TEST(Export, IdsAreReadBackInAscendingOrderEachOnce) {
  ExportIds ids;
  EXPECT_EQ(ids.next(0), 0u);
  ids.add(0);  // not an archive id
  EXPECT_EQ(ids.count(), 0u);
  EXPECT_EQ(ids.largest(), 0u);
  const std::vector<std::uint64_t> in = {1000003, 64, 63, 1, 65, 128, 127, 64, 5000, 1};
  for (std::uint64_t id : in) ids.add(id);
  std::vector<std::uint64_t> out;
  for (std::uint64_t id = ids.next(0); id != 0; id = ids.next(id)) out.push_back(id);
  EXPECT_EQ(out, (std::vector<std::uint64_t>{1, 63, 64, 65, 127, 128, 5000, 1000003}));
  EXPECT_EQ(ids.count(), 8u);
  EXPECT_EQ(ids.largest(), 1000003u);
  EXPECT_TRUE(ids.contains(128));
  EXPECT_FALSE(ids.contains(129));
  EXPECT_FALSE(ids.contains(99999999));
  ids.remove(64);
  ids.remove(64);
  ids.remove(99999999);
  EXPECT_EQ(ids.count(), 7u);
  EXPECT_EQ(ids.next(63), 65u);
  ids.remove(1000003);
  EXPECT_EQ(ids.largest(), 5000u);
  EXPECT_EQ(ids.next(5000), 0u);
}

}  // namespace
}  // namespace mailark
