// The user directory and the mailbox store (engine/users.h, engine/mailbox.h): passwords, users,
// membership rules, folders, flags, expunge, copy/move, isolation.
#include <gtest/gtest.h>

#include <lmdb.h>

#include <chrono>
#include <set>

#include <sys/wait.h>
#include <unistd.h>

#include "engine/archive.h"
#include "engine/mailbox.h"
#include "engine/users.h"
#include "test_util.h"

namespace mailark {
namespace {

struct Fixture {
  test::ScratchDir dir;
  std::unique_ptr<Archive> archive;
  std::unique_ptr<MailboxStore> store;
  Fixture() {
    archive = std::move(Archive::open(dir / "archive", Limits{}, false)).value();
    store = std::move(MailboxStore::open(dir / "mailbox", false)).value();
  }
  std::uint64_t append(Direction d, const std::string& from, std::vector<std::string> rcpts, const std::string& raw,
                       std::uint32_t flags = 0, scanner::VerdictKind verdict = scanner::VerdictKind::kClean,
                       const std::string& connector = "mx", const std::string& source = "",
                       const std::string& custodian = "", std::optional<QuarantineEntry> quarantine = std::nullopt) {
    std::vector<PendingAppend> batch(1);
    PendingAppend& p = batch[0];
    p.quarantine = std::move(quarantine);
    p.envelope.custodian = custodian;
    p.envelope.direction = d;
    p.envelope.mail_from = from;
    p.envelope.rcpt_to = std::move(rcpts);
    p.envelope.connector = connector;
    p.envelope.source = source;
    p.envelope.received_at = 1700000000;
    p.verdict.kind = verdict;
    p.flags = flags;
    p.content_sha256 = sha256(raw);
    p.raw_size = raw.size();
    auto codec = archive->codec();
    p.dict_id = codec->active_dictionary();
    p.frame = codec->compress(raw).value();
    auto out = archive->append(batch);
    EXPECT_TRUE(out.ok());
    return (*out)[0].record.seq;
  }
  User add(const std::string& name, std::vector<std::string> aliases = {}) {
    User u;
    u.name = name;
    u.aliases = std::move(aliases);
    auto added = store->add_user(u);
    EXPECT_TRUE(added.ok()) << (added.ok() ? "" : added.error().to_string());
    return *added;
  }
  std::vector<std::uint64_t> seqs(const User& u, const std::string& folder) {
    auto f = store->folder(u.id, folder);
    EXPECT_TRUE(f.ok()) << folder;
    std::vector<std::uint64_t> out;
    for (const auto& e : store->entries(u.id, f->id).value()) out.push_back(e.seq);
    return out;
  }
  void follow() {
    auto f = store->follow(*archive);
    ASSERT_TRUE(f.ok()) << f.error().to_string();
  }
};

std::string msg(const std::string& from, const std::string& to, const std::string& subject) {
  return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject +
         "@test>\r\n\r\nbody of " + subject + "\r\n";
}

TEST(Users, PasswordHashesVerifyOnlyTheirPassword) {
  auto h = hash_password("correct horse", 12);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->rfind("$scrypt$ln=12,r=8,p=1$", 0), 0u) << *h;
  EXPECT_TRUE(verify_password("correct horse", *h));
  EXPECT_FALSE(verify_password("correct horsf", *h));
  EXPECT_FALSE(verify_password("", *h));
  auto h2 = hash_password("correct horse", 12);
  EXPECT_NE(*h, *h2);  // a fresh salt every time
  // Malformed or hostile hashes never match and never throw.
  for (const char* bad : {"", "$scrypt$", "$scrypt$ln=99,r=8,p=1$AAAA$AAAA", "$scrypt$ln=12,r=8,p=1$!!!!$AAAA",
                          "$scrypt$ln=12$AAAA$AAAA", "plain", "$scrypt$ln=12,r=8,p=1,x=1$AAAA$AAAA"})
    EXPECT_FALSE(verify_password("x", bad)) << bad;
  EXPECT_FALSE(hash_password("").ok());
}

TEST(Users, AddressesAreNormalisedAndCheckedAndNeverShared) {
  Fixture f;
  User a = f.add("Alice@Example.COM", {"Sales@example.com", "alice@example.com"});
  EXPECT_EQ(a.name, "alice@example.com");
  EXPECT_EQ(a.aliases, std::vector<std::string>{"sales@example.com"});
  EXPECT_EQ(f.store->find_user("SALES@example.com")->id, a.id);
  User dup;
  dup.name = "bob@example.com";
  dup.aliases = {"sales@example.com"};
  auto r = f.store->add_user(dup);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().context.find("already belongs to alice@example.com"), std::string::npos);
  EXPECT_FALSE(f.store->find_user("bob@example.com").ok());  // nothing of the refused user stayed
  for (const char* bad : {"", "nobody", "a@", "@b", "a b@c", "a@b@c", "<x@y", "x\n@y"}) {
    User u;
    u.name = bad;
    EXPECT_FALSE(f.store->add_user(u).ok()) << bad;
  }
  // Aliases move with update_user; the freed one can be taken by someone else.
  auto changed = f.store->update_user("alice@example.com", [](User& u) {
    u.aliases.clear();
    return ok_status();
  });
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(f.store->find_user("sales@example.com").ok());
  EXPECT_TRUE(f.store->add_user(dup).ok());
  auto refused = f.store->update_user("alice@example.com", [](User& u) {
    u.aliases.push_back("sales@example.com");
    return ok_status();
  });
  EXPECT_FALSE(refused.ok());
}

TEST(Mailbox, NewUsersGetTheDefaultFoldersWithSpecialUse) {
  Fixture f;
  User a = f.add("alice@example.com");
  auto folders = f.store->folders(a.id).value();
  std::map<std::string, std::string> by_name;
  for (const auto& x : folders) by_name[x.name] = x.special_use;
  EXPECT_EQ(by_name.size(), 5u);
  EXPECT_EQ(by_name["INBOX"], "");
  EXPECT_EQ(by_name["Sent"], "\\Sent");
  EXPECT_EQ(by_name["Trash"], "\\Trash");
  // UIDVALIDITY differs between folders and never repeats.
  std::set<std::uint32_t> uvs;
  for (const auto& x : folders) uvs.insert(x.uidvalidity);
  EXPECT_EQ(uvs.size(), folders.size());
}

TEST(Mailbox, MembershipFollowsTheEnvelopeAndSkipsQuarantinedAndProbes) {
  Fixture f;
  User a = f.add("alice@example.com", {"sales@example.com"});
  User b = f.add("bob@example.com");
  // Inbound to alice's alias and Bcc to bob (envelope only): both get it.
  auto s1 = f.append(Direction::kInbound, "x@internet.example", {"sales@example.com", "bob@example.com"},
                     msg("x@internet.example", "sales@example.com", "hello"));
  // Outbound from alice: her Sent, not bob's anything.
  auto s2 = f.append(Direction::kOutbound, "alice@example.com", {"y@internet.example"},
                     msg("alice@example.com", "y@internet.example", "reply"));
  // Infected, quarantined, probe: nobody.
  f.append(Direction::kInbound, "v@internet.example", {"alice@example.com"}, msg("v@i", "alice@example.com", "virus"),
           kFlagQuarantined, scanner::VerdictKind::kInfected);
  f.append(Direction::kInbound, "v@internet.example", {"alice@example.com"}, msg("v@i", "alice@example.com", "zip"),
           kFlagQuarantined, scanner::VerdictKind::kUnscannable);
  f.append(Direction::kProbe, "probe@example.com", {"alice@example.com"}, msg("p@e", "alice@example.com", "probe"));
  // Someone not a user: nobody.
  f.append(Direction::kInbound, "x@internet.example", {"carol@example.com"}, msg("x@i", "carol@example.com", "c"));
  f.follow();
  EXPECT_EQ(f.seqs(a, "INBOX"), std::vector<std::uint64_t>{s1});
  EXPECT_EQ(f.seqs(a, "Sent"), std::vector<std::uint64_t>{s2});
  EXPECT_EQ(f.seqs(b, "INBOX"), std::vector<std::uint64_t>{s1});
  EXPECT_TRUE(f.seqs(b, "Sent").empty());
  // Sent copies are \Seen, inbox mail is not.
  auto sent = f.store->entries(a.id, f.store->folder(a.id, "Sent")->id).value();
  EXPECT_EQ(sent[0].flags & kMsgSeen, kMsgSeen);
  auto inbox = f.store->entries(a.id, f.store->folder(a.id, "INBOX")->id).value();
  EXPECT_EQ(inbox[0].flags, 0u);
  EXPECT_EQ(inbox[0].uid, 1u);
  // Following again places nothing twice.
  f.follow();
  EXPECT_EQ(f.seqs(a, "INBOX").size(), 1u);
  EXPECT_EQ(f.store->followed(), f.archive->head().seq);
}

TEST(Mailbox, AReleasedMessageReachesTheMailbox) {
  // A server without a primary keeps inbound mail for the mailbox views; what the scan held back
  // (quarantine entries with Route::kNone) reaches the folders only once an administrator releases it.
  Fixture f;
  User a = f.add("alice@example.com");
  auto held = [](const std::string& why) {
    QuarantineEntry q;
    q.reason = why;
    q.route = Route::kNone;
    q.recipients = {"alice@example.com"};
    return q;
  };
  auto zip = f.append(Direction::kInbound, "v@internet.example", {"alice@example.com"},
                      msg("v@i", "alice@example.com", "zip"), kFlagQuarantined, scanner::VerdictKind::kUnscannable, "mx",
                      "", "", held("encrypted: Heuristics.Encrypted.Zip"));
  auto other = f.append(Direction::kInbound, "v@internet.example", {"alice@example.com"},
                        msg("v@i", "alice@example.com", "deep"), kFlagQuarantined, scanner::VerdictKind::kUnscannable,
                        "mx", "", "", held("limit: Heuristics.Limits.Exceeded.MaxRecursion"));
  f.follow();
  EXPECT_TRUE(f.seqs(a, "INBOX").empty()) << "held";
  EXPECT_EQ(f.store->place_released(*f.archive, zip).value(), std::optional<std::uint64_t>(0)) << "not released yet";

  auto released = f.archive->quarantine_decide(zip, QuarantineStatus::kReleased, "admin");
  ASSERT_TRUE(released.ok()) << released.error().to_string();
  EXPECT_EQ(released->route, Route::kNone);
  EXPECT_EQ(f.archive->queue_entry(zip).error().code, ErrorCode::kNotFound) << "queued for no one: no route";
  EXPECT_EQ(f.store->place_released(*f.archive, zip).value(), std::optional<std::uint64_t>(1));
  EXPECT_EQ(f.seqs(a, "INBOX"), std::vector<std::uint64_t>{zip});
  EXPECT_EQ(f.store->place_released(*f.archive, zip).value(), std::optional<std::uint64_t>(0)) << "once";
  ASSERT_TRUE(f.archive->quarantine_decide(other, QuarantineStatus::kDeleted, "admin").ok());
  EXPECT_EQ(f.store->place_released(*f.archive, other).value(), std::optional<std::uint64_t>(0)) << "deleted from the quarantine: never placed";

  // Released before the follower reached it, and a user added later: the follower and the backfill
  // place released mail too.
  auto late = f.append(Direction::kInbound, "v@internet.example", {"alice@example.com", "bob@example.com"},
                       msg("v@i", "alice@example.com", "late"), kFlagQuarantined, scanner::VerdictKind::kUnscannable,
                       "mx", "", "", held("parse: x"));
  ASSERT_TRUE(f.archive->quarantine_decide(late, QuarantineStatus::kReleased, "admin").ok());
  EXPECT_EQ(f.store->place_released(*f.archive, late).value(), std::nullopt) << "the follower places it";
  f.follow();
  EXPECT_EQ(f.seqs(a, "INBOX"), (std::vector<std::uint64_t>{zip, late}));
  User b = f.add("bob@example.com");
  ASSERT_TRUE(f.store->backfill(*f.archive, b.id).ok());
  EXPECT_EQ(f.seqs(b, "INBOX"), std::vector<std::uint64_t>{late});
}

TEST(Mailbox, AReleaseRacingTheFollowerIsPlacedOnce) {
  // `mailark quarantine release` runs beside a server whose follower places new records: the release
  // and the follower's pass are in two processes. Whichever commits first, every released message is
  // placed, once (a follower pass that read the entry as still held and moved past it used to leave
  // it nowhere when the release looked at where the follower stood before that pass committed).
  Fixture f;
  User a = f.add("alice@example.com");
  constexpr int kMessages = 150;
  int started[2];
  ASSERT_EQ(::pipe(started), 0);
  const pid_t follower = ::fork();
  ASSERT_GE(follower, 0);
  if (follower == 0) {
    auto archive = Archive::open(f.dir / "archive", Limits{}, true);
    auto store = MailboxStore::open(f.dir / "mailbox", false);
    char c = archive.ok() && store.ok() ? 'y' : 'n';
    (void)!::write(started[1], &c, 1);
    if (c != 'y') ::_exit(2);
    // Follows as a server does, without its pause, until it has passed every message (or a minute,
    // a bound for a broken run, not a timing).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while ((*store)->followed() < static_cast<std::uint64_t>(kMessages) && std::chrono::steady_clock::now() < give_up)
      if (!(*store)->follow(**archive).ok()) ::_exit(3);
    ::_exit((*store)->followed() >= static_cast<std::uint64_t>(kMessages) ? 0 : 4);
  }
  char c = 0;
  ASSERT_EQ(::read(started[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  std::vector<std::uint64_t> released;
  int pending = 0;
  for (int i = 0; i < kMessages; ++i) {
    QuarantineEntry q;
    q.reason = "encrypted: Heuristics.Encrypted.Zip";
    q.route = Route::kNone;
    q.recipients = {"alice@example.com"};
    const std::string subject = "held" + std::to_string(i);
    auto seq = f.append(Direction::kInbound, "v@internet.example", {"alice@example.com"},
                        msg("v@i", "alice@example.com", subject), kFlagQuarantined, scanner::VerdictKind::kUnscannable,
                        "mx", "", "", q);
    ASSERT_TRUE(f.archive->quarantine_decide(seq, QuarantineStatus::kReleased, "admin").ok());
    auto placed = f.store->place_released(*f.archive, seq);
    ASSERT_TRUE(placed.ok()) << placed.error().to_string();
    if (!*placed) ++pending;
    released.push_back(seq);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(follower, &status, 0), follower);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ::close(started[0]);
  ::close(started[1]);
  f.follow();
  EXPECT_EQ(f.seqs(a, "INBOX"), released) << pending << " were left to the follower";
}

TEST(Mailbox, ImportsArePlacedByOwnerOrByHeaders) {
  Fixture f;
  User a = f.add("alice@example.com");
  User b = f.add("bob@example.com");
  // By headers: From alice -> her Sent; To bob, Cc alice -> bob's INBOX and alice's INBOX.
  auto s1 = f.append(Direction::kImport, "", {},
                     "From: Alice <alice@example.com>\r\nTo: \"Bob B\" <BOB@example.com>\r\nCc: alice@example.com\r\n"
                     "Subject: s1\r\n\r\nx\r\n",
                     0, scanner::VerdictKind::kClean, "import");
  // --owner bob: From someone else -> bob's INBOX, whatever its headers say.
  auto s2 = f.append(Direction::kImport, "", {"bob@example.com"}, msg("z@internet.example", "list@lists.example", "s2"), 0,
                     scanner::VerdictKind::kClean, "import");
  // --owner bob, written by bob -> bob's Sent.
  auto s3 = f.append(Direction::kImport, "", {"bob@example.com"}, msg("bob@example.com", "z@internet.example", "s3"), 0,
                     scanner::VerdictKind::kClean, "import");
  f.follow();
  EXPECT_EQ(f.seqs(a, "Sent"), std::vector<std::uint64_t>{s1});
  EXPECT_EQ(f.seqs(a, "INBOX"), std::vector<std::uint64_t>{s1});
  EXPECT_EQ(f.seqs(b, "INBOX"), (std::vector<std::uint64_t>{s1, s2}));
  EXPECT_EQ(f.seqs(b, "Sent"), std::vector<std::uint64_t>{s3});
}

TEST(Mailbox, AnImportIsPlacedByAddressesWrittenAsEncodedWords) {
  // Python's email package (compat32) writes a non-ASCII name's whole "Name <addr>" as RFC 2047
  // words: alice wrote it (her Sent), bob and carol got it (their INBOX).
  Fixture f;
  User a = f.add("alice@example.com");
  User b = f.add("bob@example.com");
  User c = f.add("carol@example.com");
  User d = f.add("d..d@example.com");  // as Enron's addresses: GMime drops it, in a second Cc field
  auto s = f.append(Direction::kImport, "", {},
                    "From: =?utf-8?q?Al=C3=AFce_=3Calice=40example=2Ecom=3E?=\r\n"
                    "To: =?utf-8?q?B=C3=B6b_=3Cbob=40example=2Ecom=3E=2C_Car?=\r\n"
                    " =?utf-8?q?=C3=B6l_=3Ccarol=40example=2Ecom=3E?=\r\n"
                    "Subject: s\r\nCc: z@internet.example\r\ncc: \"Dee, D.\" <d..d@example.com>\r\n\r\nx\r\n",
                    0, scanner::VerdictKind::kClean, "import");
  f.follow();
  EXPECT_EQ(f.seqs(a, "Sent"), std::vector<std::uint64_t>{s});
  EXPECT_EQ(f.seqs(b, "INBOX"), std::vector<std::uint64_t>{s});
  EXPECT_EQ(f.seqs(c, "INBOX"), std::vector<std::uint64_t>{s});
  EXPECT_EQ(f.seqs(d, "INBOX"), std::vector<std::uint64_t>{s});
}

TEST(Mailbox, AnImportOfMailAUserAlreadyHasIsNotPlacedTwice) {
  Fixture f;
  User a = f.add("alice@example.com");
  User b = f.add("bob@example.com");
  const std::string raw = msg("x@internet.example", "bob@example.com", "came-through");
  // Delivered to bob through the MX, then bob's old mailbox is imported with it (import --owner bob:
  // a record of bob's copy, over the same bytes), then alice's (import --owner alice).
  auto s1 = f.append(Direction::kInbound, "x@internet.example", {"bob@example.com"}, raw);
  auto s2 = f.append(Direction::kImport, "", {"bob@example.com"}, raw, 0, scanner::VerdictKind::kClean, "import", "old.mbox#1",
                     "bob@example.com");
  auto s3 = f.append(Direction::kImport, "", {"alice@example.com"}, raw, 0, scanner::VerdictKind::kClean, "import",
                     "alice.mbox#1", "alice@example.com");
  ASSERT_EQ(f.archive->head().seq, 3u) << "each custodian's copy is a record";
  f.follow();
  EXPECT_EQ(f.seqs(b, "INBOX"), std::vector<std::uint64_t>{s1}) << "bob has it once";
  EXPECT_EQ(f.seqs(a, "INBOX"), std::vector<std::uint64_t>{s3}) << "alice had no copy: hers is placed";
  (void)s2;
  // A user added later gets one copy too (the backfill places in order, and sees its own placements).
  const std::string later = msg("x@internet.example", "dave@example.com", "for-dave");
  auto d1 = f.append(Direction::kInbound, "x@internet.example", {"dave@example.com"}, later);
  f.append(Direction::kImport, "", {"dave@example.com"}, later, 0, scanner::VerdictKind::kClean, "import", "dave.mbox#1",
           "dave@example.com");
  f.follow();
  User d = f.add("dave@example.com");
  auto placed = f.store->backfill(*f.archive, d.id);
  ASSERT_TRUE(placed.ok());
  EXPECT_EQ(*placed, 1u);
  EXPECT_EQ(f.seqs(d, "INBOX"), std::vector<std::uint64_t>{d1});
}

TEST(Mailbox, AUserAddedLaterGetsTheirArchivedMailOnce) {
  Fixture f;
  f.add("alice@example.com");
  auto s1 = f.append(Direction::kInbound, "x@i.example", {"dave@example.com"}, msg("x@i.example", "dave@example.com", "early"));
  f.follow();
  User d = f.add("dave@example.com");
  EXPECT_TRUE(f.seqs(d, "INBOX").empty());
  auto placed = f.store->backfill(*f.archive, d.id);
  ASSERT_TRUE(placed.ok());
  EXPECT_EQ(*placed, 1u);
  EXPECT_EQ(f.seqs(d, "INBOX"), std::vector<std::uint64_t>{s1});
  EXPECT_EQ(*f.store->backfill(*f.archive, d.id), 0u);
  // An expunged message stays expunged: neither following nor a backfill brings it back.
  auto inbox = f.store->folder(d.id, "INBOX").value();
  ASSERT_TRUE(f.store->change_flags(d.id, inbox.id, {1}, {FlagMode::kAdd, kMsgDeleted, {}, {}}).ok());
  EXPECT_EQ(f.store->expunge(d.id, inbox.id, std::nullopt)->uids, std::vector<std::uint32_t>{1});
  EXPECT_EQ(*f.store->backfill(*f.archive, d.id), 0u);
  f.follow();
  EXPECT_TRUE(f.seqs(d, "INBOX").empty());
  EXPECT_EQ(f.archive->head().seq, s1);  // the archive keeps it
}

TEST(Mailbox, FlagsModseqAndConditionalStore) {
  Fixture f;
  User a = f.add("alice@example.com");
  for (int i = 0; i < 3; ++i)
    f.append(Direction::kInbound, "x@i.example", {"alice@example.com"}, msg("x@i.example", "alice@example.com", "m" + std::to_string(i)));
  f.follow();
  auto inbox = f.store->folder(a.id, "INBOX").value();
  const std::uint64_t before = inbox.highest_modseq;
  auto r = f.store->change_flags(a.id, inbox.id, {1, 2}, {FlagMode::kAdd, kMsgSeen | kMsgFlagged, {"$Label1", "Work"}, {}});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->changed.size(), 2u);
  EXPECT_GT(r->changed[0].modseq, before);
  EXPECT_EQ(r->changed[1].keywords, (std::vector<std::string>{"$Label1", "Work"}));
  // Keywords are unique case-insensitively; removing works case-insensitively.
  r = f.store->change_flags(a.id, inbox.id, {1}, {FlagMode::kAdd, 0, {"work"}, {}});
  EXPECT_EQ(r->changed[0].keywords.size(), 2u);
  r = f.store->change_flags(a.id, inbox.id, {1}, {FlagMode::kRemove, kMsgFlagged, {"WORK"}, {}});
  EXPECT_EQ(r->changed[0].keywords, std::vector<std::string>{"$Label1"});
  EXPECT_EQ(r->changed[0].flags, kMsgSeen);
  // UNCHANGEDSINCE: message 1 changed after `before`, message 3 did not.
  r = f.store->change_flags(a.id, inbox.id, {1, 3}, {FlagMode::kReplace, kMsgAnswered, {}, before});
  EXPECT_EQ(r->failed_modified, std::vector<std::uint32_t>{1});
  ASSERT_EQ(r->changed.size(), 1u);
  EXPECT_EQ(r->changed[0].uid, 3u);
  EXPECT_EQ(f.store->folder(a.id, "INBOX")->highest_modseq, r->highest_modseq);
}

TEST(Mailbox, CopyMoveExpungeAndFoldersKeepUidsStable) {
  Fixture f;
  User a = f.add("alice@example.com");
  for (int i = 0; i < 4; ++i)
    f.append(Direction::kInbound, "x@i.example", {"alice@example.com"}, msg("x@i.example", "alice@example.com", "m" + std::to_string(i)));
  f.follow();
  auto inbox = f.store->folder(a.id, "INBOX").value();
  auto work = f.store->create_folder(a.id, "Projects/Work");
  ASSERT_TRUE(work.ok());
  EXPECT_FALSE(f.store->create_folder(a.id, "projects/../INBOX").ok());
  EXPECT_FALSE(f.store->create_folder(a.id, "Projects/Work").ok());
  auto c = f.store->copy(a.id, inbox.id, {2, 3}, work->id, false);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->uids, (std::vector<std::pair<std::uint32_t, std::uint32_t>>{{2, 1}, {3, 2}}));
  EXPECT_EQ(c->uidvalidity, work->uidvalidity);
  auto m = f.store->copy(a.id, inbox.id, {4}, work->id, true);
  EXPECT_EQ(m->uids, (std::vector<std::pair<std::uint32_t, std::uint32_t>>{{4, 3}}));
  EXPECT_EQ(f.seqs(a, "INBOX").size(), 3u);
  EXPECT_EQ(f.seqs(a, "Projects/Work").size(), 3u);
  // Expunge takes only \Deleted ones, and with UID EXPUNGE only those named.
  ASSERT_TRUE(f.store->change_flags(a.id, inbox.id, {1, 2}, {FlagMode::kAdd, kMsgDeleted, {}, {}}).ok());
  EXPECT_EQ(f.store->expunge(a.id, inbox.id, std::vector<std::uint32_t>{2, 3})->uids, std::vector<std::uint32_t>{2});
  EXPECT_EQ(f.store->expunge(a.id, inbox.id, std::nullopt)->uids, std::vector<std::uint32_t>{1});
  // A new message after expunges gets a fresh UID, never a reused one.
  f.append(Direction::kInbound, "x@i.example", {"alice@example.com"}, msg("x@i.example", "alice@example.com", "late"));
  f.follow();
  auto entries = f.store->entries(a.id, inbox.id).value();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].uid, 3u);
  EXPECT_EQ(entries[1].uid, 5u);
  // Renaming a parent renames its children; ids and UIDVALIDITY stay.
  // "Projects" is only a name above Projects/Work (LIST: \Noselect); a client shows it as a folder,
  // and renaming it renames what is below it, as Dovecot does. A name that is neither is not found.
  ASSERT_TRUE(f.store->create_folder(a.id, "ProjectsX").ok());  // the same letters, not below it
  auto nothing = f.store->rename_folder(a.id, "Nothing", "Else");
  ASSERT_FALSE(nothing.ok());
  EXPECT_EQ(nothing.error().code, ErrorCode::kNotFound);
  ASSERT_TRUE(f.store->rename_folder(a.id, "Projects", "Mid").ok());
  EXPECT_FALSE(f.store->folder(a.id, "Mid").ok()) << "still only a name";
  EXPECT_EQ(f.store->folder(a.id, "Mid/Work")->id, work->id);
  EXPECT_FALSE(f.store->folder(a.id, "Projects/Work").ok());
  EXPECT_TRUE(f.store->folder(a.id, "ProjectsX").ok());
  ASSERT_TRUE(f.store->create_folder(a.id, "Mid").ok());
  ASSERT_TRUE(f.store->rename_folder(a.id, "Mid", "Old").ok());
  auto renamed = f.store->folder(a.id, "Old/Work");
  ASSERT_TRUE(renamed.ok());
  EXPECT_EQ(renamed->id, work->id);
  EXPECT_EQ(renamed->uidvalidity, work->uidvalidity);
  EXPECT_EQ(f.seqs(a, "Old/Work").size(), 3u);
  EXPECT_FALSE(f.store->rename_folder(a.id, "Old", "Old/Sub").ok());
  // Renaming INBOX moves its messages and leaves it empty.
  ASSERT_TRUE(f.store->rename_folder(a.id, "inbox", "Saved").ok());
  EXPECT_TRUE(f.seqs(a, "INBOX").empty());
  EXPECT_EQ(f.seqs(a, "Saved").size(), 2u);
  EXPECT_FALSE(f.store->delete_folder(a.id, "INBOX").ok());
  ASSERT_TRUE(f.store->delete_folder(a.id, "Saved").ok());
  EXPECT_FALSE(f.store->folder(a.id, "Saved").ok());
}

// Thunderbird, Apple Mail, Outlook and K-9 APPEND their own copy to Sent after each send: that copy
// replaces the one submission filed (one in Sent, not two), keeping the filed copy's flags; an
// APPEND of another message, a copy the client appended itself, and inbound mail with the same
// Message-ID are left alone; the archive keeps every record.
TEST(Mailbox, AClientsOwnSentCopyReplacesTheSubmittedOne) {
  Fixture f;
  User a = f.add("alice@example.com");
  const std::string sent_raw = "Received: from laptop by mx (mailark)\r\n" +
                               msg("alice@example.com", "bob@partner.example", "report");
  const std::uint64_t submitted = f.append(Direction::kOutbound, "alice@example.com", {"bob@partner.example"},
                                           sent_raw, 0, scanner::VerdictKind::kClean, "submission");
  // The same Message-ID came in from outside too (a list echoing it back): in INBOX, not Sent.
  f.append(Direction::kInbound, "list@partner.example", {"alice@example.com"},
           msg("alice@example.com", "list@partner.example", "report"));
  f.follow();
  auto sent = f.store->folder(a.id, "Sent").value();
  ASSERT_EQ(f.seqs(a, "Sent"), std::vector<std::uint64_t>{submitted});
  auto filed = f.store->entries(a.id, sent.id).value();
  ASSERT_TRUE(f.store->change_flags(a.id, sent.id, {filed[0].uid}, {FlagMode::kAdd, kMsgFlagged, {"$Label1"}, {}}).ok());
  auto append = [&](const std::string& raw) {
    const std::uint64_t seq = f.append(Direction::kImport, "alice@example.com", {"alice@example.com"}, raw, 0,
                                       scanner::VerdictKind::kClean, "imap", "imap:Sent");
    f.follow();
    return f.store->find_seq(a.id, sent.id, seq).value().value();
  };
  // Another message appended: nothing replaced; nor by one that reuses the Message-ID (a broken
  // client) with another subject.
  auto other = append(msg("alice@example.com", "carol@partner.example", "draft kept"));
  EXPECT_TRUE(f.store->replace_sent_copies(a.id, sent.id, other.uid, *f.archive).value().empty());
  auto reused = append("From: alice@example.com\r\nTo: dan@partner.example\r\nSubject: something else\r\n"
                       "Message-ID: <report@test>\r\n\r\nanother message\r\n");
  EXPECT_TRUE(f.store->replace_sent_copies(a.id, sent.id, reused.uid, *f.archive).value().empty());
  // Nor by one of the same Message-ID and Subject whose size is far from the filed copy's (another
  // message; the filed copy is then not even read).
  auto padded = append(msg("alice@example.com", "bob@partner.example", "report") + std::string(20000, 'x') + "\r\n");
  EXPECT_TRUE(f.store->replace_sent_copies(a.id, sent.id, padded.uid, *f.archive).value().empty());
  // The client's copy of the sent message (with its Bcc): the filed one goes, its flags come along.
  auto own = append("Bcc: boss@example.com\r\n" + msg("alice@example.com", "bob@partner.example", "report"));
  auto removed = f.store->replace_sent_copies(a.id, sent.id, own.uid, *f.archive);
  ASSERT_TRUE(removed.ok()) << removed.error().to_string();
  EXPECT_EQ(*removed, std::vector<std::uint32_t>{filed[0].uid});
  auto left = f.store->entries(a.id, sent.id).value();
  ASSERT_EQ(left.size(), 4u);
  EXPECT_EQ(left[3].uid, own.uid);
  EXPECT_TRUE(left[3].flags & kMsgFlagged);
  EXPECT_EQ(left[3].keywords, std::vector<std::string>{"$Label1"});
  EXPECT_GT(f.store->folder_by_id(a.id, sent.id)->highest_modseq, sent.highest_modseq);
  EXPECT_EQ(f.seqs(a, "INBOX").size(), 1u) << "the inbound message with the same Message-ID stays";
  // A second APPEND of the same message: the first is the client's own copy, not a filed one.
  auto again = append("Bcc: boss@example.com\r\n" + msg("alice@example.com", "bob@partner.example", "report"));
  EXPECT_TRUE(f.store->replace_sent_copies(a.id, sent.id, again.uid, *f.archive).value().empty());
  EXPECT_EQ(f.store->entries(a.id, sent.id)->size(), 5u);
  EXPECT_TRUE((*f.archive->snapshot())->record(submitted).ok()) << "the archive keeps the submitted record";
}

TEST(Mailbox, AnotherUsersFolderIsNeverReached) {
  Fixture f;
  User a = f.add("alice@example.com");
  User b = f.add("bob@example.com");
  f.append(Direction::kInbound, "x@i.example", {"bob@example.com"}, msg("x@i.example", "bob@example.com", "secret"));
  f.follow();
  auto bob_inbox = f.store->folder(b.id, "INBOX").value();
  auto alice_inbox = f.store->folder(a.id, "INBOX").value();
  // Alice names Bob's folder id in every message operation: each is refused as if it did not exist.
  EXPECT_EQ(f.store->entries(a.id, bob_inbox.id).error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(f.store->counts(a.id, bob_inbox.id).ok());
  EXPECT_FALSE(f.store->folder_by_id(a.id, bob_inbox.id).ok());
  EXPECT_FALSE(f.store->change_flags(a.id, bob_inbox.id, {1}, {FlagMode::kAdd, kMsgDeleted, {}, {}}).ok());
  EXPECT_FALSE(f.store->expunge(a.id, bob_inbox.id, std::nullopt).ok());
  EXPECT_FALSE(f.store->copy(a.id, bob_inbox.id, {1}, alice_inbox.id, false).ok());
  EXPECT_FALSE(f.store->copy(a.id, alice_inbox.id, {1}, bob_inbox.id, false).ok());
  EXPECT_FALSE(f.store->find_seq(a.id, bob_inbox.id, 1).ok());
  EXPECT_EQ(f.seqs(b, "INBOX").size(), 1u);
  EXPECT_EQ(f.store->entries(b.id, bob_inbox.id)->front().flags, 0u);  // untouched
  EXPECT_TRUE(f.seqs(a, "INBOX").empty());
}

TEST(Mailbox, FolderNamesAreCheckedForPathTricks) {
  for (const char* bad : {"", "/", "a/", "/a", "a//b", "..", "a/../b", ".", "a/./b", "a*", "b%", "x\ty", "x\ry"})
    EXPECT_FALSE(normalize_folder_name(bad).ok()) << bad;
  EXPECT_EQ(*normalize_folder_name("inbox"), "INBOX");
  EXPECT_EQ(*normalize_folder_name("Inbox/Sub"), "INBOX/Sub");
  EXPECT_EQ(*normalize_folder_name("Projects/2026"), "Projects/2026");
  std::string deep;
  for (int i = 0; i < 17; ++i) deep += (i ? "/" : "") + std::string("d");
  EXPECT_FALSE(normalize_folder_name(deep).ok());
  EXPECT_FALSE(normalize_folder_name(std::string(256, 'a')).ok());
}

TEST(Mailbox, FolderLimits) {
  Fixture f;
  User a = f.add("alice@example.com");
  for (std::size_t i = 5; i < kMaxFoldersPerUser; ++i) ASSERT_TRUE(f.store->create_folder(a.id, "f" + std::to_string(i)).ok());
  auto r = f.store->create_folder(a.id, "one-too-many");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().context.find("at most"), std::string::npos);
  auto inbox = f.store->folder(a.id, "INBOX").value();
  std::vector<std::string> many(kMaxKeywordsPerMessage + 1);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = "k" + std::to_string(i);
  f.append(Direction::kInbound, "x@i.example", {"alice@example.com"}, msg("x@i.example", "alice@example.com", "k"));
  f.follow();
  EXPECT_FALSE(f.store->change_flags(a.id, inbox.id, {1}, {FlagMode::kAdd, 0, many, {}}).ok());
}

TEST(Mailbox, SubscriptionsOutliveTheirFolderAndFollowRenames) {
  Fixture f;
  User a = f.add("alice@example.com");
  auto subs = [&] {
    auto v = f.store->subscriptions(a.id).value();
    return std::set<std::string>(v.begin(), v.end());
  };
  EXPECT_EQ(subs(), (std::set<std::string>{"INBOX", "Sent", "Drafts", "Trash", "Junk"}));
  ASSERT_TRUE(f.store->create_folder(a.id, "Old").ok());
  ASSERT_TRUE(f.store->set_subscribed(a.id, "Old", true).ok());
  ASSERT_TRUE(f.store->delete_folder(a.id, "Old").ok());
  EXPECT_TRUE(subs().count("Old"));  // RFC 9051 6.3.7: the server does not drop it
  EXPECT_EQ(f.store->set_subscribed(a.id, "Never", true).error().code, ErrorCode::kNotFound);
  ASSERT_TRUE(f.store->create_folder(a.id, "B/C").ok());
  ASSERT_TRUE(f.store->set_subscribed(a.id, "B/C", true).ok());
  ASSERT_TRUE(f.store->create_folder(a.id, "B").ok());
  ASSERT_TRUE(f.store->rename_folder(a.id, "B", "D").ok());
  EXPECT_TRUE(subs().count("D/C"));
  EXPECT_FALSE(subs().count("B/C"));
  ASSERT_TRUE(f.store->set_subscribed(a.id, "Old", false).ok());
  EXPECT_FALSE(subs().count("Old"));
  User b = f.add("bob@example.com");
  auto bobs = f.store->subscriptions(b.id).value();  // another user's subscriptions are their own
  EXPECT_EQ(bobs.size(), 5u);
  EXPECT_EQ(std::count(bobs.begin(), bobs.end(), "D/C"), 0);
}

TEST(Mailbox, ReopensWithEverythingKept) {
  test::ScratchDir dir;
  std::uint32_t id = 0;
  {
    auto s = std::move(MailboxStore::open(dir / "m", false)).value();
    User u;
    u.name = "a@example.com";
    u.password_hash = *hash_password("pw", 10);
    id = s->add_user(u)->id;
  }
  auto s = MailboxStore::open(dir / "m", true);
  ASSERT_TRUE(s.ok());
  auto u = (*s)->find_user("a@example.com");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->id, id);
  EXPECT_TRUE(verify_password("pw", u->password_hash));
  EXPECT_EQ((*s)->folders(id)->size(), 5u);
  EXPECT_EQ(MailboxStore::open(dir / "none", true).error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace mailark

namespace mailark {
namespace {

TEST(Mailbox, ApiTokensAreFoundByHashAndRevokedAtOnce) {
  Fixture f;
  User ana = f.add("ana@example.com");
  f.add("bob@example.com");
  std::string token = generate_api_token();
  ASSERT_EQ(token.rfind("mkt_", 0), 0u);
  ASSERT_EQ(token.size(), 4u + 43u);
  EXPECT_NE(generate_api_token(), token);
  ASSERT_TRUE(f.store->update_user("ana@example.com", [&](User& u) -> Status {
    u.api_tokens.push_back({"script", api_token_hash(token), 1});
    return ok_status();
  }).ok());
  auto found = f.store->find_user_by_token(api_token_hash(token));
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->id, ana.id);
  EXPECT_FALSE(f.store->find_user_by_token(api_token_hash(token + "x")).ok());
  ASSERT_TRUE(f.store->update_user("ana@example.com", [&](User& u) -> Status {
    u.api_tokens.clear();
    return ok_status();
  }).ok());
  EXPECT_EQ(f.store->find_user_by_token(api_token_hash(token)).error().code, ErrorCode::kNotFound);
}

TEST(Mailbox, StoreWithoutTokensTableOpens) {
  // A store written before the tokens table existed (format 1 without it): made here by dropping it.
  test::ScratchDir dir;
  {
    auto store = MailboxStore::open(dir / "mailbox", false).value();
    User u;
    u.name = "ana@example.com";
    ASSERT_TRUE(store->add_user(u).ok());
  }
  {
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    ASSERT_EQ(mdb_env_open(env, (dir / "mailbox").c_str(), 0, 0640), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    MDB_dbi dbi;
    ASSERT_EQ(mdb_dbi_open(txn, "tokens", 0, &dbi), 0);
    ASSERT_EQ(mdb_drop(txn, dbi, 1), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  auto ro = MailboxStore::open(dir / "mailbox", true);
  ASSERT_TRUE(ro.ok()) << ro.error().to_string();
  EXPECT_TRUE((*ro)->find_user("ana@example.com").ok());
  EXPECT_EQ((*ro)->find_user_by_token(api_token_hash("mkt_x")).error().code, ErrorCode::kNotFound);
  ro->reset();
  auto rw = MailboxStore::open(dir / "mailbox", false);
  ASSERT_TRUE(rw.ok()) << rw.error().to_string();
  std::string token = generate_api_token();
  ASSERT_TRUE((*rw)->update_user("ana@example.com", [&](User& u) -> Status {
    u.api_tokens.push_back({"late", api_token_hash(token), 1});
    return ok_status();
  }).ok());
  EXPECT_EQ((*rw)->find_user_by_token(api_token_hash(token))->name, "ana@example.com");
}

}  // namespace
}  // namespace mailark
