// What the CLI writes for people is safe for a terminal: the text of a message (a subject, a sender's
// name, a part's file name, a remote server's reply) is outside bytes, and a hostile one can carry
// control sequences that a terminal obeys (retitle it, clear it, rewrite lines, on some set its
// clipboard: ESC ], ESC [, CR, and the 8-bit C1 controls). `TerminalSafeBuf`, installed on std::cout
// for every command (tools/main.cc), writes each C0 control but newline and tab, and DEL, in caret
// notation as `cat -v` does (ESC as ^[), a C1 control or a byte that is not UTF-8 as U+FFFD, and every
// well-formed UTF-8 character else as it is. JSON output is unchanged by it (json_text escapes
// controls), and `show --raw` writes the exact bytes past it (stdio). Tests: TerminalSafe.* in
// tests/terminal_safe_test.cc; tests/e2e/test_cli.py test_hostile_header_text_is_safe_for_the_terminal.
#pragma once

#include <streambuf>
#include <string>
#include <string_view>

namespace mailark::cli {

// Filters into `sink`; a UTF-8 sequence split between writes is held until it is whole (or shown to
// be broken). Not thread-safe, as std::cout.
class TerminalSafeBuf : public std::streambuf {
 public:
  // lines: newline passes (a listing); without, it is shown as ^J too (one log event, one line).
  explicit TerminalSafeBuf(std::streambuf* sink, bool lines = true) : sink_(sink), lines_(lines) {}
  ~TerminalSafeBuf() override;

 protected:
  int_type overflow(int_type c) override;
  std::streamsize xsputn(const char* s, std::streamsize n) override;
  int sync() override;

 private:
  void put(unsigned char c);
  void emit(std::string_view s) { out_.append(s); }
  void flush_pending_as_broken();

  std::streambuf* sink_;
  bool lines_;
  std::string out_;      // filtered bytes not yet handed to the sink
  std::string pending_;  // the start of a UTF-8 sequence
  std::size_t need_ = 0; // bytes the pending sequence still needs
};

// The same filter over a whole string (the tests; the server's log lines, tools/cmd_serve.cc, with
// lines false: a log message with a newline or ESC from outside, a login name say, can neither forge
// a line nor reach the terminal of whoever reads the log).
std::string terminal_safe(std::string_view text, bool lines = true);

// One column of a listing (`mailark search`): at most `width` terminal columns of UTF-8 text
// (counted as a terminal shows them: a Chinese, Japanese or Korean letter takes two, a combining
// mark none; never cut inside a code point), a longer text cut to width - 1 and ended with "~"; with
// pad, filled with spaces to the width, so the next column starts where it does on every line. A
// hostile subject of any length takes one line. Tests: TerminalSafe.AColumnIsCutAndPaddedByCharacters,
// TerminalSafe.WideCharactersTakeTwoColumns, test_cli.py test_hostile_header_text_is_safe_for_the_terminal.
std::string fit_column(std::string_view text, std::size_t width, bool pad = false);

}  // namespace mailark::cli
