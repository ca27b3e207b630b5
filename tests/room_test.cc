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

// The starvation this prevents: a message that needs much of the room, waiting while smaller ones
// keep arriving and fitting beside those being archived, was passed over by each of them (the server
// used to poll for room every 50 ms, whoever asked first after a release took it).
TEST(RoomQueue, ALargeWaiterIsNotPassedOverBySmallerOnesThatWouldFit) {
  asio::io_context io;
  Room room(100);
  RoomQueue q(io, room);
  std::vector<std::string> log;
  auto archiving = std::make_unique<Room::Hold>(room);
  ASSERT_TRUE(archiving->take(80));
  Room::Hold large(room), small(room), later(room);
  start(io, q, large, 50, "large", log);
  start(io, q, small, 10, "small", log);  // 80 + 10 fits, but the large one was first
  settle(io);
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(q.waiting(), 2u);
  EXPECT_EQ(room.used(), 80u);

  archiving.reset();  // its room given back: to the queue's head, then the next while they fit
  settle(io);
  EXPECT_EQ(log, (std::vector<std::string>{"large", "small"}));
  EXPECT_EQ(room.used(), 60u);
  EXPECT_EQ(q.waiting(), 0u);

  // Nobody waits: a taker that fits takes at once.
  start(io, q, later, 40, "later", log);
  settle(io);
  EXPECT_EQ(log.back(), "later");
  EXPECT_EQ(room.used(), 100u);
}

TEST(RoomQueue, AWaiterThatGivesUpAtItsDeadlineLetsTheNextInLineHaveItsTurn) {
  asio::io_context io;
  Room room(100);
  RoomQueue q(io, room);
  std::vector<std::string> log;
  Room::Hold archiving(room), huge(room), small(room);
  ASSERT_TRUE(archiving.take(30));
  start(io, q, huge, 200, "huge", log, std::chrono::steady_clock::now() + 20ms);  // fits only alone
  start(io, q, small, 10, "small", log);
  io.run_for(500ms);
  EXPECT_EQ(log, (std::vector<std::string>{"huge refused", "small"}));
  EXPECT_EQ(room.used(), 40u);
  EXPECT_EQ(q.waiting(), 0u);
}

// A server stopping: the messages waiting are answered (451) at once, not after their deadline; a
// later one that fits is still taken (its session is finishing), one that does not is not kept
// waiting.
TEST(RoomQueue, ClosingRefusesEveryWaiterAndNobodyWaitsAfter) {
  asio::io_context io;
  Room room(100);
  RoomQueue q(io, room);
  std::vector<std::string> log;
  Room::Hold archiving(room), a(room), b(room), c(room), d(room);
  ASSERT_TRUE(archiving.take(100));
  start(io, q, a, 10, "a", log);
  start(io, q, b, 10, "b", log);
  settle(io);
  q.close();
  settle(io);
  EXPECT_EQ(log, (std::vector<std::string>{"a refused", "b refused"}));
  EXPECT_EQ(q.waiting(), 0u);
  start(io, q, c, 10, "c", log);  // no room: refused at once
  settle(io);
  EXPECT_EQ(log.back(), "c refused");
  archiving.release();
  start(io, q, d, 10, "d", log);  // room: taken
  settle(io);
  EXPECT_EQ(log.back(), "d");
  EXPECT_EQ(room.used(), 10u);
}

TEST(RoomQueue, AWaiterWhoseCoroutineIsDestroyedLeavesTheQueue) {
  Room room(100);
  Room::Hold archiving(room), waiter(room);
  ASSERT_TRUE(archiving.take(100));
  auto io = std::make_unique<asio::io_context>();
  RoomQueue q(*io, room);
  std::vector<std::string> log;
  start(*io, q, waiter, 10, "waiter", log);
  settle(*io);
  EXPECT_EQ(q.waiting(), 1u);
  io.reset();  // the waiting coroutine's frame is destroyed with its io_context
  EXPECT_EQ(q.waiting(), 0u);
  EXPECT_TRUE(log.empty());
}

}  // namespace
}  // namespace mailark::api
