// Queue entries: what is still to be delivered for an archived message. They live in the archive's
// LMDB environment (table `queue`) and are written in the same transaction as the archive record, so
// a 250 reply covers both. Deleting a queue entry never touches the archive.
//
// Format v3 (docs/FORMAT.md, "queue"): key = archive seq (u64 BE); value = version byte 0x03, route
// byte, held byte, zigzag created_at, varint recipient count, then per recipient: string address, byte
// state, varint attempts, zigzag next_attempt_at, string last_response; then string message_id. v2 is
// the same without the message id; v1 also has states 0..2 only; all three are read.
//
// The due index (table `queue_due`, archive format 3) names every entry that has work to do, ordered
// by lane, due time and seq (due_keys below), so the delivery agent reads only what is due now, in
// arrival order, however long the queue (tests: Archive.DueIndexFollowsEveryQueueChange).
//
// Changes to an entry are read-modify-write in one transaction (Archive::queue_modify and
// Archive::queue_apply): a delivery result only changes the recipient it is about, so an
// administrator's hold made meanwhile stands (tests: Archive.DeliveryResultNeverUndoesAHold).
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

enum class RecipientState : std::uint8_t {
  kPending = 0,    // to be delivered
  kDelivered = 1,  // the next hop said 250
  kBounced = 2,    // failed for good; the sender was notified, or gets no notification (null sender)
  kFailed = 3,     // failed for good; the DSN to the sender is still to be archived and queued. The
                   // DSN's append flips it to kBounced in the same transaction, so it is sent once.
  kKept = 4,       // inbound mail the primary refused, or that outlived the queue lifetime: kept for
                   // the administrator (`mailark queue retry|delete`), never bounced to the outside
};
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
  std::string message_id;  // of the message (without <>), for the continuity drain's dedupe; may be empty

  bool finished() const;  // every recipient delivered or bounced: the entry can go
};

// The outcome of one delivery attempt for one recipient, applied to the stored entry inside the
// write transaction (only to a recipient still pending).
struct DeliveryResult {
  std::uint64_t seq = 0;
  std::string address;
  RecipientState state = RecipientState::kPending;  // kPending: deferred until next_attempt_at
  std::int64_t next_attempt_at = 0;
  std::string last_response;
};

// Applies one result to an entry. Returns false when no pending recipient has that address.
bool apply_result(QueueEntry& entry, const DeliveryResult& result);

// Lanes of the due index: the route for recipients to deliver, kDsnLane for entries with failures
// whose DSN is still to be made.
inline constexpr std::uint8_t kDsnLane = 0x10;
std::uint8_t lane_of(Route r);
// The due-index keys of an entry: lane (1 byte), due time (u64 BE, Unix seconds, 0 = now), seq (u64
// BE). None for a held entry or one with nothing left to do; two when it has both pending recipients
// and failures awaiting their DSN.
std::vector<std::string> due_keys(const QueueEntry& e);
// Decodes a due-index key. False for a key that is not one.
bool parse_due_key(std::string_view key, std::uint8_t& lane, std::int64_t& due, std::uint64_t& seq);
std::string due_key_prefix(std::uint8_t lane);

std::string encode_queue_entry(const QueueEntry& e);
Result<QueueEntry> decode_queue_entry(std::uint64_t seq, std::string_view value);

// One entry as a JSON object (`mailark queue list --json`, the web API's /admin/queue):
// {"id", "route", "held", "created", "recipients": [{"address", "state", "attempts", "next_attempt",
// "last_response"}]}.
std::string queue_entry_to_json(const QueueEntry& e);

}  // namespace mailark
