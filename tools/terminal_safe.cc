#include "tools/terminal_safe.h"

#include <locale.h>
#include <wchar.h>

#include <sstream>

#include "common/utf8.h"

namespace mailark::cli {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

TerminalSafeBuf::~TerminalSafeBuf() {
  flush_pending_as_broken();
  sync();
}

void TerminalSafeBuf::flush_pending_as_broken() {
  if (!pending_.empty()) emit(kReplacement);
  pending_.clear();
  need_ = 0;
}

void TerminalSafeBuf::put(unsigned char c) {
  if (need_ > 0) {
    const bool ok = pending_.size() == 1 ? utf8_second_byte_ok(static_cast<unsigned char>(pending_[0]), c)
                                         : (c >= 0x80 && c <= 0xBF);
    if (ok) {
      pending_.push_back(static_cast<char>(c));
      if (--need_ == 0) {
        // U+0080..U+009F, the C1 controls, are C2 80..C2 9F.
        const bool c1 = pending_.size() == 2 && static_cast<unsigned char>(pending_[0]) == 0xC2 &&
                        static_cast<unsigned char>(pending_[1]) <= 0x9F;
        emit(c1 ? kReplacement : std::string_view(pending_));
        pending_.clear();
      }
      return;
    }
    flush_pending_as_broken();  // and this byte starts afresh
  }
  if ((c == '\n' && lines_) || c == '\t' || (c >= 0x20 && c < 0x7F)) {
    out_.push_back(static_cast<char>(c));
  } else if (c < 0x20) {
    out_.push_back('^');
    out_.push_back(static_cast<char>(c + 0x40));
  } else if (c == 0x7F) {
    emit("^?");
  } else if (std::size_t len = utf8_sequence_length(c); len > 0) {
    pending_.assign(1, static_cast<char>(c));
    need_ = len - 1;
  } else {
    emit(kReplacement);  // a continuation byte alone, or a byte UTF-8 never uses
  }
}

TerminalSafeBuf::int_type TerminalSafeBuf::overflow(int_type c) {
  if (traits_type::eq_int_type(c, traits_type::eof())) return sync() == 0 ? traits_type::not_eof(c) : traits_type::eof();
  put(static_cast<unsigned char>(traits_type::to_char_type(c)));
  if (out_.size() >= 4096 && sync() != 0) return traits_type::eof();
  return c;
}

std::streamsize TerminalSafeBuf::xsputn(const char* s, std::streamsize n) {
  for (std::streamsize i = 0; i < n; ++i) put(static_cast<unsigned char>(s[i]));
  if (out_.size() >= 4096 && sync() != 0) return 0;
  return n;
}

int TerminalSafeBuf::sync() {
  if (!out_.empty()) {
    const auto n = static_cast<std::streamsize>(out_.size());
    if (sink_->sputn(out_.data(), n) != n) return -1;
    out_.clear();
  }
  return sink_->pubsync();
}

std::string terminal_safe(std::string_view text, bool lines) {
  std::stringbuf sink;
  {
    TerminalSafeBuf buf(&sink, lines);
    buf.sputn(text.data(), static_cast<std::streamsize>(text.size()));
  }
  return sink.str();
}

std::size_t columns_of(char32_t cp) {
  // glibc's wcwidth in its C.UTF-8 locale (Unicode's East Asian Width: 2 for wide and fullwidth
  // characters, 0 for combining marks), asked without changing the process's locale; 1 where that
  // locale is missing or the character is not printable (the filter shows it as one replacement).
  static const locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
  if (!utf8 || cp < 0x80) return 1;
  const locale_t before = uselocale(utf8);
  const int w = wcwidth(static_cast<wchar_t>(cp));
  uselocale(before);
  return w < 0 ? 1 : static_cast<std::size_t>(w);
}

std::string fit_column(std::string_view text, std::size_t width, bool pad) {
  // Code point by code point (a byte that starts none: one column): where the "~" goes if the text
  // is longer than the width (the last place it still fits before), and its columns in all.
  std::size_t columns = 0, cut = 0, cut_columns = 0;
  for (std::size_t i = 0; i < text.size() && columns <= width;) {
    const auto [cp, len] = utf8_code_point(text, i);
    const std::size_t w = columns_of(cp);
    if (width > 0 && columns + w <= width - 1) {
      cut = i + len;
      cut_columns = columns + w;
    }
    columns += w;
    i += len;
  }
  std::string out;
  if (columns > width) {
    if (width == 0) return out;
    out.assign(text.substr(0, cut));
    out += '~';
    if (pad) out.append(width - 1 - cut_columns, ' ');  // a wide character that did not fit leaves a gap
    return out;
  }
  out.assign(text);
  if (pad) out.append(width - columns, ' ');
  return out;
}

}  // namespace mailark::cli
