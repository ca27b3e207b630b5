// The web portal's parts that need no network: the HTML sanitiser, the message view, composing,
// the metrics registry, the HTTP reader's per-request body limit, and the index watermark the
// portal's lag gauge reads.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "api/http/request.h"
#include "engine/html_sanitize.h"
#include "engine/message.h"
#include "engine/message_view.h"
#include "engine/metrics.h"
#include "indexer/index.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

std::string clean(std::string_view html, bool remote = false) {
  SanitizeOptions o;
  o.allow_remote_images = remote;
  return sanitize_html(html, o).html;
}

// ---- the sanitiser ----

TEST(HtmlSanitize, ScriptsAndEventHandlersAreGone) {
  std::string out = clean(
      "<p onclick=\"steal()\" id=x class=y>hi<script>alert(1)</script></p><img src=x onerror=alert(1)>"
      "<body onload=alert(2)><svg onload=alert(3)><script>alert(4)</script></svg><iframe src=//evil></iframe>"
      "<object data=x></object><embed src=x><form action=//evil><input name=a><button>b</button></form>");
  EXPECT_EQ(out, "<p>hi</p>");
  for (const char* bad : {"script", "onerror", "onload", "onclick", "alert", "iframe", "object", "embed", "form",
                          "input", "svg", "id=", "class="})
    EXPECT_EQ(out.find(bad), std::string::npos) << bad << " in " << out;
}

TEST(HtmlSanitize, LinksKeepOnlyWebAndMailTargets) {
  std::string out = clean(
      "<a href=\"https://example.org/a?b=1&amp;c=2\">ok</a><a href=\"mailto:x@example.org\">m</a>"
      "<a href=\"javascript:alert(1)\">j</a><a href=\" JaVaScRiPt:alert(1)\">j2</a>"
      "<a href=\"jav&#x09;ascript:alert(1)\">j3</a><a href=\"java\nscript:alert(1)\">j4</a>"
      "<a href=\"data:text/html,<script>alert(1)</script>\">d</a><a href=\"vbscript:x\">v</a>"
      "<a href=\"/relative\">r</a><a href=\"//evil.example/x\">p</a>");
  EXPECT_NE(out.find("href=\"https://example.org/a?b=1&amp;c=2\" target=\"_blank\" rel=\"noopener noreferrer\""),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("href=\"mailto:x@example.org\""), std::string::npos);
  EXPECT_EQ(out.find("javascript"), std::string::npos) << out;
  EXPECT_EQ(out.find("data:"), std::string::npos);
  EXPECT_EQ(out.find("vbscript"), std::string::npos);
  EXPECT_EQ(out.find("/relative"), std::string::npos);
  EXPECT_EQ(out.find("evil"), std::string::npos);
  EXPECT_NE(out.find(">j3</a>"), std::string::npos) << "the text of a refused link stays";
}

TEST(HtmlSanitize, StylesKeepOnlySafeProperties) {
  std::string out = clean(
      "<p style=\"color: red; background: url(http://evil/x.png); position: fixed; font-weight:bold;"
      "width: expression(alert(1)); margin: 0 auto; background-color: rgb(1,2,3); behavior: url(x.htc);"
      "color: r\\65 d; -moz-binding: url(x); display: none; font-family: 'Times New Roman', serif\">x</p>"
      "<style>body{background:url(http://evil/)}</style><div style=\"top:0;z-index:99\">y</div>");
  EXPECT_NE(out.find("color: red"), std::string::npos) << out;
  EXPECT_NE(out.find("font-weight: bold"), std::string::npos);
  EXPECT_NE(out.find("margin: 0 auto"), std::string::npos);
  EXPECT_NE(out.find("background-color: rgb(1,2,3)"), std::string::npos);
  EXPECT_NE(out.find("font-family: &#39;Times New Roman&#39;, serif"), std::string::npos) << out;
  EXPECT_EQ(clean("<p style=\"width: expression\xC3\xA9jav))\">x</p>"), "<p>x</p>") << "found by fuzz/html_fuzz.cc";
  EXPECT_EQ(clean("<p style=\"color: rgb(1,2,3))\">x</p>"), "<p>x</p>");
  EXPECT_EQ(clean("<p style=\"color: rgb(rgb(1))\">x</p>"), "<p>x</p>");
  EXPECT_EQ(clean("<p style=\"color: red !important\">x</p>"), "<p style=\"color: red !important\">x</p>");
  for (const char* bad : {"url", "fixed", "expression", "behavior", "\\", "binding", "z-index", "<style", "top"})
    EXPECT_EQ(out.find(bad), std::string::npos) << bad << " in " << out;
  EXPECT_NE(out.find("<div>y</div>"), std::string::npos);
}

TEST(HtmlSanitize, RemoteImagesWaitUntilAllowed) {
  const std::string html =
      "<img src=\"http://tracker.example/p.gif\" width=1><img src=\"https://cdn.example/logo.png\" alt=logo>"
      "<img src=\"data:image/png;base64,iVBORw0KGgo=\"><img src=\"data:text/html;base64,PHNjcmlwdD4=\">"
      "<img srcset=\"http://x/1.png 1x\"><table background=\"http://evil/bg.png\"><tr><td>c</td></tr></table>";
  SanitizedHtml blocked = sanitize_html(html);
  EXPECT_EQ(blocked.remote_images_blocked, 2u);
  EXPECT_EQ(blocked.html.find("tracker"), std::string::npos);
  EXPECT_EQ(blocked.html.find("cdn.example"), std::string::npos);
  EXPECT_NE(blocked.html.find("data:image/png;base64,iVBORw0KGgo="), std::string::npos);
  EXPECT_EQ(blocked.html.find("data:text/html"), std::string::npos);
  EXPECT_EQ(blocked.html.find("srcset"), std::string::npos);
  EXPECT_EQ(blocked.html.find("background"), std::string::npos);
  std::string allowed = clean(html, true);
  EXPECT_NE(allowed.find("src=\"http://tracker.example/p.gif\""), std::string::npos);
  EXPECT_NE(allowed.find("src=\"https://cdn.example/logo.png\""), std::string::npos);
}

TEST(HtmlSanitize, OutputIsWellFormedWhateverTheInput) {
  // Mutation-XSS shapes: raw-text and foreign-content tricks whose markup a second parse would see
  // differently. The output escapes all text, so nothing parses into an element it did not write.
  for (const char* input :
       {"<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>",
        "<svg></p><style><a id=\"</style><img src=1 onerror=alert(1)>\">", "<xmp><img src=x onerror=alert(1)></xmp>",
        "<textarea><img src=x onerror=alert(1)></textarea>", "<title><img src=x onerror=alert(1)></title>",
        "<a href=\"https://x\"><a href=\"https://y\">nested</a></a>", "<table><td><p>unclosed", "</p></div></td>",
        "<!--<img src=x onerror=alert(1)>-->", "<![CDATA[<img src=x onerror=alert(1)>]]>", "&lt;script&gt;alert(1)&lt;/script&gt;"}) {
    std::string out = clean(input);
    EXPECT_EQ(out.find("<img"), std::string::npos) << input << " -> " << out;
    EXPECT_EQ(out.find("<script"), std::string::npos) << input << " -> " << out;
    EXPECT_EQ(clean(out), out) << "sanitising twice changes nothing: " << out;
  }
  EXPECT_EQ(clean("&lt;script&gt;"), "&lt;script&gt;");
}

TEST(HtmlSanitize, DeepNestingIsFlattenedNotRecursed) {
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "<div>";
  deep += "bottom";
  SanitizedHtml out = sanitize_html(deep);
  EXPECT_NE(out.html.find("bottom"), std::string::npos);
  std::size_t divs = 0;
  for (std::size_t p = out.html.find("<div>"); p != std::string::npos; p = out.html.find("<div>", p + 1)) ++divs;
  EXPECT_LE(divs, 64u);
}

TEST(HtmlSanitize, DoctypesAnywhereAreDropped) {
  // Gumbo 0.10.1 leaks a DOCTYPE token's strings outside the initial mode (LeakSanitizer in the ASan
  // build of this test fails without the fix; found by fuzz/html_fuzz.cc).
  EXPECT_EQ(clean("<noscript><!DOCTYPE html PUBLIC \"a\" \"b\"><p>x</p><!doctype y>"), "<p>x</p>");
  EXPECT_EQ(clean("<!DOCTYPE html><p>y</p>"), "<p>y</p>");
  EXPECT_EQ(clean("<!DOCTYPE"), "");
}

TEST(HtmlSanitize, CidImagesGoThroughTheCallersMap) {
  SanitizeOptions o;
  o.cid_url = [](std::string_view cid) -> std::optional<std::string> {
    if (cid == "logo@x") return std::string("data:image/png;base64,AAAA");
    return std::nullopt;
  };
  std::string out = sanitize_html("<img src=\"cid:logo@x\"><img src=\"cid:other\">", o).html;
  EXPECT_EQ(out, "<img src=\"data:image/png;base64,AAAA\">");
}

TEST(HtmlSanitize, TextBecomesEscapedHtmlWithLinks) {
  EXPECT_EQ(text_to_html("a <b> & \"c\"\nsee https://example.org/x."),
            "a &lt;b&gt; &amp; \"c\"<br>\nsee <a href=\"https://example.org/x\" target=\"_blank\" rel=\"noopener "
            "noreferrer\">https://example.org/x</a>.");
  EXPECT_EQ(text_to_html("javascript:alert(1)"), "javascript:alert(1)");
}

// ---- the message view ----

const char* kMixed =
    "From: Ana <ana@example.com>\r\nTo: Bob <bob@example.com>, carol@example.com\r\nCc: dan@example.com\r\n"
    "Subject: =?utf-8?q?Caf=C3=A9?=\r\nMessage-ID: <m1@example.com>\r\nReferences: <a@x> <b@x>\r\n"
    "Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=M\r\n\r\n"
    "--M\r\nContent-Type: multipart/related; boundary=R\r\n\r\n"
    "--R\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n"
    "--A\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    "Caf=E9 au lait\r\n"
    "--A\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "<p>Caf\xC3\xA9 <img src=\"cid:logo@x\"><img src=\"http://tracker/x.gif\"></p>\r\n--A--\r\n"
    "--R\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--R--\r\n"
    "--M\r\nContent-Type: application/pdf; name=\"r\xC3\xA9sum\xC3\xA9.pdf\"\r\nContent-Disposition: attachment\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    "--M\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y\r\nSubject: inner\r\n\r\ninner body\r\n--M--\r\n";

TEST(MessageView, RawHeaderBytesReadInTheDeclaredCharset) {
  // As the index reads them (Message.RawHeaderBytesReadInTheDeclaredCharset): the web view and the
  // export's load file show the subject and names, not windows-1252 mojibake.
  const std::string raw =
      "From: \xcd\xf5\xd0\xa1\xc3\xf7 <wang@example.cn>\r\nSubject: \xc8\xab\xd0\xc2\xd4\xad\xd7\xb0\r\n"
      "Content-Type: text/plain; charset=GB2312\r\n\r\nbody\r\n";
  MessageView v = view_message(raw);
  EXPECT_EQ(v.subject, "全新原装");
  ASSERT_EQ(v.from.size(), 1u);
  EXPECT_EQ(v.from[0].name, "王小明");
  bool seen = false;
  for (const auto& [name, value] : v.headers)
    if (name == "Subject") seen = value == "全新原装";
  EXPECT_TRUE(seen);
  // An attachment's raw 8-bit name (the header all ASCII) as the index reads it
  const std::string att =
      "From: a@example.cn\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
      "Content-Type: text/plain; charset=gb2312\r\n\r\nbody\r\n--b\r\n"
      "Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"\xcd\xf5.pdf\"\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
  MessageView va = view_message(att);
  ASSERT_EQ(va.attachments.size(), 1u);
  EXPECT_EQ(va.attachments[0].filename, "王.pdf");
  MessageView f = view_message_fields(raw);
  EXPECT_EQ(f.subject, v.subject);
  EXPECT_EQ(f.from.at(0).name, "王小明");
}

TEST(MessageView, BodyAttachmentsAndSections) {
  MessageView v = view_message(kMixed);
  EXPECT_EQ(v.subject, "Café");
  EXPECT_EQ(v.message_id, "<m1@example.com>");
  ASSERT_EQ(v.references.size(), 2u);
  ASSERT_EQ(v.to.size(), 2u);
  EXPECT_EQ(v.to[0].name, "Bob");
  EXPECT_EQ(v.cc[0].addr, "dan@example.com");
  ASSERT_GE(v.headers.size(), 8u);
  EXPECT_EQ(v.headers[0], (std::pair<std::string, std::string>{"From", "Ana <ana@example.com>"}));
  EXPECT_EQ(v.headers[3], (std::pair<std::string, std::string>{"Subject", "Café"}));
  EXPECT_EQ(v.text, "Café au lait") << "quoted-printable and Latin-1 decoded (the CRLF before a boundary is the boundary's)";
  EXPECT_TRUE(v.has_html);
  EXPECT_EQ(v.remote_images, 1u) << "the tracker left out by the sanitised HTML";
  ASSERT_EQ(v.attachments.size(), 3u);
  EXPECT_EQ(v.attachments[0].section, "1.2");
  EXPECT_TRUE(v.attachments[0].inline_image);
  EXPECT_EQ(v.attachments[1].section, "2");
  EXPECT_EQ(v.attachments[1].filename, "résumé.pdf");
  EXPECT_EQ(v.attachments[2].section, "3");
  EXPECT_EQ(v.attachments[2].content_type, "message/rfc822");

  auto pdf = part_content(kMixed, "2", 1 << 20);
  ASSERT_TRUE(pdf);
  EXPECT_EQ(pdf->bytes, "%PDF-1.4\n");
  auto inner = part_content(kMixed, "3", 1 << 20);
  ASSERT_TRUE(inner);
  EXPECT_NE(inner->bytes.find("Subject: inner"), std::string::npos);
  auto inner_body = part_content(kMixed, "3.1", 1 << 20);
  ASSERT_TRUE(inner_body);
  EXPECT_EQ(inner_body->bytes, "inner body");
  EXPECT_FALSE(part_content(kMixed, "1", 1 << 20)) << "a multipart is no download";
  for (const char* bad : {"4", "0", "2.1", "1.2.1", "3.1.1", "x", "", "1..2", "99999999999"})
    EXPECT_FALSE(part_content(kMixed, bad, 1 << 20)) << bad;
}

TEST(MessageView, FieldsWrittenTwiceReadAsTheIndexReadsThem) {
  // ruby-mail's raw_email_with_binary_encoded.eml has two Subject fields; a DKIM replay puts a fake
  // one first. The index (GMime) reads the last; the web view and IMAP's ENVELOPE read the same.
  const std::string raw =
      "Subject: fake subject\r\nMessage-ID: <fake@x>\r\nFrom: a@example.com\r\nTo: b@example.com\r\n"
      "Subject: the real one\r\nMessage-ID: <real@x>\r\nTo: c@example.com\r\nDate: Mon, 08 Jun 2009 12:00:00 +0000\r\n"
      "\r\nbody\r\n";
  MessageView v = view_message(raw);
  EXPECT_EQ(v.subject, "the real one");
  EXPECT_EQ(v.message_id, "<real@x>");
  ASSERT_EQ(v.to.size(), 2u);
  EXPECT_EQ(v.to[1].addr, "c@example.com");
  auto m = parse_message(raw, Limits{});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->subject, v.subject) << "the index's subject";
  EXPECT_EQ(m->message_id, "real@x");
  // The fields alone (an export's load file) read the same, with Bcc beside To and Cc.
  MessageView f = view_message_fields(raw + "");
  EXPECT_EQ(f.subject, "the real one");
  EXPECT_EQ(f.to.size(), 2u);
  EXPECT_TRUE(f.text.empty());
  EXPECT_TRUE(f.headers.empty());
  MessageView b = view_message_fields("From: a@example.com\r\nBcc: x@example.com, Y <y@example.com>\r\n\r\nbody\r\n");
  ASSERT_EQ(b.bcc.size(), 2u);
  EXPECT_EQ(b.bcc[1].name, "Y");
}

TEST(MessageView, HtmlIsSanitisedWithInlineImagesEmbedded) {
  unsigned blocked = 0;
  std::string html = view_html(kMixed, false, &blocked);
  EXPECT_EQ(blocked, 1u);
  EXPECT_NE(html.find("Café"), std::string::npos);
  EXPECT_NE(html.find("src=\"data:image/png;base64,"), std::string::npos) << html;
  EXPECT_EQ(html.find("tracker"), std::string::npos);
  std::string plain = view_html("Subject: x\r\n\r\n<b>not html</b>\r\nhttps://example.org\r\n", false, &blocked);
  EXPECT_NE(plain.find("&lt;b&gt;not html&lt;/b&gt;"), std::string::npos) << plain;
  EXPECT_NE(plain.find("<a href=\"https://example.org\""), std::string::npos);
}

// ---- composing ----

TEST(Compose, WhatIsWrittenReadsBack) {
  Draft d;
  d.from = {"Ana Lima", "ana@example.com"};
  d.to = {{"Bob", "bob@example.com"}};
  d.cc = {{"", "carol@example.com"}};
  d.subject = "Grüße ✓";
  d.text = "line one\nline two\n";
  d.html = "<p>hi</p>";
  d.in_reply_to = "<orig@example.com>";
  d.references = {"<a@x>", "<orig@example.com>"};
  d.attachments = {{"données.bin", "application/octet-stream", std::string("\x00\x01\xff", 3)}};
  d.forward_raw = "From: x@y\r\nSubject: forwarded\r\n\r\nold\r\n";
  d.hostname = "mx.example.com";
  std::string raw = compose_message(d);
  EXPECT_EQ(raw.find("Bcc"), std::string::npos);
  EXPECT_EQ(raw.find("\n\n"), std::string::npos) << "CRLF line ends only";
  MessageView v = view_message(raw);
  EXPECT_EQ(v.subject, "Grüße ✓");
  EXPECT_EQ(v.from[0].name, "Ana Lima");
  EXPECT_EQ(v.to[0].addr, "bob@example.com");
  EXPECT_EQ(v.cc[0].addr, "carol@example.com");
  EXPECT_EQ(v.in_reply_to, "<orig@example.com>");
  EXPECT_EQ(v.references.size(), 2u);
  EXPECT_NE(v.message_id.find("@mx.example.com>"), std::string::npos);
  EXPECT_EQ(v.text, "line one\nline two\n");
  EXPECT_TRUE(v.has_html);
  ASSERT_EQ(v.attachments.size(), 2u);
  EXPECT_EQ(v.attachments[0].filename, "données.bin");
  auto bin = part_content(raw, v.attachments[0].section, 100);
  ASSERT_TRUE(bin);
  EXPECT_EQ(bin->bytes, std::string("\x00\x01\xff", 3));
  EXPECT_EQ(v.attachments[1].content_type, "message/rfc822");
  // Header injection through the subject or a reference is not possible: no new header field appears.
  Draft evil = d;
  evil.subject = "x\r\nBcc: victim@example.com";
  evil.in_reply_to = "<a>\r\nX-Injected: yes";
  evil.to = {{"Bob\r\nBcc: victim@example.com", "bob@example.com"}};
  evil.from = {"Ana\r\nX-Injected: yes", "ana@example.com"};
  std::string e = compose_message(evil);
  EXPECT_EQ(e.find("\r\nBcc:"), std::string::npos);
  EXPECT_EQ(e.find("\r\nX-Injected:"), std::string::npos);
  // Nor through a name; and the subject and names read back on one line.
  EXPECT_EQ(e.find("\r\nBcc:"), std::string::npos);
  MessageView ev = view_message(e);
  EXPECT_EQ(ev.subject, "x  Bcc: victim@example.com");
  ASSERT_EQ(ev.to.size(), 1u);
  EXPECT_EQ(ev.to[0].addr, "bob@example.com");
  EXPECT_EQ(ev.to[0].name, "Bob  Bcc: victim@example.com");
  EXPECT_EQ(ev.from[0].name, "Ana  X-Injected: yes");
  EXPECT_TRUE(ev.cc.empty() || ev.cc[0].addr == "carol@example.com");
}

// ---- metrics ----

TEST(Metrics, CountersAndHistogramsRender) {
  auto& c = metrics::counter("mailark_test_events_total", "Test events", {{"kind", "a\"b"}});
  c.inc();
  c.inc(2);
  EXPECT_EQ(&c, &metrics::counter("mailark_test_events_total", "ignored", {{"kind", "a\"b"}}));
  auto& h = metrics::histogram("mailark_test_seconds", "Test latency");
  h.observe(0.0001);
  h.observe(0.3);
  h.observe(100);
  std::string text = metrics::render();
  EXPECT_NE(text.find("# TYPE mailark_test_events_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("mailark_test_events_total{kind=\"a\\\"b\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("mailark_test_seconds_bucket{le=\"0.0005\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("mailark_test_seconds_bucket{le=\"0.5\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("mailark_test_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("mailark_test_seconds_count 3\n"), std::string::npos);
}

// ---- HTTP: the body limit is chosen per request ----

TEST(HttpRequest, BodyLimitIsChosenFromTheHeader) {
  api::http::RequestReader r(16 * 1024, 1 << 20);
  r.set_body_limit([](const api::http::Request& head) -> std::size_t { return head.path == "/big" ? 1000 : 10; });
  EXPECT_EQ(r.feed("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"), api::http::RequestReader::State::kError);
  EXPECT_EQ(r.error_status(), 413);
  api::http::RequestReader big(16 * 1024, 1 << 20);
  big.set_body_limit([](const api::http::Request& head) -> std::size_t { return head.path == "/big" ? 1000 : 10; });
  ASSERT_EQ(big.feed("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n" + std::string(500, 'a')),
            api::http::RequestReader::State::kComplete);
  EXPECT_EQ(big.request().body.size(), 500u);
  // Chunked: refused once the chunks pass the limit.
  api::http::RequestReader chunked(16 * 1024, 1 << 20);
  chunked.set_body_limit([](const api::http::Request&) -> std::size_t { return 10; });
  EXPECT_EQ(chunked.feed("POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"),
            api::http::RequestReader::State::kError);
  EXPECT_EQ(chunked.error_status(), 413);
}

TEST(HttpRequest, CookiesPathsAndDownloadNames) {
  api::http::Request r;
  r.headers = {{"cookie", "a=1; mailark_session=abc=def; mailark_session=second; x=y"}};
  EXPECT_EQ(api::http::cookie(r, "mailark_session"), "abc=def");
  EXPECT_EQ(api::http::cookie(r, "mailark"), "");
  EXPECT_EQ(api::http::cookie(r, "x"), "y");
  EXPECT_EQ(api::http::split_path("/api/v1/messages/3/7"), (std::vector<std::string>{"api", "v1", "messages", "3", "7"}));
  EXPECT_EQ(api::http::split_path("/a//b/"), (std::vector<std::string>{"a", "", "b", ""}));
  EXPECT_EQ(api::http::attachment_disposition("résumé \"x\".pdf"),
            "attachment; filename=\"r__sum__ _x_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.pdf");
  std::string evil = api::http::attachment_disposition("a\r\nSet-Cookie: x=1");
  EXPECT_EQ(evil.find_first_of("\r\n"), std::string::npos) << evil;
  EXPECT_EQ(api::http::attachment_disposition(""), "attachment; filename=\"attachment\"; filename*=UTF-8''attachment");
}

// ---- the index watermark counts other shards' ids ----

TEST(Index, WatermarkCoversOtherShardsIds) {
  // Two shards: shard 0 holds 1, 3, 5...; shard 1 holds 2, 4, 6...
  EXPECT_EQ(indexer::shard_coverage(5, 0, 2), 6u) << "shard 0 at 5 vouches up to 6 (6 is shard 1's)";
  EXPECT_EQ(indexer::shard_coverage(4, 1, 2), 5u) << "shard 1 at 4 vouches up to 5 (5 is shard 0's)";
  EXPECT_EQ(indexer::shard_coverage(4, 0, 2), 4u);
  EXPECT_EQ(indexer::shard_coverage(0, 1, 2), 1u);
  EXPECT_EQ(indexer::shard_coverage(7, 0, 1), 7u);
  EXPECT_EQ(indexer::shard_coverage(10, 2, 4), 10u);
}

}  // namespace
}  // namespace mailark
