// Fuzzes the HTML sanitiser (engine/html_sanitize.cc, Gumbo underneath). What must hold for any input,
// checked here independently of the sanitiser's own tables: the output, parsed again by an HTML5
// parser (as a browser would), holds only harmless elements and attributes; every link is http,
// https or mailto; every image is a data: image (remote images are not allowed in this run); no
// style value holds "url(", "expression" or a backslash; and all of that holds again for the
// output sanitised a second time.
#include <gumbo.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "engine/html_sanitize.h"

namespace {

bool starts_with_ci(std::string_view s, std::string_view p) {
  if (s.size() < p.size()) return false;
  for (std::size_t i = 0; i < p.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != p[i]) return false;
  return true;
}

void check_tree(const GumboNode* root) {
  static const char* kTags[] = {"html", "head", "body", "a", "abbr", "address", "article", "aside", "b", "bdi", "bdo",
                                "big", "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd",
                                "del", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1",
                                "h2", "h3", "h4", "h5", "h6", "header", "hr", "i", "img", "ins", "kbd", "li", "main",
                                "mark", "ol", "p", "pre", "q", "s", "samp", "section", "small", "span", "strike",
                                "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u",
                                "ul", "var", "wbr"};
  std::vector<const GumboNode*> stack{root};
  while (!stack.empty()) {
    const GumboNode* n = stack.back();
    stack.pop_back();
    if (n->type != GUMBO_NODE_ELEMENT && n->type != GUMBO_NODE_DOCUMENT) continue;
    const GumboVector& kids = n->type == GUMBO_NODE_DOCUMENT ? n->v.document.children : n->v.element.children;
    for (unsigned i = 0; i < kids.length; ++i) stack.push_back(static_cast<const GumboNode*>(kids.data[i]));
    if (n->type != GUMBO_NODE_ELEMENT) continue;
    const GumboElement& el = n->v.element;
    if (el.tag_namespace != GUMBO_NAMESPACE_HTML) std::abort();
    const char* name = gumbo_normalized_tagname(el.tag);
    bool known = false;
    for (const char* t : kTags) known |= std::strcmp(t, name) == 0;
    if (!known) std::abort();  // script, style, iframe, svg, form, unknown...
    for (unsigned i = 0; i < el.attributes.length; ++i) {
      const auto* a = static_cast<const GumboAttribute*>(el.attributes.data[i]);
      std::string_view an = a->name, v = a->value;
      if (an.substr(0, 2) == "on" || an == "srcset" || an == "background" || an == "id" || an == "class" ||
          an == "action" || an == "formaction" || an == "xlink:href")
        std::abort();
      if (an == "href" && !(starts_with_ci(v, "http:") || starts_with_ci(v, "https:") || starts_with_ci(v, "mailto:")))
        std::abort();
      if (an == "src" && !starts_with_ci(v, "data:image/")) std::abort();
      if (an == "style") {
        std::string lower;
        for (char c : v) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
        if (lower.find("url(") != std::string::npos || lower.find("expression") != std::string::npos ||
            lower.find('\\') != std::string::npos || lower.find("@import") != std::string::npos)
          std::abort();
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view html(reinterpret_cast<const char*>(data), size);
  mailark::SanitizedHtml out = mailark::sanitize_html(html);
  GumboOutput* parsed = gumbo_parse_with_options(&kGumboDefaultOptions, out.html.data(), out.html.size());
  check_tree(parsed->document);
  gumbo_destroy_output(&kGumboDefaultOptions, parsed);
  // Sanitising the output again yields a tree that passes the same checks. (It need not be the same
  // bytes: a parser moves text that stands directly in a table out in front of it.)
  if (!out.truncated) {
    mailark::SanitizedHtml again = mailark::sanitize_html(out.html);
    GumboOutput* reparsed = gumbo_parse_with_options(&kGumboDefaultOptions, again.html.data(), again.html.size());
    check_tree(reparsed->document);
    gumbo_destroy_output(&kGumboDefaultOptions, reparsed);
  }
  (void)mailark::text_to_html(html);
  return 0;
}
