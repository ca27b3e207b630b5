// The SMTP protocol core, without sockets: whole inputs, byte-by-byte inputs, and hostile inputs.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>

#include <filesystem>

#include "api/dns.h"
#include "api/smtp/client.h"
#include "api/smtp/protocol.h"
#include "api/smtp/spool.h"
#include "common/file_util.h"
#include "test_util.h"

namespace mailark::smtp {
namespace {

// Accepts any sender; recipients only in example.com (a gateway's inbound rule).
class DomainPolicy : public Policy {
 public:
  std::optional<Reply> check_sender(const Path&) override { return std::nullopt; }
  RecipientDecision check_recipient(const Path& rcpt) override {
    if (rcpt.domain == "example.com") return RecipientDecision::accept();
    if (rcpt.domain == "verify.example") return RecipientDecision::verify();
    return RecipientDecision::reject({554, "5.7.1 Relay access denied"});
  }
  // Room on disk for this many more bytes (a server's free space past its reserve).
  std::uint64_t disk_room = UINT64_MAX;
  std::vector<std::uint64_t> storage_asked;
  std::optional<Reply> check_storage(std::uint64_t declared) override {
    storage_asked.push_back(declared);
    if (declared > disk_room || disk_room == 0) return Reply{452, "4.3.1 Insufficient system storage"};
    return std::nullopt;
  }
};

// Drives a session like the server does: stores every message it hands out and records it.
struct Driver {
  DomainPolicy policy;
  Session session;
  std::string sent;
  std::vector<ReceivedMessage> stored;
  bool closed = false;
  bool tls_requested = false;
  std::vector<std::string> verified;  // recipients the session asked to verify (all accepted)
  std::vector<Credentials> credentials;  // AUTH attempts; "good" is the only good password
  std::string spool;                     // what the session spilled of the message in DATA (as a file)
  std::size_t spills = 0;
  std::size_t most_held = 0;             // the most content the session kept in one spill or message tail

  explicit Driver(ProtocolConfig cfg = {}) : session(cfg, policy) { sent = session.greeting(); }

  void handle(Session::Output out) {
    while (true) {
      sent += out.to_send;
      closed = closed || out.close;
      if (!out.spill.empty()) {
        if (out.spill_at == 0) spool.clear();  // a new message
        EXPECT_EQ(out.spill_at, spool.size()) << "spills come in order, none lost";
        spool += out.spill;
        most_held = std::max(most_held, out.spill.size());
        ++spills;
      }
      tls_requested = tls_requested || out.start_tls;
      if (out.verify) {
        verified.push_back(*out.verify);
        out = session.recipient_verified(std::nullopt);
        continue;
      }
      if (out.authenticate) {
        credentials.push_back(*out.authenticate);
        bool ok = out.authenticate->password == "good";
        out = session.authenticated(ok ? std::nullopt : std::optional<Reply>(Reply{535, "5.7.8 Authentication credentials invalid"}));
        continue;
      }
      if (!out.message) return;
      // As the server does: the spilled part, then the rest.
      EXPECT_EQ(out.message->spilled, out.message->spilled ? spool.size() : 0u);
      most_held = std::max(most_held, out.message->data.size());
      out.message->data = spool.substr(0, out.message->spilled) + out.message->data;
      out.message->spilled = 0;
      spool.clear();
      stored.push_back(*out.message);
      out = session.message_stored("Q" + std::to_string(stored.size()));
    }
  }
  void feed(std::string_view bytes) { handle(session.receive(bytes)); }
  void feed_bytewise(std::string_view bytes) {
    for (char c : bytes) feed(std::string_view(&c, 1));
  }
  std::vector<std::string> codes() const {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos < sent.size()) {
      std::size_t nl = sent.find("\r\n", pos);
      std::string line = sent.substr(pos, nl - pos);
      if (line.size() >= 4 && line[3] == ' ') out.push_back(line.substr(0, 3));
      pos = nl + 2;
    }
    return out;
  }
};

const std::string kTransaction =
    "EHLO client.example.net\r\n"
    "MAIL FROM:<alice@example.net> SIZE=100 BODY=8BITMIME\r\n"
    "RCPT TO:<bob@example.com>\r\n"
    "DATA\r\n"
    "Subject: hi\r\n"
    "\r\n"
    "..leading dot\r\n"
    "body\r\n"
    ".\r\n"
    "QUIT\r\n";

TEST(SmtpProtocol, OneTransactionEndToEnd) {
  Driver d;
  d.feed(kTransaction);
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "250", "250", "354", "250", "221"}));
  ASSERT_EQ(d.stored.size(), 1u);
  EXPECT_EQ(d.stored[0].helo, "client.example.net");
  EXPECT_EQ(d.stored[0].mail_from, "alice@example.net");
  EXPECT_EQ(d.stored[0].rcpt_to, std::vector<std::string>{"bob@example.com"});
  EXPECT_TRUE(d.stored[0].body_8bitmime);
  EXPECT_EQ(d.stored[0].data, "Subject: hi\r\n\r\n.leading dot\r\nbody\r\n");
  EXPECT_TRUE(d.closed);
  EXPECT_NE(d.sent.find("250 2.0.0 Ok: queued as Q1"), std::string::npos);
}

TEST(SmtpProtocol, ByteByByteInputGivesTheSameConversation) {
  Driver whole, bytewise;
  whole.feed(kTransaction);
  bytewise.feed_bytewise(kTransaction);
  EXPECT_EQ(whole.sent, bytewise.sent);
  ASSERT_EQ(bytewise.stored.size(), 1u);
  EXPECT_EQ(whole.stored[0].data, bytewise.stored[0].data);
}

TEST(SmtpProtocol, EhloAdvertisesTheExtensions) {
  ProtocolConfig cfg;
  cfg.tls_available = true;
  cfg.max_message_bytes = 1234;
  Driver d(cfg);
  d.feed("EHLO x\r\n");
  for (const char* ext : {"250-PIPELINING", "250-SIZE 1234", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-SMTPUTF8",
                          "250 STARTTLS"}) {
    EXPECT_NE(d.sent.find(ext), std::string::npos) << ext;
  }
}

TEST(SmtpProtocol, PipelinedCommandsAreAnsweredInOrder) {
  Driver d;
  d.feed("EHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@other.org>\r\n"
         "RCPT TO:<d@example.com>\r\nDATA\r\nhello\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
         "second\r\n.\r\nQUIT\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "250", "250", "554", "250", "354", "250", "250", "250",
                                                 "354", "250", "221"}));
  ASSERT_EQ(d.stored.size(), 2u);
  EXPECT_EQ(d.stored[0].rcpt_to, (std::vector<std::string>{"b@example.com", "d@example.com"}));
  EXPECT_EQ(d.stored[1].mail_from, "") << "the null reverse path";
}

TEST(SmtpProtocol, NoReplyToLaterCommandsUntilTheMessageIsStored) {
  DomainPolicy policy;
  Session s({}, policy);
  auto out = s.receive("HELO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nbody\r\n.\r\nNOOP\r\n");
  ASSERT_TRUE(out.message.has_value());
  EXPECT_EQ(out.to_send.find("2.0.0 Ok"), std::string::npos) << "neither the 250 for the message nor NOOP's";
  EXPECT_TRUE(s.awaiting_storage());
  auto more = s.receive("NOOP\r\n");
  EXPECT_TRUE(more.to_send.empty());
  auto done = s.message_stored("ABC");
  EXPECT_EQ(done.to_send, "250 2.0.0 Ok: queued as ABC\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
}

TEST(SmtpProtocol, FailedStorageIsATemporaryFailureNotA250) {
  DomainPolicy policy;
  Session s({}, policy);
  auto out = s.receive("HELO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nbody\r\n.\r\n");
  ASSERT_TRUE(out.message);
  auto r = s.message_rejected({451, "4.3.0 Disk full, try again later"});
  EXPECT_EQ(r.to_send, "451 4.3.0 Disk full, try again later\r\n");
}

TEST(SmtpProtocol, CommandsOutOfOrderAreRejected) {
  Driver d;
  d.feed("MAIL FROM:<a@x.org>\r\nEHLO x\r\nRCPT TO:<b@example.com>\r\nDATA\r\nMAIL FROM:<a@x.org>\r\n"
         "MAIL FROM:<a@x.org>\r\nDATA\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "503", "250", "503", "503", "250", "503", "554"}));
}

TEST(SmtpProtocol, KnownCommandsNotOfferedAre502AndUnknownOnes500) {
  Driver d;
  d.feed("EHLO x\r\nEXPN staff\r\nETRN example.com\r\nTURN\r\nVRFY bob\r\nFROB\r\nNOOP\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "502", "502", "502", "252", "500", "250"}));
  EXPECT_NE(d.sent.find("502 5.5.1 EXPN is not implemented"), std::string::npos);
}

TEST(SmtpProtocol, RelayAttemptIsRefused) {
  Driver d;
  d.feed("EHLO x\r\nMAIL FROM:<spammer@evil.example>\r\nRCPT TO:<victim@elsewhere.example>\r\nDATA\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "250", "554", "554"}));
  EXPECT_NE(d.sent.find("5.7.1 Relay access denied"), std::string::npos);
  EXPECT_TRUE(d.stored.empty());
}

TEST(SmtpProtocol, TooManyRecipientsGetsA452) {
  ProtocolConfig cfg;
  cfg.max_recipients = 2;
  Driver d(cfg);
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<1@example.com>\r\nRCPT TO:<2@example.com>\r\nRCPT TO:<3@example.com>\r\n");
  EXPECT_EQ(d.codes().back(), "452");
}

// A client that pipelines more recipients than a message takes gets 452 for the rest and sends them in
// another transaction (RFC 5321 4.5.3.1.10); those 452s are not errors that close the session (as
// Postfix's smtpd_recipient_overshoot_limit), until a session has sent max_recipient_overshoot of them.
TEST(SmtpSession, RecipientsPastTheLimitAreDeferredWithoutEndingTheSession) {
  ProtocolConfig cfg;
  cfg.max_recipients = 100;
  cfg.max_errors = 20;
  cfg.max_recipient_overshoot = 60;
  Driver d(cfg);
  auto rcpts = [](int from, int to) {
    std::string s;
    for (int i = from; i < to; ++i) s += "RCPT TO:<u" + std::to_string(i) + "@example.com>\r\n";
    return s;
  };
  // 130 recipients in one pipelined group: 100 taken, 30 deferred, and the message goes through.
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\n" + rcpts(0, 130) + "DATA\r\nSubject: many\r\n\r\nbody\r\n.\r\n");
  ASSERT_FALSE(d.closed) << d.sent.substr(d.sent.size() - 200);
  ASSERT_EQ(d.stored.size(), 1u);
  EXPECT_EQ(d.stored[0].rcpt_to.size(), 100u);
  auto codes = d.codes();
  EXPECT_EQ(std::count(codes.begin(), codes.end(), "452"), 30);
  EXPECT_EQ(codes.back(), "250");
  // The rest in a second transaction, on the same connection.
  d.feed("MAIL FROM:<a@x.org>\r\n" + rcpts(100, 130) + "DATA\r\nSubject: many\r\n\r\nbody\r\n.\r\n");
  ASSERT_EQ(d.stored.size(), 2u);
  EXPECT_EQ(d.stored[1].rcpt_to.size(), 30u);
  EXPECT_FALSE(d.closed);
  // Past the session's overshoot (60, of which 30 are spent) every further one counts as an error:
  // 30 more are free, then 20 errors end the session.
  d.feed("MAIL FROM:<a@x.org>\r\n" + rcpts(0, 149));
  EXPECT_FALSE(d.closed) << "49 over the limit: 30 free, 19 errors";
  d.feed(rcpts(149, 150));
  EXPECT_TRUE(d.closed);
  EXPECT_EQ(d.codes().back(), "421");
}

// A message that has passed more mail servers than limits.hops (its Received fields) is in a mail loop:
// refused at its end, never stored; Received lines in the body do not count; the session goes on.
TEST(SmtpSession, AMessageInAMailLoopIsRefused) {
  ProtocolConfig cfg;
  cfg.max_hops = 5;
  Driver d(cfg);
  auto message = [](int received, const std::string& body) {
    std::string m = "DATA\r\n";
    for (int i = 0; i < received; ++i) m += (i % 2 ? "received: from a" : "Received: from b") + std::to_string(i) + "\r\n\tby c; Sat, 5 Dec 2026 10:00:00 +0000\r\n";
    return m + "Subject: loop\r\n\r\n" + body + ".\r\n";
  };
  const std::string env = "MAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\n";
  d.feed("EHLO x\r\n" + env + message(5, "five hops\r\n"));
  ASSERT_EQ(d.stored.size(), 1u);
  d.feed(env + message(6, "six hops\r\n"));
  EXPECT_EQ(d.stored.size(), 1u) << "refused, not stored";
  EXPECT_EQ(d.codes().back(), "554");
  EXPECT_NE(d.sent.find("5.4.6 Too many hops"), std::string::npos);
  // Received lines after the header are content, and the next message is counted afresh.
  std::string body;
  for (int i = 0; i < 10; ++i) body += "Received: quoted in the body\r\n";
  d.feed(env + message(5, body));
  EXPECT_EQ(d.stored.size(), 2u);
  EXPECT_EQ(d.codes().back(), "250");
  EXPECT_FALSE(d.closed);
}

TEST(SmtpProtocol, DeclaredSizeOverTheLimitIsRefusedAtMail) {
  ProtocolConfig cfg;
  cfg.max_message_bytes = 1000;
  Driver d(cfg);
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org> SIZE=5000\r\n");
  EXPECT_EQ(d.codes().back(), "552");
  // More than 2^64 is too big, not malformed, and never an exception.
  d.feed("MAIL FROM:<a@x.org> SIZE=99999999999999999999999999999999\r\n");
  EXPECT_EQ(d.codes().back(), "552");
  d.feed("MAIL FROM:<a@x.org> SIZE=12x\r\n");
  EXPECT_EQ(d.codes().back(), "501");
  d.feed("MAIL FROM:<a@x.org> SIZE=-1\r\n");
  EXPECT_EQ(d.codes().back(), "501");
}

TEST(SmtpProtocol, MailAsksForRoomOnDiskWithTheDeclaredSize) {
  ProtocolConfig cfg;
  cfg.max_message_bytes = 100000;
  Driver d(cfg);
  d.policy.disk_room = 5000;
  // Too large for the room left: 452 (RFC 1870 6.1: try later), and the session goes on.
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org> SIZE=6000\r\nRCPT TO:<b@example.com>\r\n");
  ASSERT_EQ(d.codes().size(), 4u) << d.sent;
  EXPECT_EQ(d.codes()[2], "452");
  EXPECT_NE(d.sent.find("452 4.3.1 Insufficient system storage"), std::string::npos) << d.sent;
  EXPECT_EQ(d.codes()[3], "503") << "no transaction was started";
  // It fits, and without SIZE the session asks with 0.
  d.feed("MAIL FROM:<a@x.org> SIZE=4000\r\nRSET\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nhi\r\n.\r\n");
  EXPECT_EQ(d.policy.storage_asked, (std::vector<std::uint64_t>{6000, 4000, 0}));
  ASSERT_EQ(d.stored.size(), 1u) << d.sent;
  // No room at all: even a message without SIZE waits.
  d.policy.disk_room = 0;
  d.feed("MAIL FROM:<a@x.org>\r\n");
  EXPECT_EQ(d.codes().back(), "452");
  // A SIZE over the message limit is still 552 (permanent), not asked about.
  d.feed("MAIL FROM:<a@x.org> SIZE=200000\r\n");
  EXPECT_EQ(d.codes().back(), "552");
  EXPECT_EQ(d.policy.storage_asked.size(), 4u);
}

TEST(SmtpProtocol, OversizedDataIsRefusedAfterTheDotAndMemoryStaysBounded) {
  ProtocolConfig cfg;
  cfg.max_message_bytes = 1000;
  Driver d(cfg);
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");
  for (int i = 0; i < 1000; ++i) d.feed("0123456789012345678901234567890123456789\r\n");
  d.feed(".\r\nNOOP\r\n");
  EXPECT_TRUE(d.stored.empty());
  auto codes = d.codes();
  EXPECT_EQ(codes[codes.size() - 2], "552");
  EXPECT_EQ(codes.back(), "250") << "the session goes on";
}

// Content past ProtocolConfig::spill_bytes goes out as it arrives (the server keeps it in a file): the
// session never holds much more than the threshold, the spills and the tail make the message byte for
// byte, the size limit counts what was spilled, and the next message starts its spills over.
TEST(SmtpProtocol, ContentPastTheSpillThresholdGoesOutInOrderAndMakesTheMessage) {
  std::string body;
  for (int i = 0; i < 3000; ++i) body += (i % 7 == 0 ? ".dot-stuffed line " : "line ") + std::to_string(i) + "\r\n";
  std::string expected;
  for (int i = 0; i < 3000; ++i) expected += (i % 7 == 0 ? "dot-stuffed line " : "line ") + std::to_string(i) + "\r\n";
  std::string input = "EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n" + body + ".\r\n";
  ProtocolConfig cfg;
  cfg.spill_bytes = 1000;
  Driver whole(cfg), chunked(cfg), bytewise(cfg), unspilled;
  whole.feed(input + input);
  for (std::size_t i = 0; i < input.size(); i += 4096) chunked.feed(std::string_view(input).substr(i, 4096));
  bytewise.feed_bytewise(input);
  unspilled.feed(input);
  for (Driver* d : {&whole, &chunked, &bytewise, &unspilled}) {
    ASSERT_GE(d->stored.size(), 1u);
    EXPECT_EQ(d->stored[0].data, expected);
  }
  ASSERT_EQ(whole.stored.size(), 2u);
  EXPECT_EQ(whole.stored[1].data, expected) << "the second message's spills started over";
  EXPECT_EQ(whole.spills, 0u) << "input that ends its message in one go is handed out whole";
  EXPECT_GT(chunked.spills, 5u);
  EXPECT_LE(chunked.most_held, 1000u + 4096u);
  EXPECT_GT(bytewise.spills, 20u);
  EXPECT_LE(bytewise.most_held, 1000u + 64u);
  EXPECT_EQ(unspilled.spills, 0u);

  // The size limit counts the spilled bytes: refused after the dot, and the session goes on.
  cfg.max_message_bytes = 20000;
  Driver limited(cfg);
  for (std::size_t i = 0; i < input.size(); i += 512) limited.feed(std::string_view(input).substr(i, 512));
  limited.feed("NOOP\r\n");
  EXPECT_TRUE(limited.stored.empty());
  auto codes = limited.codes();
  ASSERT_GE(codes.size(), 2u);
  EXPECT_EQ(codes[codes.size() - 2], "552");
  EXPECT_EQ(codes.back(), "250");
  EXPECT_LE(limited.most_held, 1000u + 512u);
}

// The server's file for what a session spills (api/smtp/spool.h), on a real file system.
TEST(SmtpSpool, KeepsContentInAnUnnamedFileAndReadsItBackWithTheTail) {
  test::ScratchDir dir;
  api::Spool spool(dir.path());
  std::string a(300000, 'a'), b(200000, 'b');
  spool.append(0, a);
  spool.append(a.size(), b);
  EXPECT_EQ(spool.size(), a.size() + b.size());
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "nothing named: a crash leaves nothing behind";
  auto whole = spool.read_back(a.size() + b.size(), "tail\r\n");
  ASSERT_TRUE(whole.ok()) << whole.error().to_string();
  EXPECT_EQ(*whole, a + b + "tail\r\n");
  // A new message (offset 0) forgets the last one.
  spool.append(0, "next");
  auto next = spool.read_back(4, "");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, "next");
  spool.clear();
  EXPECT_EQ(spool.size(), 0u);
  // Content out of order, or a message claiming more than was kept, is an error, never a wrong message.
  spool.append(0, "x");
  spool.append(5, "y");
  EXPECT_FALSE(spool.read_back(1, "").ok());
  spool.append(0, "x");
  EXPECT_FALSE(spool.read_back(2, "").ok());
}

TEST(SmtpSpool, AFailedWriteIsReportedAtTheEndAndForgottenByTheNextMessage) {
  test::ScratchDir dir;
  api::Spool spool(dir.path());
  // A file size limit makes the kernel refuse the write (EFBIG), as a full disk would (ENOSPC).
  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  struct rlimit small = old;
  small.rlim_cur = 100000;
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  spool.append(0, std::string(60000, 'a'));
  spool.append(60000, std::string(60000, 'b'));
  spool.append(120000, std::string(10, 'c'));
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, old_handler);
  auto whole = spool.read_back(120010, "");
  ASSERT_FALSE(whole.ok()) << "never a message with a hole in it";
  EXPECT_EQ(whole.error().code, ErrorCode::kIo);
  EXPECT_NE(whole.error().context.find("writing"), std::string::npos) << whole.error().to_string();
  spool.append(0, "the next message");
  auto next = spool.read_back(16, "!");
  ASSERT_TRUE(next.ok()) << next.error().to_string();
  EXPECT_EQ(*next, "the next message!");

  api::Spool nowhere(dir.path() + "/missing");
  nowhere.append(0, "x");
  auto lost = nowhere.read_back(1, "");
  ASSERT_FALSE(lost.ok());
  EXPECT_NE(lost.error().context.find("/missing"), std::string::npos) << lost.error().to_string();
}

// A message that would eat into the data folder's reserve while it arrives (api/disk_reserve.h), on a
// real small file system: refused at its end, and what was kept of it is freed at once.
TEST(SmtpSpool, ASpillPastTheDiskReserveFailsAndFreesWhatWasKept) {
  test::ScratchDir dir;
  test::SmallTmpfs disk(dir.path() + "/spool", 8u << 20);
  REQUIRE_TMPFS(disk);
  const std::uint64_t free_at_start = free_bytes(dir.path() + "/spool").value();
  // The scratch folder's own file system has more room: the least of the two is what counts.
  api::DiskReserve reserve({dir.path(), dir.path() + "/spool", dir.path() + "/missing"}, free_at_start - (3u << 20));
  api::Spool spool(dir.path() + "/spool", &reserve);
  const std::string mib(1u << 20, 'm');
  spool.append(0, mib);
  spool.append(1u << 20, mib);
  EXPECT_EQ(spool.size(), 2u << 20);
  spool.append(2u << 20, mib + mib);  // would leave 1 MiB less than the reserve
  spool.append(4u << 20, mib);        // and what follows is not kept either
  EXPECT_EQ(free_bytes(dir.path() + "/spool").value(), free_at_start) << "the kept part was freed at once";
  auto whole = spool.read_back(5u << 20, "");
  ASSERT_FALSE(whole.ok());
  EXPECT_EQ(whole.error().code, ErrorCode::kIo);
  EXPECT_NE(whole.error().context.find("limits.disk_reserve_bytes"), std::string::npos) << whole.error().to_string();
  // The next message that fits is kept again.
  spool.append(0, mib);
  auto next = spool.read_back(1u << 20, "end\r\n");
  ASSERT_TRUE(next.ok()) << next.error().to_string();
  EXPECT_EQ(*next, mib + "end\r\n");
  // No reserve at all: only the file system's own end.
  api::DiskReserve none({dir.path() + "/spool"}, 0);
  EXPECT_TRUE(none.room_for(6u << 20, "test"));
  EXPECT_FALSE(reserve.room_for(4u << 20, "test"));
  EXPECT_TRUE(reserve.room_for(2u << 20, "test"));
}

TEST(SmtpProtocol, OverlongCommandLineIsRefused) {
  Driver d;
  d.feed("EHLO " + std::string(10000, 'x') + "\r\nNOOP\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "500", "250"}));
}

TEST(SmtpProtocol, OverlongDataLineRefusesTheMessage) {
  ProtocolConfig cfg;
  cfg.max_line_bytes = 100;
  Driver d(cfg);
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nshort\r\n" + std::string(5000, 'y') +
         "\r\nmore\r\n.\r\n");
  EXPECT_TRUE(d.stored.empty());
  EXPECT_EQ(d.codes().back(), "554");
}

TEST(SmtpProtocol, NormalizeModeTurnsBareLfIntoCrLfAndKeepsOneMessage) {
  ProtocolConfig cfg;
  cfg.bare_newline = BareNewline::kNormalize;
  Driver d(cfg);
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
         "line one\nline two\r\n.\nMAIL FROM:<smuggled@evil.example>\r\nstill data\r\n.\r\n");
  ASSERT_EQ(d.stored.size(), 1u);
  EXPECT_TRUE(d.stored[0].bare_newline_seen);
  EXPECT_EQ(d.stored[0].data, "line one\r\nline two\r\n\r\nMAIL FROM:<smuggled@evil.example>\r\nstill data\r\n");
}

TEST(SmtpProtocol, NormalizeModeTurnsBareCrIntoCrLf) {
  ProtocolConfig cfg;
  cfg.bare_newline = BareNewline::kNormalize;
  Driver d(cfg);
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\na\rb\r.\r..c\r\n.\r\n");
  ASSERT_EQ(d.stored.size(), 1u);
  EXPECT_EQ(d.stored[0].data, "a\r\nb\r\n\r\n.c\r\n") << "every piece is a line of its own, dot-unstuffed";
}

TEST(SmtpProtocol, RejectModeRefusesAMessageWithABareLineEndAfterItsRealEnd) {
  Driver d;
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nfine\r\nbroken\nrest\r\n.\r\nNOOP\r\n");
  EXPECT_TRUE(d.stored.empty());
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "250", "250", "354", "550", "250"}));
  EXPECT_NE(d.sent.find("550 5.5.2 Error: bare <LF> received"), std::string::npos);
  Driver cr;
  cr.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nhalf\rline\r\n.\r\n");
  EXPECT_NE(cr.sent.find("550 5.5.2 Error: bare <CR> received"), std::string::npos);
}

bool has_bare_line_end(const std::string& s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && (i + 1 >= s.size() || s[i + 1] != '\n')) return true;
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return true;
  }
  return false;
}

// Every way a lone dot can sit between line ends that are not both CRLF (the published SMTP
// smuggling variants and more), with a whole second transaction smuggled behind it and QUIT
// pipelined after the real end. Whole and byte by byte, in both modes: the smuggled MAIL FROM is
// never answered as a command, and the session sees exactly one message or none.
TEST(SmtpProtocol, SmugglingEveryEndOfDataVariantStaysOneMessage) {
  const std::vector<std::string> ends = {"\n", "\r", "\r\n", "\r\r\n", "\n\r", "\r\r", "\n\n", ""};
  int variants = 0;
  for (const auto& before : ends) {
    for (const auto& after : ends) {
      std::string dot = "body" + before + "." + after;
      if (dot.find("\r\n.\r\n") != std::string::npos) continue;  // a real end of data
      ++variants;
      const std::string input = "EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: s\r\n\r\n" +
                                dot + "MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n" +
                                "smuggled\r\n.\r\nQUIT\r\n";
      for (BareNewline mode : {BareNewline::kReject, BareNewline::kNormalize}) {
        for (bool bytewise : {false, true}) {
          ProtocolConfig cfg;
          cfg.bare_newline = mode;
          Driver d(cfg);
          if (bytewise) d.feed_bytewise(input);
          else d.feed(input);
          const std::string where = testing::PrintToString(dot) + (mode == BareNewline::kReject ? " reject" : " normalize") +
                                    (bytewise ? " bytewise" : "");
          auto codes = d.codes();
          ASSERT_GE(codes.size(), 2u) << where;
          EXPECT_EQ(codes.back(), "221") << where;
          EXPECT_EQ(codes.size(), 7u) << where << ": one reply per real command, none for the smuggled ones";
          EXPECT_LE(d.stored.size(), 1u) << where;
          if (d.stored.size() == 1) {
            EXPECT_EQ(d.stored[0].rcpt_to, std::vector<std::string>{"b@example.com"}) << where;
            EXPECT_NE(d.stored[0].data.find("MAIL FROM:<smuggled@evil.example>"), std::string::npos) << where;
            EXPECT_FALSE(has_bare_line_end(d.stored[0].data)) << where << ": only CRLF line ends are stored";
          }
          if (mode == BareNewline::kReject && has_bare_line_end(dot)) {
            EXPECT_TRUE(d.stored.empty()) << where;
            EXPECT_NE(d.sent.find("550 5.5.2 Error: bare <"), std::string::npos) << where;
          } else {
            EXPECT_EQ(d.stored.size(), 1u) << where;
          }
        }
      }
    }
  }
  EXPECT_GE(variants, 50);
}

TEST(SmtpProtocol, SmugglingBareLineEndsNeverSplitACommand) {
  Driver d;
  d.feed("EHLO x\r\nNOOP\nMAIL FROM:<a@x.org>\r\nRSET\rMAIL FROM:<a@x.org>\r\nMAIL FROM:<b@x.org>\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "550", "550", "250"}));
  EXPECT_NE(d.sent.find("550 5.5.2 Error: bare <LF> received"), std::string::npos);
  EXPECT_NE(d.sent.find("550 5.5.2 Error: bare <CR> received"), std::string::npos);
  Driver lf_only;
  lf_only.feed("EHLO x\nQUIT\n");
  EXPECT_EQ(lf_only.codes(), std::vector<std::string>{"220"}) << "a command ends only at CRLF";
  EXPECT_FALSE(lf_only.closed);
}

TEST(SmtpProtocol, SmugglingDotAfterAnOverlongLineNeedsItsOwnCrLf) {
  ProtocolConfig cfg;
  cfg.max_line_bytes = 64;
  for (bool with_cr : {true, false}) {
    Driver d(cfg);
    d.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");
    d.feed(std::string(100, 'x') + (with_cr ? "\r" : ""));  // the over-long line is dropped; a CR is kept
    d.feed("\n.\r\nNOOP\r\n");
    if (with_cr) {
      EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "250", "250", "354", "554", "250"}))
          << "a CR and an LF in separate reads make one CRLF, so CRLF . CRLF ends the data";
    } else {
      EXPECT_EQ(d.codes().size(), 5u) << "after a bare LF, \".\" CRLF is content";
    }
  }
}

TEST(SmtpProtocol, StartTlsDiscardsPipelinedPlaintextAndStartsOver) {
  ProtocolConfig cfg;
  cfg.tls_available = true;
  Driver d(cfg);
  d.feed("EHLO x\r\nSTARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n");
  EXPECT_TRUE(d.tls_requested);
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "220"}));
  d.handle(d.session.tls_started());
  d.feed("MAIL FROM:<a@x.org>\r\nEHLO x\r\n");
  auto codes = d.codes();
  EXPECT_EQ(codes[3], "503") << "EHLO is required again after STARTTLS";
  EXPECT_EQ(d.sent.find("250 STARTTLS", d.sent.rfind("220 2.0.0")), std::string::npos) << "not offered twice";
}

TEST(SmtpProtocol, TooManyErrorsCloseTheSession) {
  ProtocolConfig cfg;
  cfg.max_errors = 3;
  Driver d(cfg);
  d.feed("FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
  EXPECT_TRUE(d.closed);
  EXPECT_EQ(d.codes().back(), "421");
}

TEST(SmtpProtocol, BareAddressesAreTakenAsPostfixTakesThem) {
  Driver d;
  d.feed("EHLO scanner.example\r\nMAIL FROM: scans@example.com SIZE=100\r\nRCPT TO: ana@example.com\r\nDATA\r\n"
         "Subject: scan\r\n\r\npage 1\r\n.\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "250", "250", "354", "250"}));
  ASSERT_EQ(d.stored.size(), 1u);
  EXPECT_EQ(d.stored[0].mail_from, "scans@example.com");
  EXPECT_EQ(d.stored[0].rcpt_to, (std::vector<std::string>{"ana@example.com"}));
}

TEST(SmtpProtocol, ARecipientGivenTwiceIsKeptOnce) {
  ProtocolConfig cfg;
  cfg.max_recipients = 2;
  Driver d(cfg);
  d.feed("EHLO c.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<Bob@Example.COM>\r\n"
         "RCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "250", "250", "250", "250", "250", "354", "250"}))
      << "a repeat takes no place of the two a message may have";
  ASSERT_EQ(d.stored.size(), 1u);
  EXPECT_EQ(d.stored[0].rcpt_to, (std::vector<std::string>{"bob@example.com", "carol@example.com"}));
}

TEST(SmtpProtocol, PathSyntax) {
  EXPECT_EQ(parse_path("<a@b.example>", false)->address, "a@b.example");
  EXPECT_EQ(parse_path(" <a@b.example> SIZE=10", false)->params, "SIZE=10");
  auto routed = parse_path("<@relay.example,@r2.example:a@b.example>", false);
  ASSERT_TRUE(routed);
  EXPECT_EQ(routed->address, "a@b.example");
  EXPECT_EQ(routed->source_route, "@relay.example,@r2.example");
  EXPECT_EQ(parse_path("<Postmaster>", false)->address, "Postmaster");
  EXPECT_EQ(parse_path("<>", true)->address, "");
  EXPECT_EQ(parse_path("<> SIZE=1", true)->params, "SIZE=1");
  EXPECT_EQ(parse_path("<a@[192.0.2.1]>", false)->domain, "[192.0.2.1]");
  EXPECT_FALSE(parse_path("<>", false));
  // A bare address is taken as if in angle brackets (Postfix's strict_rfc821_envelopes = no).
  EXPECT_EQ(parse_path("a@b.example", false)->address, "a@b.example");
  EXPECT_EQ(parse_path(" a@b.example SIZE=10 BODY=8BITMIME", true)->params, "SIZE=10 BODY=8BITMIME");
  EXPECT_EQ(parse_path("Postmaster", false)->address, "Postmaster");
  EXPECT_FALSE(parse_path("a@b@c.example", false));
  EXPECT_FALSE(parse_path("a@b.example>", false));
  EXPECT_FALSE(parse_path("a@b.example<", false));
  EXPECT_FALSE(parse_path("\"john smith\"@example.com", false)) << "quoted local parts need the brackets";
  EXPECT_FALSE(parse_path("nodomain", true));
  EXPECT_FALSE(parse_path("", true));
  EXPECT_TRUE(routing_in_path(*parse_path("a%c.example@b.example", false)).size() > 0);
  EXPECT_FALSE(parse_path("<a b@c.example>", false));
  EXPECT_FALSE(parse_path("<a@b.example", false));
  EXPECT_FALSE(parse_path("<nodomain>", true));
  EXPECT_FALSE(parse_path("<Postmaster>", true)) << "only RCPT may name Postmaster alone";
  EXPECT_FALSE(parse_path("<a@b@c.example>", false)) << "an unquoted @ is not a local part";
  EXPECT_FALSE(parse_path("<a@b..example>", false));
  EXPECT_FALSE(parse_path("<a@b.example>x", false));
  EXPECT_FALSE(parse_path("<@relay.example a@b.example>", false));
  EXPECT_FALSE(parse_path("<\"\"@b.example>", false));
  EXPECT_FALSE(parse_path("<\"unterminated@b.example>", false));
  auto quoted = parse_path("<\"john smith\"@example.com>", false);
  ASSERT_TRUE(quoted);
  EXPECT_TRUE(quoted->quoted_local);
  EXPECT_EQ(quoted->address, "\"john smith\"@example.com");
  EXPECT_EQ(parse_path("<\"a>b\"@example.com>", false)->address, "\"a>b\"@example.com") << "a '>' inside quotes";
}

TEST(SmtpProtocol, RoutingInTheLocalPartIsFound) {
  auto routing = [](const char* path) { return routing_in_path(*parse_path(path, false)); };
  EXPECT_EQ(routing("<user@example.com>"), "");
  EXPECT_EQ(routing("<first.last+tag@example.com>"), "");
  EXPECT_EQ(routing("<user%elsewhere.example@example.com>"), "'%' in the local part");
  EXPECT_EQ(routing("<elsewhere.example!user@example.com>"), "'!' in the local part");
  EXPECT_EQ(routing("<\"user@elsewhere.example\"@example.com>"), "'@' in the local part");
  EXPECT_EQ(routing("<\"user%x\"@example.com>"), "'%' in the local part");
  EXPECT_EQ(routing("<@example.com:user@elsewhere.example>"), "a source route");
}

TEST(SmtpProtocol, RecipientVerificationHoldsLaterRepliesInOrder) {
  DomainPolicy policy;
  Session s({}, policy);
  auto out = s.receive("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<u@verify.example>\r\nRCPT TO:<b@example.com>\r\nNOOP\r\n");
  ASSERT_TRUE(out.verify);
  EXPECT_EQ(*out.verify, "u@verify.example");
  EXPECT_EQ(out.to_send.find("2.1.5"), std::string::npos) << "nothing after the RCPT is answered yet";
  auto rejected = s.recipient_verified(Reply{550, "5.1.1 <u@verify.example>: user unknown"});
  EXPECT_EQ(rejected.to_send, "550 5.1.1 <u@verify.example>: user unknown\r\n250 2.1.5 Recipient ok\r\n250 2.0.0 Ok\r\n");
}

TEST(SmtpProtocol, ControlCharactersInACommandAreRefused) {
  Driver d;
  d.feed(std::string("EHLO x\r\nNOOP\0\r\n", 15));
  EXPECT_EQ(d.codes().back(), "500");
}

TEST(SmtpProtocol, NonAsciiSenderNeedsSmtpUtf8) {
  Driver d;
  d.feed("EHLO x\r\nMAIL FROM:<jos\xc3\xa9@example.net>\r\nMAIL FROM:<jos\xc3\xa9@example.net> SMTPUTF8\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "553", "250"}));
}

// Internationalised domains as DNS and servers without SMTPUTF8 take them (libidn2, IDNA2008).
TEST(Dns, AsciiDomain) {
  using mailark::api::ascii_domain;
  EXPECT_EQ(ascii_domain("b\xc3\xbc" "cher.example"), "xn--bcher-kva.example");
  EXPECT_EQ(ascii_domain("M\xc3\xbc" "nchen.example"), "xn--mnchen-3ya.example") << "UTS #46 maps the capital";
  EXPECT_EQ(ascii_domain("\xe4\xbe\x8b\xe5\xad\x90.\xe6\xb5\x8b\xe8\xaf\x95"), "xn--fsqu00a.xn--0zwm56d");
  EXPECT_EQ(ascii_domain("mail_relay.Example.COM"), "mail_relay.Example.COM") << "ASCII names as they are";
  EXPECT_EQ(ascii_domain("xn--bcher-kva.example"), "xn--bcher-kva.example");
  EXPECT_FALSE(ascii_domain("bad\xff\xfe.example")) << "not UTF-8";
  EXPECT_FALSE(ascii_domain("\xe2\x98\x95.example")) << "a symbol IDNA2008 disallows";
  using mailark::api::domain_key;
  EXPECT_EQ(domain_key("B\xc3\xbc" "cher.Example"), "xn--bcher-kva.example");
  EXPECT_EQ(domain_key("XN--BCHER-KVA.example"), "xn--bcher-kva.example");
  EXPECT_EQ(domain_key("Example.COM"), "example.com");
  EXPECT_EQ(domain_key("\xe2\x98\x95.Example"), "\xe2\x98\x95.example") << "no IDN: as it is, lower-cased";
  using mailark::api::other_address_form;
  EXPECT_EQ(other_address_form("Ana@b\xc3\xbc" "cher.example"), "Ana@xn--bcher-kva.example");
  EXPECT_EQ(other_address_form("ana@XN--BCHER-KVA.example"), "ana@b\xc3\xbc" "cher.example");
  EXPECT_EQ(other_address_form("ana@example.com"), "");
  EXPECT_EQ(other_address_form("ana@xn--zz.example"), "") << "no valid A-label";
  EXPECT_EQ(other_address_form("no-domain"), "");
}

TEST(SmtpProtocol, SmugglingDeliveryDotStuffsEveryKindOfLineEnd) {
  EXPECT_EQ(dot_stuff("a\rb\n.c\r\n.\r\nd"), "a\r\nb\r\n..c\r\n..\r\nd\r\n.\r\n");
  EXPECT_EQ(dot_stuff("x\r.\r"), "x\r\n..\r\n.\r\n") << "a bare CR before a dot is a line end, and the dot stuffed";
  EXPECT_EQ(dot_stuff(""), ".\r\n");
}


ProtocolConfig submission_config(bool tls) {
  ProtocolConfig c;
  c.auth_offered = c.auth_required = true;
  c.tls_available = !tls;
  c.tls_active = tls;
  return c;
}

TEST(SmtpProtocol, SubmissionNeedsAuthAfterTls) {
  Driver d(submission_config(false));
  d.feed("EHLO c\r\n");
  EXPECT_EQ(d.sent.find("AUTH"), std::string::npos) << "no AUTH offered in clear";
  d.feed("AUTH PLAIN AGFsaWNlAGdvb2Q=\r\nMAIL FROM:<alice@example.com>\r\n");
  EXPECT_NE(d.sent.find("538 5.7.11"), std::string::npos) << d.sent;
  EXPECT_NE(d.sent.find("530 5.7.0 Authentication required"), std::string::npos) << d.sent;
  EXPECT_TRUE(d.credentials.empty());  // never even looked at in clear
}

TEST(SmtpProtocol, AuthPlainAndLoginWholeAndByteByByte) {
  for (bool bytewise : {false, true}) {
    Driver d(submission_config(true));
    std::string input =
        "EHLO c\r\n"
        "AUTH PLAIN AGFsaWNlAGJhZA==\r\n"  // \0alice\0bad
        "AUTH LOGIN\r\n"
        "YWxpY2U=\r\n"                      // alice
        "Z29vZA==\r\n"                      // good
        "AUTH PLAIN\r\n"
        "MAIL FROM:<alice@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n";
    if (bytewise) d.feed_bytewise(input); else d.feed(input);
    EXPECT_NE(d.sent.find("AUTH PLAIN LOGIN\r\n"), std::string::npos) << d.sent;
    EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "535", "334", "334", "235", "503", "250", "250", "354", "250", "221"})) << d.sent;
    ASSERT_EQ(d.credentials.size(), 2u);
    EXPECT_EQ(d.credentials[0].user, "alice");
    EXPECT_EQ(d.credentials[1].password, "good");
    EXPECT_EQ(d.session.auth_user(), "alice");
    EXPECT_EQ(d.stored.size(), 1u);
  }
}

// RFC 4954 5: where AUTH is offered, MAIL takes an AUTH parameter (Exim sends AUTH=<> once it has
// authenticated; a mailbox in xtext is set aside), a malformed one is a 501, and where AUTH is not
// offered the parameter is as unknown as any other (555).
TEST(SmtpProtocol, MailTakesTheAuthParameterWhereAuthIsOffered) {
  Driver d(submission_config(true));
  d.feed("EHLO c\r\nAUTH PLAIN AGFsaWNlAGdvb2Q=\r\n"
         "MAIL FROM:<alice@example.com> AUTH=<> SIZE=20\r\nRSET\r\n"
         "MAIL FROM:<alice@example.com> BODY=8BITMIME AUTH=alice+2Bx@example.com\r\nRSET\r\n"
         "MAIL FROM:<alice@example.com> AUTH=\r\n"
         "MAIL FROM:<alice@example.com> AUTH=a+2\r\n"
         "MAIL FROM:<alice@example.com> AUTH=a=b\r\n"
         "MAIL FROM:<alice@example.com> AUTH=<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
         "Subject: x\r\n\r\nhi\r\n.\r\n");
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "235", "250", "250", "250", "250", "501", "501", "501",
                                                 "250", "250", "354", "250"})) << d.sent;
  ASSERT_EQ(d.stored.size(), 1u);
  EXPECT_EQ(d.stored[0].mail_from, "alice@example.com");
  Driver inbound;  // no AUTH offered
  inbound.feed("EHLO c\r\nMAIL FROM:<a@example.net> AUTH=<>\r\n");
  EXPECT_EQ(inbound.codes(), (std::vector<std::string>{"220", "250", "555"})) << inbound.sent;
}

TEST(SmtpProtocol, AuthRefusesWhatItCannotRead) {
  Driver d(submission_config(true));
  d.feed("EHLO c\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!!!\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN Ym9iAGFsaWNlAGdvb2Q=\r\n"
         "AUTH PLAIN AGFsaWNl\r\n");
  // unknown mechanism 504, bad base64 501, cancelled 501, another user's authorisation identity
  // 535, a PLAIN answer without two NULs 501
  EXPECT_EQ(d.codes(), (std::vector<std::string>{"220", "250", "504", "501", "334", "501", "535", "501"})) << d.sent;
  EXPECT_TRUE(d.credentials.empty());
  EXPECT_TRUE(d.session.auth_user().empty());
  // After STARTTLS on a plain listener the session starts over unauthenticated.
  Driver t(submission_config(false));
  t.feed("EHLO c\r\nSTARTTLS\r\n");
  t.handle(t.session.tls_started());
  t.feed("EHLO c\r\nMAIL FROM:<a@example.com>\r\n");
  EXPECT_NE(t.sent.find("AUTH PLAIN LOGIN\r\n"), std::string::npos);
  EXPECT_NE(t.sent.find("530 5.7.0"), std::string::npos);
}

// ---- a server's replies, as the delivery client reads them (api/smtp/reply.h) ----

// Every reply read from the bytes, fed `step` bytes at a time.
std::vector<ClientReply> read_all(ReplyReader& r, std::string_view bytes, std::size_t step) {
  std::vector<ClientReply> out;
  for (std::size_t pos = 0; pos < bytes.size(); pos += step) {
    r.feed(bytes.substr(pos, step));
    while (auto reply = r.next()) {
      out.push_back(*reply);
      if (r.failed()) return out;
    }
  }
  return out;
}

TEST(SmtpReply, MultiLineRepliesComeOutWholeHoweverTheBytesArrive) {
  const std::string bytes =
      "220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 STARTTLS\r\n"
      "550-5.1.1 no such\r\n550 5.1.1 user\r\n354\r\n";
  for (std::size_t step : {std::size_t{1}, std::size_t{2}, std::size_t{7}, bytes.size()}) {
    ReplyReader r;
    auto replies = read_all(r, bytes, step);
    ASSERT_EQ(replies.size(), 4u) << step;
    EXPECT_EQ(replies[0].to_string(), "220 mx.example ESMTP");
    EXPECT_EQ(replies[1].code, 250);
    EXPECT_EQ(replies[1].text, "mx.example; PIPELINING; SIZE 10240000; STARTTLS");
    EXPECT_EQ(replies[2].to_string(), "550 5.1.1 no such; 5.1.1 user");
    EXPECT_TRUE(replies[2].code == 550 && !replies[2].temporary());
    EXPECT_EQ(replies[3].code, 354);
    EXPECT_EQ(replies[3].text, "");
    // The lines of the last reply (an EHLO reply's extensions are lines 1 and on).
    EXPECT_EQ(r.last_lines(), std::vector<std::string>{""});
    EXPECT_FALSE(r.failed());
  }
}

TEST(SmtpReply, AnEndlessReplyIsAnErrorNotAGrowingBuffer) {
  // A hostile exchanger answers EHLO with "250-" lines that never end the reply, or one line that
  // never ends: past kMaxReplyBytes the reader gives up with code 0 (a temporary failure: the mail
  // stays queued) and keeps no more than it was given since.
  for (const std::string& unit : {std::string("250-0123456789012345678901234567890123456789\r\n"), std::string("x")}) {
    ReplyReader r;
    std::string head = unit == "x" ? "250 " : "";
    r.feed(head);
    std::optional<ClientReply> got;
    std::size_t fed = 0;
    while (!got && fed < 4 * ReplyReader::kMaxReplyBytes) {
      r.feed(unit);
      fed += unit.size();
      got = r.next();
    }
    ASSERT_TRUE(got.has_value()) << "no end to the reply after " << fed << " bytes";
    EXPECT_EQ(got->code, 0);
    EXPECT_EQ(got->text, "reply too long");
    EXPECT_TRUE(got->temporary());
    EXPECT_LE(fed, ReplyReader::kMaxReplyBytes + unit.size());
    // Sticky: what follows on that connection is not read as replies.
    r.feed("250 ok\r\n");
    ASSERT_TRUE(r.next().has_value());
    EXPECT_EQ(r.next()->code, 0);
  }
  // A long reply under the bound is read whole.
  ReplyReader r;
  std::string ok;
  for (int i = 0; i < 1000; ++i) ok += "250-line " + std::to_string(i) + "\r\n";
  ok += "250 end\r\n";
  auto replies = read_all(r, ok, 4096);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].code, 250);
  EXPECT_EQ(r.last_lines().size(), 1001u);
}

TEST(SmtpReply, MalformedRepliesAndControlBytes) {
  for (const char* bad : {"hello\r\n", "25\r\n", "650 no\r\n", "250_x\r\n", "2x0 y\r\n", "\r\n", "150 wait\r\n"}) {
    ReplyReader r;
    r.feed(bad);
    auto reply = r.next();
    ASSERT_TRUE(reply.has_value()) << bad;
    EXPECT_EQ(reply->code, 0) << bad;
    EXPECT_EQ(reply->text.rfind("malformed reply: ", 0), 0u) << bad;
  }
  // Control bytes, a bare LF among them, are '?': the text goes into logs, the queue and DSNs.
  ReplyReader r;
  r.feed(std::string("550 no\x1b[2J such\nuser\x7f\0x\r\n", 25));
  auto reply = r.next();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->to_string(), "550 no?[2J such?user??x");
  // A bare "250" line is a whole reply with no text.
  r.reset();
  r.feed("250\r\n");
  EXPECT_EQ(r.next()->to_string(), "250 ");
}

}  // namespace
}  // namespace mailark::smtp
