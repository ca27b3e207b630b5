// Hostile inputs: each is parsed (flagged malformed where it is) or refused with a reason, never a
// crash, and never unbounded memory.
#include <gtest/gtest.h>

#include "engine/message.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

Limits limits;

TEST(HostileInput, TenMegabyteSingleLineBody) {
  std::string raw = "From: a@example.com\nSubject: long line\n\n" + std::string(10u << 20, 'x') + "\n";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_LE(m->body_text.size(), limits.max_index_text_bytes);
}

TEST(HostileInput, HundredThousandLineHeaderIsBoundedAndFlagged) {
  std::string raw = "From: a@example.com\nSubject: many headers\n";
  for (int i = 0; i < 100000; ++i) raw += "X-Filler-" + std::to_string(i) + ": value value value\n";
  raw += "\nbody\n";
  Limits small = limits;
  small.max_header_bytes = 1 << 20;
  auto m = parse_message(raw, small);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->malformed);
  EXPECT_EQ(m->subject, "many headers");
}

TEST(HostileInput, MimeNestedThousandsDeepIsStoppedAndFlagged) {
  std::string raw = "From: a@example.com\nSubject: deep\nMIME-Version: 1.0\n";
  const int depth = 5000;
  for (int i = 0; i < depth; ++i) {
    raw += "Content-Type: multipart/mixed; boundary=b" + std::to_string(i) + "\n\n--b" + std::to_string(i) +
           "\n";
  }
  raw += "Content-Type: text/plain\n\nthe bottom\n";
  for (int i = depth - 1; i >= 0; --i) raw += "--b" + std::to_string(i) + "--\n";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->malformed);
  EXPECT_LE(m->parts.size(), limits.max_mime_parts);
}

TEST(HostileInput, NulAndRaw8BitBytesAreKeptValidUtf8) {
  std::string raw =
      std::string("From: a@example.com\nSubject: caf\xe9 \xff\xfe\n\nnul\0byte and \x80\x81 raw\n", 56);
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->subject.empty());
  for (const std::string* s : {&m->subject, &m->body_text}) {
    // Every output string is valid UTF-8.
    std::size_t i = 0;
    while (i < s->size()) {
      unsigned char c = static_cast<unsigned char>((*s)[i]);
      std::size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      ASSERT_NE(len, 0u) << "invalid UTF-8 lead byte at " << i;
      i += len;
    }
  }
}

TEST(HostileInput, UnknownCharsetFallsBackToValidText) {
  std::string raw =
      "From: a@example.com\nSubject: =?x-no-such-charset?q?caf=E9?=\n"
      "Content-Type: text/plain; charset=x-no-such-charset\n\nbody caf\xe9\n";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_NE(m->body_text.find("body caf"), std::string::npos);
}

TEST(HostileInput, TruncatedMultipartIsMalformedButReadable) {
  std::string raw =
      "From: a@example.com\nSubject: cut short\nMIME-Version: 1.0\n"
      "Content-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\n\n"
      "the readable part\n--XX\nContent-Type: application/octet-stream\n"
      "Content-Transfer-Encoding: base64\n\nAAAA";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_NE(m->body_text.find("the readable part"), std::string::npos);
}

TEST(HostileInput, ManyPartsAreCapped) {
  std::string raw =
      "From: a@example.com\nSubject: parts\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=Z\n\n";
  for (int i = 0; i < 5000; ++i) raw += "--Z\nContent-Type: text/plain\n\np" + std::to_string(i) + "\n";
  raw += "--Z--\n";
  Limits l = limits;
  l.max_mime_parts = 100;
  auto m = parse_message(raw, l);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->malformed);
  EXPECT_LE(m->parts.size(), 100u);
}

}  // namespace
}  // namespace mailark
