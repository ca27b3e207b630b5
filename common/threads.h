// Work shared out over threads that may not all be had.
//
// Starting a thread can fail (std::system_error: the process's or the system's thread limit, memory
// for its stack). A vector of std::thread that throws half-way through its starts leaves joinable
// threads behind, and destroying one of those ends the process: in `serve`, a search at a moment of
// thread pressure would take every listener down with it. Here a thread that cannot be started is
// simply not there: the work runs on those that could be started, the calling thread always among
// them (tests/threads_test.cc).
#pragma once

#include <functional>
#include <thread>

namespace mailark {

// Runs `work` on the calling thread and on up to `extra` more threads at once, and returns when every
// one of them has returned: how many ran (at least 1). `work` must take its items from something all
// of them share (an atomic counter), so that whichever threads run take them all. An exception from
// `work` on any thread is thrown here, after every thread has been joined (the first one caught).
unsigned run_side_by_side(unsigned extra, const std::function<void()>& work);

// Starts one thread running `f`, as std::thread does: std::system_error when none can be had (the
// caller then does the work itself). Counted by fail_thread_starts_for_test as run_side_by_side's
// starts are. Used by the index's FilterSampler (indexer/index.cc).
std::thread start_thread(std::function<void()> f);

// For tests: of the next thread starts (run_side_by_side's and start_thread's), `after` succeed,
// then `count` fail as an exhausted system's would.
void fail_thread_starts_for_test(unsigned after, unsigned count);
// For tests: how many of those failures are still to come (fewer: a start was tried and failed).
unsigned thread_start_failures_left_for_test();

}  // namespace mailark
