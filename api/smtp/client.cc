#include "api/smtp/client.h"

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ssl/host_name_verification.hpp>

#include <openssl/evp.h>

#include "api/write.h"

namespace mailark::smtp {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

SmtpClient::SmtpClient(asio::io_context& io, asio::ssl::context& tls, std::string helo_name,
                       std::chrono::seconds connect_timeout, std::chrono::seconds reply_timeout)
    : io_(io),
      tls_ctx_(tls),
      helo_(std::move(helo_name)),
      connect_timeout_(connect_timeout),
      reply_timeout_(reply_timeout),
      socket_(io) {}

SmtpClient::~SmtpClient() {
  asio::error_code ec;
  socket_.close(ec);
}

bool SmtpClient::has_extension(const std::string& name) const {
  for (const auto& e : extensions_)
    if (e == name || e.rfind(name + " ", 0) == 0) return true;
  return false;
}

// A write may take as long as the server goes on reading: each 64 KiB within the reply timeout (as
// Postfix's smtp_data_xfer_timeout, per write), and the whole within the reply timeout and a second
// per KiB. A large message to a server behind a slow link is delivered, where the reply timeout for
// the whole write failed it on every try (test_delivery.py
// test_a_large_message_to_a_slow_reader_is_delivered); a server that stops reading is left as before.
awaitable<bool> SmtpClient::write(const std::string& bytes) {
  const auto deadline = std::chrono::steady_clock::now() + reply_timeout_ + api::transfer_allowance(bytes.size());
  asio::error_code ec;
  if (tls_active_)
    ec = co_await api::write_within(*tls_, asio::buffer(bytes), reply_timeout_, deadline);
  else
    ec = co_await api::write_within(socket_, asio::buffer(bytes), reply_timeout_, deadline);
  co_return !ec;
}

// The reply timeout bounds the whole reply, not each read: a server that sends a byte now and then
// holds a delivery no longer than one that sends nothing (test_delivery.py
// test_an_endless_reply_is_cut_off_and_the_mail_kept).
awaitable<ClientReply> SmtpClient::read_reply(std::chrono::seconds more) {
  const auto deadline = std::chrono::steady_clock::now() + reply_timeout_ + more;
  while (true) {
    if (auto r = replies_.next()) co_return *r;
    ClientReply reply;
    char chunk[4096];
    asio::steady_timer timer(io_);
    timer.expires_at(deadline);
    std::size_t n = 0;
    asio::error_code ec;
    if (tls_active_) {
      auto r = co_await (tls_->async_read_some(asio::buffer(chunk), as_tuple(use_awaitable)) ||
                         timer.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) {
        reply.text = "timeout waiting for a reply from " + peer_;
        co_return reply;
      }
      std::tie(ec, n) = std::get<0>(r);
    } else {
      auto r = co_await (socket_.async_read_some(asio::buffer(chunk), as_tuple(use_awaitable)) ||
                         timer.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) {
        reply.text = "timeout waiting for a reply from " + peer_;
        co_return reply;
      }
      std::tie(ec, n) = std::get<0>(r);
    }
    if (ec) {
      reply.text = "connection to " + peer_ + " lost: " + ec.message();
      co_return reply;
    }
    replies_.feed(std::string_view(chunk, n));
  }
}

awaitable<ClientReply> SmtpClient::open(const std::string& host, std::uint16_t port, Tls tls,
                                        const std::string& tls_name) {
  ClientReply r = co_await open_once(host, port, tls, tls_name);
  if (r.ok() || !tls_failed_ || tls != Tls::kOpportunistic || !plaintext_fallback_ || aborted_) co_return r;
  // The handshake failed: the same server again, without TLS (a new connection: the old one is in
  // an unknown TLS state).
  asio::error_code ec;
  socket_.close(ec);
  tls_.reset();
  tls_active_ = false;
  tls_info_.clear();
  replies_.reset();
  extensions_.clear();
  tls_failure_ = r.to_string();
  co_return co_await open_once(host, port, Tls::kNone, tls_name);
}

awaitable<ClientReply> SmtpClient::open_once(const std::string& host, std::uint16_t port, Tls tls,
                                             const std::string& tls_name) {
  const std::string& name = tls_name.empty() ? host : tls_name;
  peer_ = host + ":" + std::to_string(port);
  ClientReply fail;
  tcp::resolver resolver(io_);
  auto [rec, endpoints] = co_await resolver.async_resolve(host, std::to_string(port), as_tuple(use_awaitable));
  if (rec) {
    fail.text = "cannot resolve " + host + ": " + rec.message();
    co_return fail;
  }
  asio::steady_timer timer(io_);
  timer.expires_after(connect_timeout_);
  auto r = co_await (asio::async_connect(socket_, endpoints, as_tuple(use_awaitable)) ||
                     timer.async_wait(as_tuple(use_awaitable)));
  if (r.index() == 1) {
    fail.text = "connection to " + peer_ + " timed out";
    co_return fail;
  }
  if (auto ec = std::get<0>(std::get<0>(r))) {
    fail.text = "connection to " + peer_ + " failed: " + ec.message();
    co_return fail;
  }
  ClientReply greeting = co_await read_reply();
  if (greeting.code != 220) co_return greeting;
  ClientReply hello = co_await command("EHLO " + helo_);
  if (!hello.ok()) hello = co_await command("HELO " + helo_);
  if (!hello.ok()) co_return hello;
  if (tls != Tls::kNone && has_extension("STARTTLS")) {
    ClientReply start = co_await command("STARTTLS");
    if (start.code == 220) {
      tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, tls_ctx_);
      SSL_set_tlsext_host_name(tls_->native_handle(), name.c_str());
      // With delivery.verify_certificates the context verifies the chain; the name is checked here.
      tls_->set_verify_callback(asio::ssl::host_name_verification(name));
      asio::steady_timer hs_timer(io_);
      hs_timer.expires_after(connect_timeout_);
      auto hs = co_await (tls_->async_handshake(asio::ssl::stream_base::client, as_tuple(use_awaitable)) ||
                          hs_timer.async_wait(as_tuple(use_awaitable)));
      if (hs.index() == 1 || std::get<0>(std::get<0>(hs))) {
        fail.text = "TLS handshake with " + peer_ + " failed";
        tls_failed_ = true;
        co_return fail;
      }
      tls_active_ = true;
      replies_.reset();  // nothing sent before the handshake is read after it
      tls_info_ = std::string(SSL_get_version(tls_->native_handle())) + " " + SSL_get_cipher_name(tls_->native_handle());
      hello = co_await command("EHLO " + helo_);
      if (!hello.ok()) co_return hello;
    } else if (tls == Tls::kRequired) {
      co_return start;
    }
  }
  if (tls == Tls::kRequired && !tls_active_) {
    fail.text = peer_ + " does not offer STARTTLS, which delivery.tls requires";
    co_return fail;
  }
  co_return hello;
}

// GCC 12 miscompiles co_await inside conditions and conditional expressions: every co_await here
// stands alone in its statement.
awaitable<ClientReply> SmtpClient::command(const std::string& line) {
  bool sent = co_await write(line + "\r\n");
  if (!sent) co_return ClientReply{0, "cannot send to " + peer_};
  ClientReply r = co_await read_reply();
  if (line.rfind("EHLO ", 0) == 0 && r.ok()) {
    // The EHLO reply lists the extensions after the server's name.
    extensions_.clear();
    for (std::size_t i = 1; i < replies_.last_lines().size(); ++i) {
      std::string e = replies_.last_lines()[i];
      for (char& c : e) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      extensions_.push_back(e);
    }
  }
  co_return r;
}

awaitable<std::vector<ClientReply>> SmtpClient::pipeline(const std::vector<std::string>& lines) {
  std::string all;
  for (const auto& l : lines) all += l + "\r\n";
  std::vector<ClientReply> out;
  bool sent = co_await write(all);
  if (!sent) {
    out.assign(lines.size(), ClientReply{0, "cannot send to " + peer_});
    co_return out;
  }
  while (out.size() < lines.size()) {
    ClientReply r = co_await read_reply();
    out.push_back(r);
    if (r.code == 0) break;
  }
  while (out.size() < lines.size()) out.push_back(ClientReply{0, out.back().text});
  co_return out;
}

awaitable<ClientReply> SmtpClient::send_data(const std::string& message) {
  bool sent = co_await write(dot_stuff(message));
  if (!sent) co_return ClientReply{0, "cannot send to " + peer_};
  // The write ends when the last bytes are in this side's buffers (megabytes), not when the server
  // has read them: its answer may come that much later (Postfix has smtp_data_done_timeout, 600 s,
  // for it). The same second per KiB as the write.
  ClientReply r = co_await read_reply(api::transfer_allowance(message.size()));
  co_return r;
}

awaitable<ClientReply> SmtpClient::auth_plain(const std::string& user, const std::string& password) {
  bool plain = false;
  for (const auto& e : extensions_) {
    if (e.rfind("AUTH ", 0) == 0 && (" " + e + " ").find(" PLAIN ") != std::string::npos) plain = true;
  }
  if (!plain) co_return ClientReply{530, peer_ + " offers no AUTH PLAIN"};
  asio::error_code ec;
  auto remote = socket_.remote_endpoint(ec);
  if (!tls_active_ && (ec || !remote.address().is_loopback()))
    co_return ClientReply{530, "not sending a password to " + peer_ + " without TLS"};
  std::string creds;
  creds.push_back('\0');
  creds += user;
  creds.push_back('\0');
  creds += password;
  std::string b64(4 * ((creds.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()), reinterpret_cast<const unsigned char*>(creds.data()),
                          static_cast<int>(creds.size()));
  b64.resize(static_cast<std::size_t>(n));
  ClientReply r = co_await command("AUTH PLAIN " + b64);
  co_return r;
}

void SmtpClient::abort() {
  aborted_ = true;
  asio::error_code ec;
  socket_.cancel(ec);
  socket_.close(ec);
}

awaitable<void> SmtpClient::quit() {
  bool sent = co_await write("QUIT\r\n");
  if (sent) co_await read_reply();
}

}  // namespace mailark::smtp
