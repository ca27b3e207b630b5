// Work on threads that may not all be had (common/threads.h) and blocking work that throws
// (api/blocking.h): neither may end the process.
#include <gtest/gtest.h>

#include <xapian.h>

#include <asio.hpp>
#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "api/blocking.h"
#include "api/write.h"
#include "common/threads.h"
#include "tools/termination.h"

namespace mailark {
namespace {

// Items shared out through one counter, as every caller of run_side_by_side does.
struct Items {
  explicit Items(std::size_t n) : done(n) {}
  std::vector<std::atomic<int>> done;
  std::atomic<std::size_t> next{0};
  void work() {
    for (std::size_t i; (i = next.fetch_add(1)) < done.size();) done[i]++;
  }
  bool each_once() const {
    for (const auto& d : done)
      if (d.load() != 1) return false;
    return true;
  }
};

TEST(RunSideBySide, EveryItemIsDoneOnceOnTheThreadsThatCouldBeStarted) {
  Items all(10000);
  EXPECT_EQ(run_side_by_side(3, [&] { all.work(); }), 4u);
  EXPECT_TRUE(all.each_once());

  // The second of three starts fails (the case where a vector of std::thread would be destroyed
  // with a joinable thread in it): one extra thread and the caller do it all.
  fail_thread_starts_for_test(1, 1);
  Items some(10000);
  EXPECT_EQ(run_side_by_side(3, [&] { some.work(); }), 2u);
  EXPECT_TRUE(some.each_once());

  // No thread at all to be had: the caller still does everything.
  fail_thread_starts_for_test(0, 100);
  Items none(500);
  EXPECT_EQ(run_side_by_side(8, [&] { none.work(); }), 1u);
  EXPECT_TRUE(none.each_once());
  fail_thread_starts_for_test(0, 0);
}

TEST(RunSideBySide, AnExceptionOnAnyThreadIsThrownToTheCallerAfterEveryJoin) {
  std::atomic<int> finished{0};
  std::atomic<int> calls{0};
  EXPECT_THROW(run_side_by_side(3,
                                [&] {
                                  if (calls.fetch_add(1) == 2) throw std::runtime_error("one thread failed");
                                  finished++;
                                }),
               std::runtime_error);
  EXPECT_EQ(calls.load(), 4);
  EXPECT_EQ(finished.load(), 3);  // the others ran to their end before the throw reached the caller
}

TEST(RunBlocking, AThrowOnThePoolReachesTheCoroutineAndThePoolGoesOn) {
  asio::io_context io;
  asio::thread_pool pool{1};
  std::string caught;
  int after = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto bad = [] { throw std::runtime_error("invalid UTF-8 byte"); };
        try {
          co_await api::run_blocking(pool, bad);
        } catch (const std::runtime_error& e) {
          caught = e.what();
        }
        auto good = [&] { after = 42; };
        co_await api::run_blocking(pool, good);
      },
      asio::detached);
  io.run();
  pool.join();
  EXPECT_EQ(caught, "invalid UTF-8 byte");
  EXPECT_EQ(after, 42);
}

// A handler that throws on the io thread, or a coroutine whose end rethrows, does not end the loop:
// the other work (here a coroutine standing for a listener, ticking on a timer) goes on to its end.
TEST(RunEventLoop, AHandlerThatThrowsIsHandedOverAndTheLoopGoesOn) {
  asio::io_context io;
  int ticks = 0, after = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer t(co_await asio::this_coro::executor);
        for (int i = 0; i < 5; ++i) {
          t.expires_after(std::chrono::milliseconds(2));
          co_await t.async_wait(asio::use_awaitable);
          ++ticks;
        }
      },
      asio::detached);
  asio::post(io, [] { throw std::runtime_error("a handler's bug"); });
  asio::co_spawn(
      io, []() -> asio::awaitable<void> { throw std::logic_error("a session's bug"); co_return; },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  // What is not a std::exception goes the same way (Xapian's errors are not).
  asio::post(io, [] { throw Xapian::DatabaseModifiedError("the index moved on"); });
  asio::post(io, [] { throw 42; });
  asio::post(io, [&] { after = 7; });
  std::vector<std::string> errors;
  api::run_event_loop(io, [&](const std::string& what) { errors.push_back(what); });
  std::sort(errors.begin(), errors.end());  // the coroutine's end comes after the posts before it
  EXPECT_EQ(errors, (std::vector<std::string>{"Xapian::DatabaseModifiedError: the index moved on",
                                              "an exception of type int", "std::logic_error: a session's bug",
                                              "std::runtime_error: a handler's bug"}));
  EXPECT_EQ(after, 7);
  EXPECT_EQ(ticks, 5);
}

// The completion handler every detached coroutine of the servers gets: it says what escaped, of any
// type, and throws nothing on (which would leave the io thread's run()).
TEST(Escaped, WhatEscapesACoroutineIsLoggedNotThrownOn) {
  asio::io_context io;
  int finished = 0;
  asio::co_spawn(io, []() -> asio::awaitable<void> { throw Xapian::DatabaseCorruptError("a bad block"); co_return; },
                 api::log_escaped_as("test"));
  asio::co_spawn(io, []() -> asio::awaitable<void> { throw 7; co_return; }, api::log_escaped_as("test"));
  asio::co_spawn(io, [&]() -> asio::awaitable<void> { ++finished; co_return; }, api::log_escaped_as("test"));
  EXPECT_NO_THROW(io.run());
  EXPECT_EQ(finished, 1);
  EXPECT_EQ(api::describe_escaped(std::make_exception_ptr(Xapian::DatabaseCorruptError("a bad block"))),
            "Xapian::DatabaseCorruptError: a bad block");
  EXPECT_EQ(api::describe_escaped(std::make_exception_ptr(std::out_of_range("past the end"))),
            "std::out_of_range: past the end");
  EXPECT_EQ(api::describe_escaped(nullptr), "");
}

// write_within against a real peer on loopback, with small socket buffers so that the peer's reading
// is what lets the bytes go.
struct Loopback {
  asio::io_context io;
  asio::ip::tcp::socket server{io}, client{io};
  Loopback() {
    asio::ip::tcp::acceptor acc(io, {asio::ip::make_address("127.0.0.1"), 0});
    client.open(asio::ip::tcp::v4());
    client.set_option(asio::socket_base::receive_buffer_size(16 * 1024));
    client.connect(acc.local_endpoint());
    acc.accept(server);
    server.set_option(asio::socket_base::send_buffer_size(16 * 1024));
  }
};

asio::error_code write(Loopback& l, const std::string& bytes, std::chrono::milliseconds stall,
                       std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max()) {
  asio::error_code ec = asio::error::in_progress;
  asio::co_spawn(
      l.io, [&]() -> asio::awaitable<void> { ec = co_await api::write_within(l.server, asio::buffer(bytes), stall, deadline); },
      asio::detached);
  l.io.run();
  l.io.restart();
  return ec;
}

TEST(WriteWithin, APeerThatReadsNothingEndsTheWrite) {
  Loopback l;
  const std::string big(32u << 20, 'x');  // far more than both sockets' buffers
  EXPECT_EQ(write(l, big, std::chrono::milliseconds(200)), asio::error::timed_out);  // without the bound: waits for ever
}

TEST(WriteWithin, APeerThatReadsSlowlyButSteadilyGetsEveryByte) {
  Loopback l;
  const std::string bytes(1u << 20, 'y');
  std::size_t got = 0;
  std::thread reader([&] {
    std::vector<char> buf(16 * 1024);
    asio::error_code ec;
    while (got < bytes.size()) {  // 64 reads 40 ms apart: the whole takes longer than the stall
      std::this_thread::sleep_for(std::chrono::milliseconds(40));
      const std::size_t n = l.client.read_some(asio::buffer(buf), ec);
      if (ec) break;
      got += n;
    }
  });
  EXPECT_EQ(write(l, bytes, std::chrono::milliseconds(1000)), asio::error_code());
  reader.join();
  EXPECT_EQ(got, bytes.size());
}

TEST(WriteWithin, APeerThatClosedIsItsOwnErrorNotATimeout) {
  Loopback l;
  l.client.close();
  const std::string big(8u << 20, 'c');
  const asio::error_code ec = write(l, big, std::chrono::milliseconds(60000));
  EXPECT_TRUE(ec);
  EXPECT_NE(ec, asio::error::timed_out) << ec.message();
}

TEST(WriteWithin, TheDeadlineEndsAWriteThatMakesProgress) {
  Loopback l;
  const std::string bytes(8u << 20, 'z');
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    std::vector<char> buf(16 * 1024);
    asio::error_code ec;
    while (!stop) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      l.client.read_some(asio::buffer(buf), ec);
      if (ec) break;
    }
  });
  // 8 MB at 16 KB each 20 ms would take 10 s; the deadline is 300 ms away, the stall bound a minute.
  EXPECT_EQ(write(l, bytes, std::chrono::milliseconds(60000), std::chrono::steady_clock::now() + std::chrono::milliseconds(300)),
            asio::error::timed_out);
  stop = true;
  asio::error_code ec;
  l.server.shutdown(asio::socket_base::shutdown_both, ec);
  reader.join();
}

// What ends the process is said before it ends (tools/termination.h): an exception that escapes a
// thread, by its type and message, then where it was thrown from, then the abort.
TEST(Termination, AnErrorEscapingAThreadIsNamedBeforeTheProcessEnds) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        cli::report_uncaught_errors();
        std::thread([] { throw std::runtime_error("the disk is on fire"); }).join();
      },
      "mailark: ended by an uncaught error: std::runtime_error: the disk is on fire\nmailark: where it was thrown "
      "from:\n(.|\n)*threads_test");
}

TEST(Termination, AXapianErrorIsNamedByItsType) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        cli::report_uncaught_errors();
        std::thread([] { throw Xapian::DatabaseCorruptError("a block is not what it says"); }).join();
      },
      "ended by an uncaught error: Xapian::DatabaseCorruptError: a block is not what it says");
}

TEST(Termination, AnEndWithoutAnExceptionSaysSo) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        cli::report_uncaught_errors();
        std::terminate();
      },
      "ended by an uncaught error: no exception \\(std::terminate called directly\\)");
}

}  // namespace
}  // namespace mailark
