// The SMTP server protocol (RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS,
// SMTPUTF8) as an I/O-free state machine: bytes in, replies and events out. The server (server.cc) owns
// the socket, TLS, timers and the archive; this class owns the grammar, the command order and the
// limits. It is tested whole and byte by byte (tests/smtp_protocol_test.cc) and fuzzed
// (fuzz/smtp_session_fuzz.cc).
//
// Flow: the I/O layer writes greeting(), then feeds whatever it reads to receive(). Each Output says what
// to write, and whether to start TLS, close, verify a recipient, or store a complete message. While a
// recipient is being verified or a message stored, the session buffers further input (a pipelining
// client may already be sending the next command) and answers nothing until recipient_verified() or
// message_stored()/message_rejected() tells it the outcome: 250 is only ever sent after the message is
// durable, and replies always come in command order.
//
// Line ends (SMTP smuggling): a command ends only at CRLF; a bare LF or bare CR inside a command makes
// the whole line, up to its CRLF, one refused command, never two commands. DATA ends only at
// CRLF "." CRLF, where the CRLF before the dot ended the previous line. A content line with a bare LF
// or bare CR either refuses the whole message at its end (BareNewline::kReject, as Postfix's
// smtpd_forbid_bare_newline = reject) or is normalised to CRLF lines that stay inside the one message
// (kNormalize). Tests: SmtpProtocol.*Smuggling* and tests/e2e/test_smuggling.py (every published
// end-of-data variant, both listeners, plaintext and TLS, next command pipelined behind).
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

// What to do with a content line that ends in a bare LF or holds a bare CR.
enum class BareNewline {
  kReject,     // refuse the message with 550 5.5.2 after its end (the default)
  kNormalize,  // turn each bare LF and bare CR into CRLF; the message stays one message
};

// The server fills the limits from the one Limits struct (common/limits.h); the defaults here match it.
struct ProtocolConfig {
  std::string hostname = "localhost";    // our name in the greeting and EHLO reply
  std::size_t max_command_bytes = 4096;  // one command line, CRLF included (RFC 5321 minimum: 512)
  std::size_t max_line_bytes = 1u << 20; // one line of message content
  std::size_t max_message_bytes = 64u << 20;
  // Content of a message in DATA past this many bytes is handed out (Output::spill) for the I/O layer
  // to keep outside memory, so a session holds at most about this much of its message however large
  // the message (0: never; the whole message stays in memory).
  std::size_t spill_bytes = 0;
  unsigned max_recipients = 100;
  unsigned max_errors = 20;              // error replies before the session is closed
  // Recipients past max_recipients answered 452 "send the rest in another message" without counting
  // as errors, as Postfix's smtpd_recipient_overshoot_limit: a client that pipelines more recipients
  // than a message takes (RFC 5321 4.5.3.1.10: it then sends the rest in another transaction) is
  // not cut off by the error limit; past this many in a session each counts as an error. Tests:
  // SmtpSession.RecipientsPastTheLimitAreDeferredWithoutEndingTheSession, test_postfix.py
  // test_postfix_sends_more_recipients_than_one_message_takes.
  unsigned max_recipient_overshoot = 1000;
  // Received header fields a message may carry (limits.hops): one more and it is refused with 554
  // 5.4.6, a mail loop (a primary that routes the domain back to the gateway would otherwise have
  // every pass archived and delivered again, for ever). Test: SmtpSession.AMessageInAMailLoopIsRefused,
  // test_postfix.py test_a_mail_loop_through_the_primary_ends.
  unsigned max_hops = 100;
  BareNewline bare_newline = BareNewline::kReject;
  bool tls_available = false;            // advertise STARTTLS
  bool tls_active = false;               // the session already runs over TLS (implicit TLS, port 465)
  // Submission (RFC 6409, RFC 4954): AUTH PLAIN and LOGIN offered (only over TLS unless
  // auth_in_clear), and MAIL refused until the client authenticated (auth_required).
  bool auth_offered = false;
  bool auth_required = false;
  bool auth_in_clear = false;
};

// Credentials a client sent with AUTH, for the I/O layer to check (then Session::authenticated()).
struct Credentials {
  std::string user;
  std::string password;
};

// A reverse-path or forward-path, parsed (RFC 5321 4.1.2).
struct Path {
  std::string address;       // local-part@domain as written (quotes kept); "" for <>; "Postmaster"
  std::string local_part;    // as written, quotes kept
  std::string domain;        // as written; empty for <> and <Postmaster>
  bool quoted_local = false; // the local part is a quoted-string
  std::string source_route;  // "@a,@b" of an obsolete source route, without the ':'
  std::string params;        // ESMTP parameters after the '>'
};

// Parses "<local@domain>" (with optional source route and surrounding spaces) after "FROM:"/"TO:";
// a bare "local@domain" too, as Postfix and Exchange take it (test SmtpProtocol.PathSyntax).
// allow_null: "<>" is accepted (MAIL FROM). Returns nothing for a syntax error.
std::optional<Path> parse_path(std::string_view text, bool allow_null);

// Sender-specified routing that would make the next hop relay (Postfix's allow_untrusted_routing =
// no): a source route, or a local part holding '%', '!' or '@' (quoted or not). Returns what was found,
// or an empty string.
std::string routing_in_path(const Path& path);

// Dot-stuffs a message for DATA (RFC 5321 4.5.2) and makes every line end in CRLF, a bare CR or bare
// LF included, so the next hop sees no line end it could read differently; adds the final "." line.
std::string dot_stuff(const std::string& message);

// How a listener answers one recipient: accept, reject, or ask the I/O layer to verify it first
// (a probe of the primary server; the session waits for recipient_verified()).
struct RecipientDecision {
  enum class Kind { kAccept, kReject, kVerify };
  Kind kind = Kind::kAccept;
  Reply reply;  // kReject
  static RecipientDecision accept() { return {}; }
  static RecipientDecision reject(Reply r) { return {Kind::kReject, std::move(r)}; }
  static RecipientDecision verify() { return {Kind::kVerify, {}}; }
};

// Decides who may send and receive through this listener (relay control lives here, not in the
// grammar).
class Policy {
 public:
  virtual ~Policy() = default;
  // Return nothing to accept, or the rejection reply.
  virtual std::optional<Reply> check_sender(const Path& reverse_path) = 0;
  virtual RecipientDecision check_recipient(const Path& forward_path) = 0;
  // Room on disk for a new message of `declared` bytes (MAIL's SIZE parameter; 0 without one), asked
  // at MAIL before check_sender: nothing to go on, or the refusal (452 4.3.1 when the data folder's
  // free space is under its reserve, api/disk_reserve.h).
  virtual std::optional<Reply> check_storage(std::uint64_t declared) {
    (void)declared;
    return std::nullopt;
  }
};

// A complete message with its envelope, ready to be made durable.
struct ReceivedMessage {
  std::string helo;
  std::string mail_from;            // "" for the null reverse path <>
  std::vector<std::string> rcpt_to;
  bool body_8bitmime = false;
  bool smtputf8 = false;
  bool bare_newline_seen = false;   // kNormalize: some content line had a bare LF or CR (now CRLF)
  // The content, dot-unstuffed, every line ending in CRLF, no other CR or LF: the first `spilled`
  // bytes went out in Output::spill (ProtocolConfig::spill_bytes), `data` is the rest.
  std::uint64_t spilled = 0;
  std::string data;
};

class Session {
 public:
  struct Output {
    std::string to_send;                    // replies, in order
    bool start_tls = false;                 // after writing to_send: handshake, then tls_started()
    bool close = false;                     // after writing to_send: close the connection
    std::optional<std::string> verify;      // verify this recipient, then call recipient_verified()
    std::optional<ReceivedMessage> message; // store it, then call message_stored()/message_rejected()
    std::optional<Credentials> authenticate; // check them, then call authenticated()
    // Content of the message in DATA to keep outside memory, from byte `spill_at` of it (0: a new
    // message's first spill: whatever was kept of an earlier one is no longer wanted). The message
    // handed out at its end says how much of it went out this way (ReceivedMessage::spilled).
    std::string spill;
    std::uint64_t spill_at = 0;
  };

  Session(ProtocolConfig config, Policy& policy);

  std::string greeting() const;
  Output receive(std::string_view bytes);
  // The outcome of verifying the recipient handed out last: nothing to accept it, or the rejection.
  Output recipient_verified(const std::optional<Reply>& rejection);
  // The outcome of storing the message handed out last: `stored` with the queue id for the 250 reply,
  // or the rejection to send instead (451 for a temporary failure, 554 for an infected message...).
  Output message_stored(const std::string& queue_id);
  Output message_rejected(const Reply& reply);
  // The outcome of checking the credentials handed out last: nothing when they are good (235), or
  // the failure to send (535 5.7.8, or 454 4.7.0 while logins are throttled).
  Output authenticated(const std::optional<Reply>& failure);
  const std::string& auth_user() const { return auth_user_; }  // empty until AUTH succeeded
  // The TLS handshake after STARTTLS succeeded: the session starts over (RFC 3207), and anything the
  // client sent before the handshake has been discarded.
  Output tls_started();
  // The I/O layer's idle, data-rate or session timer fired.
  Output timed_out();
  // Ends the session when the server shuts down.
  Output shutting_down();

  bool awaiting_storage() const { return state_ == State::kStoring; }
  bool in_data() const { return state_ == State::kData; }
  bool tls_active() const { return tls_; }

 private:
  enum class State { kGreeted, kReady, kMail, kData, kVerifying, kStoring, kStartTls, kAuthLine, kAuthenticating, kClosed };

  void process(Output& out);
  bool command_step(Output& out);  // false: needs more input
  bool data_step(Output& out);
  void command(std::string_view line, Output& out);
  void mail(std::string_view arg, Output& out);
  void auth(std::string_view arg, Output& out);
  bool auth_step(Output& out);  // kAuthLine: one SASL answer line
  void sasl_answer(std::string_view line, Output& out);
  void rcpt(std::string_view arg, Output& out);
  void end_of_data(Output& out);
  void append_content(std::string_view content);
  void reply(Output& out, int code, const std::string& text);
  void error(Output& out, int code, const std::string& text);
  void close_with(Output& out, const std::string& text);  // a 421 reply, then the end of the session
  void reset_transaction();
  void skip_over_long_line();

  ProtocolConfig config_;
  Policy& policy_;
  State state_ = State::kGreeted;
  std::string buffer_;       // received, not yet processed
  bool esmtp_ = false;
  unsigned errors_ = 0;
  unsigned overshoot_ = 0;  // recipients answered 452 past max_recipients in this session
  bool in_header_ = false;  // DATA has not yet reached the empty line that ends the header
  unsigned hops_ = 0;       // Received fields in the header of the message in DATA
  bool tls_ = false;
  ReceivedMessage txn_;
  std::string verifying_;    // kVerifying: the recipient asked about
  bool have_helo_ = false;
  bool data_too_big_ = false;
  bool data_line_too_long_ = false;
  const char* bare_newline_ = nullptr;  // kReject: "LF" or "CR", the first bare line end in this DATA
  bool prev_line_crlf_ = true;  // in DATA: the previous content line ended in CRLF
  bool discarding_line_ = false;  // inside an over-long line: skip to its end
  std::string auth_mechanism_;    // kAuthLine: "PLAIN" or "LOGIN"
  std::string auth_login_user_;   // LOGIN: the user name, before the password
  std::string auth_pending_user_; // kAuthenticating: the user being checked
  std::string auth_user_;         // who the client authenticated as
};

}  // namespace mailark::smtp
