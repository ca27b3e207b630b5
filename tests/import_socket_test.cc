// The server's end of an import handed to it (api/import_socket.h), driven by a client on its real
// Unix socket: an import that stops reading the server's replies holds the door for other imports
// no longer than the stuck limit.
#include "api/import_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio.hpp>
#include <mutex>
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

// A log sink the test reads while the server's threads write to it.
class Captured : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::string text() {
    std::lock_guard lock(mutex_);
    return text_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    text_.append(msg.payload.data(), msg.payload.size());
    text_ += '\n';
  }
  void flush_() override {}

 private:
  std::string text_;
};

TEST(ImportSocket, AnImportThatStopsReadingIsLetGo) {
  // What the server logs, to see which way the import ended.
  auto sink = std::make_shared<Captured>();
  spdlog::default_logger()->sinks().push_back(sink);
  struct Unhook {
    std::shared_ptr<spdlog::sinks::sink> sink;
    ~Unhook() {
      auto& sinks = spdlog::default_logger()->sinks();
      sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
    }
  } unhook{sink};
  auto log = [&] { return sink->text(); };

  test::ScratchDir dir;
  auto e = open_engine(dir.path());
  ASSERT_TRUE(e);
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::jthread io_thread([&] { io.run(); });  // joined however the test ends
  struct StopIo {
    asio::io_context& io;
    decltype(work)& w;
    ~StopIo() {
      w.reset();
      io.stop();
    }
  } stop_io{io, work};
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

  // An import that hands over more messages than a socket's buffer holds replies for, and reads
  // none of them: the server's replies back up behind it. (Its sending may end early: the server
  // lets it go once no reply has gone out for the limit, which a slow build reaches while it sends.)
  const int stuck = connect_handoff(dir.path());
  ASSERT_GE(stuck, 0);
  std::string frames;
  for (int i = 0; i < 4000; ++i) {
    HandoffMessage m;
    m.origin = "stuck#" + std::to_string(i);
    m.raw = test::make_message("stuck " + std::to_string(i), "an import that stops reading");
    frames += encode_handoff_message(m);
  }
  frames += encode_handoff_done();
  std::jthread sender([&] { send_all(stuck, frames); });
  struct Unblock {  // however the test ends: the sender's send ends, then it is joined
    int fd;
    ~Unblock() { ::shutdown(fd, SHUT_RDWR); }
  } unblock{stuck};

  // While it is held, another import is told to wait (the door takes one import at a time, in the
  // order they came).
  HandoffReply r = first_reply(dir.path());
  EXPECT_EQ(r.kind, HandoffReply::kStop);
  EXPECT_NE(r.why.find("another import"), std::string::npos) << r.why;
  // Let go once no reply has gone out for the limit; then the next import is taken.
  const auto start = std::chrono::steady_clock::now();
  while (log().find("took none of the server's replies") == std::string::npos &&
         std::chrono::steady_clock::now() - start < 120s)
    std::this_thread::sleep_for(100ms);
  EXPECT_NE(log().find("took none of the server's replies for 1 s; let go"), std::string::npos) << log();
  while (r.kind != HandoffReply::kHello && std::chrono::steady_clock::now() - start < 150s) {
    std::this_thread::sleep_for(200ms);
    r = first_reply(dir.path());
  }
  EXPECT_EQ(r.kind, HandoffReply::kHello) << "still refused: " << r.why;
  EXPECT_GT(e->archive().head().seq, 0u) << "what it handed before it was let go is archived";

  sender.join();
  ::close(stuck);
  unblock.fd = -1;
  sock.stop();
  sock.join();
  EXPECT_TRUE(ingest.finish().ok());
}

}  // namespace
}  // namespace mailark::api
