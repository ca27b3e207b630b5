#include "common/threads.h"

#include <atomic>
#include <cerrno>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace mailark {

namespace {
std::mutex g_inject_mu;
unsigned g_succeed = 0, g_fail = 0;  // tests only: fail_thread_starts_for_test
std::atomic<bool> g_injecting{false};

bool take_injected_failure() {
  if (!g_injecting.load(std::memory_order_relaxed)) return false;
  std::lock_guard lock(g_inject_mu);
  if (g_succeed > 0) {
    --g_succeed;
    return false;
  }
  if (g_fail == 0) return false;
  --g_fail;
  return true;
}
}  // namespace

void fail_thread_starts_for_test(unsigned after, unsigned count) {
  std::lock_guard lock(g_inject_mu);
  g_succeed = after;
  g_fail = count;
  g_injecting = count > 0;
}

unsigned thread_start_failures_left_for_test() {
  std::lock_guard lock(g_inject_mu);
  return g_fail;
}

std::thread start_thread(std::function<void()> f) {
  if (take_injected_failure()) throw std::system_error(EAGAIN, std::generic_category(), "thread start (test)");
  return std::thread(std::move(f));
}

unsigned run_side_by_side(unsigned extra, const std::function<void()>& work) {
  std::mutex mu;
  std::exception_ptr first;
  auto guarded = [&] {
    try {
      work();
    } catch (...) {
      std::lock_guard lock(mu);
      if (!first) first = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  try {
    pool.reserve(extra);
    for (unsigned t = 0; t < extra; ++t) {
      if (take_injected_failure())
        throw std::system_error(EAGAIN, std::generic_category(), "thread start (test)");
      pool.emplace_back(guarded);
    }
  } catch (const std::system_error&) {
    // no more threads to be had: those started, and this one, take the work
  } catch (const std::bad_alloc&) {
  }
  guarded();
  for (auto& t : pool) t.join();
  if (first) std::rethrow_exception(first);
  return static_cast<unsigned>(pool.size()) + 1;
}

}  // namespace mailark
