#include "engine/handoff.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/frames.h"
#include "common/numbers.h"
#include "engine/record.h"
#include "engine/users.h"

namespace mailark {
namespace {

constexpr std::size_t kMaxField = 4096;  // every field but a message's bytes
constexpr std::size_t kMaxFolder = 1000;

std::optional<std::int64_t> parse_signed(std::string_view s) {
  const bool negative = !s.empty() && s.front() == '-';
  if (negative) s.remove_prefix(1);
  auto v = parse_decimal(s, static_cast<std::uint64_t>(INT64_MAX));
  if (!v) return std::nullopt;
  return negative ? -static_cast<std::int64_t>(*v) : static_cast<std::int64_t>(*v);
}

}  // namespace

std::string encode_handoff_message(const HandoffMessage& m) {
  const std::string at = std::to_string(m.received_at);
  return encode_frame('m', {m.origin, m.raw, at, m.folder, m.mail_from, m.custodian, m.owner});
}

std::string encode_handoff_done() { return encode_frame('x', {}); }

std::string encode_handoff_hello(std::uint64_t max_message_bytes) {
  return encode_frame('h', {"1", std::to_string(max_message_bytes)});
}

std::string encode_handoff_result(const IngestResult& r) {
  std::string flags;
  if (r.malformed) flags += 'm';
  if (r.store_failed) flags += 's';
  const std::string outcome = std::to_string(static_cast<int>(r.outcome));
  const std::string verdict = std::to_string(static_cast<int>(r.verdict));
  const std::string seq = std::to_string(r.seq);
  return encode_frame('r', {std::string_view(r.origin).substr(0, kMaxField), outcome, verdict, seq,
                            std::string_view(r.reason).substr(0, kMaxField),
                            std::string_view(r.scan_reason).substr(0, kMaxField), flags});
}

std::string encode_handoff_stop(std::string_view why) { return encode_frame('s', {why.substr(0, kMaxField)}); }

std::string encode_handoff_end(std::uint64_t head) { return encode_frame('x', {std::to_string(head)}); }

HandoffRequest read_handoff_request(std::FILE* in, const Limits& limits, HandoffMessage& out, std::string& why) {
  Frame f;
  // A message's bytes may be up to the limit and a little over it (so that the pipeline refuses it
  // with the reason the SMTP door gives); more is not read at all.
  const std::size_t max_field = std::max<std::size_t>(limits.max_message_bytes + 1, kMaxField);
  switch (read_frame(in, max_field, 7, f)) {
    case FrameRead::kFrame: break;
    case FrameRead::kEnd: why = "the import ended without saying it was done"; return HandoffRequest::kBad;
    case FrameRead::kTruncated: why = "the import's stream ends inside a frame"; return HandoffRequest::kBad;
    case FrameRead::kTooLarge:
      why = "a message larger than the server's limit (limits.message_bytes: " + std::to_string(limits.max_message_bytes) +
            " bytes)";
      return HandoffRequest::kBad;
    case FrameRead::kBad: why = "what the import sent is not a frame"; return HandoffRequest::kBad;
  }
  if (f.kind == 'x' && f.fields.empty()) return HandoffRequest::kDone;
  if (f.kind != 'm' || f.fields.size() != 7) {
    why = "what the import sent is not a message";
    return HandoffRequest::kBad;
  }
  for (std::size_t i = 0; i < f.fields.size(); ++i) {
    if (i != 1 && f.fields[i].size() > kMaxField) {
      why = "a message's description is longer than " + std::to_string(kMaxField) + " bytes";
      return HandoffRequest::kBad;
    }
  }
  auto at = parse_signed(f.fields[2]);
  if (!at) {
    why = "a message's time is not a number";
    return HandoffRequest::kBad;
  }
  out = HandoffMessage{};
  out.origin = std::move(f.fields[0]);
  out.raw = std::move(f.fields[1]);
  out.received_at = *at;
  out.folder = f.fields[3].size() <= kMaxFolder ? std::move(f.fields[3]) : std::string();
  out.mail_from = std::move(f.fields[4]);
  if (!f.fields[5].empty()) {
    auto c = check_custodian(f.fields[5]);
    if (!c) {
      why = "custodian: " + c.error().context;
      return HandoffRequest::kBad;
    }
    out.custodian = *c;
  }
  if (!f.fields[6].empty()) {
    auto o = normalize_address(f.fields[6]);
    if (!o) {
      why = "owner: " + o.error().context;
      return HandoffRequest::kBad;
    }
    out.owner = *o;
  }
  return HandoffRequest::kMessage;
}

IngestItem handoff_item(HandoffMessage&& m) {
  IngestItem item;
  item.origin = std::move(m.origin);
  item.raw = std::move(m.raw);
  item.envelope.direction = Direction::kImport;
  item.envelope.mail_from = std::move(m.mail_from);
  item.envelope.client = "import";
  item.envelope.connector = "import";
  item.envelope.source = item.origin;
  item.envelope.custodian = std::move(m.custodian);
  item.envelope.folder = std::move(m.folder);
  item.envelope.received_at = m.received_at;
  if (!m.owner.empty()) item.envelope.rcpt_to = {std::move(m.owner)};  // the mailbox store places it for the owner
  // Imports archive everything: an unscannable message of an old mailbox stays visible (its verdict
  // says why), an infected one is quarantined; nothing is delivered. A temporary scanner failure
  // archives it unscanned with the reason.
  item.on_unscannable = ScanAction::kDeliver;
  item.on_infected = ScanAction::kQuarantine;
  item.defer_on_scan_error = false;
  return item;
}

bool read_handoff_reply(std::FILE* in, HandoffReply& out, std::string& why) {
  Frame f;
  switch (read_frame(in, kMaxField, 7, f)) {
    case FrameRead::kFrame: break;
    case FrameRead::kEnd: why = "the server closed the connection"; return false;
    default: why = "the server sent what is not a reply"; return false;
  }
  out = HandoffReply{};
  if (f.kind == 'r' && f.fields.size() == 7) {
    auto outcome = parse_decimal(f.fields[1], static_cast<std::uint64_t>(IngestOutcome::kDeferred));
    auto verdict = parse_decimal(f.fields[2], static_cast<std::uint64_t>(scanner::VerdictKind::kTemporaryError));
    auto seq = parse_decimal(f.fields[3]);
    if (!outcome || !verdict || !seq) {
      why = "the server sent a result that cannot be read";
      return false;
    }
    out.kind = HandoffReply::kResult;
    out.result.origin = std::move(f.fields[0]);
    out.result.outcome = static_cast<IngestOutcome>(*outcome);
    out.result.verdict = static_cast<scanner::VerdictKind>(*verdict);
    out.result.seq = *seq;
    out.result.reason = std::move(f.fields[4]);
    out.result.scan_reason = std::move(f.fields[5]);
    out.result.malformed = f.fields[6].find('m') != std::string::npos;
    out.result.store_failed = f.fields[6].find('s') != std::string::npos;
    return true;
  }
  if (f.kind == 'h' && f.fields.size() == 2) {
    auto limit = parse_decimal(f.fields[1]);
    if (f.fields[0] != "1" || !limit || *limit == 0) {
      why = "the server speaks another version of the import hand-off (" + f.fields[0].substr(0, 20) +
            "); use the `mailark` of the same release as the server";
      return false;
    }
    out.kind = HandoffReply::kHello;
    out.max_message_bytes = *limit;
    return true;
  }
  if (f.kind == 's' && f.fields.size() == 1) {
    out.kind = HandoffReply::kStop;
    out.why = std::move(f.fields[0]);
    return true;
  }
  if (f.kind == 'x' && f.fields.size() == 1) {
    auto head = parse_decimal(f.fields[0]);
    if (!head) {
      why = "the server sent an end that cannot be read";
      return false;
    }
    out.kind = HandoffReply::kEnd;
    out.head = *head;
    return true;
  }
  why = "the server sent what is not a reply";
  return false;
}

bool handoff_address(const std::string& path, sockaddr_un& out) {
  out = sockaddr_un{};
  out.sun_family = AF_UNIX;
  if (path.size() >= sizeof out.sun_path) return false;
  std::memcpy(out.sun_path, path.c_str(), path.size() + 1);
  return true;
}

namespace {
int connect_unix(const std::string& path) {
  sockaddr_un addr;
  if (!handoff_address(path, addr)) return -1;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}
}  // namespace

int connect_handoff(const std::string& data_dir) { return connect_unix(data_dir + "/" + kHandoffSocketName); }

bool ask_server_to_sync_index(const std::string& data_dir, std::string* why) {
  const int fd = connect_unix(data_dir + "/" + kIndexSyncSocketName);
  if (fd < 0) return false;
  // The server waits at most its own timeout (5 s) for its index; this bounds a server that never
  // answers (stopped, or stuck), after which the reader reads what is committed.
  timeval tv{10, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string line;
  char buf[256];
  while (line.size() < 1024) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line.append(buf, static_cast<std::size_t>(n));
    if (line.find('\n') != std::string::npos) break;
  }
  ::close(fd);
  line = line.substr(0, line.find('\n'));
  if (line == "current") return true;
  if (why) *why = line.empty() ? "the server did not answer" : line;
  return false;
}

}  // namespace mailark
