#include "api/imap/client.h"

#include <openssl/evp.h>

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include "api/write.h"

namespace mailark::api::imap {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using namespace asio::experimental::awaitable_operators;

namespace {
std::string base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}
Outcome lost(const std::string& why) { return Outcome{false, true, why}; }
}  // namespace

Client::Client(asio::io_context& io, asio::ssl::context& tls, std::chrono::seconds timeout)
    : io_(io), tls_ctx_(tls), timeout_(timeout), socket_(io) {}

Client::~Client() = default;

void Client::abort() {
  asio::error_code ec;
  socket_.close(ec);
}

// As the SMTP client's writes (api/smtp/client.cc): each 64 KiB within the timeout, the whole within
// it and a second per KiB, so a large Sent copy to a primary behind a slow link goes through.
awaitable<bool> Client::write(const std::string& bytes) {
  const auto until = deadline() + api::transfer_allowance(bytes.size());
  // GCC 12 miscompiles co_await inside a conditional expression: one statement each.
  asio::error_code ec;
  if (tls_active_)
    ec = co_await api::write_within(*tls_, asio::buffer(bytes), timeout_, until);
  else
    ec = co_await api::write_within(socket_, asio::buffer(bytes), timeout_, until);
  co_return !ec;
}

// A response must come whole by the deadline: each wait for a command's answer has one, so a server
// that sends untagged lines now and then, or a literal a byte at a time, holds the client no longer
// than one that sends nothing (ImapClient.AServerThatDripsIsCutOffAtTheTimeout).
awaitable<std::optional<Response>> Client::read_response(std::chrono::steady_clock::time_point until) {
  std::vector<char> buf(16384);
  while (true) {
    if (auto r = reader_.next()) co_return r;
    if (!reader_.error().empty()) co_return std::nullopt;
    asio::steady_timer timer(io_);
    timer.expires_at(until);
    std::size_t n = 0;
    asio::error_code ec;
    if (tls_active_) {
      auto r = co_await (tls_->async_read_some(asio::buffer(buf), as_tuple(use_awaitable)) ||
                         timer.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) {
        timed_out_ = true;
        co_return std::nullopt;
      }
      std::tie(ec, n) = std::get<0>(r);
    } else {
      auto r = co_await (socket_.async_read_some(asio::buffer(buf), as_tuple(use_awaitable)) ||
                         timer.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) {
        timed_out_ = true;
        co_return std::nullopt;
      }
      std::tie(ec, n) = std::get<0>(r);
    }
    if (ec) co_return std::nullopt;
    reader_.feed(std::string_view(buf.data(), n));
  }
}

std::chrono::steady_clock::time_point Client::deadline() const { return std::chrono::steady_clock::now() + timeout_; }

std::string Client::no_answer(const std::string& what) const {
  if (timed_out_) return what + " within " + std::to_string(timeout_.count()) + " s";
  return reader_.error().empty() ? what : reader_.error();
}

awaitable<Outcome> Client::command(const std::string& line) {
  const std::string tag = "m" + std::to_string(++tag_);
  bool sent = co_await write(tag + " " + line + "\r\n");
  if (!sent) co_return lost("connection lost");
  const auto until = deadline();
  while (true) {
    auto r = co_await read_response(until);
    if (!r) co_return lost(no_answer("no answer"));
    if (r->kind == Response::Kind::kTagged && r->tag == tag)
      co_return Outcome{r->status == "OK", false, r->status + " " + r->text};
    if (r->kind == Response::Kind::kUntagged && r->status == "BYE") co_return lost("BYE " + r->text);
  }
}

awaitable<Outcome> Client::connect(const std::string& host, std::uint16_t port, Tls tls) {
  asio::error_code ec;
  auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  asio::ip::tcp::endpoint ep;
  if (!ec) {
    ep = asio::ip::tcp::endpoint(addr, port);
  } else {
    asio::ip::tcp::resolver resolver(io_);
    auto [rec, results] = co_await resolver.async_resolve(host, std::to_string(port), as_tuple(use_awaitable));
    if (rec || results.empty()) co_return lost("cannot resolve " + host);
    ep = *results.begin();
  }
  asio::steady_timer timer(io_);
  timer.expires_after(timeout_);
  auto c = co_await (socket_.async_connect(ep, as_tuple(use_awaitable)) || timer.async_wait(as_tuple(use_awaitable)));
  if (c.index() == 1) co_return lost("connection to " + host + ":" + std::to_string(port) + " timed out");
  if (auto [e] = std::get<0>(c); e) co_return lost("connecting to " + host + ":" + std::to_string(port) + ": " + e.message());
  auto handshake = [&]() -> awaitable<bool> {
    tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, tls_ctx_);
    SSL_set_tlsext_host_name(tls_->native_handle(), host.c_str());
    asio::steady_timer t(io_);
    t.expires_after(timeout_);
    auto h = co_await (tls_->async_handshake(asio::ssl::stream_base::client, as_tuple(use_awaitable)) ||
                       t.async_wait(as_tuple(use_awaitable)));
    if (h.index() == 1 || std::get<0>(std::get<0>(h))) co_return false;
    tls_active_ = true;
    // Nothing read before the handshake is an answer after it: a man in the middle who put lines
    // behind the STARTTLS OK in the clear would otherwise have them read as the server's (CVE-2011-0411's
    // kind, on the client's side; ImapClient.LinesSentInTheClearBeforeTlsAreNotReadAfterIt).
    reader_ = ResponseReader();
    co_return true;
  };
  if (tls == Tls::kImplicit) {
    bool ok = co_await handshake();
    if (!ok) co_return lost("TLS handshake with " + host + " failed");
  }
  auto greeting = co_await read_response(deadline());
  if (!greeting) co_return lost(no_answer("no greeting from " + host));
  if (greeting->kind != Response::Kind::kUntagged || (greeting->status != "OK" && greeting->status != "PREAUTH"))
    co_return lost("greeting: " + greeting->status + " " + greeting->text);
  if (tls == Tls::kStartTls) {
    Outcome st = co_await command("STARTTLS");
    if (!st.ok) co_return Outcome{false, true, "STARTTLS refused: " + st.text};
    bool ok = co_await handshake();
    if (!ok) co_return lost("TLS handshake with " + host + " failed");
  }
  co_return Outcome{true, false, "connected"};
}

awaitable<Outcome> Client::login(const std::string& user, const std::string& password) {
  co_return co_await command("LOGIN " + quote(user) + " " + quote(password));
}

awaitable<Outcome> Client::authenticate_plain(const std::string& authzid, const std::string& authcid,
                                              const std::string& password) {
  const std::string tag = "m" + std::to_string(++tag_);
  bool sent = co_await write(tag + " AUTHENTICATE PLAIN\r\n");
  if (!sent) co_return lost("connection lost");
  auto until = deadline();
  while (true) {
    auto r = co_await read_response(until);
    if (!r) co_return lost(no_answer("no answer to AUTHENTICATE"));
    if (r->kind == Response::Kind::kContinuation) break;
    if (r->kind == Response::Kind::kTagged && r->tag == tag) co_return Outcome{false, false, r->status + " " + r->text};
  }
  std::string creds = authzid;
  creds.push_back('\0');
  creds += authcid;
  creds.push_back('\0');
  creds += password;
  sent = co_await write(base64(creds) + "\r\n");
  if (!sent) co_return lost("connection lost");
  until = deadline();
  while (true) {
    auto r = co_await read_response(until);
    if (!r) co_return lost(no_answer("no answer to AUTHENTICATE"));
    if (r->kind == Response::Kind::kTagged && r->tag == tag) co_return Outcome{r->status == "OK", false, r->status + " " + r->text};
  }
}

awaitable<Outcome> Client::append(const std::string& folder, const std::string& flags, const std::string& message) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const std::string tag = "m" + std::to_string(++tag_);
    bool sent = co_await write(tag + " APPEND " + quote(folder) + " (" + flags + ") {" + std::to_string(message.size()) + "}\r\n");
    if (!sent) co_return lost("connection lost");
    Outcome answer;
    bool done = false;
    auto until = deadline();
    while (!done) {
      auto r = co_await read_response(until);
      if (!r) co_return lost(no_answer("no answer to APPEND"));
      if (r->kind == Response::Kind::kContinuation) {
        sent = co_await write(message + "\r\n");
        if (!sent) co_return lost("connection lost during APPEND");
        // The wait for the answer starts once the message is written, while the primary may still be
        // reading what this side's buffers held: the same second per KiB as the write.
        until = deadline() + api::transfer_allowance(message.size());
      } else if (r->kind == Response::Kind::kTagged && r->tag == tag) {
        answer = Outcome{r->status == "OK", false, r->status + " " + r->text};
        done = true;
      }
    }
    if (answer.ok || answer.text.find("[TRYCREATE]") == std::string::npos || attempt == 1) co_return answer;
    Outcome created = co_await command("CREATE " + quote(folder));
    if (!created.ok && created.connection) co_return created;
  }
  co_return Outcome{false, false, "not reached"};
}

awaitable<void> Client::logout() {
  (void)co_await command("LOGOUT");
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
}

}  // namespace mailark::api::imap
