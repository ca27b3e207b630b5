// The SMTP protocol core, without sockets: whole inputs, byte-by-byte inputs, and hostile inputs.
#include <gtest/gtest.h>

#include "api/smtp/protocol.h"

namespace mailark::smtp {
namespace {

// Accepts any sender; recipients only in example.com (a gateway's inbound rule).
class DomainPolicy : public Policy {
 public:
  std::optional<Reply> check_sender(const std::string&) override { return std::nullopt; }
  std::optional<Reply> check_recipient(const std::string& rcpt) override {
    auto at = rcpt.rfind('@');
    if (at != std::string::npos && rcpt.substr(at + 1) == "example.com") return std::nullopt;
    return Reply{554, "5.7.1 Relay access denied"};
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

  explicit Driver(ProtocolConfig cfg = {}) : session(cfg, policy) { sent = session.greeting(); }

  void handle(Session::Output out) {
    while (true) {
      sent += out.to_send;
      closed = closed || out.close;
      tls_requested = tls_requested || out.start_tls;
      if (!out.message) return;
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

TEST(SmtpProtocol, DeclaredSizeOverTheLimitIsRefusedAtMail) {
  ProtocolConfig cfg;
  cfg.max_message_bytes = 1000;
  Driver d(cfg);
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org> SIZE=5000\r\n");
  EXPECT_EQ(d.codes().back(), "552");
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

TEST(SmtpProtocol, BareLfLinesAreNormalisedButOnlyCrLfDotCrLfEndsTheData) {
  Driver d;
  d.feed("EHLO x\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
         "line one\nline two\r\n.\nMAIL FROM:<smuggled@evil.example>\r\nstill data\r\n.\r\n");
  ASSERT_EQ(d.stored.size(), 1u);
  EXPECT_TRUE(d.stored[0].bare_lf_seen);
  EXPECT_EQ(d.stored[0].data, "line one\r\nline two\r\n\r\nMAIL FROM:<smuggled@evil.example>\r\nstill data\r\n");
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

TEST(SmtpProtocol, PathSyntax) {
  EXPECT_EQ(parse_path("<a@b.example>", false)->first, "a@b.example");
  EXPECT_EQ(parse_path(" <a@b.example> SIZE=10", false)->second, "SIZE=10");
  EXPECT_EQ(parse_path("<@relay.example:a@b.example>", false)->first, "a@b.example");
  EXPECT_EQ(parse_path("<Postmaster>", false)->first, "Postmaster");
  EXPECT_EQ(parse_path("<>", true)->first, "");
  EXPECT_FALSE(parse_path("<>", false));
  EXPECT_FALSE(parse_path("a@b.example", false)) << "angle brackets are required";
  EXPECT_FALSE(parse_path("<a b@c.example>", false));
  EXPECT_FALSE(parse_path("<a@b.example", false));
  EXPECT_FALSE(parse_path("<nodomain>", true));
  EXPECT_TRUE(parse_path("<\"john smith\"@example.com>", false));
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

}  // namespace
}  // namespace mailark::smtp
