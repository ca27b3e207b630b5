// Unicode's compatibility form (NFKC, UAX #15) of text the index cuts into words, so that the same
// word written two ways is one word: a name typed on a Mac arrives decomposed ("e" and a combining
// acute accent, NFD) where the same name typed elsewhere is one letter, Japanese mail writes Latin
// letters and digits full-width ("ＰＣ１２３") and katakana half-width ("ｶﾀｶﾅ"), and compatibility
// letters such as ligatures ("ﬁle") stand for plain ones. The index and the query both read text in
// this form (indexer/index.cc for_each_text and IndexReader::search; test
// IndexForms.OneWordWrittenTwoWaysIsOneWord). libunistring's u8_normalize does the work.
#pragma once

#include <string>
#include <string_view>

namespace mailark {

// The form here keeps Thai and Lao AM (U+0E33, U+0EB3) as written, where NFKC writes each as two
// letters: the dictionaries that cut Thai and Lao into words know the one letter.
//
// Sets `out` to the compatibility form of `text` and returns true when it differs from `text`;
// false (and `out` untouched) when `text` is already in that form: text of ASCII and of letters
// that the form never changes (most Latin, Greek, Cyrillic, Hebrew, Arabic, Thai, Chinese, kana and
// Hangul letters: stable_code_point) is, without a call. Bytes that are not UTF-8 become U+FFFD.
bool compatibility_form(std::string_view text, std::string& out);

// The form the index and the queries read words in (indexer/index.h words_form): the compatibility
// form, then without soft hyphens (U+00AD, which HTML mail puts inside long words as &shy; and which
// would otherwise cut "Ver&shy;sicherung" in two), with the sharp s as "ss" ("Straße" and
// "Strasse", as Swiss German writes it, one word) and the Greek final sigma as the sigma (the index
// lower-cases "ΟΔΟΣ" to "οδοσ", which must be the word "οδος" typed in lower case, as the case
// folding of IMAP's SEARCH has it), and Latin and Greek letters without their marks: "résumé" is
// "resume", "Müller" "Muller", "Ελληνικά" "Ελληνικα", Vietnamese "Việt" "Viet", Russian "ё" "е", and
// the combining marks of U+0300..U+036F are dropped, so that a word typed without its accents finds
// it written with them and the other way round, as Dovecot's full-text search and the web's search
// engines read words; "ł", "đ" and "ø" are read as "l", "d" and "o", as their languages write them
// without marks; Hebrew points and cantillation, Arabic harakat and tatweel are dropped, and Arabic
// alef with hamza or madda is alef, alef maksura yeh and teh marbuta heh (as Lucene's Arabic
// normalizer reads them). Other letters Unicode does not write as a letter and a mark are kept
// ("æ", "ı", Russian "й"), and so are other scripts' marks (Devanagari vowel signs, Thai).
// Same contract as compatibility_form. Tests UnicodeForm.SearchFormDropsSoftHyphensAndWritesSharpSAsSs,
// UnicodeForm.SearchFormSetsMarksAside, IndexForms.OneWordWrittenTwoWaysIsOneWord.
bool search_form(std::string_view text, std::string& out);
std::string search_form(std::string_view text);

// Does the compatibility form leave this code point as it is, whatever stands beside it? (True only
// for the blocks of scripts/unicode_stable.py; false may also mean "not known here".)
bool stable_code_point(char32_t cp);

// The compatibility form of `text` (a copy of `text` when it is already in it).
std::string compatibility_form(std::string_view text);

// Does `hay` hold `needle`, with case and form set aside: ASCII letters compared without case as they
// are; text with any other letter compared in Unicode's case-folded compatibility form (libunistring's
// u8_casefold with NFKC, close to RFC 5051's i;unicode-casemap, which Dovecot's SEARCH uses), so "MÜLLER" is in
// "Müller", "résumé" in a decomposed "résumé" and "pc" in "ＰＣ"; soft hyphens and marks are set
// aside as search_form sets them ("muller" is in "Müller", as the index finds it in large folders). IMAP's SEARCH (api/imap/session.cc;
// tests UnicodeForm.SubstringsWithoutCaseOrForm, test_imap.py
// test_search_sets_case_and_unicode_form_aside).
bool contains_folded(std::string_view hay, std::string_view needle);

}  // namespace mailark
