// api/imap/client.h against a hostile IMAP server on loopback: the server is the attacker (a few
// lines here), not a stand-in for a real one; the client's work with real servers (Dovecot) is in
// tests/e2e/test_continuity.py.
#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/read_until.hpp>
#include <asio/ssl.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <optional>
#include <string>

#include "api/imap/client.h"
#include "api/tls.h"
#include "test_util.h"

using namespace std::chrono_literals;

namespace mailark::api::imap {
namespace {

// A server that greets, reads one command and then sends an untagged line every 50 ms, never the
// tagged answer, until the client goes away: each line used to start the client's wait again, so
// the command never ended.
TEST(ImapClient, AServerThatDripsIsCutOffAtTheTimeout) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  int drips = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto sock = co_await acceptor.async_accept(asio::use_awaitable);
        co_await asio::async_write(sock, asio::buffer(std::string("* OK hostile IMAP4rev1\r\n")), asio::use_awaitable);
        std::string line;
        co_await asio::async_read_until(sock, asio::dynamic_buffer(line), "\r\n", asio::use_awaitable);
        asio::steady_timer t(io);
        try {
          for (;;) {
            t.expires_after(50ms);
            co_await t.async_wait(asio::use_awaitable);
            co_await asio::async_write(sock, asio::buffer(std::string("* OK still here\r\n")), asio::use_awaitable);
            ++drips;
          }
        } catch (const std::exception&) {
          // the client went away
        }
      },
      asio::detached);
  asio::ssl::context tls(asio::ssl::context::tls_client);
  std::optional<Outcome> login;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        Client client(io, tls, 1s);
        Outcome c = co_await client.connect("127.0.0.1", port, Client::Tls::kNone);
        EXPECT_TRUE(c.ok) << c.text;
        login = co_await client.login("someone", "secret");
        client.abort();
      },
      asio::detached);
  io.run();
  ASSERT_TRUE(login.has_value());
  EXPECT_FALSE(login->ok);
  EXPECT_TRUE(login->connection) << "a lost connection, tried again later";
  EXPECT_EQ(login->text, "no answer within 1 s");
  EXPECT_GE(drips, 1) << "the server dripped before the client gave up";
}

// A man in the middle (here: the server itself) puts "* BYE" and a tagged OK for the next command
// behind the STARTTLS OK, in the clear and in the same packet: after the handshake the client must
// read only what came through TLS, so the LOGIN gets the server's real answer, not the injected one.
TEST(ImapClient, LinesSentInTheClearBeforeTlsAreNotReadAfterIt) {
  test::ScratchDir dir;
  auto pair = ensure_self_signed(dir.path(), "imap.test.example");
  ASSERT_TRUE(pair) << pair.error().to_string();
  asio::ssl::context server_tls(asio::ssl::context::tls_server);
  ASSERT_TRUE(use_server_certificate(server_tls, pair->first, pair->second));
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  std::string login_line;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto sock = co_await acceptor.async_accept(asio::use_awaitable);
        co_await asio::async_write(sock, asio::buffer(std::string("* OK IMAP4rev1 STARTTLS\r\n")), asio::use_awaitable);
        std::string line;
        co_await asio::async_read_until(sock, asio::dynamic_buffer(line), "\r\n", asio::use_awaitable);
        co_await asio::async_write(
            sock, asio::buffer(std::string("m1 OK begin TLS\r\n* BYE injected\r\nm2 OK injected login\r\n")),
            asio::use_awaitable);
        asio::ssl::stream<asio::ip::tcp::socket&> tls(sock, server_tls);
        co_await tls.async_handshake(asio::ssl::stream_base::server, asio::use_awaitable);
        co_await asio::async_read_until(tls, asio::dynamic_buffer(login_line), "\r\n", asio::use_awaitable);
        co_await asio::async_write(tls, asio::buffer(std::string("m2 NO [AUTHENTICATIONFAILED] the real answer\r\n")),
                                   asio::use_awaitable);
      },
      [](std::exception_ptr) {});
  asio::ssl::context tls(asio::ssl::context::tls_client);
  tls.set_verify_mode(asio::ssl::verify_none);
  std::optional<Outcome> connected, login;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        Client client(io, tls, 10s);
        connected = co_await client.connect("127.0.0.1", port, Client::Tls::kStartTls);
        if (connected->ok) login = co_await client.login("someone", "secret");
        client.abort();
      },
      asio::detached);
  io.run();
  ASSERT_TRUE(connected.has_value());
  ASSERT_TRUE(connected->ok) << connected->text;
  ASSERT_TRUE(login.has_value());
  EXPECT_FALSE(login->ok);
  EXPECT_FALSE(login->connection) << login->text;
  EXPECT_EQ(login->text, "NO [AUTHENTICATIONFAILED] the real answer");
  EXPECT_EQ(login_line.rfind("m2 LOGIN ", 0), 0u) << login_line;
}

}  // namespace
}  // namespace mailark::api::imap
