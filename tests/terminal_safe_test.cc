// tools/terminal_safe.h: what the CLI writes for people carries no control sequence a terminal obeys.
#include "tools/terminal_safe.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>

using mailark::cli::fit_column;
using mailark::cli::terminal_safe;
using mailark::cli::TerminalSafeBuf;

namespace {

const std::string kFffd = "\xEF\xBF\xBD";

// Every byte of `out` a terminal could take as (part of) a control: C0 but newline and tab, DEL, and
// the C1 controls, raw (0x80-0x9F alone) or encoded (C2 80..C2 9F).
bool has_control(const std::string& out) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    const auto c = static_cast<unsigned char>(out[i]);
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F) return true;
    if (c == 0xC2 && i + 1 < out.size() && static_cast<unsigned char>(out[i + 1]) <= 0x9F) return true;
  }
  return false;
}

}  // namespace

TEST(TerminalSafe, ControlsAreShownNotObeyed) {
  EXPECT_EQ(terminal_safe("evil \x1b]0;pwned\x07 \x1b[2J\rX\x7f"), "evil ^[]0;pwned^G ^[[2J^MX^?");
  EXPECT_EQ(terminal_safe(std::string("a\0b", 3)), "a^@b");
  EXPECT_EQ(terminal_safe("lines\nand\ttabs stay\n"), "lines\nand\ttabs stay\n");
  // The 8-bit controls: CSI (U+009B) encoded, and the raw byte a terminal in an 8-bit mode takes as one.
  EXPECT_EQ(terminal_safe("x\xC2\x9B" "31my"), "x" + kFffd + "31my");
  EXPECT_EQ(terminal_safe("x\x9B" "31my"), "x" + kFffd + "31my");
}

TEST(TerminalSafe, ALogLineStaysOneLine) {
  EXPECT_EQ(terminal_safe("login failed for x\n2026-01-01 forged\r", /*lines=*/false),
            "login failed for x^J2026-01-01 forged^M");
}

TEST(TerminalSafe, TextStaysAsItIs) {
  const std::string text = "Crane schedule — caf\xC3\xA9, \xE6\x97\xA5\xE6\x9C\xAC, \xF0\x9F\x9A\xA2, \xC2\xA0nbsp";
  EXPECT_EQ(terminal_safe(text), text);
  EXPECT_EQ(terminal_safe("{\"subject\":\"a\\u001b[2J\"}"), "{\"subject\":\"a\\u001b[2J\"}") << "JSON is unchanged";
}

TEST(TerminalSafe, BytesThatAreNotUtf8BecomeReplacementCharacters) {
  EXPECT_EQ(terminal_safe("\xC3("), kFffd + "(");                     // a lead byte without its continuation
  EXPECT_EQ(terminal_safe("\xC0\xAF"), kFffd + kFffd);                // overlong '/', never a lead byte
  EXPECT_EQ(terminal_safe("\xED\xA0\x80"), kFffd + kFffd + kFffd);    // a surrogate
  EXPECT_EQ(terminal_safe("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // past U+10FFFF
  EXPECT_EQ(terminal_safe("end \xE6\x97"), "end " + kFffd) << "a sequence cut off at the end";
  EXPECT_EQ(terminal_safe("\xE6\x97\x1b"), kFffd + "^[") << "a control inside a sequence is still shown";
}

// Every byte value, alone and after each lead byte, written in every split: nothing a terminal obeys
// comes out, and the result does not depend on how the writes were cut.
TEST(TerminalSafe, NoInputAndNoSplitLetsAControlThrough) {
  for (int lead : {-1, 0xC2, 0xE0, 0xED, 0xF0, 0xF4}) {
    for (int b = 0; b < 256; ++b) {
      std::string in;
      if (lead >= 0) in.push_back(static_cast<char>(lead));
      in.push_back(static_cast<char>(b));
      in += "\x80\x9B" "z";
      const std::string whole = terminal_safe(in);
      EXPECT_FALSE(has_control(whole)) << lead << " " << b;
      for (std::size_t cut = 1; cut < in.size(); ++cut) {
        std::stringbuf sink;
        {
          TerminalSafeBuf buf(&sink);
          buf.sputn(in.data(), static_cast<std::streamsize>(cut));
          buf.pubsync();
          buf.sputn(in.data() + cut, static_cast<std::streamsize>(in.size() - cut));
        }
        EXPECT_EQ(sink.str(), whole) << lead << " " << b << " cut " << cut;
      }
    }
  }
}

TEST(TerminalSafe, AStreamWritesThroughItInOrder) {
  std::stringbuf sink;
  {
    TerminalSafeBuf buf(&sink);
    std::ostream out(&buf);
    for (int i = 0; i < 2000; ++i) out << i << " \x1b[0m\n";
  }
  const std::string s = sink.str();
  EXPECT_EQ(s.substr(0, 10), "0 ^[[0m\n1 ");
  EXPECT_NE(s.find("1999 ^[[0m\n"), std::string::npos);
  EXPECT_FALSE(has_control(s));
}

TEST(TerminalSafe, WideCharactersTakeTwoColumns) {
  EXPECT_EQ(fit_column("台湾", 6, true), "台湾  ");
  EXPECT_EQ(fit_column("台湾鑫龙", 6, true), "台湾~ ") << "2 + 2 + the ~, and a space where 鑫 did not fit";
  EXPECT_EQ(fit_column("台湾鑫龙", 7, true), "台湾鑫~");
  EXPECT_EQ(fit_column("台湾鑫", 6, true), "台湾鑫");
  EXPECT_EQ(fit_column("e\xcc\x81t\xc3\xa9", 4, true), "e\xcc\x81t\xc3\xa9 ") << "a combining accent takes none";
  EXPECT_EQ(fit_column("요즘 뜨는", 5), "요즘~");
}

TEST(TerminalSafe, AColumnIsCutAndPaddedByCharacters) {
  EXPECT_EQ(fit_column("short", 8, true), "short   ");
  EXPECT_EQ(fit_column("short", 8), "short");
  EXPECT_EQ(fit_column("exactly8", 8, true), "exactly8");
  EXPECT_EQ(fit_column("ninechars", 8, true), "ninecha~");
  // Counted in characters, cut between them: "é" is two bytes, "€" three.
  EXPECT_EQ(fit_column("caf\xc3\xa9", 4, true), "caf\xc3\xa9");
  EXPECT_EQ(fit_column("\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", 2), "\xe2\x82\xac~");
  EXPECT_EQ(fit_column("\xc3\xa9t\xc3\xa9", 2, true), "\xc3\xa9~");
  EXPECT_EQ(fit_column("ab", 3, true), "ab ");
  EXPECT_EQ(fit_column("", 2, true), "  ");
  EXPECT_EQ(fit_column("abc", 1), "~");
  EXPECT_EQ(fit_column("abc", 0), "");
  const std::string huge(5000, 'x');
  EXPECT_EQ(fit_column(huge, 100).size(), 100u);
}
