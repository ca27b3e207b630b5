// A record's envelope as JSON, the one way `show --json` and export manifests write it.
#pragma once

#include <nlohmann/json.hpp>

#include "common/dates.h"
#include "engine/record.h"

namespace mailark {

// `custodian` and `folder` (record v2) appear only when set, so a v1 record's envelope reads as it
// always did (export manifests compare it with the record).
inline nlohmann::json envelope_json(const Envelope& e) {
  nlohmann::json j = {{"direction", direction_name(e.direction)},
          {"mail_from", e.mail_from},
          {"rcpt_to", e.rcpt_to},
          {"client", e.client},
          {"helo", e.helo},
          {"tls", e.tls},
          {"connector", e.connector},
          {"source", e.source},
          {"received_at", iso8601_date(e.received_at)}};
  if (!e.custodian.empty()) j["custodian"] = e.custodian;
  if (!e.folder.empty()) j["folder"] = e.folder;
  return j;
}

}  // namespace mailark
