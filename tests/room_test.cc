// api/room.h: the room clients' bytes take, and the queue that waits for it in arrival order.
#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "api/room.h"

using namespace std::chrono_literals;

namespace mailark::api {
namespace {

const auto kFar = std::chrono::steady_clock::now() + 1h;

// Starts one taker of `bytes` on `io`; what became of it is appended to `log` as "name" or
// "name refused".
void start(asio::io_context& io, RoomQueue& q, Room::Hold& hold, std::size_t bytes, std::string name,
           std::vector<std::string>& log, std::chrono::steady_clock::time_point deadline = kFar) {
  asio::co_spawn(
      io,
      [&q, &hold, bytes, name, &log, deadline]() -> asio::awaitable<void> {
        const bool ok = co_await q.take(hold, bytes, deadline);
        log.push_back(ok ? name : name + " refused");
      },
      asio::detached);
}

// Runs what is ready on `io` (again after it ran out of work).
void settle(asio::io_context& io) {
  io.restart();
  io.poll();
}

TEST(Room, OneHolderAlwaysFitsAndMoreOnlyWithinTheCapacity) {
  Room room(100);
  Room::Hold a(room), b(room);
  EXPECT_TRUE(a.take(500));  // alone, whatever its size
  EXPECT_FALSE(b.take(1));
  a.release();
  EXPECT_TRUE(a.take(60));
  EXPECT_FALSE(b.take(41));
  EXPECT_TRUE(b.take(40));
  EXPECT_EQ(room.used(), 100u);
}

// The queue's tests share what a server has: its io_context, a room (100 bytes here), the room's
// queue, and what became of each taker. (A fixture named as the class it tests, in a namespace of
// its own, so the tests keep the names RoomQueue.*.)
namespace queue {
class RoomQueue : public ::testing::Test {
 protected:
  void start(Room::Hold& hold, std::size_t bytes, std::string name,
             std::chrono::steady_clock::time_point deadline = kFar) {
    api::start(io, q, hold, bytes, std::move(name), log, deadline);
  }
  void settle() { api::settle(io); }

  asio::io_context io;
  Room room{100};
  api::RoomQueue q{io, room};
  std::vector<std::string> log;
};

// The starvation this prevents: a message that needs much of the room, waiting while smaller ones
// keep arriving and fitting beside those being archived, was passed over by each of them (the server
// used to poll for room every 50 ms, whoever asked first after a release took it).
TEST_F(RoomQueue, ALargeWaiterIsNotPassedOverBySmallerOnesThatWouldFit) {
  auto archiving = std::make_unique<Room::Hold>(room);
  ASSERT_TRUE(archiving->take(80));
  Room::Hold large(room), small(room), later(room);
  start(large, 50, "large");
  start(small, 10, "small");  // 80 + 10 fits, but the large one was first
  settle();
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(q.waiting(), 2u);
  EXPECT_EQ(room.used(), 80u);

  archiving.reset();  // its room given back: to the queue's head, then the next while they fit
  settle();
  EXPECT_EQ(log, (std::vector<std::string>{"large", "small"}));
  EXPECT_EQ(room.used(), 60u);
  EXPECT_EQ(q.waiting(), 0u);

  // Nobody waits: a taker that fits takes at once.
  start(later, 40, "later");
  settle();
  EXPECT_EQ(log.back(), "later");
  EXPECT_EQ(room.used(), 100u);
}

TEST_F(RoomQueue, AWaiterThatGivesUpAtItsDeadlineLetsTheNextInLineHaveItsTurn) {
  Room::Hold archiving(room), huge(room), small(room);
  ASSERT_TRUE(archiving.take(30));
  start(huge, 200, "huge", std::chrono::steady_clock::now() + 20ms);  // fits only alone
  start(small, 10, "small");
  io.run_for(500ms);
  EXPECT_EQ(log, (std::vector<std::string>{"huge refused", "small"}));
  EXPECT_EQ(room.used(), 40u);
  EXPECT_EQ(q.waiting(), 0u);
}

// A server stopping: the messages waiting are answered (451) at once, not after their deadline; a
// later one that fits is still taken (its session is finishing), one that does not is not kept
// waiting.
TEST_F(RoomQueue, ClosingRefusesEveryWaiterAndNobodyWaitsAfter) {
  Room::Hold archiving(room), a(room), b(room), c(room), d(room);
  ASSERT_TRUE(archiving.take(100));
  start(a, 10, "a");
  start(b, 10, "b");
  settle();
  q.close();
  settle();
  EXPECT_EQ(log, (std::vector<std::string>{"a refused", "b refused"}));
  EXPECT_EQ(q.waiting(), 0u);
  start(c, 10, "c");  // no room: refused at once
  settle();
  EXPECT_EQ(log.back(), "c refused");
  archiving.release();
  start(d, 10, "d");  // room: taken
  settle();
  EXPECT_EQ(log.back(), "d");
  EXPECT_EQ(room.used(), 10u);
}

// This one has an io_context of its own, destroyed while a taker waits.
TEST_F(RoomQueue, AWaiterWhoseCoroutineIsDestroyedLeavesTheQueue) {
  Room own(100);
  Room::Hold archiving(own), waiter(own);
  ASSERT_TRUE(archiving.take(100));
  auto ctx = std::make_unique<asio::io_context>();
  api::RoomQueue queue(*ctx, own);
  std::vector<std::string> taken;
  api::start(*ctx, queue, waiter, 10, "waiter", taken);
  api::settle(*ctx);
  EXPECT_EQ(queue.waiting(), 1u);
  ctx.reset();  // the waiting coroutine's frame is destroyed with its io_context
  EXPECT_EQ(queue.waiting(), 0u);
  EXPECT_TRUE(taken.empty());
}

}  // namespace queue

}  // namespace
}  // namespace mailark::api
