// Thai, Lao, Khmer and Burmese are written without spaces between words, like Chinese and Japanese,
// but their words are many letters long and take a dictionary to find: ICU's word break iterator
// (Debian's libicu72, loaded on first use with dlopen, so that commands which never meet such text
// do not pay for loading it). The index and the query both cut runs of these letters into words
// here (words_form and cjk_query_phrases in indexer/index.h; test IndexWordBreaks.*).
#pragma once

#include <string>
#include <string_view>

namespace mailark::indexer {

// A letter (or mark) of the Thai, Lao, Myanmar or Khmer blocks.
bool sea_letter(char32_t cp);
// Does the text hold one?
bool has_sea(std::string_view text);
// The text with a space between each two words of every run of those letters (ICU's dictionary
// breaks); the text unchanged when it holds none, or when ICU cannot be loaded (then a run is one
// word, as before: a missing library costs search quality, never mail).
std::string sea_words(std::string_view text);
// Can ICU's word breaks be used here (loaded, or loadable)?
bool word_breaks_available();

}  // namespace mailark::indexer
