// Reading an IMAP server's responses (RFC 9051 section 7), I/O-free: bytes in, whole responses out.
// A response is one line, or several when it carries literals ({n} or {n+} at a line's end, then
// n bytes): the literals are kept in the response's text as they were sent. mailark is the client
// (continuity: the IMAP login check and the Sent copies); the server is the company's primary, yet
// its bytes are outside input: every response is bounded (kMaxResponseBytes) and the reader is fuzzed
// (fuzz/imap_response_fuzz.cc).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mailark::api::imap {

struct Response {
  enum class Kind { kUntagged, kContinuation, kTagged };
  Kind kind = Kind::kUntagged;
  std::string tag;     // kTagged: the tag
  std::string status;  // kTagged and kUntagged: "OK", "NO", "BAD", "BYE", "PREAUTH" (upper case), or the
                       // untagged response's first word ("CAPABILITY", "3", ...)
  std::string text;    // the rest of the response (literals included)
};

class ResponseReader {
 public:
  static constexpr std::size_t kMaxResponseBytes = 1 << 20;
  // Consumes bytes; call next() until it returns nothing.
  void feed(std::string_view bytes);
  // The next complete response, if one is complete. An over-long response sets error() and
  // returns nothing from then on.
  std::optional<Response> next();
  const std::string& error() const { return error_; }

 private:
  std::string buffer_;
  std::size_t scan_ = 0;  // where the current response's next line starts in buffer_
  std::string error_;
};

// Parses one complete response (without its final CRLF). Exposed for tests.
Response parse_response(std::string_view whole);

// An IMAP quoted string ("Sent" -> "\"Sent\"", backslash and quote escaped).
std::string quote(std::string_view s);

}  // namespace mailark::api::imap
