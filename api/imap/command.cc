#include "api/imap/command.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <functional>

#include "common/ascii.h"

namespace mailark::api::imap {
namespace {

bool is_ctl(char c) {
  auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

// atom-specials of RFC 9051 minus the ones this parser handles itself.
bool is_atom_char(char c) {
  return !is_ctl(c) && c != ' ' && c != '(' && c != ')' && c != '{' && c != '"';
}

bool is_tag_char(char c) {
  return is_atom_char(c) && c != '+' && c != '%' && c != '*' && c != '\\' && c != ']' &&
         static_cast<unsigned char>(c) < 0x80;
}

std::optional<std::uint64_t> parse_number(std::string_view s, std::uint64_t max) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    if (v > (max - static_cast<std::uint64_t>(c - '0')) / 10) return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

// Whether a line (without its line end) ends in a literal marker; *n and *sync filled.
bool literal_marker(std::string_view line, std::uint64_t* n, bool* sync) {
  if (line.empty() || line.back() != '}') return false;
  std::size_t open = line.rfind('{');
  if (open == std::string_view::npos) return false;
  std::string_view inner = line.substr(open + 1, line.size() - open - 2);
  *sync = true;
  if (!inner.empty() && inner.back() == '+') {
    *sync = false;
    inner.remove_suffix(1);
  }
  auto v = parse_number(inner, UINT64_MAX / 2);
  if (!v) return false;
  *n = *v;
  return true;
}

bool section_prefix(std::string_view atom) {
  std::string u = ascii_upper(atom);
  return u == "BODY" || u == "BODY.PEEK" || u == "BINARY" || u == "BINARY.PEEK" || u == "BINARY.SIZE";
}

class Parser {
 public:
  Parser(std::string_view s, const CommandLimits& limits) : s_(s), limits_(limits) {}

  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  std::size_t pos() const { return pos_; }

  bool space() {
    if (peek() != ' ') return false;
    while (peek() == ' ') ++pos_;  // lenient: runs of spaces
    return true;
  }

  bool atom(std::string& out, bool tag) {
    std::size_t start = pos_;
    int bracket = 0;
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (bracket > 0) {
        if (c == '\r' || c == '\n') return fail("a line end inside brackets");
        if (c == '[') ++bracket;
        if (c == ']') --bracket;
        ++pos_;
        continue;
      }
      if (tag ? !is_tag_char(c) : !is_atom_char(c)) break;
      // Only FETCH's section attributes hold spaces and parentheses inside brackets
      // (BODY[HEADER.FIELDS (A B)]); elsewhere '[' is an ordinary atom character.
      if (c == '[' && !tag && section_prefix(s_.substr(start, pos_ - start))) ++bracket;
      ++pos_;
    }
    if (bracket > 0) return fail("an unclosed '['");
    if (pos_ == start) return fail(at_end() ? "a missing argument" : std::string("an unexpected character '") +
                                                                         printable(peek()) + "'");
    out.assign(s_.substr(start, pos_ - start));
    return true;
  }

  bool value(Value& v, std::size_t depth) {
    if (++values_ > limits_.max_values) return fail("too many arguments");
    char c = peek();
    if (c == '(') {
      if (depth >= limits_.max_depth) return fail("parentheses nested too deep");
      ++pos_;
      v.kind = Value::Kind::kList;
      if (peek() == ')') {
        ++pos_;
        return true;
      }
      while (true) {
        Value item;
        if (!value(item, depth + 1)) return false;
        v.list.push_back(std::move(item));
        if (peek() == ')') {
          ++pos_;
          return true;
        }
        if (!space()) return fail(at_end() ? "unbalanced parentheses: a missing ')'" : "a missing space in a list");
        if (peek() == ')') {  // "(a )": lenient
          ++pos_;
          return true;
        }
      }
    }
    if (c == '"') {
      ++pos_;
      v.kind = Value::Kind::kString;
      while (true) {
        if (at_end()) return fail("an unterminated quoted string");
        char q = s_[pos_++];
        if (q == '"') return true;
        if (q == '\r' || q == '\n') return fail("a line end inside a quoted string");
        if (q == '\\') {
          if (at_end()) return fail("an unterminated quoted string");
          char e = s_[pos_++];
          if (e != '\\' && e != '"') return fail("a quoted string escapes only \\ and \"");
          q = e;
        }
        v.text.push_back(q);
      }
    }
    if (c == '{' || (c == '~' && pos_ + 1 < s_.size() && s_[pos_ + 1] == '{')) {
      if (c == '~') ++pos_;
      std::size_t close = s_.find('}', pos_);
      if (close == std::string_view::npos) return fail("a literal without '}'");
      std::string_view inner = s_.substr(pos_ + 1, close - pos_ - 1);
      if (!inner.empty() && inner.back() == '+') inner.remove_suffix(1);
      auto n = parse_number(inner, UINT64_MAX / 2);
      if (!n) return fail("a bad literal length");
      pos_ = close + 1;
      if (peek() == '\r') ++pos_;
      if (peek() != '\n') return fail("a literal marker not at the end of a line");
      ++pos_;
      if (*n > s_.size() - pos_) return fail("a literal longer than the command");
      v.kind = Value::Kind::kString;
      v.literal = true;
      v.text.assign(s_.substr(pos_, static_cast<std::size_t>(*n)));
      pos_ += static_cast<std::size_t>(*n);
      return true;
    }
    v.kind = Value::Kind::kAtom;
    return atom(v.text, false);
  }

  bool fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    return false;
  }
  const std::string& error() const { return error_; }

  static std::string printable(char c) {
    if (is_ctl(c) || static_cast<unsigned char>(c) >= 0x80) return "\\x" + std::to_string(static_cast<unsigned char>(c));
    return std::string(1, c);
  }

 private:
  std::string_view s_;
  const CommandLimits& limits_;
  std::size_t pos_ = 0;
  std::size_t values_ = 0;
  std::string error_;
};

}  // namespace

bool Value::is_nil() const {
  return kind == Kind::kAtom && ascii_iequals(text, "NIL");
}

std::optional<Command> parse_command(std::string_view whole, const CommandLimits& limits, std::string* error,
                                     std::string* tag) {
  // Without the final line end.
  if (!whole.empty() && whole.back() == '\n') whole.remove_suffix(1);
  if (!whole.empty() && whole.back() == '\r') whole.remove_suffix(1);
  Parser p(whole, limits);
  Command cmd;
  if (!p.atom(cmd.tag, /*tag=*/true)) {
    *error = whole.empty() ? "an empty command" : "a missing or invalid tag";
    return std::nullopt;
  }
  *tag = cmd.tag;
  if (!p.space()) {
    *error = "a missing command name";
    return std::nullopt;
  }
  std::string name;
  if (!p.atom(name, false)) {
    *error = "a missing command name";
    return std::nullopt;
  }
  cmd.name = ascii_upper(name);
  if (cmd.name == "UID") {
    std::string sub;
    if (!p.space() || !p.atom(sub, false)) {
      *error = "UID needs a command (FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE)";
      return std::nullopt;
    }
    cmd.name += " " + ascii_upper(sub);
  }
  while (!p.at_end()) {
    if (!p.space()) {
      *error = p.error().empty() ? std::string("an unexpected character '") + Parser::printable(p.peek()) + "' (a space was expected)"
                                 : p.error();
      return std::nullopt;
    }
    if (p.at_end()) break;  // trailing spaces: lenient
    Value v;
    if (!p.value(v, 0)) {
      *error = p.error();
      return std::nullopt;
    }
    cmd.args.push_back(std::move(v));
    if (!p.at_end() && p.peek() == ')') {
      *error = "unbalanced parentheses: an extra ')'";
      return std::nullopt;
    }
  }
  return cmd;
}

// ---- framing ----

void CommandReader::feed(std::string_view bytes) {
  if (pos_ > 0 && pos_ >= buffer_.size() / 2) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  buffer_.append(bytes);
}

CommandReader::Event CommandReader::fail(Event e, std::string why, std::string_view partial) {
  error_ = std::move(why);
  error_tag_ = "*";
  // The tag, when the command got as far as one.
  std::size_t i = 0;
  while (i < partial.size() && is_tag_char(partial[i])) ++i;
  if (i > 0 && i < partial.size() && partial[i] == ' ') error_tag_ = std::string(partial.substr(0, i));
  return e;
}

CommandReader::Event CommandReader::next() {
  while (skip_ > 0) {
    std::size_t have = buffer_.size() - pos_;
    if (have == 0) return Event::kNone;
    std::size_t n = std::min(have, skip_);
    pos_ += n;
    skip_ -= n;
    if (skip_ == 0) {
      // The rest of the refused command's line goes too.
      raw_mode_ = false;
      discard_line_ = true;
    }
  }
  if (discard_line_) {
    std::size_t lf = buffer_.find('\n', pos_);
    if (lf == std::string::npos) {
      pos_ = buffer_.size();
      return Event::kNone;
    }
    pos_ = lf + 1;
    discard_line_ = false;
  }
  if (raw_mode_) {
    std::size_t lf = buffer_.find('\n', pos_);
    if (lf == std::string::npos) {
      if (buffer_.size() - pos_ > limits_.max_line_bytes) return fail(Event::kClose, "line too long", {});
      return Event::kNone;
    }
    std::size_t end = lf;
    if (end > pos_ && buffer_[end - 1] == '\r') --end;
    raw_line_.assign(buffer_, pos_, end - pos_);
    pos_ = lf + 1;
    raw_mode_ = false;
    return Event::kLine;
  }
  while (true) {
    std::size_t from = pos_ + scan_;
    std::size_t lf = buffer_.find('\n', from);
    std::string_view partial(buffer_.data() + pos_, buffer_.size() - pos_);
    if (lf == std::string::npos) {
      if (buffer_.size() - from > limits_.max_line_bytes) {
        pos_ = buffer_.size();
        scan_ = 0;
        gated_ = false;
        return fail(Event::kClose, "command line too long", partial);
      }
      return Event::kNone;
    }
    std::size_t end = lf;
    if (end > from && buffer_[end - 1] == '\r') --end;
    std::string_view line(buffer_.data() + from, end - from);
    if (line.size() > limits_.max_line_bytes || scan_ > limits_.max_line_bytes + limits_.max_append_bytes) {
      pos_ = lf + 1;
      scan_ = 0;
      gated_ = false;
      return fail(Event::kBad, "command line too long", partial);
    }
    std::uint64_t n = 0;
    bool sync = true;
    if (!literal_marker(line, &n, &sync)) {
      std::string_view whole(buffer_.data() + pos_, lf + 1 - pos_);
      pos_ = lf + 1;
      scan_ = 0;
      gated_ = false;
      continued_ = false;
      return finish_command(whole);
    }
    // A literal follows. APPEND's may be as large as a message.
    std::string_view head(buffer_.data() + pos_, end - pos_);
    bool append = false;
    {
      std::size_t sp = head.find(' ');
      if (sp != std::string_view::npos) {
        std::string_view rest = head.substr(sp + 1);
        append = rest.size() >= 7 && ascii_iequals(rest.substr(0, 6), "APPEND") && rest[6] == ' ';
      }
    }
    // A literal refused: the command ends here; a synchronising one was never sent, a
    // non-synchronising one is skipped (or, too large to skip, the connection closes).
    auto refuse = [&](Event e, std::string why) {
      Event ev = fail(e, why, partial);
      pos_ = lf + 1;
      scan_ = 0;
      gated_ = false;
      continued_ = false;
      if (!sync) {
        if (n > limits_.max_skip_bytes) return fail(Event::kClose, std::move(why), partial);
        skip_ = static_cast<std::size_t>(n);
      }
      return ev;
    };
    const std::uint64_t limit = append && authenticated_ ? limits_.max_append_bytes : limits_.max_literal_bytes;
    if (n > limit)
      return refuse(Event::kTooBig,
                    "a literal of " + std::to_string(n) + " bytes is over the limit of " + std::to_string(limit));
    if (gate_ && n > limits_.max_literal_bytes && !gated_) {
      if (auto refusal = gate_(n)) return refuse(Event::kBusy, std::move(*refusal));
      gated_ = true;
      // Room for the whole literal at once: no copying as it grows (pages are used as it arrives).
      buffer_.reserve(lf + 1 + static_cast<std::size_t>(n) + limits_.max_line_bytes);
    }
    const std::size_t literal_start = lf + 1;
    if (buffer_.size() - literal_start < n) {
      if (sync && !continued_) {
        continued_ = true;
        return Event::kContinue;
      }
      return Event::kNone;
    }
    continued_ = false;
    gated_ = false;
    scan_ = literal_start + static_cast<std::size_t>(n) - pos_;
  }
}

Command CommandReader::take_command() {
  Command c = std::move(command_);
  command_ = Command{};
  buffer_.erase(0, pos_);
  pos_ = 0;
  if (buffer_.capacity() > (1u << 20) && buffer_.size() < buffer_.capacity() / 4) buffer_.shrink_to_fit();
  return c;
}

CommandReader::Event CommandReader::finish_command(std::string_view whole) {
  std::string error, tag;
  auto cmd = parse_command(whole, limits_, &error, &tag);
  if (!cmd) {
    error_ = error;
    error_tag_ = tag.empty() ? "*" : tag;
    return Event::kBad;
  }
  command_ = std::move(*cmd);
  return Event::kCommand;
}

// ---- sequence sets ----

std::optional<SequenceSet> parse_sequence_set(std::string_view text) {
  SequenceSet set;
  if (text == "$") {
    set.saved = true;
    return set;
  }
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    std::string_view item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (item.empty()) return std::nullopt;
    auto one = [](std::string_view s) -> std::optional<std::uint32_t> {
      if (s == "*") return SequenceSet::kStar;
      auto v = parse_number(s, 0xffffffffu);
      if (!v || *v == 0) return std::nullopt;
      return static_cast<std::uint32_t>(*v);
    };
    std::size_t colon = item.find(':');
    std::optional<std::uint32_t> a = one(item.substr(0, colon)), b = a;
    if (colon != std::string_view::npos) b = one(item.substr(colon + 1));
    if (!a || !b) return std::nullopt;
    if (set.ranges.size() >= kMaxSequenceRanges) return std::nullopt;
    set.ranges.emplace_back(*a, *b);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return set;
}

std::vector<std::uint32_t> SequenceSet::resolve(std::uint32_t largest) const {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> rs;
  if (largest == 0) return {};
  for (auto [a, b] : ranges) {
    if (a == kStar) a = largest;
    if (b == kStar) b = largest;
    if (a > b) std::swap(a, b);
    if (a > largest) continue;
    rs.emplace_back(a, std::min(b, largest));
  }
  std::sort(rs.begin(), rs.end());
  std::vector<std::uint32_t> out;
  std::uint32_t next = 1;  // the smallest number not yet emitted
  for (auto [a, b] : rs) {
    for (std::uint64_t n = std::max(a, next); n <= b; ++n) out.push_back(static_cast<std::uint32_t>(n));
    if (b >= next) next = b + 1;
  }
  return out;
}

bool SequenceSet::contains(std::uint32_t n, std::uint32_t largest) const {
  for (auto [a, b] : ranges) {
    if (a == kStar) a = largest;
    if (b == kStar) b = largest;
    if (a > b) std::swap(a, b);
    if (n >= a && n <= b) return true;
  }
  return false;
}

// ---- FETCH ----

namespace {

bool parse_section(std::string_view spec, Section& s, std::string* error) {
  // spec: the text between '[' and ']'.
  std::size_t i = 0;
  while (i < spec.size() && spec[i] >= '0' && spec[i] <= '9') {
    std::size_t j = i;
    while (j < spec.size() && spec[j] >= '0' && spec[j] <= '9') ++j;
    auto n = parse_number(spec.substr(i, j - i), 100000);
    if (!n || *n == 0) {
      *error = "a section part number must be 1 or more";
      return false;
    }
    if (s.part.size() >= 64) {
      *error = "a section nested too deep";
      return false;
    }
    s.part.push_back(static_cast<unsigned>(*n));
    i = j;
    if (i < spec.size() && spec[i] == '.') {
      ++i;
      if (i == spec.size()) {
        *error = "a section ends in '.'";
        return false;
      }
    } else {
      break;
    }
  }
  std::string_view rest = spec.substr(i);
  if (rest.empty()) return true;
  std::string word = ascii_upper(rest.substr(0, rest.find(' ')));
  if (word == "HEADER" && rest.size() == 6) {
    s.text = Section::Text::kHeader;
    return true;
  }
  if (word == "TEXT" && rest.size() == 4) {
    s.text = Section::Text::kText;
    return true;
  }
  if (word == "MIME" && rest.size() == 4 && !s.part.empty()) {
    s.text = Section::Text::kMime;
    return true;
  }
  if (word == "HEADER.FIELDS" || word == "HEADER.FIELDS.NOT") {
    s.text = word == "HEADER.FIELDS" ? Section::Text::kHeaderFields : Section::Text::kHeaderFieldsNot;
    std::string_view list = rest.substr(word.size());
    if (list.size() < 3 || list[0] != ' ' || list[1] != '(' || list.back() != ')') {
      *error = "HEADER.FIELDS needs a list of field names";
      return false;
    }
    list = list.substr(2, list.size() - 3);
    std::string error2, tag;
    CommandLimits limits;
    // The names are astrings: parse them with the command grammar.
    Parser p(list, limits);
    while (!p.at_end()) {
      Value v;
      if (!p.value(v, 1) || !v.is_astring() || v.text.empty()) {
        *error = "a bad field name in HEADER.FIELDS";
        return false;
      }
      for (char c : v.text)
        if (is_ctl(c) || c == ':' || c == ' ') {
          *error = "a bad field name in HEADER.FIELDS";
          return false;
        }
      s.fields.push_back(v.text);
      if (s.fields.size() > 1000) {
        *error = "too many field names";
        return false;
      }
      if (!p.at_end() && !p.space()) {
        *error = "a bad field list in HEADER.FIELDS";
        return false;
      }
    }
    if (s.fields.empty()) {
      *error = "HEADER.FIELDS needs at least one field name";
      return false;
    }
    return true;
  }
  *error = "an unknown section \"" + std::string(rest.substr(0, 40)) + "\"";
  return false;
}

bool parse_one_fetch(const Value& v, std::vector<FetchAttr>& out, std::string* error) {
  if (!v.is_atom()) {
    *error = "a FETCH attribute must be an atom";
    return false;
  }
  std::string name = ascii_upper(v.text);
  using K = FetchAttr::Kind;
  auto simple = [&](K k) {
    FetchAttr a;
    a.kind = k;
    a.name = name;
    out.push_back(a);
    return true;
  };
  if (name == "ALL") {
    for (K k : {K::kFlags, K::kInternalDate, K::kSize, K::kEnvelope}) simple(k);
    for (auto& a : out) a.name = a.kind == K::kFlags ? "FLAGS" : a.kind == K::kInternalDate ? "INTERNALDATE" : a.kind == K::kSize ? "RFC822.SIZE" : "ENVELOPE";
    return true;
  }
  if (name == "FAST" || name == "FULL") {
    std::size_t before = out.size();
    simple(K::kFlags);
    simple(K::kInternalDate);
    simple(K::kSize);
    if (name == "FULL") {
      simple(K::kEnvelope);
      simple(K::kBody);
    }
    const char* names[] = {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"};
    for (std::size_t i = before; i < out.size(); ++i) out[i].name = names[i - before];
    return true;
  }
  if (name == "UID") return simple(K::kUid);
  if (name == "FLAGS") return simple(K::kFlags);
  if (name == "INTERNALDATE") return simple(K::kInternalDate);
  if (name == "RFC822.SIZE") return simple(K::kSize);
  if (name == "ENVELOPE") return simple(K::kEnvelope);
  if (name == "BODY") return simple(K::kBody);
  if (name == "BODYSTRUCTURE") return simple(K::kBodyStructure);
  if (name == "MODSEQ") return simple(K::kModseq);
  if (name == "RFC822") return simple(K::kRfc822);
  if (name == "RFC822.HEADER") return simple(K::kRfc822Header);
  if (name == "RFC822.TEXT") return simple(K::kRfc822Text);
  std::string prefix;
  bool peek = false;
  if (name.rfind("BODY.PEEK[", 0) == 0) {
    prefix = "BODY";
    peek = true;
  } else if (name.rfind("BODY[", 0) == 0) {
    prefix = "BODY";
  } else if (name.rfind("BINARY.SIZE[", 0) == 0) {
    prefix = "BINARY.SIZE";
  } else if (name.rfind("BINARY.PEEK[", 0) == 0) {
    prefix = "BINARY";
    peek = true;
  } else if (name.rfind("BINARY[", 0) == 0) {
    prefix = "BINARY";
  } else {
    *error = "an unknown FETCH attribute \"" + v.text.substr(0, 40) + "\"";
    return false;
  }
  const std::string& raw = v.text;
  std::size_t open = raw.find('['), close = raw.rfind(']');
  if (close == std::string::npos || close < open) {
    *error = "a section without ']'";
    return false;
  }
  FetchAttr a;
  a.kind = prefix == "BINARY.SIZE" ? K::kBinarySize : prefix == "BINARY" ? K::kBinary : K::kSection;
  a.peek = peek;
  if (!parse_section(std::string_view(raw).substr(open + 1, close - open - 1), a.section, error)) return false;
  if (a.kind != K::kSection && a.section.text != Section::Text::kAll) {
    *error = prefix + " takes part numbers only (RFC 9051 section-binary)";
    return false;
  }
  std::string_view tail = std::string_view(raw).substr(close + 1);
  std::string partial_name;
  if (!tail.empty()) {
    if (tail.front() != '<' || tail.back() != '>' || a.kind == K::kBinarySize) {
      *error = "a bad partial range (<offset.count>)";
      return false;
    }
    std::string_view inner = tail.substr(1, tail.size() - 2);
    std::size_t dot = inner.find('.');
    auto off = parse_number(inner.substr(0, dot), 0xffffffffu);
    std::optional<std::uint64_t> count = dot == std::string_view::npos ? std::nullopt : parse_number(inner.substr(dot + 1), 0xffffffffu);
    if (!off || !count || *count == 0) {
      *error = "a bad partial range (<offset.count>, count at least 1)";
      return false;
    }
    a.partial = std::make_pair(*off, *count);
    partial_name = "<" + std::to_string(*off) + ">";
  }
  // The response names the section as asked, upper-cased, without PEEK and without the count.
  std::string section_text = ascii_upper(std::string_view(raw).substr(open, close - open + 1));
  a.name = prefix + section_text + partial_name;
  out.push_back(std::move(a));
  return true;
}

}  // namespace

std::optional<std::vector<FetchAttr>> parse_fetch_attrs(const Value& v, std::string* error) {
  std::vector<FetchAttr> out;
  if (v.is_list()) {
    if (v.list.empty()) {
      *error = "an empty FETCH attribute list";
      return std::nullopt;
    }
    for (const auto& item : v.list)
      if (!parse_one_fetch(item, out, error)) return std::nullopt;
    return out;
  }
  if (!parse_one_fetch(v, out, error)) return std::nullopt;
  return out;
}

// ---- flags ----

std::optional<std::uint32_t> system_flag(std::string_view name) {
  static constexpr std::pair<const char*, std::uint32_t> kFlags[] = {
      {"\\Seen", 1}, {"\\Answered", 2}, {"\\Flagged", 4}, {"\\Deleted", 8}, {"\\Draft", 16}};
  for (const auto& [n, bit] : kFlags)
    if (ascii_iequals(name, n)) return bit;
  return std::nullopt;
}

std::string flags_text(std::uint32_t flags, const std::vector<std::string>& keywords) {
  std::string out = "(";
  static constexpr std::pair<const char*, std::uint32_t> kFlags[] = {
      {"\\Seen", 1}, {"\\Answered", 2}, {"\\Flagged", 4}, {"\\Deleted", 8}, {"\\Draft", 16}};
  for (const auto& [n, bit] : kFlags)
    if (flags & bit) {
      if (out.size() > 1) out += ' ';
      out += n;
    }
  for (const auto& k : keywords) {
    if (out.size() > 1) out += ' ';
    out += k;
  }
  return out + ")";
}

bool parse_flag_list(const Value& v, std::uint32_t* flags, std::vector<std::string>* keywords, std::string* error) {
  std::vector<const Value*> items;
  if (v.is_list()) {
    for (const auto& x : v.list) items.push_back(&x);
  } else {
    items.push_back(&v);
  }
  for (const Value* x : items) {
    if (!x->is_atom() || x->text.empty()) {
      *error = "a flag must be an atom";
      return false;
    }
    if (x->text[0] == '\\') {
      auto bit = system_flag(x->text);
      if (!bit) {
        *error = ascii_iequals(x->text, "\\Recent") ? "\\Recent cannot be stored" : "an unknown system flag " + x->text.substr(0, 40);
        return false;
      }
      *flags |= *bit;
      continue;
    }
    for (char c : x->text)
      if (c == '[' || c == ']' || c == '*' || c == '%' || c == '\\' || static_cast<unsigned char>(c) >= 0x80) {
        *error = "a keyword holds a character keywords cannot have";
        return false;
      }
    if (x->text.size() > 100) {
      *error = "a keyword longer than 100 bytes";
      return false;
    }
    bool dup = false;
    for (const auto& k : *keywords) dup = dup || ascii_iequals(k, x->text);
    if (!dup) keywords->push_back(x->text);
  }
  return true;
}

// ---- SEARCH ----

namespace {

constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

class SearchParser {
 public:
  SearchParser(const std::vector<Value>& args, std::size_t pos, std::string* error) : a_(args), i_(pos), error_(error) {}

  bool key(SearchKey& k, unsigned depth) {
    if (depth > 64) return fail("search keys nested too deep");
    if (i_ >= a_.size()) return fail("a missing search key");
    const Value& v = a_[i_++];
    using K = SearchKey::Kind;
    if (v.is_list()) {
      k.kind = K::kAnd;
      SearchParser inner(v.list, 0, error_);
      if (v.list.empty()) return fail("an empty search key list");
      while (inner.i_ < v.list.size()) {
        SearchKey child;
        if (!inner.key(child, depth + 1)) return false;
        k.children.push_back(std::move(child));
      }
      return true;
    }
    if (!v.is_atom()) return fail("a search key must be an atom");
    std::string name = ascii_upper(v.text);
    struct Simple {
      const char* name;
      K kind;
      std::uint32_t flag;
    };
    static const Simple kSimple[] = {
        {"ALL", K::kAll, 0},        {"ANSWERED", K::kFlag, 2},    {"DELETED", K::kFlag, 8},
        {"DRAFT", K::kFlag, 16},    {"FLAGGED", K::kFlag, 4},     {"SEEN", K::kFlag, 1},
        {"UNANSWERED", K::kUnflag, 2}, {"UNDELETED", K::kUnflag, 8}, {"UNDRAFT", K::kUnflag, 16},
        {"UNFLAGGED", K::kUnflag, 4}, {"UNSEEN", K::kUnflag, 1},   {"NEW", K::kNew, 0},
        {"OLD", K::kOld, 0},        {"RECENT", K::kRecent, 0}};
    for (const auto& s : kSimple)
      if (name == s.name) {
        k.kind = s.kind;
        k.flag = s.flag;
        return true;
      }
    struct Text {
      const char* name;
      K kind;
    };
    static const Text kText[] = {{"BCC", K::kBcc},   {"BODY", K::kBody}, {"CC", K::kCc},
                                 {"FROM", K::kFrom}, {"SUBJECT", K::kSubject}, {"TEXT", K::kText},
                                 {"TO", K::kTo}};
    for (const auto& t : kText)
      if (name == t.name) {
        k.kind = t.kind;
        return astring(k.text);
      }
    static const Text kDates[] = {{"BEFORE", K::kBefore},         {"ON", K::kOn},
                                  {"SINCE", K::kSince},           {"SENTBEFORE", K::kSentBefore},
                                  {"SENTON", K::kSentOn},         {"SENTSINCE", K::kSentSince}};
    for (const auto& t : kDates)
      if (name == t.name) {
        k.kind = t.kind;
        std::string d;
        if (!astring(d)) return false;
        auto days = parse_imap_date(d);
        if (!days) return fail("a bad date \"" + d.substr(0, 40) + "\" (like 1-Feb-2026)");
        k.number = *days;
        return true;
      }
    if (name == "LARGER" || name == "SMALLER") {
      k.kind = name == "LARGER" ? K::kLarger : K::kSmaller;
      return number(k.number);
    }
    if (name == "HEADER") {
      k.kind = K::kHeader;
      return astring(k.keyword) && astring(k.text);
    }
    if (name == "KEYWORD" || name == "UNKEYWORD") {
      k.kind = name == "KEYWORD" ? K::kFlag : K::kUnflag;
      std::string kw;
      if (!astring(kw)) return false;
      if (kw.size() > 0 && kw[0] == '\\') {
        auto bit = system_flag(kw);
        if (!bit) return fail("an unknown system flag in KEYWORD");
        k.flag = *bit;
      } else {
        k.keyword = kw;
      }
      return true;
    }
    if (name == "NOT") {
      k.kind = K::kNot;
      k.children.emplace_back();
      return key(k.children.back(), depth + 1);
    }
    if (name == "OR") {
      k.kind = K::kOr;
      k.children.resize(2);
      return key(k.children[0], depth + 1) && key(k.children[1], depth + 1);
    }
    if (name == "UID") {
      k.kind = K::kUid;
      if (i_ >= a_.size() || !a_[i_].is_atom()) return fail("UID needs a sequence set");
      k.set = parse_sequence_set(a_[i_++].text);
      if (!k.set) return fail("a bad UID set");
      return true;
    }
    if (name == "MODSEQ") {
      k.kind = K::kModseq;
      // Optional entry name and type (RFC 7162): skipped.
      if (i_ + 2 < a_.size() && a_[i_].is_string()) i_ += 2;
      return number(k.number);
    }
    auto set = parse_sequence_set(v.text);
    if (set) {
      k.kind = K::kSequence;
      k.set = std::move(set);
      return true;
    }
    return fail("an unknown search key \"" + v.text.substr(0, 40) + "\"");
  }

  bool astring(std::string& out) {
    if (i_ >= a_.size() || !a_[i_].is_astring()) return fail("a search key lacks its string");
    out = a_[i_++].text;
    return true;
  }
  bool number(std::int64_t& out) {
    if (i_ >= a_.size() || !a_[i_].is_atom()) return fail("a search key lacks its number");
    auto n = parse_number(a_[i_++].text, static_cast<std::uint64_t>(INT64_MAX));
    if (!n) return fail("a bad number in a search key");
    out = static_cast<std::int64_t>(*n);
    return true;
  }
  bool fail(std::string why) {
    if (error_->empty()) *error_ = std::move(why);
    return false;
  }
  std::size_t pos() const { return i_; }

 private:
  const std::vector<Value>& a_;
  std::size_t i_;
  std::string* error_;
};

}  // namespace

std::optional<SearchRequest> parse_search(const std::vector<Value>& args, std::size_t first, std::string* error) {
  SearchRequest req;
  std::size_t i = first;
  if (i < args.size() && args[i].is_atom() && ascii_iequals(args[i].text, "RETURN")) {
    if (i + 1 >= args.size() || !args[i + 1].is_list()) {
      *error = "RETURN needs a list of options";
      return std::nullopt;
    }
    std::vector<std::string> opts;
    for (const auto& o : args[i + 1].list) {
      std::string u = ascii_upper(o.text);
      if (!o.is_atom() || (u != "MIN" && u != "MAX" && u != "ALL" && u != "COUNT" && u != "SAVE")) {
        *error = "an unknown RETURN option";
        return std::nullopt;
      }
      opts.push_back(u);
    }
    req.esearch = opts;
    i += 2;
  }
  if (i < args.size() && args[i].is_atom() && ascii_iequals(args[i].text, "CHARSET")) {
    if (i + 1 >= args.size() || !args[i + 1].is_astring()) {
      *error = "CHARSET needs a name";
      return std::nullopt;
    }
    req.charset = ascii_upper(args[i + 1].text);
    i += 2;
  }
  req.key.kind = SearchKey::Kind::kAnd;
  SearchParser p(args, i, error);
  while (p.pos() < args.size()) {
    SearchKey k;
    if (!p.key(k, 0)) return std::nullopt;
    req.key.children.push_back(std::move(k));
  }
  if (req.key.children.empty()) {
    *error = "SEARCH needs at least one key";
    return std::nullopt;
  }
  std::size_t keys = 0, text_keys = 0;
  std::function<void(const SearchKey&)> count = [&](const SearchKey& k) {
    ++keys;
    using K = SearchKey::Kind;
    if (k.kind >= K::kText && k.kind <= K::kHeader) ++text_keys;
    for (const auto& c : k.children) count(c);
  };
  count(req.key);
  if (keys - 1 > kMaxSearchKeys || text_keys > kMaxTextSearchKeys) {  // the AND around them is not one
    *error = "too many search keys: at most " + std::to_string(kMaxSearchKeys) + ", and " +
             std::to_string(kMaxTextSearchKeys) + " that search text";
    return std::nullopt;
  }
  return req;
}

// ---- output ----

std::string imap_string(std::string_view s) {
  bool quotable = s.size() < 1024;
  for (char c : s)
    if (c == '\r' || c == '\n' || c == '\0' || static_cast<unsigned char>(c) >= 0x80) {
      quotable = false;
      break;
    }
  if (quotable) {
    std::string out = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    return out + "\"";
  }
  return "{" + std::to_string(s.size()) + "}\r\n" + std::string(s);
}

std::string imap_nstring(const std::optional<std::string>& s) {
  return s ? imap_string(*s) : std::string("NIL");
}

std::string imap_date_time(std::int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "\"%2d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday, kMonths[tm.tm_mon % 12],
                tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::optional<std::int64_t> parse_imap_date(std::string_view text) {
  // d-Mon-yyyy or dd-Mon-yyyy
  std::size_t d1 = text.find('-');
  if (d1 == std::string_view::npos || d1 == 0 || d1 > 2) return std::nullopt;
  auto day = parse_number(text.substr(0, d1), 31);
  if (!day || *day == 0 || text.size() != d1 + 9 || text[d1 + 4] != '-') return std::nullopt;
  std::string_view mon = text.substr(d1 + 1, 3);
  unsigned m = 0;
  for (unsigned i = 0; i < 12; ++i)
    if (ascii_iequals(mon, kMonths[i])) m = i + 1;
  auto year = parse_number(text.substr(d1 + 5, 4), 9999);
  if (!m || !year || *year < 1900) return std::nullopt;
  return days_from_civil(static_cast<std::int64_t>(*year), m, static_cast<unsigned>(*day));
}

std::optional<std::int64_t> parse_imap_date_time(std::string_view text) {
  // "dd-Mon-yyyy hh:mm:ss +zzzz", day may start with a space
  if (!text.empty() && text[0] == ' ') text.remove_prefix(1);
  std::size_t sp = text.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  auto days = parse_imap_date(text.substr(0, sp));
  std::string_view rest = text.substr(sp + 1);
  if (!days || rest.size() != 14 || rest[2] != ':' || rest[5] != ':' || rest[8] != ' ' ||
      (rest[9] != '+' && rest[9] != '-'))
    return std::nullopt;
  auto hh = parse_number(rest.substr(0, 2), 23), mm = parse_number(rest.substr(3, 2), 59),
       ss = parse_number(rest.substr(6, 2), 60), zh = parse_number(rest.substr(10, 2), 99),
       zm = parse_number(rest.substr(12, 2), 59);
  if (!hh || !mm || !ss || !zh || !zm) return std::nullopt;
  std::int64_t offset = static_cast<std::int64_t>(*zh * 3600 + *zm * 60) * (rest[9] == '-' ? -1 : 1);
  return *days * 86400 + static_cast<std::int64_t>(*hh * 3600 + *mm * 60 + *ss) - offset;
}

// ---- modified UTF-7 ----

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
int b64_value(char c) {
  const char* p = std::strchr(kB64, c);
  return c && p ? static_cast<int>(p - kB64) : -1;
}
void put_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}
}  // namespace

std::optional<std::string> mutf7_decode(std::string_view s) {
  std::string out;
  std::size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (static_cast<unsigned char>(c) >= 0x80) return std::nullopt;
    if (c != '&') {
      out += c;
      ++i;
      continue;
    }
    std::size_t end = s.find('-', i + 1);
    if (end == std::string_view::npos) return std::nullopt;
    if (end == i + 1) {
      out += '&';
      i = end + 1;
      continue;
    }
    std::uint32_t bits = 0;
    int nbits = 0;
    std::vector<std::uint16_t> units;
    for (std::size_t j = i + 1; j < end; ++j) {
      int v = b64_value(s[j]);
      if (v < 0) return std::nullopt;
      bits = (bits << 6) | static_cast<std::uint32_t>(v);
      nbits += 6;
      if (nbits >= 16) {
        nbits -= 16;
        units.push_back(static_cast<std::uint16_t>(bits >> nbits));
        bits &= (1u << nbits) - 1;
      }
    }
    if (bits != 0 || units.empty()) return std::nullopt;
    for (std::size_t k = 0; k < units.size(); ++k) {
      std::uint32_t u = units[k];
      if (u >= 0xD800 && u <= 0xDBFF) {
        if (k + 1 >= units.size() || units[k + 1] < 0xDC00 || units[k + 1] > 0xDFFF) return std::nullopt;
        u = 0x10000 + ((u - 0xD800) << 10) + (units[++k] - 0xDC00);
      } else if (u >= 0xDC00 && u <= 0xDFFF) {
        return std::nullopt;
      }
      if (u >= 0x20 && u < 0x7f) return std::nullopt;  // printable ASCII must not be encoded
      put_utf8(out, u);
    }
    i = end + 1;
  }
  return out;
}

std::string mutf7_encode(std::string_view utf8) {
  std::string out;
  std::vector<std::uint16_t> pending;
  auto flush = [&] {
    if (pending.empty()) return;
    out += '&';
    std::uint32_t bits = 0;
    int nbits = 0;
    for (std::uint16_t u : pending) {
      bits = (bits << 16) | u;
      nbits += 16;
      while (nbits >= 6) {
        nbits -= 6;
        out += kB64[(bits >> nbits) & 0x3F];
      }
    }
    if (nbits > 0) out += kB64[(bits << (6 - nbits)) & 0x3F];
    out += '-';
    pending.clear();
  };
  std::size_t i = 0;
  while (i < utf8.size()) {
    auto c = static_cast<unsigned char>(utf8[i]);
    if (c >= 0x20 && c < 0x7f) {
      flush();
      out += c == '&' ? std::string("&-") : std::string(1, static_cast<char>(c));
      ++i;
      continue;
    }
    std::uint32_t cp = 0xFFFD;
    int len = 1;
    if (c >= 0xF0 && i + 3 < utf8.size()) {
      cp = ((c & 0x07u) << 18) | ((utf8[i + 1] & 0x3Fu) << 12) | ((utf8[i + 2] & 0x3Fu) << 6) | (utf8[i + 3] & 0x3Fu);
      len = 4;
    } else if (c >= 0xE0 && i + 2 < utf8.size()) {
      cp = ((c & 0x0Fu) << 12) | ((utf8[i + 1] & 0x3Fu) << 6) | (utf8[i + 2] & 0x3Fu);
      len = 3;
    } else if (c >= 0xC0 && i + 1 < utf8.size()) {
      cp = ((c & 0x1Fu) << 6) | (utf8[i + 1] & 0x3Fu);
      len = 2;
    } else if (c < 0x80) {
      cp = c;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      pending.push_back(static_cast<std::uint16_t>(0xD800 + (cp >> 10)));
      pending.push_back(static_cast<std::uint16_t>(0xDC00 + (cp & 0x3FF)));
    } else {
      pending.push_back(static_cast<std::uint16_t>(cp));
    }
    i += static_cast<std::size_t>(len);
  }
  flush();
  return out;
}

}  // namespace mailark::api::imap
