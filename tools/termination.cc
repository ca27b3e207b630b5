#include "tools/termination.h"

#include <execinfo.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>

#include "indexer/index.h"

namespace mailark::cli {
namespace {

// The stack is still the thrower's here, at most unwound to the frame that could not pass the
// exception on (a noexcept one), so the backtrace names where it came from.
[[noreturn]] void report_termination() {
  std::string what = "no exception (std::terminate called directly)";
  if (std::current_exception()) {
    try {
      throw;
    } catch (...) {
      what = mailark::indexer::describe_current_exception();
    }
  }
  std::cerr << "mailark: ended by an uncaught error: " << what << "\nmailark: where it was thrown from:\n"
            << std::flush;
  void* frames[64];
  ::backtrace_symbols_fd(frames, ::backtrace(frames, 64), STDERR_FILENO);
  std::abort();
}

}  // namespace

void report_uncaught_errors() { std::set_terminate(report_termination); }

}  // namespace mailark::cli
