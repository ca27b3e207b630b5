#include "tools/terminal_safe.h"

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

std::string fit_column(std::string_view text, std::size_t width, bool pad) {
  // Code points start at every byte that is not a continuation byte (10xxxxxx).
  auto starts = [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; };
  std::size_t chars = 0, cut = text.size();
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (!starts(text[i])) continue;
    if (chars == width - 1 && width > 0) cut = i;  // where the "~" goes if the text is too long
    if (++chars > width) break;
  }
  std::string out;
  if (chars > width) {
    out.assign(text.substr(0, width == 0 ? 0 : cut));
    if (width > 0) out += '~';
    return out;
  }
  out.assign(text);
  if (pad) out.append(width - chars, ' ');
  return out;
}

}  // namespace mailark::cli
