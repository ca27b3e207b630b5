// An SMTP client connection for delivery (RFC 5321, STARTTLS per RFC 3207), as Asio coroutines.
// Errors never throw: a failed connection or a lost reply is reported as a reply with code 0 and the
// reason, which the delivery agent treats as a temporary failure.
// Thread safety: one SmtpClient per connection, used from the io_context's thread.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "api/smtp/protocol.h"  // dot_stuff
#include "api/smtp/reply.h"     // ClientReply, ReplyReader

namespace mailark::smtp {


class SmtpClient {
 public:
  enum class Tls { kNone, kOpportunistic, kRequired };

  SmtpClient(asio::io_context& io, asio::ssl::context& tls, std::string helo_name,
             std::chrono::seconds connect_timeout, std::chrono::seconds reply_timeout);
  ~SmtpClient();

  // Connects, reads the greeting, says EHLO (HELO if refused) and negotiates STARTTLS per `tls`.
  // `host` may be an address literal; `tls_name` (default: host) is the name sent with SNI and
  // checked in the certificate. kOpportunistic with set_plaintext_fallback(true): a STARTTLS
  // handshake that fails (a server that speaks only TLS 1.0 or 1.1, say) is followed at once by a
  // new connection without TLS, as Postfix's "may" level does (tls_failed() and tls_failure() then
  // tell); callers that verify certificates leave it off, so a failed check is never a downgrade
  // (test_postfix.py test_a_primary_whose_tls_fails_gets_its_mail_without_tls; the continuity probe:
  // test_continuity.py test_a_primary_whose_tls_fails_still_takes_the_probe).
  asio::awaitable<ClientReply> open(const std::string& host, std::uint16_t port, Tls tls,
                                    const std::string& tls_name = {});
  asio::awaitable<ClientReply> command(const std::string& line);
  // Sends the lines in one write and reads one reply per line (RFC 2920 PIPELINING; use only when
  // has_extension("PIPELINING")). A lost connection gives code 0 for the replies not read.
  asio::awaitable<std::vector<ClientReply>> pipeline(const std::vector<std::string>& lines);
  // Sends a message after a 354: dot-stuffed, every line ending in CRLF, then the final dot.
  asio::awaitable<ClientReply> send_data(const std::string& message);
  // SMTP AUTH PLAIN (RFC 4954) after open(). Refused here, without sending anything, when the server
  // offers no AUTH PLAIN, or when the connection is neither TLS nor to a loopback address (a password
  // never crosses a network in clear). A refusal is a reply with code 530 and the reason.
  asio::awaitable<ClientReply> auth_plain(const std::string& user, const std::string& password);
  asio::awaitable<void> quit();
  // Closes the connection now (server shutdown): pending operations fail with code 0.
  void abort();

  bool has_extension(const std::string& name) const;  // from the EHLO reply, upper case
  const std::string& tls_info() const { return tls_info_; }
  void set_plaintext_fallback(bool on) { plaintext_fallback_ = on; }
  // The server offered STARTTLS and the handshake failed (open() answered code 0, or went on without
  // TLS: tls_failure() is then what the handshake answered).
  bool tls_failed() const { return tls_failed_; }
  const std::string& tls_failure() const { return tls_failure_; }
  const std::string& peer() const { return peer_; }

 private:
  asio::awaitable<ClientReply> open_once(const std::string& host, std::uint16_t port, Tls tls, const std::string& tls_name);
  // One whole reply within the reply timeout, and `more` (the answer to a message's data).
  asio::awaitable<ClientReply> read_reply(std::chrono::seconds more = std::chrono::seconds(0));
  asio::awaitable<bool> write(const std::string& bytes);

  asio::io_context& io_;
  asio::ssl::context& tls_ctx_;
  std::string helo_;
  std::chrono::seconds connect_timeout_, reply_timeout_;
  asio::ip::tcp::socket socket_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
  bool tls_active_ = false;
  bool tls_failed_ = false;
  bool plaintext_fallback_ = false;
  bool aborted_ = false;
  std::string tls_failure_;
  std::string tls_info_;
  std::string peer_;
  ReplyReader replies_;
  std::vector<std::string> extensions_;
};


}  // namespace mailark::smtp
