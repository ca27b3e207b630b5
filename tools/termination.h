// What the process says when an error ends it: installed first thing by main (tools/main.cc).
#pragma once

namespace mailark::cli {

// An exception that escapes a thread (or a destructor, or a noexcept function) ends the process
// through std::terminate. After this call that end is said on stderr (the server's log) first: what
// the error was (a Xapian error by its type and message, a std::exception by its type and what(), any
// other by its type) and the stack it was thrown from, then the process aborts. Tests:
// tests/threads_test.cc Termination.*.
void report_uncaught_errors();

}  // namespace mailark::cli
