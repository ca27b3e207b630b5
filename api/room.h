// Bytes of clients' data a server holds at once over all its connections (messages being archived,
// IMAP uploads, request bodies), bounded by a capacity: a connection takes room before it reads or
// keeps the bytes, and gives it back when done. One holder always fits when nothing else is held,
// whatever its size, so a message of the largest allowed size always passes on its own.
// Used by api/smtp/server.cc (limits.store_bytes), api/imap/server.cc (the same) and
// api/http/server.cc (ServerOptions::body_room_bytes); tests: tests/e2e/test_serve.py
// MailInFlightTest, tests/e2e/test_imap.py UploadRoomTest, tests/e2e/test_web.py WebBodyRoomTest.
//
// Thread safety: none; one server's io thread.
#pragma once

#include <cstddef>

namespace mailark::api {

class Room {
 public:
  explicit Room(std::size_t capacity) : capacity_(capacity) {}
  bool fits(std::size_t bytes) const { return used_ == 0 || used_ + bytes <= capacity_; }
  std::size_t used() const { return used_; }

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
      room_.used_ -= held_;
      held_ = 0;
    }

   private:
    Room& room_;
    std::size_t held_ = 0;
  };

 private:
  std::size_t capacity_;
  std::size_t used_ = 0;
};

}  // namespace mailark::api
