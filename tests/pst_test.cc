// Outlook PST files (engine/pst.h) and the message writer they use (write_converted_message).
#include "engine/pst.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "engine/message.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

struct Read {
  std::vector<SourceMessage> messages;
  std::map<std::string, std::string> errors;
  std::map<std::string, std::string> skipped;
};

SourceCallbacks callbacks(Read& r) {
  SourceCallbacks cb;
  cb.on_message = [&](SourceMessage&& m) { r.messages.push_back(std::move(m)); };
  cb.on_error = [&](const std::string& origin, const std::string& reason) { r.errors[origin] = reason; };
  cb.on_skipped = [&](const std::string& origin, const std::string& what) { r.skipped[origin] = what; };
  return cb;
}

Read read(const std::string& path, const Limits& limits = Limits{}) {
  Read r;
  read_pst(path, limits, callbacks(r));
  return r;
}

std::string pst(const std::string& name) { return test::corpus_dir() + "/pst/" + name; }

ParsedMessage parsed(const std::string& raw) {
  auto p = parse_message(raw, Limits{});
  EXPECT_TRUE(p.ok());
  return p.ok() ? *p : ParsedMessage{};
}

std::vector<std::string> attachment_names(const ParsedMessage& m) {
  std::vector<std::string> out;
  for (const auto& p : m.parts)
    if (p.is_attachment) out.push_back(p.filename);
  return out;
}

TEST(Pst, EveryMailItemOfTheCorpusIsRebuiltWithItsFolder) {
  REQUIRE_CORPUS();
  struct Want {
    const char* file;
    std::size_t messages;
    const char* folder;
  };
  for (const Want& w : {Want{"pstsdk-via-pst-exp/sample1.pst", 1, "Sample1"},
                        Want{"pstsdk-via-pst-exp/sample2.pst", 1, "Sample2"},
                        Want{"pstsdk-via-pst-exp/submessage.pst", 1, "submessage"},
                        Want{"pstsdk-via-pst-exp/test_ansi.pst", 1, "Folder"},
                        Want{"pstsdk-via-pst-exp/test_unicode.pst", 2, nullptr},
                        Want{"ruby-msg/200 recipients.pst", 1, ""}, Want{"ruby-msg/attachAndInline.pst", 1, nullptr},
                        Want{"ruby-msg/msgInMsg.pst", 1, ""}}) {
    Read r = read(pst(w.file));
    EXPECT_TRUE(r.errors.empty()) << w.file << ": " << (r.errors.empty() ? "" : r.errors.begin()->second);
    ASSERT_EQ(r.messages.size(), w.messages) << w.file;
    for (std::size_t i = 0; i < r.messages.size(); ++i) {
      const SourceMessage& m = r.messages[i];
      EXPECT_EQ(m.origin, pst(w.file) + "#" + std::to_string(i + 1));
      EXPECT_EQ(m.file, pst(w.file));
      if (w.folder) {
        EXPECT_EQ(m.folder, w.folder) << w.file;
      }
      EXPECT_GT(m.received_at, 1000000000) << w.file;
      ParsedMessage p = parsed(m.raw);
      EXPECT_FALSE(p.malformed) << w.file << ": " << (p.problems.empty() ? "" : p.problems[0]);
      EXPECT_FALSE(p.subject.empty()) << w.file;
    }
  }
}

TEST(Pst, WhatIsNotMailIsSkippedAndNamed) {
  REQUIRE_CORPUS();
  Read dist = read(pst("java-libpst/dist-list.pst"));
  EXPECT_TRUE(dist.messages.empty());
  EXPECT_TRUE(dist.errors.empty());
  std::multiset<std::string> kinds;
  for (const auto& [origin, what] : dist.skipped) {
    EXPECT_EQ(origin.rfind(pst("java-libpst/dist-list.pst") + "#item 0x", 0), 0u) << origin;
    kinds.insert(what);
  }
  EXPECT_EQ(kinds, (std::multiset<std::string>{"a contact (IPM.Contact), not mail",
                                               "an appointment (IPM.Appointment), not mail",
                                               "an item (IPM.DistList), not mail"}));
  Read locked = read(pst("java-libpst/passworded.pst"));  // a PST password locks Outlook, not the data
  EXPECT_TRUE(locked.messages.empty());
  EXPECT_TRUE(locked.errors.empty());
  std::size_t stores = 0;
  for (const auto& [origin, what] : locked.skipped) stores += what.find("second message store") != std::string::npos;
  EXPECT_EQ(stores, 3u);
}

TEST(Pst, AttachmentsInlineImagesAndEmbeddedMessagesAreKept) {
  REQUIRE_CORPUS();
  Read inl = read(pst("ruby-msg/attachAndInline.pst"));
  ASSERT_EQ(inl.messages.size(), 1u);
  ParsedMessage a = parsed(inl.messages[0].raw);
  EXPECT_EQ(a.subject, "Attach and inline");
  EXPECT_EQ(attachment_names(a), (std::vector<std::string>{"image001.png", "attach.png"}));
  EXPECT_NE(inl.messages[0].raw.find("Content-Id: <image001.png@01D78380.EF6DC500>"), std::string::npos)
      << "the inline image keeps the cid its HTML refers to";

  Read nested = read(pst("ruby-msg/msgInMsg.pst"));
  ASSERT_EQ(nested.messages.size(), 1u);
  ParsedMessage n = parsed(nested.messages[0].raw);
  EXPECT_EQ(n.subject, "I have attachments!");
  auto names = attachment_names(n);
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0], "green.png");
  // The embedded message keeps its own internet headers and its Japanese text, in UTF-8.
  EXPECT_NE(n.attachment_text.find("Microsoft Outlook から自動送信されたものです"), std::string::npos)
      << n.attachment_text;

  Read sub = read(pst("pstsdk-via-pst-exp/submessage.pst"));
  ASSERT_EQ(sub.messages.size(), 1u);
  ParsedMessage s = parsed(sub.messages[0].raw);
  EXPECT_EQ(s.message_id, "B2FDDB8BE384C94794441DB4A7F3D8B804AF79BC@TK5EX14MBXC114.redmond.corp.microsoft.com");
  bool rfc822 = false;
  for (const auto& p : s.parts) rfc822 = rfc822 || p.content_type == "message/rfc822";
  EXPECT_TRUE(rfc822);

  Read many = read(pst("ruby-msg/200 recipients.pst"));
  ASSERT_EQ(many.messages.size(), 1u);
  ParsedMessage m = parsed(many.messages[0].raw);
  ASSERT_EQ(m.to.size(), 200u);
  EXPECT_EQ(m.to[0].addr, "xmailuser1@xmailserver.test");
  EXPECT_EQ(m.to[199].addr, "xmailuser200@xmailserver.test");
}

TEST(Pst, TheSameStoreGivesTheSameBytes) {
  REQUIRE_CORPUS();
  for (const char* f : {"ruby-msg/attachAndInline.pst", "ruby-msg/msgInMsg.pst", "pstsdk-via-pst-exp/sample1.pst"}) {
    Read one = read(pst(f)), two = read(pst(f));
    ASSERT_EQ(one.messages.size(), two.messages.size());
    for (std::size_t i = 0; i < one.messages.size(); ++i) EXPECT_EQ(one.messages[i].raw, two.messages[i].raw) << f;
  }
}

TEST(Pst, AMessageLargerThanTheLimitIsAnErrorNotATruncation) {
  REQUIRE_CORPUS();
  Limits small;
  small.max_message_bytes = 4096;  // sample1's message is ~130 kB
  Read r = read(pst("pstsdk-via-pst-exp/sample1.pst"), small);
  EXPECT_TRUE(r.messages.empty());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors.begin()->first.rfind(pst("pstsdk-via-pst-exp/sample1.pst") + "#1 = item 0x", 0), 0u);
  EXPECT_NE(r.errors.begin()->second.find("larger than 4096 bytes"), std::string::npos);
}

// An import that stops (its disk is short) stops reading a PST at once, in this process or in the
// child that reads it (stopped, not read to its end with every later message dropped), and says
// nothing of the child's end: it was asked to stop.
TEST(Pst, AStopEndsTheReadingThere) {
  REQUIRE_CORPUS();
  const std::string file = pst("pstsdk-via-pst-exp/test_unicode.pst");  // two messages
  for (bool child : {false, true}) {
    for (std::size_t after : {0u, 1u}) {
      Read r;
      SourceCallbacks cb = callbacks(r);
      std::size_t asked = 0;
      cb.stop = [&] {
        ++asked;
        return r.messages.size() >= after;
      };
      if (child)
        read_pst_in_child({MAILARK_CLI_BIN, "pst-read"}, file, Limits{}, cb);
      else
        read_pst(file, Limits{}, cb);
      EXPECT_EQ(r.messages.size(), after) << (child ? "child" : "in process");
      EXPECT_TRUE(r.errors.empty()) << (child ? "child" : "in process") << ": "
                                    << (r.errors.empty() ? "" : r.errors.begin()->second);
      EXPECT_GT(asked, 0u);
    }
    // Without a stop both are read.
    Read all;
    if (child)
      read_pst_in_child({MAILARK_CLI_BIN, "pst-read"}, file, Limits{}, callbacks(all));
    else
      read_pst(file, Limits{}, callbacks(all));
    EXPECT_EQ(all.messages.size(), 2u);
  }
}

TEST(Pst, AFileThatIsNotAPstSaysSo) {
  test::ScratchDir dir;
  test::write_file(dir / "fake.pst", std::string("!BDN") + std::string(600, '\0'));
  EXPECT_TRUE(is_pst_file(dir / "fake.pst"));
  Read r = read(dir / "fake.pst");
  EXPECT_TRUE(r.messages.empty());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors.begin()->first, dir / "fake.pst");
  test::write_file(dir / "mail.eml", "Subject: x\n\nbody\n");
  EXPECT_FALSE(is_pst_file(dir / "mail.eml"));
}

// The frames of the child process carry what read_pst reports, unchanged.
TEST(Pst, FramesCarryWhatTheReaderReports) {
  REQUIRE_CORPUS();
  test::ScratchDir dir;
  for (const char* f : {"ruby-msg/msgInMsg.pst", "java-libpst/dist-list.pst"}) {
    std::string frames = dir / "frames";
    std::FILE* out = std::fopen(frames.c_str(), "wb");
    ASSERT_EQ(write_pst_frames(pst(f), Limits{}, fileno(out)), 0);
    std::fclose(out);
    Read direct = read(pst(f)), relayed;
    std::FILE* in = std::fopen(frames.c_str(), "rb");
    PstFrames got = read_pst_frames(in, pst(f), Limits{}, callbacks(relayed));
    std::fclose(in);
    EXPECT_TRUE(got.ended);
    EXPECT_TRUE(got.bad.empty()) << got.bad;
    EXPECT_EQ(got.messages, direct.messages.size());
    ASSERT_EQ(relayed.messages.size(), direct.messages.size());
    for (std::size_t i = 0; i < direct.messages.size(); ++i) {
      EXPECT_EQ(relayed.messages[i].raw, direct.messages[i].raw);
      EXPECT_EQ(relayed.messages[i].origin, direct.messages[i].origin);
      EXPECT_EQ(relayed.messages[i].folder, direct.messages[i].folder);
      EXPECT_EQ(relayed.messages[i].received_at, direct.messages[i].received_at);
    }
    EXPECT_EQ(relayed.skipped, direct.skipped);
    EXPECT_EQ(relayed.errors, direct.errors);
  }
}

TEST(Pst, AStreamThatStopsInsideAFrameSaysHowFarItGot) {
  test::ScratchDir dir;
  // One whole message frame, then a frame cut short.
  std::string frames = dir / "frames";
  std::FILE* out = std::fopen(frames.c_str(), "wb");
  auto field = [&](const std::string& v) {
    std::uint64_t n = v.size();
    for (int i = 0; i < 8; ++i) std::fputc(static_cast<int>((n >> (8 * i)) & 0xff), out);
    std::fwrite(v.data(), 1, v.size(), out);
  };
  std::fputc('m', out);
  std::fputc(4, out);
  for (const char* v : {"x.pst#1", "Subject: one\r\n\r\nbody\r\n", "1000000000", "Inbox"}) field(v);
  std::fputc('m', out);
  std::fputc(4, out);
  std::fputc(9, out);  // a length cut short
  std::fclose(out);
  Read r;
  std::FILE* in = std::fopen(frames.c_str(), "rb");
  PstFrames got = read_pst_frames(in, "x.pst", Limits{}, callbacks(r));
  std::fclose(in);
  EXPECT_FALSE(got.ended);
  EXPECT_EQ(got.messages, 1u);
  EXPECT_EQ(got.bad, "the PST reader's output ends inside a frame");
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].folder, "Inbox");
  EXPECT_EQ(r.messages[0].received_at, 1000000000);
}

TEST(ConvertedMessage, InternetHeadersAreKeptAndTheBodyRebuilt) {
  ConvertedMessage m;
  m.transport_headers =
      "Received: from a.example ([192.0.2.1])\r\n\tby b.example; Tue, 12 May 2020 14:45:17 +0900\r\n"
      "From: Ann <ann@example.com>\r\nSubject: =?utf-8?B?w6l0w6k=?=\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/alternative; boundary=\"old\"\r\nContent-Transfer-Encoding: 7bit\r\n";
  m.subject = "not used: the headers have one";
  m.message_id = "id-1@example.com";
  m.text = "the text";
  m.html = "<p>the html</p>";
  m.attachments.push_back({"a.pdf", "application/pdf", "part1@example.com", "%PDF-1.4 bytes"});
  std::string raw = write_converted_message(m);
  EXPECT_NE(raw.find("Received: from a.example ([192.0.2.1])\r\n\tby b.example"), std::string::npos) << raw;
  EXPECT_EQ(raw.find("boundary=\"old\""), std::string::npos) << "the store's Content-Type is dropped";
  EXPECT_EQ(raw.find("MIME-Version"), raw.rfind("MIME-Version")) << "one MIME-Version";
  ParsedMessage p = parsed(raw);
  EXPECT_EQ(p.subject, "été");
  EXPECT_EQ(p.message_id, "id-1@example.com") << "added where the headers lack it";
  EXPECT_NE(p.body_text.find("the text"), std::string::npos);
  EXPECT_EQ(attachment_names(p), std::vector<std::string>{"a.pdf"});
  EXPECT_NE(raw.find("Content-Id: <part1@example.com>"), std::string::npos);
  EXPECT_EQ(raw.find('\n'), raw.find("\r\n") + 1) << "CRLF line ends";
}

TEST(ConvertedMessage, WithoutInternetHeadersTheFieldsComeFromTheProperties) {
  ConvertedMessage m;
  m.from = Address{"Ann Lee", "ann@example.com"};
  m.to = {Address{"Bob", "bob@example.com"}, Address{"Carol Only-A-Name", ""}};
  m.bcc = {Address{"", "dave@example.com"}};
  m.subject = "Budget";
  m.date = 1700000000;
  m.in_reply_to = "<parent@example.com>";
  m.html = "<p>html only</p>";
  std::string raw = write_converted_message(m);
  ParsedMessage p = parsed(raw);
  ASSERT_EQ(p.from.size(), 1u);
  EXPECT_EQ(p.from[0].addr, "ann@example.com");
  ASSERT_EQ(p.to.size(), 1u);
  // A name without an address is an empty group: the name stays, no address is made up.
  EXPECT_NE(raw.find("To: Bob <bob@example.com>, Carol Only-A-Name: ;"), std::string::npos) << raw;
  ASSERT_EQ(p.bcc.size(), 1u) << "a sent item's own copy names its Bcc";
  EXPECT_EQ(p.subject, "Budget");
  EXPECT_EQ(p.date, 1700000000);
  EXPECT_EQ(p.in_reply_to, "parent@example.com");
  EXPECT_NE(raw.find("Content-Type: text/html"), std::string::npos) << "HTML alone, no empty text part";
  EXPECT_EQ(raw.find("text/plain"), std::string::npos);
  EXPECT_NE(p.body_text.find("html only"), std::string::npos);
}

}  // namespace
}  // namespace mailark
