// Calls out of the server to what an administrator configured: an HTTP POST (libcurl) and a shell
// command with text on its standard input. Both are bounded by a timeout and block their caller:
// call them from a thread of their own (the alert thread, the checkpoint publisher), never from an
// event loop.
#pragma once

#include <string>
#include <vector>

namespace mailark::api {

// One POST of `body`; returns an empty string on success (a 2xx status), else what went wrong.
std::string post(const std::string& url, const std::string& body, const std::string& content_type,
                 const std::vector<std::string>& headers, unsigned timeout_s, const std::string& user_agent);

// Runs `command` with /bin/sh -c, `input` on its standard input and `env` ("NAME=value") added to
// the environment; kills it after timeout_s. Returns an empty string when it exited 0.
std::string run_command(const std::string& command, const std::string& input, const std::vector<std::string>& env,
                        unsigned timeout_s);

}  // namespace mailark::api
