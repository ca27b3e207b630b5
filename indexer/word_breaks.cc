#include "indexer/word_breaks.h"

#include <dlfcn.h>
#include <unicode/ubrk.h>
#include <unicode/utext.h>

#include <memory>
#include <mutex>

#include "common/utf8.h"

namespace mailark::indexer {

namespace {

#define MAILARK_ICU_NAME_(x) #x
#define MAILARK_ICU_NAME(x) MAILARK_ICU_NAME_(x)  // the versioned symbol, "ubrk_open_72"

// ICU's functions this file calls, from the library loaded on first use.
struct Icu {
  decltype(&ubrk_open) open = nullptr;
  decltype(&ubrk_close) close = nullptr;
  decltype(&ubrk_setUText) set_utext = nullptr;
  decltype(&ubrk_first) first = nullptr;
  decltype(&ubrk_next) next = nullptr;
  decltype(&utext_openUTF8) open_utf8 = nullptr;
  decltype(&utext_close) close_utext = nullptr;
};

const Icu* icu() {
  static const Icu* loaded = [] () -> const Icu* {
    void* lib = ::dlopen(MAILARK_ICU_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return nullptr;  // never closed: its iterators live as long as their threads
    static Icu f;
    auto take = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(lib, name));
      return fn != nullptr;
    };
    const bool all = take(f.open, MAILARK_ICU_NAME(ubrk_open)) && take(f.close, MAILARK_ICU_NAME(ubrk_close)) &&
                     take(f.set_utext, MAILARK_ICU_NAME(ubrk_setUText)) &&
                     take(f.first, MAILARK_ICU_NAME(ubrk_first)) && take(f.next, MAILARK_ICU_NAME(ubrk_next)) &&
                     take(f.open_utf8, MAILARK_ICU_NAME(utext_openUTF8)) &&
                     take(f.close_utext, MAILARK_ICU_NAME(utext_close));
    return all ? &f : nullptr;
  }();
  return loaded;
}

// One word break iterator a thread (opening one reads its rules; setting a text is cheap).
UBreakIterator* thread_iterator(const Icu& f) {
  struct Closer {
    const Icu* f;
    void operator()(UBreakIterator* bi) const { f->close(bi); }
  };
  thread_local std::unique_ptr<UBreakIterator, Closer> it = [&] {
    UErrorCode status = U_ZERO_ERROR;
    UBreakIterator* bi = f.open(UBRK_WORD, "", nullptr, 0, &status);
    if (U_FAILURE(status)) bi = nullptr;
    return std::unique_ptr<UBreakIterator, Closer>(bi, Closer{&f});
  }();
  return it.get();
}

}  // namespace

bool sea_letter(char32_t cp) {
  return (cp >= 0x0E01 && cp <= 0x0EFF) ||  // Thai, Lao
         (cp >= 0x1000 && cp <= 0x109F) ||  // Myanmar
         (cp >= 0x1780 && cp <= 0x17FF) ||  // Khmer
         (cp >= 0x19E0 && cp <= 0x19FF) ||  // Khmer symbols
         (cp >= 0xA9E0 && cp <= 0xA9FF) ||  // Myanmar Extended-B
         (cp >= 0xAA60 && cp <= 0xAA7F);    // Myanmar Extended-A
}

bool has_sea(std::string_view text) {
  // Every such letter is a 3-byte sequence with lead byte E0 (U+0E01..U+0EFF), E1 (U+1000..U+19FF)
  // or EA (U+A9E0..U+AA7F)
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c != 0xE0 && c != 0xE1 && c != 0xEA) continue;
    if (sea_letter(utf8_code_point(text, i).first)) return true;
  }
  return false;
}

bool word_breaks_available() { return icu() != nullptr; }

std::string sea_words(std::string_view text) {
  const Icu* f = has_sea(text) ? icu() : nullptr;
  UBreakIterator* bi = f ? thread_iterator(*f) : nullptr;
  if (bi == nullptr) return std::string(text);
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  for (std::size_t i = 0; i < text.size();) {
    auto [cp, len] = utf8_code_point(text, i);
    if (!sea_letter(cp)) {
      out.append(text.substr(i, len));
      i += len;
      continue;
    }
    // A run of such letters, cut where ICU's dictionary finds words
    std::size_t end = i;
    while (end < text.size()) {
      const auto [c, l] = utf8_code_point(text, end);
      if (!sea_letter(c)) break;
      end += l;
    }
    const std::string_view run = text.substr(i, end - i);
    UErrorCode status = U_ZERO_ERROR;
    UText ut = UTEXT_INITIALIZER;
    f->open_utf8(&ut, run.data(), static_cast<std::int64_t>(run.size()), &status);
    if (U_SUCCESS(status)) f->set_utext(bi, &ut, &status);
    if (U_FAILURE(status)) {
      out.append(run);
    } else {
      // Apart from the letters on either side too ("abcไทย": "abc ไทย")
      if (!out.empty() && out.back() != ' ') out += ' ';
      std::int32_t from = f->first(bi);
      for (std::int32_t to = f->next(bi); to != UBRK_DONE; to = f->next(bi)) {
        if (from > 0) out += ' ';
        out.append(run.substr(static_cast<std::size_t>(from), static_cast<std::size_t>(to - from)));
        from = to;
      }
      if (end < text.size() && text[end] != ' ') out += ' ';
    }
    f->close_utext(&ut);
    i = end;
  }
  return out;
}

}  // namespace mailark::indexer
