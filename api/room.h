// Bytes of clients' data a server holds at once over all its connections (messages being archived,
// IMAP uploads, request bodies), bounded by a capacity: a connection takes room before it reads or
// keeps the bytes, and gives it back when done. One holder always fits when nothing else is held,
// whatever its size, so a message of the largest allowed size always passes on its own.
// Used by api/smtp/server.cc (limits.store_bytes, waiting in a RoomQueue), api/imap/server.cc (the
// same, refused at once) and api/http/server.cc (ServerOptions::body_room_bytes, refused at once);
// tests: tests/room_test.cc, tests/e2e/test_serve.py MailInFlightTest, tests/e2e/test_imap.py
// UploadRoomTest, tests/e2e/test_web.py WebBodyRoomTest.
//
// Thread safety: none; one server's io thread.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>

namespace mailark::api {

class Room {
 public:
  explicit Room(std::size_t capacity) : capacity_(capacity) {}
  bool fits(std::size_t bytes) const { return used_ == 0 || used_ + bytes <= capacity_; }
  std::size_t used() const { return used_; }
  // Called after a hold gives room back (RoomQueue::grant); one at most.
  void on_release(std::function<void()> f) { on_release_ = std::move(f); }

  // What one connection holds; given back when released or destroyed.
  class Hold {
   public:
    explicit Hold(Room& room) : room_(room) {}
    ~Hold() { release(); }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    // Takes `bytes` more when they fit; false (nothing taken) when they do not.
    bool take(std::size_t bytes) {
      if (!room_.fits(bytes)) return false;
      room_.used_ += bytes;
      held_ += bytes;
      return true;
    }
    void release() {
      if (held_ == 0) return;
      room_.used_ -= held_;
      held_ = 0;
      if (room_.on_release_) room_.on_release_();
    }

   private:
    Room& room_;
    std::size_t held_ = 0;
  };

 private:
  std::size_t capacity_;
  std::size_t used_ = 0;
  std::function<void()> on_release_;
};

// Waiting for room, first come first served: a taker that does not fit, or that arrives while others
// wait, queues; room given back goes to the queue's head, then to the next while they fit. So a large
// message is never passed over for ever by smaller ones that keep fitting beside the others (each
// later one waits behind it), and a waiter is woken when room is given back, not by polling.
// Tests: tests/room_test.cc (RoomQueue.*).
class RoomQueue {
 public:
  RoomQueue(asio::io_context& io, Room& room) : io_(io), room_(room) {
    room_.on_release([this] { grant(); });
  }
  ~RoomQueue() { room_.on_release(nullptr); }
  RoomQueue(const RoomQueue&) = delete;
  RoomQueue& operator=(const RoomQueue&) = delete;

  // Takes `bytes` for `hold`: at once when nobody waits and they fit, else in arrival order once
  // they do. False (nothing taken) at `deadline`, or when it would wait and the queue is closed.
  asio::awaitable<bool> take(Room::Hold& hold, std::size_t bytes, std::chrono::steady_clock::time_point deadline) {
    if (waiters_.empty() && hold.take(bytes)) co_return true;
    if (closed_) co_return false;
    Waiter w{&hold, bytes, asio::steady_timer(io_, deadline)};
    waiters_.push_back(&w);
    Unlink unlink{*this, &w};  // when the coroutine is destroyed while it waits
    co_await w.timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    // Woken by grant (granted), close, or the deadline; room given back meanwhile may be granted
    // after the deadline fired and before this resumed: granted is what counts. A head that leaves
    // without room lets the next in line, which may fit where it did not, have its turn.
    if (unlink.remove() && !w.granted) grant();
    co_return w.granted;
  }

  // Every waiter gives up (false), and a later take that would wait fails at once (a server
  // stopping: a message that fits is still taken, one that does not is not kept waiting).
  void close() {
    closed_ = true;
    for (Waiter* w : waiters_) w->timer.cancel();
  }

  std::size_t waiting() const { return waiters_.size(); }

 private:
  struct Waiter {
    Room::Hold* hold;
    std::size_t bytes;
    asio::steady_timer timer;
    bool granted = false;
  };
  struct Unlink {
    RoomQueue& q;
    Waiter* w;
    // Takes the waiter out of the queue if it is still in it; true when it was the head.
    bool remove() {
      auto it = std::find(q.waiters_.begin(), q.waiters_.end(), w);
      if (it == q.waiters_.end()) return false;
      const bool head = it == q.waiters_.begin();
      q.waiters_.erase(it);
      return head;
    }
    ~Unlink() { remove(); }
  };

  // Room to the waiters in order, while the head fits.
  void grant() {
    if (closed_) return;
    while (!waiters_.empty()) {
      Waiter* w = waiters_.front();
      if (!w->hold->take(w->bytes)) break;
      w->granted = true;
      waiters_.pop_front();
      w->timer.cancel();
    }
  }

  asio::io_context& io_;
  Room& room_;
  std::deque<Waiter*> waiters_;
  bool closed_ = false;
};

}  // namespace mailark::api
