#include "common/unicode_form.h"

#include "common/utf8.h"

#include <unicase.h>
#include <uninorm.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <optional>
#include <utility>

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

constexpr std::string_view kSoftHyphen = "\xC2\xAD", kSharpS = "\xC3\x9F", kCapitalSharpS = "\xE1\xBA\x9E",
                           kFinalSigma = "\xCF\x82", kSigma = "\xCF\x83";

// `text` without soft hyphens, with the sharp s as "ss" and the Greek final sigma as the sigma;
// false (and `out` untouched) when it has none.
bool fold_for_search(std::string_view text, std::string& out) {
  if (text.find(kSoftHyphen) == std::string_view::npos && text.find(kSharpS) == std::string_view::npos &&
      text.find(kCapitalSharpS) == std::string_view::npos && text.find(kFinalSigma) == std::string_view::npos)
    return false;
  std::string r;
  r.reserve(text.size() + 8);
  for (std::size_t i = 0; i < text.size();) {
    if (text.substr(i, 2) == kSoftHyphen) {
      i += 2;
    } else if (text.substr(i, 2) == kSharpS) {
      r += "ss";
      i += 2;
    } else if (text.substr(i, 3) == kCapitalSharpS) {
      r += "SS";
      i += 3;
    } else if (text.substr(i, 2) == kFinalSigma) {
      r += kSigma;
      i += 2;
    } else {
      r += text[i++];
    }
  }
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

// The case-folded compatibility form, without soft hyphens (nullopt: out of memory).
std::optional<std::string> folded(std::string_view text) {
  std::string without;
  if (fold_for_search(text, without)) text = without;  // the sharp s is "ss" in the case folding too
  std::size_t length = 0;
  std::uint8_t* form = u8_casefold(reinterpret_cast<const std::uint8_t*>(text.data()), text.size(), nullptr,
                                   UNINORM_NFKC, nullptr, &length);
  if (form == nullptr) return std::nullopt;
  std::string out(reinterpret_cast<const char*>(form), length);
  std::free(form);
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
