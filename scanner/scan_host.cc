#include "scanner/scan_host.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/file_util.h"

extern char** environ;

namespace mailark::scanner {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kControlFd = 3;               // the host's control socket
constexpr std::size_t kMaxNames = 64, kMaxName = 512, kMaxReason = 4096;
constexpr std::uint64_t kMaxRequest = 2ull << 30;  // past any message a configuration allows

std::string be(std::uint64_t v, int bytes) {
  std::string s(static_cast<std::size_t>(bytes), '\0');
  for (int i = bytes - 1; i >= 0; --i, v >>= 8) s[static_cast<std::size_t>(i)] = static_cast<char>(v & 0xff);
  return s;
}

std::uint64_t from_be(std::string_view s) {
  std::uint64_t v = 0;
  for (unsigned char c : s) v = v << 8 | c;
  return v;
}

ScanVerdict verdict_of(VerdictKind kind, Unscannable why, std::string reason) {
  ScanVerdict v;
  v.kind = kind;
  v.why = why;
  v.reason = std::move(reason);
  return v;
}

ScanVerdict temporary(const std::string& what) {
  return verdict_of(VerdictKind::kTemporaryError, Unscannable::kNone, "error: " + what);
}

ScanVerdict unscannable_because(Unscannable why, const std::string& what) {
  return verdict_of(VerdictKind::kUnscannable, why, std::string(unscannable_name(why)) + ": " + what);
}

// Reads exactly n bytes (blocking); false at the end of the stream or an error.
bool read_exact(int fd, std::string& out, std::size_t n) {
  out.resize(n);
  return mailark::read_exact(fd, out.data(), n);
}

// A process's resident anonymous memory (RssAnon in /proc/PID/status), in bytes; nullopt when it
// cannot be read (the process is gone).
std::optional<std::uint64_t> anon_bytes(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "re");
  if (!f) return std::nullopt;
  std::optional<std::uint64_t> out;
  char line[256];
  unsigned long long kib = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "RssAnon: %llu kB", &kib) == 1) {
      out = static_cast<std::uint64_t>(kib) << 10;
      break;
    }
  }
  std::fclose(f);
  return out;
}

// --- the host and its children ---------------------------------------------------------------

// For tests only (ScanHost.*): what libclamav would do with a message that makes it allocate without
// end: 16 MiB more every 5 ms, each page written, up to 512 MiB (so that a watch that failed to stop it
// ends in a clean verdict the test sees, not in a machine out of memory), kept until the scan ends.
void hog_memory(std::vector<std::unique_ptr<char[]>>& held) {
  constexpr std::size_t kStep = 16u << 20, kMost = 512u << 20;
  for (std::size_t taken = 0; taken < kMost; taken += kStep) {
    held.emplace_back(new char[kStep]);
    std::memset(held.back().get(), 1, kStep);
    ::usleep(5000);
  }
}

// A child: scans what its socket brings until the socket ends.
[[noreturn]] void child_loop(int fd, const ScanEngine& engine, const std::string& abort_on, const std::string& hog_on) {
  std::string header, message;
  while (read_exact(fd, header, 8)) {
    const std::uint64_t n = from_be(header);
    if (n > kMaxRequest || !read_exact(fd, message, static_cast<std::size_t>(n))) break;
    // For tests only (ScanHost.*): a message holding the marker ends the child as a crash in libclamav would.
    if (!abort_on.empty() && message.find(abort_on) != std::string::npos) ::abort();
    std::vector<std::unique_ptr<char[]>> held;
    if (!hog_on.empty() && message.find(hog_on) != std::string::npos) hog_memory(held);
    const std::string answer = encode_verdict(engine.scan(message));
    if (!send_all(fd, be(answer.size(), 4) + answer)) break;
  }
  ::_exit(0);
}

// A message of `n` bytes at `data` with room for one descriptor beside it (SCM_RIGHTS).
struct WithDescriptor {
  WithDescriptor(void* data, std::size_t n) : iov{data, n} {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  WithDescriptor(const WithDescriptor&) = delete;
  WithDescriptor& operator=(const WithDescriptor&) = delete;
  iovec iov;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
};

// Sends a frame with the descriptor `pass` alongside it.
bool send_frame(int fd, const std::string& frame, int pass) {
  WithDescriptor m(const_cast<char*>(frame.data()), frame.size());
  msghdr& msg = m.msg;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &pass, sizeof(int));
  while (true) {
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(frame.size())) return false;  // a 5-byte frame goes whole
    return true;
  }
}

std::string error_frame(const Error& e) {
  std::string text = e.to_string().substr(0, 16 * 1024);
  return std::string(1, 'e') + static_cast<char>(e.code) + be(text.size(), 4) + text;
}

}  // namespace

std::string encode_verdict(const ScanVerdict& v) {
  std::string out;
  out += static_cast<char>(v.kind);
  out += static_cast<char>(v.why);
  const std::size_t names = std::min(v.signatures.size(), kMaxNames);
  out += be(names, 2);
  for (std::size_t i = 0; i < names; ++i) {
    const std::string_view name = std::string_view(v.signatures[i]).substr(0, kMaxName);
    out += be(name.size(), 2);
    out += name;
  }
  const std::string_view reason = std::string_view(v.reason).substr(0, kMaxReason);
  out += be(reason.size(), 2);
  out += reason;
  return out;
}

Result<ScanVerdict> decode_verdict(std::string_view bytes) {
  auto bad = [](const std::string& what) {
    return make_error(ErrorCode::kCorrupt, "the scan process answered out of turn (" + what + ")");
  };
  if (bytes.size() > kMaxVerdictBytes) return bad("too long");
  std::size_t at = 0;
  auto take = [&](std::size_t n, std::string_view& out) {
    if (bytes.size() - at < n) return false;
    out = bytes.substr(at, n);
    at += n;
    return true;
  };
  std::string_view field;
  if (!take(2, field)) return bad("short");
  const auto kind = static_cast<std::uint8_t>(field[0]), why = static_cast<std::uint8_t>(field[1]);
  if (kind > static_cast<std::uint8_t>(VerdictKind::kTemporaryError)) return bad("unknown verdict");
  if (why > static_cast<std::uint8_t>(Unscannable::kParse)) return bad("unknown reason");
  ScanVerdict v;
  v.kind = static_cast<VerdictKind>(kind);
  v.why = static_cast<Unscannable>(why);
  if (!take(2, field)) return bad("short");
  const std::uint64_t names = from_be(field);
  if (names > kMaxNames) return bad("too many names");
  for (std::uint64_t i = 0; i < names; ++i) {
    if (!take(2, field)) return bad("short");
    const std::uint64_t n = from_be(field);
    if (n > kMaxName || !take(static_cast<std::size_t>(n), field)) return bad("bad name");
    v.signatures.emplace_back(field);
  }
  if (!take(2, field)) return bad("short");
  const std::uint64_t n = from_be(field);
  if (n > kMaxReason || !take(static_cast<std::size_t>(n), field)) return bad("bad reason");
  v.reason = std::string(field);
  if (at != bytes.size()) return bad("bytes left over");
  if (v.kind == VerdictKind::kInfected && (v.signatures.empty() || v.signatures[0].empty()))
    return bad("infected without a name");
  return v;
}

int scan_host_main(int argc, char** argv, bool (*confine)()) {
  ::signal(SIGPIPE, SIG_IGN);
  ScannerConfig config;
  std::string abort_on, hog_on;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has = i + 1 < argc;
    auto number = [&](auto& out) { out = static_cast<std::remove_reference_t<decltype(out)>>(std::stoull(argv[++i])); };
    if (a == "--signatures" && has) config.signature_dirs.push_back(argv[++i]);
    else if (a == "--temp-dir" && has) config.tmp_dir = argv[++i];
    else if (a == "--max-scan-bytes" && has) number(config.max_scan_bytes);
    else if (a == "--max-file-bytes" && has) number(config.max_file_bytes);
    else if (a == "--max-recursion" && has) number(config.max_recursion);
    else if (a == "--max-files" && has) number(config.max_files);
    else if (a == "--max-scan-ms" && has) number(config.max_scan_ms);
    else if (a == "--no-split") config.split_logical = false;
    else if (a == "--abort-on" && has) abort_on = argv[++i];
    else if (a == "--hog-on" && has) hog_on = argv[++i];
    else {
      std::fprintf(stderr, "mailark-scan: unknown argument %s (it is started by mailark, not by hand)\n", a.c_str());
      return 2;
    }
  }
  if (::fcntl(kControlFd, F_GETFD) < 0) {
    std::fprintf(stderr, "mailark-scan: no control socket (it is started by mailark, not by hand)\n");
    return 2;
  }
  // No core dump of a scan process (the message it held); a filter that cannot be installed stops
  // the host before it loads anything.
  rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  if (confine) {
    const pid_t trial = ::fork();
    if (trial == 0) ::_exit(confine() ? 0 : 1);
    int status = 0;
    while (trial > 0 && ::waitpid(trial, &status, 0) < 0 && errno == EINTR) {
    }
    if (trial < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      send_all(kControlFd, error_frame(make_error(ErrorCode::kInternal,
                                                  "the scan processes cannot be confined (seccomp filter refused)")));
      return 1;
    }
  }
  auto engine = ScanEngine::load(config);
  if (!engine) {
    send_all(kControlFd, error_frame(engine.error()));
    return 1;
  }
  const std::string& d = (*engine)->description();
  if (!send_all(kControlFd, "r" + be(d.size(), 4) + d)) return 1;
  const pid_t host = ::getpid();
  std::set<pid_t> children;  // not reaped yet: their pids cannot be anyone else's
  auto reap = [&] {
    for (pid_t p; (p = ::waitpid(-1, nullptr, WNOHANG)) > 0;) children.erase(p);
  };
  while (true) {
    char request = 0;
    const ssize_t got = ::read(kControlFd, &request, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got != 1 || request != 'c') break;  // the end of the control socket, or a word out of turn
    reap();
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      if (!send_all(kControlFd, error_frame(make_error(ErrorCode::kIo, std::string("socketpair: ") + std::strerror(errno)))))
        break;
      continue;
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(kControlFd);
      ::close(sv[0]);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != host) ::_exit(0);  // the host died before the line above
      if (confine && !confine()) ::_exit(3);  // the parent sees a process that died: never unconfined
      child_loop(sv[1], **engine, abort_on, hog_on);
    }
    ::close(sv[1]);
    bool sent;
    if (pid < 0) {
      sent = send_all(kControlFd, error_frame(make_error(ErrorCode::kIo, std::string("fork: ") + std::strerror(errno))));
    } else {
      children.insert(pid);
      sent = send_frame(kControlFd, "p" + be(static_cast<std::uint64_t>(pid), 4), sv[0]);
    }
    ::close(sv[0]);
    if (!sent) break;
  }
  reap();
  for (pid_t p : children) ::kill(p, SIGKILL);
  for (pid_t p : children) ::waitpid(p, nullptr, 0);
  return 0;
}

// --- the parent's side ----------------------------------------------------------------------------

Result<std::shared_ptr<ScanPool>> ScanPool::start(Options options) {
  std::shared_ptr<ScanPool> pool(new ScanPool(std::move(options)));
  const ScannerConfig& c = pool->options_.config;
  std::vector<std::string> args = {pool->options_.host, "--temp-dir", c.tmp_dir,
                                   "--max-scan-bytes", std::to_string(c.max_scan_bytes),
                                   "--max-file-bytes", std::to_string(c.max_file_bytes),
                                   "--max-recursion", std::to_string(c.max_recursion),
                                   "--max-files", std::to_string(c.max_files),
                                   "--max-scan-ms", std::to_string(c.max_scan_ms)};
  for (const auto& dir : c.signature_dirs) args.insert(args.end(), {"--signatures", dir});
  if (!c.split_logical) args.push_back("--no-split");
  args.insert(args.end(), pool->options_.extra_args.begin(), pool->options_.extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return make_error(ErrorCode::kIo, std::string("cannot start the scan host: ") + std::strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, sv[1], kControlFd);
  // Nothing else of this process reaches the host (LMDB opens the archive without O_CLOEXEC).
  posix_spawn_file_actions_addclosefrom_np(&fa, kControlFd + 1);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, pool->options_.host.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(sv[1]);
  if (rc != 0) {
    ::close(sv[0]);
    return make_error(ErrorCode::kIo, "cannot start the scan host " + pool->options_.host + ": " + std::strerror(rc),
                      "mailark-scan belongs beside the mailark binaries; scanner.isolation = \"thread\" scans in process");
  }
  pool->host_pid_ = pid;
  pool->control_ = sv[0];
  // Loading the official database takes a while; a host that dies ends the wait at once.
  const auto deadline = Clock::now() + std::chrono::hours(1);
  std::string head, body;
  auto stopped = [&] {
    return make_error(ErrorCode::kIo, "the scan host " + pool->options_.host + " stopped before it was ready",
                      "its messages are on the standard error above");
  };
  if (!recv_all_by(sv[0], head, 1, deadline)) return stopped();
  if (head == "e") {
    std::string code, length;
    if (!recv_all_by(sv[0], code, 1, deadline) || !recv_all_by(sv[0], length, 4, deadline)) return stopped();
    const std::uint64_t n = from_be(length);
    if (n > 64 * 1024 || !recv_all_by(sv[0], body, static_cast<std::size_t>(n), deadline)) return stopped();
    const auto ec = static_cast<std::uint8_t>(code[0]);
    return make_error(ec <= static_cast<std::uint8_t>(ErrorCode::kInternal) ? static_cast<ErrorCode>(ec) : ErrorCode::kInternal,
                      body);
  }
  std::string length;
  if (head != "r" || !recv_all_by(sv[0], length, 4, deadline)) return stopped();
  const std::uint64_t n = from_be(length);
  if (n > 64 * 1024 || !recv_all_by(sv[0], pool->description_, static_cast<std::size_t>(n), deadline)) return stopped();
  return pool;
}

ScanPool::ScanPool(Options options)
    : options_(std::move(options)), children_(options_.max_children, &ScanPool::discard) {}

ScanPool::~ScanPool() {
  children_.let_go_idle();  // while their host is there to reap them
  if (control_ >= 0) ::close(control_);  // the host kills the children it still has and exits
  if (host_pid_ > 0) {
    while (::waitpid(host_pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

std::uint64_t ScanPool::children_started() const { return started_; }

std::vector<pid_t> ScanPool::idle_pids_for_test() const {
  std::vector<pid_t> out;
  for (const Child& c : children_.idle()) out.push_back(c.pid);
  return out;
}

Result<ScanPool::Child> ScanPool::new_child() {
  std::lock_guard lock(control_mu_);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  auto gone = [&] {
    return make_error(ErrorCode::kIo, "the scan host has stopped", "reload the scanner (SIGHUP) or restart mailark");
  };
  if (!send_all_by(control_, "c", deadline)) return gone();
  // The frame's first byte carries the child's socket.
  char first = 0;
  WithDescriptor m(&first, 1);
  msghdr& msg = m.msg;
  ssize_t n;
  while (true) {
    pollfd p{control_, POLLIN, 0};
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    const int r = ::poll(&p, 1, static_cast<int>(std::max<long long>(left, 0)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return gone();
    n = ::recvmsg(control_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    break;
  }
  if (n != 1) return gone();
  int fd = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
      std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
  }
  std::string rest;
  if (first == 'p' && fd >= 0 && recv_all_by(control_, rest, 4, deadline)) {
    Child child{static_cast<pid_t>(from_be(rest)), fd};
    // What the child shares with the host at its fork (the engine's pages) is already its own
    // resident anonymous memory: a scan's memory is what comes on top.
    if (options_.config.max_memory_bytes) child.anon_at_start = anon_bytes(child.pid).value_or(0);
    ++started_;
    return child;
  }
  if (fd >= 0) ::close(fd);
  std::string code, length, body;
  if (first == 'e' && recv_all_by(control_, code, 1, deadline) && recv_all_by(control_, length, 4, deadline) &&
      from_be(length) <= 64 * 1024 && recv_all_by(control_, body, static_cast<std::size_t>(from_be(length)), deadline))
    return make_error(ErrorCode::kIo, "the scan host could not start a scan process: " + body);
  return gone();
}

bool ScanPool::answer_within_memory(const Child& c, Clock::time_point deadline) const {
  const std::uint64_t bound = options_.config.max_memory_bytes;
  if (bound == 0) return true;
  while (true) {
    const auto now = Clock::now();
    if (now >= deadline) return true;  // the read that follows times out
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    pollfd p{c.fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, kMemoryCheckMs)));
    if (r < 0 && errno == EINTR) continue;
    if (r != 0) return true;  // an answer (or the end of the socket) is there to read
    const auto anon = anon_bytes(c.pid);
    if (anon && *anon > c.anon_at_start && *anon - c.anon_at_start > bound) return false;
  }
}

void ScanPool::discard(Child& c) {
  // The child is the host's: the host reaps it.
  if (c.pid > 0) ::kill(c.pid, SIGKILL);
  if (c.fd >= 0) ::close(c.fd);
  c = Child{};
}

ScanVerdict ScanPool::scan(std::string_view bytes) {
  const ScannerConfig& config = options_.config;
  TempRoom room;  // every scan in flight counted here, whichever process runs it
  if (auto refused = room.take(config.tmp_dir, bytes.size(), config.max_scan_bytes)) return *refused;
  const unsigned timeout_ms = options_.timeout_ms ? options_.timeout_ms : config.max_scan_ms + 30000;
  // A child that dies (or answers out of turn) is replaced and the message scanned once more in a
  // new one: an idle child may have died meanwhile (killed, out of memory). A message that ends a
  // new child too is the message's doing.
  for (int attempt = 0;; ++attempt) {
    Child c;
    const std::optional<Child> idle = children_.take(/*retry=*/attempt > 0);
    const bool fresh = !idle;
    if (idle) {
      c = *idle;
    } else {
      auto made = new_child();
      if (!made) {
        children_.unused_place();
        return temporary(made.error().to_string());
      }
      c = *made;
    }
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    std::string length, answer;
    std::optional<Result<ScanVerdict>> decoded;
    bool over_memory = false;
    if (send_all_by(c.fd, be(bytes.size(), 8), deadline) && send_all_by(c.fd, bytes, deadline) &&
        !(over_memory = !answer_within_memory(c, deadline)) && recv_all_by(c.fd, length, 4, deadline)) {
      const std::uint64_t n = from_be(length);
      if (n > kMaxVerdictBytes) {
        decoded = Result<ScanVerdict>(make_error(ErrorCode::kCorrupt, "the scan process answered out of turn (too long)"));
      } else if (recv_all_by(c.fd, answer, static_cast<std::size_t>(n), deadline)) {
        decoded = decode_verdict(answer);
      }
    }
    const bool healthy = decoded && decoded->ok();
    const bool timed_out = !decoded && Clock::now() >= deadline;
    children_.give_back(c, healthy);
    if (healthy) return std::move(*decoded).value();
    if (over_memory) {
      // The bound is the message's doing: scanning it again would only take as much once more.
      return unscannable_because(Unscannable::kLimit,
                                 "the scan took more than " + std::to_string(options_.config.max_memory_bytes >> 20) +
                                     " MiB of memory (limits.scan_memory_bytes) and its scan process was stopped");
    }
    if (timed_out) {
      // Past libclamav's own limit (max_scan_ms) by half a minute: a scan that never ends, not a slow
      // one. Scanning it again would only cost as much once more.
      return unscannable_because(Unscannable::kLimit, "the scan ran past " + std::to_string(timeout_ms / 1000) +
                                                          " s and its scan process was stopped");
    }
    if (attempt >= 1 || fresh) {
      return unscannable_because(Unscannable::kParse,
                                 decoded ? decoded->error().context
                                         : std::string("the scanner crashed scanning this message (its scan process ended)"));
    }
  }
}

}  // namespace mailark::scanner
