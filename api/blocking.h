// Blocking work (LMDB commits with their fsync, decompressing a large message, compiling virus
// signatures) run from a coroutine without stalling the io_context: the work runs on a pool thread and
// the coroutine resumes on its own executor when it is done.
//
//   auto work = [&] { result = archive.queue_apply(results); };
//   co_await run_blocking(pool, work);
//
// `work` is a named local that outlives the co_await: GCC 12 destroys a by-value coroutine argument
// that is a temporary twice (seen as a double free), so callables are passed by reference.
//
// An exception `work` throws is caught on the pool thread and thrown again from the co_await, in the
// coroutine: asio lets an exception from a handler escape its thread, which ends the whole process
// (every listener with it), so none may leave the pool (tests/threads_test.cc RunBlocking.*).
//
// Thread safety: `work` runs on a pool thread; it must not touch state owned by the io_context thread.
#pragma once

#include <asio.hpp>
#include <exception>
#include <utility>

#include "api/escaped.h"

namespace mailark::api {

template <typename Fn>
asio::awaitable<void> run_blocking(asio::thread_pool& pool, Fn& work) {
  std::exception_ptr failed;  // in the coroutine's frame, which outlives the work
  co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
      [&pool, &work, &failed](auto handler) {
        // The guard keeps the caller's io_context running until the coroutine has resumed.
        auto guard = asio::make_work_guard(asio::get_associated_executor(handler));
        asio::post(pool, [&work, &failed, handler = std::move(handler), guard = std::move(guard)]() mutable {
          try {
            work();
          } catch (...) {
            failed = std::current_exception();
          }
          auto ex = guard.get_executor();
          asio::post(ex, std::move(handler));
          guard.reset();
        });
      },
      asio::use_awaitable);
  if (failed) std::rethrow_exception(failed);
}

// Runs `io` until it has no more work. A handler that throws on the io thread (every listener's),
// whatever it throws, is handed to `on_error` as its description (api/escaped.h) and the loop goes
// on: asio lets the exception out of run(), and run() may be called again without a restart()
// (asio's io_context::run documentation); the other handlers, sessions and listeners are untouched
// (tests/threads_test.cc RunEventLoop.*).
template <typename OnError>
void run_event_loop(asio::io_context& io, OnError&& on_error) {
  for (;;) {
    try {
      io.run();
      return;
    } catch (...) {
      on_error(describe_escaped(std::current_exception()));
    }
  }
}

}  // namespace mailark::api
