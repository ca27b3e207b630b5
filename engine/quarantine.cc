#include "engine/quarantine.h"

#include <nlohmann/json.hpp>

#include "common/dates.h"
#include "common/json_text.h"
#include "engine/record.h"

#include "common/encoding.h"

namespace mailark {
namespace {

constexpr std::uint8_t kQuarantineVersion = 1;

}  // namespace

const char* quarantine_status_name(QuarantineStatus s) {
  switch (s) {
    case QuarantineStatus::kHeld: return "held";
    case QuarantineStatus::kReleased: return "released";
    case QuarantineStatus::kDeleted: return "deleted";
  }
  return "held";
}

std::string encode_quarantine_entry(const QuarantineEntry& e) {
  Writer w;
  w.u8(kQuarantineVersion);
  w.u8(static_cast<std::uint8_t>(e.status));
  w.u8(e.refused ? 1 : 0);
  w.str(e.reason);
  w.svarint(e.created_at);
  w.svarint(e.decided_at);
  w.str(e.decided_by);
  w.u8(static_cast<std::uint8_t>(e.route));
  w.varint(e.recipients.size());
  for (const auto& r : e.recipients) w.str(r);
  return std::move(w.out());
}

Result<QuarantineEntry> decode_quarantine_entry(std::uint64_t seq, std::string_view value) {
  auto corrupt = [&](const char* what) {
    return make_error(ErrorCode::kCorrupt, "quarantine entry " + std::to_string(seq) + ": " + what);
  };
  Reader in(value);
  QuarantineEntry e;
  e.seq = seq;
  std::uint8_t version, status, refused, route;
  std::uint64_t n;
  if (!in.u8(version)) return corrupt("empty");
  if (version != kQuarantineVersion) {
    return make_error(ErrorCode::kUnsupported,
                      "quarantine entry " + std::to_string(seq) + " has format version " + std::to_string(version));
  }
  if (!in.u8(status) || status > 2 || !in.u8(refused) || !in.str(e.reason) || !in.svarint(e.created_at) ||
      !in.svarint(e.decided_at) || !in.str(e.decided_by) || !in.u8(route) || route > 2 || !in.varint(n) ||
      n > value.size()) {
    return corrupt("bad header");
  }
  e.status = static_cast<QuarantineStatus>(status);
  e.refused = refused != 0;
  e.route = static_cast<Route>(route);
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string r;
    if (!in.str(r)) return corrupt("bad recipient");
    e.recipients.push_back(std::move(r));
  }
  if (in.pos() != value.size()) return corrupt("trailing bytes");
  return e;
}

std::string quarantine_entry_to_json(const QuarantineEntry& q, const ArchiveRecord* rec) {
  nlohmann::json j = {{"id", q.seq},
                      {"status", quarantine_status_name(q.status)},
                      {"reason", q.reason},
                      {"refused_at_smtp", q.refused},
                      {"held_at", iso8601_date(q.created_at)},
                      {"route", route_name(q.route)},
                      {"recipients", q.recipients}};
  if (q.status != QuarantineStatus::kHeld) {
    j["decided_by"] = q.decided_by;
    j["decided_at"] = iso8601_date(q.decided_at);
  }
  if (rec) {
    j["mail_from"] = rec->envelope.mail_from;
    j["direction"] = direction_name(rec->envelope.direction);
    j["verdict"] = scanner::verdict_name(rec->verdict.kind);
  }
  return json_text(j);
}

}  // namespace mailark
