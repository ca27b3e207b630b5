// Helper processes kept for reuse between requests: the scan processes (scanner/scan_host.h) and the
// text extractor's workers (engine/extract.h). At most `max` are alive at once; an idle one is reused;
// a request that finds none idle with the limit reached waits for one. The pool holds the idle
// workers and counts the live ones; the caller starts new ones, talks to them, and says how each
// request ended. Thread safe. Tests: the callers' (ScanHost.*, Extract.*).
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace mailark {

template <typename W>
class WorkerPool {
 public:
  // max: 0 counts as 1. discard: ends a worker the pool lets go (kills it, closes its socket).
  WorkerPool(unsigned max, std::function<void(W&)> discard) : max_(max ? max : 1), discard_(std::move(discard)) {}
  ~WorkerPool() { let_go_idle(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // An idle worker for one request, or nothing: then a place is kept for a new one, which the caller
  // starts (and gives back as any other, or calls unused_place() when it could not be started). A
  // retry always gets a place for a new worker (the request may be what ended the last one, or the
  // idle one it had may have died meanwhile): at the limit an idle worker is let go to make room.
  std::optional<W> take(bool retry) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty() || live_ < max_; });
    if (!idle_.empty() && !retry) {
      W w = std::move(idle_.back());
      idle_.pop_back();
      return w;
    }
    if (live_ < max_) {
      ++live_;
    } else {
      discard_(idle_.back());  // its place goes to the new one
      idle_.pop_back();
    }
    return std::nullopt;
  }

  // A place kept by take() whose worker could not be started.
  void unused_place() {
    std::lock_guard lock(mu_);
    --live_;
    cv_.notify_one();
  }

  // The end of a request: a healthy worker waits for the next one; any other is let go.
  void give_back(W w, bool healthy) {
    std::lock_guard lock(mu_);
    if (healthy) {
      idle_.push_back(std::move(w));
    } else {
      discard_(w);
      --live_;
    }
    cv_.notify_one();
  }

  // Lets every idle worker go (before what they depend on ends: a scan host reaps its children).
  void let_go_idle() {
    std::lock_guard lock(mu_);
    for (W& w : idle_) discard_(w);
    live_ -= static_cast<unsigned>(idle_.size());
    idle_.clear();
  }

  std::vector<W> idle() const {
    std::lock_guard lock(mu_);
    return idle_;
  }

 private:
  const unsigned max_;
  std::function<void(W&)> discard_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<W> idle_;
  unsigned live_ = 0;
};

}  // namespace mailark
