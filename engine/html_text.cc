#include "engine/html_text.h"

#include <cctype>
#include <cstdint>

namespace mailark {
namespace {

bool ieq_prefix(std::string_view s, std::size_t pos, std::string_view word) {
  if (s.size() - pos < word.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[pos + i])) != word[i]) return false;
  return true;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes the entity starting at html[pos] == '&'. Returns the bytes consumed, 0 if not an entity.
std::size_t decode_entity(std::string_view html, std::size_t pos, std::string& out) {
  std::size_t end = html.find(';', pos);
  if (end == std::string_view::npos || end - pos > 10) return 0;
  std::string_view name = html.substr(pos + 1, end - pos - 1);
  if (!name.empty() && name[0] == '#') {
    std::uint32_t cp = 0;
    bool hex = name.size() > 1 && (name[1] == 'x' || name[1] == 'X');
    std::string_view digits = name.substr(hex ? 2 : 1);
    if (digits.empty()) return 0;
    for (char c : digits) {
      int v;
      if (c >= '0' && c <= '9')
        v = c - '0';
      else if (hex && c >= 'a' && c <= 'f')
        v = c - 'a' + 10;
      else if (hex && c >= 'A' && c <= 'F')
        v = c - 'A' + 10;
      else
        return 0;
      cp = cp * (hex ? 16 : 10) + static_cast<std::uint32_t>(v);
      if (cp > 0x10FFFF) cp = 0xFFFD;
    }
    append_utf8(out, cp);
    return end - pos + 1;
  }
  static const struct {
    const char* name;
    std::uint32_t cp;
  } kNamed[] = {
      {"amp", '&'},      {"lt", '<'},       {"gt", '>'},        {"quot", '"'},     {"apos", '\''},
      {"nbsp", ' '},     {"copy", 0xA9},    {"reg", 0xAE},      {"euro", 0x20AC},  {"pound", 0xA3},
      {"mdash", 0x2014}, {"ndash", 0x2013}, {"hellip", 0x2026}, {"rsquo", 0x2019}, {"lsquo", 0x2018},
      {"rdquo", 0x201D}, {"ldquo", 0x201C}, {"bull", 0x2022},   {"trade", 0x2122}, {"eacute", 0xE9},
  };
  for (const auto& e : kNamed) {
    if (name == e.name) {
      append_utf8(out, e.cp);
      return end - pos + 1;
    }
  }
  return 0;
}

}  // namespace

std::string html_to_text(std::string_view html) {
  std::string out;
  out.reserve(html.size() / 2);
  std::size_t i = 0;
  const std::size_t n = html.size();
  while (i < n) {
    char c = html[i];
    if (c == '<') {
      // Comments, and the content of elements a reader never sees, are skipped whole.
      if (ieq_prefix(html, i, "<!--")) {
        std::size_t end = html.find("-->", i + 4);
        i = end == std::string_view::npos ? n : end + 3;
        continue;
      }
      bool skipped = false;
      for (std::string_view hidden :
           {std::string_view("script"), std::string_view("style"), std::string_view("head")}) {
        if (ieq_prefix(html, i + 1, hidden)) {
          std::size_t after = i + 1 + hidden.size();
          if (after < n && (html[after] == '>' || std::isspace(static_cast<unsigned char>(html[after])))) {
            std::string close = "</" + std::string(hidden);
            std::size_t j = after;
            while (j < n && !ieq_prefix(html, j, close)) ++j;
            std::size_t gt = j < n ? html.find('>', j) : std::string_view::npos;
            i = gt == std::string_view::npos ? n : gt + 1;
            skipped = true;
            break;
          }
        }
      }
      if (skipped) continue;
      bool block = ieq_prefix(html, i, "<br") || ieq_prefix(html, i, "<p") || ieq_prefix(html, i, "</p") ||
                   ieq_prefix(html, i, "<div") || ieq_prefix(html, i, "</div") ||
                   ieq_prefix(html, i, "<tr") || ieq_prefix(html, i, "<li") || ieq_prefix(html, i, "<h");
      std::size_t gt = html.find('>', i + 1);
      i = gt == std::string_view::npos ? n : gt + 1;
      out.push_back(block ? '\n' : ' ');
      continue;
    }
    if (c == '&') {
      std::size_t used = decode_entity(html, i, out);
      if (used) {
        i += used;
        continue;
      }
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

}  // namespace mailark
