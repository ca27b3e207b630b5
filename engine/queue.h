// Queue entries: what is still to be delivered for an archived message. They live in the archive's
// LMDB environment (table `queue`) and are written in the same transaction as the archive record, so
// a 250 reply covers both. Deleting a queue entry never touches the archive.
//
// Format v1 (docs/FORMAT.md, "queue"): key = archive seq (u64 BE); value = version byte 0x01, route
// byte, held byte, zigzag created_at, varint recipient count, then per recipient: string address, byte
// state, varint attempts, zigzag next_attempt_at, string last_response.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace mailark {

enum class Route : std::uint8_t {
  kPrimary = 0,   // inbound mail: to the company's primary mail server
  kInternet = 1,  // outbound mail: to the recipient domain's MX hosts, or the smarthost
  kNone = 2,      // no delivery configured: kept for the mailbox views only
};
const char* route_name(Route r);

enum class RecipientState : std::uint8_t { kPending = 0, kDelivered = 1, kBounced = 2 };
const char* recipient_state_name(RecipientState s);

struct QueueRecipient {
  std::string address;
  RecipientState state = RecipientState::kPending;
  std::uint32_t attempts = 0;
  std::int64_t next_attempt_at = 0;  // Unix seconds; 0 = now
  std::string last_response;         // the last reply or error, for `mailark queue` and DSNs
};

struct QueueEntry {
  std::uint64_t seq = 0;  // the archive record this entry delivers
  Route route = Route::kNone;
  bool held = false;      // held by an administrator (or a continuity event): not delivered
  std::int64_t created_at = 0;
  std::vector<QueueRecipient> recipients;

  bool finished() const;  // no recipient pending
};

std::string encode_queue_entry(const QueueEntry& e);
Result<QueueEntry> decode_queue_entry(std::uint64_t seq, std::string_view value);

}  // namespace mailark
