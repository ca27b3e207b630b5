// Quarantine entries: messages that came through an SMTP listener, were archived, and are held back
// from delivery because the scan was not clean (infected, or unscannable under policy "reject" or
// "quarantine"). The archive keeps every such message either way; the entry records what an
// administrator decided (`mailark quarantine list|release|delete`). Releasing one queues it to its
// recipients in the same transaction as the decision, so a release is recorded exactly when it takes
// effect (tests: Archive.ReleaseQueuesTheMessageAndRecordsTheDecision).
//
// Table `quarantine` in the archive environment, written in the same transaction as the record.
// Format v1 (docs/FORMAT.md, "quarantine"): key = archive seq (u64 BE); value = version byte 0x01,
// status byte, refused byte, string reason, zigzag created_at, zigzag decided_at, string decided_by,
// then the delivery it would have had: route byte, varint recipient count, strings.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/queue.h"

namespace mailark {

enum class QuarantineStatus : std::uint8_t { kHeld = 0, kReleased = 1, kDeleted = 2 };
const char* quarantine_status_name(QuarantineStatus s);  // "held", "released", "deleted"

struct QuarantineEntry {
  std::uint64_t seq = 0;
  QuarantineStatus status = QuarantineStatus::kHeld;
  bool refused = false;  // the SMTP client was refused (554): the sender knows it was not delivered
  std::string reason;    // the virus names, or why it was unscannable
  std::int64_t created_at = 0;
  std::int64_t decided_at = 0;
  std::string decided_by;  // who released or deleted it
  Route route = Route::kNone;
  std::vector<std::string> recipients;
};

std::string encode_quarantine_entry(const QuarantineEntry& e);
Result<QuarantineEntry> decode_quarantine_entry(std::uint64_t seq, std::string_view value);

// One entry as a JSON object (`mailark quarantine list --json`, the web API's /admin/quarantine);
// mail_from, direction and verdict come from the archive record when given.
struct ArchiveRecord;
std::string quarantine_entry_to_json(const QuarantineEntry& q, const ArchiveRecord* record);

}  // namespace mailark
