#include "common/unicode_form.h"

#include <unicase.h>
#include <uninorm.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace mailark {

bool compatibility_form(std::string_view text, std::string& out) {
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) return false;
  // Most texts fit a buffer on the stack; u8_normalize allocates (malloc) only for longer ones.
  std::uint8_t buffer[2048];
  std::size_t length = sizeof buffer;
  std::uint8_t* form = u8_normalize(UNINORM_NFKC, reinterpret_cast<const std::uint8_t*>(text.data()), text.size(),
                                    buffer, &length);
  if (form == nullptr) return false;  // out of memory: the text as it is
  const bool changed = length != text.size() || std::memcmp(form, text.data(), length) != 0;
  if (changed) out.assign(reinterpret_cast<const char*>(form), length);
  if (form != buffer) std::free(form);
  return changed;
}

std::string compatibility_form(std::string_view text) {
  std::string out;
  if (!compatibility_form(text, out)) out.assign(text);
  return out;
}

namespace {

bool ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// The case-folded compatibility form (nullopt: out of memory).
std::optional<std::string> folded(std::string_view text) {
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
  if (ascii(hay) && ascii(needle)) {
    if (needle.size() > hay.size()) return false;
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end(),
                       [](char a, char b) { return lower(a) == lower(b); }) != hay.end();
  }
  const auto h = folded(hay), n = folded(needle);
  if (!h || !n) return false;
  return h->find(*n) != std::string::npos;
}

}  // namespace mailark
