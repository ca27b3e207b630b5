#include "indexer/index.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <stdio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <cctype>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <span>
#include <unordered_map>
#include <system_error>
#include <thread>
#include <unordered_set>

#include <zstd.h>

#include "common/encoding.h"
#include "common/exceptions.h"
#include "common/file_util.h"
#include "common/ascii.h"
#include "common/json_text.h"
#include "common/threads.h"
#include "common/unicode_form.h"
#include "common/numbers.h"
#include "common/utf8.h"
#include "common/sha256.h"
#include "indexer/schema.h"
#include "indexer/word_breaks.h"

namespace mailark::indexer {
namespace {

// The one place Xapian exceptions become typed errors.
Error xapian_error(const Xapian::Error& e, const std::string& what) {
  const std::string type = e.get_type();
  if (type == "DatabaseLockError") {
    return make_error(ErrorCode::kIo, what + ": the index is locked by another process",
                      "wait for the running mailark import or server to finish");
  }
  if (type == "DatabaseOpeningError" || type == "DatabaseNotFoundError") {
    return make_error(ErrorCode::kNotFound, what + ": " + e.get_description(), "run `mailark reindex`");
  }
  if (type == "DatabaseCorruptError") {
    return make_error(ErrorCode::kCorrupt, what + ": " + e.get_description(),
                      "the index is derived: run `mailark reindex` to rebuild it from the archive");
  }
  if (type == "QueryParserError") return make_error(ErrorCode::kInvalidArgument, "query: " + e.get_msg());
  return make_error(ErrorCode::kIo, what + ": " + e.get_description());
}


std::string boolean_term(const char* prefix, const std::string& value) {
  std::string term = std::string(prefix) + value;
  if (term.size() <= schema::kMaxBooleanTermBytes) return term;
  return std::string(prefix) + "#" + to_hex(sha256(value));
}

std::string id_term(std::uint64_t id) { return schema::kPrefixId + std::to_string(id); }

std::string message_id_term(std::string id) {
  if (id.size() >= 2 && id.front() == '<' && id.back() == '>') id = id.substr(1, id.size() - 2);
  return boolean_term(schema::kPrefixMessageId, id);
}

std::string encode_summary(const IndexFields& f) {
  nlohmann::json j = {{"i", f.id},      {"m", f.message_id}, {"d", f.date}, {"f", display_addresses(f.from)},
                      {"s", f.subject}, {"v", f.verdict},    {"z", f.size}};
  return json_text(j);
}

Summary decode_summary(const std::string& data) {
  Summary s;
  auto j = nlohmann::json::parse(data, nullptr, false);
  if (j.is_discarded()) return s;
  s.id = j.value("i", std::uint64_t{0});
  s.message_id = j.value("m", "");
  s.date = j.value("d", std::int64_t{0});
  s.from = j.value("f", "");
  s.subject = j.value("s", "");
  s.verdict = j.value("v", "");
  s.size = j.value("z", std::uint64_t{0});
  return s;
}

}  // namespace

std::string address_key(const std::string& address) {
  if (std::all_of(address.begin(), address.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
    return ascii_lower(address);  // most addresses: the same answer without the form's scans
  return Xapian::Unicode::tolower(search_form(address));
}

namespace {

// The address words of one address: the display name, and the local part split at . _ - +.
void address_texts(const IndexedAddress& a, const char* prefix,
                   const std::function<void(const std::string&, const char*)>& fn) {
  fn(a.name, prefix);
  std::string local = a.addr.substr(0, a.addr.rfind('@'));
  for (char& c : local)
    if (c == '.' || c == '_' || c == '-' || c == '+') c = ' ';
  fn(local, prefix);
}

// Every piece of free text of a message with its prefix, in indexing order. The one place that says
// which field is indexed under which prefix: the index and the phrase check both use it.
void for_each_text(const IndexFields& f, const std::function<void(const std::string&, const char*)>& emit) {
  // Each text as the index cuts it into words (words_form)
  std::string scratch;
  const std::function<void(const std::string&, const char*)> fn = [&](const std::string& text, const char* prefix) {
    emit(words_form(text, scratch), prefix);
  };
  for (const auto& a : f.from) address_texts(a, schema::kPrefixFrom, fn);
  for (const auto& a : f.to) address_texts(a, schema::kPrefixTo, fn);
  for (const auto& a : f.cc) address_texts(a, schema::kPrefixCc, fn);
  for (const auto& a : f.bcc) address_texts(a, schema::kPrefixBcc, fn);
  for (const auto& r : f.envelope_rcpts) address_texts({"", r}, schema::kPrefixRcpt, fn);
  fn(f.subject, schema::kPrefixSubject);
  fn(f.subject, "");
  fn(f.body, "");
  fn(f.attachment_text, "");
  fn(f.extracted_text, schema::kPrefixExtracted);
  fn(f.extracted_text, "");
  for (const auto& a : f.attachments) {
    fn(a.name, schema::kPrefixAttachment);
    fn(a.name, "");
  }
}

// Exact terms for an address: whole, local part, domain and parent domains of two or more labels.
void add_address_terms(Xapian::Document& doc, const std::vector<IndexedAddress>& list, const char* prefix) {
  for (const auto& a : list) {
    std::string addr = address_key(a.addr);
    if (addr.empty()) continue;
    doc.add_boolean_term(boolean_term(prefix, addr));
    std::size_t at = addr.rfind('@');
    if (at == std::string::npos) continue;
    if (at > 0) doc.add_boolean_term(boolean_term(prefix, addr.substr(0, at)));
    std::string domain = addr.substr(at + 1);
    while (domain.find('.') != std::string::npos) {
      doc.add_boolean_term(boolean_term(prefix, domain));
      domain = domain.substr(domain.find('.') + 1);
    }
  }
}

}  // namespace

namespace {

// The short fields (names and local parts of addresses, subjects, attachment names) get a pair term
// for every two adjacent words; the long ones (the free text, extracted text) only for two pair words.
bool every_pair_indexed(const std::string& prefix) {
  namespace sc = schema;
  for (const char* p : {sc::kPrefixFrom, sc::kPrefixTo, sc::kPrefixCc, sc::kPrefixBcc, sc::kPrefixRcpt,
                        sc::kPrefixSubject, sc::kPrefixAttachment})
    if (prefix == p) return true;
  return false;
}

// Hears every word TermGenerator indexes, in text order: with the STOP_ALL strategy TermGenerator
// asks the stopper about each word (after its length check) before it indexes it, and this one
// never stops a word. Consecutive words heard are at consecutive positions in a positional index of
// the same text, which is what a phrase check (text_has_phrase) looks at.
class WordSequence : public Xapian::Stopper {
 public:
  explicit WordSequence(std::vector<std::string>& words) : words_(words) {}
  bool operator()(const std::string& word) const override {
    words_.push_back(word);
    return false;
  }

 private:
  std::vector<std::string>& words_;
};

// Indexes one piece of text under its prefix as index_text_without_positions, and adds a pair term
// for every two adjacent words that are pair-indexed (with pair words), or else their key to the
// pair filter.
void index_text_with_pairs(Xapian::TermGenerator& tg, Xapian::Document& doc, const std::string& text,
                           const std::string& prefix, const PairWords* pairs, std::vector<std::string>& words,
                           std::vector<std::uint64_t>& filter) {
  words.clear();
  tg.index_text_without_positions(text, 1, prefix);
  const bool every = every_pair_indexed(prefix);
  for (std::size_t i = 0; i + 1 < words.size(); ++i) {
    if (pairs && (every || (pairs->has(words[i]) && pairs->has(words[i + 1]))))
      doc.add_term(std::string(schema::kPrefixPair) + prefix + words[i] + " " + words[i + 1], 0);
    else
      filter.push_back(pair_filter_key(prefix, words[i], words[i + 1]));
  }
}

// FNV-1a over the bytes, then splitmix64's finaliser (FNV alone mixes its high bits poorly). Fixed
// forever: filters on disk depend on it (docs/FORMAT.md, "Pair filter").
std::uint64_t hash_bytes(std::uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001B3ULL;
  }
  return h;
}


// splitmix64's finaliser: the filter's keys (fixed forever, docs/FORMAT.md) and the estimate's
// sample places.
std::uint64_t mix64(std::uint64_t h) {
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
  return h ^ (h >> 31);
}

}  // namespace

namespace {

// Han (with its extensions and compatibility ideographs), kana, Hangul (syllables and jamo),
// Bopomofo: the letters of scripts written without spaces between words. Punctuation blocks are
// not here: TermGenerator splits words at them already.
bool cjk_letter(char32_t cp) {
  return (cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0x2E80 && cp <= 0x2FDF) || (cp >= 0x3040 && cp <= 0x30FF) ||
         (cp >= 0x3100 && cp <= 0x31FF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x4E00 && cp <= 0x9FFF) ||
         (cp >= 0xA960 && cp <= 0xA97F) || (cp >= 0xAC00 && cp <= 0xD7FF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
         (cp >= 0x20000 && cp <= 0x3FFFF);
}

}  // namespace

bool has_cjk(std::string_view text) {
  // Every such letter is a 3- or 4-byte sequence (lead byte E1..E9, EA..ED, EF, F0): the scan looks
  // at code points only from one of those on.
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0xE1 || c > 0xF0) continue;
    if (cjk_letter(utf8_code_point(text, i).first)) return true;
  }
  return false;
}

std::string cjk_words(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 2);
  for (std::size_t i = 0; i < text.size();) {
    const auto [cp, len] = utf8_code_point(text, i);
    if (cjk_letter(cp)) {
      if (!out.empty() && out.back() != ' ') out += ' ';
      out.append(text.substr(i, len));
      out += ' ';
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  return out;
}

const std::string& words_form(const std::string& text, std::string& scratch) {
  std::string form;
  bool changed = search_form(text, form);
  if (has_sea(changed ? form : text)) {
    form = sea_words(changed ? form : text);
    changed = true;
  }
  const std::string& t = changed ? form : text;
  if (has_cjk(t)) {
    scratch = cjk_words(t);
    return scratch;
  }
  if (!changed) return text;
  scratch = std::move(form);
  return scratch;
}

std::string closed_quotes(std::string q) {
  std::size_t quotes = 0;
  for (std::size_t i = 0; i < q.size();) {
    const auto [cp, len] = utf8_code_point(q, i);
    quotes += cp == '"' || cp == 0x201C || cp == 0x201D;
    i += len;
  }
  if (quotes % 2) q += '"';
  return q;
}

std::string cjk_query_phrases(const std::string& q) {
  if (!has_cjk(q) && !has_sea(q)) return q;
  // Fields whose values are words (Xapian prefixes of the index's free text); any other field's value
  // is left as typed: from: to: cc: bcc: rcpt: to AddressField, which tells an address, a domain or
  // a local part from name words and makes the letters of those words words itself.
  static constexpr std::string_view kWordFields[] = {"subject", "attachment", "extracted"};
  auto takes_words = [](std::string_view field) {
    const std::string name = ascii_lower(field);
    for (std::string_view f : kWordFields)
      if (name == f) return true;
    return false;
  };
  auto is_quote = [](char32_t cp) { return cp == '"' || cp == 0x201C || cp == 0x201D; };  // Xapian's quotes
  auto is_blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  std::string out;
  bool in_quotes = false, quotes_take_words = true;
  for (std::size_t i = 0; i < q.size();) {
    if (is_blank(q[i])) {
      out += q[i++];
      continue;
    }
    // A whitespace-delimited token: its operators before (+ - parentheses), a field name and its
    // colon, its text, its closing parentheses.
    std::size_t end = i;
    bool quoted = false;
    while (end < q.size() && !is_blank(q[end])) {
      const auto [cp, len] = utf8_code_point(q, end);
      quoted = quoted || is_quote(cp);
      end += len;
    }
    const std::string_view token(q.data() + i, end - i);
    if (!in_quotes && !quoted && (has_cjk(token) || has_sea(token))) {
      // Outside quotes, one with no quote in it: its text is the phrase of its words as the index
      // cuts them ("原装-进口" as "原 装 - 进 口", as Xapian reads "well-known" as a phrase)
      std::size_t a = 0, b = token.size();
      while (a < b && (token[a] == '+' || token[a] == '-' || token[a] == '(')) ++a;
      while (b > a && token[b - 1] == ')') --b;
      std::size_t text = a;
      const std::size_t colon = token.find(':', a);
      if (colon != std::string_view::npos && colon < b && colon > a &&
          std::all_of(token.begin() + static_cast<std::ptrdiff_t>(a), token.begin() + static_cast<std::ptrdiff_t>(colon),
                      [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; })) {
        if (!takes_words(token.substr(a, colon - a))) {
          out.append(token);  // custodian:, id: ... as typed
          i = end;
          continue;
        }
        text = colon + 1;
      }
      std::string words = cjk_words(sea_words(token.substr(text, b - text)));
      while (!words.empty() && words.back() == ' ') words.pop_back();
      out.append(token.substr(0, text));
      out += '"' + words + '"';
      out.append(token.substr(b));
      i = end;
      continue;
    }
    // Otherwise letter by letter: a quote opens or closes a phrase; inside one, the letters spaced
    // where its field takes words
    for (std::size_t k = i; k < end;) {
      const auto [cp, len] = utf8_code_point(q, k);
      if (is_quote(cp)) {
        if (!in_quotes) {
          const std::size_t colon = q.rfind(':', k);
          quotes_take_words = colon == std::string::npos || colon < i || colon + 1 != k ||
                              takes_words(std::string_view(q).substr(i, colon - i).substr(
                                  std::string_view(q).substr(i, colon - i).find_last_of("+-(") + 1));
        }
        in_quotes = !in_quotes;
        out.append(q, k, len);
      } else if (in_quotes && quotes_take_words && cjk_letter(cp)) {
        if (!out.empty() && out.back() != ' ' && out.back() != '"') out += ' ';
        out.append(q, k, len);
        out += ' ';
      } else if (in_quotes && quotes_take_words && sea_letter(cp)) {
        // A run of Thai, Lao, Khmer or Burmese letters: its words as the index cuts them
        std::size_t run_end = k;
        while (run_end < end && sea_letter(utf8_code_point(q, run_end).first)) run_end += utf8_code_point(q, run_end).second;
        if (!out.empty() && out.back() != ' ' && out.back() != '"') out += ' ';
        out += sea_words(std::string_view(q).substr(k, run_end - k));
        out += ' ';
        k = run_end;
        continue;
      } else {
        out.append(q, k, len);
      }
      k += len;
    }
    i = end;
  }
  return out;
}

std::uint64_t pair_filter_key(std::string_view prefix, std::string_view a, std::string_view b) {
  std::uint64_t h = 0xCBF29CE484222325ULL;
  h = hash_bytes(h, prefix);
  h = hash_bytes(h, a);
  h = hash_bytes(h, " ");
  h = hash_bytes(h, b);
  return mix64(h);
}

namespace {

// Probe i of a key in a filter of `bits` bits (double hashing).
std::uint64_t pair_filter_probe(std::uint64_t key, unsigned i, std::uint64_t bits) {
  const std::uint64_t h1 = key & 0xFFFFFFFFULL, h2 = (key >> 32) | 1;
  return (h1 + i * h2) % bits;
}

}  // namespace

std::string encode_pair_filter(std::vector<std::uint64_t> keys) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  std::string out(1, static_cast<char>(schema::kPairFilterVersion));
  if (keys.empty()) return out;  // no pair beyond the pair terms: every test says no
  const std::size_t bytes =
      std::clamp<std::size_t>((keys.size() * schema::kPairFilterBitsPerPair + 7) / 8, 8, schema::kPairFilterMaxBytes);
  out.resize(1 + bytes, '\0');
  const std::uint64_t bits = bytes * 8;
  for (std::uint64_t key : keys) {
    for (unsigned i = 0; i < schema::kPairFilterProbes; ++i) {
      const std::uint64_t bit = pair_filter_probe(key, i, bits);
      out[1 + bit / 8] = static_cast<char>(static_cast<unsigned char>(out[1 + bit / 8]) | (1u << (bit % 8)));
    }
  }
  return out;
}

bool pair_filter_may_hold(std::string_view filter, std::uint64_t key) {
  if (filter.empty() || static_cast<unsigned char>(filter[0]) != schema::kPairFilterVersion) return true;
  const std::uint64_t bits = (filter.size() - 1) * 8;
  if (bits == 0) return false;
  for (unsigned i = 0; i < schema::kPairFilterProbes; ++i) {
    const std::uint64_t bit = pair_filter_probe(key, i, bits);
    if (!(static_cast<unsigned char>(filter[1 + bit / 8]) & (1u << (bit % 8)))) return false;
  }
  return true;
}

std::string encode_kept_texts(const IndexFields& f) {
  // Texts of more than three times the cap are not compressed at all, so that what one message costs
  // an import stays bounded (mail text rarely compresses past a third); such a message is read from
  // the archive.
  std::size_t total = f.subject.size() + f.body.size() + f.attachment_text.size() + f.extracted_text.size();
  for (const auto& a : f.attachments) total += a.name.size();
  if (total / 3 > schema::kKeptTextsMaxBytes) return {};
  Writer w;
  w.str(f.subject);
  w.str(f.body);
  w.str(f.attachment_text);
  w.str(f.extracted_text);
  w.varint(f.attachments.size());
  for (const auto& a : f.attachments) w.str(a.name);
  const std::string& plain = w.out();
  std::string out(1 + ZSTD_compressBound(plain.size()), '\0');
  out[0] = static_cast<char>(schema::kKeptTextsVersion);
  const std::size_t n = ZSTD_compress(out.data() + 1, out.size() - 1, plain.data(), plain.size(), 3);
  if (ZSTD_isError(n) || n > schema::kKeptTextsMaxBytes) return {};
  out.resize(1 + n);
  return out;
}

std::optional<IndexFields> decode_kept_texts(std::string_view value, std::size_t max_bytes) {
  if (value.size() < 2 || static_cast<unsigned char>(value[0]) != schema::kKeptTextsVersion) return std::nullopt;
  const std::string_view frame = value.substr(1);
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > max_bytes) return std::nullopt;
  std::string plain(static_cast<std::size_t>(size), '\0');
  const std::size_t n = ZSTD_decompress(plain.data(), plain.size(), frame.data(), frame.size());
  if (ZSTD_isError(n) || n != plain.size()) return std::nullopt;
  Reader r(plain);
  IndexFields f;
  std::uint64_t names = 0;
  if (!r.str(f.subject) || !r.str(f.body) || !r.str(f.attachment_text) || !r.str(f.extracted_text) ||
      !r.varint(names) || names > plain.size() - r.pos())
    return std::nullopt;
  f.attachments.resize(static_cast<std::size_t>(names));
  for (auto& a : f.attachments)
    if (!r.str(a.name)) return std::nullopt;
  if (r.pos() != plain.size()) return std::nullopt;
  return f;
}

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date, and the year and month of Unix seconds (Howard
// Hinnant's algorithms): arithmetic alone, the same on every libc, for the years date terms name.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

std::pair<std::int64_t, unsigned> year_month_of(std::int64_t seconds) {
  std::int64_t z = (seconds >= 0 ? seconds : seconds - 86399) / 86400 + 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2), m};
}

constexpr std::int64_t kFirstDatedYear = 1000, kLastDatedYear = 9999;

std::int64_t month_start(std::int64_t year, unsigned month) { return days_from_civil(year, month, 1) * 86400; }

}  // namespace

std::vector<std::string> date_terms(std::int64_t seconds) {
  const std::string p = schema::kPrefixDate;
  // Past these the year is not four digits; clamped first so that no arithmetic overflows.
  if (seconds < month_start(kFirstDatedYear, 1)) return {p + "-"};
  if (seconds >= month_start(kLastDatedYear + 1, 1)) return {p + "+"};
  const auto [y, m] = year_month_of(seconds);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d%02u", static_cast<int>(y), m);
  return {p + std::string(buf, 4), p + buf};
}

Xapian::Document build_document(const IndexFields& f, const PairWords* pairs) {
  Xapian::Document doc;
  // The generator hears the words it indexes (WordSequence) for the pair terms and the pair filter.
  std::vector<std::string> words;
  std::vector<std::uint64_t> filter;
  Xapian::TermGenerator heard;
  heard.set_document(doc);
  heard.set_stemming_strategy(Xapian::TermGenerator::STEM_NONE);
  heard.set_max_word_length(64);
  heard.set_stopper((new WordSequence(words))->release());  // Xapian owns and frees it
  heard.set_stopper_strategy(Xapian::TermGenerator::STOP_ALL);
  for_each_text(f, [&](const std::string& value, const char* prefix) {
    if (!value.empty()) index_text_with_pairs(heard, doc, value, prefix, pairs, words, filter);
  });
  doc.add_value(schema::kSlotPairFilter, encode_pair_filter(std::move(filter)));
  if (pairs) doc.add_boolean_term(schema::kTermHasPairs);
  add_address_terms(doc, f.from, schema::kPrefixFromAddr);
  add_address_terms(doc, f.to, schema::kPrefixToAddr);
  add_address_terms(doc, f.cc, schema::kPrefixCcAddr);
  add_address_terms(doc, f.bcc, schema::kPrefixBccAddr);
  std::vector<IndexedAddress> rcpts;
  for (const auto& r : f.envelope_rcpts) rcpts.push_back({"", r});
  add_address_terms(doc, rcpts, schema::kPrefixRcptAddr);
  for (const auto& a : f.attachments) {
    if (!a.mime_type.empty()) doc.add_boolean_term(boolean_term(schema::kPrefixMimeType, ascii_lower(a.mime_type)));
  }
  if (!f.message_id.empty()) doc.add_boolean_term(message_id_term(f.message_id));
  if (!f.attachments.empty()) doc.add_boolean_term(std::string(schema::kPrefixFlag) + "attachment");
  if (f.malformed) doc.add_boolean_term(std::string(schema::kPrefixFlag) + "malformed");
  if (f.quarantined) doc.add_boolean_term(std::string(schema::kPrefixFlag) + "quarantined");
  if (f.copy) doc.add_boolean_term(std::string(schema::kPrefixFlag) + "copy");
  doc.add_boolean_term(std::string(schema::kPrefixVerdict) + f.verdict);
  doc.add_boolean_term(std::string(schema::kPrefixDirection) + f.direction);
  for (const auto& sig : f.signatures)
    doc.add_boolean_term(boolean_term(schema::kPrefixSignature, ascii_lower(sig)));
  for (const auto& c : f.custodians)
    if (!c.empty()) doc.add_boolean_term(boolean_term(schema::kPrefixCustodian, address_key(c)));
  if (!f.content_key.empty()) doc.add_value(schema::kSlotContent, f.content_key.substr(0, 16));
  if (f.keep_texts) {
    if (std::string texts = encode_kept_texts(f); !texts.empty()) doc.add_value(schema::kSlotTexts, texts);
  }
  doc.add_value(schema::kSlotDate, Xapian::sortable_serialise(static_cast<double>(f.date)));
  for (const std::string& t : date_terms(f.date)) doc.add_boolean_term(t);
  doc.add_value(schema::kSlotSize, Xapian::sortable_serialise(static_cast<double>(f.size)));
  doc.add_value(schema::kSlotReceived, Xapian::sortable_serialise(static_cast<double>(f.received)));
  doc.set_data(encode_summary(f));
  return doc;
}

void mark_copy(Xapian::Document& doc) { doc.add_boolean_term(std::string(schema::kPrefixFlag) + "copy"); }

Xapian::Document build_unindexed_document(std::uint64_t id, const std::string& reason) {
  Xapian::Document doc;
  doc.add_boolean_term(std::string(schema::kPrefixFlag) + "unindexed");
  nlohmann::json j = {{"i", id}, {"s", "(not indexed: " + reason + ")"}, {"v", ""}, {"u", reason}};
  doc.set_data(json_text(j));
  return doc;
}

Xapian::Document build_expired_document() {
  Xapian::Document doc;
  doc.add_boolean_term(schema::kTermExpired);
  return doc;
}

std::string display_addresses(const std::vector<IndexedAddress>& list) {
  std::string s;
  for (const auto& a : list) {
    if (!s.empty()) s += ", ";
    if (a.name.empty())
      s += a.addr;
    else if (a.addr.empty())
      s += a.name;
    else
      s += a.name + " <" + a.addr + ">";
  }
  return s;
}

// ---- writer ----

namespace {

constexpr const char* kStubFile = "XAPIANDB";
constexpr const char* kSegmentDirPrefix = "segment-";
// In a segment's directory: the segment is closed and compacted, and never written again.
constexpr const char* kSealedFile = "sealed";

// Where the shards of the segment beginning at archive id `first` live: the first at the top of the
// index directory (where an index from before segments has its one), every later one in
// DATA/index/segment-FIRST.
std::string segment_dir(const std::string& dir, std::uint64_t first) {
  return first == 1 ? dir : dir + "/" + kSegmentDirPrefix + std::to_string(first);
}

// A segment's stub lists its shards in the order that makes Xapian's interleaved document ids over
// them run first, first + 1, ...: archive id n lives in shard (n - 1) % shards (the same shard, and so
// the same writer thread, whatever the segment), as document (n - first) / shards + 1.
// Which shard (by archive id, (n - 1) % shards) the j-th shard of a segment's stub is.
unsigned shard_index(std::uint64_t first, std::size_t j, std::size_t shards) {
  return static_cast<unsigned>((first - 1 + j) % shards);
}

std::string segment_stub(std::uint64_t first, unsigned shards) {
  std::string stub;
  for (unsigned j = 0; j < shards; ++j) stub += "glass shard" + std::to_string(shard_index(first, j, shards)) + "\n";
  return stub;
}

// The segments an index holds, by first archive id, ascending: 1, then every segment-N directory
// with a stub.
std::vector<std::uint64_t> segment_firsts(const std::string& dir) {
  std::vector<std::uint64_t> out{1};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(kSegmentDirPrefix, 0) != 0) continue;
    const std::string digits = name.substr(std::string_view(kSegmentDirPrefix).size());
    if (digits.empty() || digits.size() > 19 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    const std::uint64_t first = std::stoull(digits);
    if (first > 1 && std::filesystem::exists(e.path() / kStubFile, ec)) out.push_back(first);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// One segment of an index on disk: its shards in stub order (see segment_stub), and each one's small
// tier (IndexWriter::set_small_tier): "" for none.
struct SegmentLayout {
  std::uint64_t first = 1;
  std::vector<std::string> paths;
  std::vector<std::string> fresh;  // as paths
  bool sealed = false;
};

std::vector<std::string> shard_paths(const std::string& dir);

// The entries of a stub (local directories, or "tcp://HOST:PORT"), in its order: the shards'
// ("shardK", or "shardK.gN" once a merge wrote it again), then the small tiers' ("freshK.gN"), which
// a stub lists after every shard (docs/FORMAT.md "Index").
struct StubEntries {
  std::vector<std::string> shards, fresh;
};
StubEntries read_stub(const std::string& dir);
std::string stub_of(const std::vector<std::string>& entries);

// The shard (K) a local entry's directory name stands for ("shard3", "shard3.g2", "fresh3.g1": 3).
std::optional<unsigned> entry_shard(const std::string& entry) {
  const std::string name = std::filesystem::path(entry).filename().string();
  std::size_t i = name.rfind("shard", 0) == 0 ? 5 : name.rfind("fresh", 0) == 0 ? 5 : 0;
  if (i == 0) return std::nullopt;
  std::size_t j = i;
  while (j < name.size() && j - i < 6 && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
  if (j == i || (j < name.size() && name.compare(j, 2, ".g") != 0)) return std::nullopt;
  return static_cast<unsigned>(std::stoul(name.substr(i, j - i)));
}
// Its generation: 0 for "shard3", N for "shard3.gN".
unsigned entry_generation(const std::string& entry) {
  const std::string name = std::filesystem::path(entry).filename().string();
  const auto g = name.find(".g");
  if (g == std::string::npos) return 0;
  const std::string digits = name.substr(g + 2);
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return 0;
  return static_cast<unsigned>(std::stoul(digits));
}

// A shard served by xapian-tcpsrv on another machine: its stub line is "remote HOST:PORT" (Xapian's
// own stub syntax), its entry in shard_paths "tcp://HOST:PORT".
constexpr std::string_view kRemoteScheme = "tcp://";
bool is_remote(const std::string& entry) { return entry.rfind(kRemoteScheme, 0) == 0; }

// Opens one shard for reading, local or remote. Remote: 10 s for a query, 2 s to connect.
Xapian::Database open_shard_db(const std::string& entry) {
  if (!is_remote(entry)) return Xapian::Database(entry, Xapian::DB_BACKEND_GLASS);
  const std::string endpoint = entry.substr(kRemoteScheme.size());
  const auto colon = endpoint.rfind(':');
  std::string host = colon == std::string::npos ? endpoint : endpoint.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const unsigned port = colon == std::string::npos ? 0 : static_cast<unsigned>(std::atoi(endpoint.c_str() + colon + 1));
  if (port == 0 || port > 65535) throw Xapian::DatabaseOpeningError("no port in remote shard " + endpoint);
  return Xapian::Remote::open(host, port, 10000, 2000);
}

std::vector<SegmentLayout> index_layout(const std::string& dir) {
  std::vector<SegmentLayout> out;
  for (std::uint64_t first : segment_firsts(dir)) {
    SegmentLayout seg;
    seg.first = first;
    const std::string sdir = segment_dir(dir, first);
    StubEntries stub = read_stub(sdir);
    seg.paths = stub.shards.empty() ? std::vector<std::string>{sdir} : stub.shards;
    seg.fresh.assign(seg.paths.size(), std::string());
    for (const auto& f : stub.fresh) {
      const auto k = entry_shard(f);
      for (std::size_t j = 0; k && j < seg.paths.size(); ++j)
        if (shard_index(first, j, seg.paths.size()) == *k) seg.fresh[j] = f;
    }
    std::error_code ec;
    seg.sealed = std::filesystem::exists(sdir + "/" + kSealedFile, ec);
    out.push_back(std::move(seg));
  }
  return out;
}

std::uint64_t read_watermark(const Xapian::Database& db);

// What shard j of segment k vouches for. A sealed segment (never the last) holds every id before the
// next segment's first: that is its shards' watermark, without asking them, so that a remote shard
// that is down never stops a writer, an import's compaction or a reader's watermark.
// `opened`, when given, holds every shard already open (opened[k][j]), then the small tiers of the
// segment in the order of their shards (fresh_slot), so that none is opened twice. A shard with a
// small tier vouches for the higher of the two watermarks (its writer writes it to the small tier).
std::size_t fresh_slot(const SegmentLayout& seg, std::size_t j) {
  std::size_t slot = seg.paths.size();
  for (std::size_t i = 0; i < j; ++i) slot += !seg.fresh[i].empty();
  return slot;
}
std::uint64_t segment_shard_watermark(const std::vector<SegmentLayout>& layout, std::size_t k, std::size_t j,
                                      const std::vector<std::vector<Xapian::Database>>* opened = nullptr) {
  if (layout[k].sealed && k + 1 < layout.size()) return layout[k + 1].first - 1;
  std::uint64_t w = read_watermark(opened ? (*opened)[k][j] : open_shard_db(layout[k].paths[j]));
  if (!layout[k].fresh[j].empty())
    w = std::max(w, read_watermark(opened ? (*opened)[k][fresh_slot(layout[k], j)] : open_shard_db(layout[k].fresh[j])));
  return w;
}

// Every archive record up to this id is in the index: per shard, the highest watermark over the
// segments, and the lowest coverage over the shards. Segments must have as many shards as the first.
Result<std::uint64_t> layout_watermark(const std::vector<SegmentLayout>& layout,
                                       const std::vector<std::vector<Xapian::Database>>* opened = nullptr) {
  if (layout.empty()) return std::uint64_t{0};
  const std::size_t shards = layout[0].paths.size();
  std::vector<std::uint64_t> w(shards, 0);
  for (std::size_t k = 0; k < layout.size(); ++k) {
    const SegmentLayout& seg = layout[k];
    if (seg.paths.size() != shards) {
      return make_error(ErrorCode::kCorrupt, "index segment " + std::to_string(seg.first) + " has " +
                                                 std::to_string(seg.paths.size()) + " shards where the first has " +
                                                 std::to_string(shards),
                        "run `mailark reindex`");
    }
    for (std::size_t j = 0; j < shards; ++j) {
      const unsigned i = shard_index(seg.first, j, shards);
      w[i] = std::max(w[i], segment_shard_watermark(layout, k, j, opened));
    }
  }
  std::uint64_t out = UINT64_MAX;
  for (unsigned i = 0; i < shards; ++i) out = std::min(out, shard_coverage(w[i], i, static_cast<unsigned>(shards)));
  return out;
}

// The shard directories of an index: the lines of its stub file, or the directory itself for an
// index of one plain glass database.
std::vector<std::string> shard_paths(const std::string& dir) {
  std::vector<std::string> out = read_stub(dir).shards;
  if (out.empty()) out.push_back(dir);
  return out;
}

StubEntries read_stub(const std::string& dir) {
  StubEntries out;
  std::ifstream stub(dir + "/" + kStubFile);
  std::string backend, path;
  while (stub >> backend >> path) {
    if (backend == "remote") {
      out.shards.push_back(std::string(kRemoteScheme) + path);
    } else {
      (path.rfind("fresh", 0) == 0 ? out.fresh : out.shards).push_back(dir + "/" + path);
    }
  }
  return out;
}

// A stub for these shard entries (shard_paths' form), in their order.
std::string stub_of(const std::vector<std::string>& entries) {
  std::string stub;
  for (const auto& e : entries)
    stub += is_remote(e) ? "remote " + e.substr(kRemoteScheme.size()) + "\n"
                         : "glass " + std::filesystem::path(e).filename().string() + "\n";
  return stub;
}

// index/pair-words: the header line, then one word a line. Absent: the index has no pair terms.
Result<std::shared_ptr<const PairWords>> read_pair_words(const std::string& dir) {
  std::ifstream in(dir + "/" + schema::kPairWordsFile);
  if (!in) return std::shared_ptr<const PairWords>();
  std::string line;
  if (!std::getline(in, line) || line != schema::kPairWordsHeader) {
    return make_error(ErrorCode::kUnsupported, "the index's pair words (" + dir + "/" + schema::kPairWordsFile +
                                                   ") are of an unknown version",
                      "run `mailark reindex`");
  }
  auto pairs = std::make_shared<PairWords>();
  while (std::getline(in, line))
    if (!line.empty()) pairs->words.insert(line);
  return std::shared_ptr<const PairWords>(std::move(pairs));
}

// A shard's highest document id that may lack something (kMetaUnpairedTo, kMetaUndatedTo), or
// nothing when the shard does not say (any of its documents may).
std::optional<Xapian::docid> read_docid_meta(const Xapian::Database& db, const char* key) {
  const std::string v = db.get_metadata(key);
  if (v.empty()) return std::nullopt;
  const auto n = parse_decimal(v, UINT32_MAX);
  if (!n) return std::nullopt;
  return static_cast<Xapian::docid>(*n);
}

// How many documents of a shard an older reading than this release's read: up to its
// kMetaUnrepairedTo when the shard is of this reading, else (absent, or a shard no writer of this
// release opened yet) every document it holds.
std::uint64_t older_reading_documents(const Xapian::Database& shard) {
  const auto unrepaired = read_docid_meta(shard, schema::kMetaUnrepairedTo);
  return unrepaired && shard.get_metadata(schema::kMetaReading) == schema::kReading ? *unrepaired
                                                                                   : shard.get_lastdocid();
}

bool has_term(const Xapian::Document& doc, const std::string& term) {
  Xapian::TermIterator t = doc.termlist_begin();
  t.skip_to(term);
  return t != doc.termlist_end() && *t == term;
}

// The bytes of a shard's files (`mailark segments`, live compaction).
std::uint64_t shard_bytes(const std::string& path, std::error_code& ec) {
  std::uint64_t n = 0;
  for (const auto& f : std::filesystem::directory_iterator(path, ec)) n += f.file_size(ec);
  return n;
}

// What a shard or small tier this release creates holds before its first document: its schema,
// nothing left to pair, date or read again, this release's reading, and packed with room.
void set_new_shard_metadata(Xapian::WritableDatabase& db) {
  db.set_metadata(schema::kMetaSchema, schema::kSchemaVersion);
  db.set_metadata(schema::kMetaUnpairedTo, "0");
  db.set_metadata(schema::kMetaUndatedTo, "0");
  db.set_metadata(schema::kMetaUnrepairedTo, "0");
  db.set_metadata(schema::kMetaReading, schema::kReading);
  db.set_metadata(schema::kMetaPacking, "room");
}

std::uint64_t read_watermark(const Xapian::Database& db) {
  std::string wm = db.get_metadata(schema::kMetaWatermark);
  return wm.empty() ? 0 : std::stoull(wm);
}

}  // namespace

std::string describe_current_exception() {
  try {
    throw;
  } catch (const Xapian::Error& x) {
    return "Xapian::" + x.get_description();  // its type, message, context and errno text
  } catch (...) {
    return mailark::describe_current_exception();
  }
}

// A placeholder holds no words, so no phrase can match it.
bool lacks_pair_terms(const Xapian::Document& doc) {
  return !has_term(doc, schema::kTermHasPairs) && !has_term(doc, std::string(schema::kPrefixFlag) + "unindexed") &&
         !has_term(doc, schema::kTermExpired);
}

Result<std::unique_ptr<IndexWriter>> IndexWriter::open(const std::string& dir, unsigned shards_if_new) {
  std::unique_ptr<IndexWriter> w(new IndexWriter());
  w->dir_ = dir;
  try {
    std::error_code ec;
    bool fresh = !std::filesystem::exists(dir + "/" + kStubFile, ec) &&
                 !std::filesystem::exists(dir + "/iamglass", ec);
    if (fresh) {
      std::filesystem::create_directories(dir, ec);
      MAILARK_TRY(write_file_atomically(dir + "/" + kStubFile, segment_stub(1, std::max(1u, shards_if_new))));
    }
    w->segments_ = segment_firsts(dir);
    const std::vector<std::string> first_paths = shard_paths(dir);
    const auto shards = static_cast<unsigned>(first_paths.size());
    for (unsigned i = 0; i < shards; ++i) {
      Shard sh;
      sh.index = i;
      w->shards_.push_back(std::move(sh));
    }
    // What each shard holds in earlier segments (closed: nothing is added to them any more; sealed
    // ones may be served from other machines).
    const auto layout = index_layout(dir);
    for (std::size_t k = 0; k + 1 < layout.size(); ++k) {
      if (layout[k].paths.size() != shards) continue;  // layout_watermark reports it to readers
      for (std::size_t j = 0; j < shards; ++j) {
        Shard& sh = w->shards_[shard_index(layout[k].first, j, shards)];
        sh.elsewhere = std::max(sh.elsewhere, segment_shard_watermark(layout, k, j));
      }
    }
    for (auto& sh : w->shards_) MAILARK_TRY(w->open_shard(sh, w->segments_.back()));
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "opening the index in " + dir);
  }
  MAILARK_ASSIGN_OR_RETURN(w->pairs_, read_pair_words(dir));
  if (!w->pairs_) MAILARK_TRY(w->train_pair_words());  // an index from before pair words
  return w;
}

namespace {

// Drops a writable database without writing what it holds uncommitted. Its destructor, and close(),
// commit it (Xapian commits what is pending outside a transaction), and a commit that meets a full
// disk can end the process (IndexWriter::set_min_free_bytes); inside a transaction the destructor
// cancels instead, which only reads. Test: IndexRoom.NoCommitWhileLessThanTheFreeSpaceLeftIsFree.
// Whether the file system of `path` has `min_free` (at most a sixteenth of it: a small one holds
// small shards, whose commits write less) and `need` more bytes free (yes when it cannot be asked,
// or with a min_free of 0); else an error that says how much is free, for `what`.
// IndexWriter::set_min_free_bytes says why.
Status index_room(const std::string& path, std::uint64_t min_free, std::uint64_t need, const std::string& what) {
  if (min_free == 0) return ok_status();
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return ok_status();  // asked again at the next write
  const std::uint64_t free = std::uint64_t{st.f_bavail} * st.f_frsize;
  const std::uint64_t left = std::min(min_free, std::uint64_t{st.f_blocks} * st.f_frsize / 16);
  if (free >= left + need) return ok_status();
  auto mib = [](std::uint64_t b) {
    return b < (1u << 20) ? std::to_string(b >> 10) + " KiB" : std::to_string((b + (1u << 19)) >> 20) + " MiB";
  };
  return make_error(ErrorCode::kIo,
                    what + ": the index's file system has " + mib(free) + " free, less than the " + mib(left + need) +
                        " it needs (" + mib(left) + " is always left free)",
                    "free space where the index is; it catches up from the archive then");
}

// Compacts one shard beside itself (path + suffix) and swaps the copy in with one atomic rename: a
// reader that has the old one open keeps reading it; a crash before the swap leaves the old one (and a
// stray copy, removed by the next try). Only with room for the copy and min_free; a part-written copy
// is removed at once. level: Xapian::Compactor's (FULLER for a shard never written again). Xapian's
// errors are thrown.
Status compact_shard_beside(const std::string& path, const char* suffix, unsigned level, std::uint64_t min_free,
                            const std::string& what) {
  namespace fs = std::filesystem;
  const std::string fresh = path + suffix;
  std::error_code ec;
  fs::remove_all(fresh, ec);
  MAILARK_TRY(index_room(path, min_free, shard_bytes(path, ec), what));
  try {
    Xapian::Database(path, Xapian::DB_BACKEND_GLASS).compact(fresh, Xapian::DBCOMPACT_NO_RENUMBER | level);
  } catch (...) {
    fs::remove_all(fresh, ec);  // a part-written copy gives the live shards' room back at once
    throw;
  }
  if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, path.c_str(), RENAME_EXCHANGE) != 0) {
    const int err = errno;
    fs::remove_all(fresh, ec);
    return make_error(ErrorCode::kIo, "swapping in the compacted " + path + ": " + std::strerror(err));
  }
  fs::remove_all(fresh, ec);  // the old shard, still readable by whoever has it open
  return ok_status();
}

void drop_uncommitted(std::unique_ptr<Xapian::WritableDatabase>& db) noexcept {
  if (!db) return;
  try {
    db->begin_transaction(/*flushed=*/false);  // writes nothing (flushed would commit first)
  } catch (const Xapian::Error&) {
    // one is active already, or the database is closed: nothing will be written either way
  }
  db.reset();
}

// A shard merged with its small tier: user metadata both hold (the watermark, the "up to" marks)
// takes the higher number; the small tier's own mark is not kept.
class MergeCompactor : public Xapian::Compactor {
 public:
  std::string resolve_duplicate_metadata(const std::string& key, size_t num_tags, const std::string tags[]) override {
    (void)key;
    std::optional<std::uint64_t> high;
    for (size_t i = 0; i < num_tags; ++i) {
      const auto n = parse_decimal(tags[i], UINT64_MAX);
      if (!n) return tags[0];
      high = std::max(high.value_or(0), *n);
    }
    return high ? std::to_string(*high) : tags[0];
  }
};

// Compacts a shard and its small tier into `out` (level: Xapian::Compactor's). The small tier holds
// its shard's documents from the shard's last id + 1 on, at its own ids from 1 (IndexWriter::add);
// Xapian's compaction of the two, renumbering, offsets the second's ids by the first's last, which
// puts every document back at its shard id, so both must be dense from 1 and the tier must begin
// where the shard ends (else kCorrupt, and nothing is written). Xapian's errors are thrown.
Status compact_with_small_tier(const std::string& shard, const std::string& fresh, const std::string& out,
                               unsigned level) {
  Xapian::Database s(shard, Xapian::DB_BACKEND_GLASS), f(fresh, Xapian::DB_BACKEND_GLASS);
  const auto from = read_docid_meta(f, schema::kMetaFreshFrom);
  const bool dense = s.get_doccount() == s.get_lastdocid() && f.get_doccount() == f.get_lastdocid();
  if (!from || *from != s.get_lastdocid() + 1 || !dense) {
    return make_error(ErrorCode::kCorrupt, "the index's small tier " + fresh + " does not follow its shard " + shard,
                      "run `mailark reindex`");
  }
  Xapian::Database both;
  both.add_database(s);
  both.add_database(f);
  MergeCompactor keep;
  both.compact(out, level, 0, keep);
  Xapian::WritableDatabase merged(out, Xapian::DB_OPEN | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
  merged.set_metadata(schema::kMetaFreshFrom, "");  // a shard again
  merged.commit();
  return ok_status();
}

// Merges a shard and its small tier (IndexWriter::set_small_tier) into a new generation of the shard
// beside them (shardK.gN, N the small tier's generation; level: Xapian::Compactor's), has `switch_stub`
// name it in the stub in place of both, then removes the two: a reader that has them open keeps
// reading them; a crash before the switch leaves the two (and a stray copy the writer's next open
// removes), after it the new one (and the old ones, removed then). Only with room for the copy and
// `min_free`. Returns the new shard's path. Xapian's errors are thrown.
Result<std::string> fold_small_tier(const std::string& shard, const std::string& fresh, unsigned level,
                                    std::uint64_t min_free, const std::string& what,
                                    const std::function<Status(const std::string& merged)>& switch_stub) {
  namespace fs = std::filesystem;
  const auto k = entry_shard(shard);
  if (!k) return make_error(ErrorCode::kInvalidArgument, what + ": " + shard + " is not a shard's directory");
  const std::string merged = fs::path(shard).parent_path().string() + "/shard" + std::to_string(*k) + ".g" +
                             std::to_string(entry_generation(fresh));
  std::error_code ec;
  fs::remove_all(merged, ec);
  MAILARK_TRY(index_room(shard, min_free, shard_bytes(shard, ec) + shard_bytes(fresh, ec), what));
  try {
    MAILARK_TRY(compact_with_small_tier(shard, fresh, merged, level));
  } catch (...) {
    fs::remove_all(merged, ec);  // a part-written copy gives its room back at once
    throw;
  }
  if (Status s = switch_stub(merged); !s) {
    fs::remove_all(merged, ec);
    return s.error();
  }
  fs::remove_all(shard, ec);  // still readable by whoever has them open
  fs::remove_all(fresh, ec);
  return merged;
}

// Rewrites the stub of a segment no writer writes (sealing, compaction) with `merged` in place of
// `shard` and without `fresh`.
Status replace_in_stub(const std::string& sdir, const std::string& shard, const std::string& fresh,
                       const std::string& merged) {
  StubEntries e = read_stub(sdir);
  for (auto& x : e.shards)
    if (x == shard) x = merged;
  std::erase(e.fresh, fresh);
  std::vector<std::string> all = e.shards;
  all.insert(all.end(), e.fresh.begin(), e.fresh.end());
  return write_file_atomically(sdir + "/" + kStubFile, stub_of(all));
}

}  // namespace

IndexWriter::~IndexWriter() {
  // Uncommitted changes are discarded on purpose: the watermarks say what is durable, and the archive
  // re-supplies the rest on the next open.
  for (auto& sh : shards_) {
    drop_uncommitted(sh.fresh);
    drop_uncommitted(sh.db);
  }
}

std::string IndexWriter::shard_path(std::uint64_t segment, unsigned shard) const {
  // As the segment's stub names it (shardK, or shardK.gN once merged with its small tier). The first
  // segment's shards are named by the stub at the top of the index (an index of one plain glass
  // database, from the first release, is its own shard).
  const std::string sdir = segment_dir(dir_, segment);
  for (const auto& e : read_stub(sdir).shards)
    if (!is_remote(e) && entry_shard(e) == shard) return e;
  if (segment == 1) return shard_paths(dir_)[shard];
  return sdir + "/shard" + std::to_string(shard);
}

Status IndexWriter::change_stub(std::uint64_t segment,
                                const std::function<void(std::vector<std::string>&, std::vector<std::string>&)>& change) {
  std::lock_guard<std::mutex> lock(stub_mu_);
  const std::string sdir = segment_dir(dir_, segment);
  StubEntries e = read_stub(sdir);
  change(e.shards, e.fresh);
  std::vector<std::string> all = e.shards;
  all.insert(all.end(), e.fresh.begin(), e.fresh.end());
  return write_file_atomically(sdir + "/" + kStubFile, stub_of(all));
}

void IndexWriter::add_segment(std::uint64_t first) {
  if (first <= 1) return;
  std::lock_guard<std::mutex> lock(segments_mu_);
  auto it = std::lower_bound(segments_.begin(), segments_.end(), first);
  if (it == segments_.end() || *it != first) segments_.insert(it, first);
}

std::uint64_t IndexWriter::segment_of(std::uint64_t id) const {
  std::lock_guard<std::mutex> lock(segments_mu_);
  auto it = std::upper_bound(segments_.begin(), segments_.end(), id);
  return it == segments_.begin() ? 1 : *(it - 1);
}

std::vector<std::uint64_t> IndexWriter::segments() const {
  std::lock_guard<std::mutex> lock(segments_mu_);
  return segments_;
}

Status IndexWriter::open_shard(Shard& sh, std::uint64_t segment) {
  const auto shards = static_cast<unsigned>(shards_.size());
  try {
    if (sh.db) {
      // Leaving a segment: what it holds is made durable first, and counted as held elsewhere (its
      // small tier, if any, stays: sealing folds it in).
      MAILARK_TRY(room_to_commit(sh, "closing an index segment"));
      (sh.fresh ? *sh.fresh : *sh.db).set_metadata(schema::kMetaWatermark, std::to_string(sh.watermark));
      if (sh.fresh) {
        sh.fresh->commit();
        sh.fresh->close();
        sh.fresh.reset();
      }
      sh.db->commit();
      sh.db->close();
      sh.db.reset();
      sh.elsewhere = std::max(sh.elsewhere, sh.watermark);
    }
    drop_uncommitted(sh.fresh);  // reopened (below) as the stub names it
    sh.fresh_path.clear();
    const std::string seg_dir = segment_dir(dir_, segment);
    std::error_code ec;
    std::filesystem::remove_all(shard_path(segment, sh.index) + ".pairing", ec);  // left by a crash (pair_unpaired)
    std::filesystem::remove_all(shard_path(segment, sh.index) + ".compacting", ec);  // and by compact_if_grown
    if (std::filesystem::exists(seg_dir + "/" + kSealedFile, ec)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "index segment " + std::to_string(segment) + " is sealed and takes no more documents",
                        "run `mailark reindex`");
    }
    if (segment != 1) {
      std::lock_guard<std::mutex> lock(segments_mu_);  // shards create a new segment's directory once
      if (!std::filesystem::exists(seg_dir + "/" + kStubFile, ec)) {
        // Every shard first, then the stub: a segment is listed (segment_firsts) only once whole.
        std::filesystem::create_directories(seg_dir, ec);
        if (ec) return make_error(ErrorCode::kIo, "creating " + seg_dir + ": " + ec.message());
        for (unsigned i = 0; i < shards; ++i) {
          Xapian::WritableDatabase db(shard_path(segment, i),
                                      Xapian::DB_CREATE_OR_OPEN | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
          set_new_shard_metadata(db);
          db.commit();
          db.close();
        }
        MAILARK_TRY(write_file_atomically(seg_dir + "/" + kStubFile, segment_stub(segment, shards)));
      }
    }
    if (segment != sh.segment) sh.compact_retry_at = sh.settled_bytes = 0;
    sh.segment = segment;
    sh.path = shard_path(segment, sh.index);
    // No termlist table: the archive is append-only, so documents are only ever added, and the
    // table would be half of the index (and of its write cost). Removing documents later
    // (retention) means dropping or rebuilding whole segments.
    sh.db = std::make_unique<Xapian::WritableDatabase>(
        sh.path, Xapian::DB_CREATE_OR_OPEN | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
    if (sh.db->get_metadata(schema::kMetaPacking).empty()) {
      // Created now, or by an earlier release, whose import packed the live segment's shards FULLER
      // (schema.h kMetaPacking): packed again, with room, before anything is written to it. Without
      // room for the copy it is written as it is, as before, and packed at a later open. (A
      // first-release index, one glass database at the top, is not swapped: compact_index packs it.)
      if (sh.db->get_doccount() > 0 && entry_shard(sh.path)) {
        sh.db->close();
        sh.db.reset();
        // Only with room for the copy (a min_free of 1 asks for that much even before the caller
        // set one); a failed copy is removed at once (compact_shard_beside) and fails nothing here.
        bool packed = false;
        try {
          packed = compact_shard_beside(sh.path, ".compacting", Xapian::Compactor::STANDARD,
                                        std::max<std::uint64_t>(min_free_, 1),
                                        "packing an earlier release's index shard " + sh.path)
                       .ok();
        } catch (const Xapian::Error&) {
          packed = false;
        }
        sh.db = std::make_unique<Xapian::WritableDatabase>(
            sh.path, Xapian::DB_CREATE_OR_OPEN | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
        if (packed) {
          sh.db->set_metadata(schema::kMetaPacking, "room");
          sh.db->commit();  // once: a writer that closes without a commit of its own keeps the mark
        }
      } else if (sh.db->get_doccount() == 0) {
        sh.db->set_metadata(schema::kMetaPacking, "room");
      }
    }
    std::string schema = sh.db->get_metadata(schema::kMetaSchema);
    if (schema.empty()) {
      sh.db->set_metadata(schema::kMetaSchema, schema::kSchemaVersion);
      if (sh.db->get_lastdocid() == 0) {
        sh.db->set_metadata(schema::kMetaUnpairedTo, "0");
        sh.db->set_metadata(schema::kMetaUndatedTo, "0");
        sh.db->set_metadata(schema::kMetaUnrepairedTo, "0");
        sh.db->set_metadata(schema::kMetaReading, schema::kReading);
      }
      sh.db->commit();
    } else if (schema != schema::kSchemaVersion) {
      return make_error(ErrorCode::kUnsupported, "the index in " + dir_ + " has schema " + schema,
                        "run `mailark reindex` to rebuild it with schema " + std::string(schema::kSchemaVersion));
    }
    sh.watermark = std::max(sh.elsewhere, read_watermark(*sh.db));
    sh.unpaired_to = read_docid_meta(*sh.db, schema::kMetaUnpairedTo);
    sh.compacted_bytes = parse_decimal(sh.db->get_metadata(schema::kMetaCompactedBytes), UINT64_MAX).value_or(0);
    sh.written = false;
    sh.pending_bytes = 0;
    if (!sh.unpaired_to) {
      // A shard from before the record: found once, from Kpairs' posting list (one pass).
      const Xapian::docid last = sh.db->get_lastdocid();
      Xapian::docid expect = 1, unpaired = 0;
      for (auto it = sh.db->postlist_begin(schema::kTermHasPairs); it != sh.db->postlist_end(schema::kTermHasPairs);
           ++it) {
        if (*it > expect) unpaired = *it - 1;  // expect .. *it - 1 lack Kpairs
        expect = *it + 1;
      }
      if (expect <= last) unpaired = last;
      sh.unpaired_to = unpaired;
      sh.db->set_metadata(schema::kMetaUnpairedTo, std::to_string(unpaired));
      sh.db->commit();
    }
    if (sh.db->get_metadata(schema::kMetaUndatedTo).empty()) {
      // A shard from before date terms: every document it holds lacks them; every one added from now
      // on has them (build_document).
      sh.db->set_metadata(schema::kMetaUndatedTo, std::to_string(sh.db->get_lastdocid()));
      sh.db->commit();
    }
    if (sh.db->get_metadata(schema::kMetaUnrepairedTo).empty() ||
        sh.db->get_metadata(schema::kMetaReading) != schema::kReading) {
      // A shard of an older reading (schema::kMetaReading): every document it holds was read so.
      sh.db->set_metadata(schema::kMetaUnrepairedTo, std::to_string(sh.db->get_lastdocid()));
      sh.db->set_metadata(schema::kMetaReading, schema::kReading);
      sh.db->commit();
    }
    // Its small tier, when the stub names one. Directories of this shard the stub does not name were
    // left by a crash: a merge's copy or a small tier not yet switched in, or the old ones after it.
    {
      std::lock_guard<std::mutex> lock(stub_mu_);
      const StubEntries stub = read_stub(seg_dir);
      for (const auto& f : stub.fresh)
        if (entry_shard(f) == sh.index) sh.fresh_path = f;
      // Only with a stub read that names the shard (never on a guess from a stub that could not be read).
      const bool named = std::find(stub.shards.begin(), stub.shards.end(), sh.path) != stub.shards.end();
      for (const auto& e : std::filesystem::directory_iterator(seg_dir, ec)) {
        if (!named) break;
        const std::string path = e.path().string();
        if (!e.is_directory(ec) || entry_shard(path) != sh.index || path == sh.path || path == sh.fresh_path) continue;
        if (std::find(stub.shards.begin(), stub.shards.end(), path) != stub.shards.end()) continue;
        std::filesystem::remove_all(path, ec);
      }
    }
    if (!sh.fresh_path.empty()) {
      sh.fresh = std::make_unique<Xapian::WritableDatabase>(
          sh.fresh_path, Xapian::DB_OPEN | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
      sh.watermark = std::max(sh.watermark, read_watermark(*sh.fresh));
      sh.fresh_unpaired_to = read_docid_meta(*sh.fresh, schema::kMetaUnpairedTo);
      const auto from = read_docid_meta(*sh.fresh, schema::kMetaFreshFrom);
      if (!from || *from != sh.db->get_lastdocid() + 1) {
        return make_error(ErrorCode::kCorrupt,
                          "the index's small tier " + sh.fresh_path + " does not follow its shard " + sh.path,
                          "run `mailark reindex`");
      }
      sh.fresh_base = *from - 1;
    }
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "opening the index in " + sh.path);
  }
  return ok_status();
}

Status IndexWriter::add(std::uint64_t id, const Xapian::Document& doc) {
  Shard& sh = shards_[shard_of(id)];
  if (id <= sh.watermark) return ok_status();
  const std::uint64_t segment = segment_of(id);
  // Adding a document can write blocks of the shard too, not only a commit (seen: Xapian's "Error
  // writing block" from an add on a full disk), and the first document of a new segment creates its
  // shards and commits their metadata: while less than the kept free space is free, the shard takes no
  // document (IndexRoom.NoCommitWhileLessThanTheFreeSpaceLeftIsFree,
  // IndexRoom.ANewSegmentIsNotBegunOnAFullDisk).
  if (min_free_) MAILARK_TRY(index_room(sh.db ? sh.path : dir_, min_free_, 0, "indexing"));
  if (segment != sh.segment) MAILARK_TRY(open_shard(sh, segment));
  auto local = static_cast<Xapian::docid>((id - segment) / shards_.size() + 1);
  try {
    const Xapian::docid last =
        std::max(sh.db->get_lastdocid(), sh.fresh ? sh.fresh->get_lastdocid() + sh.fresh_base : 0);
    if (local <= last) return ok_status();  // committed past the watermark before a crash: already here
    // New documents go to the small tier once there is one (set_small_tier), at its own ids: the
    // shard's less the shard's last, so that it is contiguous (Xapian 1.4 answers a BoolWeight match
    // of a term every document of a non-contiguous database holds with "Unexpected end of posting
    // list": IndexSmallTier.LongPostingListsAreReadNewestFirst).
    Xapian::WritableDatabase& to = sh.fresh ? *sh.fresh : *sh.db;
    if (sh.fresh) local -= sh.fresh_base;
    std::optional<Xapian::docid>& unpaired_to = sh.fresh ? sh.fresh_unpaired_to : sh.unpaired_to;
    // A document without pair terms: recorded before it is added, so that no commit holds it
    // without the record (readers look for such documents only up to it).
    if (unpaired_to && local > *unpaired_to && lacks_pair_terms(doc)) {
      unpaired_to = local;
      to.set_metadata(schema::kMetaUnpairedTo, std::to_string(local));
    }
    // Ids the archive passed over (records retention expired, which a catch-up or `mailark reindex`
    // never sees) are placeholders, so that the shard has no gaps (build_expired_document says why;
    // IndexExpiry.IdsPassedOverArePlaceholders).
    for (Xapian::docid gap = to.get_lastdocid() + 1; gap < local; ++gap) to.add_document(build_expired_document());
    put(to, local, id, doc);
    sh.written = true;
    sh.pending_bytes += doc.get_data().size() + 16 * std::uint64_t{doc.termlist_count()};
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "indexing message " + std::to_string(id));
  }
  return ok_status();
}

void IndexWriter::put(Xapian::WritableDatabase& db, Xapian::docid local, std::uint64_t id,
                      const Xapian::Document& doc) {
  // Appending in order is the common case and avoids a lookup of the document id.
  const bool next = db.get_lastdocid() + 1 == local;
  auto write = [&](Xapian::Document d) {
    d.add_boolean_term(id_term(id));  // every document's own term, given here where its id is known
    if (next)
      db.add_document(d);
    else
      db.replace_document(local, d);
  };
  try {
    write(doc);
  } catch (const Xapian::InvalidArgumentError& e) {
    // This document, not the database: keep the id with a placeholder that says why.
    write(build_unindexed_document(id, "the index refused it: " + e.get_msg()));
  }
}

bool IndexWriter::has_unpaired(unsigned shard) const {
  const Shard& sh = shards_[shard];
  if (!sh.db || sh.fresh || !sh.unpaired_to || *sh.unpaired_to == 0) return false;
  try {
    return sh.db->get_doccount() <= kPairRebuildMaxDocs;
  } catch (const Xapian::Error&) {
    return false;  // the next commit reports what is wrong with the shard
  }
}

Result<std::size_t> IndexWriter::pair_unpaired(unsigned shard,
                                               const std::function<Xapian::Document(std::uint64_t id)>& rebuild) {
  namespace fs = std::filesystem;
  Shard& sh = shards_[shard];
  if (!has_unpaired(shard) || !pair_words()) return std::size_t{0};
  const auto n = static_cast<std::uint64_t>(shards_.size());
  // The shard's first id in its segment is its document 1; each next document is n ids on.
  std::uint64_t first = sh.segment;
  while (shard_of(first) != shard) ++first;
  // A document of a database without a termlist cannot be replaced (Xapian must know its old terms),
  // so the shard is written again beside itself, every document built again, and swapped in with one
  // atomic rename, as sealing does: a reader that has the old one open keeps reading it, a crash
  // before the swap leaves the old one in place (and a stray copy, removed by the next try), after
  // it the new one. The shard is small then: the words are chosen at kPairTrainDocs documents.
  const std::string fresh = sh.path + ".pairing";
  std::error_code ec;
  fs::remove_all(fresh, ec);
  // The copy, with the pair terms, is larger than the shard: room for twice it, or tried again at the
  // next commit (readers check the unpaired documents' phrases against the archive meanwhile).
  if (!index_room(sh.path, min_free_, 2 * shard_bytes(sh.path, ec), "pairing")) return std::size_t{0};
  std::size_t rebuilt = 0;
  std::unique_ptr<Xapian::WritableDatabase> copy;  // dropped unwritten if anything fails
  try {
    {
      copy = std::make_unique<Xapian::WritableDatabase>(
          fresh, Xapian::DB_CREATE | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
      Xapian::WritableDatabase& db = *copy;
      for (auto k = sh.db->metadata_keys_begin(); k != sh.db->metadata_keys_end(); ++k)
        db.set_metadata(*k, sh.db->get_metadata(*k));
      db.set_metadata(schema::kMetaUnpairedTo, "0");
      db.set_metadata(schema::kMetaUndatedTo, "0");  // rebuilt: every document has its date terms
      db.set_metadata(schema::kMetaUnrepairedTo, "0");  // and was read again, with this release's reading
      db.set_metadata(schema::kMetaReading, schema::kReading);
      // Every document the shard holds (the empty term's posting list), at the same document id; a
      // placeholder of an expired record stays one (its record is gone: build_expired_document).
      std::vector<Xapian::docid> expired;
      for (auto it = sh.db->postlist_begin(schema::kTermExpired); it != sh.db->postlist_end(schema::kTermExpired); ++it)
        expired.push_back(*it);
      for (auto it = sh.db->postlist_begin(""); it != sh.db->postlist_end(""); ++it) {
        const Xapian::docid local = *it;
        if (std::binary_search(expired.begin(), expired.end(), local)) {
          db.replace_document(local, build_expired_document());
          continue;
        }
        const std::uint64_t id = first + (local - 1) * n;
        put(db, local, id, rebuild(id));
        ++rebuilt;
      }
      db.commit();
      db.close();
      copy.reset();
    }
    sh.db->close();
    sh.db.reset();
    if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, sh.path.c_str(), RENAME_EXCHANGE) != 0) {
      const int err = errno;
      fs::remove_all(fresh, ec);
      MAILARK_TRY(open_shard(sh, sh.segment));
      return make_error(ErrorCode::kIo, "swapping in " + fresh + ": " + std::strerror(err));
    }
    fs::remove_all(fresh, ec);  // the old shard, still readable by whoever has it open
  } catch (const Xapian::Error& e) {
    drop_uncommitted(copy);
    fs::remove_all(fresh, ec);
    return xapian_error(e, "giving the index's older documents their pair terms");
  }
  MAILARK_TRY(open_shard(sh, sh.segment));
  return rebuilt;
}

Result<IndexWriter::Compaction> IndexWriter::compact_if_grown(unsigned shard, bool idle, std::uint64_t min_bytes,
                                                               std::uint64_t max_busy_bytes) {
  namespace fs = std::filesystem;
  Shard& sh = shards_[shard];
  if (!sh.db) return Compaction{};
  std::error_code ec;
  const std::uint64_t size = shard_bytes(sh.path, ec);
  if (sh.fresh) {
    // The shard is as its last merge (or compaction) left it; the small tier is merged into it once it
    // is a sixteenth of it (and merge_bytes), or once mail stops (idle) at idle_merge_bytes.
    const std::uint64_t fresh = shard_bytes(sh.fresh_path, ec);
    if (ec || fresh < sh.compact_retry_at) return Compaction{};
    bool holds = false;
    try {
      holds = sh.fresh->get_doccount() > 0;
    } catch (const Xapian::Error& e) {
      return xapian_error(e, "reading " + sh.fresh_path);
    }
    const bool due = fresh >= std::max(small_merge_, size / 16) && size + fresh <= max_busy_bytes;
    if (!due && !(idle && holds && fresh >= small_idle_merge_)) return Compaction{};
    return merge_small_tier(sh, size);
  }
  if (ec || size < min_bytes || size < sh.compact_retry_at) return Compaction{};
  // Each commit writes new copies of the blocks it changes and frees the old ones for the next: a
  // shard being written is its compact size plus what one commit changes. That size, measured at the
  // first commit after a compaction (or at the first call), is what the shard must outgrow by half.
  if (!sh.settled_bytes) {
    sh.settled_bytes = size;
    return Compaction{};
  }
  // Growth counts from min_bytes up, so that a small shard, which one commit's copies make a
  // quarter larger, is not compacted after every few messages.
  const bool grown = size >= sh.settled_bytes + std::max(sh.settled_bytes / 2, min_bytes) && size <= max_busy_bytes;
  // Once idle, a quarter over its compact size (and a quarter of min_bytes: 1 MiB, where 4 MiB left a
  // small shard, compacted late in a burst, twice its compact size for good: found by
  // test_import_handoff.py test_the_index_a_server_writes_is_compacted_once_mail_stops under ASan).
  const bool slack =
      sh.compacted_bytes == 0 || size >= sh.compacted_bytes + std::max(sh.compacted_bytes / 4, min_bytes / 4);
  // Idle, only a shard this writer wrote to: a server started on an imported folder (compacted by the
  // import, without the record) leaves it as it is until mail comes.
  if (!grown && !(idle && slack && sh.written)) return Compaction{};
  if (!index_room(sh.path, min_free_, size, "compacting")) return Compaction{};  // tried again at a later call
  // As sealing does (compact_shard_beside), the writer closed meanwhile.
  std::optional<Error> failure;
  try {
    sh.db->close();
    sh.db.reset();
    // Blocks packed as a bulk load packs them, with room left in each: a block packed full (FULLER)
    // splits at the first document that touches it, and the shard is written to again at once. The
    // room was asked above, with the writer still open.
    if (Status c = compact_shard_beside(sh.path, ".compacting", Xapian::Compactor::STANDARD, 0, "compacting"); !c)
      failure = c.error();
  } catch (const Xapian::Error& e) {
    failure = xapian_error(e, "compacting the index shard " + sh.path);
  }
  MAILARK_TRY(open_shard(sh, sh.segment));
  if (failure) {
    sh.compact_retry_at = size + size / 4;
    return *failure;
  }
  MAILARK_ASSIGN_OR_RETURN(const std::uint64_t after, record_compacted(sh, "compaction"));
  return Compaction{true, size, after};
}

Result<std::uint64_t> IndexWriter::record_compacted(Shard& sh, const std::string& what) {
  std::error_code ec;
  const std::uint64_t after = shard_bytes(sh.path, ec);
  try {
    sh.db->set_metadata(schema::kMetaCompactedBytes, std::to_string(after));
    sh.db->commit();
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "recording the " + what + " of " + sh.path);
  }
  sh.compacted_bytes = after;
  sh.settled_bytes = 0;  // measured at the next call (open_shard cleared `written`)
  return after;
}

void IndexWriter::start_small_tier(Shard& sh) {
  namespace fs = std::filesystem;
  if (!small_from_ || sh.fresh || !sh.db || !pair_words() || has_unpaired(sh.index) || !entry_shard(sh.path)) return;
  std::error_code ec;
  if (shard_bytes(sh.path, ec) < small_from_ || ec) return;
  if (!index_room(sh.path, min_free_, std::uint64_t{1} << 20, "beginning a small tier")) return;  // at a later commit
  const std::string path = fs::path(sh.path).parent_path().string() + "/fresh" + std::to_string(sh.index) + ".g" +
                           std::to_string(entry_generation(sh.path) + 1);
  fs::remove_all(path, ec);
  std::unique_ptr<Xapian::WritableDatabase> fresh;
  try {
    fresh = std::make_unique<Xapian::WritableDatabase>(
        path, Xapian::DB_CREATE | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
    set_new_shard_metadata(*fresh);
    fresh->set_metadata(schema::kMetaFreshFrom, std::to_string(sh.db->get_lastdocid() + 1));
    fresh->set_metadata(schema::kMetaWatermark, std::to_string(sh.watermark));
    fresh->commit();
  } catch (const Xapian::Error&) {
    drop_uncommitted(fresh);
    fs::remove_all(path, ec);
    return;  // the shard takes its documents itself; tried again at a later commit
  }
  // Durable before the stub names it (a crash in between leaves a directory open_shard removes).
  if (!change_stub(sh.segment, [&](std::vector<std::string>&, std::vector<std::string>& f) { f.push_back(path); })) {
    drop_uncommitted(fresh);
    fs::remove_all(path, ec);
    return;
  }
  sh.fresh_base = sh.db->get_lastdocid();
  sh.fresh = std::move(fresh);
  sh.fresh_path = path;
  sh.fresh_unpaired_to = 0;
}

Result<IndexWriter::Compaction> IndexWriter::merge_small_tier(Shard& sh, std::uint64_t before) {
  std::error_code ec;
  const std::uint64_t fresh_bytes = shard_bytes(sh.fresh_path, ec);
  // Room for the copy, with the writer still open; else tried again at a later call.
  if (!index_room(sh.path, min_free_, before + fresh_bytes, "merging")) return Compaction{};
  const std::string shard = sh.path, fresh = sh.fresh_path;
  std::optional<Error> failure;
  try {
    sh.fresh->close();
    sh.fresh.reset();
    sh.db->close();
    sh.db.reset();
    // Blocks packed with room, as a live compaction leaves them (compact_if_grown).
    auto merged = fold_small_tier(shard, fresh, Xapian::Compactor::STANDARD, 0, "merging",
                                  [&](const std::string& to) {
                                    return change_stub(sh.segment, [&](std::vector<std::string>& s,
                                                                       std::vector<std::string>& f) {
                                      for (auto& x : s)
                                        if (x == shard) x = to;
                                      std::erase(f, fresh);
                                    });
                                  });
    if (!merged) failure = merged.error();
  } catch (const Xapian::Error& e) {
    failure = xapian_error(e, "merging the index shard " + shard + " with its small tier");
  }
  MAILARK_TRY(open_shard(sh, sh.segment));  // as the stub names it now: merged, or the two as they were
  if (failure) {
    sh.compact_retry_at = fresh_bytes + fresh_bytes / 4;
    return *failure;
  }
  sh.compact_retry_at = 0;
  MAILARK_ASSIGN_OR_RETURN(const std::uint64_t after, record_compacted(sh, "merge"));
  return Compaction{true, before + fresh_bytes, after};
}

Status IndexWriter::room_to_commit(const Shard& sh, const std::string& what) const {
  if (min_free_ == 0) return ok_status();  // no listing of the shard's files either
  std::error_code ec;
  return index_room(sh.path, min_free_, shard_bytes(sh.path, ec) + 2 * sh.pending_bytes, what);
}

Status IndexWriter::reopen_shard(unsigned shard) {
  Shard& sh = shards_[shard];
  drop_uncommitted(sh.fresh);  // the archive re-supplies them
  drop_uncommitted(sh.db);
  return open_shard(sh, sh.segment);
}

Status IndexWriter::commit_shard(unsigned shard, std::uint64_t watermark) {
  Shard& sh = shards_[shard];
  MAILARK_TRY(room_to_commit(sh, "committing the index"));
  try {
    std::uint64_t w = std::max(sh.watermark, watermark);
    // With a small tier, only it is written (the shard is written again only by a merge).
    Xapian::WritableDatabase& to = sh.fresh ? *sh.fresh : *sh.db;
    to.set_metadata(schema::kMetaWatermark, std::to_string(w));
    to.commit();
    sh.watermark = w;
    sh.pending_bytes = 0;
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "committing the index");
  }
  if (!sh.fresh) start_small_tier(sh);
  // Failing to choose the words (a full disk for the file) fails nothing: documents are built
  // without pair terms until a later commit manages it.
  if (!pair_words()) (void)train_pair_words();
  return ok_status();
}

Status IndexWriter::commit(std::uint64_t watermark) {
  for (unsigned i = 0; i < shards_.size(); ++i) MAILARK_TRY(commit_shard(i, watermark));
  return ok_status();
}

std::shared_ptr<const PairWords> IndexWriter::pair_words() const {
  std::lock_guard<std::mutex> lock(pairs_mu_);
  return pairs_;
}

namespace {

// The pair words out of (document frequency, word) counts: the kPairWords most frequent, ties by word.
std::shared_ptr<const PairWords> most_frequent(std::vector<std::pair<std::uint64_t, std::string>> freq) {
  std::sort(freq.begin(), freq.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (freq.size() > schema::kPairWords) freq.resize(schema::kPairWords);
  auto pairs = std::make_shared<PairWords>();
  for (const auto& [n, word] : freq) pairs->words.insert(word);
  return pairs;
}

// The pair words of an index: its kPairWords most frequent unprefixed terms in at least
// kPairMinPerMille of its documents; null when it has fewer than kPairTrainDocs documents.
std::shared_ptr<const PairWords> choose_pair_words(const Xapian::Database& db) {
  const std::uint64_t docs = db.get_doccount();
  if (docs < schema::kPairTrainDocs) return nullptr;
  const std::uint64_t min_docs = std::max<std::uint64_t>(2, docs * schema::kPairMinPerMille / 1000);
  std::vector<std::pair<std::uint64_t, std::string>> freq;
  // Unprefixed terms are the words of the free text; every prefix starts with an upper-case letter.
  for (auto t = db.allterms_begin(); t != db.allterms_end(); ++t) {
    const std::string term = *t;
    if (term.empty() || (term[0] >= 'A' && term[0] <= 'Z')) continue;
    if (t.get_termfreq() >= min_docs) freq.emplace_back(t.get_termfreq(), term);
  }
  return most_frequent(std::move(freq));
}

Status write_pair_words(const std::string& dir, const PairWords& pairs) {
  std::vector<std::string> sorted(pairs.words.begin(), pairs.words.end());
  std::sort(sorted.begin(), sorted.end());
  std::string text = std::string(schema::kPairWordsHeader) + "\n";
  for (const auto& w : sorted) text += w + "\n";
  return write_file_atomically(dir + "/" + schema::kPairWordsFile, text);
}

}  // namespace

std::shared_ptr<const PairWords> choose_pair_words(const std::vector<std::string_view>& texts) {
  if (texts.size() < schema::kPairTrainDocs / 2) return nullptr;
  std::unordered_map<std::string, std::uint32_t> df;
  std::unordered_set<std::string> seen;
  std::string spaced;
  for (std::string_view text : texts) {
    seen.clear();
    const std::string whole(text);
    text = words_form(whole, spaced);  // as the index takes them: compatibility form, a CJK letter a word
    std::size_t i = 0;
    while (i < text.size()) {
      auto word_byte = [&](std::size_t k) {
        const auto c = static_cast<unsigned char>(text[k]);
        return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
      };
      if (!word_byte(i)) {
        ++i;
        continue;
      }
      // As TermGenerator: one apostrophe or ampersand between word characters joins them (don't).
      std::size_t end = i;
      while (end < text.size() &&
             (word_byte(end) || ((text[end] == '\'' || text[end] == '&') && end + 1 < text.size() && word_byte(end + 1))))
        ++end;
      if (end - i <= 64) {
        std::string w(text.substr(i, end - i));
        for (char& c : w)
          if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (seen.insert(w).second) ++df[w];
      }
      i = end;
    }
  }
  const std::uint64_t min_docs = std::max<std::uint64_t>(2, texts.size() * schema::kPairMinPerMille / 1000);
  std::vector<std::pair<std::uint64_t, std::string>> freq;
  for (auto& [w, n] : df)
    if (n >= min_docs) freq.emplace_back(n, w);
  return most_frequent(std::move(freq));
}

Result<bool> IndexWriter::adopt_pair_words(std::shared_ptr<const PairWords> pairs) {
  if (!pairs) return false;
  std::lock_guard<std::mutex> lock(pairs_mu_);
  if (pairs_) return false;
  try {
    // Documents built with a list whose file is gone: as in train_pair_words, never another list.
    Xapian::Database db;
    for (const auto& sh : shards_) db.add_database(Xapian::Database(sh.path, Xapian::DB_BACKEND_GLASS));
    if (db.get_termfreq(schema::kTermHasPairs) > 0) return false;
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "reading the index before choosing its pair words");
  }
  MAILARK_TRY(write_pair_words(dir_, *pairs));
  pairs_ = std::move(pairs);
  return true;
}

Status IndexWriter::train_pair_words() {
  std::lock_guard<std::mutex> lock(pairs_mu_);
  if (pairs_) return ok_status();
  try {
    // The committed index, read beside the writers (Xapian readers see the last commit).
    Xapian::Database db;
    for (const auto& sh : shards_) db.add_database(Xapian::Database(sh.path, Xapian::DB_BACKEND_GLASS));
    // Documents built with pair words whose file is gone: another list would not match their pair
    // terms, and a phrase would miss them. Without the file the index has no pair words (phrases
    // are checked as before) until `mailark reindex`. Test: IndexPairs.LostPairWordsAreNeverReplaced.
    if (db.get_termfreq(schema::kTermHasPairs) > 0) return ok_status();
    auto pairs = choose_pair_words(db);
    if (!pairs) return ok_status();
    MAILARK_TRY(write_pair_words(dir_, *pairs));
    pairs_ = std::move(pairs);
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "choosing the index's pair words");
  }
  return ok_status();
}

Status seed_pair_words(const std::string& from_dir, const std::string& to_dir) {
  MAILARK_ASSIGN_OR_RETURN(auto pairs, read_pair_words(from_dir));
  try {
    if (!pairs) {
      std::error_code ec;
      if (!std::filesystem::exists(from_dir + "/" + kStubFile, ec)) return ok_status();
      Xapian::Database db;
      for (const auto& path : shard_paths(from_dir)) db.add_database(open_shard_db(path));
      pairs = choose_pair_words(db);
      if (!pairs) return ok_status();
    }
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "reading the pair words of the index in " + from_dir);
  }
  std::error_code ec;
  std::filesystem::create_directories(to_dir, ec);
  return write_pair_words(to_dir, *pairs);
}

std::uint64_t shard_coverage(std::uint64_t watermark, unsigned shard, unsigned shards) {
  // Every id of the shard up to its watermark is in it; the ids after it that belong to other shards
  // are theirs to vouch for. So the shard covers everything before its next own id.
  std::uint64_t next = watermark + 1;
  while ((next - 1) % shards != shard) ++next;
  return next - 1;
}

std::uint64_t IndexWriter::watermark() const {
  std::uint64_t w = UINT64_MAX;
  for (unsigned i = 0; i < shards_.size(); ++i)
    w = std::min(w, shard_coverage(shards_[i].watermark, i, static_cast<unsigned>(shards_.size())));
  return shards_.empty() ? 0 : w;
}

namespace {
Status compact_index_into(const std::string& dir, const std::string& out_dir) {
  namespace fs = std::filesystem;
  try {
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    const std::vector<SegmentLayout> layout = index_layout(dir);
    MAILARK_ASSIGN_OR_RETURN(const std::uint64_t covered, layout_watermark(layout));
    for (std::size_t k = 0; k < layout.size(); ++k) {
      SegmentLayout seg = layout[k];
      const std::string src = segment_dir(dir, seg.first), dst = segment_dir(out_dir, seg.first);
      fs::create_directories(dst, ec);
      if (ec) return make_error(ErrorCode::kIo, "creating " + dst + ": " + ec.message());
      if (seg.sealed) {
        // Never written again: its files are shared with the new index, not rewritten. Every shard
        // directory it has comes along, also those its stub does not name while it is searched
        // remotely (the local copy `mailark segments local` goes back to).
        std::vector<std::string> dirs;
        for (const auto& e : fs::directory_iterator(src, ec))
          if (e.is_directory(ec) && e.path().filename().string().rfind("shard", 0) == 0) dirs.push_back(e.path().string());
        for (const auto& path : dirs) {
          const std::string to = dst + "/" + fs::path(path).filename().string();
          fs::create_directories(to, ec);
          for (const auto& f : fs::directory_iterator(path, ec)) {
            fs::create_hard_link(f.path(), to + "/" + f.path().filename().string(), ec);
            if (ec) return make_error(ErrorCode::kIo, "linking " + f.path().string() + ": " + ec.message());
          }
        }
        fs::copy_file(src + "/" + kSealedFile, dst + "/" + kSealedFile, ec);
      } else {
        // A closed segment whose every document is in: sealed from now on, never written again, so
        // packed FULLER. Any other is written again (the live one, or a closed one still catching
        // up): Xapian 1.4.22 corrupts a FULLER-packed database that is written to ("not recommended
        // if you plan to update the compacted database"; seen: "Block 2 item 157: not in sorted
        // order" in a shard an import had packed, after the next import's first commit), so it is
        // packed as a live compaction packs it (test_retention.py
        // test_every_search_spans_a_segment_an_expiry_thinned).
        const bool sealing = k + 1 < layout.size() && covered + 1 >= layout[k + 1].first;
        const auto level = sealing ? Xapian::Compactor::FULLER : Xapian::Compactor::STANDARD;
        for (std::size_t j = 0; j < seg.paths.size(); ++j) {
          std::string& path = seg.paths[j];
          Xapian::Database db(path, Xapian::DB_BACKEND_GLASS);
          // An index of one plain glass database (the first release's) becomes shard0.
          const std::string name = path == src ? "shard0" : fs::path(path).filename().string();
          // A shard's small tier is folded into its copy (the new stub names no small tier).
          if (!seg.fresh[j].empty())
            MAILARK_TRY(compact_with_small_tier(path, seg.fresh[j], dst + "/" + name, level));
          else
            db.compact(dst + "/" + name, Xapian::DBCOMPACT_NO_RENUMBER | level);
          path = dst + "/" + name;  // for the new stub
        }
        if (sealing) MAILARK_TRY(write_file_atomically(dst + "/" + kSealedFile, "mailark-sealed-segment 1\n"));
      }
      MAILARK_TRY(write_file_atomically(dst + "/" + kStubFile, stub_of(seg.paths)));
    }
    const std::string pairs = dir + "/" + schema::kPairWordsFile;
    if (fs::exists(pairs, ec)) {
      fs::copy_file(pairs, out_dir + "/" + schema::kPairWordsFile, fs::copy_options::overwrite_existing, ec);
      if (ec) return make_error(ErrorCode::kIo, "copying " + pairs + ": " + ec.message());
    }
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "compacting the index");
  }
  return ok_status();
}
}  // namespace

Status compact_index(const std::string& dir, const std::string& out_dir) {
  Status s = compact_index_into(dir, out_dir);
  if (!s) {
    std::error_code ec;
    std::filesystem::remove_all(out_dir, ec);  // a part-written copy gives its room back at once
  }
  return s;
}

namespace {

// Are the segment's shards its own directories (shardN in the segment's folder), which can each be
// swapped with a copy beside it? Not so for a first-release index (one glass database at the top) or
// shards served from another machine.
bool has_own_shards(const std::string& dir, const SegmentLayout& seg) {
  namespace fs = std::filesystem;
  const fs::path sdir = segment_dir(dir, seg.first);
  bool own = !seg.paths.empty();
  for (const auto& path : seg.paths)
    own = own && !is_remote(path) && fs::path(path).parent_path() == sdir &&
          fs::path(path).filename().string().rfind("shard", 0) == 0;
  return own;
}

// Compacts every shard of a segment no writer writes beside itself, each with its small tier folded
// in when it has one, at `level` (FULLER only for a segment never written again: compact_index_into
// says why); `suffix` names the copy of one without ("shardN.sealing"), `verb` the work in errors.
Status compact_segment_shards(const std::string& dir, const SegmentLayout& seg, const char* suffix,
                              const std::string& verb, std::uint64_t min_free, unsigned level) {
  const std::string sdir = segment_dir(dir, seg.first);
  for (std::size_t j = 0; j < seg.paths.size(); ++j) {
    const std::string& path = seg.paths[j];
    const std::string& fresh = seg.fresh[j];
    if (!fresh.empty()) {
      MAILARK_TRY(fold_small_tier(path, fresh, level, min_free, verb + " " + path,
                                  [&](const std::string& to) { return replace_in_stub(sdir, path, fresh, to); }));
    } else {
      MAILARK_TRY(compact_shard_beside(path, suffix, level, min_free, verb + " " + path));
    }
  }
  return ok_status();
}

}  // namespace

Result<unsigned> compact_shards_in_place(const std::string& dir, std::uint64_t min_free) {
  MAILARK_TRY(seal_closed_segments(dir, min_free));
  unsigned compacted = 0;
  try {
    for (const SegmentLayout& seg : index_layout(dir)) {
      if (seg.sealed || !has_own_shards(dir, seg)) continue;
      MAILARK_TRY(compact_segment_shards(dir, seg, ".compacting", "compacting", min_free, Xapian::Compactor::STANDARD));
      compacted += static_cast<unsigned>(seg.paths.size());
    }
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "compacting the index's shards in place");
  }
  return compacted;
}

Result<unsigned> seal_closed_segments(const std::string& dir, std::uint64_t min_free) {
  namespace fs = std::filesystem;
  unsigned sealed = 0;
  try {
    const std::vector<SegmentLayout> layout = index_layout(dir);
    MAILARK_ASSIGN_OR_RETURN(const std::uint64_t covered, layout_watermark(layout));
    for (std::size_t k = 0; k + 1 < layout.size(); ++k) {
      const SegmentLayout& seg = layout[k];
      if (seg.sealed) continue;
      // Every shard has committed a document of the next segment, so no writer holds this one open.
      const std::uint64_t moved_on = layout[k + 1].first + layout[k + 1].paths.size() - 1;
      if (covered < moved_on) continue;
      const std::string sdir = segment_dir(dir, seg.first);
      if (!has_own_shards(dir, seg)) continue;  // a first-release index: compact_index seals it
      MAILARK_TRY(compact_segment_shards(dir, seg, ".sealing", "sealing", min_free, Xapian::Compactor::FULLER));
      MAILARK_TRY(write_file_atomically(sdir + "/" + kSealedFile, "mailark-sealed-segment 1\n"));
      ++sealed;
    }
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "sealing the index's closed segments");
  }
  return sealed;
}

Result<std::uint64_t> expire_segment_documents(const std::string& dir, std::uint64_t first,
                                               const std::vector<std::uint64_t>& keep,
                                               const std::function<Xapian::Document(std::uint64_t id)>& rebuild,
                                               std::uint64_t min_free) {
  return rewrite_sealed_segment(dir, first, keep, rebuild, min_free, "removing expired messages from the index");
}

Result<std::uint64_t> rewrite_sealed_segment(const std::string& dir, std::uint64_t first,
                                             const std::vector<std::uint64_t>& keep,
                                             const std::function<Xapian::Document(std::uint64_t id)>& rebuild,
                                             std::uint64_t min_free, const std::string& what) {
  namespace fs = std::filesystem;
  std::uint64_t built = 0;
  try {
    const std::vector<SegmentLayout> layout = index_layout(dir);
    std::size_t k = 0;
    while (k < layout.size() && layout[k].first != first) ++k;
    if (k == layout.size()) return make_error(ErrorCode::kNotFound, "the index has no segment from record " + std::to_string(first));
    const SegmentLayout& seg = layout[k];
    if (k + 1 == layout.size()) return make_error(ErrorCode::kInvalidArgument, "the live segment of the index cannot be written again: " + what);
    if (!seg.sealed)
      return make_error(ErrorCode::kInvalidArgument,
                        "the index segment from record " + std::to_string(first) + " is not sealed yet",
                        "it is sealed once every record in it is indexed (`mailark segments seal`)");
    for (const auto& path : seg.paths)
      if (is_remote(path))
        return make_error(ErrorCode::kUnsupported,
                          "the index segment from record " + std::to_string(first) + " is served from another machine",
                          "bring it back first (`mailark segments local`), then serve the new copy");
    const auto n = static_cast<std::uint64_t>(seg.paths.size());
    const std::uint64_t last = layout[k + 1].first - 1;  // the segment's last id
    std::vector<std::uint64_t> kept = keep;
    std::sort(kept.begin(), kept.end());
    for (std::uint64_t j = 0; j < n; ++j) {
      const std::string& path = seg.paths[j];
      const std::string fresh = path + ".expiring";
      std::error_code ec;
      fs::remove_all(fresh, ec);
      // The copy is at most the shard's size; dropped unwritten if anything fails (a close commits).
      MAILARK_TRY(index_room(path, min_free, shard_bytes(path, ec), what));
      std::unique_ptr<Xapian::WritableDatabase> copy;
      try {
        Xapian::Database old(path, Xapian::DB_BACKEND_GLASS);
        copy = std::make_unique<Xapian::WritableDatabase>(
            fresh, Xapian::DB_CREATE | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
        Xapian::WritableDatabase& db = *copy;
        for (auto key = old.metadata_keys_begin(); key != old.metadata_keys_end(); ++key)
          db.set_metadata(*key, old.get_metadata(*key));
        // Every document it keeps is built again, with this release's reading
        // (Retention.AnExpiredSegmentsIndexIsBuiltWithThisReading).
        db.set_metadata(schema::kMetaUnrepairedTo, "0");
        db.set_metadata(schema::kMetaReading, schema::kReading);
        // Line j of the segment's stub holds ids F + j, F + j + n, ... as documents 1, 2, ...; every
        // one of them is written, a record that is not kept as a placeholder, so that the shard has
        // no gaps (build_expired_document says why).
        Xapian::docid local = 1;
        for (std::uint64_t id = first + j; id <= last; id += n, ++local) {
          if (std::binary_search(kept.begin(), kept.end(), id)) {
            db.replace_document(local, rebuild(id));
            ++built;
          } else {
            db.replace_document(local, build_expired_document());
          }
        }
        db.commit();
        db.close();
        copy.reset();
      } catch (...) {
        drop_uncommitted(copy);
        fs::remove_all(fresh, ec);
        throw;  // reported below, as every Xapian error of this function
      }
      if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, path.c_str(), RENAME_EXCHANGE) != 0) {
        const int err = errno;
        fs::remove_all(fresh, ec);
        return make_error(ErrorCode::kIo, "swapping in " + fresh + ": " + std::strerror(err));
      }
      fs::remove_all(fresh, ec);  // the old shard, still readable by whoever has it open
      // Written a document at a time, the copy's blocks are part full: compacted as sealing does (1.7
      // times the sealed size before, on the Enron mail; docs/BENCHMARKS.md "Segments read again").
      // Without room for it now the shard stays as written: whole, only larger.
      Status compacted = compact_shard_beside(path, ".compact", Xapian::Compactor::FULLER, min_free, what);
      if (!compacted && compacted.error().code != ErrorCode::kIo) return compacted.error();
    }
  } catch (const Xapian::Error& e) {
    return xapian_error(e, what);
  }
  return built;
}

Result<std::vector<IndexSegment>> index_segments(const std::string& dir) {
  std::vector<IndexSegment> out;
  try {
    for (const auto& seg : index_layout(dir)) {
      IndexSegment s;
      s.first = seg.first;
      s.sealed = seg.sealed;
      s.shards = static_cast<unsigned>(seg.paths.size());
      for (const auto& path : seg.paths) {
        std::error_code ec;
        if (is_remote(path)) {
          // A search machine that is down is reported, not an error of the whole listing.
          s.remote.push_back(path.substr(kRemoteScheme.size()));
          try {
            Xapian::Database db = open_shard_db(path);
            s.documents += db.get_doccount() - db.get_termfreq(schema::kTermExpired);
          } catch (const Xapian::Error& e) {
            s.remote.back() += " (unreachable: " + e.get_msg() + ")";
          }
          continue;
        }
        Xapian::Database db = open_shard_db(path);
        s.documents += db.get_doccount() - db.get_termfreq(schema::kTermExpired);
        s.gaps += db.get_lastdocid() - db.get_doccount();
        s.bytes += shard_bytes(path, ec);
        s.older_reading += older_reading_documents(db);
      }
      for (const auto& path : seg.fresh) {  // the live shards' small tiers
        if (path.empty()) continue;
        std::error_code ec;
        Xapian::Database db = open_shard_db(path);
        s.documents += db.get_doccount();
        s.bytes += shard_bytes(path, ec);
        s.older_reading += older_reading_documents(db);
      }
      out.push_back(s);
    }
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "reading the index in " + dir);
  }
  return out;
}

namespace {

// A shard's committed revision, or nullopt once it is gone (a merge removed it) or cannot be opened.
std::optional<Xapian::rev> shard_revision(const std::string& path) {
  try {
    return Xapian::Database(path, Xapian::DB_BACKEND_GLASS).get_revision();
  } catch (const Xapian::Error&) {
    return std::nullopt;
  }
}

// Xapian's check of one shard. Its report names each fault on a line of its own; the first few
// lines are kept. A check that found faults while the shard's revision moved (a writer committed:
// glass reuses the blocks an older revision freed, so a reader of that revision may read another's
// blocks) proves nothing, and is made again.
void check_one_shard(const std::string& path, ShardCheck& out) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    const auto before = shard_revision(path);
    std::ostringstream log;
    out.errors = 0;
    out.settled = true;
    out.problem.clear();
    try {
      out.errors = Xapian::Database::check(path, 0, &log);
    } catch (const Xapian::Error& e) {
      out.errors = 1;
      out.problem = std::string(e.get_type()) + ": " + e.get_msg();
    }
    if (out.errors == 0) return;
    if (out.problem.empty()) {
      std::istringstream lines(log.str());
      std::string line;
      int kept = 0;
      while (kept < 3 && std::getline(lines, line)) {
        if (line.empty()) continue;
        out.problem += (kept++ ? "; " : "") + line;
      }
      if (out.problem.empty()) out.problem = std::to_string(out.errors) + " errors";
    }
    const auto after = shard_revision(path);
    if (before && after && *before == *after) return;  // it held still: the damage is real
  }
  out.settled = false;
}

}  // namespace

Result<std::vector<ShardCheck>> check_index(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<ShardCheck> out;
  // A merge switches the stub and then removes the old directories: a shard found gone is read again
  // from the stub (three passes).
  for (int pass = 0; pass < 3; ++pass) {
    out.clear();
    bool replaced = false;
    try {
      for (const auto& seg : index_layout(dir)) {
        auto one = [&](const std::string& path, bool tier) {
          ShardCheck c;
          c.segment = seg.first;
          c.shard = fs::path(path).lexically_relative(dir).string();
          c.small_tier = tier;
          std::error_code ec;
          c.bytes = shard_bytes(path, ec);
          check_one_shard(path, c);
          if (c.errors && !fs::exists(path, ec)) replaced = true;
          if (!tier && !c.errors) {
            try {
              Xapian::Database db(path, Xapian::DB_BACKEND_GLASS);
              c.gaps = db.get_lastdocid() - db.get_doccount();
            } catch (const Xapian::Error&) {
            }
          }
          out.push_back(std::move(c));
        };
        for (const auto& path : seg.paths)
          if (!is_remote(path)) one(path, false);
        for (const auto& path : seg.fresh)
          if (!path.empty()) one(path, true);
      }
    } catch (const Xapian::Error& e) {
      return xapian_error(e, "checking the index in " + dir);
    }
    if (!replaced) break;
  }
  return out;
}

Status set_segment_remote(const std::string& dir, std::uint64_t first, const std::vector<std::string>& endpoints) {
  namespace fs = std::filesystem;
  const std::string sdir = segment_dir(dir, first);
  std::error_code ec;
  if (!fs::exists(sdir + "/" + kStubFile, ec)) {
    return make_error(ErrorCode::kNotFound, "the index has no segment beginning at " + std::to_string(first),
                      "`mailark segments` lists them");
  }
  if (!fs::exists(sdir + "/" + kSealedFile, ec)) {
    return make_error(ErrorCode::kInvalidArgument, "segment " + std::to_string(first) + " is not sealed",
                      "only sealed segments (never written again) can be served from elsewhere; "
                      "`mailark segments seal` seals the closed ones");
  }
  const std::vector<std::string> current = shard_paths(sdir);
  // The shards the stub would name if the segment were local: every line's own directory.
  std::vector<std::string> local;
  for (std::size_t j = 0; j < current.size(); ++j) {
    // shardK, or its latest generation shardK.gN (written again when sealing folded in a small tier).
    const unsigned k = shard_index(first, j, current.size());
    std::string path = sdir + "/shard" + std::to_string(k);
    unsigned best = 0;
    for (const auto& e : fs::directory_iterator(sdir, ec)) {
      const std::string p = e.path().string();
      if (e.path().filename().string().rfind("shard", 0) == 0 && entry_shard(p) == k && entry_generation(p) > best &&
          e.is_directory(ec)) {
        best = entry_generation(p);
        path = p;
      }
    }
    local.push_back(path);
  }
  std::vector<std::string> next;
  if (endpoints.empty()) {
    for (const auto& path : local) {
      if (!fs::exists(path, ec)) {
        return make_error(ErrorCode::kNotFound, "segment " + std::to_string(first) + " has no local copy of " + path,
                          "copy the segment's shards back first");
      }
    }
    next = local;
  } else {
    if (endpoints.size() != current.size()) {
      return make_error(ErrorCode::kInvalidArgument,
                        "segment " + std::to_string(first) + " has " + std::to_string(current.size()) +
                            " shards: give one HOST:PORT for each, in the order of its stub",
                        "`cat " + sdir + "/" + kStubFile + "`");
    }
    for (std::size_t j = 0; j < endpoints.size(); ++j) next.push_back(std::string(kRemoteScheme) + endpoints[j]);
  }
  // Every shard answers, and is the same database as the one it stands for (its UUID, or without a
  // local copy its document count and watermark as the index knows them).
  try {
    for (std::size_t j = 0; j < next.size(); ++j) {
      Xapian::Database to = open_shard_db(next[j]);
      Xapian::Database was = open_shard_db(fs::exists(local[j], ec) ? local[j] : current[j]);
      const bool same = was.get_uuid() == to.get_uuid() ||
                        (was.get_doccount() == to.get_doccount() && read_watermark(was) == read_watermark(to) &&
                         was.get_lastdocid() == to.get_lastdocid());
      if (!same) {
        return make_error(ErrorCode::kInvalidArgument,
                          next[j] + " is not shard " + std::to_string(j) + " of segment " + std::to_string(first) +
                              " (" + std::to_string(to.get_doccount()) + " documents, uuid " + to.get_uuid() + ")",
                          "serve that segment's shards in the order of its stub");
      }
    }
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "checking segment " + std::to_string(first) + "'s shards");
  }
  return write_file_atomically(sdir + "/" + kStubFile, stub_of(next));
}

// ---- query parsing ----

std::optional<std::pair<std::int64_t, std::int64_t>> parse_date_period(const std::string& text) {
  std::string digits;
  for (char c : text) {
    if (std::isdigit(static_cast<unsigned char>(c)))
      digits.push_back(c);
    else if (c != '-' && c != '/')
      return std::nullopt;
  }
  int y = 0, m = 1, d = 1;
  int span = 0;  // 0: year, 1: month, 2: day
  if (digits.size() == 4) {
    y = std::stoi(digits);
  } else if (digits.size() == 6) {
    y = std::stoi(digits.substr(0, 4));
    m = std::stoi(digits.substr(4, 2));
    span = 1;
  } else if (digits.size() == 8) {
    y = std::stoi(digits.substr(0, 4));
    m = std::stoi(digits.substr(4, 2));
    d = std::stoi(digits.substr(6, 2));
    span = 2;
  } else {
    return std::nullopt;
  }
  if (m < 1 || m > 12 || d < 1 || d > 31 || y < 1900 || y > 9999) return std::nullopt;
  // Days past a month's end run on into the next (as timegm normalises them): 2001-02-31 is March 3.
  auto to_unix = [](int yy, int mm, int dd) {
    return days_from_civil(yy, static_cast<unsigned>(mm), static_cast<unsigned>(dd)) * 86400;
  };
  std::int64_t lo = to_unix(y, m, d);
  std::int64_t hi;
  if (span == 0)
    hi = to_unix(y + 1, 1, 1) - 1;
  else if (span == 1)
    hi = to_unix(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) - 1;
  else
    hi = to_unix(y, m, d + 1) - 1;
  return std::make_pair(lo, hi);
}

namespace {

std::optional<double> parse_size(std::string text) {
  text = ascii_lower(text);
  if (text.empty()) return std::nullopt;
  double mult = 1;
  char last = text.back();
  if (last == 'k')
    mult = 1024;
  else if (last == 'm')
    mult = 1024.0 * 1024;
  else if (last == 'g')
    mult = 1024.0 * 1024 * 1024;
  if (mult != 1 || last == 'b') text.pop_back();
  auto n = parse_decimal(text);  // digits only; more than 2^64 is no size anyone has
  if (!n) return std::nullopt;
  return static_cast<double>(*n) * mult;
}

// Where field processors report a value they cannot read. They never throw through Xapian's query
// parser (it leaks its parse state when a field processor throws; found by fuzz/query_fuzz.cc,
// regression: fuzz/regressions/query/): they record the first error and match nothing, and search()
// reports the error once parsing is done.
struct QueryErrors {
  std::string first;
  Xapian::Query fail(std::string why) {
    if (first.empty()) first = std::move(why);
    return Xapian::Query::MatchNothing;
  }
};

// "A..B", "A..", "..B" or "A" for a value slot, with a parser for the endpoints.
// With `narrow`, what it makes of the range (the slot's check, lo, hi) is the query.
using RangeNarrower =
    std::function<Xapian::Query(const Xapian::Query& check, std::optional<double> lo, std::optional<double> hi)>;
template <typename ParseLo, typename ParseHi>
Xapian::Query value_range(QueryErrors& errors, Xapian::valueno slot, const std::string& text, const char* field,
                          ParseLo lo_of, ParseHi hi_of, const RangeNarrower& narrow = {}) {
  std::string a = text, b = text;
  std::size_t dots = text.find("..");
  if (dots != std::string::npos) {
    a = text.substr(0, dots);
    b = text.substr(dots + 2);
  }
  std::optional<double> lo, hi;
  if (!a.empty()) {
    lo = lo_of(a);
    if (!lo) return errors.fail(std::string("invalid ") + field + " '" + a + "'");
  }
  if (!b.empty()) {
    hi = hi_of(b);
    if (!hi) return errors.fail(std::string("invalid ") + field + " '" + b + "'");
  }
  if (!lo && !hi) return errors.fail(std::string("empty ") + field + " range");
  const Xapian::Query check =
      lo && hi ? Xapian::Query(Xapian::Query::OP_VALUE_RANGE, slot, Xapian::sortable_serialise(*lo),
                               Xapian::sortable_serialise(*hi))
      : lo     ? Xapian::Query(Xapian::Query::OP_VALUE_GE, slot, Xapian::sortable_serialise(*lo))
               : Xapian::Query(Xapian::Query::OP_VALUE_LE, slot, Xapian::sortable_serialise(*hi));
  return narrow ? narrow(check, lo, hi) : check;
}

class DateField : public Xapian::FieldProcessor {
 public:
  DateField(std::shared_ptr<QueryErrors> errors, RangeNarrower narrow)
      : errors_(std::move(errors)), narrow_(std::move(narrow)) {}
  Xapian::Query operator()(const std::string& text) override {
    return value_range(
        *errors_, schema::kSlotDate, text, "date",
        [](const std::string& s) -> std::optional<double> {
          auto p = parse_date_period(s);
          if (!p) return std::nullopt;
          return static_cast<double>(p->first);
        },
        [](const std::string& s) -> std::optional<double> {
          auto p = parse_date_period(s);
          if (!p) return std::nullopt;
          return static_cast<double>(p->second);
        },
        narrow_);
  }

 private:
  std::shared_ptr<QueryErrors> errors_;
  RangeNarrower narrow_;
};

class SizeField : public Xapian::FieldProcessor {
 public:
  explicit SizeField(std::shared_ptr<QueryErrors> errors) : errors_(std::move(errors)) {}
  Xapian::Query operator()(const std::string& text) override {
    return value_range(*errors_, schema::kSlotSize, text, "size", parse_size, parse_size);
  }

 private:
  std::shared_ptr<QueryErrors> errors_;
};

// from:, to:, cc:, bcc:, rcpt:. Something that looks like an address, a local part or a domain
// (it has '@' or '.') is one exact term; anything else is words of the display name or local part.
class AddressField : public Xapian::FieldProcessor {
 public:
  AddressField(std::string text_prefix, std::string addr_prefix)
      : text_prefix_(std::move(text_prefix)), addr_prefix_(std::move(addr_prefix)) {}
  Xapian::Query operator()(const std::string& raw) override {
    std::string text = Xapian::Unicode::tolower(raw);  // the query is in search_form already: address_key
    if (text.size() >= 2 && text.front() == '<' && text.back() == '>') text = text.substr(1, text.size() - 2);
    if (!text.empty() && text.front() == '@') text.erase(0, 1);
    bool has_space = text.find_first_of(" \t") != std::string::npos;
    if (!has_space && text.find_first_of("@.") != std::string::npos) {
      return Xapian::Query(boolean_term(addr_prefix_.c_str(), text));
    }
    Xapian::QueryParser qp;
    qp.set_stemming_strategy(Xapian::QueryParser::STEM_NONE);
    // Name words: Chinese, Japanese and Korean letters each a word, Thai, Lao, Khmer and Burmese runs
    // cut into words, as the index has them (words_form)
    const bool cjk = has_cjk(raw) || has_sea(raw);
    std::string q = has_space || cjk ? "\"" + (cjk ? cjk_words(sea_words(raw)) : raw) + "\"" : raw;
    Xapian::Query words = qp.parse_query(q, Xapian::QueryParser::FLAG_PHRASE, text_prefix_);
    // A bare word may also be a whole local part ("from:jsmith").
    if (!has_space)
      words =
          Xapian::Query(Xapian::Query::OP_OR, words, Xapian::Query(boolean_term(addr_prefix_.c_str(), text)));
    return words;
  }

 private:
  std::string text_prefix_, addr_prefix_;
};

class MessageIdField : public Xapian::FieldProcessor {
 public:
  Xapian::Query operator()(const std::string& text) override { return Xapian::Query(message_id_term(text)); }
};

class LowerBooleanField : public Xapian::FieldProcessor {
 public:
  explicit LowerBooleanField(std::string prefix) : prefix_(std::move(prefix)) {}
  Xapian::Query operator()(const std::string& text) override {
    // Custodians are addresses (address_key); the other values are ASCII.
    return Xapian::Query(boolean_term(prefix_.c_str(), Xapian::Unicode::tolower(text)));
  }

 private:
  std::string prefix_;
};

}  // namespace

// Segments and shards as one database: Xapian numbers the documents of N sub-databases by
// interleaving, document d being document (d - 1) / N + 1 of sub-database (d - 1) % N. Sub-database
// J holds, as its local document l, the archive id first + (l - 1) * stride + phase (a shard of a
// segment: stride = the segment's shards, phase = its place in the segment's stub). With one segment
// the two numbers are equal. Test: IndexSegments.*.
struct DocMap {
  struct Sub {
    std::uint64_t first;
    unsigned stride, phase;
    bool remote = false;  // served by xapian-tcpsrv
  };
  std::vector<Sub> subs;                  // in the order the databases were added
  std::vector<std::uint64_t> seg_first;   // per segment, ascending
  std::vector<unsigned> seg_sub, seg_stride;  // per segment: its first sub-database, its shards
  // Per segment, per shard (stub order): the sub-database of its small tier, and the first document
  // id the small tier holds (ids from it on are there, not in the shard); none: kNoFresh.
  static constexpr unsigned kNoFresh = UINT32_MAX;
  std::vector<std::vector<std::pair<unsigned, Xapian::docid>>> seg_fresh;

  // Documents of remote shards cannot be fetched: xapian-tcpsrv sends a document's values with its
  // data, and a shard without a termlist table cannot list them.
  bool remote(Xapian::docid d) const { return d != 0 && !subs.empty() && subs[(d - 1) % subs.size()].remote; }

  std::uint64_t to_archive(Xapian::docid d) const {
    if (d == 0 || subs.empty()) return 0;
    const std::size_t n = subs.size();
    const Sub& s = subs[(d - 1) % n];
    return s.first + ((d - 1) / n) * s.stride + s.phase;
  }
  // 0 when the id is before every segment or beyond Xapian's 32-bit document ids.
  Xapian::docid to_xapian(std::uint64_t id) const {
    if (id == 0 || seg_first.empty() || id < seg_first[0]) return 0;
    const std::size_t k =
        static_cast<std::size_t>(std::upper_bound(seg_first.begin(), seg_first.end(), id) - seg_first.begin()) - 1;
    const std::uint64_t off = id - seg_first[k];
    const std::uint64_t phase = off % seg_stride[k];
    std::uint64_t j = seg_sub[k] + phase, local = off / seg_stride[k];
    if (k < seg_fresh.size() && phase < seg_fresh[k].size() && seg_fresh[k][phase].first != kNoFresh &&
        local + 1 >= seg_fresh[k][phase].second) {
      j = seg_fresh[k][phase].first;  // the small tier, at its own ids
      local -= seg_fresh[k][phase].second - 1;
    }
    const std::uint64_t d = local * subs.size() + j + 1;
    return d > UINT32_MAX ? 0 : static_cast<Xapian::docid>(d);
  }
};

namespace {

// Which shard a sub-database is, by its UUID: Xapian hands a PostingSource each shard separately,
// with shard-local document ids.
struct ShardMap {
  std::map<std::string, unsigned> by_uuid;
  unsigned count = 1;
  // Per shard (by_uuid's numbers): the highest document id without Kpairs (kMetaUnpairedTo; absent:
  // any document may lack it).
  std::vector<std::optional<Xapian::docid>> unpaired_to;
  // Per shard: the highest document id without date terms (kMetaUndatedTo; absent: any may lack them).
  std::vector<std::optional<Xapian::docid>> undated_to;
  using Heads = std::vector<std::optional<Xapian::docid>> ShardMap::*;
  // Does every shard say that none of its documents lacks what `heads` counts?
  bool none_lack(Heads heads) const {
    const auto& v = this->*heads;
    return v.size() >= count &&
           std::all_of(v.begin(), v.end(), [](const std::optional<Xapian::docid>& u) { return u && *u == 0; });
  }
};

// Matches the documents of each shard up to its entry in `heads` (all of a shard that does not say):
// with unpaired_to, the only ones that can lack Kpairs (beside `AND NOT Kpairs` it lets Xapian skip
// straight to the few documents built before the pair words instead of walking a phrase's whole
// candidate set); with undated_to, the only ones that can lack date terms.
class HeadRange : public Xapian::PostingSource {
 public:
  explicit HeadRange(std::shared_ptr<const ShardMap> shards, ShardMap::Heads heads = &ShardMap::unpaired_to)
      : shards_(std::move(shards)), heads_(heads) {}
  HeadRange* clone() const override { return new HeadRange(shards_, heads_); }
  void init(const Xapian::Database& db) override {
    last_ = db.get_lastdocid();
    const auto& heads = (*shards_).*heads_;
    auto it = shards_->by_uuid.find(db.get_uuid());
    if (it != shards_->by_uuid.end() && it->second < heads.size() && heads[it->second])
      last_ = std::min(last_, *heads[it->second]);
    did_ = 0;
  }
  Xapian::doccount get_termfreq_min() const override { return 0; }
  Xapian::doccount get_termfreq_est() const override { return last_; }
  Xapian::doccount get_termfreq_max() const override { return last_; }
  void next(double) override { ++did_; }
  void skip_to(Xapian::docid did, double) override { did_ = std::max(did_, did); }
  bool at_end() const override { return did_ > last_; }
  Xapian::docid get_docid() const override { return did_; }
  std::string get_description() const override { return "HeadRange"; }

 private:
  std::shared_ptr<const ShardMap> shards_;
  ShardMap::Heads heads_;
  Xapian::docid last_ = 0, did_ = 0;
};

// The date terms the index holds (schema::kPrefixDate), read when a search first needs them: a date
// range becomes their union, and a newest-first page looks at the newest months first.
class DateBuckets {
 public:
  struct Bucket {
    std::string term;
    double lo, hi;  // the seconds it holds, both included (-inf for XY-, +inf for XY+)
    Xapian::doccount docs;
  };

  DateBuckets(const Xapian::Database& db, std::shared_ptr<const ShardMap> shards)
      : db_(db), shards_(std::move(shards)) {}

  // The documents that hold the range [lo, hi] by the value slot's `check`: the years and months
  // wholly inside it by their terms alone, the months it cuts (at most two) and the documents
  // without date terms by their terms and the check, which then reads only their values.
  // Test: IndexDates.RangesMatchWhatTheValueSlotSays.
  Xapian::Query range(const Xapian::Query& check, std::optional<double> lo, std::optional<double> hi) {
    load();
    const double l = lo.value_or(-kInf), h = hi.value_or(kInf);
    auto inside = [&](const Bucket& b) { return b.lo >= l && b.hi <= h; };
    auto meets = [&](const Bucket& b) { return b.hi >= l && b.lo <= h; };
    std::vector<Xapian::Query> parts;
    auto add = [&](const Bucket& b) {
      if (inside(b))
        parts.emplace_back(b.term);
      else if (meets(b))
        parts.emplace_back(Xapian::Query::OP_FILTER, Xapian::Query(b.term), check);
    };
    for (const Year& y : years_) {
      if (!meets(y.bucket)) continue;
      if (inside(y.bucket) || y.months_begin == y.months_end) {
        add(y.bucket);  // (a year without its months, which no build writes, by the check)
        continue;
      }
      for (std::size_t i = y.months_begin; i < y.months_end; ++i) add(months_[i]);
    }
    for (const Bucket& b : outside_) add(b);
    if (any_undated()) parts.emplace_back(Xapian::Query::OP_FILTER, undated(), check);
    if (parts.empty()) return Xapian::Query::MatchNothing;
    return Xapian::Query(Xapian::Query::OP_OR, parts.begin(), parts.end());
  }

  // Every month term and XY+, oldest first (XY- is left out: it is never a page's newest).
  const std::vector<Bucket>& months() {
    load();
    return newest_last_;
  }

  // The documents that may lack date terms (all of a shard that does not say).
  Xapian::Query undated() const {
    return Xapian::Query((new HeadRange(shards_, &ShardMap::undated_to))->release());
  }
  bool any_undated() const { return !shards_->none_lack(&ShardMap::undated_to); }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();
  struct Year {
    Bucket bucket;
    std::size_t months_begin, months_end;  // in months_
  };

  void load() {
    if (loaded_) return;
    loaded_ = true;
    const std::string prefix = schema::kPrefixDate;
    // In term order a year comes right before its months: XY2001, XY200101, ..., XY200112, XY2002.
    for (auto t = db_.allterms_begin(prefix); t != db_.allterms_end(prefix); ++t) {
      const std::string term = *t;
      const std::string_view digits = std::string_view(term).substr(prefix.size());
      const bool all_digits = std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (digits == "-") {
        outside_.push_back({term, -kInf, static_cast<double>(month_start(kFirstDatedYear, 1) - 1), t.get_termfreq()});
      } else if (digits == "+") {
        outside_.push_back({term, static_cast<double>(month_start(kLastDatedYear + 1, 1)), kInf, t.get_termfreq()});
      } else if (all_digits && digits.size() == 4) {
        const std::int64_t y = std::stoll(std::string(digits));
        years_.push_back({{term, static_cast<double>(month_start(y, 1)), static_cast<double>(month_start(y + 1, 1) - 1),
                           t.get_termfreq()},
                          months_.size(), months_.size()});
      } else if (all_digits && digits.size() == 6 && !years_.empty() &&
                 digits.substr(0, 4) == std::string_view(years_.back().bucket.term).substr(prefix.size())) {
        const std::int64_t y = std::stoll(std::string(digits.substr(0, 4)));
        const auto m = static_cast<unsigned>(std::stoul(std::string(digits.substr(4))));
        if (m < 1 || m > 12) continue;
        const std::int64_t next = m == 12 ? month_start(y + 1, 1) : month_start(y, m + 1);
        months_.push_back(
            {term, static_cast<double>(month_start(y, m)), static_cast<double>(next - 1), t.get_termfreq()});
        years_.back().months_end = months_.size();
      }
    }
    newest_last_ = months_;
    for (const Bucket& b : outside_)
      if (b.hi == kInf) newest_last_.push_back(b);
  }

  const Xapian::Database& db_;
  std::shared_ptr<const ShardMap> shards_;
  bool loaded_ = false;
  std::vector<Year> years_;
  std::vector<Bucket> months_, outside_, newest_last_;
};

// Matches the `part`-th of `parts` runs of each shard's document ids (SearchOptions::part).
class DocIdPart : public Xapian::PostingSource {
 public:
  DocIdPart(std::uint32_t part, std::uint32_t parts) : part_(part), parts_(parts) {}
  DocIdPart* clone() const override { return new DocIdPart(part_, parts_); }
  void init(const Xapian::Database& db) override {
    const std::uint64_t last = db.get_lastdocid();
    first_ = static_cast<Xapian::docid>(last * part_ / parts_ + 1);
    last_ = static_cast<Xapian::docid>(last * (part_ + 1) / parts_);
    did_ = first_ - 1;
  }
  Xapian::doccount get_termfreq_min() const override { return 0; }
  Xapian::doccount get_termfreq_est() const override { return last_ >= first_ ? last_ - first_ + 1 : 0; }
  Xapian::doccount get_termfreq_max() const override { return get_termfreq_est(); }
  void next(double) override { ++did_; }
  // Never before the part's first id, even when asked before the first next().
  void skip_to(Xapian::docid did, double) override { did_ = std::max({did_, did, first_}); }
  bool at_end() const override { return did_ > last_; }
  Xapian::docid get_docid() const override { return did_; }
  std::string get_description() const override {
    return "DocIdPart(" + std::to_string(part_) + "/" + std::to_string(parts_) + ")";
  }

 private:
  std::uint32_t part_, parts_;
  Xapian::docid first_ = 1, last_ = 0, did_ = 0;
};

// Matches a fixed, sorted set of archive ids (the verified candidates of one phrase), translated into
// the document ids of whichever shard it is run on.
class DocIdSet : public Xapian::PostingSource {
 public:
  DocIdSet(std::shared_ptr<const std::vector<Xapian::docid>> ids, std::shared_ptr<const ShardMap> shards)
      : all_(std::move(ids)), shards_(std::move(shards)) {}
  DocIdSet* clone() const override { return new DocIdSet(all_, shards_); }
  void init(const Xapian::Database& db) override {
    ids_.clear();
    pos_ = kBefore;
    auto it = shards_->by_uuid.find(db.get_uuid());
    if (it == shards_->by_uuid.end()) return;  // not one of the index's shards: nothing of it matches
    const unsigned shard = it->second;
    const unsigned n = shards_->count;
    for (Xapian::docid id : *all_)
      if ((id - 1) % n == shard) ids_.push_back((id - 1) / n + 1);
    pos_ = kBefore;
  }
  Xapian::doccount get_termfreq_min() const override { return static_cast<Xapian::doccount>(ids_.size()); }
  Xapian::doccount get_termfreq_est() const override { return static_cast<Xapian::doccount>(ids_.size()); }
  Xapian::doccount get_termfreq_max() const override { return static_cast<Xapian::doccount>(ids_.size()); }
  void next(double) override { pos_ = pos_ == kBefore ? 0 : pos_ + 1; }
  void skip_to(Xapian::docid did, double) override {
    std::size_t start = pos_ == kBefore ? 0 : pos_;
    pos_ = static_cast<std::size_t>(
        std::lower_bound(ids_.begin() + static_cast<std::ptrdiff_t>(start), ids_.end(), did) - ids_.begin());
  }
  bool at_end() const override { return pos_ != kBefore && pos_ >= ids_.size(); }
  Xapian::docid get_docid() const override { return ids_[pos_]; }
  std::string get_description() const override { return "DocIdSet(" + std::to_string(all_->size()) + ")"; }

 private:
  static constexpr std::size_t kBefore = static_cast<std::size_t>(-1);
  std::shared_ptr<const std::vector<Xapian::docid>> all_;
  std::shared_ptr<const ShardMap> shards_;
  std::vector<Xapian::docid> ids_;
  std::size_t pos_ = kBefore;
};

bool has_phrase(const Xapian::Document& doc, const std::vector<std::string>& terms) {
  // Each distinct word's positions, read once however often the phrase repeats it.
  std::map<std::string_view, std::vector<Xapian::termpos>> by_term;
  std::vector<const std::vector<Xapian::termpos>*> positions;
  positions.reserve(terms.size());
  for (const auto& t : terms) {
    auto [at, fresh] = by_term.try_emplace(t);
    if (fresh) {
      Xapian::TermIterator ti = doc.termlist_begin();
      ti.skip_to(t);
      if (ti == doc.termlist_end() || *ti != t) return false;  // term absent from this text
      for (auto it = ti.positionlist_begin(); it != ti.positionlist_end(); ++it) at->second.push_back(*it);
      if (at->second.empty()) return false;
    }
    positions.push_back(&at->second);  // ascending, as Xapian gives them
  }
  for (Xapian::termpos p : *positions[0]) {
    bool all = true;
    for (std::size_t i = 1; i < positions.size() && all; ++i)
      all = std::binary_search(positions[i]->begin(), positions[i]->end(), p + static_cast<Xapian::termpos>(i));
    if (all) return true;
  }
  return false;
}

// The prefix of a term: its leading upper-case letters (Xapian's convention; mailark's prefixes are
// all upper case and the words after them lower case).
std::string prefix_of(const std::string& term) {
  std::size_t i = 0;
  while (i < term.size() && term[i] >= 'A' && term[i] <= 'Z') ++i;
  return term.substr(0, i);
}

// Does one piece of text, indexed as the index does it (TermGenerator, with positions), hold the
// phrase? Long texts are only tokenised around the places where the phrase's first word can start:
// each window runs from the whitespace before an occurrence of that word to the whitespace after the
// next `terms.size()` runs of letters and digits, which holds every term a phrase starting there can
// have, so the answer is the same as for the whole text.
bool text_has_phrase(const std::string& text, const std::string& prefix,
                     const std::vector<std::string>& terms) {
  auto check = [&](std::string_view piece) {
    Xapian::Document doc;
    Xapian::TermGenerator tg;
    tg.set_document(doc);
    tg.set_stemming_strategy(Xapian::TermGenerator::STEM_NONE);
    tg.set_max_word_length(64);
    tg.index_text(std::string(piece), 1, prefix);
    return has_phrase(doc, terms);
  };
  const std::string first = terms[0].substr(prefix.size());
  bool ascii_word = !first.empty() && std::all_of(first.begin(), first.end(), [](unsigned char c) {
    return std::isalnum(c) && c < 0x80;
  });
  if (text.size() < 2048 || !ascii_word) return check(text);
  const std::string lowered = ascii_lower(text);  // `first` is ASCII: where it may start (locale-free)
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  auto is_alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  std::size_t searched_to = 0;  // windows never overlap: text before this was already checked
  for (std::size_t pos = lowered.find(first); pos != std::string::npos; pos = lowered.find(first, pos + 1)) {
    if (pos < searched_to) continue;
    std::size_t begin = pos;
    while (begin > 0 && !is_space(text[begin - 1])) --begin;
    std::size_t end = pos, runs = 0;
    while (end < text.size() && runs <= terms.size()) {
      while (end < text.size() && !is_alnum(text[end])) ++end;
      if (end < text.size()) ++runs;
      while (end < text.size() && is_alnum(text[end])) ++end;
    }
    while (end < text.size() && !is_space(text[end])) ++end;
    if (check(std::string_view(text).substr(begin, end - begin))) return true;
    searched_to = pos + first.size();
  }
  return false;
}

// Is a phrase with this prefix checked against header fields only (FieldSource::load_headers)?
bool header_prefix(const std::string& prefix) {
  for (const char* p : {schema::kPrefixFrom, schema::kPrefixTo, schema::kPrefixCc, schema::kPrefixBcc, schema::kPrefixRcpt,
                        schema::kPrefixSubject})
    if (prefix == p) return true;
  return false;
}

bool fields_have_phrase(const IndexFields& fields, const std::vector<std::string>& terms) {
  const std::string prefix = prefix_of(terms[0]);
  bool found = false;
  for_each_text(fields, [&](const std::string& value, const char* p) {
    if (!found && !value.empty() && prefix == p) found = text_has_phrase(value, prefix, terms);
  });
  return found;
}

// A document's pair filter in `db` ("" when it has none).
std::string pair_filter_value(Xapian::Database& db, Xapian::docid id) {
  try {
    return db.get_document(id, Xapian::DOC_ASSUME_VALID).get_value(schema::kSlotPairFilter);
  } catch (const Xapian::DocNotFoundError&) {
    return {};
  }
}

// A phrase whose check is left to the search's walk through its results (PhraseResolver, lazy).
struct DeferredPhrase {
  std::vector<std::string> terms;
  // Set: only these documents (ascending; through their filters already) need the check; the
  // phrase's other results hold it already (its pair term, exact wherever it was built).
  std::shared_ptr<const std::vector<Xapian::docid>> only;
  // Pair filter keys a result's filter must hold before it is read from the archive (pairs without a
  // pair term in any document, so none of a phrase's results lacks them).
  std::vector<std::uint64_t> keys;
  bool applies_to(Xapian::docid id) const { return !only || std::binary_search(only->begin(), only->end(), id); }
};

// Rewrites every phrase in `q` into the set of documents that really hold it. Its candidates (the
// documents holding its words, narrowed by its pair terms) are first tested against their pair
// filters (index.h), and those left are read from the archive and checked. A phrase standing where
// every result must hold it (under AND and FILTER, or the left of AND NOT, from the top) is instead
// left as its candidates and listed in deferred(): the search then checks its results in order, only
// as far as the page it returns (all of them when they are at most kEagerChecks, for an exact total).
class PhraseResolver {
 public:
  // A check reads and parses the message (0.1-1.5 ms); past this many candidates, a page's walk
  // (about as many checks as the page has results) is cheaper than checking all, and up to it the
  // walk checks all (an exact total).
  static constexpr Xapian::doccount kEagerChecks = kEagerPhraseChecks;
  // Candidates checked, spread evenly over all, to estimate the total of a deferred phrase when the
  // pair filter could not narrow them (remote shards, documents indexed before the filter).
  static constexpr std::size_t kEstimateSample = 100;

  PhraseResolver(Xapian::Database& db, const DocMap& map, FieldSource* fields, std::shared_ptr<const ShardMap> shards,
                 const PairWords* pairs, bool may_defer, bool remote = false)
      : db_(db), map_(map), fields_(fields), shards_(std::move(shards)), pairs_(pairs), may_defer_(may_defer),
        remote_(remote) {}

  // Set when the query cannot be answered exactly (a phrase under OR or NOT with remote shards); what
  // to do instead. (The bounds of the query are checked on the parsed query before it is resolved.)
  const std::string& error() const { return error_; }
  const std::string& error_hint() const { return error_hint_; }

  Xapian::Query resolve(const Xapian::Query& q) { return resolve(q, /*required=*/true); }

  const std::vector<DeferredPhrase>& deferred() const { return deferred_; }

  // The deferred phrases' candidates were not all narrowed by pair filters: the share of them that
  // holds is best estimated from a sample spread over all of them rather than from the walk's head.
  bool estimate_by_sample() const { return remote_ || unfiltered_ > 0 || unnarrowed_; }

  // Could the document hold every deferred phrase, by its pair filter (no archive read)?
  bool passes_filters(Xapian::docid id) {
    if (auto v = filter_verdicts_.find(id); v != filter_verdicts_.end()) return v->second;
    const bool pass = test_filters(id);
    filter_verdicts_.emplace(id, pass);
    return pass;
  }

  // Reads, side by side, the messages the walk's next checks need (holds_deferred then finds them
  // read): from the results `ids` (in the walk's order), the first `most` that a deferred phrase
  // applies to and whose filters pass. Returns how many of `ids` it went through: the walk checks
  // each of them anyway before it reaches the last one read.
  std::size_t prefetch_deferred(std::span<const Xapian::docid> ids, std::size_t most) {
    if (!fields_->concurrent()) return ids.size();
    std::vector<std::pair<Xapian::docid, unsigned>> wanted;
    std::size_t used = 0;
    for (; used < ids.size() && wanted.size() < most; ++used) {
      const Xapian::docid id = ids[used];
      if (std::none_of(deferred_.begin(), deferred_.end(), [&](const DeferredPhrase& p) { return p.applies_to(id); }))
        continue;
      if (!passes_filters(id)) continue;
      wanted.emplace_back(id, needs(id));
    }
    read_side_by_side(wanted);
    return used;
  }

 private:
  bool test_filters(Xapian::docid id) {
    const FilterTest t = test_filter_in(db_, id);
    if (t.unfiltered) ++unfiltered_;  // indexed before filters: cannot be ruled out
    return t.pass;
  }

  // What a check of the document reads: the header fields (kHeaders), the texts an unprefixed phrase
  // is checked against (kText), or both.
  static constexpr unsigned kHeaders = 1, kText = 2;
  static unsigned need_of(const std::vector<std::string>& terms) {
    return header_prefix(prefix_of(terms[0])) ? kHeaders : kText;
  }
  unsigned needs(Xapian::docid id) const {
    unsigned need = 0;
    for (const DeferredPhrase& p : deferred_)
      if (p.applies_to(id)) need |= need_of(p.terms);
    return need ? need : kHeaders;
  }

  // Loads the messages not read yet on one thread a core (with a source that allows it), into the
  // cache load() reads. Each message is read and parsed on its own (0.1-1.5 ms): this is what a
  // phrase over a rare word costs beyond the index.
  void read_side_by_side(const std::vector<std::pair<Xapian::docid, unsigned>>& all) {
    std::vector<std::pair<Xapian::docid, unsigned>> todo;
    for (const auto& [id, need] : all) {
      auto f = fields_cache_.find(id);
      if (f == fields_cache_.end()) {
        if (!take_kept_texts(id, need)) todo.emplace_back(id, need);
      } else if ((f->second.has & need) != need) {
        todo.emplace_back(id, need | f->second.has);
      }
    }
    const std::size_t threads = std::min<std::size_t>(std::max(1u, std::thread::hardware_concurrency()), todo.size());
    if (threads < 2 || !fields_->concurrent()) return;  // read one by one, as the checks meet them
    std::vector<Loaded> loaded(todo.size());
    std::atomic<std::size_t> next{0};
    auto work = [&] {
      for (std::size_t i; (i = next.fetch_add(1)) < todo.size();) {
        const std::uint64_t archive_id = map_.to_archive(todo[i].first);
        loaded[i] = {fetch(archive_id, todo[i].second), todo[i].second};
      }
    };
    run_side_by_side(static_cast<unsigned>(threads - 1), work);  // fewer, if threads cannot be had
    for (std::size_t i = 0; i < todo.size(); ++i) fields_cache_[todo[i].first] = std::move(loaded[i]);
  }

 public:
  // Could the document hold every deferred phrase, by its pair filter read from `db` (the
  // resolver's own database, or another thread's handle on the same shards)? `unfiltered`: a phrase
  // tests the filter and the document has none. Changes nothing: another thread may ask it.
  struct FilterTest {
    bool pass = true, unfiltered = false;
  };
  FilterTest test_filter_in(Xapian::Database& db, Xapian::docid id) const {
    FilterTest t;
    std::optional<std::string> bits;  // read once, and only when a phrase tests it
    for (const auto& p : deferred_) {
      if (p.keys.empty() || !p.applies_to(id)) continue;
      if (!bits) {
        bits = pair_filter_value(db, id);
        t.unfiltered = bits->empty();
      }
      for (std::uint64_t k : p.keys)
        if (!pair_filter_may_hold(*bits, k)) return {false, t.unfiltered};
    }
    return t;
  }
  // A verdict found on another thread (test_filter_in), kept as passes_filters would have kept it.
  void take_filter_verdict(Xapian::docid id, bool pass, bool unfiltered) {
    if (filter_verdicts_.emplace(id, pass).second && unfiltered) ++unfiltered_;
  }

  // At most how many results the query has, from its deferred phrases (each is required, and a
  // result holding one holds each of its words): the fewest documents any of their words is in. No
  // deferred phrase: no bound. Only the walk's first chunk is sized by it.
  Xapian::doccount deferred_at_most() const {
    Xapian::doccount most = std::numeric_limits<Xapian::doccount>::max();
    for (const DeferredPhrase& p : deferred_)
      for (const std::string& t : p.terms) most = std::min(most, db_.get_termfreq(t));
    return most;
  }

  // How many of the documents the walk met passed their filters (holds_deferred).
  std::size_t passed_filters() const { return passed_filters_; }
  // Does any deferred phrase test filters (passes_filters can say no)?
  bool filters_anything() const {
    return std::any_of(deferred_.begin(), deferred_.end(), [](const DeferredPhrase& p) { return !p.keys.empty(); });
  }
  // Do the filters alone say which candidates hold every deferred phrase, but for their false
  // positives (about 0.8% a pair: FORMAT.md "Pair filter")? Yes when each is two words whose one pair
  // every candidate's filter was built with: a filter holds a pair exactly when its two words are
  // adjacent in one of the texts the phrase check reads. Longer phrases can have every pair apart.
  bool filters_decide() const {
    return !estimate_by_sample() && !deferred_.empty() &&
           std::all_of(deferred_.begin(), deferred_.end(),
                       [](const DeferredPhrase& p) { return p.terms.size() == 2 && p.keys.size() == 1; });
  }

  // Does the message hold every deferred phrase that applies to it (its filter first, then read from
  // the archive)?
  bool holds_deferred(Xapian::docid id) {
    if (std::none_of(deferred_.begin(), deferred_.end(), [&](const DeferredPhrase& p) { return p.applies_to(id); })) {
      ++passed_filters_;
      return true;
    }
    if (!passes_filters(id)) return false;
    ++passed_filters_;
    const std::optional<IndexFields>& f = load(id, needs(id));
    if (!f) return false;
    for (const auto& p : deferred_)
      if (p.applies_to(id) && !fields_have_phrase(*f, p.terms)) return false;
    return true;
  }

 private:
  // Some of a phrase's candidates, and the pair filter keys each must hold (none: not filtered, and
  // then `narrowed` says whether pair terms narrowed them).
  struct Part {
    Xapian::Query query;
    std::vector<std::uint64_t> keys;
    bool narrowed = false;
  };

  Xapian::Query resolve(const Xapian::Query& q, bool required) {
    auto op = q.get_type();
    std::size_t n = q.get_num_subqueries();
    if (op == Xapian::Query::OP_PHRASE || op == Xapian::Query::OP_NEAR) return resolve_phrase(q, required);
    if (n == 0 || !contains_phrase(q)) return q;
    std::vector<Xapian::Query> subs;
    for (std::size_t i = 0; i < n; ++i) {
      // Every result holds every subquery of AND and FILTER, the left one of AND NOT, and what a
      // weight-only wrapper holds (the query parser wraps boolean fields, from:"kenneth lay", in
      // OP_SCALE_WEIGHT).
      const bool sub_required = required && (op == Xapian::Query::OP_AND || op == Xapian::Query::OP_FILTER ||
                                             (op == Xapian::Query::OP_AND_NOT && i == 0) ||
                                             (op == Xapian::Query::OP_SCALE_WEIGHT && n == 1));
      subs.push_back(resolve(q.get_subquery(i), sub_required));
    }
    switch (op) {
      case Xapian::Query::OP_AND:
      case Xapian::Query::OP_OR:
      case Xapian::Query::OP_AND_NOT:
      case Xapian::Query::OP_XOR:
      case Xapian::Query::OP_AND_MAYBE:
      case Xapian::Query::OP_FILTER:
      case Xapian::Query::OP_SYNONYM:
        return Xapian::Query(op, subs.begin(), subs.end());
      default:
        // Weight-only wrappers (OP_SCALE_WEIGHT): weights do not matter for date-sorted results.
        return subs.size() == 1 ? subs[0] : Xapian::Query(Xapian::Query::OP_AND, subs.begin(), subs.end());
    }
  }

  static bool contains_phrase(const Xapian::Query& q) {
    auto op = q.get_type();
    if (op == Xapian::Query::OP_PHRASE || op == Xapian::Query::OP_NEAR) return true;
    for (std::size_t i = 0; i < q.get_num_subqueries(); ++i)
      if (contains_phrase(q.get_subquery(i))) return true;
    return false;
  }

  Xapian::Query resolve_phrase(const Xapian::Query& q, bool required) {
    std::vector<std::string> terms;
    std::vector<Xapian::Query> subs;
    for (std::size_t i = 0; i < q.get_num_subqueries(); ++i) {
      Xapian::Query s = q.get_subquery(i);
      subs.push_back(s);
      if (s.get_type() == Xapian::Query::LEAF_TERM && s.get_terms_begin() != s.get_terms_end()) {
        terms.push_back(*s.get_terms_begin());
      } else {
        terms.clear();  // not a plain term phrase: fall back to all-terms matching
        break;
      }
    }
    Xapian::Query all(Xapian::Query::OP_AND, subs.begin(), subs.end());
    if (terms.empty() || !fields_ || q.get_type() == Xapian::Query::OP_NEAR) return all;
    const std::string prefix = prefix_of(terms[0]);
    const bool one_prefix = std::all_of(terms.begin(), terms.end(), [&](const std::string& t) {
      return prefix_of(t) == prefix && t.size() > prefix.size();
    });
    if (terms.size() < 2 || !one_prefix) return checked({{all, {}, false}}, terms, required);
    // The pair filter's key of each two adjacent words (a document without pair terms has them all).
    std::vector<std::uint64_t> keys;
    for (std::size_t i = 0; i + 1 < terms.size(); ++i)
      keys.push_back(pair_filter_key(prefix, std::string_view(terms[i]).substr(prefix.size()),
                                     std::string_view(terms[i + 1]).substr(prefix.size())));
    if (pairs_) {
      // Pair terms (index.h): the documents built with them hold XP<prefix><a> <b> wherever a and b
      // are adjacent and pair-indexed, and the other pairs in their filter; the documents without
      // them (no Kpairs) hold every pair in their filter.
      const bool every = every_pair_indexed(prefix);
      std::vector<Xapian::Query> pair_terms;
      std::vector<std::uint64_t> uncovered_keys;  // pairs without a pair term: in the filter
      std::vector<bool> covered(terms.size(), false);  // words a pair term already implies
      for (std::size_t i = 0; i + 1 < terms.size(); ++i) {
        const std::string a = terms[i].substr(prefix.size()), b = terms[i + 1].substr(prefix.size());
        if (every || (pairs_->has(a) && pairs_->has(b))) {
          pair_terms.emplace_back(std::string(schema::kPrefixPair) + prefix + a + " " + b);
          covered[i] = covered[i + 1] = true;
        } else {
          uncovered_keys.push_back(keys[i]);
        }
      }
      if (!pair_terms.empty()) {
        const Xapian::Query without_pairs = unpaired(all);
        if (terms.size() == 2) {
          // The pair term is the phrase: exact from the index wherever it was built. The documents
          // without pair terms are those indexed before the words were chosen: a bounded few in an
          // index built with them (many in an index from before pair words, until `mailark
          // reindex`); those their filters leave are checked, at once when few, else as the walk
          // meets them.
          return Xapian::Query(Xapian::Query::OP_OR, pair_terms[0],
                               checked({{without_pairs, keys}}, terms, required, kEagerChecks, /*only=*/true));
        }
        for (std::size_t i = 0; i < terms.size(); ++i)
          if (!covered[i]) pair_terms.push_back(subs[i]);
        Xapian::Query with_pairs(Xapian::Query::OP_AND, pair_terms.begin(), pair_terms.end());
        return checked({{with_pairs, uncovered_keys, true}, {without_pairs, keys}}, terms, required);
      }
      return checked({{all, keys}}, terms, required);  // no pair term: every pair is in every filter
    }
    // No pair words (none yet, or their file was lost): documents built with pair terms hold some pairs
    // as terms only, and which is not known; they are checked unfiltered.
    return checked({{unpaired(all), keys},
                    {Xapian::Query(Xapian::Query::OP_FILTER, all, Xapian::Query(schema::kTermHasPairs)), {}}},
                   terms, required);
  }

  // The documents of `parts` that hold the phrase `terms`: those their pair filters leave, checked
  // against the archive now, or, when there are more than `eager` and every result must hold the
  // phrase, left as candidates with the phrase deferred to the search's walk. With `only`, the walk
  // checks these candidates only (the caller adds the results that need no check).
  Xapian::Query checked(std::vector<Part> parts, const std::vector<std::string>& terms, bool required,
                        Xapian::doccount eager = kEagerChecks, bool only = false) {
    // A part that can match nothing (the documents without pair terms, in an index that has none)
    // costs no count and no walk of its own.
    std::erase_if(parts, [](const Part& p) { return p.query.empty(); });
    if (parts.empty()) return Xapian::Query::MatchNothing;
    std::vector<Xapian::Query> queries;
    for (const Part& p : parts) queries.push_back(p.query);
    const Xapian::Query candidates =
        queries.size() == 1 ? queries[0] : Xapian::Query(Xapian::Query::OP_OR, queries.begin(), queries.end());
    if (remote_) {
      // Remote shards run only Xapian's own query parts (no posting source of ours): a phrase every
      // result holds is checked in the results' order (exact pages; exact totals with exact_total);
      // one under OR or NOT is checked now, below, and its documents travel as their id terms.
      if (count_of(candidates, 1) == 0) return Xapian::Query::MatchNothing;
      if (required) {
        deferred_.push_back({terms, nullptr});
        return candidates;
      }
    }
    if (required && may_defer_ && !only) {
      // Left to the walk, which tests each result's filter for the pairs no document has as a term
      // (uncovered_keys: sound for every part) before reading it, and checks every candidate when
      // they are few (kEagerChecks): no count of the candidates first, which would open every
      // shard's postings once more (IndexReader::search).
      // The parts' keys are nested (a part with pair terms has fewer): the fewest of the parts that
      // have candidates hold for every result.
      DeferredPhrase d{terms, nullptr, {}};
      bool first = true;
      for (const Part& p : parts) {
        if (parts.size() > 1 && count_of(p.query, 1) == 0) continue;
        if (first || p.keys.size() < d.keys.size()) d.keys = p.keys;
        first = false;
        if (p.keys.empty() && !p.narrowed) unnarrowed_ = true;
      }
      if (first) return Xapian::Query::MatchNothing;  // no part has a candidate
      deferred_.push_back(std::move(d));
      return candidates;
    }
    // The pair filters first: what they leave (positives), and the parts without keys as they are.
    auto positives = std::make_shared<std::vector<Xapian::docid>>();
    std::vector<Xapian::Query> unfiltered;
    bool unnarrowed = false;
    for (const Part& p : parts) {
      if (p.keys.empty() && !only) {
        unfiltered.push_back(p.query);
        unnarrowed = unnarrowed || !p.narrowed;
      } else {
        filter(p.query, p.keys, *positives);
      }
    }
    std::sort(positives->begin(), positives->end());
    positives->erase(std::unique(positives->begin(), positives->end()), positives->end());
    Xapian::doccount count = static_cast<Xapian::doccount>(positives->size());
    std::vector<Xapian::Query> narrowed_parts = unfiltered;
    if (!positives->empty()) narrowed_parts.emplace_back((new DocIdSet(positives, shards_))->release());
    if (!unfiltered.empty()) {
      const Xapian::doccount n =
          count_of(Xapian::Query(Xapian::Query::OP_OR, unfiltered.begin(), unfiltered.end()), eager + 1);
      count += n;
      if (n > 0 && unnarrowed) unnarrowed_ = true;
    }
    if (count == 0) return Xapian::Query::MatchNothing;
    const Xapian::Query narrowed = narrowed_parts.size() == 1
                                       ? narrowed_parts[0]
                                       : Xapian::Query(Xapian::Query::OP_OR, narrowed_parts.begin(), narrowed_parts.end());
    if (required && may_defer_ && count > eager) {
      // Only with `only`: the documents without pair terms beside a pair term's answer.
      deferred_.push_back({terms, std::shared_ptr<const std::vector<Xapian::docid>>(positives), {}});
      return narrowed;
    }
    return verified(*positives, unfiltered, terms);
  }

  // The documents of `q` without Kpairs (built before the pair words, or without them), looked for
  // only where they can be (HeadRange) when the query runs here.
  Xapian::Query unpaired(const Xapian::Query& q) const {
    // Every local shard says it has none (the usual index: the documents indexed before the pair
    // words were chosen get them once the words are, IndexWriter::pair_unpaired): nothing to open.
    // Else Xapian would open the phrase's word postings in every shard for each count and walk,
    // only for HeadRange to end them.
    if (!remote_ && shards_->none_lack(&ShardMap::unpaired_to)) return Xapian::Query::MatchNothing;
    const Xapian::Query kpairs(schema::kTermHasPairs);
    if (remote_) return Xapian::Query(Xapian::Query::OP_AND_NOT, q, kpairs);
    const Xapian::Query range((new HeadRange(shards_))->release());
    return Xapian::Query(Xapian::Query::OP_AND_NOT, Xapian::Query(Xapian::Query::OP_FILTER, q, range), kpairs);
  }


  // How many documents match (exact up to `at_least`).
  Xapian::doccount count_of(const Xapian::Query& q, Xapian::doccount at_least) {
    Xapian::Enquire enq(db_);
    enq.set_query(q);
    enq.set_weighting_scheme(Xapian::BoolWeight());
    return enq.get_mset(0, 0, at_least).get_matches_lower_bound();
  }

  // Appends the documents of `q` whose pair filters may hold every key (all of them without keys);
  // a document without a filter (indexed before filters) is kept and counted in unfiltered_.
  void filter(const Xapian::Query& q, const std::vector<std::uint64_t>& keys, std::vector<Xapian::docid>& out) {
    Xapian::Enquire enq(db_);
    enq.set_query(q);
    enq.set_weighting_scheme(Xapian::BoolWeight());
    enq.set_docid_order(Xapian::Enquire::ASCENDING);
    Xapian::MSet mset = enq.get_mset(0, db_.get_doccount());
    // No keys, or remote shards (which send no values on their own, and no document of a shard
    // without a termlist: docs/SCALE.md): every candidate is checked.
    if (keys.empty() || remote_) {
      for (auto it = mset.begin(); it != mset.end(); ++it) out.push_back(*it);
      return;
    }
    auto holds_keys = [&](const std::string& bits) {
      return std::all_of(keys.begin(), keys.end(), [&](std::uint64_t k) { return pair_filter_may_hold(bits, k); });
    };
    // The values are read in document order, one pass of the slot's stream.
    Xapian::ValueIterator value = db_.valuestream_begin(schema::kSlotPairFilter);
    const Xapian::ValueIterator end = db_.valuestream_end(schema::kSlotPairFilter);
    for (auto it = mset.begin(); it != mset.end(); ++it) {
      const Xapian::docid d = *it;
      if (value != end && value.get_docid() < d) value.skip_to(d);
      if (value == end || value.get_docid() != d) {
        ++unfiltered_;
        out.push_back(d);
        continue;
      }
      if (holds_keys(*value)) out.push_back(d);
    }
  }

  // The documents that hold the phrase `terms`, each read from the archive and checked: the positives
  // the filters left, and the documents of the unfiltered parts.
  Xapian::Query verified(const std::vector<Xapian::docid>& positives, const std::vector<Xapian::Query>& unfiltered,
                         const std::vector<std::string>& terms) {
    std::vector<Xapian::docid> candidates = positives;
    if (!unfiltered.empty()) {
      Xapian::Enquire enq(db_);
      enq.set_query(Xapian::Query(Xapian::Query::OP_OR, unfiltered.begin(), unfiltered.end()));
      enq.set_weighting_scheme(Xapian::BoolWeight());
      enq.set_docid_order(Xapian::Enquire::ASCENDING);
      Xapian::MSet mset = enq.get_mset(0, db_.get_doccount());
      for (auto it = mset.begin(); it != mset.end(); ++it) candidates.push_back(*it);
    }
    std::vector<Xapian::docid> verified;
    const unsigned need = need_of(terms);
    std::vector<std::pair<Xapian::docid, unsigned>> reads;
    for (Xapian::docid d : candidates) reads.emplace_back(d, need);
    read_side_by_side(reads);
    for (Xapian::docid d : candidates) {
      const std::optional<IndexFields>& f = load(d, need);
      if (f && fields_have_phrase(*f, terms)) verified.push_back(d);
    }
    std::sort(verified.begin(), verified.end());
    verified.erase(std::unique(verified.begin(), verified.end()), verified.end());
    if (remote_) return by_id_terms(verified);
    auto ids = std::make_shared<const std::vector<Xapian::docid>>(std::move(verified));
    // Handed over with release(): Xapian owns the source (without it every phrase query leaked it;
    // found by fuzz/query_fuzz.cc, regression: fuzz/regressions/query/).
    return Xapian::Query((new DocIdSet(std::move(ids), shards_))->release());
  }

  // The documents `ids` as a query any shard runs, remote ones too: the OR of their id terms. A
  // document indexed before id terms has none, and the query would leave it out: that is an error
  // (found by counting what the query matches), never a shorter answer.
  Xapian::Query by_id_terms(const std::vector<Xapian::docid>& ids) {
    if (ids.empty()) return Xapian::Query::MatchNothing;
    std::vector<Xapian::Query> terms;
    terms.reserve(ids.size());
    for (Xapian::docid d : ids) terms.emplace_back(id_term(map_.to_archive(d)));
    Xapian::Query q(Xapian::Query::OP_OR, terms.begin(), terms.end());
    if (count_of(q, static_cast<Xapian::doccount>(ids.size()) + 1) != ids.size() && error_.empty()) {
      error_ = "a phrase under OR or NOT cannot be checked over remote segments indexed before documents had "
               "id terms: run `mailark reindex`, then serve the new shards";
      error_hint_ = "otherwise, make the phrase required (AND), or bring the segments back (`mailark segments local`)";
    }
    return q;
  }

  // The fields `need` names (kHeaders, kText or both) of a message, from the source.
  std::optional<IndexFields> fetch(std::uint64_t archive_id, unsigned need) {
    if (need == kHeaders) return fields_->load_headers(archive_id);
    if (need == kText) return fields_->load_text(archive_id);
    return fields_->load(archive_id);
  }

  // The texts kept in the document (schema::kSlotTexts) stand for a read of the message when a check
  // needs its texts alone: into the cache, and true, when the document has them. Read on the calling
  // thread (a Xapian database is not shared between threads). A remote shard's document cannot be
  // fetched (DocMap::remote): its checks read the archive.
  bool take_kept_texts(Xapian::docid id, unsigned need) {
    if (need != kText || map_.remote(id)) return false;
    const std::string value = db_.get_document(id, Xapian::DOC_ASSUME_VALID).get_value(schema::kSlotTexts);
    if (value.empty()) return false;
    std::optional<IndexFields> texts = decode_kept_texts(value);
    if (!texts) return false;  // damaged or of another version: the archive holds the truth
    fields_cache_[id] = Loaded{std::move(texts), kText};
    return true;
  }

  // A message's fields, read once (a second read only when a check needs fields the first left out).
  const std::optional<IndexFields>& load(Xapian::docid id, unsigned need) {
    auto f = fields_cache_.find(id);
    if (f != fields_cache_.end() && (f->second.has & need) == need) return f->second.fields;
    if (f == fields_cache_.end() && take_kept_texts(id, need)) return fields_cache_[id].fields;
    if (f != fields_cache_.end()) need |= f->second.has;
    const std::uint64_t archive_id = map_.to_archive(id);
    Loaded l{fetch(archive_id, need), need};
    if (f == fields_cache_.end()) f = fields_cache_.emplace(id, std::move(l)).first;
    else f->second = std::move(l);
    return f->second.fields;
  }

  Xapian::Database& db_;
  const DocMap& map_;
  FieldSource* fields_;
  std::shared_ptr<const ShardMap> shards_;
  const PairWords* pairs_;
  bool may_defer_;
  bool remote_;
  std::string error_, error_hint_;
  std::vector<DeferredPhrase> deferred_;
  Xapian::doccount unfiltered_ = 0;  // candidates without a pair filter (filter())
  bool unnarrowed_ = false;          // candidates neither filtered nor narrowed by pair terms
  std::size_t passed_filters_ = 0;   // walked results that passed their filters
  struct Loaded {
    std::optional<IndexFields> fields;
    unsigned has = 0;  // kHeaders, kText or both
  };
  std::unordered_map<Xapian::docid, Loaded> fields_cache_;
  std::unordered_map<Xapian::docid, bool> filter_verdicts_;  // passes_filters, once a document
};

// NEAR and ADJ are words in mailark's syntax, never operators: the index has no positions, and
// Xapian 1.4's parser leaks a term (96 bytes a query) when a syntax error unwinds past one of them
// (found by fuzz/query_fuzz.cc; regression fuzz/regressions/query/leak-near-operator; test
// IndexNear.NearAndAdjAreWords). Xapian reads one as an operator when it is a whole word of the
// letters near or adj in any case, whatever surrounds it, and skips zero-width characters inside it.
// Each such word outside any quotes and field value becomes a one-word phrase ("near"), which Xapian
// reads as the term. When one stands where that cannot be done safely (the query has quotes, or the
// word is in a field's value), the query is parsed without boolean operators instead: the word is
// then a word, and AND (the default) still holds, with +word and -word.
struct Neutralised {
  std::string query;
  bool without_operators = false;
};

Neutralised neutralise_proximity_operators(const std::string& q) {
  auto word_byte = [](unsigned char c) { return std::isalnum(c) || c == '_'; };
  // Xapian ignores these inside a word: U+200B..U+200D, U+2060, U+FEFF (UTF-8).
  auto ignorable_at = [&](std::size_t i) -> std::size_t {
    auto at = [&](std::size_t k) { return k < q.size() ? static_cast<unsigned char>(q[k]) : 0u; };
    if (at(i) == 0xE2 && at(i + 1) == 0x80 && at(i + 2) >= 0x8B && at(i + 2) <= 0x8D) return 3;
    if (at(i) == 0xE2 && at(i + 1) == 0x81 && at(i + 2) == 0xA0) return 3;
    if (at(i) == 0xEF && at(i + 1) == 0xBB && at(i + 2) == 0xBF) return 3;
    return 0;
  };
  // The end of the word `letters` (any case, ignorables allowed inside) starting at i, or npos.
  auto match = [&](std::size_t i, std::string_view letters) -> std::size_t {
    for (std::size_t n = 0; n < letters.size(); ++n) {
      while (n > 0 && ignorable_at(i)) i += ignorable_at(i);
      if (i >= q.size() || std::tolower(static_cast<unsigned char>(q[i])) != letters[n]) return std::string::npos;
      ++i;
    }
    if (i < q.size() && word_byte(static_cast<unsigned char>(q[i]))) return std::string::npos;
    return i;
  };
  const bool has_quotes = q.find('"') != std::string::npos || q.find("\xE2\x80\x9C") != std::string::npos ||
                          q.find("\xE2\x80\x9D") != std::string::npos;
  Neutralised out;
  std::size_t token_start = 0;  // where the current whitespace-delimited token began
  for (std::size_t i = 0; i < q.size();) {
    const unsigned char c = static_cast<unsigned char>(q[i]);
    if (std::isspace(c)) token_start = i + 1;
    const bool boundary = i == 0 || !word_byte(static_cast<unsigned char>(q[i - 1]));
    std::size_t end = std::string::npos;
    std::string_view word;
    if (boundary) {
      if ((end = match(i, "near")) != std::string::npos) word = "near";
      else if ((end = match(i, "adj")) != std::string::npos) word = "adj";
    }
    if (end == std::string::npos) {
      out.query += q[i++];
      continue;
    }
    const bool in_field_value = q.find(':', token_start) < i;
    if (has_quotes || in_field_value) {
      out.without_operators = true;
      out.query = q;
      return out;
    }
    out.query += '"';
    out.query += word;
    out.query += '"';
    // NEAR/3's distance means nothing without positions.
    if (end + 1 < q.size() && q[end] == '/' && std::isdigit(static_cast<unsigned char>(q[end + 1]))) {
      for (++end; end < q.size() && std::isdigit(static_cast<unsigned char>(q[end]));) ++end;
    }
    i = end;
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<IndexReader>> IndexReader::open(const std::string& dir) {
  // A merge of a small tier (IndexWriter::set_small_tier) switches the stub and then removes the
  // directories it named: a reader that read the stub just before finds them gone, and reads the stub
  // again; so does one that read a shard's metadata while the writer committed twice (Xapian's
  // DatabaseModifiedError). Three tries. Test: IndexSmallTier.ReadersOpenedDuringMergesAlwaysOpen.
  for (int attempt = 1;; ++attempt) {
    bool vanished = false;
    auto r = open_once(dir, attempt < 3 ? &vanished : nullptr);
    if (!vanished) return r;
  }
}

Result<std::unique_ptr<IndexReader>> IndexReader::open_once(const std::string& dir, bool* vanished) {
  std::unique_ptr<IndexReader> r(new IndexReader());
  r->dir_ = dir;
  auto map = std::make_shared<DocMap>();
  try {
    // Every segment's shards, each in its stub's order, as one database (DocMap translates ids).
    r->db_ = std::make_unique<Xapian::Database>();
    const auto layout = index_layout(dir);
    std::vector<std::vector<Xapian::Database>> opened;  // each shard opened once, for both uses
    for (const auto& seg : layout) {
      opened.emplace_back();
      for (const auto& path : seg.paths) opened.back().push_back(open_shard_db(path));
      for (const auto& path : seg.fresh)
        if (!path.empty()) opened.back().push_back(open_shard_db(path));  // fresh_slot's order
    }
    MAILARK_ASSIGN_OR_RETURN(r->watermark_, layout_watermark(layout, &opened));
    for (std::size_t k = 0; k < layout.size(); ++k) {
      const SegmentLayout& seg = layout[k];
      map->seg_first.push_back(seg.first);
      map->seg_sub.push_back(static_cast<unsigned>(map->subs.size()));
      map->seg_stride.push_back(static_cast<unsigned>(seg.paths.size()));
      for (std::size_t j = 0; j < seg.paths.size(); ++j) {
        const Xapian::Database& shard = opened[k][j];
        r->remote_ = r->remote_ || is_remote(seg.paths[j]);
        r->shard_uuids_.push_back(shard.get_uuid());
        r->unpaired_to_.push_back(is_remote(seg.paths[j]) ? std::nullopt
                                                           : read_docid_meta(shard, schema::kMetaUnpairedTo));
        r->undated_to_.push_back(is_remote(seg.paths[j]) ? std::nullopt
                                                         : read_docid_meta(shard, schema::kMetaUndatedTo));
        if (!is_remote(seg.paths[j])) {
          // Absent, or an older reading (a shard no writer of this release opened yet): every
          // document it holds.
          r->unrepaired_ += older_reading_documents(shard);
        }
        map->subs.push_back({seg.first, static_cast<unsigned>(seg.paths.size()), static_cast<unsigned>(j),
                             is_remote(seg.paths[j])});
        r->db_->add_database(shard);
        r->paths_.push_back(seg.paths[j]);
      }
      // The shards' small tiers: sub-databases of their own, whose document t is their shard's
      // document F - 1 + t (F: kMetaFreshFrom): the shard's stride and phase, from its F-th id on.
      map->seg_fresh.emplace_back(seg.paths.size(), std::pair<unsigned, Xapian::docid>{DocMap::kNoFresh, 0});
      for (std::size_t j = 0; j < seg.paths.size(); ++j) {
        if (seg.fresh[j].empty()) continue;
        const Xapian::Database& fresh = opened[k][fresh_slot(seg, j)];
        const auto from = read_docid_meta(fresh, schema::kMetaFreshFrom);
        if (!from || *from == 0) {
          return make_error(ErrorCode::kCorrupt, "the index's small tier " + seg.fresh[j] + " does not say where it begins",
                            "run `mailark reindex`");
        }
        map->seg_fresh.back()[j] = {static_cast<unsigned>(map->subs.size()), *from};
        r->shard_uuids_.push_back(fresh.get_uuid());
        r->unpaired_to_.push_back(read_docid_meta(fresh, schema::kMetaUnpairedTo));
        r->undated_to_.push_back(read_docid_meta(fresh, schema::kMetaUndatedTo));
        r->unrepaired_ += older_reading_documents(fresh);
        // Its document t is the shard's document from - 1 + t.
        const std::uint64_t n = seg.paths.size();
        map->subs.push_back({seg.first + (*from - 1) * n, static_cast<unsigned>(n), static_cast<unsigned>(j), false});
        r->db_->add_database(fresh);
        r->paths_.push_back(seg.fresh[j]);
      }
    }
  } catch (const Xapian::DatabaseOpeningError& e) {
    if (vanished) *vanished = true;
    return xapian_error(e, "opening the index in " + dir);
  } catch (const Xapian::DatabaseModifiedError& e) {
    if (vanished) *vanished = true;  // the writer committed twice while this read: read it again
    return xapian_error(e, "opening the index in " + dir);
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "opening the index in " + dir);
  }
  try {
    r->expired_ = r->db_->get_termfreq(schema::kTermExpired);
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "opening the index in " + dir);
  }
  r->map_ = std::move(map);
  MAILARK_ASSIGN_OR_RETURN(r->pairs_, read_pair_words(dir));
  return r;
}

IndexReader::~IndexReader() = default;

Xapian::Database IndexReader::reopen() const {
  Xapian::Database db;
  for (const auto& path : paths_) db.add_database(open_shard_db(path));
  return db;
}

template <typename Read>
auto IndexReader::retrying(Read read) -> decltype(read()) {
  for (int run = 1;; ++run) {
    try {
      return read();
    } catch (const Xapian::DatabaseModifiedError&) {
      if (run == 3) throw;
      auto fresh = open(dir_);
      if (!fresh) throw;
      *this = std::move(**fresh);
    }
  }
}

Result<std::pair<std::uint64_t, std::vector<std::pair<std::uint64_t, std::string>>>> IndexReader::unindexed(
    std::size_t limit) {
  try {
    return retrying([&] {
      const std::string term = std::string(schema::kPrefixFlag) + "unindexed";
      std::vector<std::pair<std::uint64_t, std::string>> list;
      std::uint64_t total = db_->get_termfreq(term);
      for (auto it = db_->postlist_begin(term); it != db_->postlist_end(term) && list.size() < limit; ++it) {
        if (map_->remote(*it)) {
          list.emplace_back(map_->to_archive(*it), "(in a remote segment)");
          continue;
        }
        auto j = nlohmann::json::parse(db_->get_document(*it).get_data(), nullptr, false);
        list.emplace_back(map_->to_archive(*it), j.is_discarded() ? std::string() : j.value("u", ""));
      }
      return std::make_pair(total, std::move(list));
    });
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "listing unindexed records");
  }
}

Result<std::vector<std::uint64_t>> IndexReader::match_words(TextField field, const std::string& text) {
  namespace sc = schema;
  std::vector<std::string> prefixes;
  std::vector<std::string> exact;  // address terms
  switch (field) {
    case TextField::kBody: prefixes = {""}; break;
    case TextField::kText:
      prefixes = {"", sc::kPrefixFrom, sc::kPrefixTo, sc::kPrefixCc, sc::kPrefixSubject};
      exact = {sc::kPrefixFromAddr, sc::kPrefixToAddr, sc::kPrefixCcAddr};
      break;
    case TextField::kSubject: prefixes = {sc::kPrefixSubject}; break;
    case TextField::kFrom: prefixes = {sc::kPrefixFrom}; exact = {sc::kPrefixFromAddr}; break;
    case TextField::kTo: prefixes = {sc::kPrefixTo}; exact = {sc::kPrefixToAddr}; break;
    case TextField::kCc: prefixes = {sc::kPrefixCc}; exact = {sc::kPrefixCcAddr}; break;
    case TextField::kBcc: prefixes = {sc::kPrefixBcc}; exact = {sc::kPrefixBccAddr}; break;
  }
  try {
    // The words as the index cut them (same TermGenerator settings).
    Xapian::Document words_doc;
    Xapian::TermGenerator tg;
    tg.set_document(words_doc);
    tg.set_stemming_strategy(Xapian::TermGenerator::STEM_NONE);
    tg.set_max_word_length(64);
    std::string scratch;
    const std::string cut = text.substr(0, 4096);
    tg.index_text_without_positions(words_form(cut, scratch));
    std::vector<Xapian::Query> per_word;
    for (auto t = words_doc.termlist_begin(); t != words_doc.termlist_end() && per_word.size() < 32; ++t) {
      std::vector<Xapian::Query> alternatives;
      for (const auto& p : prefixes)
        alternatives.emplace_back(Xapian::Query::OP_WILDCARD, p + *t, 200, Xapian::Query::WILDCARD_LIMIT_MOST_FREQUENT);
      per_word.emplace_back(Xapian::Query::OP_OR, alternatives.begin(), alternatives.end());
    }
    Xapian::Query q = per_word.empty() ? Xapian::Query::MatchAll
                                       : Xapian::Query(Xapian::Query::OP_AND, per_word.begin(), per_word.end());
    if (expired_) q = Xapian::Query(Xapian::Query::OP_AND_NOT, q, Xapian::Query(schema::kTermExpired));
    std::string lowered = address_key(text.substr(0, 4096));
    while (!lowered.empty() && lowered.back() == ' ') lowered.pop_back();
    if (!exact.empty() && !lowered.empty() && lowered.size() < 200 && lowered.find(' ') == std::string::npos &&
        (lowered.find('@') != std::string::npos || lowered.find('.') != std::string::npos)) {
      std::vector<Xapian::Query> ex;
      for (const auto& p : exact) ex.emplace_back(p + lowered);
      ex.push_back(q);
      q = Xapian::Query(Xapian::Query::OP_OR, ex.begin(), ex.end());
    }
    return retrying([&] {
      Xapian::Enquire enq(*db_);
      enq.set_query(q);
      enq.set_weighting_scheme(Xapian::BoolWeight());
      enq.set_docid_order(Xapian::Enquire::ASCENDING);
      Xapian::MSet mset = enq.get_mset(0, db_->get_doccount());
      std::vector<std::uint64_t> out;
      out.reserve(mset.size());
      for (auto it = mset.begin(); it != mset.end(); ++it) out.push_back(map_->to_archive(*it));
      std::sort(out.begin(), out.end());  // segments interleave in Xapian's order
      return out;
    });
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "searching");
  }
}

namespace {
// Which of these documents (ascending) carry a term: one walk of the term's posting list (the shards
// keep no term lists).
std::vector<bool> have_term(const Xapian::Database& db, const std::vector<std::uint64_t>& ascending, const std::string& term) {
  std::vector<bool> out(ascending.size(), false);
  Xapian::PostingIterator p = db.postlist_begin(term), end = db.postlist_end(term);
  for (std::size_t i = 0; i < ascending.size() && p != end; ++i) {
    p.skip_to(static_cast<Xapian::docid>(ascending[i]));
    if (p != end && *p == ascending[i]) out[i] = true;
  }
  return out;
}

void mark_attachments(const Xapian::Database& db, const DocMap& map, std::vector<Summary*> items) {
  std::sort(items.begin(), items.end(),
            [&](const Summary* a, const Summary* b) { return map.to_xapian(a->id) < map.to_xapian(b->id); });
  std::vector<std::uint64_t> ids;
  for (const auto* s : items) ids.push_back(map.to_xapian(s->id));
  auto has = have_term(db, ids, std::string(schema::kPrefixFlag) + "attachment");
  for (std::size_t i = 0; i < items.size(); ++i) items[i]->attachment = has[i];
}
}  // namespace

std::vector<std::optional<Summary>> IndexReader::summaries(const std::vector<std::uint64_t>& ids) {
  try {
    return retrying([&] {
      std::vector<std::optional<Summary>> out;
      out.reserve(ids.size());
      for (std::uint64_t id : ids) {
        try {
          const Xapian::docid d = map_->to_xapian(id);
          if (d == 0 || d > db_->get_lastdocid() || map_->remote(d)) {  // remote: the caller reads the archive
            out.emplace_back();
            continue;
          }
          Xapian::Document doc = db_->get_document(d);
          const std::string data = doc.get_data();
          if (data.empty()) {  // a placeholder of an expired record (build_expired_document)
            out.emplace_back();
            continue;
          }
          Summary s = decode_summary(data);
          s.id = id;
          out.emplace_back(std::move(s));
        } catch (const Xapian::DocNotFoundError&) {
          out.emplace_back();  // not there (yet)
        }
      }
      std::vector<Summary*> found;
      for (auto& s : out)
        if (s) found.push_back(&*s);
      mark_attachments(*db_, *map_, found);
      return out;
    });
  } catch (const Xapian::Error&) {
    return std::vector<std::optional<Summary>>(ids.size());  // the index cannot be read: the archive can
  }
}

std::uint64_t IndexReader::documents() const {
  try {
    return db_->get_doccount() - expired_;
  } catch (const Xapian::Error&) {
    return 0;
  }
}

Result<std::vector<std::string>> IndexReader::message_ids(const std::vector<std::uint64_t>& ids) {
  try {
    return retrying([&] {
      std::vector<std::string> out(ids.size());
      for (std::size_t i = 0; i < ids.size(); ++i) {
        try {
          const Xapian::docid d = map_->to_xapian(ids[i]);
          if (d != 0 && d <= db_->get_lastdocid()) out[i] = decode_summary(db_->get_document(d).get_data()).message_id;
        } catch (const Xapian::DocNotFoundError&) {
          // not there (yet): no Message-ID
        }
      }
      return out;
    });
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "reading Message-IDs");
  }
}

namespace {
// A walk through a deferred phrase's results that checked at least this many estimates its total from
// their share (candidates narrowed by pair filters); a shorter one (a page of a few, a count alone)
// checks a sample spread over all.
constexpr std::size_t kWalkEstimateChecks = 20;
// Candidates whose pair filters are tested (no archive read) to estimate how many would pass.
constexpr std::size_t kFilterEstimateSample = 256;
// A deferred walk's second chunk takes every remaining candidate when there are at most this many
// (see the walk in IndexReader::search).
constexpr std::size_t kWalkAtOnce = 16384;
}  // namespace

namespace {
// n candidates of `every` (ascending), one from each of n equal stretches at a pseudo-random place
// inside it: a fixed stride would alias with any periodic pattern in archive order.
std::vector<Xapian::docid> spread_picks(const std::vector<Xapian::docid>& every, std::size_t n) {
  std::vector<Xapian::docid> picks;
  picks.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t begin = (k * every.size()) / n, end = ((k + 1) * every.size()) / n;
    const std::uint64_t mix = mix64((k + 1) * 0x9E3779B97F4A7C15ULL);
    picks.push_back(every[begin + (end > begin ? mix % (end - begin) : 0)]);
  }
  return picks;
}

// The pair filters of an estimate's sample (spread_picks), read on a second thread with a database of
// its own (a Xapian database is not shared between threads) while the search's walk reads its page,
// with a FieldSource that allows threads (FieldSource::concurrent). A filter is a value read (a B-tree
// descent and a block copy: the 256 of "power crisis"'s sample took 2.2 ms at 306,642 messages) and
// the sample is kFilterEstimateSample of them: about what the walk of a phrase with a word outside
// the pair words costs ("power crisis" tests about 250 filters for its page), so the two take about
// equal time side by side (docs/BENCHMARKS.md "Phrase walks: one match"). When the estimate
// needs the sample, the calling thread tests the picks the thread has not taken, and the thread's
// verdicts are handed to the resolver (take_filter_verdict); when the walk reached the end, the
// thread is stopped. Same verdicts, same total: test
// IndexDeferredPhrase.EstimateSampledOnASecondThreadIsTheSame; with no thread to be had the estimate
// tests them all itself: IndexDeferredPhrase.ThreadsThatCannotBeStartedChangeNothing. (The thread
// also testing the walk's next candidates ahead of it was tried: no faster, docs/BENCHMARKS.md.)
class FilterSampler {
 public:
  FilterSampler(std::function<Xapian::Database()> open, std::vector<Xapian::docid> picks, PhraseResolver& resolver)
      : resolver_(resolver), picks_(std::move(picks)), pass_(picks_.size()), unfiltered_(picks_.size()),
        done_(picks_.size()) {
    thread_ = start_thread([this, open = std::move(open)] { run(open); });  // may throw std::system_error
  }
  ~FilterSampler() { stop(); }
  FilterSampler(const FilterSampler&) = delete;
  FilterSampler& operator=(const FilterSampler&) = delete;

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  // Tests the picks the thread has not taken on the calling thread (the resolver's own database),
  // waits for the thread, then hands the verdicts it found to the resolver: these picks' filters are
  // then all known to it.
  void hand_to(const std::vector<Xapian::docid>& picks) {
    if (picks != picks_) {
      stop();
      return;
    }
    for (std::size_t i; (i = next_.fetch_add(1)) < picks_.size();) resolver_.passes_filters(picks_[i]);
    if (thread_.joinable()) thread_.join();
    for (std::size_t i = 0; i < picks_.size(); ++i)
      if (done_[i]) resolver_.take_filter_verdict(picks_[i], pass_[i] != 0, unfiltered_[i] != 0);
  }

 private:
  void run(const std::function<Xapian::Database()>& open) {
    try {
      Xapian::Database db = open();
      for (std::size_t i; !stop_.load(std::memory_order_relaxed) && (i = next_.fetch_add(1)) < picks_.size();) {
        const auto t = resolver_.test_filter_in(db, picks_[i]);  // reads only deferred_, fixed by now
        pass_[i] = t.pass;
        unfiltered_[i] = t.unfiltered;
        done_[i] = 1;
      }
    } catch (...) {
      // the picks the thread did not finish are tested by the resolver when the estimate asks
    }
  }

  PhraseResolver& resolver_;  // the thread calls only its const test_filter_in
  std::vector<Xapian::docid> picks_;
  std::vector<char> pass_, unfiltered_, done_;  // each pick's, written by the thread, read after join
  std::atomic<std::size_t> next_{0};            // the next pick not taken by either thread
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Calls `leaf(node)` for each node of `q` that `stop_at(node)` picks, without descending into it, and
// walks through the others (an explicit stack: a query typed on the command line nests deep).
template <typename StopAt, typename Leaf>
void walk_query(const Xapian::Query& q, StopAt stop_at, Leaf leaf) {
  std::vector<Xapian::Query> todo{q};
  while (!todo.empty()) {
    Xapian::Query node = std::move(todo.back());
    todo.pop_back();
    if (stop_at(node)) {
      if (!leaf(node)) return;
      continue;
    }
    for (std::size_t i = 0; i < node.get_num_subqueries(); ++i) todo.push_back(node.get_subquery(i));
  }
}

// The words of the phrases of `q`, all of them together, and how many phrases (kMaxPhraseWords bounds
// them before any is checked: seven phrases of "the" x64 OR'ed, 1,823 characters, took 1.39 s).
std::size_t phrase_words(const Xapian::Query& q, std::size_t* phrases) {
  std::size_t words = 0;
  *phrases = 0;
  walk_query(
      q, [](const Xapian::Query& n) { return n.get_type() == Xapian::Query::OP_PHRASE || n.get_type() == Xapian::Query::OP_NEAR; },
      [&](const Xapian::Query& n) {
        words += n.get_num_subqueries();
        ++*phrases;
        return true;
      });
  return words;
}

// How many words the wildcards of `q` stand for in `db`, counted up to `cap` in all (then `cap`):
// Xapian bounds each wildcard alone (kMaxWildcardWords), so two hundred wildcards of a few hundred
// words each were an OR of 50,000 words (8.7 s at 21,903 messages: docs/BENCHMARKS.md "The bounds of
// one query"). Xapian 1.4 has no accessor for a wildcard's pattern: it is read from the leaf's
// description ("Query(WILDCARD SYNONYM con)"); a leaf it cannot read counts as `cap`.
std::size_t wildcard_words(const Xapian::Database& db, const Xapian::Query& q, std::size_t cap) {
  std::size_t words = 0;
  walk_query(
      q, [](const Xapian::Query& n) { return n.get_type() == Xapian::Query::OP_WILDCARD; },
      [&](const Xapian::Query& n) {
        const std::string d = n.get_description();  // Query(WILDCARD <combiner> <pattern>)
        const std::size_t first = d.find(' '), second = first == std::string::npos ? first : d.find(' ', first + 1);
        if (d.rfind("Query(WILDCARD ", 0) != 0 || second == std::string::npos || d.back() != ')') {
          words = cap;
          return false;
        }
        const std::string pattern = d.substr(second + 1, d.size() - second - 2);
        for (auto t = db.allterms_begin(pattern); t != db.allterms_end(pattern) && words < cap; ++t) ++words;
        return words < cap;
      });
  return std::min(words, cap);
}

// Whether a query names something that differs between the records of one message (index.h
// SearchOptions::one_per_message): their custodians, envelopes, verdicts or flags.
bool names_record_fields(const std::string& query) {
  const std::string q = ascii_lower(query);
  for (const char* field : {"custodian:", "rcpt:", "direction:", "verdict:", "signature:", "is:"})
    if (q.find(field) != std::string::npos) return true;
  return false;
}
}  // namespace

namespace {

// Past this many possible matches a newest-first page looks at the newest months first.
constexpr Xapian::doccount kSortAllUpTo = 20000;

// Xapian's bounds on how many documents match q, and its estimate, without a match run (from the
// terms' statistics).
struct MatchBounds {
  Xapian::doccount lo, hi, estimate;
};
MatchBounds match_bounds(const Xapian::Database& db, const Xapian::Query& q) {
  Xapian::Enquire enq(db);
  enq.set_query(q);
  enq.set_weighting_scheme(Xapian::BoolWeight());
  const Xapian::MSet m = enq.get_mset(0, 0);
  return {m.get_matches_lower_bound(), m.get_matches_upper_bound(), m.get_matches_estimated()};
}

// How many documents match q, exactly, without sorting them: from Xapian's bounds when they agree;
// A AND NOT B (as the query parser and search() nest it) as count(A) - count(A AND B) when B can
// match at most a quarter of what A can (the AND then walks B's short list, where A AND NOT B walks
// all of A's: "enron NOT california" at a million); else by a match run that counts every match.
// Test: IndexDatesTest.NewestFirstPagesAreTheWholeSort ("common -rare").
Xapian::doccount count_matches(const Xapian::Database& db, const Xapian::Query& q, const MatchBounds& bounds,
                               int depth = 0) {
  if (bounds.lo == bounds.hi) return bounds.hi;
  if (q.get_type() == Xapian::Query::OP_AND_NOT && q.get_num_subqueries() == 2 && depth < 8) {
    const Xapian::Query a = q.get_subquery(0), b = q.get_subquery(1);
    const MatchBounds of_a = match_bounds(db, a);
    if (match_bounds(db, b).hi <= of_a.hi / 4) {
      const Xapian::doccount all = count_matches(db, a, of_a, depth + 1);
      const Xapian::Query both(Xapian::Query::OP_AND, a, b);
      const Xapian::doccount in_both = count_matches(db, both, match_bounds(db, both), depth + 1);
      return all - std::min(all, in_both);
    }
  }
  Xapian::Enquire count(db);
  count.set_query(q);
  count.set_weighting_scheme(Xapian::BoolWeight());
  count.set_docid_order(Xapian::Enquire::ASCENDING);
  return count.get_mset(0, 0, db.get_doccount()).get_matches_estimated();
}

// The page of `enq` (query q, sorted newest first) from the newest months that hold it, and the total
// in `total`; nothing when the months cannot be told apart (then the whole sort). The months are
// taken newest first until they should hold four times the page (by the share of the archive the
// query matches). When they hold fewer than the page, a second round takes as many more months as
// the matches found in the first say the page needs (the query is that much sparser in its newest
// months than in the archive), eight times as many when they held enough but not before the cut; a
// first round that found none (a query whose matches lie in older months: a sender who left, a
// project that ended) goes to the whole sort at once, as does a second round that would take every
// month. A page from the months is the whole sort's page when its last result is in the oldest month
// taken or later: every document left out is older.
std::optional<Xapian::MSet> newest_months_page(const Xapian::Database& db, const Xapian::Query& q,
                                               const SearchOptions& options, DateBuckets& dates,
                                               std::uint64_t& total) {
  const MatchBounds bounds = match_bounds(db, q);
  if (bounds.hi <= kSortAllUpTo) return std::nullopt;
  const std::vector<DateBuckets::Bucket>& months = dates.months();
  const double want = static_cast<double>(options.offset + options.limit);
  const double share = std::max<double>(1, bounds.estimate) / std::max<double>(1, db.get_doccount());
  double expected = 0, target = std::max(4 * want, 64.0);
  std::size_t from = months.size();  // months[from..] are taken
  std::optional<Xapian::MSet> page;
  for (int round = 0; round < 2 && !page; ++round) {
    while (from > 0 && expected < target) expected += share * months[--from].docs;
    if (from == 0) return std::nullopt;  // every month: the whole sort
    std::vector<Xapian::Query> taken;
    for (std::size_t i = from; i < months.size(); ++i) taken.emplace_back(months[i].term);
    if (dates.any_undated()) taken.push_back(dates.undated());
    Xapian::Enquire part(db);
    part.set_query(Xapian::Query(Xapian::Query::OP_FILTER, q,
                                 Xapian::Query(Xapian::Query::OP_OR, taken.begin(), taken.end())));
    part.set_weighting_scheme(Xapian::BoolWeight());
    part.set_sort_by_value(schema::kSlotDate, /*reverse=*/true);
    part.set_docid_order(Xapian::Enquire::DESCENDING);
    Xapian::MSet mset = part.get_mset(static_cast<Xapian::doccount>(options.offset),
                                      static_cast<Xapian::doccount>(options.limit));
    if (mset.size() == options.limit &&
        mset[mset.size() - 1].get_sort_key() >= Xapian::sortable_serialise(months[from].lo)) {
      page = std::move(mset);
      break;
    }
    if (mset.size() == options.limit) {
      target *= 8;  // enough matches, but the page reached past the cut (documents without date terms)
      continue;
    }
    // A page left short: the match went through every document of the months taken, and its lower
    // bound is how many of them match (its estimate is not: a value sort stops counting early).
    const double found = mset.get_matches_lower_bound();
    if (found > 0) {
      target = std::max(expected, 1.0) * 4 * want / found;  // as many months as this density needs for 4x
    } else {
      return std::nullopt;
    }
  }
  if (!page) return std::nullopt;
  total = count_matches(db, q, bounds);
  return page;
}

}  // namespace

Result<SearchResults> IndexReader::search(const std::string& query, SearchOptions options, FieldSource* fields) {
  // Test: IndexReaderRetry.AReaderHeldAcrossTheWritersCommitsStillAnswers.
  try {
    return retrying([&] { return search_once(query, options, fields); });
  } catch (const Xapian::DatabaseModifiedError& e) {
    return xapian_error(e, "searching");
  }
}

Result<SearchResults> IndexReader::search_once(const std::string& query, SearchOptions options, FieldSource* fields) {
  try {
    // Field processors are handed over with release(): Xapian then owns and frees them (without it,
    // every search leaked them; found by fuzz/query_fuzz.cc, regression: fuzz/regressions/query/).
    Xapian::QueryParser qp;
    qp.set_database(*db_);
    qp.set_default_op(Xapian::Query::OP_AND);
    qp.set_stemming_strategy(Xapian::QueryParser::STEM_NONE);
    qp.add_boolean_prefix("from", (new AddressField(schema::kPrefixFrom, schema::kPrefixFromAddr))->release());
    qp.add_boolean_prefix("to", (new AddressField(schema::kPrefixTo, schema::kPrefixToAddr))->release());
    qp.add_boolean_prefix("cc", (new AddressField(schema::kPrefixCc, schema::kPrefixCcAddr))->release());
    qp.add_boolean_prefix("bcc", (new AddressField(schema::kPrefixBcc, schema::kPrefixBccAddr))->release());
    qp.add_boolean_prefix("rcpt", (new AddressField(schema::kPrefixRcpt, schema::kPrefixRcptAddr))->release());
    qp.add_prefix("subject", schema::kPrefixSubject);
    qp.add_prefix("attachment", schema::kPrefixAttachment);
    qp.add_prefix("extracted", schema::kPrefixExtracted);
    qp.add_boolean_prefix("id", (new MessageIdField())->release());
    auto errors = std::make_shared<QueryErrors>();
    auto shards = std::make_shared<ShardMap>();
    shards->count = static_cast<unsigned>(shard_uuids_.size());
    for (unsigned i = 0; i < shard_uuids_.size(); ++i) shards->by_uuid[shard_uuids_[i]] = i;
    shards->unpaired_to = unpaired_to_;
    shards->undated_to = undated_to_;
    // Date terms narrow date ranges here; remote shards (which run no posting source of ours) check
    // every candidate's value, as before date terms.
    auto dates = std::make_shared<DateBuckets>(*db_, shards);
    RangeNarrower narrow;
    if (!remote_)
      narrow = [dates](const Xapian::Query& check, std::optional<double> lo, std::optional<double> hi) {
        return dates->range(check, lo, hi);
      };
    qp.add_boolean_prefix("date", (new DateField(errors, narrow))->release());
    qp.add_boolean_prefix("size", (new SizeField(errors))->release());
    qp.add_boolean_prefix("has", (new LowerBooleanField(schema::kPrefixFlag))->release());
    qp.add_boolean_prefix("is", (new LowerBooleanField(schema::kPrefixFlag))->release());
    qp.add_boolean_prefix("verdict", (new LowerBooleanField(schema::kPrefixVerdict))->release());
    qp.add_boolean_prefix("direction", (new LowerBooleanField(schema::kPrefixDirection))->release());
    qp.add_boolean_prefix("type", (new LowerBooleanField(schema::kPrefixMimeType))->release());
    qp.add_boolean_prefix("signature", (new LowerBooleanField(schema::kPrefixSignature))->release());
    qp.add_boolean_prefix("custodian", (new LowerBooleanField(schema::kPrefixCustodian))->release());
    unsigned flags = Xapian::QueryParser::FLAG_BOOLEAN | Xapian::QueryParser::FLAG_PHRASE |
                     Xapian::QueryParser::FLAG_LOVEHATE | Xapian::QueryParser::FLAG_BOOLEAN_ANY_CASE |
                     Xapian::QueryParser::FLAG_WILDCARD | Xapian::QueryParser::FLAG_PURE_NOT;
    const unsigned all_flags = flags;
    // In the form the index reads texts in (words_form, search_form): "ＰＣ" is "PC", a decomposed
    // "é" one letter, "ß" "ss"; a full-width quote or colon is an operator as its ASCII twin
    const Neutralised safe = neutralise_proximity_operators(cjk_query_phrases(closed_quotes(search_form(query))));
    if (safe.without_operators) {
      flags &= ~(Xapian::QueryParser::FLAG_BOOLEAN | Xapian::QueryParser::FLAG_BOOLEAN_ANY_CASE);
    }
    if (options.bounded) qp.set_max_expansion(kMaxWildcardWords, Xapian::Query::WILDCARD_LIMIT_ERROR);  // thrown by the match
    Xapian::Query parsed = query.find_first_not_of(" \t") == std::string::npos ? Xapian::Query::MatchAll
                                                                               : qp.parse_query(safe.query, flags);
    if (!errors->first.empty()) {
      return make_error(ErrorCode::kInvalidArgument, "query does not parse: " + errors->first,
                        "see `mailark search --help` for the syntax");
    }
    if (const std::size_t terms = options.bounded ? static_cast<std::size_t>(std::distance(
                                                        parsed.get_terms_begin(), parsed.get_terms_end()))
                                                  : 0;
        terms > kMaxQueryTerms) {
      return make_error(ErrorCode::kInvalidArgument,
                        "the query has " + std::to_string(terms) + " words and field terms: at most " +
                            std::to_string(kMaxQueryTerms) + " are searched at once",
                        "search in parts, or narrow it with fields and dates");
    } else if (std::size_t phrases = 0, in_phrases = options.bounded ? phrase_words(parsed, &phrases) : 0;
               in_phrases > kMaxPhraseWords) {
      return make_error(ErrorCode::kInvalidArgument,
                        (phrases == 1 ? "a phrase of " + std::to_string(in_phrases) + " words: at most " +
                                            std::to_string(kMaxPhraseWords) + " are checked"
                                      : "the query's " + std::to_string(phrases) + " phrases have " +
                                            std::to_string(in_phrases) + " words: at most " +
                                            std::to_string(kMaxPhraseWords) + " are checked, in all of them together"),
                        "quote a shorter part of it, or its rarest words");
    } else if (options.bounded) {
      // The words its wildcards stand for count too (each is a word of the OR the match runs).
      if (const std::size_t wild = wildcard_words(*db_, parsed, kMaxQueryTerms + 1 - terms); terms + wild > kMaxQueryTerms)
        return make_error(ErrorCode::kInvalidArgument,
                          "the query's wildcards stand for more than " + std::to_string(kMaxQueryTerms - terms) +
                              " words" +
                              (terms ? " beside its " + std::to_string(terms) + " other words and field terms" : "") +
                              ": at most " + std::to_string(kMaxQueryTerms) + " are searched at once",
                          "give more letters before each *, or use fewer wildcards");
    }
    if (options.scope.find_first_not_of(" \t") != std::string::npos) {
      qp.set_max_expansion(0);  // no bound: the scope is the officer's, not the typed query's
      const Neutralised scope =
          neutralise_proximity_operators(cjk_query_phrases(closed_quotes(search_form(options.scope))));
      const unsigned scope_flags =
          scope.without_operators
              ? all_flags & ~(Xapian::QueryParser::FLAG_BOOLEAN | Xapian::QueryParser::FLAG_BOOLEAN_ANY_CASE)
              : all_flags;
      Xapian::Query within = qp.parse_query(scope.query, scope_flags);
      if (!errors->first.empty())
        return make_error(ErrorCode::kInvalidArgument, "the search's scope does not parse: " + errors->first);
      parsed = Xapian::Query(Xapian::Query::OP_FILTER, parsed, within);
    }
    PhraseResolver resolver(*db_, *map_, fields, shards, pairs_.get(), !options.exact_total, remote_);
    Xapian::Query q = resolver.resolve(parsed);
    if (!resolver.error().empty()) return make_error(ErrorCode::kInvalidArgument, resolver.error(), resolver.error_hint());
    // The continuity monitor's probes are archived but are nobody's mail: a search sees them only
    // when it names a direction (direction:probe).
    const std::string asked = options.scope.empty() ? query : query + " " + options.scope;
    if (ascii_lower(asked).find("direction:") == std::string::npos) {
      q = Xapian::Query(Xapian::Query::OP_AND_NOT, q, Xapian::Query(std::string(schema::kPrefixDirection) + "probe"));
    }
    // Placeholders of expired records hold no words, but a NOT or an empty query would find them.
    if (expired_) q = Xapian::Query(Xapian::Query::OP_AND_NOT, q, Xapian::Query(schema::kTermExpired));

    if (options.parts > 1 && options.part >= options.parts)
      return make_error(ErrorCode::kInvalidArgument, "no part " + std::to_string(options.part) + " of " +
                                                         std::to_string(options.parts));
    if (options.parts > 1 && !remote_) {
      q = Xapian::Query(Xapian::Query::OP_FILTER, q,
                        Xapian::Query((new DocIdPart(options.part, options.parts))->release()));
      // A part holds at most this many documents (each shard's run of ids, rounded up): a page asked
      // as "all of it" stays the size of a part (Xapian sizes its result set by the page).
      const std::size_t n = shard_uuids_.size();
      options.limit = std::min<std::size_t>(options.limit, (db_->get_lastdocid() + n) / options.parts + n + 1);
    } else if (options.parts > 1 && options.part > 0) {
      return SearchResults{0, true, {}, watermark_};  // remote shards: part 0 held every match
    }
    // With remote shards a user's own messages are picked out while walking the results instead.
    const bool filter_ids = options.only_ids && remote_;
    if (options.only_ids && !remote_) {
      auto docids = std::make_shared<std::vector<Xapian::docid>>();
      docids->reserve(options.only_ids->size());
      for (std::uint32_t id : *options.only_ids)
        if (Xapian::docid d = map_->to_xapian(id)) docids->push_back(d);
      std::sort(docids->begin(), docids->end());
      q = Xapian::Query(Xapian::Query::OP_FILTER, q,
                        Xapian::Query((new DocIdSet(std::move(docids), shards))->release()));
    }
    // One hit per message (a user's own search, filtered while walking remote shards, keeps every
    // record: its copy may be the one left out). A query of the message's content alone matches all
    // of its records or none: the earliest stands for them, the others (Kcopy) are left out, which
    // costs a short posting list. A query naming what differs between records (custodian, envelope,
    // verdict, flags) may match some: those collapse on the content key into the newest that matches,
    // which costs a value read per match.
    const bool collapse = options.one_per_message && !filter_ids && names_record_fields(asked);
    if (options.one_per_message && !filter_ids && !collapse)
      q = Xapian::Query(Xapian::Query::OP_AND_NOT, q, Xapian::Query(std::string(schema::kPrefixFlag) + "copy"));
    Xapian::Enquire enq(*db_);
    enq.set_query(q);
    enq.set_weighting_scheme(Xapian::BoolWeight());
    enq.set_sort_by_value(schema::kSlotDate, /*reverse=*/true);
    if (collapse) enq.set_collapse_key(schema::kSlotContent);
    enq.set_docid_order(Xapian::Enquire::DESCENDING);
    SearchResults out;
    out.watermark = watermark_;
    out.older_reading = unrepaired_;
    auto add_hit = [&](const Xapian::MSetIterator& it) {
      Summary s;
      if (!map_->remote(*it)) {
        s = decode_summary(it.get_document().get_data());
      } else if (fields) {
        // A remote shard's document cannot be fetched (DocMap::remote): the summary comes from the
        // archive, as the index built it.
        if (auto f = fields->load(map_->to_archive(*it))) s = decode_summary(encode_summary(*f));
      }
      s.id = map_->to_archive(*it);
      out.hits.push_back(std::move(s));
    };
    // The results that survive what Xapian could not do: deferred phrases, a user's own messages.
    auto holds = [&](Xapian::docid d) {
      if (filter_ids && !std::binary_search(options.only_ids->begin(), options.only_ids->end(),
                                            static_cast<std::uint32_t>(map_->to_archive(d))))
        return false;
      return resolver.deferred().empty() || resolver.holds_deferred(d);
    };
    if (resolver.deferred().empty() && !filter_ids) {
      // A page of many results: sorting them all reads every match's date. The newest months that
      // should hold the page are searched first, and the total counted without the sort (or taken from
      // Xapian's bounds when they agree). Same page, same total: IndexDates.NewestFirstPagesAreTheWholeSort.
      std::optional<Xapian::MSet> page;
      if (!collapse && !remote_ && options.parts <= 1 && options.limit > 0)
        page = newest_months_page(*db_, q, options, *dates, out.total);
      if (page) {
        for (auto it = page->begin(); it != page->end(); ++it) add_hit(it);
      } else {
        Xapian::MSet mset = enq.get_mset(static_cast<Xapian::doccount>(options.offset),
                                         static_cast<Xapian::doccount>(options.limit), db_->get_doccount());
        out.total = mset.get_matches_estimated();
        for (auto it = mset.begin(); it != mset.end(); ++it) add_hit(it);
      }
    } else {
      // Deferred phrases: walk the candidates in the results' order, checking each, until the page is
      // full. The page is exact (the same order, only real matches); the total is exact when the walk
      // reached the end or the candidates are few enough to check them all, else estimated (below).
      const std::size_t want = options.offset + options.limit;
      std::size_t checked = 0, held = 0;
      Xapian::doccount candidates = 0, from = 0;
      bool complete = false;  // every candidate was checked
      // Each chunk runs the whole match again (sorting by date reads every candidate's date). The
      // first counts the candidates; the next, if needed, takes all the rest when they are few enough
      // (kWalkAtOnce), so a walk that meets many candidates that do not hold ("power" and "crisis"
      // apart) runs it twice, and the estimate below needs no third run; past that, chunks grow
      // fourfold. `fetched` keeps the candidates met, in the results' order.
      std::size_t next_chunk = std::max<std::size_t>(64, 2 * want);
      // When the candidates cannot be more than the second chunk would take, the first takes them
      // all: a first chunk that left the page short would cost a second whole match (every
      // candidate's date read again), and one that filled it costs no more for its longer list
      // (the match reads every candidate's date either way). The bound is the phrases' rarest word
      // (term frequencies: one lookup a shard); a bound too low would only mean more chunks.
      // Not over remote shards: a term frequency there is a round trip each.
      if (const Xapian::doccount most = remote_ ? kWalkAtOnce + 1 : resolver.deferred_at_most(); most <= kWalkAtOnce)
        next_chunk = std::max<std::size_t>(next_chunk, most);
      std::vector<Xapian::docid> fetched;
      std::optional<FilterSampler> sampler;
      while (true) {
        const auto chunk = static_cast<Xapian::doccount>(std::min<std::size_t>(next_chunk, UINT32_MAX / 2));
        Xapian::MSet mset = enq.get_mset(from, chunk, db_->get_doccount());
        candidates = mset.get_matches_estimated();  // exact: every match is counted
        next_chunk = candidates - std::min<std::size_t>(candidates, from + mset.size()) <= kWalkAtOnce
                         ? kWalkAtOnce
                         : next_chunk * 4;
        // exact_total (possible only with remote shards: else nothing is deferred) walks to the end,
        // and so does a walk of few candidates (an exact total for what an eager check would cost).
        const bool exhaust = options.exact_total || candidates <= PhraseResolver::kEagerChecks;
        const std::size_t chunk_begin = fetched.size();
        for (auto it = mset.begin(); it != mset.end(); ++it) fetched.push_back(*it);
        if (chunk_begin == 0 && fetched.size() == candidates && !exhaust && !remote_ &&
            fields && fields->concurrent() && resolver.filters_anything() && !resolver.estimate_by_sample() &&
            std::thread::hardware_concurrency() > 1) {
          // The estimate below will likely sample the candidates' filters: read them beside the walk.
          std::vector<Xapian::docid> every = fetched;
          std::sort(every.begin(), every.end());
          try {
            sampler.emplace([this] { return reopen(); },
                            spread_picks(every, std::min<std::size_t>(kFilterEstimateSample, every.size())), resolver);
          } catch (const std::system_error&) {
            sampler.reset();  // no thread to be had: the estimate reads the filters itself
          }
        }
        std::size_t prefetched = 0;  // index in mset up to which the reads ahead were chosen
        for (Xapian::doccount i = 0; i < mset.size() && (held < want || exhaust); ++i) {
          if (i >= prefetched && !resolver.deferred().empty()) {
            // The next results' messages, read side by side (as many as the page still needs, up to
            // two a core; filters decide which need a read).
            const std::size_t most = std::min<std::size_t>(exhaust ? SIZE_MAX : want - held,
                                                           2 * std::max(1u, std::thread::hardware_concurrency()));
            prefetched = i + resolver.prefetch_deferred(
                                 std::span<const Xapian::docid>(fetched).subspan(chunk_begin + i, mset.size() - i), most);
          }
          const Xapian::MSetIterator it = mset[i];
          ++checked;
          if (!holds(*it)) continue;
          if (held >= options.offset && held < want) add_hit(it);
          ++held;
        }
        from += mset.size();
        if (checked >= candidates || mset.size() == 0) {
          complete = true;
          if (sampler) sampler->stop();
          break;
        }
        if (held >= want && !exhaust) break;
      }
      if (complete) {
        out.total = held;
      } else {
        // Estimated: the candidates that would pass their filters, times the share of those that
        // held on the walk, when the walk met enough of them and the filters narrowed every
        // candidate; else the share that holds among candidates checked across all of them. Either
        // way the sample is spread evenly over all candidates (in archive order): the head of the
        // results (the newest, copies of one message, one thread) says little about the rest.
        out.total_exact = false;
        Xapian::Enquire all(*db_);
        all.set_query(q);
        all.set_weighting_scheme(Xapian::BoolWeight());
        all.set_docid_order(Xapian::Enquire::ASCENDING);
        // A walk too short to measure the filters' precision (a small page) takes it as 1 when the
        // filters decide alone (two-word phrases): the estimate then reads no message.
        const bool by_walk = !resolver.estimate_by_sample() &&
                             (resolver.passed_filters() >= kWalkEstimateChecks || resolver.filters_decide());
        const bool sample_filters = by_walk && resolver.filters_anything();
        // Every candidate, in archive order: from the walk's chunks when they met them all.
        std::vector<Xapian::docid> every;
        if (!by_walk || sample_filters) {
          if (fetched.size() == candidates) {
            every = std::move(fetched);
            std::sort(every.begin(), every.end());
          } else {
            Xapian::MSet all_set = all.get_mset(0, candidates);
            for (auto it = all_set.begin(); it != all_set.end(); ++it) every.push_back(*it);
          }
        }
        // With `reads`, the test reads messages: the picked ones are read side by side first.
        auto sample = [&](std::size_t n, const std::function<bool(Xapian::docid)>& test, bool reads) {
          const std::vector<Xapian::docid> picks = spread_picks(every, n);
          if (reads) resolver.prefetch_deferred(picks, picks.size());
          if (!reads && sampler) sampler->hand_to(picks);
          const auto yes = std::count_if(picks.begin(), picks.end(), test);
          return n ? static_cast<double>(yes) / static_cast<double>(n) : 0.0;
        };
        double share = 0;
        if (by_walk) {
          const double precision = resolver.passed_filters() >= kWalkEstimateChecks
                                       ? static_cast<double>(held) / static_cast<double>(resolver.passed_filters())
                                       : 1.0;
          const double passing =
              sample_filters ? sample(std::min<std::size_t>(kFilterEstimateSample, every.size()),
                                      [&](Xapian::docid d) { return resolver.passes_filters(d); }, false)
                             : 1.0;
          share = passing * precision;
        } else if (every.size() <= 2 * PhraseResolver::kEstimateSample) {
          // Few: checking them all costs about what a sample would, and the total is exact.
          share = sample(every.size(), holds, true);
          out.total_exact = true;
        } else {
          share = sample(PhraseResolver::kEstimateSample, holds, true);
        }
        out.total = out.total_exact ? static_cast<std::uint64_t>(share * static_cast<double>(every.size()) + 0.5)
                                    : std::max<std::uint64_t>(held, static_cast<std::uint64_t>(share * candidates + 0.5));
      }
    }
    // Messages of the same second are in Xapian's document order, which interleaves segments: within
    // the page, the later archived comes first, as in an index of one segment.
    std::stable_sort(out.hits.begin(), out.hits.end(), [](const Summary& a, const Summary& b) {
      return a.date != b.date ? a.date > b.date : a.id > b.id;
    });
    std::vector<Summary*> hits;
    for (auto& h : out.hits) hits.push_back(&h);
    mark_attachments(*db_, *map_, hits);
    return out;
  } catch (const Xapian::QueryParserError& e) {
    return make_error(ErrorCode::kInvalidArgument, "query does not parse: " + e.get_msg(),
                      "see `mailark search --help` for the syntax");
  } catch (const Xapian::WildcardError& e) {
    return make_error(ErrorCode::kInvalidArgument,
                      "a wildcard stands for more than " + std::to_string(kMaxWildcardWords) + " words (" + e.get_msg() + ")",
                      "give more letters before the *");
  } catch (const Xapian::DatabaseModifiedError&) {
    throw;  // search opens the reader again and retries
  } catch (const Xapian::Error& e) {
    return xapian_error(e, "searching");
  }
}

}  // namespace mailark::indexer
