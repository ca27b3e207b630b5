// The IMAP server's I/O-free core: the command reader (framing, literals, limits), the grammar
// (sequence sets, FETCH attributes, SEARCH keys, flags, dates, mUTF-7), the MIME byte-range tree and
// what FETCH cuts from it, and login throttling.
#include <functional>

#include <gtest/gtest.h>

#include "api/auth.h"
#include "engine/cases.h"
#include "api/ldap.h"
#include "api/imap/command.h"
#include "api/imap/fetch.h"
#include "api/imap/session.h"
#include "engine/mime_tree.h"
#include "test_util.h"

namespace mailark::api::imap {
namespace {

using Event = CommandReader::Event;

std::vector<Command> feed_all(CommandReader& r, std::string_view bytes, std::vector<Event>* events = nullptr,
                              bool byte_by_byte = false) {
  std::vector<Command> out;
  auto drain = [&] {
    while (true) {
      Event e = r.next();
      if (e == Event::kNone) break;
      if (events) events->push_back(e);
      if (e == Event::kCommand) out.push_back(r.command());
      if (e == Event::kClose) break;
    }
  };
  if (byte_by_byte) {
    for (char c : bytes) {
      r.feed(std::string_view(&c, 1));
      drain();
    }
  } else {
    r.feed(bytes);
    drain();
  }
  return out;
}

TEST(ImapCommand, CommandsAreTheSameWholeAndByteByByte) {
  const std::string input =
      "a1 LOGIN \"ali\\\"ce\" {6}\r\nse cr\n\r\n"
      "a2 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)]<0.100>)\r\n"
      "a3 APPEND INBOX (\\Seen) {5+}\r\nhello\r\n"
      "a4 NOOP\n";
  for (bool bytewise : {false, true}) {
    CommandReader r;
    std::vector<Event> events;
    auto cmds = feed_all(r, input, &events, bytewise);
    ASSERT_EQ(cmds.size(), 4u) << bytewise;
    EXPECT_EQ(cmds[0].name, "LOGIN");
    ASSERT_EQ(cmds[0].args.size(), 2u);
    EXPECT_EQ(cmds[0].args[0].text, "ali\"ce");
    EXPECT_EQ(cmds[0].args[1].text, "se cr\n");  // a literal holds any byte
    EXPECT_TRUE(cmds[0].args[1].literal);
    EXPECT_EQ(cmds[1].name, "UID FETCH");
    ASSERT_EQ(cmds[1].args.size(), 2u);
    ASSERT_TRUE(cmds[1].args[1].is_list());
    EXPECT_EQ(cmds[1].args[1].list[1].text, "BODY.PEEK[HEADER.FIELDS (From Subject)]<0.100>");
    EXPECT_EQ(cmds[2].args.back().text, "hello");
    EXPECT_EQ(cmds[3].name, "NOOP");
    // One continuation, for the synchronising literal only (not for {5+}).
    EXPECT_EQ(std::count(events.begin(), events.end(), Event::kContinue), bytewise ? 1 : 0);
  }
}

TEST(ImapCommand, SynchronisingLiteralWaitsForTheGoAhead) {
  CommandReader r;
  r.feed("a LOGIN {5}\r\n");
  EXPECT_EQ(r.next(), Event::kContinue);
  EXPECT_EQ(r.next(), Event::kNone);  // asked once
  r.feed("alice secret\r\n");
  ASSERT_EQ(r.next(), Event::kCommand);
  EXPECT_EQ(r.command().args[0].text, "alice");
  EXPECT_EQ(r.command().args[1].text, "secret");
}

TEST(ImapCommand, BadInputGetsAClearAnswerAndTheConnectionGoesOn) {
  struct Case {
    std::string line;
    std::string tag;
    std::string error_part;
  } cases[] = {
      {"a1 FETCH 1 (FLAGS\r\n", "a1", "')'"},
      {"a2 FETCH 1 FLAGS)\r\n", "a2", "')'"},
      {"a3 LOGIN \"unterminated\r\n", "a3", "quoted"},
      {"a4 LOGIN \"bad\\escape\" x\r\n", "a4", "escapes"},
      {"\r\n", "*", "empty"},
      {"+bad NOOP\r\n", "*", "tag"},
      {"a5 SELECT INBOX\x01\r\n", "a5", "character"},
  };
  for (const auto& c : cases) {
    CommandReader r;
    r.feed(c.line + "z NOOP\r\n");
    ASSERT_EQ(r.next(), Event::kBad) << c.line;
    EXPECT_EQ(r.error_tag(), c.tag) << c.line;
    EXPECT_NE(r.error().find(c.error_part), std::string::npos) << c.line << " -> " << r.error();
    ASSERT_EQ(r.next(), Event::kCommand) << c.line;  // the next command is read as usual
    EXPECT_EQ(r.command().tag, "z");
  }
  // Deep nesting is refused, not recursed into.
  CommandReader r;
  r.feed("a FETCH 1 " + std::string(1000, '(') + std::string(1000, ')') + "\r\n");
  EXPECT_EQ(r.next(), Event::kBad);
  EXPECT_NE(r.error().find("nested"), std::string::npos);
}

TEST(ImapCommand, AppendLiteralsBeforeLoginHaveTheSmallLimit) {
  CommandReader r;  // the default limits: 64 KiB a literal, 64 MiB an APPEND's
  r.set_authenticated(false);
  r.feed("a1 APPEND INBOX {10000000}\r\n");
  EXPECT_EQ(r.next(), Event::kTooBig);  // not kContinue: the client sends nothing, the server holds nothing
  EXPECT_NE(r.error().find("over the limit of 65536"), std::string::npos) << r.error();
  r.feed("a2 APPEND INBOX {5000000+}\r\n");
  EXPECT_EQ(r.next(), Event::kClose);  // non-synchronising, too large to skip
  // Logged in (the server says so before each command), a message's worth.
  CommandReader in;
  in.set_authenticated(false);
  in.feed("b1 LOGIN alice secret\r\n");
  ASSERT_EQ(in.next(), Event::kCommand);
  in.set_authenticated(true);
  in.feed("b2 APPEND INBOX {10000000}\r\n");
  EXPECT_EQ(in.next(), Event::kContinue);
}

TEST(ImapCommand, TheLiteralGateIsAskedOnceAndCanRefuse) {
  CommandLimits limits;
  limits.max_literal_bytes = 100;
  std::vector<std::uint64_t> asked;
  bool open = true;
  CommandReader r(limits);
  r.set_literal_gate([&](std::uint64_t n) -> std::optional<std::string> {
    asked.push_back(n);
    if (open) return std::nullopt;
    return "[OVERQUOTA] Not enough disk space";
  });
  // A small literal never asks; a large one asks once, however many reads it takes to arrive.
  r.feed("a1 LOGIN {5}\r\n");
  EXPECT_EQ(r.next(), Event::kContinue);
  r.feed("alice secret\r\n");
  ASSERT_EQ(r.next(), Event::kCommand);
  EXPECT_TRUE(asked.empty());
  r.feed("a2 APPEND INBOX {1000}\r\n");
  EXPECT_EQ(r.next(), Event::kContinue);
  for (int i = 0; i < 10; ++i) {
    r.feed(std::string(100, 'x'));
    EXPECT_EQ(r.next(), Event::kNone);
  }
  r.feed("\r\n");
  ASSERT_EQ(r.next(), Event::kCommand);
  EXPECT_EQ(asked, std::vector<std::uint64_t>{1000});
  Command c = r.take_command();
  EXPECT_EQ(c.args.back().text, std::string(1000, 'x'));
  EXPECT_TRUE(r.command().args.empty()) << "moved out, not copied";
  // Refused: NO with the gate's answer for that command (the client sends nothing), and the next is read.
  open = false;
  r.feed("a3 APPEND INBOX {2000}\r\na4 NOOP\r\n");
  EXPECT_EQ(r.next(), Event::kBusy);
  EXPECT_EQ(r.error_tag(), "a3");
  EXPECT_EQ(r.error(), "[OVERQUOTA] Not enough disk space") << "the gate's answer, as it gave it";
  ASSERT_EQ(r.next(), Event::kCommand);
  EXPECT_EQ(r.command().tag, "a4");
  // LITERAL+: the refused bytes are skipped; too many to skip closes the connection.
  r.feed("a5 APPEND INBOX {300+}\r\n" + std::string(300, 'y') + "\r\na6 NOOP\r\n");
  EXPECT_EQ(r.next(), Event::kBusy);
  ASSERT_EQ(r.next(), Event::kCommand);
  EXPECT_EQ(r.command().tag, "a6");
  r.feed("a7 APPEND INBOX {5000000+}\r\n");
  EXPECT_EQ(r.next(), Event::kClose);
  EXPECT_EQ(asked, (std::vector<std::uint64_t>{1000, 2000, 300, 5000000}));
}

TEST(ImapCommand, HugeLiteralsAreRefusedWithoutReadingThem) {
  CommandLimits limits;
  limits.max_append_bytes = 1000;
  // Synchronising: NO [TOOBIG], and the client sends nothing more for that command.
  CommandReader r(limits);
  r.feed("a1 APPEND INBOX {999999999999}\r\na2 NOOP\r\n");
  EXPECT_EQ(r.next(), Event::kTooBig);
  EXPECT_EQ(r.error_tag(), "a1");
  ASSERT_EQ(r.next(), Event::kCommand);
  EXPECT_EQ(r.command().tag, "a2");
  // Non-synchronising and small enough to skip: skipped, then the next command.
  CommandReader r2(limits);
  r2.feed("b1 APPEND INBOX {2000+}\r\n" + std::string(2000, 'x') + "\r\nb2 NOOP\r\n");
  EXPECT_EQ(r2.next(), Event::kTooBig);
  ASSERT_EQ(r2.next(), Event::kCommand);
  EXPECT_EQ(r2.command().tag, "b2");
  // Non-synchronising and too large to skip: the connection closes.
  CommandReader r3(limits);
  r3.feed("c1 APPEND INBOX {99999999+}\r\n");
  EXPECT_EQ(r3.next(), Event::kClose);
  EXPECT_NE(r3.error().find("over the limit"), std::string::npos);
  // A literal outside APPEND has the small limit.
  CommandReader r4;
  r4.feed("d1 LOGIN {100000}\r\n");
  EXPECT_EQ(r4.next(), Event::kTooBig);
  // An endless line closes.
  CommandReader r5;
  r5.feed("e1 NOOP " + std::string(70000, 'x'));
  EXPECT_EQ(r5.next(), Event::kClose);
}

TEST(ImapCommand, SequenceSets) {
  auto s = parse_sequence_set("1:3,7,5:4,*");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->resolve(10), (std::vector<std::uint32_t>{1, 2, 3, 4, 5, 7, 10}));
  EXPECT_EQ(s->resolve(2), (std::vector<std::uint32_t>{1, 2}));
  EXPECT_TRUE(s->resolve(0).empty());
  EXPECT_TRUE(parse_sequence_set("4294967295")->contains(4294967295u, 5));
  // An enormous set over a small folder costs only the folder's size.
  EXPECT_EQ(parse_sequence_set("1:4294967295")->resolve(3).size(), 3u);
  for (const char* bad : {"", "0", "1:0", "a", "1,", ",1", "1::2", "4294967296", "1:2:3", "-1"})
    EXPECT_FALSE(parse_sequence_set(bad)) << bad;
  std::string many;
  for (int i = 1; i <= 10001; ++i) many += (i > 1 ? "," : "") + std::to_string(i);
  EXPECT_FALSE(parse_sequence_set(many));
  EXPECT_TRUE(parse_sequence_set("$")->saved);
}

TEST(ImapCommand, FetchAttributes) {
  std::string error;
  CommandReader r;
  r.feed("a FETCH 1 (UID BODY[1.2.MIME] BODY.PEEK[TEXT]<10.20> BODY[HEADER.FIELDS.NOT (Received)] BODYSTRUCTURE)\r\n");
  ASSERT_EQ(r.next(), Event::kCommand);
  auto attrs = parse_fetch_attrs(r.command().args[1], &error);
  ASSERT_TRUE(attrs) << error;
  ASSERT_EQ(attrs->size(), 5u);
  EXPECT_EQ((*attrs)[1].section.part, (std::vector<unsigned>{1, 2}));
  EXPECT_EQ((*attrs)[1].section.text, Section::Text::kMime);
  EXPECT_EQ((*attrs)[1].name, "BODY[1.2.MIME]");
  EXPECT_TRUE((*attrs)[2].peek);
  EXPECT_EQ((*attrs)[2].name, "BODY[TEXT]<10>");
  EXPECT_EQ((*attrs)[2].partial->second, 20u);
  EXPECT_EQ((*attrs)[3].section.fields, std::vector<std::string>{"Received"});
  for (const char* bad : {"BODY[0]", "BODY[1.]", "BODY[MIME]", "BODY[HEADER.FIELDS]", "BODY[FOO]", "BODY[]<1>",
                          "BODY[]<1.0>", "NOPE", "BODY[1"}) {
    Value v;
    v.text = bad;
    EXPECT_FALSE(parse_fetch_attrs(v, &error)) << bad;
  }
  Value all;
  all.text = "ALL";
  EXPECT_EQ(parse_fetch_attrs(all, &error)->size(), 4u);
}

TEST(ImapCommand, SearchKeys) {
  CommandReader r;
  r.feed("a SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR FROM alice (SINCE 1-Feb-2026 NOT SEEN) UID 1:5 LARGER 100\r\n");
  ASSERT_EQ(r.next(), Event::kCommand);
  std::string error;
  auto req = parse_search(r.command().args, 0, &error);
  ASSERT_TRUE(req) << error;
  EXPECT_EQ(*req->esearch, (std::vector<std::string>{"MIN", "COUNT"}));
  ASSERT_EQ(req->key.children.size(), 3u);
  EXPECT_EQ(req->key.children[0].kind, SearchKey::Kind::kOr);
  EXPECT_EQ(req->key.children[0].children[1].children[0].kind, SearchKey::Kind::kSince);
  EXPECT_EQ(req->key.children[0].children[1].children[0].number, 20485);  // days from 1970-01-01 to 2026-02-01
  EXPECT_EQ(req->key.children[2].number, 100);
  // Unknown keys and missing arguments are refused; deep NOT chains too.
  for (const char* bad : {"a SEARCH FOO\r\n", "a SEARCH FROM\r\n", "a SEARCH SINCE 32-Jan-2026\r\n",
                          "a SEARCH LARGER x\r\n", "a SEARCH OR SEEN\r\n"}) {
    CommandReader r2;
    r2.feed(bad);
    ASSERT_EQ(r2.next(), Event::kCommand);
    error.clear();
    EXPECT_FALSE(parse_search(r2.command().args, 0, &error)) << bad;
    EXPECT_FALSE(error.empty());
  }
  // A SEARCH of many keys is refused before it runs (kMaxSearchKeys, kMaxTextSearchKeys).
  auto parsed = [&](const std::string& line) {
    CommandReader rk;
    rk.feed(line);
    EXPECT_EQ(rk.next(), Event::kCommand) << line.substr(0, 60);
    error.clear();
    return parse_search(rk.command().args, 0, &error).has_value();
  };
  std::string text_keys = "a SEARCH", flag_keys = "a SEARCH";
  for (std::size_t i = 0; i < kMaxTextSearchKeys; ++i) text_keys += " BODY w" + std::to_string(i);
  for (std::size_t i = 0; i < kMaxSearchKeys; ++i) flag_keys += " SEEN";
  EXPECT_TRUE(parsed(text_keys + "\r\n")) << error;
  EXPECT_TRUE(parsed(flag_keys + "\r\n")) << error;
  EXPECT_FALSE(parsed(text_keys + " SUBJECT one-more\r\n"));
  EXPECT_NE(error.find("too many search keys"), std::string::npos) << error;
  EXPECT_FALSE(parsed(flag_keys + " SEEN\r\n"));
  EXPECT_FALSE(parsed("a SEARCH" + std::string(" OR BODY x") + text_keys.substr(8) + " BODY y\r\n"));
  std::string deep = "a SEARCH";
  for (int i = 0; i < 200; ++i) deep += " NOT";
  deep += " SEEN\r\n";
  CommandReader r3;
  r3.feed(deep);
  ASSERT_EQ(r3.next(), Event::kCommand);
  error.clear();
  EXPECT_FALSE(parse_search(r3.command().args, 0, &error));
}

TEST(ImapCommand, FlagsDatesAndNames) {
  Value v;
  v.kind = Value::Kind::kList;
  for (const char* f : {"\\Seen", "\\flagged", "$Work", "$work"}) v.list.push_back(Value{Value::Kind::kAtom, f, {}, false});
  std::uint32_t flags = 0;
  std::vector<std::string> kw;
  std::string error;
  ASSERT_TRUE(parse_flag_list(v, &flags, &kw, &error));
  EXPECT_EQ(flags, 1u | 4u);
  EXPECT_EQ(kw, std::vector<std::string>{"$Work"});
  EXPECT_EQ(flags_text(flags, kw), "(\\Seen \\Flagged $Work)");
  Value recent{Value::Kind::kAtom, "\\Recent", {}, false};
  EXPECT_FALSE(parse_flag_list(recent, &flags, &kw, &error));
  EXPECT_EQ(imap_date_time(0), "\" 1-Jan-1970 00:00:00 +0000\"");
  EXPECT_EQ(*parse_imap_date_time("17-Jul-1996 02:44:25 -0700"), 837596665);
  EXPECT_FALSE(parse_imap_date_time("17-Jul-1996 02:44:25"));
  EXPECT_EQ(imap_string("plain"), "\"plain\"");
  EXPECT_EQ(imap_string("a\"b"), "\"a\\\"b\"");
  EXPECT_EQ(imap_string("two\r\nlines"), "{10}\r\ntwo\r\nlines");
  // Modified UTF-7 both ways (RFC 3501 5.1.3's example).
  EXPECT_EQ(*mutf7_decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-"), "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
  EXPECT_EQ(mutf7_encode("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
  EXPECT_EQ(mutf7_encode("R&D"), "R&-D");
  EXPECT_EQ(*mutf7_decode("R&-D"), "R&D");
  for (const char* bad : {"&", "&Jjo", "&AGE-", "&!!-"}) EXPECT_FALSE(mutf7_decode(bad)) << bad;
}

const char kNested[] =
    "From: A <a@example.com>\r\n"
    "To: B <b@example.com>, c@example.com\r\n"
    "Subject: nested\r\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    "\r\n"
    "preamble\r\n"
    "--outer\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "first part\r\n"
    "--outer\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "Subject: inner\r\n"
    "Content-Type: multipart/alternative; boundary=in\r\n"
    "\r\n"
    "--in\r\n"
    "\r\n"
    "inner text\r\n"
    "--in\r\n"
    "Content-Type: text/html\r\n"
    "\r\n"
    "<p>inner</p>\r\n"
    "--in--\r\n"
    "--outer\r\n"
    "Content-Type: application/pdf; name=\"a.pdf\"\r\n"
    "Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC.pdf\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0=\r\n"
    "--outer--\r\n"
    "epilogue\r\n";

TEST(MimeTree, SectionsAreCutFromTheStoredBytes) {
  std::string_view raw = kNested;
  MimeNode top = parse_mime_tree(raw);
  ASSERT_EQ(top.children.size(), 3u);
  auto sec = [&](std::vector<unsigned> part, Section::Text t = Section::Text::kAll) {
    Section s;
    s.part = std::move(part);
    s.text = t;
    return section_bytes(raw, top, s);
  };
  EXPECT_EQ(*sec({1}), "first part");
  EXPECT_EQ(*sec({1}, Section::Text::kMime), "Content-Type: text/plain; charset=utf-8\r\n\r\n");
  EXPECT_EQ(*sec({2, 1}), "inner text");
  EXPECT_EQ(*sec({2, 2}), "<p>inner</p>");
  EXPECT_EQ(*sec({2}, Section::Text::kHeader), "Subject: inner\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n");
  EXPECT_EQ(*sec({3}), "JVBERi0=");
  EXPECT_FALSE(sec({4}));
  EXPECT_FALSE(sec({1, 1}));
  EXPECT_FALSE(sec({1}, Section::Text::kHeader));  // not a message/rfc822 part
  EXPECT_EQ(*sec({}, Section::Text::kHeader), std::string(raw.substr(0, raw.find("\r\n\r\n") + 4)));
  EXPECT_EQ(*sec({}), std::string(raw));
  Section fields;
  fields.text = Section::Text::kHeaderFields;
  fields.fields = {"subject", "TO"};
  EXPECT_EQ(*section_bytes(raw, top, fields), "To: B <b@example.com>, c@example.com\r\nSubject: nested\r\n\r\n");
  // BODYSTRUCTURE names the sizes of exactly those bytes, and decodes RFC 2231 parameters.
  std::string bs = body_structure(raw, top, true);
  EXPECT_NE(bs.find("(\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL)"), std::string::npos) << bs;
  EXPECT_NE(bs.find("\"application\" \"pdf\" (\"name\" \"a.pdf\") NIL NIL \"base64\" 8 NIL (\"attachment\" (\"filename\" {7}\r\n\xe2\x82\xac.pdf))"), std::string::npos) << bs;
  EXPECT_NE(bs.find("\"alternative\""), std::string::npos);
  EXPECT_NE(bs.find(" \"mixed\" (\"boundary\" \"outer\")"), std::string::npos) << bs;
  std::string env = envelope(raw, top);
  EXPECT_EQ(env, "(NIL \"nested\" ((\"A\" NIL \"a\" \"example.com\")) ((\"A\" NIL \"a\" \"example.com\")) ((\"A\" NIL \"a\" \"example.com\")) "
                 "((\"B\" NIL \"b\" \"example.com\")(NIL NIL \"c\" \"example.com\")) NIL NIL NIL NIL)");
}

TEST(ImapFetch, EnvelopeOfAddressesWrittenAsEncodedWords) {
  // The whole "Name <addr>" in RFC 2047 words: the address is found, the name sent encoded again.
  std::string raw =
      "From: =?utf-8?q?Chlo=C3=A9_Dubois_=3Cchloe=2Edubois=40northwind=2Eexample=3E?=\r\n"
      "To: =?utf-8?q?Ben_Okafor_=3Cben=2Eokafor=40northwind=2Eexample=3E=2C_Chlo?=\r\n"
      " =?utf-8?q?=C3=A9_Dubois_=3Cchloe=2Edubois=40northwind=2Eexample=3E?=\r\n"
      "Cc: root\r\n"
      "Bcc: undisclosed-recipients:;\r\n"
      "Subject: x\r\n"
      "cc: eve@example.com\r\n\r\nbody\r\n";
  MimeNode top = parse_mime_tree(raw);
  std::string env = envelope(raw, top);
  const std::string chloe = "(\"=?UTF-8?b?Q2hsb8Op?= Dubois\" NIL \"chloe.dubois\" \"northwind.example\")";
  EXPECT_NE(env.find("(NIL \"x\" (" + chloe + ") (" + chloe + ") (" + chloe + ") ((\"Ben Okafor\" NIL \"ben.okafor\" "
                     "\"northwind.example\")" + chloe + ") "),
            std::string::npos)
      << env;
  // A NIL host marks a group: an address without a domain or a mailbox says so instead (as Dovecot).
  // Two Cc fields: the addresses of both.
  EXPECT_NE(env.find("((NIL NIL \"root\" \"MISSING_DOMAIN\")(NIL NIL \"eve\" \"example.com\"))"), std::string::npos) << env;
  EXPECT_EQ(env.find("\"root\" NIL"), std::string::npos) << env;
  EXPECT_NE(env.find("(NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)"), std::string::npos) << env;
  // GMime keeps neither of these; the loose split keeps both, the empty one saying what it lacks.
  std::string raw2 = "From: a@example.com\r\nTo: \"Some One\" <>, d..d@example.com\r\nSubject: y\r\n\r\nbody\r\n";
  env = envelope(raw2, parse_mime_tree(raw2));
  EXPECT_NE(env.find("((\"Some One\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")(NIL NIL \"d..d\" \"example.com\"))"),
            std::string::npos)
      << env;
}

TEST(ImapFetch, EnvelopeNamesInTheDeclaredCharset) {
  // A raw GB2312 name (no encoded word): sent as an encoded word of what it says, read in the
  // charset the message declares, not as windows-1252. The subject goes as sent, as Dovecot sends it.
  const std::string raw =
      "From: \xcd\xf5\xd0\xa1\xc3\xf7 <wang@example.cn>\r\nSubject: \xc8\xab\r\n"
      "Content-Type: text/plain; charset=gb2312\r\n\r\nbody\r\n";
  std::string env = envelope(raw, parse_mime_tree(raw));
  const std::string name = encode_phrase("王小明");
  EXPECT_NE(env.find("((\"" + name + "\" NIL \"wang\" \"example.cn\"))"), std::string::npos) << env;
  EXPECT_NE(env.find("{2}\r\n\xc8\xab"), std::string::npos) << env;
}

TEST(MimeTree, AnAddressFieldWrittenTwiceListsBoth) {
  const std::string h = "To: a@example.com\r\nSubject: s\r\nTO:\r\n b@example.com,\r\n c@example.com\r\nto: \r\n\r\nTo: body@x\r\n";
  EXPECT_EQ(mime_header_joined(h, "to"), "a@example.com, b@example.com, c@example.com");
  EXPECT_EQ(mime_header(h, "to"), "a@example.com");
  EXPECT_EQ(mime_header_joined(h, "Subject"), "s");
  EXPECT_FALSE(mime_header_joined(h, "Cc"));
  // Bounded: a field written over and over stops adding past kMaxJoinedHeaderBytes.
  std::string many;
  for (int i = 0; i < 30000; ++i) many += "Cc: someone" + std::to_string(i) + "@example.com\r\n";
  auto joined = mime_header_joined(many + "\r\n", "Cc");
  ASSERT_TRUE(joined);
  EXPECT_LE(joined->size(), kMaxJoinedHeaderBytes);
  EXPECT_GT(joined->size(), kMaxJoinedHeaderBytes - 100);
}

TEST(MimeTree, BrokenStructureNeverFails) {
  for (std::string raw : {std::string(""), std::string("no header at all"), std::string("Subject: x\r\n"),
                          std::string("Content-Type: multipart/mixed\r\n\r\nno boundary"),
                          std::string("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nunclosed part"),
                          std::string("Content-Type: message/rfc822\r\n\r\n"),
                          // An empty last part right before an outer delimiter: the part begins after
                          // the line end the outer delimiter takes (fuzz/regressions/mime_tree).
                          std::string("Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
                                      "Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i\r\n--o--\r\n")}) {
    MimeNode top = parse_mime_tree(raw);
    EXPECT_LE(top.body_end, raw.size());
    std::function<void(const MimeNode&)> inside = [&](const MimeNode& n) {
      for (const auto& c : n.children) {
        EXPECT_GE(c.header_begin, n.body_begin) << raw;
        EXPECT_LE(c.body_end, n.body_end) << raw;
        inside(c);
      }
    };
    inside(top);
    (void)body_structure(raw, top, true);
    (void)envelope(raw, top);
  }
  // Nesting is bounded.
  std::string deep;
  for (int i = 0; i < 200; ++i) deep += "Content-Type: message/rfc822\r\n\r\n";
  deep += "body";
  MimeNode top = parse_mime_tree(deep);
  unsigned depth = 0;
  for (const MimeNode* n = &top; !n->children.empty(); n = &n->children[0]) ++depth;
  EXPECT_LE(depth, kMaxMimeDepth);
  // An unclosed part runs to the end.
  std::string unclosed = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nlast";
  MimeNode u = parse_mime_tree(unclosed);
  ASSERT_EQ(u.children.size(), 1u);
  Section s;
  s.part = {1};
  EXPECT_EQ(*section_bytes(unclosed, u, s), "last");
}

TEST(MimeTree, DelimiterLinesAreMatchedByTheirBeginning) {
  auto part = [](std::string_view raw, const MimeNode& top, std::vector<unsigned> p) {
    Section s;
    s.part = std::move(p);
    auto b = section_bytes(raw, top, s);
    return b ? *b : std::string("<none>");
  };
  // RFC 2046 5.1.1: text after the boundary on a delimiter line leaves it a delimiter, the closing one
  // too (mime4j's ending-boundaries.msg); what follows the closing one is the epilogue.
  const std::string trailing =
      "Content-Type: multipart/mixed; boundary=\"boundary\"\r\n\r\n"
      "--boundary This should be ignored\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
      "--boundary-- This too\r\n\r\n--boundary--\r\nepilogue\r\n";
  MimeNode t = parse_mime_tree(trailing);
  ASSERT_EQ(t.children.size(), 1u);
  EXPECT_EQ(part(trailing, t, {1}), "first part");
  // A boundary past RFC 2046's 70 characters is still one; a line with all of it but its last
  // character is not a delimiter (mime4j's very-long-boundary.msg).
  const std::string b(300, 'x');
  const std::string long_b = "Content-Type: multipart/mixed; boundary=\"" + b + "y\"\r\n\r\n--" + b + "y\r\n\r\none\r\n--" + b +
                             "\r\nstill one\r\n--" + b + "y\r\n\r\ntwo\r\n--" + b + "y--\r\n";
  MimeNode l = parse_mime_tree(long_b);
  ASSERT_EQ(l.children.size(), 2u);
  EXPECT_EQ(part(long_b, l, {1}), "one\r\n--" + b + "\r\nstill one");
  EXPECT_EQ(part(long_b, l, {2}), "two");
  // An inner boundary that begins with the outer one: the longest that begins the line is the one
  // (stalwart's boundary clash); the outer's delimiter ends the unclosed inner multipart.
  const std::string clash =
      "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
      "Content-Type: multipart/alternative; boundary=\"b-1\"\r\n\r\n--b-1\r\n\r\nplain\r\n--b-1\r\n\r\nrich\r\n"
      "--b\r\n\r\nattachment\r\n--b--\r\n";
  MimeNode c = parse_mime_tree(clash);
  ASSERT_EQ(c.children.size(), 2u);
  ASSERT_EQ(c.children[0].children.size(), 2u);
  EXPECT_EQ(part(clash, c, {1, 1}), "plain");
  EXPECT_EQ(part(clash, c, {1, 2}), "rich");
  EXPECT_EQ(part(clash, c, {2}), "attachment");
  // Text that only holds the boundary inside a line stays text.
  const std::string inside = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nsee --b here\r\n --b\r\n--b--\r\n";
  MimeNode i = parse_mime_tree(inside);
  ASSERT_EQ(i.children.size(), 1u);
  EXPECT_EQ(part(inside, i, {1}), "see --b here\r\n --b");
}

TEST(MimeTree, SameBoundaryNested) {
  // A multipart inside a multipart with the same boundary (malformed, seen in stalwart's tests): the
  // delimiters are the inner one's, as Dovecot reads them, until it closes; the outer goes on after.
  const std::string raw =
      "Content-Type: multipart/mixed; boundary=\"a\"\r\n\r\n--a\r\n"
      "Content-Type: multipart/mixed; boundary=\"a\"\r\n\r\n--a\r\n\r\ninner one\r\n--a\r\n\r\ninner two\r\n--a--\r\n"
      "--a\r\n\r\nouter two\r\n--a--\r\n";
  MimeNode top = parse_mime_tree(raw);
  ASSERT_EQ(top.children.size(), 2u);
  ASSERT_EQ(top.children[0].children.size(), 2u);
  Section s;
  s.part = {1, 2};
  EXPECT_EQ(*section_bytes(raw, top, s), "inner two");
  s.part = {2};
  EXPECT_EQ(*section_bytes(raw, top, s), "outer two");
}

TEST(ImapFetch, FieldsWrittenTwiceGiveTheLast) {
  // Date, Subject, In-Reply-To and Message-ID written twice: the last of each, as Dovecot and GMime
  // (the index) read them.
  const std::string raw =
      "Date: Sun, 21 Oct 2007 19:38:13 +1000\r\nSubject: Testing outlook\r\nSubject: Another PDF\r\n"
      "Message-ID: <1@x>\r\nFrom: a@example.com\r\nMessage-ID: <2@x>\r\nDate: Mon, 22 Oct 2007 10:00:00 +1000\r\n"
      "\r\nbody\r\n";
  std::string env = envelope(raw, parse_mime_tree(raw));
  EXPECT_EQ(env.rfind("(\"Mon, 22 Oct 2007 10:00:00 +1000\" \"Another PDF\" ", 0), 0u) << env;
  EXPECT_NE(env.find(" NIL \"<2@x>\")"), std::string::npos) << env;
  EXPECT_EQ(mime_header_last("A: 1\r\nB: 2\r\na: 3\r\n \r\n\r\nA: body\r\n", "A"), "3");
  EXPECT_FALSE(mime_header_last("A: 1\r\n\r\n", "B"));
}

TEST(ImapFetch, AMessagePartPastTheDepthLimitKeepsTheGrammar) {
  // 200 message/rfc822 parts, one in the other (a hostile message): the tree stops at kMaxMimeDepth,
  // and every "message" "rfc822" in BODYSTRUCTURE still has an envelope, a body and its lines, so a
  // client's parser is not broken by one message.
  std::string deep;
  for (int i = 0; i < 200; ++i) deep += "Content-Type: message/rfc822\r\n\r\n";
  deep += "body";
  for (bool ext : {false, true}) {
    const std::string bs = body_structure(deep, parse_mime_tree(deep), ext);
    std::size_t messages = 0;
    for (std::size_t at = bs.find("\"message\" \"rfc822\""); at != std::string::npos;
         at = bs.find("\"message\" \"rfc822\"", at + 1)) {
      ++messages;
      // type, subtype, params, id, description, encoding, size, then the envelope
      const std::size_t env = bs.find(" (", bs.find("\"7bit\" ", at) + 7);
      ASSERT_NE(env, std::string::npos);
      EXPECT_EQ(bs.compare(env, 2, " ("), 0) << bs.substr(at, 120);
    }
    EXPECT_GE(messages, kMaxMimeDepth);
    EXPECT_NE(bs.find("(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\""), std::string::npos);
    int depth = 0;
    for (char c : bs) {
      depth += c == '(' ? 1 : c == ')' ? -1 : 0;
      ASSERT_GE(depth, 0);
    }
    EXPECT_EQ(depth, 0);
  }
}

TEST(ImapFetch, TextWithoutCharsetSaysUsAscii) {
  const std::string raw =
      "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
      "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>y</p>\r\n--b\r\nContent-Type: image/png\r\n\r\nz\r\n--b--\r\n";
  std::string bs = body_structure(raw, parse_mime_tree(raw), false);
  EXPECT_NE(bs.find("(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 1 1)"), std::string::npos) << bs;
  EXPECT_NE(bs.find("(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL"), std::string::npos) << bs;
  EXPECT_NE(bs.find("(\"image\" \"png\" NIL NIL NIL \"7bit\" 1)"), std::string::npos) << bs;
}

TEST(ImapFetch, ContentLanguageIsAListOfTags) {
  // RFC 9051's body-fld-lang: a list of strings; a field of several tags is several (as Dovecot).
  const std::string raw =
      "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Language: en, en-US (American),\r\n en-CA\r\n\r\nx\r\n"
      "--b\r\nContent-Language: ru\r\n\r\ny\r\n--b\r\nContent-Language: (none)\r\n\r\nz\r\n--b--\r\n";
  std::string bs = body_structure(raw, parse_mime_tree(raw), true);
  EXPECT_NE(bs.find(" 1 1 NIL NIL (\"en\" \"en-US\" \"en-CA\") NIL)"), std::string::npos) << bs;
  EXPECT_NE(bs.find(" 1 1 NIL NIL (\"ru\") NIL)"), std::string::npos) << bs;
  EXPECT_NE(bs.find(" 1 1 NIL NIL NIL NIL)"), std::string::npos) << bs;
  // A multipart without parts is described with an empty text part, its extension data too.
  const std::string empty = "Content-Type: multipart/mixed; boundary=b\r\n\r\nno parts\r\n";
  EXPECT_EQ(body_structure(empty, parse_mime_tree(empty), true),
            "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)");
}

TEST(MimeTree, PartsPastTheLimitAreOneLastPart) {
  // 6,000 parts, with and without the closing delimiter, and inside a nested multipart: the first
  // kMaxMimeParts - 1 (the top counts as one) are parts of their own, the rest one opaque last part
  // from the first of them to the end of the last, so no byte drops out of the structure.
  for (bool closed : {true, false}) {
    for (bool nested : {false, true}) {
      std::string raw = "Content-Type: multipart/mixed; boundary=z\r\n\r\n";
      if (nested) raw += "--z\r\nContent-Type: multipart/mixed; boundary=y\r\n\r\n";
      const std::string b = nested ? "--y" : "--z";
      for (int i = 0; i < 6000; ++i) raw += b + "\r\nContent-Type: text/plain\r\n\r\npart " + std::to_string(i) + "\r\n";
      if (closed) raw += b + "--\r\n";
      if (nested) raw += "--z\r\n\r\nafter\r\n--z--\r\n";
      MimeNode top = parse_mime_tree(raw);
      const MimeNode& m = nested ? top.children.at(0) : top;
      const std::size_t own = kMaxMimeParts - 1 - (nested ? 1 : 0);
      ASSERT_EQ(m.children.size(), own + 1) << closed << nested;
      Section s;
      s.part = nested ? std::vector<unsigned>{1, static_cast<unsigned>(own)} : std::vector<unsigned>{static_cast<unsigned>(own)};
      EXPECT_EQ(*section_bytes(raw, top, s), "part " + std::to_string(own - 1));
      s.part.back() = static_cast<unsigned>(own + 1);
      std::string rest = *section_bytes(raw, top, s);
      const std::string first_of_rest = "part " + std::to_string(own) + "\r\n";
      EXPECT_EQ(rest.substr(0, first_of_rest.size()), first_of_rest) << rest.substr(0, 40);
      if (!closed && !nested) rest = rest.substr(0, rest.size() - 2);  // an unclosed last part runs to the end, line end too
      EXPECT_EQ(rest.substr(rest.size() - 9), "part 5999") << "to the end of the last part " << closed << nested;
      EXPECT_EQ(m.children.back().children.size(), 0u) << "opaque";
      if (nested) {
        EXPECT_EQ(top.children.size(), 2u) << "the parent goes on past the limit with one more part";
      }
      (void)body_structure(raw, top, true);
    }
  }
}

TEST(MimeTree, CrlfLines) {
  // Every LF not after a CR gets one; CRLF and bare CR stay; the size is counted without copying.
  const std::pair<std::string, std::string> cases[] = {
      {"", ""},
      {"a\nb\n", "a\r\nb\r\n"},
      {"a\r\nb\r\n", "a\r\nb\r\n"},
      {"\n\n", "\r\n\r\n"},
      {"mixed\r\nand\nbare\rcr\n", "mixed\r\nand\r\nbare\rcr\r\n"},
      {"no line end", "no line end"},
      {"\r\r\n\n", "\r\r\n\r\n"},
  };
  for (const auto& [in, want] : cases) {
    EXPECT_EQ(crlf_lines(in), want) << in;
    EXPECT_EQ(crlf_lines_size(in), want.size()) << in;
  }
  // A message in the IMAP form keeps its structure: the same parts, each in the CRLF form.
  std::string lf = kNested;
  std::erase(lf, '\r');
  std::string crlf = crlf_lines(lf);
  EXPECT_EQ(crlf, std::string(kNested));
}

TEST(ImapFetch, BinarySections) {
  const std::string raw =
      "Content-Type: multipart/mixed; boundary=b\r\n"
      "\r\n"
      "--b\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: quoted-printable\r\n"
      "\r\n"
      "caf=C3=A9 soft=\r\n"
      "break  \r\n"
      "padded = \t\r\n"
      "break\r\n"
      "--b\r\n"
      "Content-Type: application/octet-stream\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "\r\n"
      "AAEC/w==\r\n"
      "--b\r\n"
      "Content-Type: text/plain\r\n"
      "\r\n"
      "as it stands\r\n"
      "--b\r\n"
      "Content-Type: application/octet-stream\r\n"
      "Content-Transfer-Encoding: x-made-up\r\n"
      "\r\n"
      "????\r\n"
      "--b\r\n"
      "Content-Type: message/rfc822\r\n"
      "\r\n"
      "Subject: inner\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "\r\n"
      "aW5uZXI=\r\n"
      "--b--\r\n";
  MimeNode top = parse_mime_tree(raw);
  ASSERT_EQ(top.children.size(), 5u);
  auto bin = [&](std::vector<unsigned> part, bool* unknown) {
    Section s;
    s.part = std::move(part);
    return binary_section(raw, top, s, unknown);
  };
  bool unknown = true;
  // Blanks at the end of an encoded line are transport padding (RFC 2045 6.7 (3)): deleted, and a
  // "=" before them is still a soft line break (imaptest's fetch-binary-mime-qp).
  EXPECT_EQ(*bin({1}, &unknown), "caf\xc3\xa9 softbreak\r\npadded break");
  EXPECT_FALSE(unknown);
  EXPECT_EQ(*bin({2}, &unknown), std::string("\x00\x01\x02\xff", 4));  // a NUL: sent as literal8
  EXPECT_EQ(*bin({3}, &unknown), "as it stands");
  EXPECT_EQ(*bin({}, &unknown), raw);  // the whole message, as it stands
  // An attached message is sent as it stands; its own body is decoded when named.
  EXPECT_EQ(*bin({5}, &unknown), "Subject: inner\r\nContent-Transfer-Encoding: base64\r\n\r\naW5uZXI=");
  EXPECT_EQ(*bin({5, 1}, &unknown), "inner");
  EXPECT_FALSE(bin({6}, &unknown));
  EXPECT_FALSE(unknown);  // no such part: an empty answer, not UNKNOWN-CTE
  EXPECT_FALSE(bin({4}, &unknown));
  EXPECT_TRUE(unknown);
  // The parser: BINARY, BINARY.PEEK with a partial range, BINARY.SIZE; part numbers only.
  std::string error;
  Value v;
  v.text = "BINARY.PEEK[1.2]<4.8>";
  auto a = parse_fetch_attrs(v, &error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ((*a)[0].kind, FetchAttr::Kind::kBinary);
  EXPECT_TRUE((*a)[0].peek);
  EXPECT_EQ((*a)[0].name, "BINARY[1.2]<4>");
  v.text = "BINARY[]";
  a = parse_fetch_attrs(v, &error);
  ASSERT_TRUE(a) << error;
  EXPECT_FALSE((*a)[0].peek);
  for (const char* bad : {"BINARY[1.MIME]", "BINARY[HEADER]", "BINARY.PEEK[TEXT]", "BINARY.SIZE[1]<0.4>", "BINARY[1"}) {
    v.text = bad;
    EXPECT_FALSE(parse_fetch_attrs(v, &error)) << bad;
  }
}

TEST(ImapSizeCache, IsBoundedAndKeepsWhatItHolds) {
  ImapSizeCache cache;
  EXPECT_FALSE(cache.get(7));
  cache.put(7, 1234);
  EXPECT_EQ(cache.get(7), 1234u);
  for (std::uint64_t seq = 100; cache.size() < ImapSizeCache::kMax; ++seq) cache.put(seq, seq);
  EXPECT_EQ(cache.size(), ImapSizeCache::kMax);
  cache.put(1, 5);  // full: cleared, then this one kept
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.get(1), 5u);
  EXPECT_FALSE(cache.get(7));
}

TEST(Auth, FloodsAreThrottledPerUserAndPerClient) {
  test::ScratchDir dir;
  auto store = std::move(MailboxStore::open(dir / "m", false)).value();
  User u;
  u.name = "alice@example.com";
  u.password_hash = *hash_password("right", 10);
  ASSERT_TRUE(store->add_user(u).ok());
  Authenticator auth(*store);
  EXPECT_EQ(auth.login("ALICE@example.com", "right", "192.0.2.1", "imap").outcome, Authenticator::Outcome::kOk);
  for (unsigned i = 0; i < Authenticator::kMaxFailuresPerUser; ++i)
    EXPECT_EQ(auth.login("alice@example.com", "wrong", "192.0.2." + std::to_string(10 + i), "imap").outcome,
              Authenticator::Outcome::kBadCredentials);
  // Now the right password is refused too, from anywhere, until the window passes.
  EXPECT_EQ(auth.login("alice@example.com", "right", "198.51.100.1", "imap").outcome, Authenticator::Outcome::kThrottled);
  // One client guessing many names is stopped as well.
  for (unsigned i = 0; i < Authenticator::kMaxFailuresPerClient; ++i)
    (void)auth.login("user" + std::to_string(i) + "@example.com", "x", "203.0.113.7", "imap");
  User b;
  b.name = "bob@example.com";
  b.password_hash = *hash_password("pw", 10);
  ASSERT_TRUE(store->add_user(b).ok());
  EXPECT_EQ(auth.login("bob@example.com", "pw", "203.0.113.7", "imap").outcome, Authenticator::Outcome::kThrottled);
  EXPECT_EQ(auth.login("bob@example.com", "pw", "203.0.113.8", "imap").outcome, Authenticator::Outcome::kOk);
  // App passwords work; disabled users do not get in.
  auto app = generate_app_password();
  ASSERT_TRUE(store->update_user("bob@example.com", [&](User& x) {
    x.app_passwords.push_back({"phone", *hash_password(app, 10), 0});
    return ok_status();
  }).ok());
  EXPECT_EQ(auth.login("bob@example.com", app, "203.0.113.9", "imap").outcome, Authenticator::Outcome::kOk);
  ASSERT_TRUE(store->update_user("bob@example.com", [](User& x) {
    x.disabled = true;
    return ok_status();
  }).ok());
  EXPECT_EQ(auth.login("bob@example.com", "pw", "203.0.113.9", "imap").outcome, Authenticator::Outcome::kDisabled);
}

TEST(Auth, LoginsGoToTheAuditLog) {
  test::ScratchDir dir;
  auto store = std::move(MailboxStore::open(dir / "m", false)).value();
  for (auto [name, role] : {std::pair{"ann@example.com", Role::kUser}, std::pair{"oli@example.com", Role::kAuditor}}) {
    User u;
    u.name = name;
    u.role = role;
    u.password_hash = *hash_password("pw", 10);
    ASSERT_TRUE(store->add_user(u).ok());
  }
  auto cases = std::move(CaseStore::open(dir / "cases", false)).value();
  Authenticator auth(*store);
  auth.set_audit(cases.get());
  using O = Authenticator::Outcome;
  EXPECT_EQ(auth.login("ann@example.com", "pw", "192.0.2.1", "imap").outcome, O::kOk);    // an end user's IMAP
  EXPECT_EQ(auth.login("ann@example.com", "pw", "192.0.2.1", "web").outcome, O::kOk);     // the portal
  EXPECT_EQ(auth.login("oli@example.com", "pw", "192.0.2.2", "imap").outcome, O::kOk);    // an auditor
  EXPECT_EQ(auth.login("ann@example.com", "no", "192.0.2.3", "smtp").outcome, O::kBadCredentials);  // refused
  std::vector<std::string> got;
  for (const auto& e : cases->audit_entries(1, 100).value()) got.push_back(e.actor + " " + e.action);
  EXPECT_EQ(got, (std::vector<std::string>{"imap:ann@example.com login", "web:ann@example.com login",
                                           "imap:oli@example.com login", "smtp:ann@example.com login.failed"}));
  // A login whose entry cannot be written does not happen (a read-only store refuses every entry;
  // the first handle is closed first: LMDB allows one per environment and process).
  auth.set_audit(nullptr);
  cases.reset();
  auto locked = std::move(CaseStore::open(dir / "cases", true)).value();
  auth.set_audit(locked.get());
  EXPECT_EQ(auth.login("oli@example.com", "pw", "192.0.2.2", "imap").outcome, O::kUnavailable);
  EXPECT_EQ(auth.login("ann@example.com", "pw", "192.0.2.1", "web").outcome, O::kUnavailable);
  EXPECT_EQ(auth.login("ann@example.com", "pw", "192.0.2.1", "imap").outcome, O::kOk)
      << "an end user's mail access goes on without the audit store";
}

TEST(Ldap, FilterValuesAreEscaped) {
  EXPECT_EQ(ldap_filter_for("(mail=%u)", "erin@example.com"), "(mail=erin@example.com)");
  EXPECT_EQ(ldap_filter_for("(&(uid=%l)(dc=%d))", "erin@example.com"), "(&(uid=erin)(dc=example.com))");
  // RFC 4515: a name cannot close the filter or add wildcards.
  EXPECT_EQ(ldap_filter_for("(mail=%u)", "*)(mail=*"), "(mail=\\2a\\29\\28mail=\\2a)");
  EXPECT_EQ(ldap_escape_filter_value(std::string("a\\b\0c\xc3\xa9", 7)), "a\\5cb\\00c\\c3\\a9");
  EXPECT_EQ(ldap_filter_for("(mail=%u)%%", "x"), "(mail=x)%");
}

}  // namespace
}  // namespace mailark::api::imap
