#include "engine/sources.h"

#include <gtest/gtest.h>

#include <map>

#include "tests/test_util.h"

namespace mailark {
namespace {

struct Walk {
  std::vector<SourceMessage> messages;
  std::map<std::string, std::string> errors;
  std::vector<std::string> skipped;
};

Walk walk(const std::vector<std::string>& paths, const Limits& limits = Limits{}) {
  Walk w;
  SourceCallbacks cb;
  cb.on_message = [&](SourceMessage&& m) { w.messages.push_back(std::move(m)); };
  cb.on_error = [&](const std::string& origin, const std::string& reason) { w.errors[origin] = reason; };
  cb.on_skipped = [&](const std::string& path, const std::string&) { w.skipped.push_back(path); };
  EXPECT_TRUE(walk_sources(paths, limits, cb).ok());
  return w;
}

TEST(Sources, MboxIsSplitOnFromLinesAfterABlankLine) {
  test::ScratchDir dir;
  test::write_file(dir / "box.mbox",
                   "From alice@example.com Thu Jan  4 10:00:00 2001\nSubject: one\n\nbody one\n"
                   "From inside the body is not a separator\n\n"
                   "From bob@example.com Fri Jan  5 11:00:00 2001\nSubject: two\n\nbody two\n");
  Walk w = walk({dir / "box.mbox"});
  ASSERT_EQ(w.messages.size(), 2u);
  EXPECT_EQ(w.messages[0].origin, dir / "box.mbox#1");
  EXPECT_EQ(w.messages[0].raw, "Subject: one\n\nbody one\nFrom inside the body is not a separator\n");
  EXPECT_EQ(w.messages[0].mail_from, "alice@example.com");
  EXPECT_EQ(w.messages[0].received_at, 978602400);
  EXPECT_EQ(w.messages[1].raw, "Subject: two\n\nbody two\n");
}

TEST(Sources, OversizedMboxMessageIsReportedAndTheRestIsRead) {
  test::ScratchDir dir;
  std::string big(5000, 'x');
  test::write_file(dir / "box.mbox", "From a@x Thu Jan  4 10:00:00 2001\nSubject: big\n\n" + big +
                                         "\n\nFrom b@x Thu Jan  4 10:00:00 2001\nSubject: small\n\nok\n");
  Limits l;
  l.max_message_bytes = 1000;
  l.max_line_bytes = 2000;
  Walk w = walk({dir / "box.mbox"}, l);
  ASSERT_EQ(w.messages.size(), 1u);
  EXPECT_EQ(w.messages[0].raw, "Subject: small\n\nok\n");
  ASSERT_EQ(w.errors.count(dir / "box.mbox#1"), 1u);
  EXPECT_NE(w.errors[dir / "box.mbox#1"].find("larger than"), std::string::npos);
}

TEST(Sources, OversizedSingleFileIsRefusedWithoutBeingRead) {
  test::ScratchDir dir;
  test::write_file(dir / "big.eml", "Subject: big\n\n" + std::string(5000, 'x'));
  Limits l;
  l.max_message_bytes = 1000;
  Walk w = walk({dir / "big.eml"}, l);
  EXPECT_TRUE(w.messages.empty());
  EXPECT_NE(w.errors[dir / "big.eml"].find("over the limit"), std::string::npos);
}

TEST(Sources, MaildirReadsCurAndNewSkipsTmpAndMetadata) {
  test::ScratchDir dir;
  test::write_file(dir / "Maildir/cur/1000000001.M1.host:2,S", "Subject: cur\n\nc\n");
  test::write_file(dir / "Maildir/new/1000000002.M2.host", "Subject: new\n\nn\n");
  test::write_file(dir / "Maildir/tmp/1000000003.M3.host", "Subject: in delivery\n\nt\n");
  test::write_file(dir / "Maildir/dovecot-uidlist", "3 V1 N4\n");
  test::write_file(dir / "Maildir/.Sent/cur/1000000004.M4.host:2,S", "Subject: sent\n\ns\n");
  Walk w = walk({dir / "Maildir"});
  std::vector<std::string> subjects;
  for (const auto& m : w.messages) subjects.push_back(m.raw.substr(9, m.raw.find('\n') - 9));
  std::sort(subjects.begin(), subjects.end());
  EXPECT_EQ(subjects, (std::vector<std::string>{"cur", "new", "sent"}));
  EXPECT_EQ(w.skipped.size(), 1u);
  EXPECT_TRUE(w.errors.empty());
  for (const auto& m : w.messages)
    if (m.raw.find("cur") != std::string::npos) {
      EXPECT_EQ(m.received_at, 1000000001);
    }
}

TEST(Sources, DirectoryFilesAreReadInNaturalOrder) {
  test::ScratchDir dir;
  for (int i : {10, 2, 1})
    test::write_file(dir / ("inbox/" + std::to_string(i)), "Subject: " + std::to_string(i) + "\n\nx\n");
  Walk w = walk({dir / "inbox"});
  ASSERT_EQ(w.messages.size(), 3u);
  EXPECT_EQ(w.messages[0].origin, dir / "inbox/1");
  EXPECT_EQ(w.messages[1].origin, dir / "inbox/2");
  EXPECT_EQ(w.messages[2].origin, dir / "inbox/10");
}

TEST(Sources, ByteOrderMarkBeforeTheFirstFromLineIsAnMbox) {
  test::ScratchDir dir;
  test::write_file(dir / "bom.mbox",
                   "\xEF\xBB\xBF"
                   "From a@x Thu Jan  4 10:00:00 2001\nSubject: bom\n\nb\n");
  Walk w = walk({dir / "bom.mbox"});
  ASSERT_EQ(w.messages.size(), 1u);
  EXPECT_EQ(w.messages[0].raw, "Subject: bom\n\nb\n");
}

TEST(Sources, ByteOrderMarkBeforeASingleMessageIsTheFilesNotTheMessages) {
  test::ScratchDir dir;
  test::write_file(dir / "saved.eml", "\xEF\xBB\xBF" "From: a@x\r\nSubject: saved by Notepad\r\n\r\nb\r\n");
  test::write_file(dir / "only-a-mark.eml", "\xEF\xBB\xBF");
  test::write_file(dir / "mark-then-text.eml", "\xEF\xBB\xBF" "not mail at all\n");
  Walk w = walk({dir / "saved.eml", dir / "only-a-mark.eml", dir / "mark-then-text.eml"});
  ASSERT_EQ(w.messages.size(), 1u);
  EXPECT_EQ(w.messages[0].raw, "From: a@x\r\nSubject: saved by Notepad\r\n\r\nb\r\n");
  EXPECT_EQ(w.errors[dir / "only-a-mark.eml"], "empty file");
  EXPECT_EQ(w.errors[dir / "mark-then-text.eml"], "not an email message: the first line is not a header field");
}

// An import on a disk short of room stops reading (tools/cmd_import.cc): stop is asked before each
// file and each message of an mbox, and nothing is read once it said so.
TEST(Sources, AStopEndsTheWalkBeforeTheNextMessageOrFile) {
  test::ScratchDir dir;
  std::string box;
  for (int i = 1; i <= 3; ++i)
    box += "From a@example.com Thu Jan  4 10:00:00 2001\nSubject: " + std::to_string(i) + "\n\nbody\n\n";
  test::write_file(dir / "a/box.mbox", box);
  test::write_file(dir / "a/z-single.eml", "Subject: later\n\nbody\n");
  for (std::size_t after : {0u, 1u, 2u}) {
    Walk w;
    SourceCallbacks cb;
    cb.on_message = [&](SourceMessage&& m) { w.messages.push_back(std::move(m)); };
    cb.on_error = [&](const std::string& origin, const std::string& reason) { w.errors[origin] = reason; };
    cb.stop = [&] { return w.messages.size() >= after; };
    ASSERT_TRUE(walk_sources({dir / "a"}, Limits{}, cb).ok());
    EXPECT_EQ(w.messages.size(), after);
    EXPECT_TRUE(w.errors.empty());
  }
}

TEST(Sources, MissingPathIsAnErrorBeforeAnythingIsRead) {
  SourceCallbacks cb;
  int calls = 0;
  cb.on_message = [&](SourceMessage&&) { ++calls; };
  cb.on_error = [&](const std::string&, const std::string&) { ++calls; };
  auto s = walk_sources({"/nonexistent/mail"}, Limits{}, cb);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace mailark
