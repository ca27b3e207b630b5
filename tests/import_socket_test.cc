// The server's end of an import handed to it (api/import_socket.h), driven by a client on its real
// Unix socket: an import that stops reading the server's replies holds the door for other imports
// no longer than the stuck limit.
#include "api/import_socket.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <thread>

#include "api/disk_reserve.h"
#include "engine/engine.h"
#include "engine/handoff.h"
#include "engine/ingest.h"
#include "common/file_util.h"
#include "tests/test_util.h"

namespace mailark::api {
namespace {

using namespace std::chrono_literals;

using test::open_engine;

// The first reply a new import gets: hello (taken) or stop (refused, with why).
HandoffReply first_reply(const std::string& data_dir) {
  HandoffReply r;
  const int fd = connect_handoff(data_dir);
  EXPECT_GE(fd, 0);
  if (fd < 0) return r;
  std::FILE* in = ::fdopen(fd, "rb");
  std::string why;
  if (!read_handoff_reply(in, r, why)) {
    r.kind = HandoffReply::kStop;
    r.why = "no reply: " + why;
  }
  std::fclose(in);
  return r;
}

TEST(ImportSocket, AnImportThatStopsReadingIsLetGo) {
  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  ASSERT_TRUE(e);
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  IngestOptions o;
  o.train_after = 0;
  o.preserve_order = false;
  o.queue_depth = 16 + ImportSocket::kMaxInFlight;
  Ingest ingest(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, o, nullptr);
  DiskReserve reserve({dir.path()}, 0);
  ImportSocket sock(io, ingest, reserve, e->options().limits, dir.path() + "/" + kHandoffSocketName,
                    [&] { return e->archive().head().seq; }, /*stuck_after=*/1500ms);
  ASSERT_TRUE(sock.open().ok());
  sock.start();

  // An import that hands over more messages than a socket's buffer holds replies for, and then
  // reads nothing: the server's replies back up behind it.
  const int stuck = connect_handoff(dir.path());
  ASSERT_GE(stuck, 0);
  const int n = 4000;
  std::string frames;
  for (int i = 0; i < n; ++i) {
    HandoffMessage m;
    m.origin = "stuck#" + std::to_string(i);
    m.raw = test::make_message("stuck " + std::to_string(i), "an import that stops reading");
    frames += encode_handoff_message(m);
  }
  frames += encode_handoff_done();
  ASSERT_TRUE(send_all(stuck, frames));
  for (int i = 0; i < 600 && e->archive().head().seq < static_cast<std::uint64_t>(n); ++i) std::this_thread::sleep_for(50ms);
  ASSERT_EQ(e->archive().head().seq, static_cast<std::uint64_t>(n)) << "every message handed is archived";

  // While it is held, another import is told to wait; once the stuck limit has passed, it is taken.
  const auto start = std::chrono::steady_clock::now();
  HandoffReply r = first_reply(dir.path());
  EXPECT_EQ(r.kind, HandoffReply::kStop);
  EXPECT_NE(r.why.find("another import"), std::string::npos) << r.why;
  while (r.kind != HandoffReply::kHello && std::chrono::steady_clock::now() - start < 20s) {
    std::this_thread::sleep_for(200ms);
    r = first_reply(dir.path());
  }
  EXPECT_EQ(r.kind, HandoffReply::kHello) << "still refused after 20 s: " << r.why;

  ::close(stuck);
  sock.stop();
  sock.join();
  EXPECT_TRUE(ingest.finish().ok());
  work.reset();
  io.stop();
  io_thread.join();
}

}  // namespace
}  // namespace mailark::api
