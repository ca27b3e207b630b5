#include "engine/message.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "engine/html_text.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

Limits limits;

TEST(MessageModel, DecodesRfc2047SubjectAndAddresses) {
  std::string raw =
      "From: =?iso-8859-1?q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>\n"
      "To: =?utf-8?b?5p2O5piO?= <li@example.cn>, plain@example.com\n"
      "Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= "
      "=?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=\n"
      "Message-ID: <abc@example.com>\n"
      "\n"
      "body\n";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->subject, "If you can read this you understand the example.");
  ASSERT_EQ(m->from.size(), 1u);
  EXPECT_EQ(m->from[0].name, "André Pirard");
  EXPECT_EQ(m->from[0].addr, "PIRARD@vm1.ulg.ac.be");
  ASSERT_EQ(m->to.size(), 2u);
  EXPECT_EQ(m->to[0].name, "李明");
  EXPECT_EQ(m->message_id, "abc@example.com");
  EXPECT_FALSE(m->malformed);
}

TEST(MessageModel, ConvertsBodyCharsetToUtf8) {
  std::string raw =
      "From: a@example.com\nSubject: x\nContent-Type: text/plain; charset=iso-8859-1\n"
      "Content-Transfer-Encoding: quoted-printable\n\nCaf=E9 cr=E8me\n";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_NE(m->body_text.find("Café crème"), std::string::npos) << m->body_text;
}

TEST(MessageModel, Rfc2231FileNameAndAttachmentHash) {
  std::string raw =
      "From: a@example.com\nSubject: report\nMIME-Version: 1.0\n"
      "Content-Type: multipart/mixed; boundary=XX\n\n"
      "--XX\nContent-Type: text/plain\n\nsee attached\n"
      "--XX\nContent-Type: application/pdf\n"
      "Content-Disposition: attachment; filename*=utf-8''Rapport%20%C3%A9t%C3%A9.pdf\n"
      "Content-Transfer-Encoding: base64\n\naGVsbG8=\n--XX--\n";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->has_attachment());
  const MimePart* att = nullptr;
  for (const auto& p : m->parts)
    if (p.is_attachment) att = &p;
  ASSERT_NE(att, nullptr);
  EXPECT_EQ(att->filename, "Rapport été.pdf");
  EXPECT_EQ(att->content_type, "application/pdf");
  EXPECT_EQ(att->size, 5u);
  EXPECT_EQ(att->sha256, sha256("hello"));
  EXPECT_NE(m->body_text.find("see attached"), std::string::npos);
}

TEST(MessageModel, ForwardedMessageIsAnAttachmentWhoseTextIsIndexed) {
  std::string inner = "From: c@example.com\nSubject: inner secret plan\n\nthe inner body text\n";
  std::string raw =
      "From: a@example.com\nSubject: fwd\nMIME-Version: 1.0\n"
      "Content-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\n\nouter\n"
      "--XX\nContent-Type: message/rfc822\n\n" +
      inner + "--XX--\n";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->has_attachment());
  EXPECT_NE(m->attachment_text.find("the inner body text"), std::string::npos);
  EXPECT_NE(m->attachment_text.find("inner secret plan"), std::string::npos);
  EXPECT_EQ(m->body_text.find("inner body"), std::string::npos) << "forwarded text is not the body";
}

TEST(MessageModel, HtmlIsReducedToText) {
  EXPECT_EQ(html_to_text("<p>Fish &amp; chips</p><script>var x=1;</script><style>p{}</style>caf&#233;"),
            "\nFish & chips\ncafé");
  std::string raw =
      "From: a@example.com\nSubject: h\nContent-Type: text/html\n\n"
      "<html><head><title>T</title></head><body><b>Quarterly</b> results&nbsp;up</body></html>\n";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_NE(m->body_text.find("Quarterly"), std::string::npos);
  EXPECT_EQ(m->body_text.find("<b>"), std::string::npos);
}

TEST(MessageModel, AddressHeadersGMimeCannotParseKeepEveryAddress) {
  // From the Enron corpus: local parts with two dots are invalid but real.
  std::string raw =
      "From: a..davis@enron.com\nTo: kenneth.lay@enron.com, j..smith@enron.com\nSubject: x\n\nbody\n";
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->from.size(), 1u);
  EXPECT_EQ(m->from[0].addr, "a..davis@enron.com");
  ASSERT_EQ(m->to.size(), 2u);
  EXPECT_EQ(m->to[1].addr, "j..smith@enron.com");
}

TEST(MessageModel, InvalidDateIsAbsentNotAnError) {
  auto m = parse_message("From: a@example.com\nDate: the day after tomorrow\nSubject: x\n\nbody\n", limits);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->date.has_value());
}

TEST(MessageModel, ReferencesAndInReplyTo) {
  auto m = parse_message(
      "From: a@example.com\nIn-Reply-To: <p1@x>\nReferences: <p0@x> <p1@x>\nSubject: Re: x\n\nbody\n",
      limits);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->in_reply_to, "p1@x");
  EXPECT_EQ(m->references, (std::vector<std::string>{"p0@x", "p1@x"}));
}

TEST(MessageModel, NonMailIsRefusedWithAReason) {
  EXPECT_EQ(parse_message("", limits).error().code, ErrorCode::kBadInput);
  EXPECT_EQ(not_mail_reason(""), "empty file");
  auto png = parse_message(std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16), limits);
  ASSERT_FALSE(png.ok());
  EXPECT_NE(png.error().context.find("not an email message"), std::string::npos);
  EXPECT_TRUE(not_mail_reason("From alice@example.com Thu Jan  1 00:00:00 2001\nSubject: x\n\nb\n").empty());
}

TEST(MessageModelCorpus, EveryMimeEdgeCaseParsesOrIsRefusedWithAReason) {
  REQUIRE_CORPUS();
  std::size_t parsed = 0, refused = 0, malformed = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(test::corpus_dir() + "/mime-edge")) {
    if (!e.is_regular_file()) continue;
    std::string raw = test::read_file(e.path().string());
    if (raw.size() > limits.max_message_bytes) continue;
    auto m = parse_message(raw, limits);
    if (m.ok()) {
      ++parsed;
      if (m->malformed) {
        ++malformed;
        EXPECT_FALSE(m->problems.empty()) << e.path();
      }
    } else {
      ++refused;
      EXPECT_EQ(m.error().code, ErrorCode::kBadInput) << e.path();
      EXPECT_FALSE(m.error().context.empty());
    }
  }
  EXPECT_GT(parsed, 600u);
  std::cout << "mime-edge: " << parsed << " parsed (" << malformed << " malformed), " << refused
            << " refused\n";
}

}  // namespace
}  // namespace mailark

namespace mailark {
namespace {

TEST(MessageModel, HeaderFieldIsFoundInTheHeaderSectionOnly) {
  const std::string m = "Received: x\r\nx-MAILARK-probe: abc.1.\r\n\tdef\r\nSubject: s\r\n\r\nX-Mailark-Probe: body\r\n";
  EXPECT_EQ(header_field(m, "X-Mailark-Probe"), " abc.1.\tdef") << "case-insensitive, folded lines joined";
  EXPECT_EQ(header_field(m, "Subject"), " s");
  EXPECT_FALSE(header_field("Subject: s\r\n\r\nX-Mailark-Probe: in the body\r\n", "X-Mailark-Probe").has_value());
  EXPECT_FALSE(header_field("X-Mailark-Probex: no\r\n\r\n", "X-Mailark-Probe").has_value()) << "a longer name";
  EXPECT_EQ(header_field("X-Mailark-Probe:last", "X-Mailark-Probe"), "last") << "no line end";
  EXPECT_FALSE(header_field("", "X-Mailark-Probe").has_value());
}

}  // namespace
}  // namespace mailark

namespace mailark {
namespace {

// parse_plain_text (message.h): the messages it takes give parse_message's subject and body text; every
// kind of message whose text needs MIME decoding, or could, is left to GMime.
TEST(PlainText, SimpleMessagesGiveParseMessagesSubjectAndBody) {
  Limits limits;  // changed below
  const std::string cases[] = {
      "Subject: power crisis\r\nFrom: a@b.example\r\n\r\nThe power crisis\r\ndeepens.\r\n",
      "From: a@b.example\nSubject:   folded\n\tsubject line\n  again\nContent-Type: text/plain; charset=\"iso-8859-1\"; "
      "format=flowed\nContent-Transfer-Encoding: 7bit\n\nbody\n",
      "Content-Type: TEXT/PLAIN;\r\n charset=us-ascii\r\nsubject:lower case name\r\n\r\n",
      "X-Empty-Subject: yes\r\nSubject:\r\n\r\nno subject\r\n",
      "To: x@y.example\r\n\r\n\r\nblank lines first\r\n\r\n",
      // A header line ending in LF, then an empty line ending in CRLF: the body starts there
      // (fuzz/regressions/message/plain-text-mixed-line-ends, found by the message target).
      "To: x@y.example\r\nSubject: mixed\n\r\nfirst paragraph\r\n\r\nsecond\r\n",
      "Subject: lf then crlf\n\r\nbody\n\nmore\r\n",
  };
  for (const auto& raw : cases) {
    auto plain = parse_plain_text(raw, limits);
    ASSERT_TRUE(plain.has_value()) << raw;
    auto full = parse_message(raw, limits);
    ASSERT_TRUE(full.ok()) << raw;
    EXPECT_EQ(plain->subject, full->subject) << raw;
    EXPECT_EQ(plain->body_text, full->body_text) << raw;
    EXPECT_TRUE(full->attachment_text.empty() && !full->has_attachment()) << raw;
  }
  limits.max_index_text_bytes = 10;
  auto cut = parse_plain_text("Subject: s\r\n\r\n0123456789abcdef\r\n", limits);
  ASSERT_TRUE(cut.has_value());
  EXPECT_EQ(cut->body_text, "0123456789");
  EXPECT_EQ(cut->body_text, parse_message("Subject: s\r\n\r\n0123456789abcdef\r\n", limits)->body_text);
}

TEST(PlainText, AnythingThatNeedsDecodingIsLeftToGMime) {
  const Limits limits;
  const std::string head = "From: a@b.example\r\nSubject: s\r\n";
  const std::string cases[] = {
      "Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\n",                        // an encoded word
      head + "Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n",          // base64
      head + "Content-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n",   // quoted-printable
      head + "Content-Type: text/plain; name=notes.txt\r\n\r\nbody\r\n",        // an attachment
      head + "Content-Type: text/plain; charset=utf-7\r\n\r\n+AGE-\r\n",        // not ASCII-compatible
      head + "Content-Type: text/plain; charset*=us-ascii''x\r\n\r\nbody\r\n",  // RFC 2231
      head + "Content-Type: text/plain (comment)\r\n\r\nbody\r\n",
      head + "Content-Type: text/html\r\n\r\n<p>body</p>\r\n",
      head + "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
      head + "Content-Disposition: attachment\r\n\r\nbody\r\n",
      head + "Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\nbody\r\n",  // twice
      head + "Subject: two\r\n\r\nbody\r\n",                                          // two subjects
      head + "\r\nbody with a bare\rCR\r\n",
      head + "\r\nan escape \x1b$B iso-2022\r\n",
      head + "\r\n8-bit caf\xc3\xa9\r\n",
      head + std::string("\r\na NUL \0 inside\r\n", 18),
      "From a@b.example Mon Mar  2 09:00:00 2026\r\n" + head + "\r\nmbox line\r\n",
      " continuation first\r\n" + head + "\r\nbody\r\n",
      head + "Bad Name: x\r\n\r\nbody\r\n",
      head + "only headers, no blank line\r\n",
      "not mail at all",
      "\r\nno header fields\r\n",
  };
  for (const auto& raw : cases) EXPECT_FALSE(parse_plain_text(raw, limits).has_value()) << raw;
  Limits small;
  small.max_part_bytes = 4;
  EXPECT_FALSE(parse_plain_text(head + "\r\nlonger than four\r\n", small).has_value());
  small = Limits{};
  small.max_header_bytes = 10;
  EXPECT_FALSE(parse_plain_text(head + "\r\nbody\r\n", small).has_value());
}

}  // namespace
}  // namespace mailark

// Found by fuzz/message_fuzz.cc (fuzz/regressions/message/folded-blank-subject): a subject folded
// from an empty first line kept the space after the fold where GMime trims it.
TEST(PlainText, ASubjectFoldedFromAnEmptyLineIsTrimmedAsGMimeTrimsIt) {
  using namespace mailark;
  const std::string raw("Subject:\r\n og@Tenti=y\r\n \n\r\n oa", 30);
  Limits limits;
  ParsedMessage m = parse_message_or_flag(raw, limits);
  auto plain = parse_plain_text(raw, limits);
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(m.subject, "og@Tenti=y");
  EXPECT_EQ(plain->subject, m.subject);
  EXPECT_EQ(plain->body_text, m.body_text);
  EXPECT_EQ(parse_message_or_flag(raw, limits, /*headers_only=*/true).subject, m.subject);
}
