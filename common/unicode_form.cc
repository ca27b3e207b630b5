#include "common/unicode_form.h"

#include "common/utf8.h"

#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <optional>
#include <utility>
#include <vector>

namespace mailark {

namespace {

// Code points the compatibility form leaves as they are whatever stands beside them, in the blocks
// mail is mostly written in (scripts/unicode_stable.py; test UnicodeForm.StableRangesAreStable).
constexpr std::pair<char32_t, char32_t> kStable[] = {
#include "common/unicode_stable.inc"
};

}  // namespace

bool stable_code_point(char32_t cp) {
  if (cp >= 0x4E00 && cp <= 0x9FFF) return true;  // CJK Unified Ideographs, one range of the table
  if (cp >= 0xAC00 && cp <= 0xD7A3) return true;  // Hangul syllables, another
  if (cp == 0x0E33 || cp == 0x0EB3) return true;  // Thai and Lao AM, kept as written (append_normalized)
  const auto* r = std::upper_bound(std::begin(kStable), std::end(kStable), cp,
                                   [](char32_t c, const std::pair<char32_t, char32_t>& range) { return c < range.first; });
  return r != std::begin(kStable) && cp <= (r - 1)->second;
}

namespace {

// Thai and Lao AM (U+0E33, U+0EB3), which the form would write as two letters (NIKHAHIT and AA):
// kept as written, since the dictionaries that find Thai and Lao words (ICU's; indexer/word_breaks.h)
// know words with the one letter, not with the two.
constexpr std::string_view kThaiAm = "\xE0\xB8\xB3", kLaoAm = "\xE0\xBA\xB3";

std::size_t find_am(std::string_view text) {
  for (std::size_t at = text.find('\xE0'); at != std::string_view::npos; at = text.find('\xE0', at + 1))
    if (text.substr(at, 3) == kThaiAm || text.substr(at, 3) == kLaoAm) return at;
  return std::string_view::npos;
}

// u8_normalize's compatibility form of a piece of text (AM kept), appended to `out` (false: out of
// memory).
bool append_normalized(std::string_view piece, std::string& out) {
  for (;;) {
    const std::size_t am = find_am(piece);
    const std::string_view part = piece.substr(0, am);
    if (!part.empty()) {
      std::uint8_t buffer[512];
      std::size_t length = sizeof buffer;
      std::uint8_t* form = u8_normalize(UNINORM_NFKC, reinterpret_cast<const std::uint8_t*>(part.data()), part.size(),
                                        buffer, &length);
      if (form == nullptr) return false;
      out.append(reinterpret_cast<const char*>(form), length);
      if (form != buffer) std::free(form);
    }
    if (am == std::string_view::npos) return true;
    out.append(piece.substr(am, 3));
    piece.remove_prefix(am + 3);
  }
}

// A full-width form of an ASCII character (U+FF01..U+FF5E) or the ideographic space: its form is
// that ASCII character (one byte), or 0.
char ascii_twin(char32_t cp) {
  if (cp >= 0xFF01 && cp <= 0xFF5E) return static_cast<char>(cp - 0xFEE0);
  if (cp == 0x3000) return ' ';
  return 0;
}

}  // namespace

// The form is computed piece by piece (UAX #15's normalization boundaries): before every ASCII or
// stable code point the text may be cut, and the form of the whole is the forms of the pieces one
// after the other. A piece that is one such code point is its own form; a full-width ASCII twin
// followed by one is that ASCII character; only the rest (a stable code point with the marks after
// it, a run of other code points) goes to u8_normalize, so text that is mostly letters the form
// keeps costs a scan (docs/BENCHMARKS.md "One word written two ways"). Test
// UnicodeForm.PiecesAreTheWholeTextsForm checks it against u8_normalize of the whole text.
bool compatibility_form(std::string_view text, std::string& out) {
  auto boundary_at = [&](std::size_t k) {  // does the code point at k start a piece (or is k the end)?
    if (k >= text.size() || static_cast<unsigned char>(text[k]) < 0x80) return true;
    const auto [cp, len] = utf8_code_point(text, k);
    return len > 1 && stable_code_point(cp);
  };
  std::string result;
  // Text that is not UTF-8: the whole of it to u8_normalize (which makes such bytes U+FFFD)
  auto whole = [&] {
    result.clear();
    if (!append_normalized(text, result) || result == text) return false;
    out = std::move(result);
    return true;
  };
  std::size_t copied = 0;          // text before this is in `result`
  std::size_t last_stable = 0;     // where the last ASCII or stable code point starts
  bool have_stable = false;
  for (std::size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      last_stable = i++;
      have_stable = true;
      continue;
    }
    const auto [cp, len] = utf8_code_point(text, i);
    if (len == 1) return whole();
    if (stable_code_point(cp)) {
      last_stable = i;
      have_stable = true;
      i += len;
      continue;
    }
    if (copied == 0 && result.empty()) result.reserve(text.size() + 16);  // the first piece to change
    if (const char twin = ascii_twin(cp); twin && boundary_at(i + len)) {
      result.append(text, copied, i - copied);
      result += twin;
      copied = i + len;
      i += len;
      continue;
    }
    // A piece from the stable code point before (marks compose with it) to the next one
    const std::size_t from = have_stable && last_stable >= copied ? last_stable : copied;
    std::size_t to = i + len;
    while (!boundary_at(to)) {
      const std::size_t step = utf8_code_point(text, to).second;
      if (step == 1) return whole();
      to += step;
    }
    result.append(text, copied, from - copied);
    if (!append_normalized(text.substr(from, to - from), result)) return false;  // out of memory: as it is
    copied = to;
    i = to;
  }
  if (copied == 0) return false;  // nothing but ASCII and stable code points
  result.append(text, copied, std::string_view::npos);
  if (result == text) return false;
  out = std::move(result);
  return true;
}

std::string compatibility_form(std::string_view text) {
  std::string out;
  if (!compatibility_form(text, out)) out.assign(text);
  return out;
}

namespace {

// Marks are set aside on the letters of U+00C0..U+1FFF (Latin-1 to Greek Extended, which hold every
// precomposed Latin and Greek letter with marks mail is written with), the combining marks of
// U+0300..U+036F, and Hebrew's and Arabic's marks.
constexpr char32_t kMarkedFirst = 0xC0, kMarkedEnd = 0x2000;

// The letter `cp` without its marks: its canonical decomposition's first code point when every other
// one is a nonspacing mark (category Mn) and the letter is Latin or Greek ("é" "e", "Ǖ" "U", "ά" "α",
// "ệ" "e"); Cyrillic "ё" "е" (Russian writes it without its dots as often as with, where "й" and
// Ukrainian "ї" are letters of their own, kept); "ł", "đ" and "ø" (and their capitals) the plain
// letter; 0 for a combining mark of U+0300..U+036F (dropped); else `cp`.
char32_t letter_without_marks(char32_t cp) {
  if (cp >= 0x300 && cp <= 0x36F) return 0;
  // Hebrew points and cantillation, Arabic harakat and Quranic marks (the nonspacing marks of their
  // blocks), and the Arabic tatweel (a stretch of the line between letters): dropped, as Hebrew and
  // Arabic are mostly written without them.
  const bool hebrew_or_arabic_mark = (cp >= 0x591 && cp <= 0x5C7) || (cp >= 0x610 && cp <= 0x61A) ||
                                     (cp >= 0x64B && cp <= 0x65F) || cp == 0x670 || (cp >= 0x6D6 && cp <= 0x6ED);
  if (hebrew_or_arabic_mark && uc_is_general_category(cp, UC_CATEGORY_Mn)) return 0;
  switch (cp) {
    case 0x640: return 0;  // ـ tatweel
    // Arabic letters a writer uses one for the other, as Lucene's ArabicNormalizer reads them: alef
    // with madda or hamza as alef, alef maksura as yeh, teh marbuta as heh.
    case 0x622: case 0x623: case 0x625: return 0x627;
    case 0x649: return 0x64A;
    case 0x629: return 0x647;
    case 0x401: return 0x415;  // Ё Е
    case 0x451: return 0x435;  // ё е
    // Letters with a stroke, which Unicode writes as letters of their own but which their languages,
    // written without marks, write as the plain letter: Polish "Lodz", Vietnamese and Croatian "Dong",
    // Danish and Norwegian "Soren".
    case 0x141: return 'L';  // Ł
    case 0x142: return 'l';  // ł
    case 0x110: return 'D';  // Đ
    case 0x111: return 'd';  // đ
    case 0xD8: return 'O';   // Ø
    case 0xF8: return 'o';   // ø
    default: break;
  }
  char32_t base = cp;
  bool marked = false;
  for (int depth = 0; depth < 8; ++depth) {
    ucs4_t d[UC_DECOMPOSITION_MAX_LENGTH];
    const int n = uc_canonical_decomposition(base, d);
    if (n <= 1) break;  // none, or a singleton (the compatibility form has written those already)
    for (int i = 1; i < n; ++i)
      if (!uc_is_general_category(d[i], UC_CATEGORY_Mn)) return cp;
    base = d[0];
    marked = true;
  }
  if (!marked) return cp;
  const uc_script_t* script = uc_script(base);
  if (script == nullptr || (std::strcmp(script->name, "Latin") != 0 && std::strcmp(script->name, "Greek") != 0))
    return cp;
  return base;
}

const std::vector<char32_t>& unmarked_letters() {
  static const std::vector<char32_t> table = [] {
    std::vector<char32_t> t(kMarkedEnd - kMarkedFirst);
    for (char32_t cp = kMarkedFirst; cp < kMarkedEnd; ++cp) t[cp - kMarkedFirst] = letter_without_marks(cp);
    return t;
  }();
  return table;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// `text` without soft hyphens (U+00AD), with the sharp s (U+00DF, U+1E9E) as "ss", the Greek final
// sigma as the sigma and marks set aside (letter_without_marks); false (and `out` untouched) when it
// has none of them. One pass, copying the spans between them.
bool fold_for_search(std::string_view text, std::string& out) {
  // Lead bytes of U+0080..U+06FF's two-byte sequences, and of U+1000..U+1FFF's three-byte ones.
  const auto lead = [](unsigned char c) { return (c >= 0xC2 && c <= 0xDB) || c == 0xE1; };
  if (std::none_of(text.begin(), text.end(), [&](char c) { return lead(static_cast<unsigned char>(c)); }))
    return false;
  const auto& table = unmarked_letters();
  std::string r;
  std::size_t copied = 0;  // text before this is in r
  bool changed = false;
  const auto cont = [&](std::size_t i) { return i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80; };
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    // What can change: U+00AD (C2 AD), U+00C0..U+03FF (C3..CF), Cyrillic Ё and ё (D0 81, D1 91),
    // Hebrew (D6, D7), Arabic (D8, D9, DB) and U+1E00..U+1FFF (E1 B8..BF); the rest of Cyrillic,
    // Armenian, the Arabic letters of U+0680..U+06BF, Ethiopic, Hangul jamo, ... is skipped.
    const auto next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0u;
    if (!lead(c) || (c == 0xC2 && next != 0xAD) || (c == 0xD0 && next != 0x81) || (c == 0xD1 && next != 0x91) ||
        (c >= 0xD2 && c <= 0xD5) || c == 0xDA || (c == 0xE1 && next < 0xB8)) {
      ++i;
      continue;
    }
    char32_t cp = 0;
    std::size_t len = 1;
    if (c != 0xE1 && cont(i + 1)) {
      cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3Fu);
      len = 2;
    } else if (c == 0xE1 && cont(i + 1) && cont(i + 2)) {
      cp = 0x1000u | ((static_cast<unsigned char>(text[i + 1]) & 0x3Fu) << 6) | (static_cast<unsigned char>(text[i + 2]) & 0x3Fu);
      len = 3;
    }
    const char* with = nullptr;  // what the code point is written as, when it is not kept
    char32_t letter = cp;
    if (cp == 0xAD) {
      with = "";
    } else if (cp == 0xDF) {
      with = "ss";
    } else if (cp == 0x1E9E) {
      with = "SS";
    } else if (cp == 0x3C2) {
      letter = 0x3C3;
    } else if (cp >= kMarkedFirst && cp < kMarkedEnd) {
      letter = table[cp - kMarkedFirst];
      if (letter == 0) with = "";
    }
    if (with != nullptr || letter != cp) {
      if (!changed) r.reserve(text.size() + 8);
      r.append(text, copied, i - copied);
      if (with != nullptr)
        r += with;
      else
        append_utf8(r, letter);
      copied = i + len;
      changed = true;
    }
    i += len;
  }
  if (!changed) return false;
  r.append(text, copied, std::string_view::npos);
  out = std::move(r);
  return true;
}

}  // namespace

bool search_form(std::string_view text, std::string& out) {
  std::string form;
  const bool compatible = compatibility_form(text, form);
  if (compatible) {
    std::string folded;
    if (fold_for_search(form, folded)) form = std::move(folded);
    out = std::move(form);
    return true;
  }
  return fold_for_search(text, out);
}

std::string search_form(std::string_view text) {
  std::string out;
  if (!search_form(text, out)) out.assign(text);
  return out;
}

namespace {

bool ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// The case-folded compatibility form, without soft hyphens and marks (nullopt: out of memory).
std::optional<std::string> folded(std::string_view text) {
  std::size_t length = 0;
  std::uint8_t* form = u8_casefold(reinterpret_cast<const std::uint8_t*>(text.data()), text.size(), nullptr,
                                   UNINORM_NFKC, nullptr, &length);
  if (form == nullptr) return std::nullopt;
  std::string out(reinterpret_cast<const char*>(form), length);
  std::free(form);
  // Once, after the folding (which writes "ß" as "ss", "ς" as "σ", and "İ" as "i" and a combining
  // dot): soft hyphens and marks set aside as search_form sets them.
  if (std::string unmarked; fold_for_search(out, unmarked)) out = std::move(unmarked);
  return out;
}

}  // namespace

bool contains_folded(std::string_view hay, std::string_view needle) {
  if (needle.empty()) return true;
  const bool ascii_needle = ascii(needle);
  if (ascii_needle && needle.size() <= hay.size() &&
      std::search(hay.begin(), hay.end(), needle.begin(), needle.end(),
                  [](char a, char b) { return lower(a) == lower(b); }) != hay.end())
    return true;
  if (ascii_needle && ascii(hay)) return false;
  const auto h = folded(hay), n = folded(needle);
  if (!h || !n) return false;
  return h->find(*n) != std::string::npos;
}

}  // namespace mailark
