// Scanning in processes of their own (ScannerConfig::host set: what `mailark` does with
// scanner.isolation = "process"). libclamav parses hostile attachments of every kind; a crash or a
// hang in it must cost one message, not the gateway. So the signature engine is loaded by a host
// process, `mailark-scan` (tools/mailark_scan.cc, beside the mailark binaries), which forks one
// single-threaded child per concurrent scan: the children share the compiled engine with the host
// (copy-on-write: a child copies only the pages it writes), and a scan runs in a child, never in a process that holds the
// archive; a child runs under a seccomp filter (no network, no programs or processes, no signal to
// another process: tools/sandbox.h) and dumps no core. A child that dies or answers out of turn is killed and replaced: a message that ends a
// new child is unscannable ("parse: the scanner crashed ..."), one that ends a child kept idle (which
// may have died meanwhile) is scanned once more in a new one; a scan still running past the deadline
// is killed and the message unscannable ("limit: ..."), and so is one whose memory grows past
// config.max_memory_bytes beyond what it shared with the host at its fork (watched every 100 ms
// while a scan runs); the server goes on either way
// (tests/scan_host_test.cc ScanHost.*, tests/e2e/test_failures.py
// test_dead_scan_processes_cost_the_server_nothing). The price, on the machines measured: a scan costs
// about 40% more CPU in a scan process than on a server thread, and SMTP throughput drops by a fifth
// (docs/BENCHMARKS.md, "Scanning in processes"); hence an option, not the default. The server's own
// memory no longer holds the engine, and a reload loads the new one in a fresh process of its own.
//
// The host: started with its control socket as descriptor 3 and the configuration in its arguments;
// loads the engine, then answers each 'c' on the control socket with a new child: a frame 'p' + the
// child's pid (u32 BE), with the child's socket passed alongside (SCM_RIGHTS). When the control
// socket ends (the mailark process exited, or dropped this host after a reload), the host kills its
// children and exits; a child dies with its host (PR_SET_PDEATHSIG) and ends when its socket ends.
// Frames from the host: kind (1 byte), then 'r' ready: u32 BE length, description; 'e' failed: error
// code (1 byte), u32 BE length, message; 'p' child: u32 BE pid.
//
// A child: request = length (u64 BE), message bytes; answer = length (u32 BE, at most
// kMaxVerdictBytes), encode_verdict's bytes. The parent trusts no answer (a child that libclamav's
// parsers lost to a hostile message speaks through it): decode_verdict is fuzzed
// (fuzz/scan_verdict_fuzz.cc).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/worker_pool.h"
#include "scanner/scanner.h"

namespace mailark::scanner {

inline constexpr std::size_t kMaxVerdictBytes = 64 * 1024;

// A verdict's bytes between a child and its parent: kind (1 byte), why (1), the signature count (u16
// BE) and each name (u16 BE length, bytes), the reason (u16 BE length, bytes). At most 64 names of
// 512 bytes and a reason of 4,096 bytes are kept (longer ones are cut), so the bytes fit
// kMaxVerdictBytes.
std::string encode_verdict(const ScanVerdict& verdict);
// The verdict of such bytes; kCorrupt for anything else (a kind or why outside the enums, lengths past
// the end or past the bounds above, bytes left over, an infected verdict without a name).
Result<ScanVerdict> decode_verdict(std::string_view bytes);

// The host program (tools/mailark_scan.cc): arguments as ScanPool passes them. Each scan process
// runs `confine` first (the seccomp filter of tools/sandbox.h) and dumps no core; the host refuses to
// start (an error for ScanPool::start) when a trial process cannot be confined. Returns the exit code.
int scan_host_main(int argc, char** argv, bool (*confine)() = nullptr);

// The parent's side: one host and its children. Thread safe: concurrent scans use different children.
class ScanPool {
 public:
  struct Options {
    std::string host;              // path of mailark-scan
    ScannerConfig config;          // what the host loads (config.host is ignored)
    unsigned max_children = 4;     // scans beyond it wait for a child
    unsigned timeout_ms = 0;       // per scan; 0: config.max_scan_ms + 30 s
    std::vector<std::string> extra_args;  // appended to the host's arguments (tests: --abort-on, --hog-on)
  };
  // Starts the host and waits until it has loaded the engine. Errors: the host's (kNotFound when no
  // signature could be loaded...), kIo when it cannot be started or stops before it is ready.
  static Result<std::shared_ptr<ScanPool>> start(Options options);
  ~ScanPool();  // ends the host, which kills its children
  ScanPool(const ScanPool&) = delete;
  ScanPool& operator=(const ScanPool&) = delete;

  ScanVerdict scan(std::string_view bytes);
  const std::string& description() const { return description_; }
  // Children started so far, and the idle ones' pids (tests: a dead child is replaced, not reused).
  std::uint64_t children_started() const;
  std::vector<pid_t> idle_pids_for_test() const;
  pid_t host_pid() const { return host_pid_; }

 private:
  struct Child {
    pid_t pid = -1;
    int fd = -1;
    std::uint64_t anon_at_start = 0;  // its resident anonymous memory when it was new (config.max_memory_bytes)
  };
  static constexpr int kMemoryCheckMs = 100;
  explicit ScanPool(Options options);
  Result<Child> new_child();
  // Waits for the child's answer to begin, until `deadline`; while it waits, every kMemoryCheckMs,
  // false when the child's resident anonymous memory has grown past config.max_memory_bytes since it
  // was new (with no bound: at once, true).
  bool answer_within_memory(const Child& c, std::chrono::steady_clock::time_point deadline) const;
  static void discard(Child& child);
  Options options_;
  std::string description_;
  pid_t host_pid_ = -1;
  int control_ = -1;
  std::mutex control_mu_;  // one request to the host at a time
  WorkerPool<Child> children_;
  std::atomic<std::uint64_t> started_{0};
};

}  // namespace mailark::scanner
