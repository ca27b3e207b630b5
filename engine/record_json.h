// A record's envelope as JSON, the one way `show --json` and export manifests write it.
#pragma once

#include <nlohmann/json.hpp>

#include "common/dates.h"
#include "engine/record.h"

namespace mailark {

inline nlohmann::json envelope_json(const Envelope& e) {
  return {{"direction", direction_name(e.direction)},
          {"mail_from", e.mail_from},
          {"rcpt_to", e.rcpt_to},
          {"client", e.client},
          {"helo", e.helo},
          {"tls", e.tls},
          {"connector", e.connector},
          {"source", e.source},
          {"received_at", iso8601_date(e.received_at)}};
}

}  // namespace mailark
