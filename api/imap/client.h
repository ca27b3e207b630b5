// An IMAP client for the continuity features (RFC 9051 / 3501): the monitor's login check of the
// primary and the Sent copies (APPEND on behalf of a user, as a master user with SASL PLAIN's
// authorisation identity, which Dovecot and Exchange accept). Asio coroutines; errors never throw.
// Thread safety: one client per connection, on the io_context's thread.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "api/imap/response.h"

namespace mailark::api::imap {

struct Outcome {
  bool ok = false;
  bool connection = false;  // the failure was the connection (retry later), not the server's NO
  std::string text;         // the server's answer or the failure
};

class Client {
 public:
  enum class Tls { kNone, kStartTls, kImplicit };
  Client(asio::io_context& io, asio::ssl::context& tls, std::chrono::seconds timeout);
  ~Client();

  asio::awaitable<Outcome> connect(const std::string& host, std::uint16_t port, Tls tls);
  // LOGIN user password.
  asio::awaitable<Outcome> login(const std::string& user, const std::string& password);
  // AUTHENTICATE PLAIN with an authorisation identity: log in as `authcid` acting for `authzid`.
  asio::awaitable<Outcome> authenticate_plain(const std::string& authzid, const std::string& authcid,
                                              const std::string& password);
  // APPEND message to folder with the flags (e.g. "\\Seen"); creates the folder once when the
  // server answers [TRYCREATE].
  asio::awaitable<Outcome> append(const std::string& folder, const std::string& flags, const std::string& message);
  asio::awaitable<void> logout();
  void abort();

 private:
  asio::awaitable<Outcome> command(const std::string& line);   // sends "tag line", waits for the tagged answer
  // The next response, or nothing: the connection lost, a response past the reader's bounds, or
  // nothing whole by the deadline (timed_out_).
  asio::awaitable<std::optional<Response>> read_response(std::chrono::steady_clock::time_point until);
  std::chrono::steady_clock::time_point deadline() const;  // now + the timeout
  std::string no_answer(const std::string& what) const;    // what, and why there was none
  asio::awaitable<bool> write(const std::string& bytes);

  asio::io_context& io_;
  asio::ssl::context& tls_ctx_;
  std::chrono::seconds timeout_;
  asio::ip::tcp::socket socket_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
  bool tls_active_ = false;
  bool timed_out_ = false;
  ResponseReader reader_;
  unsigned tag_ = 0;
};

}  // namespace mailark::api::imap
