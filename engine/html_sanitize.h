// HTML mail made safe to show: parsed by Gumbo (Google's HTML5 parser, Debian's libgumbo), then written
// out again from an allowlist, so what reaches the browser is built by mailark and not by the sender.
//
// - Elements: formatting, lists, tables, links and images are kept; script, style, iframe, object,
//   embed, form controls, svg, math, meta, link, base and every raw-text element are dropped with
//   their content; unknown elements are dropped and their text kept.
// - Attributes: a short allowlist (no event handlers, no id or class, no srcset); style attributes keep
//   only allowlisted properties whose value has no url(), escape, expression or other function
//   besides rgb()/rgba(); links keep http, https and mailto targets only (checked after the control
//   and space characters a browser ignores are removed) and open in a new window without a referrer.
// - Images: data: images (png, gif, jpeg, webp) are kept; cid: images are rewritten by the caller's
//   function (or dropped); remote images are dropped unless allowed (the count is returned so the UI
//   can offer to show them).
// - The output is always well formed: every text and attribute value escaped, every kept element
//   closed, nesting flattened beyond a fixed depth; so a browser parses it as written (no mutation
//   XSS through reparsing).
//
// The web portal serves the result with a strict Content-Security-Policy inside a sandboxed frame
// (api/web/portal.cc): the sanitiser is one of three walls. Tests: HtmlSanitize.* (tests/web_test.cc),
// and in a browser tests/e2e/test_web_ui.py `test_hostile_html_runs_nothing`. Fuzzed: fuzz/html_fuzz.cc.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace mailark {

struct SanitizeOptions {
  bool allow_remote_images = false;
  // Maps a cid: reference (without "cid:") to the URL to use, or nothing to drop the image.
  std::function<std::optional<std::string>(std::string_view cid)> cid_url;
  std::size_t max_output_bytes = 8u << 20;  // the rest is cut (at an element boundary)
};

struct SanitizedHtml {
  std::string html;                    // the body's content (no <html>, <head> or <body>)
  unsigned remote_images_blocked = 0;  // <img> with an http(s) source left out
  unsigned elements_removed = 0;       // dropped elements (with or without their content)
  bool truncated = false;
};

SanitizedHtml sanitize_html(std::string_view html, const SanitizeOptions& options = {});

// A plain text part shown as HTML: escaped, line breaks kept, http(s) URLs made links.
std::string text_to_html(std::string_view text);

}  // namespace mailark
