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

}  // namespace
}  // namespace mailark::api::imap
