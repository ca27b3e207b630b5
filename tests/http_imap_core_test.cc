// The I/O-free cores of the admin listener's HTTP (api/http/request.h) and of the IMAP client's
// response reader (api/imap/response.h), byte by byte.
#include <gtest/gtest.h>

#include "api/http/request.h"
#include "api/imap/response.h"
#include "api/continuity/monitor.h"

namespace mailark::api {
namespace {

using http::RequestReader;

RequestReader::State feed_bytewise(RequestReader& r, std::string_view in) {
  RequestReader::State st = RequestReader::State::kNeedMore;
  for (char c : in) {
    st = r.feed(std::string_view(&c, 1));
    if (st != RequestReader::State::kNeedMore) break;
  }
  return st;
}

TEST(HttpRequest, ARequestFedOneByteAtATimeIsWhole) {
  RequestReader r;
  const std::string req =
      "POST /continuity/panic?x=%41 HTTP/1.1\r\nHost: a\r\nAUTHORIZATION: Bearer t\r\nContent-Length: 20\r\n\r\n"
      "token=ab+cd&reason=x";
  ASSERT_EQ(feed_bytewise(r, req), RequestReader::State::kComplete);
  EXPECT_EQ(r.request().method, "POST");
  EXPECT_EQ(r.request().path, "/continuity/panic");
  EXPECT_EQ(r.request().query, "x=%41");
  EXPECT_EQ(r.request().header("authorization"), "Bearer t") << "names in lower case";
  auto form = http::parse_params(r.request().body);
  EXPECT_EQ(form["token"], "ab cd");
  EXPECT_EQ(form["reason"], "x");
  EXPECT_EQ(http::parse_params(r.request().query)["x"], "A");
}

TEST(HttpRequest, ChunkedBodyAndLimits) {
  RequestReader chunked;
  ASSERT_EQ(chunked.feed("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            RequestReader::State::kComplete);
  EXPECT_EQ(chunked.request().body, "hello");

  RequestReader small_header(128, 64);
  EXPECT_EQ(small_header.feed("GET / HTTP/1.1\r\nX: " + std::string(300, 'a') + "\r\n\r\n"), RequestReader::State::kError);
  EXPECT_EQ(small_header.error_status(), 431);
  RequestReader small_body(1024, 16);
  EXPECT_EQ(small_body.feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n"), RequestReader::State::kError);
  EXPECT_EQ(small_body.error_status(), 413) << "refused from the declared length, before the body";
  RequestReader garbage;
  EXPECT_EQ(garbage.feed("HELO example.com\r\n\r\n"), RequestReader::State::kError);
  EXPECT_EQ(garbage.error_status(), 400);
  RequestReader smuggle;
  EXPECT_EQ(smuggle.feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"),
            RequestReader::State::kError)
      << "two different lengths: refused, never guessed";
  // Framing that a proxy in front could read otherwise: refused (400, the connection closed).
  for (const char* head : {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
                           "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                           "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
                           "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                           "GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"}) {
    RequestReader r;
    EXPECT_EQ(r.feed(std::string(head) + "0\r\n\r\n"), RequestReader::State::kError) << head;
    EXPECT_EQ(r.error_status(), 400) << head;
  }
  // Answers that say what was wrong: a method no server knows (methods are case-sensitive) is 501,
  // a version this server does not speak 505, a request line ended by a bare LF 400.
  for (auto [req, status] : std::vector<std::pair<std::string, int>>{{"get / HTTP/1.1\r\nHost: a\r\n\r\n", 501},
                                                                   {"FROB / HTTP/1.1\r\nHost: a\r\n\r\n", 501},
                                                                   {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
                                                                   {"GET / HTTP/1.1\nHost: a\n\n", 400},
                                                                   {"GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400}}) {
    RequestReader r;
    EXPECT_EQ(r.feed(req), RequestReader::State::kError) << req;
    EXPECT_EQ(r.error_status(), status) << req << " " << r.error_text();
  }
  RequestReader old_client;  // HTTP/1.0 needs no Host
  EXPECT_EQ(old_client.feed("GET / HTTP/1.0\r\n\r\n"), RequestReader::State::kComplete);
}

// What a server takes room for before the body arrives (api/http/server.cc): the declared length, or
// for a chunked body the most it may grow to.
TEST(HttpRequest, TheBodyBoundIsKnownWithTheHeader) {
  RequestReader sized(1024, 100000);
  EXPECT_EQ(sized.feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n"), RequestReader::State::kNeedMore);
  ASSERT_TRUE(sized.head_complete());
  EXPECT_EQ(sized.body_bound(), 70000u);
  RequestReader chunked(1024, 100000);
  chunked.set_body_limit([](const http::Request&) { return std::size_t{80000}; });
  EXPECT_EQ(chunked.feed("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), RequestReader::State::kNeedMore);
  ASSERT_TRUE(chunked.head_complete());
  EXPECT_EQ(chunked.body_bound(), 80000u);
}

TEST(HttpRequest, ResponseIsFramedByTheLibrary) {
  std::string r = http::response(403, "text/html", "<p>no</p>", {{"X-Test", "1"}});
  EXPECT_EQ(r.rfind("HTTP/1.1 403 Forbidden\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("Content-Length: 9\r\n"), std::string::npos);
  EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos);
  EXPECT_NE(r.find("X-Test: 1\r\n"), std::string::npos);
  EXPECT_EQ(http::html_escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(http::url_decode("%zz%4", false), "%zz%4") << "bad escapes are kept";
}

TEST(ImapResponse, LinesAndLiteralsComeOutWhole) {
  imap::ResponseReader r;
  const std::string server =
      "* OK ready\r\n* 1 FETCH (BODY[] {12}\r\nline1\r\nline2)\r\nm1 OK done\r\n+ go ahead\r\nm2 NO [TRYCREATE] no such box\r\n";
  std::vector<imap::Response> got;
  for (char c : server) {
    r.feed(std::string_view(&c, 1));
    while (auto x = r.next()) got.push_back(*x);
  }
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0].kind, imap::Response::Kind::kUntagged);
  EXPECT_EQ(got[0].status, "OK");
  EXPECT_EQ(got[1].status, "1");
  EXPECT_NE(got[1].text.find("line1\r\nline2)"), std::string::npos) << "the literal stays inside its response";
  EXPECT_EQ(got[2].kind, imap::Response::Kind::kTagged);
  EXPECT_EQ(got[2].tag, "m1");
  EXPECT_EQ(got[3].kind, imap::Response::Kind::kContinuation);
  EXPECT_EQ(got[4].status, "NO");
  EXPECT_NE(got[4].text.find("[TRYCREATE]"), std::string::npos);
}

TEST(ImapResponse, AHugeLiteralIsAnErrorNotAnAllocation) {
  imap::ResponseReader r;
  r.feed("* 1 FETCH (BODY[] {99999999999}\r\n");
  EXPECT_FALSE(r.next().has_value());
  EXPECT_FALSE(r.error().empty());
  imap::ResponseReader endless;
  endless.feed(std::string(imap::ResponseReader::kMaxResponseBytes + 10, 'a'));
  EXPECT_FALSE(endless.next().has_value());
  EXPECT_FALSE(endless.error().empty());
  EXPECT_EQ(imap::quote("Sent \"x\" \\ y\r\n"), "\"Sent \\\"x\\\" \\\\ y\"");
}

TEST(ProbeToken, OnlyTheKeyThatMadeItChecksIt) {
  const std::string key(64, 'a'), other(64, 'b');
  std::string token = probe_token(key, "abc123", 1795950000);
  std::string id;
  std::int64_t at = 0;
  ASSERT_TRUE(check_probe_token(key, "  " + token + "\r\n", id, at));
  EXPECT_EQ(id, "abc123");
  EXPECT_EQ(at, 1795950000);
  EXPECT_FALSE(check_probe_token(other, token, id, at));
  std::string tampered = token;
  tampered[tampered.size() - 1] = tampered.back() == '0' ? '1' : '0';
  EXPECT_FALSE(check_probe_token(key, tampered, id, at));
  EXPECT_FALSE(check_probe_token(key, probe_token(key, "abc123", 1795950001).substr(0, 20), id, at));
  EXPECT_FALSE(check_probe_token(key, "abc123.notanumber." + std::string(64, '0'), id, at));
  EXPECT_FALSE(check_probe_token(key, "", id, at));
}

}  // namespace
}  // namespace mailark::api
