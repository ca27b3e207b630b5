#include "engine/message.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

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

// What Python's email package writes for a non-ASCII name under its default policy (compat32): the
// whole "Name <addr>" as RFC 2047 words, where GMime finds an encoded word for an address, or nothing.
TEST(Message, AWholeAddressInEncodedWordsIsFound) {
  const std::string one = " =?utf-8?q?Chlo=C3=A9_Dubois_=3Cchloe=2Edubois=40northwind=2Eexample=3E?=";
  auto a = parse_address_list(one);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].addr, "chloe.dubois@northwind.example");
  EXPECT_EQ(a[0].name, "Chlo\xc3\xa9 Dubois");
  // Two addresses across two folded words (GMime parses nothing of it), with groups kept or not.
  const std::string two =
      "=?utf-8?q?Ben_Okafor_=3Cben=2Eokafor=40northwind=2Eexample=3E=2C_Chlo?=\r\n"
      " =?utf-8?q?=C3=A9_Dubois_=3Cchloe=2Edubois=40northwind=2Eexample=3E?=";
  for (bool groups : {false, true}) {
    auto b = parse_address_list(two, 1000, groups);
    ASSERT_EQ(b.size(), 2u);
    EXPECT_EQ(b[0].addr, "ben.okafor@northwind.example");
    EXPECT_EQ(b[0].name, "Ben Okafor");
    EXPECT_EQ(b[1].addr, "chloe.dubois@northwind.example");
    EXPECT_EQ(b[1].name, "Chlo\xc3\xa9 Dubois");
  }
  // A well-formed encoded name is GMime's to parse, untouched: also when the name is an address.
  auto c = parse_address_list("=?utf-8?q?Chlo=C3=A9?= <c@example.com>, =?utf-8?q?ana=40example=2Ecom?= <ana@example.com>");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].addr, "c@example.com");
  EXPECT_EQ(c[0].name, "Chlo\xc3\xa9");
  EXPECT_EQ(c[1].addr, "ana@example.com");
  EXPECT_EQ(c[1].name, "ana@example.com");
  // The bound holds on the loose path too.
  EXPECT_EQ(parse_address_list(two, 1).size(), 1u);
  // And the message model reads the same addresses.
  auto m = parse_message("From:" + one + "\r\nTo: " + two + "\r\nSubject: x\r\n\r\nbody\r\n", limits);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->from.size(), 1u);
  EXPECT_EQ(m->from[0].addr, "chloe.dubois@northwind.example");
  ASSERT_EQ(m->to.size(), 2u);
  EXPECT_EQ(m->to[0].addr, "ben.okafor@northwind.example");
}

// An address GMime cannot parse beside good ones (Enron's double dots): GMime drops it, the loose
// split keeps it, as the message model does (MessageModel.AddressHeadersGMimeCannotParseKeepEveryAddress).
TEST(Message, AddressesGMimeDropsAreKept) {
  const std::string to = "andy.zipper@enron.com, \"Palmer, Sara\" <s..palmer@enron.com>,\r\n rex.shelby@enron.com";
  for (bool groups : {false, true}) {
    auto a = parse_address_list(to, 1000, groups);
    ASSERT_EQ(a.size(), 3u);
    EXPECT_EQ(a[0].addr, "andy.zipper@enron.com");
    EXPECT_EQ(a[1].addr, "s..palmer@enron.com");
    EXPECT_EQ(a[1].name, "Palmer, Sara");
    EXPECT_EQ(a[2].addr, "rex.shelby@enron.com");
  }
  EXPECT_EQ(parse_address_list(to, 2).size(), 2u);
  // What GMime parses whole is its answer, an '@' in a quoted name included.
  auto b = parse_address_list("\"ana@example.com\" <ana@example.com>, Ben <ben@example.com>");
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].name, "ana@example.com");
  EXPECT_EQ(b[1].addr, "ben@example.com");
}

TEST(Message, EightBitBytesInsideAnEncodedWordAreReadInItsCharset) {
  // A Latin-1 byte sent raw inside a Latin-1 word (stalwart's legacy/009.eml): "Jürgen", not the
  // "JÃ¼rgen" of decoding it twice; raw UTF-8 inside a UTF-8 word the same; B words and text outside
  // words as before.
  const std::string to = "=?iso-8859-1?Q?J\xfcrgen?= =?iso-8859-1?Q?_Schm\xfcrgen?= <j@example.com>, "
                         "=?utf-8?q?Chlo\xc3\xa9?= <c@example.com>, =?utf-8?b?QmVu?= <b@example.com>";
  auto a = parse_address_list(to);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].name, "J\xc3\xbcrgen Schm\xc3\xbcrgen");
  EXPECT_EQ(a[1].name, "Chlo\xc3\xa9");
  EXPECT_EQ(a[2].name, "Ben");
  auto m = parse_message("From: =?iso-8859-1?Q?J\xfcrgen?= <j@example.com>\nTo: " + to + "\nSubject: x\n\nbody\n", limits);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->from.at(0).name, "J\xc3\xbcrgen");
  ASSERT_EQ(m->to.size(), 3u);
  EXPECT_EQ(m->to[0].name, "J\xc3\xbcrgen Schm\xc3\xbcrgen");
  EXPECT_EQ(m->to[0].addr, "j@example.com");
  // Text without such a word is left as it is.
  EXPECT_FALSE(escape_8bit_in_encoded_words("J\xfcrgen <j@example.com>"));
  EXPECT_FALSE(escape_8bit_in_encoded_words("=?iso-8859-1?Q?J=FCrgen?= <j@example.com>"));
  EXPECT_EQ(*escape_8bit_in_encoded_words("x \xff =?latin1?q?a\xfc" "b?= y"), "x \xff =?latin1?q?a=FCb?= y");
}

TEST(Message, DeclaredCharsetIsTheFirstThatSaysSomething) {
  const std::string eight = "Subject: \xc8\xab\n";  // an 8-bit header byte: something to read
  EXPECT_EQ(declared_charset(eight + "Content-Type: text/plain; charset=\"GB2312\"\n\nx\n"), "gb18030");
  EXPECT_EQ(declared_charset(eight + "Content-type : text/plain;\n charset = koi8-r ; format=flowed\n\nx\n"), "koi8-r");
  // US-ASCII and UTF-8 say nothing of 8-bit header bytes: the next part's charset is taken.
  EXPECT_EQ(declared_charset(eight + "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                                     "Content-Type: text/plain; charset=us-ascii\n\nx\n--b\n"
                                     "Content-Type: text/html; charset=ks_c_5601-1987\n\ny\n--b--\n"),
            "cp949");
  // ISO-8859-1 is read as windows-1252, the last fallback anyway: nothing, and the scan stops.
  EXPECT_EQ(declared_charset(eight + "Content-Type: text/plain; charset=iso-8859-1\n\n"
                                     "Content-Type: text/plain; charset=big5\n"),
            "");
  // Not a charset parameter, not a token: nothing.
  EXPECT_EQ(declared_charset(eight + "Content-Type: text/plain; x-charset=big5\n\nx\n"), "");
  EXPECT_EQ(declared_charset(eight + "Content-Type: text/plain; charset=\"big5 \\\" x\"\n\nx\n"), "big5-hkscs");
  EXPECT_EQ(declared_charset(eight + "Content-Type: text/plain; charset=\"$(rm)\"\n\nx\n"), "");
  EXPECT_EQ(declared_charset(eight + "Content-Type: text/plain; charset=" + std::string(41, 'a') + "\n\nx\n"), "");
  EXPECT_EQ(declared_charset(""), "");
  EXPECT_EQ(declared_charset("Subject: all ASCII\nContent-Type: text/plain; charset=gb2312\n\nx\n"), "");
  EXPECT_EQ(declared_charset("Subject: x\nContent-Type: text/plain; charset=gb2312\n\n\xc8\xab\n"), "gb18030");
}

TEST(Message, RawHeaderBytesReadInTheDeclaredCharset) {
  // Raw 8-bit header bytes (no encoded words; older mailers and much spam, the corpus's
  // mime-edge/spamassassin-t/nice/cjk/gb2312.1) are read in the charset the message declares, as
  // mail clients read them; raw UTF-8 stays UTF-8 whatever is declared; windows-1252 otherwise.
  const std::string gb =
      "From: \xcd\xf5\xd0\xa1\xc3\xf7 <wang@example.cn>\r\nTo: \xcd\xf5 <w@example.cn>\r\n"
      "Subject: \xc8\xab\xd0\xc2\xd4\xad\xd7\xb0 test\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
      "Content-Type: text/plain; charset=gb2312\r\n\r\nbody\r\n--b--\r\n";
  auto m = parse_message(gb, limits);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->subject, "全新原装 test");
  ASSERT_EQ(m->from.size(), 1u);
  EXPECT_EQ(m->from[0].name, "王小明");
  EXPECT_EQ(m->to.at(0).name, "王");
  // An attachment's raw 8-bit name too (the message's header all ASCII).
  const std::string att =
      "From: a@example.cn\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
      "Content-Type: text/plain; charset=gb2312\r\n\r\nbody\r\n--b\r\n"
      "Content-Type: application/pdf; name=\"\xcd\xf5.pdf\"\r\nContent-Disposition: attachment; filename=\"\xcd\xf5.pdf\"\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
  auto a = parse_message(att, limits);
  ASSERT_TRUE(a.ok());
  bool named = false;
  for (const auto& p : a->parts) named = named || p.filename == "王.pdf";
  EXPECT_TRUE(named);
  EXPECT_EQ(parse_content_disposition("attachment; filename=\"\xcd\xf5.pdf\"", "gb18030")->params.at(0).second, "王.pdf");
  EXPECT_EQ(decode_header_text("\xc8\xab\xd0\xc2", declared_charset(gb)), "全新");
  EXPECT_EQ(parse_address_list("\xcd\xf5\xd0\xa1\xc3\xf7 <wang@example.cn>", 10, false, declared_charset(gb)).at(0).name,
            "王小明");
  // Without a declared charset: windows-1252, as before.
  EXPECT_EQ(decode_header_text("\xc8\xab\xd0\xc2"), "È«ÐÂ");
  // Bytes that are UTF-8 are read so first, whatever is declared (C8 AB is U+022B).
  EXPECT_EQ(decode_header_text("\xc8\xab", "gb18030"), "\xc8\xab");

  auto ru = parse_message("From: \xf0\xd2\xc9\xd7\xc5\xd4 <p@example.ru>\nSubject: \xf0\xd2\xc9\xd7\xc5\xd4\n"
                          "Content-Type: text/plain; charset=\"KOI8-R\"\n\nbody\n",
                          limits);
  ASSERT_TRUE(ru.ok());
  EXPECT_EQ(ru->subject, "Привет");
  EXPECT_EQ(ru->from.at(0).name, "Привет");

  auto utf8 = parse_message("Subject: \xe7\x8e\x8b\xe5\xb0\x8f\xe6\x98\x8e\nContent-Type: text/plain; charset=koi8-r\n\nx\n", limits);
  ASSERT_TRUE(utf8.ok());
  EXPECT_EQ(utf8->subject, "王小明");

  auto latin = parse_message("Subject: it\x92s Fr\xf6sche\nContent-Type: text/plain; charset=iso-8859-1\n\nx\n", limits);
  ASSERT_TRUE(latin.ok());
  EXPECT_EQ(latin->subject, "it’s Frösche");
  // A charset iconv does not know is passed over.
  auto unknown = parse_message("Subject: Fr\xf6sche\nContent-Type: text/plain; charset=x-no-such\n\nx\n", limits);
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->subject, "Frösche");
}

TEST(Message, SplitBase64WordsAreDecodedWhole) {
  // A name or subject split into base64 words, a word before the last padded (Yandex, ruby-mail's
  // bad_subject.eml): every word's text, where GMime 3.2 alone stops at the first padding.
  const std::string from = "=?UTF-8?B?TXlTdXJ2ZXk=?=\r\n =?UTF-8?B?LmNvbSAmIEM=?=\r\n =?UTF-8?B?YXJvbCBBZGE=?=\r\n"
                           " =?UTF-8?B?bXM=?=\r\n <carol@mysurvey.com>";
  auto a = parse_address_list(from);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].name, "MySurvey.com & Carol Adams");
  EXPECT_EQ(a[0].addr, "carol@mysurvey.com");
  // "этот" split between two words ("это" + "т"), the first padded: one word, the letter whole.
  const std::string subject = "=?utf-8?b?0KHQvtCx0LXRgNC40YLQtSDQstGB0Y4g0L/QvtGH0YLRgyDQsiDRjdGC0L4=?=\r\n =?utf-8?b?0YIg0Y/RidC40Lo=?=";
  const std::string whole = "\xd0\xa1\xd0\xbe\xd0\xb1\xd0\xb5\xd1\x80\xd0\xb8\xd1\x82\xd0\xb5 \xd0\xb2\xd1\x81\xd1\x8e "
                            "\xd0\xbf\xd0\xbe\xd1\x87\xd1\x82\xd1\x83 \xd0\xb2 \xd1\x8d\xd1\x82\xd0\xbe\xd1\x82 "
                            "\xd1\x8f\xd1\x89\xd0\xb8\xd0\xba";  // "Соберите всю почту в этот ящик"
  EXPECT_EQ(decode_header_text(subject), whole);
  auto m = parse_message("From: " + from + "\r\nSubject: " + subject + "\r\nTo: x@example.com\r\n\r\nbody\r\n", limits);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->subject, whole);
  EXPECT_EQ(m->from.at(0).name, "MySurvey.com & Carol Adams");
  // An attachment's name written so ("тест" + ".pdf"), in the index and in the structure IMAP shows.
  auto att = parse_message(
      "From: a@example.com\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ntext\r\n--b\r\n"
      "Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n filename=\"=?UTF-8?B?0YLQtdGB0YI=?= =?UTF-8?B?LnBkZg==?=\"\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n",
      limits);
  ASSERT_TRUE(att.ok());
  bool found = false;
  for (const auto& p : att->parts) found = found || p.filename == "\xd1\x82\xd0\xb5\xd1\x81\xd1\x82.pdf";
  EXPECT_TRUE(found);
  auto d = parse_content_disposition("attachment; filename=\"=?UTF-8?B?0YLQtdGB0YI=?= =?UTF-8?B?LnBkZg==?=\"");
  ASSERT_TRUE(d);
  ASSERT_EQ(d->params.size(), 1u);
  EXPECT_EQ(d->params[0].second, "\xd1\x82\xd0\xb5\xd1\x81\xd1\x82.pdf");
  // Words of different charsets, words apart, unpadded runs: left to GMime as they are.
  EXPECT_FALSE(join_split_base64_words("=?UTF-8?B?TXlT?= =?UTF-8?B?dXJ2?="));
  EXPECT_FALSE(join_split_base64_words("=?UTF-8?B?TXlTdXJ2ZXk=?= =?ISO-8859-1?B?LmNvbQ==?="));
  EXPECT_FALSE(join_split_base64_words("=?UTF-8?B?TXlTdXJ2ZXk=?= and =?UTF-8?B?LmNvbQ==?="));
  EXPECT_EQ(*join_split_base64_words("x =?utf-8?b?TXlTdXJ2ZXk=?= =?UTF-8?B?LmNvbQ==?= y"), "x =?utf-8?B?TXlTdXJ2ZXkuY29t?= y");
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

TEST(MessageModel, ObsoleteBlanksBeforeTheColonAreMail) {
  // mime4j's obsolete.msg: blanks between a field name and its colon (RFC 5322 4.5) were refused as
  // "not an email message", at IMAP APPEND, import and SMTP alike.
  const std::string raw = "Subject : The obsolete syntax\r\nFrom\t: a@example.com\r\nTo: b@example.com\r\n\r\nbody\r\n";
  EXPECT_EQ(not_mail_reason(raw), "");
  auto m = parse_message(raw, limits);
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  EXPECT_EQ(m->subject, "The obsolete syntax");
  ASSERT_EQ(m->from.size(), 1u);
  EXPECT_EQ(m->from[0].addr, "a@example.com");
  // Blanks alone before a colon are no field name; a blank inside one is no field.
  EXPECT_NE(not_mail_reason(" : x\r\n\r\nbody\r\n"), "");
  EXPECT_NE(not_mail_reason("Sub ject: x\r\n\r\nbody\r\n"), "");
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

TEST(MessageModel, SubmissionAddsAMissingDateAndMessageId) {
  const std::int64_t now = 1796516511;  // Sun, 06 Dec 2026 00:21:51 +0000
  const std::string bare = "From: a@x.org\r\nSubject: s\r\n\r\nbody\r\nDate: in the body\r\n";
  const std::string out = with_origin_fields(bare, now, "mx.example.com");
  EXPECT_EQ(out.substr(0, 27), "From: a@x.org\r\nSubject: s\r\n");
  EXPECT_EQ(header_field(out, "Date"), " Sun, 06 Dec 2026 00:21:51 +0000");
  auto id = header_field(out, "Message-ID");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->substr(0, 13), " <1796516511.");
  EXPECT_EQ(id->substr(id->size() - 16), "@mx.example.com>");
  EXPECT_NE(out.find("+0000\r\nMessage-ID: <"), std::string::npos) << "at the end of the header section";
  EXPECT_EQ(out.substr(out.size() - 29), "\r\n\r\nbody\r\nDate: in the body\r\n") << "the body as it was";
  EXPECT_NE(with_origin_fields(bare, now, "h"), with_origin_fields(bare, now, "h")) << "a new id each time";

  const std::string both = "From: a@x.org\r\nmessage-id: <1@x>\r\nDATE: Fri, 1 Jan 2021 00:00:00 +0000\r\n\r\nb\r\n";
  EXPECT_EQ(with_origin_fields(both, now, "h"), both) << "a message that has both is left alone";
  const std::string dated = "Date: Fri, 1 Jan 2021 00:00:00 +0000\r\nFrom: a@x.org\r\n\r\nb\r\n";
  EXPECT_EQ(with_origin_fields(dated, now, "h").find("Date: Sun"), std::string::npos) << "one Date only";
  EXPECT_TRUE(header_field(with_origin_fields(dated, now, "h"), "Message-ID").has_value());

  // Bare LF line ends are kept; a message of header fields only, with or without the last line end.
  EXPECT_EQ(with_origin_fields("From: a@x.org\n\nb\n", now, "h").find('\r'), std::string::npos);
  const std::string no_body = with_origin_fields("From: a@x.org\r\nSubject: s", now, "h");
  EXPECT_EQ(no_body.substr(0, 31), "From: a@x.org\r\nSubject: s\r\nDate");
  EXPECT_EQ(header_field(no_body, "Subject"), " s");
  EXPECT_TRUE(header_field(no_body, "Message-ID").has_value());
}

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

namespace mailark {
namespace {

// The header section of a message (up to the first empty line), and what follows it.
std::pair<std::string, std::string> split_header(const std::string& raw) {
  std::size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return {raw, ""};
  return {raw.substr(0, end + 2), raw.substr(end + 4)};
}

bool all_ascii(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t nl = s.find('\n', pos);
    if (nl == std::string::npos) nl = s.size();
    std::string line = s.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(line);
    pos = nl + 1;
  }
  return out;
}

// What a reader of the message sees: its text and its attachments' contents.
void expect_same_content(const std::string& a, const std::string& b, const std::string& what) {
  ParsedMessage x = parse_message_or_flag(a, limits), y = parse_message_or_flag(b, limits);
  EXPECT_EQ(x.subject, y.subject) << what;
  EXPECT_EQ(x.body_text, y.body_text) << what;
  EXPECT_EQ(x.attachment_text, y.attachment_text) << what;
  // Attached files by their decoded bytes; an attached message's own parts are converted too, so
  // its bytes differ (its text is compared above, in attachment_text).
  std::vector<std::string> xs, ys;
  for (const auto& p : x.parts)
    if (p.is_attachment) xs.push_back((p.content_type.starts_with("message/") ? "message" : to_hex(p.sha256)) + " " + p.filename);
  for (const auto& p : y.parts)
    if (p.is_attachment) ys.push_back((p.content_type.starts_with("message/") ? "message" : to_hex(p.sha256)) + " " + p.filename);
  EXPECT_EQ(xs, ys) << what;
}

TEST(MessageSevenBit, APlainEightBitMessageBecomesQuotedPrintableMime) {
  const std::string raw =
      "From: Zoë <zoe@example.org>\r\nTo: a@example.com\r\nSubject: caf\xc3\xa9\r\n\r\n"
      "Le caf\xc3\xa9 est pr\xc3\xaat.\r\n.leading dot\r\nplain line\r\n";
  auto out = seven_bit_message(raw);
  ASSERT_TRUE(out.has_value());
  auto [head, body] = split_header(*out);
  EXPECT_TRUE(all_ascii(body)) << body;
  EXPECT_NE(head.find("MIME-Version: 1.0"), std::string::npos) << head;
  EXPECT_NE(head.find("Content-Transfer-Encoding: quoted-printable"), std::string::npos) << head;
  EXPECT_NE(head.find("Content-Type: text/plain; charset=utf-8"), std::string::npos) << "named, not US-ASCII: " << head;
  EXPECT_NE(head.find("Subject: caf\xc3\xa9\r\n"), std::string::npos) << "header fields stay as they were: " << head;
  EXPECT_NE(body.find("Le caf=C3=A9 est pr=C3=AAt."), std::string::npos) << body;
  EXPECT_NE(body.find("plain line\r\n"), std::string::npos) << body;
  EXPECT_EQ(body.find("=0D"), std::string::npos) << "line ends are not encoded: " << body;
  for (std::size_t i = 0; i < out->size(); ++i) {
    if ((*out)[i] == '\n') {
      ASSERT_TRUE(i > 0 && (*out)[i - 1] == '\r') << "a bare LF at " << i;
    }
  }
  expect_same_content(raw, *out, "plain");
}

TEST(MessageSevenBit, OnlyTheEightBitPartsAreEncoded) {
  std::string binary;
  for (int i = 0; i < 600; ++i) binary.push_back(static_cast<char>((i * 37 + 11) % 256));
  for (std::size_t i = 0; i < binary.size(); ++i)  // no line ends inside: CTE binary, as senders write it
    if (binary[i] == '\r' || binary[i] == '\n') binary[i] = 'x';
  const std::string seven_bit_part =
      "--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nJust ASCII, kept as it was.\r\n";
  const std::string base64_part =
      "--b1\r\nContent-Type: image/png; name=\"a.png\"\r\nContent-Transfer-Encoding: base64\r\n"
      "Content-Disposition: attachment; filename=\"a.png\"\r\n\r\niVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ\r\n";
  const std::string raw =
      "From: a@example.org\r\nTo: b@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n" +
      seven_bit_part +
      "--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
      "Viele Gr\xfc\xdf" "e aus K\xf6ln, und bis bald in der Stadt am Rhein.\r\n" +
      base64_part +
      "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
      "Content-Disposition: attachment; filename=\"blob.bin\"\r\n\r\n" +
      binary + "\r\n--b1--\r\nepilogue\r\n";
  auto out = seven_bit_message(raw);
  ASSERT_TRUE(out.has_value());
  EXPECT_TRUE(all_ascii(*out)) << *out;
  EXPECT_NE(out->find(seven_bit_part), std::string::npos) << "an ASCII part is left as it was:\n" << *out;
  EXPECT_NE(out->find(base64_part), std::string::npos) << "a base64 part is left as it was:\n" << *out;
  EXPECT_NE(out->find("Content-Transfer-Encoding: quoted-printable\r\n\r\nViele Gr=FC=DFe aus K=F6ln, und"), std::string::npos)
      << *out;
  EXPECT_EQ(out->find("Content-Transfer-Encoding: 8bit"), std::string::npos) << *out;
  EXPECT_EQ(out->find("Content-Transfer-Encoding: binary"), std::string::npos) << *out;
  EXPECT_NE(out->find("Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"blob.bin\""),
            std::string::npos)
      << *out;
  EXPECT_NE(out->find("\r\npreamble\r\n"), std::string::npos);
  expect_same_content(raw, *out, "multipart");
  ParsedMessage m = parse_message_or_flag(*out, limits);
  bool found = false;
  for (const auto& p : m.parts)
    if (p.filename == "blob.bin") {
      found = true;
      EXPECT_EQ(p.size, binary.size());
      EXPECT_EQ(p.sha256, sha256(binary));
    }
  EXPECT_TRUE(found);
}

TEST(MessageSevenBit, TextThatNamesNoCharsetIsNamed) {
  // Latin-1 bytes under a Content-Type without a charset: not UTF-8, so RFC 1428's unknown-8bit.
  auto out = seven_bit_message("From: a@example.org\r\nContent-Type: text/plain\r\n\r\nK\xf6ln am Rhein, eine Stadt\r\n");
  ASSERT_TRUE(out.has_value());
  EXPECT_NE(out->find("charset=unknown-8bit"), std::string::npos) << *out;
  EXPECT_NE(out->find("K=F6ln am Rhein"), std::string::npos) << *out;
  // A charset that is named is kept.
  out = seven_bit_message("From: a@example.org\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n\xf0\xd2\xc9\r\n");
  ASSERT_TRUE(out.has_value());
  EXPECT_NE(out->find("charset=koi8-r"), std::string::npos) << *out;
}

TEST(MessageSevenBit, ASignedPartIsLeftWhole) {
  // A conversion inside multipart/signed would break the signature (RFC 1847): it is sent as it was,
  // while an 8-bit part beside it is converted.
  const std::string signed_part =
      "--s1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
      "sign\xc3\xa9 text that is long enough to be quoted-printable\r\n--s1\r\n"
      "Content-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\nabc\r\n"
      "-----END PGP SIGNATURE-----\r\n--s1--\r\n";
  const std::string raw =
      "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m1\"\r\n\r\n"
      "--m1\r\nContent-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; "
      "boundary=\"s1\"\r\n\r\n" + signed_part +
      "--m1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
      "besid\xc3\xa9 it, a text that is long enough to be quoted-printable\r\n--m1--\r\n";
  auto out = seven_bit_message(raw);
  ASSERT_TRUE(out.has_value());
  EXPECT_NE(out->find(signed_part), std::string::npos) << *out;
  EXPECT_NE(out->find("besid=C3=A9 it"), std::string::npos) << *out;
}

TEST(MessageSevenBit, ASevenBitBodyIsSentAsItIs) {
  EXPECT_FALSE(seven_bit_message("From: a@example.org\r\nSubject: x\r\n\r\nascii only\r\n").has_value());
  // 8-bit header fields alone: 8BITMIME is about the body; Postfix sends such headers as they are.
  EXPECT_FALSE(seven_bit_message("From: a@example.org\r\nSubject: caf\xc3\xa9\r\n\r\nascii\r\n").has_value());
  EXPECT_FALSE(seven_bit_message("Subject: caf\xc3\xa9\r\n").has_value());
  EXPECT_TRUE(has_eight_bit_body("Subject: x\r\n\r\n\xc3\xa9"));
  EXPECT_TRUE(has_eight_bit_body("Subject: x\n\n\xc3\xa9"));
  EXPECT_TRUE(has_eight_bit_body("\r\n\xc3\xa9"));
  EXPECT_FALSE(has_eight_bit_body("Subject: \xc3\xa9\r\nX: y\r\n"));
}

// Every 8-bit message of the corpus: what a reader sees is the same, and no line with an 8-bit byte
// is one the conversion wrote (the only 8-bit bytes left are lines of the original's header fields,
// of embedded messages' header fields and of preambles, all copied as they were).
TEST(MessageSevenBitCorpus, EveryEightBitMessageKeepsItsContent) {
  REQUIRE_CORPUS();
  std::size_t converted = 0, fully = 0;
  for (const char* sub : {"/mime-edge", "/spamassassin"}) {
    for (auto& e : std::filesystem::recursive_directory_iterator(test::corpus_dir() + sub)) {
      if (!e.is_regular_file() || e.file_size() > 2'000'000) continue;
      std::string raw = test::read_file(e.path().string());
      if (!not_mail_reason(raw).empty()) continue;
      std::string crlf;  // as the archive hands it to delivery: CRLF line ends
      for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r')) crlf.push_back('\r');
        crlf.push_back(raw[i]);
      }
      auto out = seven_bit_message(crlf);
      if (!out) continue;
      ++converted;
      if (all_ascii(split_header(*out).second)) ++fully;
      std::set<std::string> original;
      for (auto& l : lines_of(crlf)) original.insert(l);
      for (auto& l : lines_of(*out)) {
        if (!all_ascii(l)) {
          ASSERT_TRUE(original.count(l)) << e.path() << ": a new 8-bit line: " << l;
        }
      }
      expect_same_content(crlf, *out, e.path().string());
    }
  }
  EXPECT_GT(converted, 100u);
  std::cout << converted << " 8-bit messages converted, " << fully << " of them 7-bit past their header section\n";
}

}  // namespace
}  // namespace mailark
