#include "engine/queue.h"

#include <algorithm>

namespace mailark {
namespace {

constexpr std::uint8_t kQueueVersion = 1;

void put_varint(std::string& s, std::uint64_t v) {
  while (v >= 0x80) {
    s.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  s.push_back(static_cast<char>(v));
}
void put_svarint(std::string& s, std::int64_t v) {
  put_varint(s, (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63));
}
void put_string(std::string& s, std::string_view v) {
  put_varint(s, v.size());
  s.append(v);
}

struct In {
  std::string_view s;
  std::size_t pos = 0;
  bool byte(std::uint8_t& v) {
    if (pos >= s.size()) return false;
    v = static_cast<std::uint8_t>(s[pos++]);
    return true;
  }
  bool varint(std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      std::uint8_t b;
      if (!byte(b)) return false;
      v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  bool svarint(std::int64_t& v) {
    std::uint64_t u;
    if (!varint(u)) return false;
    v = static_cast<std::int64_t>(u >> 1) ^ -static_cast<std::int64_t>(u & 1);
    return true;
  }
  bool string(std::string& v) {
    std::uint64_t n;
    if (!varint(n) || n > s.size() - pos) return false;
    v.assign(s.substr(pos, n));
    pos += n;
    return true;
  }
};

}  // namespace

const char* route_name(Route r) {
  switch (r) {
    case Route::kPrimary: return "primary";
    case Route::kInternet: return "internet";
    case Route::kNone: return "none";
  }
  return "none";
}

const char* recipient_state_name(RecipientState s) {
  switch (s) {
    case RecipientState::kPending: return "pending";
    case RecipientState::kDelivered: return "delivered";
    case RecipientState::kBounced: return "bounced";
  }
  return "pending";
}

bool QueueEntry::finished() const {
  return std::none_of(recipients.begin(), recipients.end(),
                      [](const QueueRecipient& r) { return r.state == RecipientState::kPending; });
}

std::string encode_queue_entry(const QueueEntry& e) {
  std::string s;
  s.push_back(static_cast<char>(kQueueVersion));
  s.push_back(static_cast<char>(e.route));
  s.push_back(static_cast<char>(e.held ? 1 : 0));
  put_svarint(s, e.created_at);
  put_varint(s, e.recipients.size());
  for (const auto& r : e.recipients) {
    put_string(s, r.address);
    s.push_back(static_cast<char>(r.state));
    put_varint(s, r.attempts);
    put_svarint(s, r.next_attempt_at);
    put_string(s, r.last_response);
  }
  return s;
}

Result<QueueEntry> decode_queue_entry(std::uint64_t seq, std::string_view value) {
  auto corrupt = [&](const char* what) {
    return make_error(ErrorCode::kCorrupt, "queue entry " + std::to_string(seq) + ": " + what);
  };
  In in{value};
  std::uint8_t version, route, held;
  QueueEntry e;
  e.seq = seq;
  std::uint64_t n;
  if (!in.byte(version)) return corrupt("empty");
  if (version != kQueueVersion) {
    return make_error(ErrorCode::kUnsupported, "queue entry " + std::to_string(seq) + " has format version " +
                                                   std::to_string(version));
  }
  if (!in.byte(route) || !in.byte(held) || !in.svarint(e.created_at) || !in.varint(n) || route > 2 ||
      n > value.size()) {
    return corrupt("bad header");
  }
  e.route = static_cast<Route>(route);
  e.held = held != 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    QueueRecipient r;
    std::uint8_t state;
    std::uint64_t attempts;
    if (!in.string(r.address) || !in.byte(state) || state > 2 || !in.varint(attempts) ||
        !in.svarint(r.next_attempt_at) || !in.string(r.last_response)) {
      return corrupt("bad recipient");
    }
    r.state = static_cast<RecipientState>(state);
    r.attempts = static_cast<std::uint32_t>(attempts);
    e.recipients.push_back(std::move(r));
  }
  if (in.pos != value.size()) return corrupt("trailing bytes");
  return e;
}

}  // namespace mailark
