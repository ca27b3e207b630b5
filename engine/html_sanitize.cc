#include "engine/html_sanitize.h"

#include <gumbo.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "common/ascii.h"

namespace mailark {

namespace {

constexpr unsigned kMaxDepth = 64;  // deeper elements are flattened (their text kept)

enum class Keep { kElement, kDropWithContent, kUnwrap };

Keep keep_of(GumboTag tag) {
  switch (tag) {
    case GUMBO_TAG_A: case GUMBO_TAG_ABBR: case GUMBO_TAG_ADDRESS: case GUMBO_TAG_ARTICLE: case GUMBO_TAG_ASIDE:
    case GUMBO_TAG_B: case GUMBO_TAG_BDI: case GUMBO_TAG_BDO: case GUMBO_TAG_BIG: case GUMBO_TAG_BLOCKQUOTE:
    case GUMBO_TAG_BR: case GUMBO_TAG_CAPTION: case GUMBO_TAG_CENTER: case GUMBO_TAG_CITE: case GUMBO_TAG_CODE:
    case GUMBO_TAG_COL: case GUMBO_TAG_COLGROUP: case GUMBO_TAG_DD: case GUMBO_TAG_DEL: case GUMBO_TAG_DFN:
    case GUMBO_TAG_DIV: case GUMBO_TAG_DL: case GUMBO_TAG_DT: case GUMBO_TAG_EM: case GUMBO_TAG_FIGCAPTION:
    case GUMBO_TAG_FIGURE: case GUMBO_TAG_FONT: case GUMBO_TAG_FOOTER: case GUMBO_TAG_H1: case GUMBO_TAG_H2:
    case GUMBO_TAG_H3: case GUMBO_TAG_H4: case GUMBO_TAG_H5: case GUMBO_TAG_H6: case GUMBO_TAG_HEADER:
    case GUMBO_TAG_HR: case GUMBO_TAG_I: case GUMBO_TAG_IMG: case GUMBO_TAG_INS: case GUMBO_TAG_KBD:
    case GUMBO_TAG_LI: case GUMBO_TAG_MAIN: case GUMBO_TAG_MARK: case GUMBO_TAG_OL: case GUMBO_TAG_P:
    case GUMBO_TAG_PRE: case GUMBO_TAG_Q: case GUMBO_TAG_S: case GUMBO_TAG_SAMP: case GUMBO_TAG_SECTION:
    case GUMBO_TAG_SMALL: case GUMBO_TAG_SPAN: case GUMBO_TAG_STRIKE: case GUMBO_TAG_STRONG: case GUMBO_TAG_SUB:
    case GUMBO_TAG_SUP: case GUMBO_TAG_TABLE: case GUMBO_TAG_TBODY: case GUMBO_TAG_TD: case GUMBO_TAG_TFOOT:
    case GUMBO_TAG_TH: case GUMBO_TAG_THEAD: case GUMBO_TAG_TR: case GUMBO_TAG_TT: case GUMBO_TAG_U:
    case GUMBO_TAG_UL: case GUMBO_TAG_VAR: case GUMBO_TAG_WBR:
      return Keep::kElement;
    // Code, active content, raw text, foreign content, document metadata and form controls: gone
    // with everything inside.
    case GUMBO_TAG_SCRIPT: case GUMBO_TAG_STYLE: case GUMBO_TAG_NOSCRIPT: case GUMBO_TAG_TEMPLATE:
    case GUMBO_TAG_IFRAME: case GUMBO_TAG_FRAME: case GUMBO_TAG_FRAMESET: case GUMBO_TAG_NOFRAMES:
    case GUMBO_TAG_OBJECT: case GUMBO_TAG_EMBED: case GUMBO_TAG_APPLET: case GUMBO_TAG_PARAM:
    case GUMBO_TAG_SVG: case GUMBO_TAG_MATH: case GUMBO_TAG_TITLE: case GUMBO_TAG_HEAD: case GUMBO_TAG_META:
    case GUMBO_TAG_LINK: case GUMBO_TAG_BASE: case GUMBO_TAG_TEXTAREA: case GUMBO_TAG_SELECT:
    case GUMBO_TAG_OPTION: case GUMBO_TAG_OPTGROUP: case GUMBO_TAG_INPUT: case GUMBO_TAG_BUTTON:
    case GUMBO_TAG_AUDIO: case GUMBO_TAG_VIDEO: case GUMBO_TAG_SOURCE: case GUMBO_TAG_TRACK:
    case GUMBO_TAG_CANVAS: case GUMBO_TAG_XMP: case GUMBO_TAG_PLAINTEXT: case GUMBO_TAG_NOEMBED:
    case GUMBO_TAG_KEYGEN: case GUMBO_TAG_MENUITEM: case GUMBO_TAG_DATALIST: case GUMBO_TAG_OUTPUT:
    case GUMBO_TAG_PROGRESS: case GUMBO_TAG_METER: case GUMBO_TAG_MAP: case GUMBO_TAG_AREA:
    case GUMBO_TAG_ISINDEX: case GUMBO_TAG_BGSOUND: case GUMBO_TAG_IMAGE:
      return Keep::kDropWithContent;
    default:
      return Keep::kUnwrap;  // html, body, form, label, fieldset, unknown elements...: their text stays
  }
}

bool is_void(GumboTag tag) {
  return tag == GUMBO_TAG_BR || tag == GUMBO_TAG_HR || tag == GUMBO_TAG_IMG || tag == GUMBO_TAG_WBR ||
         tag == GUMBO_TAG_COL;
}

void escape_into(std::string& out, std::string_view s, bool attribute) {
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"':
        if (attribute) out += "&quot;"; else out.push_back(c);
        break;
      case '\'':
        if (attribute) out += "&#39;"; else out.push_back(c);
        break;
      case '\0': break;
      default: out.push_back(c);
    }
  }
}

// The URL as a browser reads its scheme: leading and trailing C0 controls and spaces dropped, tabs
// and newlines anywhere removed (WHATWG URL parsing). Returns the lower-case scheme, or "" for none.
std::string scheme_of(std::string_view url, std::string* cleaned) {
  std::string u;
  for (char c : url) {
    if (c == '\t' || c == '\n' || c == '\r') continue;
    u.push_back(c);
  }
  std::size_t b = 0, e = u.size();
  while (b < e && static_cast<unsigned char>(u[b]) <= 0x20) ++b;
  while (e > b && static_cast<unsigned char>(u[e - 1]) <= 0x20) --e;
  u = u.substr(b, e - b);
  *cleaned = u;
  std::size_t colon = u.find(':');
  if (colon == std::string::npos || colon == 0) return "";
  for (std::size_t i = 0; i < colon; ++i) {
    char c = u[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'));
    if (!ok) return "";
  }
  return ascii_lower(u.substr(0, colon));
}

bool allowed_property(std::string_view p) {
  static constexpr std::array<std::string_view, 44> kProps = {
      "color", "background-color", "font", "font-family", "font-size", "font-weight", "font-style", "font-variant",
      "text-align", "text-decoration", "text-indent", "text-transform", "line-height", "letter-spacing",
      "word-spacing", "white-space", "vertical-align", "margin", "margin-top", "margin-right", "margin-bottom",
      "margin-left", "padding", "padding-top", "padding-right", "padding-bottom", "padding-left", "border",
      "border-top", "border-right", "border-bottom", "border-left", "border-color", "border-style",
      "border-width", "border-collapse", "border-spacing", "border-radius", "width", "height", "max-width",
      "min-width", "list-style-type", "direction"};
  return std::find(kProps.begin(), kProps.end(), p) != kProps.end() || p == "table-layout" || p == "word-wrap" ||
         p == "word-break" || p == "overflow-wrap" || p == "float" || p == "clear" || p == "display";
}

bool allowed_value(std::string_view v) {
  // Letters, digits, spaces, # % . , - ! / _ and quotes for font names; parentheses only as rgb()/
  // rgba() and balanced. No backslash (CSS escapes), and none of the words that name active CSS
  // (url, expression, javascript, behavior, binding) anywhere, even where they could do
  // nothing: cheaper to refuse than to reason about.
  std::string lower = ascii_lower(v);
  for (const char* word : {"url", "expression", "javascript", "behavior", "binding"})
    if (lower.find(word) != std::string::npos) return false;
  int depth = 0;
  for (std::size_t i = 0; i < lower.size(); ++i) {
    if (lower[i] == '(') {
      std::size_t start = i;
      while (start > 0 && lower[start - 1] >= 'a' && lower[start - 1] <= 'z') --start;
      std::string_view fn = std::string_view(lower).substr(start, i - start);
      if ((fn != "rgb" && fn != "rgba") || depth > 0) return false;
      ++depth;
    } else if (lower[i] == ')') {
      if (--depth < 0) return false;
    }
  }
  if (depth != 0) return false;
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x80) continue;  // font names in other scripts
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) continue;
    if (c != '\0' && std::strchr(" #%.,-!'\"()/_", c)) continue;
    return false;
  }
  return true;
}

std::string filter_style(std::string_view style) {
  std::string out;
  std::size_t pos = 0;
  while (pos <= style.size()) {
    std::size_t semi = style.find(';', pos);
    std::string_view decl = style.substr(pos, semi == std::string_view::npos ? std::string_view::npos : semi - pos);
    pos = semi == std::string_view::npos ? style.size() + 1 : semi + 1;
    std::size_t colon = decl.find(':');
    if (colon == std::string_view::npos) continue;
    std::string prop = ascii_lower(std::string(decl.substr(0, colon)));
    prop.erase(0, prop.find_first_not_of(" \t\r\n"));
    prop.erase(prop.find_last_not_of(" \t\r\n") + 1);
    std::string value(decl.substr(colon + 1));
    value.erase(0, value.find_first_not_of(" \t\r\n"));
    value.erase(value.find_last_not_of(" \t\r\n") + 1);
    if (!allowed_property(prop) || value.empty() || !allowed_value(value)) continue;
    if (prop == "display") {
      std::string lv = ascii_lower(value);
      if (lv != "block" && lv != "inline" && lv != "inline-block" && lv != "none" && lv.rfind("table", 0) != 0) continue;
    }
    if (!out.empty()) out += "; ";
    out += prop + ": " + value;
  }
  return out;
}

bool allowed_attribute(std::string_view name) {
  static constexpr std::array<std::string_view, 27> kAttrs = {
      "align", "valign", "width", "height", "bgcolor", "color", "border", "cellpadding", "cellspacing", "colspan",
      "rowspan", "size", "face", "alt", "title", "dir", "lang", "start", "type", "nowrap", "span", "summary",
      "headers", "scope", "abbr", "reversed", "value"};
  return std::find(kAttrs.begin(), kAttrs.end(), name) != kAttrs.end();
}

bool data_image(std::string_view cleaned) {
  std::string lower = ascii_lower(std::string(cleaned.substr(0, 32)));
  for (const char* t : {"data:image/png", "data:image/gif", "data:image/jpeg", "data:image/jpg", "data:image/webp"}) {
    std::size_t n = std::strlen(t);
    if (lower.compare(0, n, t) == 0 && lower.size() > n && (lower[n] == ';' || lower[n] == ',')) return true;
  }
  return false;
}

struct Writer {
  const SanitizeOptions& options;
  SanitizedHtml& result;

  // Writes the start tag of a kept element; false when the element must go (an <img> without a
  // source it may show).
  bool start_tag(const GumboElement& el, std::string& out) {
    const char* name = gumbo_normalized_tagname(el.tag);
    std::string attrs;
    bool has_src = false;
    for (unsigned i = 0; i < el.attributes.length; ++i) {
      const auto* a = static_cast<const GumboAttribute*>(el.attributes.data[i]);
      std::string an = ascii_lower(a->name);
      std::string_view value = a->value ? a->value : "";
      if (an == "href" && el.tag == GUMBO_TAG_A) {
        std::string cleaned;
        std::string scheme = scheme_of(value, &cleaned);
        if (scheme != "http" && scheme != "https" && scheme != "mailto") continue;
        attrs += " href=\"";
        escape_into(attrs, cleaned, true);
        attrs += "\" target=\"_blank\" rel=\"noopener noreferrer\"";
        continue;
      }
      if (an == "src" && el.tag == GUMBO_TAG_IMG) {
        std::string cleaned;
        std::string scheme = scheme_of(value, &cleaned);
        std::string url;
        if (scheme == "data" && data_image(cleaned)) {
          url = cleaned;
        } else if (scheme == "cid" && options.cid_url) {
          if (auto u = options.cid_url(std::string_view(cleaned).substr(4))) url = *u;
        } else if (scheme == "http" || scheme == "https") {
          if (options.allow_remote_images) url = cleaned;
          else result.remote_images_blocked++;
        }
        if (url.empty()) continue;
        has_src = true;
        attrs += " src=\"";
        escape_into(attrs, url, true);
        attrs += "\"";
        continue;
      }
      if (an == "style") {
        std::string st = filter_style(value);
        if (st.empty()) continue;
        attrs += " style=\"";
        escape_into(attrs, st, true);
        attrs += "\"";
        continue;
      }
      if (!allowed_attribute(an)) continue;
      attrs += " " + an + "=\"";
      escape_into(attrs, value, true);
      attrs += "\"";
    }
    if (el.tag == GUMBO_TAG_IMG && !has_src) return false;
    out += "<";
    out += name;
    out += attrs;
    out += ">";
    return true;
  }
};

// Before Gumbo sees the input, one linear pass takes out DOCTYPE tokens (Gumbo leaks some: below)
// and excess depth. Depth: Gumbo's tree building costs time in proportion to the depth of open elements for every tag, so
// 100,000 nested <div>s take it seconds. Before parsing, start tags that would open an element
// deeper than kMaxOpenDepth are turned into text (their '<' escaped): an approximate count (a lone
// tokenizer pass, no tree), which can only make a hostile page plainer, never let markup through,
// because everything Gumbo returns is sanitised anyway. Linear time. Test:
// HtmlSanitize.DeepNestingIsFlattenedNotRecursed.
constexpr unsigned kMaxOpenDepth = 400;

std::string limit_nesting(std::string_view html, bool* changed) {
  static constexpr std::array<std::string_view, 16> kVoid = {"area", "base", "br", "col", "embed", "hr", "img", "input",
                                                             "link", "meta", "param", "source", "track", "wbr", "keygen", "image"};
  std::string out;
  out.reserve(html.size());
  unsigned depth = 0;
  std::size_t i = 0;
  *changed = false;
  auto is_alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  while (i < html.size()) {
    std::size_t lt = html.find('<', i);
    if (lt == std::string_view::npos) {
      out.append(html.substr(i));
      break;
    }
    out.append(html.substr(i, lt - i));
    i = lt;
    if (i + 9 <= html.size() && ascii_lower(html.substr(i, 9)) == "<!doctype") {
      // Dropped: Gumbo 0.10.1 (Debian 12) leaks the strings of a DOCTYPE token anywhere but at the
      // very start (found by fuzz/html_fuzz.cc, regression in fuzz/regressions/html/), and a doctype
      // means nothing to a sanitised fragment.
      std::size_t gt = html.find('>', i);
      i = gt == std::string_view::npos ? html.size() : gt + 1;
      *changed = true;
      continue;
    }
    if (html.substr(i, 4) == "<!--") {
      std::size_t end = html.find("-->", i + 4);
      std::size_t stop = end == std::string_view::npos ? html.size() : end + 3;
      // Inside a raw-text element (noscript, ...) Gumbo reads no comment, so a DOCTYPE in this
      // "comment" reaches its tokenizer and leaks as above (fuzz/regressions/html/leak-3d52...):
      // such a comment is dropped whole (a sanitised fragment keeps no comments' meaning).
      if (ascii_lower(html.substr(i, stop - i)).find("<!doctype") != std::string::npos) {
        *changed = true;
      } else {
        out.append(html.substr(i, stop - i));
      }
      i = stop;
      continue;
    }
    const bool closing = i + 1 < html.size() && html[i + 1] == '/';
    const std::size_t name_at = i + (closing ? 2 : 1);
    if (name_at >= html.size() || !is_alpha(html[name_at])) {
      out.push_back('<');
      ++i;
      continue;
    }
    std::size_t name_end = name_at;
    while (name_end < html.size() && (is_alpha(html[name_end]) || (html[name_end] >= '0' && html[name_end] <= '9'))) ++name_end;
    std::size_t gt = html.find('>', name_end);
    std::size_t tag_end = gt == std::string_view::npos ? html.size() : gt + 1;
    if (closing) {
      if (depth > 0) --depth;
      out.append(html.substr(i, tag_end - i));
    } else {
      std::string name = ascii_lower(html.substr(name_at, name_end - name_at));
      const bool self_closing = gt != std::string_view::npos && gt > name_at && html[gt - 1] == '/';
      const bool opens = !self_closing && std::find(kVoid.begin(), kVoid.end(), name) == kVoid.end();
      if (opens && depth >= kMaxOpenDepth) {
        out += "&lt;";  // too deep: this tag is text now
        *changed = true;
        i += 1;
        continue;
      }
      if (opens) ++depth;
      out.append(html.substr(i, tag_end - i));
    }
    i = tag_end;
  }
  return out;
}

}  // namespace

SanitizedHtml sanitize_html(std::string_view input, const SanitizeOptions& options) {
  SanitizedHtml result;
  bool flattened = false;
  const std::string html = limit_nesting(input, &flattened);
  GumboOptions gopts = kGumboDefaultOptions;
  gopts.max_errors = 1000;  // Gumbo keeps a record per parse error; a hostile page has millions
  GumboOutput* output = gumbo_parse_with_options(&gopts, html.data(), html.size());
  if (!output) return result;
  Writer w{options, result};
  std::string& out = result.html;

  // Depth-first over the tree with an explicit stack (no recursion on the sender's nesting).
  struct Frame {
    const GumboNode* node;
    unsigned next_child = 0;
    const char* close = nullptr;  // the end tag to write when leaving, if a start tag was written
  };
  std::vector<Frame> stack;
  stack.push_back({output->root});
  unsigned depth = 0;  // elements written and open
  while (!stack.empty()) {
    Frame& f = stack.back();
    const GumboNode* node = f.node;
    const GumboVector* children = (node->type == GUMBO_NODE_ELEMENT || node->type == GUMBO_NODE_TEMPLATE)
                                      ? &node->v.element.children
                                      : nullptr;
    if (!children || f.next_child >= children->length || result.truncated) {
      if (f.close) {
        out += "</";
        out += f.close;
        out += ">";
        --depth;
      }
      stack.pop_back();
      continue;
    }
    const auto* child = static_cast<const GumboNode*>(children->data[f.next_child++]);
    switch (child->type) {
      case GUMBO_NODE_TEXT:
      case GUMBO_NODE_WHITESPACE:
      case GUMBO_NODE_CDATA:
        escape_into(out, child->v.text.text, false);
        break;
      case GUMBO_NODE_ELEMENT:
      case GUMBO_NODE_TEMPLATE: {
        const GumboElement& el = child->v.element;
        Keep k = keep_of(el.tag);
        if (el.tag_namespace != GUMBO_NAMESPACE_HTML) k = Keep::kDropWithContent;  // svg, mathml
        if (k == Keep::kDropWithContent) {
          result.elements_removed++;
          break;
        }
        Frame next{child};
        if (k == Keep::kElement && depth < kMaxDepth) {
          std::string tag;
          if (w.start_tag(el, tag)) {
            out += tag;
            if (is_void(el.tag)) break;
            next.close = gumbo_normalized_tagname(el.tag);
            ++depth;
          } else {
            result.elements_removed++;
            break;
          }
        } else if (k == Keep::kUnwrap && el.tag != GUMBO_TAG_HTML && el.tag != GUMBO_TAG_BODY) {
          result.elements_removed++;
        }
        stack.push_back(next);
        break;
      }
      default:
        break;  // comments, the document node
    }
    if (out.size() > options.max_output_bytes) result.truncated = true;
  }
  gumbo_destroy_output(&gopts, output);
  return result;
}

std::string text_to_html(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  std::size_t i = 0;
  while (i < text.size()) {
    bool link = false;
    for (std::string_view p : {std::string_view("https://"), std::string_view("http://")}) {
      if (text.substr(i, p.size()) == p && (i == 0 || !std::isalnum(static_cast<unsigned char>(text[i - 1])))) {
        std::size_t e = i;
        while (e < text.size() && static_cast<unsigned char>(text[e]) > 0x20 && !std::strchr("<>\"'", text[e])) ++e;
        while (e > i + p.size() && std::strchr(".,;:!?)]", text[e - 1])) --e;
        std::string_view url = text.substr(i, e - i);
        out += "<a href=\"";
        escape_into(out, url, true);
        out += "\" target=\"_blank\" rel=\"noopener noreferrer\">";
        escape_into(out, url, false);
        out += "</a>";
        i = e;
        link = true;
        break;
      }
    }
    if (link) continue;
    char c = text[i++];
    if (c == '\r') continue;
    if (c == '\n') {
      out += "<br>\n";
      continue;
    }
    escape_into(out, std::string_view(&c, 1), false);
  }
  return out;
}

}  // namespace mailark
