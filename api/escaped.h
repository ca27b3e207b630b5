// What escapes a detached coroutine or an event loop's handler: a bug, never the end of the server.
// Said in the log, whatever was thrown (a std::exception by its type and what(), a Xapian error by
// its type and message, anything else by its type), and never thrown again: an exception that
// leaves the completion handler of a coroutine leaves the io thread's run() (tests/threads_test.cc
// Escaped.*, RunEventLoop.*).
#pragma once

#include <exception>
#include <string>

namespace mailark::api {

// "TYPE: what()" of an exception_ptr (empty for none).
std::string describe_escaped(std::exception_ptr e);

// Logs `e` (nothing for none) as an error: "<who>: <describe_escaped(e)>".
void log_escaped(const char* who, std::exception_ptr e);

// A completion handler for asio::co_spawn that logs what escaped the coroutine under `who`
// (a string literal).
inline auto log_escaped_as(const char* who) {
  return [who](std::exception_ptr e) { log_escaped(who, e); };
}

}  // namespace mailark::api
