#include "engine/queue.h"

#include <nlohmann/json.hpp>

#include "common/dates.h"
#include "common/json_text.h"

#include <algorithm>

#include "common/encoding.h"

namespace mailark {
namespace {

constexpr std::uint8_t kQueueVersion = 3;
constexpr std::uint8_t kMaxState = 4;

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
    case RecipientState::kFailed: return "failed";
    case RecipientState::kKept: return "kept";
  }
  return "pending";
}

bool QueueEntry::finished() const {
  return std::all_of(recipients.begin(), recipients.end(), [](const QueueRecipient& r) {
    return r.state == RecipientState::kDelivered || r.state == RecipientState::kBounced;
  });
}

bool apply_result(QueueEntry& entry, const DeliveryResult& result) {
  for (auto& r : entry.recipients) {
    if (r.address != result.address || r.state != RecipientState::kPending) continue;
    r.state = result.state;
    r.attempts++;
    r.next_attempt_at = result.next_attempt_at;
    r.last_response = result.last_response;
    return true;
  }
  return false;
}

namespace {
std::string be64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) s[static_cast<std::size_t>(i)] = static_cast<char>(v & 0xFF);
  return s;
}
std::uint64_t from_be64(std::string_view s) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
  return v;
}
}  // namespace

std::uint8_t lane_of(Route r) { return static_cast<std::uint8_t>(r); }

std::string due_key_prefix(std::uint8_t lane) { return std::string(1, static_cast<char>(lane)); }

std::vector<std::string> due_keys(const QueueEntry& e) {
  std::vector<std::string> keys;
  if (e.held) return keys;
  bool failed = false, pending = false;
  std::int64_t due = 0;
  for (const auto& r : e.recipients) {
    if (r.state == RecipientState::kFailed) failed = true;
    if (r.state != RecipientState::kPending) continue;
    due = pending ? std::min(due, r.next_attempt_at) : r.next_attempt_at;
    pending = true;
  }
  auto key = [&](std::uint8_t lane, std::int64_t when) {
    return due_key_prefix(lane) + be64(static_cast<std::uint64_t>(std::max<std::int64_t>(0, when))) + be64(e.seq);
  };
  if (pending && e.route != Route::kNone) keys.push_back(key(lane_of(e.route), due));
  if (failed) keys.push_back(key(kDsnLane, 0));
  return keys;
}

bool parse_due_key(std::string_view key, std::uint8_t& lane, std::int64_t& due, std::uint64_t& seq) {
  if (key.size() != 17) return false;
  lane = static_cast<std::uint8_t>(key[0]);
  due = static_cast<std::int64_t>(from_be64(key.substr(1, 8)));
  seq = from_be64(key.substr(9, 8));
  return true;
}

std::string encode_queue_entry(const QueueEntry& e) {
  Writer w;
  w.u8(kQueueVersion);
  w.u8(static_cast<std::uint8_t>(e.route));
  w.u8(e.held ? 1 : 0);
  w.svarint(e.created_at);
  w.varint(e.recipients.size());
  for (const auto& r : e.recipients) {
    w.str(r.address);
    w.u8(static_cast<std::uint8_t>(r.state));
    w.varint(r.attempts);
    w.svarint(r.next_attempt_at);
    w.str(r.last_response);
  }
  w.str(e.message_id);
  return std::move(w.out());
}

Result<QueueEntry> decode_queue_entry(std::uint64_t seq, std::string_view value) {
  auto corrupt = [&](const char* what) {
    return make_error(ErrorCode::kCorrupt, "queue entry " + std::to_string(seq) + ": " + what);
  };
  Reader in(value);
  std::uint8_t version, route, held;
  QueueEntry e;
  e.seq = seq;
  std::uint64_t n;
  if (!in.u8(version)) return corrupt("empty");
  if (version < 1 || version > kQueueVersion) {
    return make_error(ErrorCode::kUnsupported, "queue entry " + std::to_string(seq) + " has format version " +
                                                   std::to_string(version));
  }
  if (!in.u8(route) || !in.u8(held) || !in.svarint(e.created_at) || !in.varint(n) || route > 2 || n > value.size()) {
    return corrupt("bad header");
  }
  e.route = static_cast<Route>(route);
  e.held = held != 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    QueueRecipient r;
    std::uint8_t state;
    std::uint64_t attempts;
    const std::uint8_t max_state = version == 1 ? 2 : kMaxState;
    if (!in.str(r.address) || !in.u8(state) || state > max_state || !in.varint(attempts) || !in.svarint(r.next_attempt_at) ||
        !in.str(r.last_response)) {
      return corrupt("bad recipient");
    }
    r.state = static_cast<RecipientState>(state);
    r.attempts = static_cast<std::uint32_t>(attempts);
    e.recipients.push_back(std::move(r));
  }
  if (version >= 3 && !in.str(e.message_id)) return corrupt("bad message id");
  if (in.pos() != value.size()) return corrupt("trailing bytes");
  return e;
}

std::string queue_entry_to_json(const QueueEntry& e) {
  nlohmann::json rcpts = nlohmann::json::array();
  for (const auto& r : e.recipients) {
    rcpts.push_back({{"address", r.address},
                     {"state", recipient_state_name(r.state)},
                     {"attempts", r.attempts},
                     {"next_attempt", r.next_attempt_at ? iso8601_date(r.next_attempt_at) : std::string()},
                     {"last_response", r.last_response}});
  }
  return json_text(nlohmann::json({{"id", e.seq},
                                   {"route", route_name(e.route)},
                                   {"held", e.held},
                                   {"created", iso8601_date(e.created_at)},
                                   {"recipients", rcpts}}));
}

}  // namespace mailark
