// A bounded multi-producer, multi-consumer queue for the pipeline's stages.
// push() blocks while full; pop() blocks while empty and returns false once closed and drained.
//
// Wake-ups are what such a queue costs: each one is a futex call and, on a busy machine, a context
// switch. So a thread is woken only when it can go on: a consumer waiting for one item at the first
// item, a consumer lingering for a batch (pop_batch) once the batch is full or an urgent item is
// there (someone waits for it: a session's message among an import's), and producers blocked on
// a full queue once it has drained to half its capacity, so that they refill it in one go rather
// than item by item (docs/BENCHMARKS.md "Wake-ups in the import pipeline";
// tests/ingest_test.cc Ingest.QueueWakesBlockedThreadsOnlyWhenTheyCanGoOn).
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

namespace mailark {

template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}
  // `urgent` picks the items someone waits for (a session's message, where an import's has no one):
  // they are taken before every other item (each class in its own order), and one in the queue ends a
  // consumer's linger at once, however short of its batch it is (tests/ingest_test.cc
  // Ingest.QueueLingerEndsAtAnUrgentItem, Ingest.QueueGivesUrgentItemsFirst). Without it a session's
  // message waited behind the 256 messages an import handed to the server may hold: its 250 took
  // 320 ms (median) instead of 4 (docs/BENCHMARKS.md "The SMTP door during a handed import").
  BoundedQueue(std::size_t capacity, std::function<bool(const T&)> urgent)
      : capacity_(std::max<std::size_t>(1, capacity)), urgent_(std::move(urgent)) {}

  void push(T item) {
    std::unique_lock lock(mu_);
    if (size() >= capacity_ && !closed_) {
      ++producers_waiting_;
      not_full_.wait(lock, [&] { return size() < capacity_ || closed_; });
      --producers_waiting_;
    }
    add(std::move(item));
    wake_consumers();
  }

  // Never blocks: false when the queue is full or closed, and `item` is left as it was.
  bool try_push(T& item) {
    std::lock_guard lock(mu_);
    if (size() >= capacity_ || closed_) return false;
    add(std::move(item));
    wake_consumers();
    return true;
  }

  bool pop(T& out) {
    std::unique_lock lock(mu_);
    wait_for_item(lock, nullptr);
    if (empty()) return false;
    out = remove_front();
    wake_producers();
    return true;
  }

  // Like pop, but gives up after `timeout`: returns kTimeout then (the queue is still open).
  enum class PopResult { kItem, kTimeout, kClosed };
  PopResult pop_for(T& out, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    const auto until = std::chrono::steady_clock::now() + timeout;
    if (!wait_for_item(lock, &until)) return PopResult::kTimeout;
    if (empty()) return PopResult::kClosed;
    out = remove_front();
    wake_producers();
    return PopResult::kItem;
  }

  // Waits for at least one item, then up to `linger` for the batch to fill to max, and takes what is
  // there: group commit batches whatever arrived while the previous commit was in progress, plus what
  // arrives within the linger time (zero for latency-bound callers).
  bool pop_batch(std::vector<T>& out, std::size_t max, std::chrono::milliseconds linger = {}) {
    std::unique_lock lock(mu_);
    wait_for_item(lock, nullptr);
    if (empty()) return false;
    if (linger.count() > 0) linger_until(lock, std::min(max, capacity_), std::chrono::steady_clock::now() + linger);
    take(out, max);
    return true;
  }

  // Like pop_batch, adding to what `out` holds, but waits for a first item and then for the batch to
  // fill (max items in `out` in all) only until `until`. False only when the queue is closed and
  // empty; on a timeout `out` is left as it was.
  bool pop_batch_until(std::vector<T>& out, std::size_t max, std::chrono::steady_clock::time_point until) {
    std::unique_lock lock(mu_);
    if (out.size() >= max) return true;
    if (!wait_for_item(lock, &until)) return true;
    if (empty()) return false;
    linger_until(lock, std::min(max - out.size(), capacity_), until);
    take(out, max);
    return true;
  }

  // Items in the queue now.
  std::size_t depth() {
    std::lock_guard lock(mu_);
    return size();
  }
  std::size_t capacity() const { return capacity_; }

  // For tests: the threads waiting now, and the notifications sent to waiting threads so far.
  struct Waiting {
    std::size_t consumers = 0, lingering = 0, producers = 0;
  };
  Waiting waiting() {
    std::lock_guard lock(mu_);
    return {consumers_waiting_, lingering_, producers_waiting_};
  }
  std::size_t wakeups() {
    std::lock_guard lock(mu_);
    return wakeups_;
  }

  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
    batch_full_.notify_all();
    not_full_.notify_all();
  }

 private:
  // Waits until there is an item or the queue is closed; with `until`, at most until then (false on
  // a timeout).
  bool wait_for_item(std::unique_lock<std::mutex>& lock, const std::chrono::steady_clock::time_point* until) {
    if (!empty() || closed_) return true;
    ++consumers_waiting_;
    auto ready = [&] { return !empty() || closed_; };
    bool got = true;
    if (until)
      got = not_empty_.wait_until(lock, *until, ready);
    else
      not_empty_.wait(lock, ready);
    --consumers_waiting_;
    return got;
  }

  // Waits, as a lingering consumer, until `want` items are there, the queue is closed, or `until`.
  void linger_until(std::unique_lock<std::mutex>& lock, std::size_t want, std::chrono::steady_clock::time_point until) {
    if (size() >= want || closed_ || !urgent_items_.empty()) return;
    ++lingering_;
    batch_want_ = lingering_ == 1 ? want : std::min(batch_want_, want);
    batch_full_.wait_until(lock, until, [&] { return size() >= want || closed_ || !urgent_items_.empty(); });
    --lingering_;
  }

  // Moves items into `out` until it holds `max`, and wakes producers that can go on.
  void take(std::vector<T>& out, std::size_t max) {
    while (!empty() && out.size() < max) out.push_back(remove_front());
    wake_producers();
  }

  std::size_t size() const { return items_.size() + urgent_items_.size(); }
  bool empty() const { return items_.empty() && urgent_items_.empty(); }
  void add(T item) {
    if (urgent_ && urgent_(item))
      urgent_items_.push_back(std::move(item));
    else
      items_.push_back(std::move(item));
  }
  // The oldest urgent item, else the oldest other one.
  T remove_front() {
    std::deque<T>& from = urgent_items_.empty() ? items_ : urgent_items_;
    T item = std::move(from.front());
    from.pop_front();
    return item;
  }

  // Called with the lock held, after an item was added.
  void wake_consumers() {
    if (consumers_waiting_ > 0) {
      ++wakeups_;
      not_empty_.notify_one();
    }
    if (lingering_ > 0 && (size() >= batch_want_ || !urgent_items_.empty())) {
      ++wakeups_;
      batch_full_.notify_all();
    }
  }

  // Called with the lock held, after items were taken: producers waiting on a full queue go on once
  // it is down to half (every one of them: each may fill it again), never for each slot freed.
  void wake_producers() {
    if (producers_waiting_ > 0 && size() <= capacity_ / 2) {
      ++wakeups_;
      not_full_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable not_empty_, batch_full_, not_full_;
  std::deque<T> items_;         // in the order pushed, but for the urgent ones:
  std::deque<T> urgent_items_;  // taken first, in the order pushed
  std::size_t capacity_;
  std::size_t consumers_waiting_ = 0, producers_waiting_ = 0, lingering_ = 0;
  std::size_t batch_want_ = 0;  // the smallest batch a lingering consumer waits for
  std::size_t wakeups_ = 0;
  bool closed_ = false;
  std::function<bool(const T&)> urgent_;  // empty: none is
};

}  // namespace mailark
