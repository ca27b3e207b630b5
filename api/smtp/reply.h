// Reading an SMTP server's replies (RFC 5321 4.2), I/O-free: bytes in, whole replies out. mailark is
// the client here (delivery to the primary and to the internet's mail exchangers, the continuity
// probe, recipient verification), and the server may be anyone's: every reply is bounded
// (kMaxReplyBytes over all its lines, so an endless "250-" reply is an error, not a growing buffer),
// its control bytes are made '?', and the reader is fuzzed (fuzz/smtp_reply_fuzz.cc). Tests:
// SmtpReply.*; test_delivery.py test_an_endless_reply_is_cut_off_and_the_mail_kept.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailark::smtp {

struct ClientReply {
  int code = 0;      // 0: no reply (connection or timeout failure, a malformed or over-long reply)
  std::string text;  // the reply's lines joined with "; ", or the failure
  bool ok() const { return code >= 200 && code < 400; }
  bool temporary() const { return code == 0 || (code >= 400 && code < 500); }
  std::string to_string() const { return code ? std::to_string(code) + " " + text : text; }
};

class ReplyReader {
 public:
  // One reply, all its lines and their CRLFs. Postfix's own replies are a few hundred bytes; an EHLO
  // reply of every extension there is, under 2 KiB.
  static constexpr std::size_t kMaxReplyBytes = 64 * 1024;

  // Consumes bytes; call next() until it returns nothing.
  void feed(std::string_view bytes) { buffer_.append(bytes); }
  // The next complete reply, if one is complete. A malformed or over-long reply gives a reply of code
  // 0 naming what was wrong, and every later call gives it again: what follows on that connection
  // cannot be trusted to line up with the commands.
  std::optional<ClientReply> next();
  // The lines of the last complete reply, each without its code and separator (an EHLO reply's
  // extensions are lines 1 and on).
  const std::vector<std::string>& last_lines() const { return last_lines_; }
  bool failed() const { return failed_.has_value(); }
  // Forgets everything (a new connection, or the plaintext that came before a TLS handshake).
  void reset();

 private:
  std::optional<ClientReply> fail(std::string why);

  std::string buffer_;
  std::size_t scan_ = 0;      // where the next unread line starts in buffer_
  std::size_t searched_ = 0;  // buffer_ holds no CRLF that starts before this (past scan_)
  std::size_t pending_ = 0;   // bytes of the current reply's lines read so far
  std::vector<std::string> lines_;
  std::vector<std::string> last_lines_;
  std::optional<ClientReply> failed_;
};

}  // namespace mailark::smtp
