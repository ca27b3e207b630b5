// The SMTP server protocol (RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS,
// SMTPUTF8) as an I/O-free state machine: bytes in, replies and events out. The server (server.cc) owns
// the socket, TLS, timers and the archive; this class owns the grammar, the command order and the
// limits. It is tested byte by byte and fuzzed without a socket.
//
// Flow: the I/O layer writes greeting(), then feeds whatever it reads to receive(). Each Output says what
// to write, and whether to start TLS, close, or store a complete message. While a message is being
// stored the session buffers further input (a pipelining client may already be sending the next
// command) and answers nothing until message_stored() tells it the outcome: 250 is only ever sent after
// the message is durable.
//
// Thread safety: none; one Session per connection, used by one strand.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailark::smtp {

struct Reply {
  int code = 250;
  std::string text;  // starts with the enhanced status code where one applies, e.g. "2.1.0 Sender ok"
  bool is_error() const { return code >= 400; }
};

// The server fills the limits from the one Limits struct (common/limits.h); the defaults here match it.
struct ProtocolConfig {
  std::string hostname = "localhost";    // our name in the greeting and EHLO reply
  std::size_t max_command_bytes = 4096;  // one command line, CRLF included (RFC 5321 minimum: 512)
  std::size_t max_line_bytes = 1u << 20; // one line of message content
  std::size_t max_message_bytes = 64u << 20;
  unsigned max_recipients = 100;
  unsigned max_errors = 20;              // error replies before the session is closed
  bool tls_available = false;            // advertise STARTTLS
  bool tls_active = false;               // the session already runs over TLS (implicit TLS, port 465)
};

// Decides who may send and receive through this listener (relay control lives here, not in the
// grammar). Return nothing to accept, or the rejection reply.
class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::optional<Reply> check_sender(const std::string& reverse_path) = 0;
  virtual std::optional<Reply> check_recipient(const std::string& forward_path) = 0;
};

// A complete message with its envelope, ready to be made durable.
struct ReceivedMessage {
  std::string helo;
  std::string mail_from;            // "" for the null reverse path <>
  std::vector<std::string> rcpt_to;
  bool body_8bitmime = false;
  bool smtputf8 = false;
  bool bare_lf_seen = false;        // some content line ended in LF alone (normalised to CRLF)
  std::string data;                 // dot-unstuffed, every line ending in CRLF
};

class Session {
 public:
  struct Output {
    std::string to_send;                    // replies, in order
    bool start_tls = false;                 // after writing to_send: handshake, then tls_started()
    bool close = false;                     // after writing to_send: close the connection
    std::optional<ReceivedMessage> message; // store it, then call message_stored()
  };

  Session(ProtocolConfig config, Policy& policy);

  std::string greeting() const;
  Output receive(std::string_view bytes);
  // The outcome of storing the message handed out last: `stored` with the queue id for the 250 reply,
  // or the rejection to send instead (451 for a temporary failure, 554 for an infected message...).
  Output message_stored(const std::string& queue_id);
  Output message_rejected(const Reply& reply);
  // The TLS handshake after STARTTLS succeeded: the session starts over (RFC 3207), and anything the
  // client sent before the handshake has been discarded.
  Output tls_started();
  // The I/O layer's idle or data-rate timer fired.
  Output timed_out();
  // Ends the session when the server shuts down.
  Output shutting_down();

  bool awaiting_storage() const { return state_ == State::kStoring; }
  bool in_data() const { return state_ == State::kData; }
  bool tls_active() const { return tls_; }

 private:
  enum class State { kGreeted, kReady, kMail, kData, kStoring, kStartTls, kClosed };

  void process(Output& out);
  void command(std::string_view line, Output& out);
  void data_line(std::string_view line, Output& out);
  void reply(Output& out, int code, const std::string& text);
  void error(Output& out, int code, const std::string& text);
  void close_with(Output& out, const std::string& text);  // a 421 reply, then the end of the session
  void reset_transaction();

  ProtocolConfig config_;
  Policy& policy_;
  State state_ = State::kGreeted;
  std::string buffer_;       // received, not yet processed
  bool esmtp_ = false;
  unsigned errors_ = 0;
  bool tls_ = false;
  ReceivedMessage txn_;
  bool have_helo_ = false;
  std::size_t declared_size_ = 0;
  bool data_too_big_ = false;
  bool data_line_too_long_ = false;
  bool discarding_line_ = false;  // inside an over-long line: skip to its end
};

// Parses "<local@domain>" (with optional source route and surrounding spaces) after "FROM:"/"TO:".
// Returns the address and the rest (ESMTP parameters), or nothing for a syntax error.
std::optional<std::pair<std::string, std::string>> parse_path(std::string_view text, bool allow_null);

}  // namespace mailark::smtp
