// Writes with a bound on how long a peer may leave them waiting. A client that sends requests and
// never reads the answers (its receive window shut, the server's send buffer full) would hold a
// write, and with it its session, its slot in the listener's limits and the answer's memory, for as
// long as it stays connected: every read of the servers has a deadline, and now every write too.
// write_within writes in chunks of at most kWriteChunk; each must go within `stall` (a peer that
// reads slowly but steadily is served however long the whole takes) and all before `deadline`.
// An error when the write did not finish: asio::error::timed_out when the peer stopped reading or
// the deadline passed, the socket's own error otherwise (the peer closed, reset); the caller then
// ends the connection (tests/threads_test.cc WriteWithin.*; tests/e2e/test_serve.py
// test_a_client_that_never_reads_its_replies_is_disconnected).
#pragma once

#include <algorithm>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <cerrno>
#include <cstddef>
#include <sys/socket.h>
#include <type_traits>

namespace mailark::api {

inline constexpr std::size_t kWriteChunk = 64 * 1024;

// How much longer than its stall bound a transfer of `bytes` may take in all, and how much longer the
// answer to it may take (what this side's buffers held is still being read then): a second per KiB,
// so a peer that reads at least 1 KiB/s is served. The delivery and continuity clients' writes
// (api/smtp/client.cc, api/imap/client.cc; test_delivery.py
// test_a_large_message_to_a_slow_reader_is_delivered).
inline std::chrono::seconds transfer_allowance(std::size_t bytes) { return std::chrono::seconds(bytes / 1024); }

template <typename Stream>
asio::awaitable<asio::error_code> write_within(Stream& stream, asio::const_buffer bytes, std::chrono::steady_clock::duration stall,
                                   std::chrono::steady_clock::time_point deadline =
                                       std::chrono::steady_clock::time_point::max()) {
  using namespace asio::experimental::awaitable_operators;
  using asio::experimental::as_tuple;
  const char* p = static_cast<const char*>(bytes.data());
  std::size_t left = bytes.size();
  if constexpr (std::is_same_v<Stream, asio::ip::tcp::socket>) {
    // Most answers fit the socket's buffer: sent at once, without a timer (a timer raced against
    // each write cost about 5 us more than the write itself: docs/BENCHMARKS.md "Bounded writes").
    const ssize_t n = ::send(stream.native_handle(), p, left, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      left -= static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      co_return asio::error_code(errno, asio::error::get_system_category());
    }
    if (left == 0) co_return asio::error_code();
  }
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (left > 0) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) co_return asio::error::timed_out;
    timer.expires_at(deadline - now < stall ? deadline : now + stall);
    const std::size_t n = std::min(left, kWriteChunk);
    auto r = co_await (asio::async_write(stream, asio::buffer(p, n), as_tuple(asio::use_awaitable)) ||
                       timer.async_wait(as_tuple(asio::use_awaitable)));
    if (r.index() == 1) co_return asio::error::timed_out;  // the write was cancelled: the connection is to end
    if (auto ec = std::get<0>(std::get<0>(r))) co_return ec;
    p += n;
    left -= n;
  }
  co_return asio::error_code();
}

}  // namespace mailark::api
