#include "engine/extract.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <utility>

#include "common/encoding.h"
#include "common/file_util.h"

extern char** environ;

namespace mailark {
namespace {

std::mutex g_mu;
std::shared_ptr<TextExtractor> g_extractor;
std::function<std::shared_ptr<TextExtractor>()> g_make_extractor;

using Clock = std::chrono::steady_clock;

}  // namespace

DocKind document_kind(std::string_view bytes) {
  if (bytes.size() >= 4 && bytes.substr(0, 4) == std::string_view("PK\x03\x04", 4)) return DocKind::kZip;
  if (bytes.substr(0, 1024).find("%PDF-") != std::string_view::npos) return DocKind::kPdf;
  return DocKind::kNone;
}

Result<ResponseHeader> parse_response_header(std::string_view header, std::size_t max_text) {
  if (header.size() != 5 || (header[0] != 't' && header[0] != 'e'))
    return make_error(ErrorCode::kIo, "the text extractor answered out of turn");
  ResponseHeader h;
  h.ok = header[0] == 't';
  for (int i = 1; i < 5; ++i) h.length = h.length << 8 | static_cast<std::uint8_t>(header[i]);
  if (h.length > max_text + 1024) return make_error(ErrorCode::kIo, "the text extractor's answer is too long");
  return h;
}

TextExtractor::TextExtractor(Options options)
    : options_(std::move(options)), workers_(options_.max_workers, &TextExtractor::discard) {}

TextExtractor::~TextExtractor() = default;  // the pool kills the idle workers

std::uint64_t TextExtractor::workers_started() const { return started_; }

std::vector<pid_t> TextExtractor::idle_pids_for_test() const {
  std::vector<pid_t> out;
  for (const Worker& w : workers_.idle()) out.push_back(w.pid);
  return out;
}

Result<TextExtractor::Worker> TextExtractor::spawn() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return make_error(ErrorCode::kIo, std::string("cannot start the text extractor: ") + std::strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
  posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
  // Nothing else of this process reaches the worker: LMDB opens the archive without O_CLOEXEC, and a
  // parser that a document took over must not find the archive's file open.
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  std::string path = options_.helper;
  char* argv[] = {path.data(), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, path.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(sv[1]);
  if (rc != 0) {
    ::close(sv[0]);
    return make_error(ErrorCode::kIo, "cannot start the text extractor " + path + ": " + std::strerror(rc));
  }
  ++started_;
  return Worker{pid, sv[0]};
}

void TextExtractor::discard(Worker& w) {
  if (w.pid > 0) {
    ::kill(w.pid, SIGKILL);
    while (::waitpid(w.pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  if (w.fd >= 0) ::close(w.fd);
  w = Worker{};
}

Result<std::string> TextExtractor::extract(DocKind kind, std::string_view bytes) {
  if (kind == DocKind::kNone) return make_error(ErrorCode::kUnsupported, "not a document mailark reads text from");
  if (bytes.size() > options_.max_input)
    return make_error(ErrorCode::kLimit, "larger than " + std::to_string(options_.max_input >> 20) + " MiB");
  // A worker kept idle may have died meanwhile (killed, out of memory): a request it never answered
  // is sent once more, to a new worker. One a new worker fails on is the document's doing.
  for (int attempt = 0;; ++attempt) {
    Worker w;
    const std::optional<Worker> idle = workers_.take(/*retry=*/attempt > 0);
    const bool fresh = !idle;
    if (idle) {
      w = *idle;
    } else {
      auto spawned = spawn();
      if (!spawned) {
        workers_.unused_place();
        return spawned.error();
      }
      w = *spawned;
    }
    const auto deadline = Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
    std::string request(1, static_cast<char>(kind));
    request += be32(static_cast<std::uint32_t>(bytes.size()));
    std::string header, body;
    Result<std::string> out = make_error(ErrorCode::kIo, "the text extractor stopped (it died, or answered nothing in " +
                                                             std::to_string(options_.timeout_ms / 1000) + " s)");
    bool healthy = false, answered = false;
    if (send_all_by(w.fd, request, deadline) && send_all_by(w.fd, bytes, deadline) && recv_all_by(w.fd, header, 5, deadline)) {
      answered = true;
      auto h = parse_response_header(header, options_.max_text);
      if (!h) {
        out = h.error();
      } else if (recv_all_by(w.fd, body, h->length, deadline)) {
        healthy = true;
        if (h->ok) {
          out = std::move(body);
        } else {
          out = make_error(ErrorCode::kUnsupported, body);
        }
      }
    }
    const bool timed_out = !answered && Clock::now() >= deadline;
    workers_.give_back(w, healthy);
    if (healthy || answered || timed_out || fresh) return out;
  }
}

void set_text_extractor(std::shared_ptr<TextExtractor> extractor) {
  std::lock_guard lock(g_mu);
  g_extractor = std::move(extractor);
}

void set_text_extractor_factory(std::function<std::shared_ptr<TextExtractor>()> make) {
  std::lock_guard lock(g_mu);
  g_make_extractor = std::move(make);
}

std::shared_ptr<TextExtractor> text_extractor() {
  std::lock_guard lock(g_mu);
  if (!g_extractor && g_make_extractor) g_extractor = std::exchange(g_make_extractor, nullptr)();
  return g_extractor;
}

}  // namespace mailark
