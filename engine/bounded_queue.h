// A bounded multi-producer, multi-consumer queue for the pipeline's stages.
// push() blocks while full; pop() blocks while empty and returns false once closed and drained.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <vector>

namespace mailark {

template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(std::size_t capacity) : capacity_(capacity) {}

  void push(T item) {
    std::unique_lock lock(mu_);
    not_full_.wait(lock, [&] { return items_.size() < capacity_ || closed_; });
    items_.push_back(std::move(item));
    not_empty_.notify_one();
  }

  // Never blocks: false when the queue is full or closed, and `item` is left as it was.
  bool try_push(T& item) {
    std::lock_guard lock(mu_);
    if (items_.size() >= capacity_ || closed_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }

  bool pop(T& out) {
    std::unique_lock lock(mu_);
    not_empty_.wait(lock, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) return false;
    out = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return true;
  }

  // Like pop, but gives up after `timeout`: returns kTimeout then (the queue is still open).
  enum class PopResult { kItem, kTimeout, kClosed };
  PopResult pop_for(T& out, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!not_empty_.wait_for(lock, timeout, [&] { return !items_.empty() || closed_; })) return PopResult::kTimeout;
    if (items_.empty()) return PopResult::kClosed;
    out = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return PopResult::kItem;
  }

  // Waits for at least one item, then up to `linger` for the batch to fill to max, and takes what is
  // there: group commit batches whatever arrived while the previous commit was in progress, plus what
  // arrives within the linger time (zero for latency-bound callers).
  bool pop_batch(std::vector<T>& out, std::size_t max, std::chrono::milliseconds linger = {}) {
    std::unique_lock lock(mu_);
    not_empty_.wait(lock, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) return false;
    if (linger.count() > 0 && items_.size() < max && !closed_) {
      auto until = std::chrono::steady_clock::now() + linger;
      not_empty_.wait_until(lock, until,
                            [&] { return items_.size() >= std::min(max, capacity_) || closed_; });
    }
    while (!items_.empty() && out.size() < max) {
      out.push_back(std::move(items_.front()));
      items_.pop_front();
    }
    not_full_.notify_all();
    return true;
  }

  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<T> items_;
  std::size_t capacity_;
  bool closed_ = false;
};

}  // namespace mailark
