// The one way mailark writes JSON text (API answers, audit entries, stored state, CLI output).
//
// Mail is bytes: a subject, a Message-ID or a folder name may hold bytes that are not UTF-8, and
// nlohmann::json's own dump() throws on them. A throw on a server's pool thread ends the whole
// process (asio lets it escape the thread), so one hostile header could take the MX down
// (tests/e2e/test_web.py test_a_message_of_invalid_utf8_is_shown_and_the_server_stays_up). Here every
// invalid byte is written as U+FFFD instead; valid text comes out exactly as dump() gives it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace mailark {

inline std::string json_text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace mailark
