// What a listener does when accept() fails: most often the process is out of file descriptors
// (EMFILE, ENFILE: a flood of connections, or a limit set low), and the connection that could not be
// taken waits in the kernel's backlog, so the listening socket stays readable and the next accept
// fails at once. Taken again straight away, that failure spun the io thread at a whole core and wrote
// about 400,000 log lines a second (measured: 1.5 million in 4 s, one SMTP listener at a limit of 64
// descriptors). A listener now waits kAcceptPause before it tries again, logs the first failure of a
// run and then one line a minute, and logs when it accepts again; what waits in the backlog is taken
// then, nothing is refused (test: tests/e2e/test_serve.py
// test_a_listener_out_of_file_descriptors_waits_and_takes_its_connections_after).
//
// raise_open_file_limit: `serve` raises its soft limit on open files to the hard limit at start, as
// servers do, so that its connection limits (the web portal's 1,000, IMAP's and SMTP's sessions) are
// not cut short by the default soft limit of 1,024.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <string>

namespace mailark::api {

inline constexpr std::chrono::milliseconds kAcceptPause{100};

class AcceptBackoff {
 public:
  explicit AcceptBackoff(std::string listener) : listener_(std::move(listener)) {}

  // After an accept that failed with `ec` (not operation_aborted): logs as above, then waits
  // kAcceptPause on the caller's executor.
  asio::awaitable<void> failed(const asio::error_code& ec);
  // After an accept that succeeded: logs the end of a run of failures.
  void accepted();

 private:
  std::string listener_;
  std::uint64_t failures_ = 0;  // in the current run
  std::chrono::steady_clock::time_point logged_{};
};

// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit in force after.
std::uint64_t raise_open_file_limit();

}  // namespace mailark::api
