#include "api/import_socket.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <asio/post.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <list>
#include <mutex>
#include <thread>

#include "api/disk_reserve.h"
#include "common/file_util.h"
#include "engine/handoff.h"
#include "engine/ingest.h"

namespace mailark::api {
namespace {

// One import's connection: the results waiting to be written, and what it holds of the pipeline.
struct Conn {
  explicit Conn(int f) : fd(f) {}
  ~Conn() { ::close(fd); }
  int fd;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> out;  // frames for the writer
  bool closing = false;         // the writer ends once `out` is empty
  std::size_t in_flight = 0;
  std::uint64_t in_flight_bytes = 0;
  std::uint64_t archived = 0, duplicates = 0, other = 0;

  void push(std::string frame) {
    {
      std::lock_guard lock(mu);
      out.push_back(std::move(frame));
    }
    cv.notify_all();
  }
};

}  // namespace

struct ImportSocket::Impl : std::enable_shared_from_this<ImportSocket::Impl> {
  asio::io_context& io;
  Ingest& ingest;
  DiskReserve& reserve;
  Limits limits;
  std::string path;
  std::string sync_path;  // DATA/index.sock (engine/handoff.h)
  std::function<std::uint64_t()> head;
  int listen_fd = -1;
  int sync_fd = -1;
  int wake_fd = -1;
  // Readers waiting for the index (answer_sync), each on a thread of its own, at most kMaxSyncs.
  static constexpr std::size_t kMaxSyncs = 16;
  std::list<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> syncs;  // under mu
  std::atomic<bool> stopping{false};
  std::thread acceptor;
  std::mutex mu;  // guards the members below
  bool busy = false;
  std::shared_ptr<Conn> current;
  std::thread conn_thread;
  bool joined = false;
  std::chrono::steady_clock::time_point stop_time{};  // when stop() was called
  const std::chrono::milliseconds stuck_after;

  Impl(asio::io_context& i, Ingest& g, DiskReserve& r, Limits l, std::string p, std::function<std::uint64_t()> h,
       std::chrono::milliseconds stuck)
      : io(i), ingest(g), reserve(r), limits(l), path(std::move(p)),
        sync_path(this->path.substr(0, this->path.rfind('/') + 1) + kIndexSyncSocketName), head(std::move(h)),
        stuck_after(stuck) {}

  ~Impl() {
    if (listen_fd >= 0) ::close(listen_fd);
    if (sync_fd >= 0) ::close(sync_fd);
    if (wake_fd >= 0) ::close(wake_fd);
  }

  // A listening socket at `at`, mode 0600 from the start (the umask while binding).
  static Result<int> listen_at(const std::string& at, const char* what) {
    sockaddr_un addr;
    if (!handoff_address(at, addr))
      return make_error(ErrorCode::kInvalidArgument,
                        std::string("the ") + what + " socket " + at + " is longer than a Unix socket's path may be (" +
                            std::to_string(sizeof addr.sun_path - 1) + " bytes)",
                        "use a data folder with a shorter path to hand imports to the running server");
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_error(ErrorCode::kIo, std::string(what) + " socket: " + std::strerror(errno));
    ::unlink(at.c_str());  // an earlier server's: the data folder's lock says none runs now
    const mode_t old = ::umask(0177);
    const int bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    const int bind_errno = errno;
    ::umask(old);
    if (bound != 0 || ::chmod(at.c_str(), 0600) != 0 || ::listen(fd, 16) != 0) {
      const int e = bound != 0 ? bind_errno : errno;
      ::close(fd);
      return make_error(ErrorCode::kIo, std::string(what) + " socket " + at + ": " + std::strerror(e));
    }
    return fd;
  }

  Status open() {
    wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0) return make_error(ErrorCode::kIo, std::string("import socket: ") + std::strerror(errno));
    MAILARK_ASSIGN_OR_RETURN(listen_fd, listen_at(path, "import"));
    MAILARK_ASSIGN_OR_RETURN(sync_fd, listen_at(sync_path, "index"));
    return ok_status();
  }

  // The kernel's word on the peer: only the server's own user or root.
  static bool trusted_peer(int fd, ucred& cred) {
    socklen_t len = sizeof cred;
    return ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && (cred.uid == ::geteuid() || cred.uid == 0);
  }

  // A reader in another process asks for the index to be current (engine/handoff.h, index.sock).
  void answer_sync(int fd) {
    ucred cred{};
    if (!trusted_peer(fd, cred)) {
      send_all(fd, "behind: only the server's own user (or root) may ask it\n");
      ::close(fd);
      return;
    }
    std::lock_guard lock(mu);
    for (auto it = syncs.begin(); it != syncs.end();) {
      if (*it->second) {
        it->first.join();
        it = syncs.erase(it);
      } else {
        ++it;
      }
    }
    if (syncs.size() >= kMaxSyncs) {
      send_all(fd, "behind: too many readers are waiting for the index now\n");
      ::close(fd);
      return;
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    syncs.emplace_back(std::thread([this, fd, done] {
      const Ingest::Synced got = ingest.sync_index(kSyncTimeout);
      send_all(fd, got == Ingest::Synced::kCurrent ? "current\n"
                   : got == Ingest::Synced::kBroken
                       ? "behind: an index shard cannot write now; the server catches it up from the archive\n"
                       : "behind: the index did not commit in time\n");
      ::close(fd);
      *done = true;
    }), done);
  }

  void refuse(int fd, const std::string& why) {
    send_all(fd, encode_handoff_stop(why));
    ::close(fd);
  }

  void accept_loop() {
    while (!stopping) {
      pollfd p[3] = {{listen_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}, {sync_fd, POLLIN, 0}};
      if (::poll(p, 3, -1) < 0) {
        if (errno == EINTR) continue;
        spdlog::error("import socket: {}", std::strerror(errno));
        return;
      }
      if (stopping) return;
      if (p[2].revents & POLLIN) {
        if (const int fd = ::accept4(sync_fd, nullptr, nullptr, SOCK_CLOEXEC); fd >= 0) answer_sync(fd);
      }
      if (!(p[0].revents & POLLIN)) continue;
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
          std::this_thread::sleep_for(std::chrono::milliseconds(200));  // never spin (api/accept.h)
        continue;
      }
      // The socket is 0600; the kernel's word on the peer is checked too, so a socket whose mode was
      // opened to all still takes no other user's import (tests/e2e/test_import_handoff.py
      // test_another_users_client_is_refused_even_through_a_socket_opened_to_all).
      ucred cred{};
      if (!trusted_peer(fd, cred)) {
        spdlog::warn("import socket: refused a client of uid {}: only the server's user or root may import", cred.uid);
        refuse(fd, "only the server's own user (or root) may hand it an import");
        continue;
      }
      std::lock_guard lock(mu);
      if (busy) {
        refuse(fd, "another import is being handed to this server now; run this one when it has ended");
        continue;
      }
      if (conn_thread.joinable()) conn_thread.join();  // the one before, which has ended
      busy = true;
      current = std::make_shared<Conn>(fd);
      spdlog::info("import: an import (pid {}, uid {}) is handing messages to the server", cred.pid, cred.uid);
      conn_thread = std::thread([self = shared_from_this(), c = current] { self->serve(c); });
    }
  }

  // Sends one frame, waiting for the import to read; false when it is gone, or stuck: no byte taken
  // for stuck_after (tests/import_socket_test.cc ImportSocket.AnImportThatStopsReadingIsLetGo), or
  // for kGrace once the server stops (an import that stops reading never holds the server's
  // shutdown: test_import_handoff.py test_an_import_that_stops_reading_never_holds_the_servers_shutdown).
  bool send_frame(int fd, std::string_view bytes) {
    static constexpr auto kGrace = std::chrono::seconds(10);
    auto last_progress = std::chrono::steady_clock::now();
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        bytes.remove_prefix(static_cast<std::size_t>(n));
        last_progress = std::chrono::steady_clock::now();
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return false;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_progress > stuck_after) {
        spdlog::warn("import: the import took none of the server's replies for {} s; let go (what it handed is archived)",
                     std::chrono::duration_cast<std::chrono::seconds>(stuck_after).count());
        return false;
      }
      if (stopping && now - std::max(last_progress, stopped_at()) > kGrace) return false;
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 250);
    }
    return true;
  }

  std::chrono::steady_clock::time_point stopped_at() {
    std::lock_guard lock(mu);
    return stop_time;
  }

  void write_loop(const std::shared_ptr<Conn>& c) {
    bool gone = false;
    std::unique_lock lock(c->mu);
    while (true) {
      c->cv.wait(lock, [&] { return !c->out.empty() || c->closing; });
      if (c->out.empty()) return;
      std::string frame = std::move(c->out.front());
      c->out.pop_front();
      lock.unlock();
      if (!gone && !send_frame(c->fd, frame)) {
        gone = true;  // the import has gone (or stopped reading): its reader ends too; what it handed is still archived
        ::shutdown(c->fd, SHUT_RDWR);
      }
      lock.lock();
    }
  }

  // Submits on the io thread (Ingest is driven from there), again while the pipeline is full or an
  // index shard's queue is half full (Ingest::room_for_imports: the import's documents must never fill
  // one, or the archive writer and every session's 250 wait behind it). False when the server stops
  // first.
  bool submit(const std::shared_ptr<IngestItem>& item) {
    while (!stopping) {
      auto taken = std::make_shared<std::promise<bool>>();
      auto answer = taken->get_future();
      asio::post(io, [this, item, taken] {
        taken->set_value(!stopping && ingest.room_for_imports() && ingest.try_submit(*item));
      });
      while (answer.wait_for(std::chrono::seconds(1)) != std::future_status::ready)
        if (io.stopped()) return false;
      if (answer.get()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  void serve(const std::shared_ptr<Conn>& c) {
    std::thread writer([this, c] { write_loop(c); });
    c->push(encode_handoff_hello(limits.max_message_bytes));
    const int in_fd = ::dup(c->fd);
    std::FILE* in = in_fd >= 0 ? ::fdopen(in_fd, "rb") : nullptr;
    const std::string server_stops =
        "the server is stopping; run the same import again once it runs (what is archived already counts as duplicates)";
    std::string stop_why;
    std::uint64_t handed = 0;
    while (in) {
      if (stopping) {
        stop_why = server_stops;
        break;
      }
      HandoffMessage m;
      std::string why;
      const HandoffRequest got = read_handoff_request(in, limits, m, why);
      if (got == HandoffRequest::kDone) break;
      if (got == HandoffRequest::kBad) {
        stop_why = stopping ? server_stops : why;
        break;
      }
      const std::uint64_t size = m.raw.size();
      {
        std::unique_lock lock(c->mu);
        c->cv.wait(lock, [&] {
          return stopping || (c->in_flight < kMaxInFlight && (c->in_flight == 0 || c->in_flight_bytes + size <= kMaxInFlightBytes));
        });
        if (stopping) {
          stop_why = server_stops;
          break;
        }
      }
      // The room the SMTP door keeps for what it took in is kept from imports too.
      if (!reserve.room_for(size, "import")) {
        stop_why = "the disk where the data folder is has less free space than the server keeps (limits.disk_reserve_bytes); "
                   "free space and run the same import again (what is archived already counts as duplicates)";
        break;
      }
      auto item = std::make_shared<IngestItem>(handoff_item(std::move(m)));
      {
        std::lock_guard lock(c->mu);
        c->in_flight++;
        c->in_flight_bytes += size;
      }
      item->on_done = [c, size](const IngestResult& r) {
        c->push(encode_handoff_result(r));
        std::lock_guard lock(c->mu);
        c->in_flight--;
        c->in_flight_bytes -= size;
        if (r.outcome == IngestOutcome::kArchived) c->archived++;
        else if (r.outcome == IngestOutcome::kDuplicate) c->duplicates++;
        else c->other++;
        c->cv.notify_all();
      };
      if (!submit(item)) {
        std::lock_guard lock(c->mu);
        c->in_flight--;
        c->in_flight_bytes -= size;
        stop_why = server_stops;
        break;
      }
      ++handed;
    }
    if (in) std::fclose(in);
    // Nothing more is read: an import still sending is told at once (its send fails) rather than left
    // blocked on a full socket.
    ::shutdown(c->fd, SHUT_RD);
    if (!stop_why.empty()) {
      spdlog::warn("import: stopped taking the import after {} messages: {}", handed, stop_why);
      c->push(encode_handoff_stop(stop_why));
    }
    {
      // Every message handed has its result before the end (the pipeline reports each once, at the
      // latest when the server finishes it on its way down).
      std::unique_lock lock(c->mu);
      c->cv.wait(lock, [&] { return c->in_flight == 0; });
      spdlog::info("import: ended: {} messages handed, {} archived, {} duplicates, {} not archived", handed, c->archived,
                   c->duplicates, c->other);
    }
    c->push(encode_handoff_end(head()));
    {
      std::lock_guard lock(c->mu);
      c->closing = true;
    }
    c->cv.notify_all();
    writer.join();
    std::lock_guard lock(mu);
    current.reset();
    busy = false;
  }

  void stop() {
    {
      std::lock_guard lock(mu);
      if (stopping.exchange(true)) return;
      stop_time = std::chrono::steady_clock::now();
    }
    if (wake_fd >= 0) {
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(wake_fd, &one, sizeof one);
    }
    std::lock_guard lock(mu);
    if (current) {
      ::shutdown(current->fd, SHUT_RD);  // its reader ends; results still go out
      std::lock_guard c_lock(current->mu);
      current->cv.notify_all();
    }
  }

  void join() {
    stop();
    if (acceptor.joinable()) acceptor.join();
    std::thread t;
    {
      std::lock_guard lock(mu);
      t = std::move(conn_thread);
    }
    if (t.joinable()) t.join();
    std::list<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> waiting;
    {
      std::lock_guard lock(mu);
      waiting.swap(syncs);
    }
    for (auto& [thread, done] : waiting) thread.join();  // each waits kSyncTimeout at most
    if (!joined && listen_fd >= 0) ::unlink(path.c_str());
    if (!joined && sync_fd >= 0) ::unlink(sync_path.c_str());
    joined = true;
  }
};

ImportSocket::ImportSocket(asio::io_context& io, Ingest& ingest, DiskReserve& reserve, Limits limits, std::string path,
                           std::function<std::uint64_t()> head, std::chrono::milliseconds stuck_after)
    : impl_(std::make_shared<Impl>(io, ingest, reserve, limits, std::move(path), std::move(head), stuck_after)) {}

ImportSocket::~ImportSocket() { join(); }

Status ImportSocket::open() { return impl_->open(); }

void ImportSocket::start() {
  impl_->acceptor = std::thread([self = impl_] { self->accept_loop(); });
}

void ImportSocket::stop() { impl_->stop(); }

void ImportSocket::join() { impl_->join(); }

}  // namespace mailark::api
