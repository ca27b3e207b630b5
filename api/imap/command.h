// The IMAP server's command grammar (RFC 9051 section 9, with RFC 3501 forms and LITERAL+ of RFC
// 7888), I/O-free: bytes in, whole commands out. The server (api/imap/server.cc) owns the socket and
// TLS; api/imap/session.cc gives commands their meaning. Everything here is bounded
// (CommandLimits) and fuzzed (fuzz/imap_command_fuzz.cc); tests: tests/imap_core_test.cc.
//
// Framing: a command is a line ending in CRLF; a line that ends in a literal marker {n} (synchronising:
// the server must first answer "+") or {n+} (LITERAL+: the bytes follow at once) continues with n
// bytes of literal and then more of the command. A bare LF also ends a line (clients on Unix send
// them; the command is the same either way). A literal over its limit is refused without reading it
// when synchronising; a non-synchronising one over the limit is skipped when it is small enough to
// skip, and closes the connection otherwise (RFC 7888 section 4).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailark::api::imap {

// One value of a command: an atom (also numbers, NIL, flags, sequence sets, BODY[...]<...> fetch
// attributes with their brackets), a string (quoted or literal), or a parenthesised list.
struct Value {
  enum class Kind { kAtom, kString, kList };
  Kind kind = Kind::kAtom;
  std::string text;  // atom or string content
  std::vector<Value> list;
  bool literal = false;  // a string sent as a literal (may hold any byte)

  bool is_atom() const { return kind == Kind::kAtom; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_list() const { return kind == Kind::kList; }
  // An astring: an atom or a string.
  bool is_astring() const { return kind != Kind::kList; }
  bool is_nil() const;  // the atom NIL
};

struct Command {
  std::string tag;
  std::string name;  // upper case ("FETCH"; UID commands: "UID FETCH", ...)
  std::vector<Value> args;
};

struct CommandLimits {
  std::size_t max_line_bytes = 65536;        // the command without its literals
  std::size_t max_literal_bytes = 65536;     // a literal outside APPEND
  std::size_t max_append_bytes = 64u << 20;  // an APPEND literal (the message size limit)
  std::size_t max_skip_bytes = 1u << 20;     // a too-large non-synchronising literal skipped, not closed
  std::size_t max_values = 100000;           // atoms, strings and lists in one command
  std::size_t max_depth = 32;                // parenthesis nesting
};

class CommandReader {
 public:
  explicit CommandReader(CommandLimits limits = {}) : limits_(limits) {}

  enum class Event {
    kNone,      // feed more bytes
    kCommand,   // command() holds a whole command
    kContinue,  // write "+ OK" (a synchronising literal may be sent), then call next() again
    kLine,      // raw_line() holds one line (after expect_line(): AUTHENTICATE's answers, IDLE's DONE)
    kBad,       // write "<tag> BAD <error>" (tag "*" when none was read); the connection goes on
    kTooBig,    // a literal over its limit, refused: write "<tag> NO [TOOBIG] <error>"; goes on
    kBusy,      // a literal the gate refused for now: write "<tag> NO <error>" (the gate's answer); goes on
    kClose,     // unrecoverable (a non-synchronising literal too big to skip): write BYE and close
  };
  void feed(std::string_view bytes);
  Event next();
  // The next line is taken raw (no command grammar), once.
  void expect_line() { raw_mode_ = true; }
  // Until the client has logged in, an APPEND's literal has the limit of any other literal
  // (max_literal_bytes), not a message's: a client that has not logged in cannot make the server
  // hold 64 MiB a connection (test ImapCommand.AppendLiteralsBeforeLoginHaveTheSmallLimit).
  void set_authenticated(bool yes) { authenticated_ = yes; }
  // Asked once for each literal over max_literal_bytes (an APPEND's message, after login), before
  // the client is told to send it ("+") or, for LITERAL+, before its bytes are kept: an answer
  // ("[UNAVAILABLE] ...", a response code and text) refuses it for now (kBusy, error() is the answer).
  // The server bounds the bytes of messages being uploaded across connections with it, and keeps the
  // data folder's disk reserve (api/imap/server.cc; test ImapCommand.TheLiteralGateIsAskedOnceAndCanRefuse).
  using LiteralGate = std::function<std::optional<std::string>(std::uint64_t bytes)>;
  void set_literal_gate(LiteralGate gate) { gate_ = std::move(gate); }

  const Command& command() const { return command_; }
  // Moves the command out and gives back the memory of what was read for it (a message's literal
  // is not kept twice while the command runs, nor after it).
  Command take_command();
  const std::string& raw_line() const { return raw_line_; }
  const std::string& error() const { return error_; }
  const std::string& error_tag() const { return error_tag_; }
  // Bytes fed and not yet consumed (the server stops reading when this grows: back pressure).
  std::size_t buffered() const { return buffer_.size() - pos_; }

 private:
  Event finish_command(std::string_view whole);
  Event fail(Event e, std::string why, std::string_view partial);

  CommandLimits limits_;
  std::string buffer_;
  std::size_t pos_ = 0;       // start of the current command in buffer_
  std::size_t scan_ = 0;      // where to look for the next line end, relative to pos_
  std::size_t skip_ = 0;      // bytes of a refused literal still to drop
  bool continued_ = false;    // kContinue was given for the literal at scan_
  bool gated_ = false;        // the gate let the literal at scan_ through
  LiteralGate gate_;
  bool raw_mode_ = false;
  bool authenticated_ = true;  // the server says, before each command (set_authenticated)
  bool discard_line_ = false; // drop bytes through the next line end (the rest of a refused command)
  Command command_;
  std::string raw_line_;
  std::string error_, error_tag_;
};

// Parses one whole command (the bytes between the start and the final line end, literals inline).
// Returns nothing and sets *error for a syntax error; *tag gets the tag when one was read.
std::optional<Command> parse_command(std::string_view whole, const CommandLimits& limits, std::string* error,
                                     std::string* tag);

// ---- sequence sets (RFC 9051 9: sequence-set) ----

struct SequenceSet {
  static constexpr std::uint32_t kStar = 0;  // "*" (0 is never a valid number)
  std::vector<std::pair<std::uint32_t, std::uint32_t>> ranges;  // as written; kStar for "*"
  bool saved = false;  // "$" (the last SEARCH result, RFC 5182)
  // The numbers it names among 1..largest ("*" is largest), ascending, each once. An empty folder:
  // nothing. Numbers above `largest` are dropped.
  std::vector<std::uint32_t> resolve(std::uint32_t largest) const;
  bool contains(std::uint32_t n, std::uint32_t largest) const;
};
inline constexpr std::size_t kMaxSequenceRanges = 10000;
// Errors: nothing for bad syntax, zero, or more than kMaxSequenceRanges ranges.
std::optional<SequenceSet> parse_sequence_set(std::string_view text);

// ---- FETCH attributes ----

struct Section {
  std::vector<unsigned> part;  // "1.2" -> {1, 2}; empty: the whole message
  enum class Text { kAll, kHeader, kHeaderFields, kHeaderFieldsNot, kText, kMime } text = Text::kAll;
  std::vector<std::string> fields;  // HEADER.FIELDS (...)
};

struct FetchAttr {
  enum class Kind {
    kUid, kFlags, kInternalDate, kSize, kEnvelope, kBody, kBodyStructure, kSection, kModseq,
    kRfc822, kRfc822Header, kRfc822Text, kBinarySize,
    kBinary,  // BINARY[part]: the part with its Content-Transfer-Encoding undone (RFC 3516, RFC 9051)
  };
  Kind kind = Kind::kUid;
  Section section;  // kSection, kBinary, kBinarySize (these two: part numbers only)
  bool peek = false;  // BODY.PEEK[...], BINARY.PEEK[...]: \Seen is not set
  std::optional<std::pair<std::uint64_t, std::uint64_t>> partial;  // <offset.count>
  std::string name;  // how the response names it: "BODY[1.MIME]<0>", ...
};
// Parses the FETCH item list (one value: an atom, a macro ALL/FAST/FULL, or a list). Errors: nothing.
std::optional<std::vector<FetchAttr>> parse_fetch_attrs(const Value& v, std::string* error);

// ---- SEARCH keys ----

struct SearchKey {
  enum class Kind {
    kAll, kAnd, kOr, kNot, kSequence, kUid,
    kFlag, kUnflag,            // flag: a system flag bit, or keyword
    kText, kBody, kSubject, kFrom, kTo, kCc, kBcc, kHeader,
    kBefore, kOn, kSince, kSentBefore, kSentOn, kSentSince,  // date: days since the epoch
    kLarger, kSmaller, kModseq, kNew, kOld, kRecent,
  };
  Kind kind = Kind::kAll;
  std::vector<SearchKey> children;  // kAnd, kOr (2), kNot (1)
  std::optional<SequenceSet> set;
  std::uint32_t flag = 0;
  std::string keyword;  // kFlag/kUnflag with a keyword; kHeader: the field name
  std::string text;     // text searches; kHeader: the value
  std::int64_t number = 0;  // dates (days since 1970-01-01), sizes, modseq
};
struct SearchRequest {
  std::optional<std::vector<std::string>> esearch;  // RETURN (...): MIN MAX ALL COUNT SAVE; empty list = ALL
  std::string charset;
  SearchKey key;  // kAnd of the keys given
};
// One SEARCH's keys, so that no command holds an IMAP thread for long: each text key is a substring
// search of every message the index does not answer for (up to a thousand in a folder); a line of
// thousands of them was about half an hour of work (docs/BENCHMARKS.md "IMAP SEARCH of many keys").
// Past a bound the command is refused (tests/imap_core_test.cc ImapCommand.SearchKeys).
inline constexpr std::size_t kMaxSearchKeys = 1000;    // every key, AND/OR/NOT included
inline constexpr std::size_t kMaxTextSearchKeys = 64;  // TEXT, BODY, SUBJECT, FROM, TO, CC, BCC, HEADER
std::optional<SearchRequest> parse_search(const std::vector<Value>& args, std::size_t first, std::string* error);

// System flag names <-> bits (engine/mailbox.h MessageFlag). Unknown "\X" names: nothing.
std::optional<std::uint32_t> system_flag(std::string_view name);
std::string flags_text(std::uint32_t flags, const std::vector<std::string>& keywords);
// A flag list as sent (STORE, APPEND): system bits and keywords. Errors: nothing (\Recent, bad atoms).
bool parse_flag_list(const Value& v, std::uint32_t* flags, std::vector<std::string>* keywords, std::string* error);

// ---- output ----

// A string as IMAP sends it: quoted when it can be, else a literal ({n}CRLF bytes).
std::string imap_string(std::string_view s);
std::string imap_nstring(const std::optional<std::string>& s);
// An IMAP date-time ("17-Jul-1996 02:44:25 +0000"), and the date of SEARCH ("1-Feb-1994").
std::string imap_date_time(std::int64_t unix_seconds);
std::optional<std::int64_t> parse_imap_date(std::string_view text);       // days since the epoch
std::optional<std::int64_t> parse_imap_date_time(std::string_view text);  // Unix seconds (APPEND)

// Modified UTF-7 mailbox names (RFC 3501 5.1.3) <-> UTF-8. decode: nothing for bad input.
std::optional<std::string> mutf7_decode(std::string_view s);
std::string mutf7_encode(std::string_view utf8);

}  // namespace mailark::api::imap
