// GMime 3 translation point. Everything that touches GMime or GLib types stays in this file.
#include "engine/message.h"

#include "engine/extract.h"

#include <gmime/gmime.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

#include "common/ascii.h"
#include "common/sha256.h"
#include "engine/html_text.h"
#include "engine/mime_tree.h"

namespace mailark {
namespace {

void init_gmime() {
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

// Owns a GObject reference.
template <typename T>
struct GRef {
  T* p = nullptr;
  explicit GRef(T* ptr = nullptr) : p(ptr) {}
  ~GRef() {
    if (p) g_object_unref(p);
  }
  GRef(const GRef&) = delete;
  GRef& operator=(const GRef&) = delete;
};

// A GMime parser reading `bytes` (copied into its own stream) as a message: the set-up every parse
// here starts from. The caller owns the parser (GRef).
GMimeParser* message_parser(std::string_view bytes) {
  GMimeStream* stream = g_mime_stream_mem_new_with_buffer(bytes.data(), bytes.size());
  GMimeParser* parser = g_mime_parser_new_with_stream(stream);  // holds its own reference
  g_object_unref(stream);
  g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
  return parser;
}

std::string valid_utf8(const char* s, std::size_t len) {
  if (!s) return {};
  if (g_utf8_validate(s, static_cast<gssize>(len), nullptr)) return std::string(s, len);
  gchar* fixed = g_utf8_make_valid(s, static_cast<gssize>(len));
  std::string out(fixed);
  g_free(fixed);
  return out;
}

std::string valid_utf8(const char* s) {
  return s ? valid_utf8(s, std::strlen(s)) : std::string();
}


struct ParseState {
  const Limits* limits;
  ParsedMessage* out;
  TextExtractor* extractor = nullptr;  // attachment text (extract_documents): null, none
  unsigned parts_seen = 0;
  bool parts_capped = false;
  std::vector<std::string> warnings;
};

void on_parser_warning(gint64 offset, GMimeParserWarning code, const gchar* item, gpointer user) {
  auto* st = static_cast<ParseState*>(user);
  const char* what = nullptr;
  bool critical = false;
  switch (code) {
    case GMIME_WARN_TRUNCATED_MESSAGE:
      what = "message is truncated";
      critical = true;
      break;
    case GMIME_WARN_MALFORMED_MULTIPART:
      what = "multipart has no child parts";
      critical = true;
      break;
    case GMIME_WARN_MALFORMED_MESSAGE:
      what = "message is malformed";
      critical = true;
      break;
    case GMIME_CRIT_INVALID_HEADER_NAME:
      what = "invalid header name";
      critical = true;
      break;
    case GMIME_CRIT_CONFLICTING_HEADER:
      what = "conflicting header";
      critical = true;
      break;
    case GMIME_CRIT_CONFLICTING_PARAMETER:
      what = "conflicting header parameter";
      critical = true;
      break;
    case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY:
      what = "multipart without boundary";
      critical = true;
      break;
    case GMIME_CRIT_NESTING_OVERFLOW:
      what = "MIME nesting too deep";
      critical = true;
      break;
    case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT:
      what = "MIME part without headers or content";
      critical = true;
      break;
    default:
      break;  // duplicated headers, 8-bit headers, bad RFC 2047: common in real mail, not malformed
  }
  if (!critical) return;
  if (st->out->problems.size() < 20) {
    std::string msg = what;
    if (item && *item) msg += std::string(" (") + std::string(item).substr(0, 80) + ")";
    msg += " at byte " + std::to_string(offset);
    st->out->problems.push_back(valid_utf8(msg.c_str()));
  }
  st->out->malformed = true;
}

// For address headers GMime cannot fully parse (Enron's "a..davis@enron.com", unbalanced quotes):
// split on commas outside quotes and angle brackets, so no recipient is lost to the index.
std::vector<Address> split_addresses_loosely(const std::string& value, unsigned max) {
  std::vector<Address> out;
  std::string item;
  bool quoted = false;
  int angle = 0;
  auto flush = [&] {
    std::size_t a = item.find_first_not_of(" \t\r\n"), b = item.find_last_not_of(" \t\r\n");
    if (a != std::string::npos && out.size() < max) {
      std::string t = item.substr(a, b - a + 1);
      Address addr;
      std::size_t lt = t.rfind('<'), gt = t.rfind('>');
      if (lt != std::string::npos && gt != std::string::npos && gt > lt) {
        addr.addr = t.substr(lt + 1, gt - lt - 1);
        addr.name = t.substr(0, lt);
        std::size_t e = addr.name.find_last_not_of(" \t\"");
        std::size_t s = addr.name.find_first_not_of(" \t\"");
        addr.name = s == std::string::npos ? std::string() : addr.name.substr(s, e - s + 1);
      } else {
        addr.addr = t;
      }
      out.push_back(std::move(addr));
    }
    item.clear();
  };
  for (char c : value) {
    if (c == '"') quoted = !quoted;
    if (!quoted && c == '<') ++angle;
    if (!quoted && c == '>' && angle > 0) --angle;
    if (!quoted && angle == 0 && (c == ',' || c == ';')) {
      flush();
      continue;
    }
    item.push_back(c);
  }
  flush();
  return out;
}

// GMime's address parser turns a field's raw 8-bit bytes into UTF-8 before it decodes the RFC 2047
// words in it, so a byte sent raw inside a word of another charset ("=?iso-8859-1?Q?J\xfcrgen?=",
// seen in real mail: stalwart's legacy/009.eml) is decoded twice ("JÃ¼rgen"), where GMime's header
// text decoder reads it right. Such bytes are first written as the Q encoding's =XX escapes, so that
// the word's charset reads them. Nothing when the text has no such word (the common case: no copy).
// Test: Message.EightBitBytesInsideAnEncodedWordAreReadInItsCharset.
}  // namespace

namespace {
// An RFC 2047 encoded word found in header text: "=?charset?B|Q?payload?=", no blank inside.
struct EncodedWord {
  std::size_t begin, end;  // the whole word in the text
  std::string_view charset, payload;
  char encoding;           // 'B' or 'Q'
};

// The encoded words of text in order, at most 10,000 (a header field is bounded before this).
std::vector<EncodedWord> encoded_words(std::string_view text) {
  std::vector<EncodedWord> words;
  std::size_t pos = 0;
  while ((pos = text.find("=?", pos)) != std::string_view::npos && words.size() < 10000) {
    const std::size_t q1 = text.find('?', pos + 2);
    const char enc = q1 != std::string_view::npos && q1 + 2 < text.size() ? text[q1 + 1] & ~0x20 : 0;  // upper case
    const std::size_t end = enc && text[q1 + 2] == '?' ? text.find("?=", q1 + 3) : std::string_view::npos;
    if ((enc != 'B' && enc != 'Q') || end == std::string_view::npos) {
      pos += 2;
      continue;
    }
    const std::string_view word = text.substr(pos, end + 2 - pos);
    if (q1 == pos + 2 || word.find_first_of(" \t\r\n") != std::string_view::npos) {
      pos += 2;
      continue;
    }
    words.push_back({pos, end + 2, text.substr(pos + 2, q1 - pos - 2), text.substr(q1 + 3, end - q1 - 3), enc});
    pos = end + 2;
  }
  return words;
}

bool has_8bit(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}
}  // namespace

std::optional<std::string> escape_8bit_in_encoded_words(std::string_view text) {
  if (!has_8bit(text)) return std::nullopt;
  std::string out;
  std::size_t copied = 0;
  for (const EncodedWord& w : encoded_words(text)) {
    if (w.encoding != 'Q' || !has_8bit(w.payload)) continue;
    const std::size_t payload_at = w.end - 2 - w.payload.size();
    out.append(text.substr(copied, payload_at - copied));
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (char ch : w.payload) {
      const auto c = static_cast<unsigned char>(ch);
      if (c < 0x80) {
        out += ch;
      } else {
        out += '=';
        out += kHex[c >> 4];
        out += kHex[c & 15];
      }
    }
    copied = w.end - 2;
  }
  if (copied == 0) return std::nullopt;
  out.append(text.substr(copied));
  return out;
}

// GMime 3.2's RFC 2047 decoder joins adjacent base64 words of one charset before decoding them (so
// that a character split between two words comes out whole) but stops at the first word's padding:
// "=?UTF-8?B?TXlTdXJ2ZXk=?= =?UTF-8?B?LmNvbSAmIEM=?=" decodes to "MySurvey", the rest lost
// (Yandex's subjects, ruby-mail's bad_subject.eml, piler's 31-subject.eml). Such runs are joined
// here first, each word's bytes decoded and the whole encoded again as one word, which GMime reads
// whole. Nothing when no run needs it (no copy). Test: Message.SplitBase64WordsAreDecodedWhole.
std::optional<std::string> join_split_base64_words(std::string_view text) {
  if (text.find("=?") == std::string_view::npos) return std::nullopt;
  std::vector<EncodedWord> words = encoded_words(text);
  std::erase_if(words, [](const EncodedWord& w) {
    return w.encoding != 'B' ||
           w.payload.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") !=
               std::string_view::npos;
  });
  std::string out;
  std::size_t copied = 0;
  bool changed = false;
  for (std::size_t i = 0; i < words.size();) {
    // The run from word i: words of the same charset with only blanks between them. It needs
    // joining when a word before its last is padded (or not a whole number of base64 quanta).
    auto blanks_between = [&](const EncodedWord& a, const EncodedWord& b) {
      return text.substr(a.end, b.begin - a.end).find_first_not_of(" \t\r\n") == std::string_view::npos;
    };
    std::size_t j = i + 1;
    bool padded_inside = false;
    while (j < words.size() && blanks_between(words[j - 1], words[j]) && ascii_iequals(words[j].charset, words[i].charset)) {
      padded_inside = padded_inside || words[j - 1].payload.find('=') != std::string_view::npos ||
                      words[j - 1].payload.size() % 4 != 0;
      ++j;
    }
    if (padded_inside) {
      std::string bytes;
      for (std::size_t k = i; k < j; ++k) {
        const std::string payload(words[k].payload);
        gsize len = 0;
        guchar* decoded = g_base64_decode(payload.c_str(), &len);
        if (decoded) bytes.append(reinterpret_cast<const char*>(decoded), len);
        g_free(decoded);
      }
      gchar* encoded = g_base64_encode(reinterpret_cast<const guchar*>(bytes.data()), bytes.size());
      out.append(text.substr(copied, words[i].begin - copied));
      out += "=?";
      out += words[i].charset;
      out += "?B?";
      out += encoded;
      out += "?=";
      g_free(encoded);
      copied = words[j - 1].end;
      changed = true;
    }
    i = j;
  }
  if (!changed) return std::nullopt;
  out.append(text.substr(copied));
  return out;
}

std::optional<std::string> repaired_encoded_words(std::string_view text) {
  auto escaped = escape_8bit_in_encoded_words(text);
  auto joined = join_split_base64_words(escaped ? std::string_view(*escaped) : text);
  if (joined) return joined;
  return escaped;
}

namespace {

// GMime drops an address it cannot parse (Enron's "s..palmer@enron.com" beside good ones) and finds
// an encoded word where senders encoded a whole "Name <addr>" as RFC 2047 words (what Python's email
// package writes for a non-ASCII name under its default compat32 policy). When a field's text, decoded,
// holds more '@' than the addresses found, it is split loosely on commas, and that is taken when it
// finds more addresses. The one rule of parse_message and parse_address_list, so that the mailbox
// store, IMAP and the web see every address the index has. Tests: Message.AWholeAddressInEncodedWordsIsFound,
// Message.AddressesGMimeDropsAreKept, MessageModel.AddressHeadersGMimeCannotParseKeepEveryAddress,
// Mailbox.AnImportIsPlacedByAddressesWrittenAsEncodedWords.
void keep_every_address(std::vector<Address>& found, std::string_view text, unsigned max, std::string_view charset = {}) {
  const std::string decoded =
      text.find("=?") != std::string_view::npos ? decode_header_text(text, charset) : valid_utf8(text.data(), text.size());
  auto with_at = [](const std::vector<Address>& list) {
    return static_cast<std::size_t>(
        std::count_if(list.begin(), list.end(), [](const Address& a) { return a.addr.find('@') != std::string::npos; }));
  };
  if (with_at(found) < std::min<std::size_t>(max, std::count(decoded.begin(), decoded.end(), '@'))) {
    std::vector<Address> loose = split_addresses_loosely(decoded, max);
    if (with_at(loose) > with_at(found)) found = std::move(loose);
  }
}

void read_addresses(InternetAddressList* list, std::vector<Address>& out, unsigned max) {
  if (!list) return;
  int n = internet_address_list_length(list);
  for (int i = 0; i < n && out.size() < max; ++i) {
    InternetAddress* ia = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_GROUP(ia)) {
      read_addresses(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), out, max);
    } else if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
      Address a;
      a.name = valid_utf8(internet_address_get_name(ia));
      a.addr = valid_utf8(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia)));
      out.push_back(std::move(a));
    }
  }
}

// Decoded content of a leaf part, at most `max` bytes (the rest is dropped and reported).
std::string decoded_content(GMimePart* part, std::size_t max, bool* truncated) {
  GMimeDataWrapper* content = g_mime_part_get_content(part);
  if (!content) return {};
  GRef<GMimeStream> mem(g_mime_stream_mem_new());
  g_mime_data_wrapper_write_to_stream(content, mem.p);
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.p));
  std::size_t len = bytes ? bytes->len : 0;
  *truncated = len > max;
  return bytes ? std::string(reinterpret_cast<const char*>(bytes->data), std::min(len, max)) : std::string();
}

// The charsets GMime tries for raw 8-bit bytes in header fields, in order (decode_header_text's
// rule): UTF-8, the message's declared charset when it names one, windows-1252 (which takes any
// byte). GMime copies the list and skips a charset iconv cannot open.
void set_fallback_charsets(GMimeParserOptions* opts, std::string_view declared) {
  const std::string cs(declared);
  const char* list[] = {"utf-8", cs.empty() ? "windows-1252" : cs.c_str(), cs.empty() ? nullptr : "windows-1252", nullptr};
  g_mime_parser_options_set_fallback_charsets(opts, list);
}

// A parameter list's raw 8-bit bytes (a file name sent raw) made UTF-8 by the fallback charsets, as
// GMime's message parser makes a field's: its parameter parser alone leaves them, to be replaced.
// Bytes inside an encoded word are left to it (escape_8bit_in_encoded_words' case).
void params_to_utf8(GMimeParserOptions* opts, std::string& text) {
  if (std::none_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; }) ||
      g_utf8_validate(text.data(), static_cast<gssize>(text.size()), nullptr) || text.find("=?") != std::string::npos)
    return;
  if (char* u = g_mime_utils_decode_8bit(opts, text.data(), text.size())) {
    text = u;
    g_free(u);
  }
}

std::string text_of(GMimeTextPart* part) {
  char* text = g_mime_text_part_get_text(part);
  std::string out = valid_utf8(text);
  g_free(text);
  return out;
}

std::atomic<bool> g_text_by_second_decode{false};

// The text of a text part from its content already decoded (`content`, the transfer encoding undone),
// as g_mime_text_part_get_text gives it: converted from its charset to UTF-8 by GMime's charset
// filter when it names one (none: the bytes as they are; one GMime cannot convert: likewise), up to
// the first NUL. get_text would decode the content a second time (with glibc's malloc defaults the 100
// reads of bench/phrase/first_read parsed in 42-44 ms instead of 56-74; with tune_malloc the same
// within noise). The texts are the same: tests/corpus_test.cc CorpusTest.TextPartsDecodedOnceGiveTheSameText.
std::string text_from_content(GMimeObject* part, const std::string& content) {
  std::string converted;
  std::string_view text = content;
  if (const char* charset = g_mime_object_get_content_type_parameter(part, "charset")) {
    GRef<GMimeStream> mem(g_mime_stream_mem_new());
    GRef<GMimeStream> filtered(g_mime_stream_filter_new(mem.p));
    if (GMimeFilter* filter = g_mime_filter_charset_new(charset, "utf-8")) {
      g_mime_stream_filter_add(GMIME_STREAM_FILTER(filtered.p), filter);
      g_object_unref(filter);
    }
    g_mime_stream_write(filtered.p, content.data(), content.size());
    g_mime_stream_flush(filtered.p);
    GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.p));
    if (bytes) converted.assign(reinterpret_cast<const char*>(bytes->data), bytes->len);
    text = converted;
  }
  text = text.substr(0, std::min(text.size(), text.find('\0')));
  return valid_utf8(text.data(), text.size());
}

void append_bounded(std::string& dst, std::string_view src, std::size_t max) {
  if (dst.size() >= max) return;
  if (!dst.empty()) dst.push_back('\n');
  dst.append(src.substr(0, max - std::min(max, dst.size())));
}

std::string serialized_size_and_hash(GMimeObject* obj, Digest* hash) {
  GRef<GMimeStream> mem(g_mime_stream_mem_new());
  g_mime_object_write_to_stream(obj, nullptr, mem.p);
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.p));
  std::string s = bytes ? std::string(reinterpret_cast<const char*>(bytes->data), bytes->len) : std::string();
  *hash = sha256(s);
  return s;
}

void walk(GMimeObject* obj, unsigned depth, bool in_attachment, ParseState& st);

void walk_message_body(GMimeMessage* msg, unsigned depth, bool in_attachment, ParseState& st) {
  GMimeObject* body = g_mime_message_get_mime_part(msg);
  if (body) walk(body, depth, in_attachment, st);
}

void walk(GMimeObject* obj, unsigned depth, bool in_attachment, ParseState& st) {
  ParsedMessage& out = *st.out;
  if (depth > st.limits->max_mime_depth) {
    out.malformed = true;
    out.problems.push_back("MIME nesting exceeds " + std::to_string(st.limits->max_mime_depth) + " levels");
    return;
  }
  if (st.parts_seen >= st.limits->max_mime_parts) {
    if (!st.parts_capped) {
      st.parts_capped = true;
      out.malformed = true;
      out.problems.push_back("more than " + std::to_string(st.limits->max_mime_parts) + " MIME parts");
    }
    return;
  }
  ++st.parts_seen;

  MimePart info;
  info.depth = depth;
  GMimeContentType* ct = g_mime_object_get_content_type(obj);
  char* mime = ct ? g_mime_content_type_get_mime_type(ct) : nullptr;
  info.content_type = ascii_lower(mime ? mime : "text/plain");
  g_free(mime);
  if (const char* disp = g_mime_object_get_disposition(obj)) info.disposition = ascii_lower(valid_utf8(disp));
  if (const char* cte = g_mime_object_get_header(obj, "Content-Transfer-Encoding")) {
    info.transfer_encoding = ascii_lower(valid_utf8(cte));
    info.transfer_encoding.erase(0, info.transfer_encoding.find_first_not_of(" \t"));
    info.transfer_encoding.erase(info.transfer_encoding.find_last_not_of(" \t\r\n") + 1);
  }

  if (GMIME_IS_MULTIPART(obj)) {
    out.parts.push_back(info);
    GMimeMultipart* mp = GMIME_MULTIPART(obj);
    int n = g_mime_multipart_get_count(mp);
    for (int i = 0; i < n; ++i) walk(g_mime_multipart_get_part(mp, i), depth + 1, in_attachment, st);
    return;
  }
  if (GMIME_IS_MESSAGE_PART(obj)) {
    GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
    info.is_attachment = true;
    if (inner) {
      std::string bytes = serialized_size_and_hash(GMIME_OBJECT(inner), &info.sha256);
      info.size = bytes.size();
      const char* subj = g_mime_message_get_subject(inner);
      info.filename = valid_utf8(subj ? subj : "");
      if (!info.filename.empty()) info.filename += ".eml";
      if (subj) append_bounded(out.attachment_text, valid_utf8(subj), st.limits->max_index_text_bytes);
    }
    out.parts.push_back(info);
    if (inner) walk_message_body(inner, depth + 1, /*in_attachment=*/true, st);
    return;
  }
  if (GMIME_IS_PART(obj)) {
    GMimePart* part = GMIME_PART(obj);
    info.filename = valid_utf8(g_mime_part_get_filename(part));
    if (!info.filename.empty()) {
      // GMime 3.2 cuts a name written as split base64 words at the first padding: read again from
      // the field, repaired (join_split_base64_words; Message.SplitBase64WordsAreDecodedWhole).
      for (const auto& [field, param] : {std::pair{"Content-Disposition", "filename"}, std::pair{"Content-Type", "name"}}) {
        GMimeHeader* header = g_mime_header_list_get_header(g_mime_object_get_header_list(obj), field);
        const char* value = header ? g_mime_header_get_raw_value(header) : nullptr;  // as sent
        if (!value || !std::strstr(value, "=?") || !join_split_base64_words(value)) continue;
        std::vector<std::pair<std::string, std::string>> params;
        if (field[8] == 'D') {
          if (auto d = parse_content_disposition(value)) params = std::move(d->params);
        } else if (auto t = parse_content_type(value)) {
          params = std::move(t->params);
        }
        for (const auto& [k, v] : params)
          if (ascii_iequals(k, param) && !v.empty()) info.filename = v;
        break;
      }
    }
    bool is_text = info.content_type.rfind("text/", 0) == 0;
    info.is_attachment = !info.filename.empty() || info.disposition == "attachment" || !is_text;
    bool truncated = false;
    std::string content = decoded_content(part, st.limits->max_part_bytes, &truncated);
    if (truncated) {
      out.malformed = true;
      out.problems.push_back("a part decodes to more than " + std::to_string(st.limits->max_part_bytes) +
                             " bytes");
    }
    info.size = content.size();
    if (info.is_attachment) info.sha256 = sha256(content);
    // A PDF, Office or OpenDocument attachment, known by its bytes whatever type the sender declared
    // (a PDF sent as text/x-vcard is a PDF): its words, from the extractor's worker process.
    DocKind doc_kind = info.is_attachment && !truncated ? document_kind(content) : DocKind::kNone;
    // Declared text: a document only when it starts as one (a text about PDFs stays text).
    if (is_text && doc_kind == DocKind::kPdf && content.rfind("%PDF-", 0) != 0) doc_kind = DocKind::kNone;
    if (doc_kind != DocKind::kNone) is_text = false;  // never indexed as if it were text
    if (st.extractor && doc_kind != DocKind::kNone) {
      if (const DocKind kind = doc_kind; kind != DocKind::kNone) {
        auto text = st.extractor->extract(kind, content);
        if (text) {
          append_bounded(out.extracted_text, valid_utf8(text->data(), text->size()), st.limits->max_index_text_bytes);
        } else if (kind == DocKind::kPdf || text.error().code != ErrorCode::kUnsupported ||
                   text.error().context.find("neither") == std::string::npos) {
          out.problems.push_back("no text from attachment " + (info.filename.empty() ? info.content_type : info.filename) +
                                 ": " + text.error().context);
        }
      }
    }
    if (is_text &&
        (info.content_type == "text/plain" || info.content_type == "text/html" || info.is_attachment)) {
      std::string text = !GMIME_IS_TEXT_PART(obj)   ? valid_utf8(content.data(), content.size())
                         : truncated || g_text_by_second_decode ? text_of(GMIME_TEXT_PART(obj))
                                                               : text_from_content(obj, content);
      if (info.content_type == "text/html") text = html_to_text(text);
      bool to_attachment_text = in_attachment || info.is_attachment;
      append_bounded(to_attachment_text ? out.attachment_text : out.body_text, text,
                     st.limits->max_index_text_bytes);
    }
    out.parts.push_back(std::move(info));
    return;
  }
  out.parts.push_back(std::move(info));
}

}  // namespace

namespace {
void read_addresses_grouped(InternetAddressList* list, std::vector<Address>& out, unsigned max) {
  if (!list) return;
  int n = internet_address_list_length(list);
  for (int i = 0; i < n && out.size() < max; ++i) {
    InternetAddress* ia = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_GROUP(ia)) {
      Address start;
      start.name = valid_utf8(internet_address_get_name(ia));
      start.group = Address::Group::kStart;
      out.push_back(std::move(start));
      read_addresses(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), out, max);
      Address end;
      end.group = Address::Group::kEnd;
      out.push_back(std::move(end));
    } else if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
      Address a;
      a.name = valid_utf8(internet_address_get_name(ia));
      a.addr = valid_utf8(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia)));
      out.push_back(std::move(a));
    }
  }
}
}  // namespace

std::vector<Address> parse_address_list(std::string_view value, unsigned max, bool keep_groups, std::string_view charset) {
  init_gmime();
  std::string text(value);
  if (auto repaired = repaired_encoded_words(text)) text = std::move(*repaired);
  std::vector<Address> out;
  GMimeParserOptions* opts = g_mime_parser_options_new();
  g_mime_parser_options_set_address_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
  set_fallback_charsets(opts, charset);
  if (InternetAddressList* list = internet_address_list_parse(opts, text.c_str())) {
    if (keep_groups)
      read_addresses_grouped(list, out, max);
    else
      read_addresses(list, out, max);
    g_object_unref(list);
  }
  g_mime_parser_options_free(opts);
  keep_every_address(out, text, max, charset);
  return out;
}

namespace {
std::vector<std::pair<std::string, std::string>> read_params(GMimeParamList* list) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!list) return out;
  int n = g_mime_param_list_length(list);
  for (int i = 0; i < n && i < 100; ++i) {
    GMimeParam* p = g_mime_param_list_get_parameter_at(list, i);
    const char* name = g_mime_param_get_name(p);
    const char* value = g_mime_param_get_value(p);
    if (name) out.emplace_back(valid_utf8(name), value ? valid_utf8(value) : std::string());
  }
  return out;
}
}  // namespace

std::optional<MediaType> parse_content_type(std::string_view value, std::string_view charset) {
  init_gmime();
  std::string text(value);
  if (auto repaired = join_split_base64_words(text)) text = std::move(*repaired);  // RFC 2047 in a name
  GMimeParserOptions* opts = g_mime_parser_options_new();
  g_mime_parser_options_set_parameter_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
  set_fallback_charsets(opts, charset);
  params_to_utf8(opts, text);
  GMimeContentType* ct = g_mime_content_type_parse(opts, text.c_str());
  g_mime_parser_options_free(opts);
  if (!ct) return std::nullopt;
  std::optional<MediaType> out;
  const char* type = g_mime_content_type_get_media_type(ct);
  const char* sub = g_mime_content_type_get_media_subtype(ct);
  // GMime answers text/plain for a value it cannot read: only a value that names its type counts.
  if (type && sub && text.find('/') != std::string::npos) {
    out.emplace();
    out->type = ascii_lower(valid_utf8(type));
    out->subtype = ascii_lower(valid_utf8(sub));
    out->params = read_params(g_mime_content_type_get_parameters(ct));
  }
  g_object_unref(ct);
  return out;
}

std::optional<Disposition> parse_content_disposition(std::string_view value, std::string_view charset) {
  init_gmime();
  std::string text(value);
  if (auto repaired = join_split_base64_words(text)) text = std::move(*repaired);  // RFC 2047 in a name
  GMimeParserOptions* opts = g_mime_parser_options_new();
  g_mime_parser_options_set_parameter_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
  set_fallback_charsets(opts, charset);
  params_to_utf8(opts, text);
  GMimeContentDisposition* cd = g_mime_content_disposition_parse(opts, text.c_str());
  g_mime_parser_options_free(opts);
  if (!cd) return std::nullopt;
  std::optional<Disposition> out;
  if (const char* d = g_mime_content_disposition_get_disposition(cd); d && *d) {
    out.emplace();
    out->disposition = ascii_lower(valid_utf8(d));
    out->params = read_params(g_mime_content_disposition_get_parameters(cd));
  }
  g_object_unref(cd);
  return out;
}

std::optional<std::int64_t> parse_date_value(std::string_view value) {
  init_gmime();
  std::string text(value.substr(0, 200));
  GDateTime* dt = g_mime_utils_header_decode_date(text.c_str());
  if (!dt) return std::nullopt;
  std::int64_t t = g_date_time_to_unix(dt);
  g_date_time_unref(dt);
  return t;
}

std::optional<std::int64_t> date_value_day(std::string_view value) {
  init_gmime();
  std::string text(value.substr(0, 200));
  GDateTime* dt = g_mime_utils_header_decode_date(text.c_str());
  if (!dt) return std::nullopt;
  int y = 0, m = 0, d = 0;
  g_date_time_get_ymd(dt, &y, &m, &d);
  g_date_time_unref(dt);
  GDateTime* day = g_date_time_new_utc(y, m, d, 0, 0, 0);
  if (!day) return std::nullopt;
  std::int64_t t = g_date_time_to_unix(day);
  g_date_time_unref(day);
  return t >= 0 ? t / 86400 : (t - 86399) / 86400;
}

std::string decode_header_text(std::string_view value, std::string_view charset) {
  init_gmime();
  std::string text(value.substr(0, 1 << 20));
  if (auto repaired = repaired_encoded_words(text)) text = std::move(*repaired);
  GMimeParserOptions* opts = g_mime_parser_options_new();
  g_mime_parser_options_set_rfc2047_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
  set_fallback_charsets(opts, charset);
  char* decoded = g_mime_utils_header_decode_text(opts, text.c_str());
  g_mime_parser_options_free(opts);
  std::string out = decoded ? valid_utf8(decoded) : valid_utf8(text.c_str());
  g_free(decoded);
  return out;
}

std::string encode_phrase(std::string_view utf8) {
  bool plain = true;
  for (char c : utf8) plain = plain && static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
  if (plain) return std::string(utf8);
  init_gmime();
  std::string text(utf8);
  char* enc = g_mime_utils_header_encode_phrase(nullptr, text.c_str(), "utf-8");
  std::string out = enc ? enc : text;
  g_free(enc);
  return out;
}

std::string decode_part(std::string_view part, bool as_text, std::size_t max_bytes, bool* truncated) {
  init_gmime();
  bool cut = false;
  std::string out;
  GMimeParserOptions* opts = g_mime_parser_options_new();
  static const char* kFallback[] = {"utf-8", "windows-1252", nullptr};
  g_mime_parser_options_set_fallback_charsets(opts, kFallback);
  GRef<GMimeParser> parser(message_parser(part));
  GRef<GMimeObject> obj(g_mime_parser_construct_part(parser.p, opts));
  g_mime_parser_options_free(opts);
  if (obj.p && GMIME_IS_TEXT_PART(obj.p) && as_text) {
    out = text_of(GMIME_TEXT_PART(obj.p));
    if (out.size() > max_bytes) {
      out.resize(max_bytes);
      cut = true;
    }
  } else if (obj.p && GMIME_IS_PART(obj.p)) {
    out = decoded_content(GMIME_PART(obj.p), max_bytes, &cut);
    if (as_text) out = valid_utf8(out.data(), out.size());
  }
  if (truncated) *truncated = cut;
  return out;
}

namespace {

GMimeTextPart* text_part(const char* subtype, const std::string& body) {
  GMimeTextPart* part = g_mime_text_part_new_with_subtype(subtype);
  std::string valid = valid_utf8(body.data(), body.size());
  g_mime_text_part_set_text(part, valid.c_str());  // chooses the charset and the encoding
  return part;
}

// A header field's text as one line of valid UTF-8: control characters (CR, LF, NUL, ...) become
// spaces. GMime encodes them inside an encoded word, so they could not start a header field, but a
// reader would show a subject or a name broken over lines. Test Compose.WhatIsWrittenReadsBack.
std::string one_line(std::string_view in) {
  std::string out = valid_utf8(in.data(), in.size());
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return out;
}

// A name without an address (Outlook's display lists) is written as an empty group, "Name:;" (RFC
// 5322 groups; RFC 6854 allows them in From), so the name stays and no address is made up.
InternetAddressList* address_list(const std::vector<Address>& list) {
  InternetAddressList* out = internet_address_list_new();
  for (const auto& a : list) {
    const std::string name = one_line(a.name);
    InternetAddress* ia = a.addr.empty() && !name.empty() ? internet_address_group_new(name.c_str())
                                                         : internet_address_mailbox_new(name.c_str(), a.addr.c_str());
    internet_address_list_add(out, ia);
    g_object_unref(ia);
  }
  return out;
}

// A base64 attachment part; a content type that is not type/subtype becomes application/octet-stream.
GMimePart* attachment_part(const std::string& filename, const std::string& content_type, const std::string& bytes) {
  std::string type = content_type;
  if (type.find('/') == std::string::npos || type.find_first_of(" \t\r\n;\"") != std::string::npos)
    type = "application/octet-stream";
  std::string major = type.substr(0, type.find('/')), minor = type.substr(type.find('/') + 1);
  GMimePart* part = g_mime_part_new_with_type(major.c_str(), minor.c_str());
  std::string name = one_line(filename);
  if (!name.empty()) g_mime_part_set_filename(part, name.c_str());
  g_mime_object_set_disposition(GMIME_OBJECT(part), "attachment");
  GRef<GMimeStream> data(g_mime_stream_mem_new_with_buffer(bytes.data(), bytes.size()));
  GRef<GMimeDataWrapper> wrapper(g_mime_data_wrapper_new_with_stream(data.p, GMIME_CONTENT_ENCODING_DEFAULT));
  g_mime_part_set_content(part, wrapper.p);
  g_mime_part_set_content_encoding(part, GMIME_CONTENT_ENCODING_BASE64);
  return part;
}

// Text, HTML beside it (multipart/alternative); HTML alone when there is no text and always_text is
// false; an empty text part when there is neither.
GMimeObject* body_part(const std::string& text, const std::string& html, bool always_text) {
  if (html.empty() || !text.empty() || always_text) {
    GMimeObject* plain = GMIME_OBJECT(text_part("plain", text));
    if (html.empty()) return plain;
    GMimeMultipart* alt = g_mime_multipart_new_with_subtype("alternative");
    g_mime_multipart_add(alt, plain);
    g_object_unref(plain);
    GMimeTextPart* h = text_part("html", html);
    g_mime_multipart_add(alt, GMIME_OBJECT(h));
    g_object_unref(h);
    return GMIME_OBJECT(alt);
  }
  return GMIME_OBJECT(text_part("html", html));
}

std::string printable_id(const std::string& s) {
  std::string out;
  for (char c : s)
    if (static_cast<unsigned char>(c) > 0x20 && c != 0x7f) out.push_back(c);
  if (!out.empty() && out.front() != '<') out = "<" + out + ">";
  return out;
}

std::string write_object(GMimeObject* obj) {
  GMimeFormatOptions* fo = g_mime_format_options_clone(nullptr);
  g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_DOS);
  GRef<GMimeStream> out(g_mime_stream_mem_new());
  g_mime_object_write_to_stream(obj, fo, out.p);
  g_mime_format_options_free(fo);
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out.p));
  return bytes ? std::string(reinterpret_cast<const char*>(bytes->data), bytes->len) : std::string();
}

// A multipart boundary that is a hash of what the message holds (its header section, bodies and
// attachments) and of where the multipart stands: the same message is written the same way twice,
// and no content holds its own hash.
std::string content_boundary(const ConvertedMessage& m, unsigned depth, const char* which) {
  Sha256 h;
  auto field = [&](std::string_view v) {
    h.update(std::to_string(v.size()) + ":");
    h.update(v);
  };
  field(which);
  field(std::to_string(depth));
  field(m.transport_headers);
  field(m.subject);
  field(m.message_id);
  field(m.text);
  field(m.html);
  for (const auto& a : m.attachments) {
    field(a.filename);
    field(a.data);
  }
  field(std::to_string(m.embedded.size()));
  Digest d = h.finish();
  return "=_mailark_" + to_hex(std::span<const std::uint8_t>(d.data(), 12));
}

// The GMime message for a ConvertedMessage; `depth` bounds embedded messages (each level's own are
// dropped past 16: a store's nesting is bounded by its reader, this is the writer's own guard).
GMimeMessage* converted_message(const ConvertedMessage& m, unsigned depth) {
  GMimeMessage* msg = nullptr;
  if (!m.transport_headers.empty()) {
    std::string block = m.transport_headers;
    while (!block.empty() && (block.back() == '\n' || block.back() == '\r')) block.pop_back();
    block += "\r\n\r\n";
    GRef<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(block.data(), block.size()));
    GRef<GMimeParser> parser(g_mime_parser_new_with_stream(stream.p));
    msg = g_mime_parser_construct_message(parser.p, nullptr);
    if (msg) {
      // Each kept field is written again under its name as GMime read it (a name the store wrote
      // with space before its colon comes out "Name:"), its raw value unchanged; a field whose name
      // mailark would not read as a header field (printable ASCII but ':', at most 200 bytes) is
      // damage, not a header, and is dropped, so what is written is mail (fuzz/pst_fuzz.cc,
      // fuzz/regressions/pst).
      GMimeHeaderList* list = g_mime_object_get_header_list(GMIME_OBJECT(msg));
      std::vector<std::pair<std::string, std::string>> kept;
      for (int i = 0; i < g_mime_header_list_get_count(list); ++i) {
        GMimeHeader* h = g_mime_header_list_get_header_at(list, i);
        const char* name = g_mime_header_get_name(h);
        const char* raw = g_mime_header_get_raw_value(h);
        static const char* kBodyFields[] = {"MIME-Version",        "Content-Type",        "Content-Transfer-Encoding",
                                            "Content-Disposition", "Content-ID",          "Content-MD5",
                                            "Content-Description", "Content-Location",    "Content-Base"};
        // The same test as not_mail_reason's, so what is kept reads back as a header field.
        bool drop = !name || !raw || std::strchr(name, ':') || !is_header_field_line(std::string(name) + ":");
        for (const char* f : kBodyFields) drop = drop || ascii_iequals(name, f);
        if (!drop) kept.emplace_back(name, raw);
      }
      g_mime_header_list_clear(list);
      for (const auto& [name, raw] : kept) {
        g_mime_header_list_append(list, name.c_str(), "", nullptr);
        g_mime_header_set_raw_value(g_mime_header_list_get_header_at(list, g_mime_header_list_get_count(list) - 1),
                                    raw.c_str());
      }
    }
  }
  if (!msg) msg = g_mime_message_new(TRUE);
  GMimeObject* obj = GMIME_OBJECT(msg);
  auto lacks = [&](const char* name) { return g_mime_object_get_header(obj, name) == nullptr; };
  auto add_addresses = [&](GMimeAddressType type, const std::vector<Address>& list) {
    InternetAddressList* target = g_mime_message_get_addresses(msg, type);
    GRef<InternetAddressList> l(address_list(list));
    internet_address_list_append(target, l.p);
  };
  if (lacks("From") && (!m.from.addr.empty() || !m.from.name.empty())) add_addresses(GMIME_ADDRESS_TYPE_FROM, {m.from});
  if (lacks("To") && !m.to.empty()) add_addresses(GMIME_ADDRESS_TYPE_TO, m.to);
  if (lacks("Cc") && !m.cc.empty()) add_addresses(GMIME_ADDRESS_TYPE_CC, m.cc);
  if (lacks("Bcc") && !m.bcc.empty()) add_addresses(GMIME_ADDRESS_TYPE_BCC, m.bcc);
  if (lacks("Subject") && !m.subject.empty()) {
    std::string subject = valid_utf8(m.subject.data(), m.subject.size());
    g_mime_message_set_subject(msg, subject.c_str(), "utf-8");
  }
  if (lacks("Date") && m.date != 0) {
    GDateTime* when = g_date_time_new_from_unix_utc(m.date);
    if (when) {
      g_mime_message_set_date(msg, when);
      g_date_time_unref(when);
    }
  }
  if (lacks("Message-ID") && !printable_id(m.message_id).empty())
    g_mime_object_set_header(obj, "Message-ID", printable_id(m.message_id).c_str(), nullptr);
  if (lacks("In-Reply-To") && !printable_id(m.in_reply_to).empty())
    g_mime_object_set_header(obj, "In-Reply-To", printable_id(m.in_reply_to).c_str(), nullptr);
  for (const auto& [name, value] : m.extra_headers) {
    std::string v = valid_utf8(value.data(), value.size());
    g_mime_object_append_header(obj, name.c_str(), v.c_str(), "utf-8");
  }

  GMimeObject* body = body_part(m.text, m.html, /*always_text=*/false);
  if (GMIME_IS_MULTIPART(body))
    g_mime_multipart_set_boundary(GMIME_MULTIPART(body), content_boundary(m, depth, "alternative").c_str());
  bool nested = depth < 16 && !m.embedded.empty();
  if (!m.attachments.empty() || nested) {
    GMimeMultipart* mixed = g_mime_multipart_new_with_subtype("mixed");
    g_mime_multipart_set_boundary(mixed, content_boundary(m, depth, "mixed").c_str());
    g_mime_multipart_add(mixed, body);
    g_object_unref(body);
    for (const auto& a : m.attachments) {
      GMimePart* part = attachment_part(a.filename, a.content_type, a.data);
      std::string cid = printable_id(a.content_id);
      if (cid.size() > 2) g_mime_object_set_content_id(GMIME_OBJECT(part), cid.substr(1, cid.size() - 2).c_str());
      g_mime_multipart_add(mixed, GMIME_OBJECT(part));
      g_object_unref(part);
    }
    if (nested)
      for (const auto& e : m.embedded) {
        GRef<GMimeMessage> inner(converted_message(e, depth + 1));
        GMimeMessagePart* mp = g_mime_message_part_new_with_message("rfc822", inner.p);
        g_mime_object_set_disposition(GMIME_OBJECT(mp), "attachment");
        g_mime_multipart_add(mixed, GMIME_OBJECT(mp));
        g_object_unref(mp);
      }
    body = GMIME_OBJECT(mixed);
  }
  g_mime_message_set_mime_part(msg, body);
  g_object_unref(body);
  return msg;
}

}  // namespace

std::string write_converted_message(const ConvertedMessage& m) {
  init_gmime();
  GRef<GMimeMessage> msg(converted_message(m, 0));
  return write_object(GMIME_OBJECT(msg.p));
}

std::string compose_message(const Draft& d) {
  init_gmime();
  GRef<GMimeMessage> msg(g_mime_message_new(TRUE));
  auto add_addresses = [&](GMimeAddressType type, const std::vector<Address>& list) {
    InternetAddressList* target = g_mime_message_get_addresses(msg.p, type);
    GRef<InternetAddressList> l(address_list(list));
    internet_address_list_append(target, l.p);
  };
  add_addresses(GMIME_ADDRESS_TYPE_FROM, {d.from});
  add_addresses(GMIME_ADDRESS_TYPE_TO, d.to);
  if (!d.cc.empty()) add_addresses(GMIME_ADDRESS_TYPE_CC, d.cc);
  std::string subject = one_line(d.subject);
  g_mime_message_set_subject(msg.p, subject.c_str(), "utf-8");
  GDateTime* now = g_date_time_new_now_local();
  g_mime_message_set_date(msg.p, now);
  g_date_time_unref(now);
  char* id = g_mime_utils_generate_message_id(d.hostname.c_str());
  g_mime_message_set_message_id(msg.p, id);
  g_free(id);
  auto clean_id = [](const std::string& s) {
    std::string out;
    for (char c : s)
      if (static_cast<unsigned char>(c) > 0x20 && c != 0x7f) out.push_back(c);
    return out;
  };
  if (!d.in_reply_to.empty())
    g_mime_object_set_header(GMIME_OBJECT(msg.p), "In-Reply-To", clean_id(d.in_reply_to).c_str(), nullptr);
  if (!d.references.empty()) {
    std::string refs;
    for (const auto& r : d.references) refs += (refs.empty() ? "" : " ") + clean_id(r);
    g_mime_object_set_header(GMIME_OBJECT(msg.p), "References", refs.c_str(), nullptr);
  }

  GMimeObject* body = body_part(d.text, d.html, /*always_text=*/true);
  if (!d.attachments.empty() || !d.forward_raw.empty()) {
    GMimeMultipart* mixed = g_mime_multipart_new_with_subtype("mixed");
    g_mime_multipart_add(mixed, body);
    g_object_unref(body);
    for (const auto& a : d.attachments) {
      GMimePart* part = attachment_part(a.filename, a.content_type, a.data);
      g_mime_multipart_add(mixed, GMIME_OBJECT(part));
      g_object_unref(part);
    }
    if (!d.forward_raw.empty()) {
      GRef<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(d.forward_raw.data(), d.forward_raw.size()));
      GRef<GMimeParser> parser(g_mime_parser_new_with_stream(stream.p));
      GRef<GMimeMessage> fwd(g_mime_parser_construct_message(parser.p, nullptr));
      if (fwd.p) {
        GMimeMessagePart* mp = g_mime_message_part_new_with_message("rfc822", fwd.p);
        g_mime_object_set_disposition(GMIME_OBJECT(mp), "attachment");
        g_mime_multipart_add(mixed, GMIME_OBJECT(mp));
        g_object_unref(mp);
      }
    }
    body = GMIME_OBJECT(mixed);
  }
  g_mime_message_set_mime_part(msg.p, body);
  g_object_unref(body);
  return write_object(GMIME_OBJECT(msg.p));
}

namespace {

// Gives every leaf part under `obj` that needs it a 7-bit transfer encoding (seven_bit_message).
// Not g_mime_object_encode: GMime 3.2 leaves parts declared "binary" as they are under the 7-bit
// constraint. Signed and encrypted multiparts are left whole: a conversion would break the signature
// (RFC 1847 asks their signers for 7-bit content; one that is not is sent as it was).
void seven_bit_parts(GMimeObject* obj, unsigned depth) {
  if (!obj || depth > 64) return;
  if (GMIME_IS_MULTIPART_SIGNED(obj) || GMIME_IS_MULTIPART_ENCRYPTED(obj)) return;
  if (GMIME_IS_MULTIPART(obj)) {
    GMimeMultipart* mp = GMIME_MULTIPART(obj);
    for (int i = 0, n = g_mime_multipart_get_count(mp); i < n; ++i)
      seven_bit_parts(g_mime_multipart_get_part(mp, i), depth + 1);
    return;
  }
  if (GMIME_IS_MESSAGE_PART(obj)) {
    GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
    if (inner) seven_bit_parts(g_mime_message_get_mime_part(inner), depth + 1);
    return;
  }
  if (!GMIME_IS_PART(obj)) return;
  GMimePart* part = GMIME_PART(obj);
  switch (g_mime_part_get_content_encoding(part)) {
    case GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE:
    case GMIME_CONTENT_ENCODING_BASE64:
    case GMIME_CONTENT_ENCODING_UUENCODE:
      return;  // 7-bit already
    default:
      break;
  }
  GMimeDataWrapper* content = g_mime_part_get_content(part);
  if (!content) return;
  GMimeContentEncoding best = g_mime_part_get_best_content_encoding(part, GMIME_ENCODING_CONSTRAINT_7BIT);
  // An ASCII part stays as it was (its header fields too), unless it was declared binary.
  if (best == GMIME_CONTENT_ENCODING_7BIT && g_mime_part_get_content_encoding(part) != GMIME_CONTENT_ENCODING_BINARY)
    return;
  // 8-bit text that names no charset (a message without MIME header fields, or a Content-Type
  // without one) would be read as US-ASCII once encoded (RFC 2045 5.2): it is named, UTF-8 when the
  // text is valid UTF-8 and otherwise RFC 1428's "unknown-8bit", which readers guess from.
  GMimeContentType* type = g_mime_object_get_content_type(obj);
  if (best != GMIME_CONTENT_ENCODING_7BIT && (!type || g_mime_content_type_is_type(type, "text", "*")) &&
      !g_mime_object_get_content_type_parameter(obj, "charset")) {
    GRef<GMimeStream> mem(g_mime_stream_mem_new());
    g_mime_data_wrapper_write_to_stream(content, mem.p);
    GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.p));
    const bool utf8 = !bytes || g_utf8_validate(reinterpret_cast<const char*>(bytes->data), bytes->len, nullptr);
    g_mime_object_set_content_type_parameter(obj, "charset", utf8 ? "utf-8" : "unknown-8bit");
  }
  g_mime_part_set_content_encoding(part, best);
}

}  // namespace

std::optional<std::string> seven_bit_message(std::string_view raw) {
  if (!has_eight_bit_body(raw)) return std::nullopt;
  init_gmime();
  GMimeParserOptions* opts = g_mime_parser_options_new();
  g_mime_parser_options_set_rfc2047_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
  g_mime_parser_options_set_address_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
  GRef<GMimeParser> parser(message_parser(raw));
  GRef<GMimeMessage> msg(g_mime_parser_construct_message(parser.p, opts));
  g_mime_parser_options_free(opts);
  if (!msg.p || !msg.p->mime_part) return std::nullopt;
  seven_bit_parts(msg.p->mime_part, 0);
  if (!g_mime_object_get_header(GMIME_OBJECT(msg.p), "MIME-Version"))
    g_mime_object_set_header(GMIME_OBJECT(msg.p), "MIME-Version", "1.0", nullptr);
  return write_object(GMIME_OBJECT(msg.p));
}

Result<ParsedMessage> parse_message(std::string_view raw, const Limits& limits, bool headers_only,
                                    bool extract_documents) {
  if (std::string reason = not_mail_reason(raw); !reason.empty()) {
    return make_error(ErrorCode::kBadInput, reason);
  }
  init_gmime();
  ParsedMessage out;
  ParseState st{&limits, &out};
  std::shared_ptr<TextExtractor> extractor = extract_documents && !headers_only ? text_extractor() : nullptr;
  st.extractor = extractor.get();

  // An mbox "From " separator is not part of the message GMime should see.
  std::string_view body = raw;
  if (body.substr(0, 5) == "From ") {
    std::size_t nl = body.find('\n');
    body = nl == std::string_view::npos ? std::string_view() : body.substr(nl + 1);
  }
  // Bound the header block GMime parses into memory structures.
  std::size_t header_end = body.find("\n\n");
  std::size_t header_end_crlf = body.find("\r\n\r\n");
  header_end = std::min(header_end, header_end_crlf);
  if (header_end == std::string_view::npos) header_end = body.size();
  if (body.substr(0, 1) == "\n" || body.substr(0, 2) == "\r\n") {
    out.malformed = true;
    out.problems.push_back("no header fields");
  }
  if (header_end > limits.max_header_bytes) {
    out.malformed = true;
    out.problems.push_back("header block larger than " + std::to_string(limits.max_header_bytes) + " bytes");
  }

  GMimeParserOptions* opts = g_mime_parser_options_new();
  g_mime_parser_options_set_rfc2047_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
  g_mime_parser_options_set_address_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
  // Raw 8-bit header bytes as every reader of the message reads them (decode_header_text)
  set_fallback_charsets(opts, declared_charset(body));
  g_mime_parser_options_set_warning_callback(opts, on_parser_warning, &st);

  // Headers only: the header block and the blank line that ends it, so the body is never parsed.
  if (headers_only && header_end < body.size()) body = body.substr(0, header_end + (body[header_end] == '\r' ? 4 : 2));
  GRef<GMimeParser> parser(message_parser(body));
  GRef<GMimeMessage> msg(g_mime_parser_construct_message(parser.p, opts));
  if (!msg.p) {
    g_mime_parser_options_free(opts);
    out.malformed = true;
    out.problems.push_back("GMime could not construct a message");
    return out;
  }

  if (const char* id = g_mime_message_get_message_id(msg.p)) out.message_id = valid_utf8(id);
  GMimeHeaderList* header_list = g_mime_object_get_header_list(GMIME_OBJECT(msg.p));
  // The bytes as sent of every field `name` joined with ", " (or of the last one): the values GMime
  // keeps have their 8-bit bytes made UTF-8 already.
  auto sent_fields = [&](const char* name, bool last_only) {
    std::optional<std::string> value;
    const int count = g_mime_header_list_get_count(header_list);
    for (int i = 0; i < count; ++i) {
      GMimeHeader* h = g_mime_header_list_get_header_at(header_list, i);
      const char* raw = g_mime_header_get_raw_value(h);
      if (!raw || g_ascii_strcasecmp(g_mime_header_get_name(h), name) != 0) continue;
      if (!value || last_only)
        value = std::string(raw);
      else if (value->size() < kMaxJoinedHeaderBytes)
        *value += std::string(", ") + raw;
    }
    return value;
  };
  const char* subj = g_mime_message_get_subject(msg.p);
  std::optional<std::string> repaired_subject;
  if (subj)
    if (auto sent = sent_fields("Subject", true)) repaired_subject = repaired_encoded_words(*sent);
  if (repaired_subject) {
    // Words GMime would decode wrongly (repaired_encoded_words): decoded from the repaired text,
    // with the options GMime read the message with
    char* decoded = g_mime_utils_header_decode_text(opts, repaired_subject->c_str());
    out.subject = valid_utf8(decoded ? decoded : repaired_subject->c_str());
    g_free(decoded);
    const std::size_t first = out.subject.find_first_not_of(" \t\r\n");
    out.subject.erase(0, first == std::string::npos ? out.subject.size() : first);
    while (!out.subject.empty() && std::strchr(" \t\r\n", out.subject.back())) out.subject.pop_back();
    for (char& c : out.subject)
      if (c == '\t' || c == '\r' || c == '\n') c = ' ';
  } else if (subj) {
    out.subject = valid_utf8(subj);
    // Folded headers keep their tabs and line breaks; a subject is one line.
    for (char& c : out.subject)
      if (c == '\t' || c == '\r' || c == '\n') c = ' ';
  }
  if (GDateTime* dt = g_mime_message_get_date(msg.p)) out.date = g_date_time_to_unix(dt);
  struct {
    const char* header;
    GMimeAddressType type;
    std::vector<Address>* list;
  } address_fields[] = {{"From", GMIME_ADDRESS_TYPE_FROM, &out.from},
                        {"To", GMIME_ADDRESS_TYPE_TO, &out.to},
                        {"Cc", GMIME_ADDRESS_TYPE_CC, &out.cc},
                        {"Bcc", GMIME_ADDRESS_TYPE_BCC, &out.bcc},
                        {"Reply-To", GMIME_ADDRESS_TYPE_REPLY_TO, &out.reply_to}};
  for (auto& f : address_fields) {
    const char* raw_value = g_mime_object_get_header(GMIME_OBJECT(msg.p), f.header);
    std::optional<std::string> sent = raw_value ? sent_fields(f.header, false) : std::nullopt;
    if (auto escaped = sent ? repaired_encoded_words(*sent) : std::nullopt) {
      // Parsed again from the repaired text (repaired_encoded_words says why)
      if (InternetAddressList* list = internet_address_list_parse(opts, escaped->c_str())) {
        read_addresses(list, *f.list, limits.max_addresses);
        g_object_unref(list);
      }
      keep_every_address(*f.list, valid_utf8(escaped->c_str()), limits.max_addresses);
      continue;
    }
    read_addresses(g_mime_message_get_addresses(msg.p, f.type), *f.list, limits.max_addresses);
    if (!raw_value) continue;
    keep_every_address(*f.list, valid_utf8(raw_value), limits.max_addresses);
  }

  auto read_refs = [&](const char* header, bool first_only) {
    const char* value = g_mime_object_get_header(GMIME_OBJECT(msg.p), header);
    if (!value) return;
    GMimeReferences* refs = g_mime_references_parse(opts, value);
    if (!refs) return;
    int n = g_mime_references_length(refs);
    for (int i = 0; i < n && out.references.size() < 500; ++i) {
      std::string id = valid_utf8(g_mime_references_get_message_id(refs, i));
      if (first_only) {
        out.in_reply_to = id;
        break;
      }
      out.references.push_back(id);
    }
    g_mime_references_free(refs);
  };
  read_refs("In-Reply-To", true);
  read_refs("References", false);

  if (!headers_only) walk_message_body(msg.p, 0, false, st);
  g_mime_parser_options_free(opts);
  return out;
}

void set_text_by_second_decode_for_test(bool on) { g_text_by_second_decode = on; }

}  // namespace mailark
