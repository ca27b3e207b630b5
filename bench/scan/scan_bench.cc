// bench/scan: what virus scanning costs per message with a given signature set.
//
//   build/bench/scan_bench --signatures DIR [--threads N] [--limit N] [--no-reload] [--one-engine]
//                          [--thread-first] [--host build/mailark-scan] PATH...
//
// --one-engine: every signature in one libclamav engine, as clamd loads them, instead of mailark's
// split (logical signatures behind a prefilter, scanner/logical_split.h): the side-by-side figure.
// --thread-first: start (and join) one thread before loading, as a server that loaded signatures
// after starting its threads would: glibc then locks every character libclamav reads.
// --host: scan in scan processes (scanner/scan_host.h), one for each thread, as `mailark` does.
//
// Loads the set into one engine (load time, resident memory after it), then scans the messages of the
// PATHs (Maildirs, mbox files, single files, as `mailark import` reads them) with N threads sharing
// the engine, and prints messages per second, per-message time (median, p95, p99) and the verdicts;
// then times a reload (a second engine built beside the first, as SIGHUP does) and the memory while
// both exist.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <sys/mman.h>
#include <string>
#include <thread>
#include <vector>

#include "engine/sources.h"
#include "scanner/scanner.h"

namespace {

using Clock = std::chrono::steady_clock;

long rss_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

long anon_huge_kb() {
  std::ifstream in("/proc/meminfo");
  std::string l;
  while (std::getline(in, l))
    if (l.rfind("AnonHugePages:", 0) == 0) return std::stol(l.substr(14));
  return 0;
}

// Experiment: the loaded engine's anonymous memory collapsed into 2 MiB pages (MADV_COLLAPSE).
void collapse() {
  auto t0 = Clock::now();
  std::ifstream maps("/proc/self/maps");
  std::string line;
  std::size_t bytes = 0;
  int fails = 0;
  while (std::getline(maps, line)) {
    std::istringstream ls(line);
    std::string range, perms, off, dev, inode;
    ls >> range >> perms >> off >> dev >> inode;
    if (perms.substr(0, 2) != "rw" || inode != "0") continue;
    const auto dash = range.find('-');
    const unsigned long a = std::stoul(range.substr(0, dash), nullptr, 16), b = std::stoul(range.substr(dash + 1), nullptr, 16);
    const unsigned long huge = 2ul << 20, A = (a + huge - 1) & ~(huge - 1), B = b & ~(huge - 1);
    if (B <= A || B - A < 4 * huge) continue;
    ::madvise(reinterpret_cast<void*>(A), B - A, MADV_HUGEPAGE);
    if (::madvise(reinterpret_cast<void*>(A), B - A, 25 /* MADV_COLLAPSE */) != 0) ++fails;
    bytes += B - A;
  }
  std::printf("huge pages   %.0f MB advised, %d regions not collapsed, %.1f s, AnonHugePages %ld MB\n", bytes / 1e6, fails,
              ms_since(t0) / 1000, anon_huge_kb() / 1024);
}

int main(int argc, char** argv) {
  std::string sigs;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::size_t limit = 0;
  bool reload = true, one_engine = false, thread_first = false;
  std::string host;
  bool huge = false;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--signatures" && i + 1 < argc) sigs = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = static_cast<unsigned>(std::stoul(argv[++i]));
    else if (a == "--limit" && i + 1 < argc) limit = std::stoul(argv[++i]);
    else if (a == "--no-reload") reload = false;
    else if (a == "--one-engine") one_engine = true;
    else if (a == "--thread-first") thread_first = true;
    else if (a == "--host" && i + 1 < argc) host = argv[++i];
    else if (a == "--huge-pages") huge = true;
    else paths.push_back(a);
  }
  if (sigs.empty() || paths.empty()) {
    std::fprintf(stderr, "usage: scan_bench --signatures DIR [--threads N] [--limit N] [--no-reload] [--one-engine] [--thread-first] [--host MAILARK_SCAN] PATH...\n");
    return 2;
  }
  std::vector<std::string> messages;
  mailark::Limits limits;
  mailark::SourceCallbacks cb;
  cb.on_message = [&](mailark::SourceMessage&& m) {
    if (!limit || messages.size() < limit) messages.push_back(std::move(m.raw));
  };
  cb.on_error = [](const std::string&, const std::string&) {};
  cb.on_skipped = [](const std::string&, const std::string&) {};
  if (auto s = mailark::walk_sources(paths, limits, cb); !s) {
    std::fprintf(stderr, "%s\n", s.error().to_string().c_str());
    return 1;
  }
  std::uint64_t bytes = 0;
  for (const auto& m : messages) bytes += m.size();

  mailark::scanner::ScannerConfig cfg;
  cfg.signature_dirs = {sigs};
  cfg.split_logical = !one_engine;
  cfg.host = host;
  cfg.max_processes = threads;
  if (thread_first) std::thread([] {}).join();
  const long rss_before = rss_kb();
  auto t0 = Clock::now();
  auto scanner = mailark::scanner::Scanner::open(cfg);
  if (!scanner) {
    std::fprintf(stderr, "%s\n", scanner.error().to_string().c_str());
    return 1;
  }
  const double load_ms = ms_since(t0);
  if (huge) collapse();
  const long rss_loaded = rss_kb();
  std::printf("signatures   %s\n", (*scanner)->description().c_str());
  std::printf("load         %.1f s, resident %ld MB (+%ld MB)\n", load_ms / 1000, rss_loaded / 1024,
              (rss_loaded - rss_before) / 1024);

  std::vector<double> times(messages.size());
  std::map<std::string, std::uint64_t> verdicts;
  std::mutex mu;
  std::atomic<std::size_t> next{0};
  auto t1 = Clock::now();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      std::map<std::string, std::uint64_t> local;
      for (std::size_t i = next++; i < messages.size(); i = next++) {
        auto s = Clock::now();
        auto v = (*scanner)->scan(messages[i]);
        times[i] = ms_since(s);
        local[mailark::scanner::verdict_name(v.kind)]++;
      }
      std::lock_guard lock(mu);
      for (auto& [k, n] : local) verdicts[k] += n;
    });
  }
  for (auto& t : pool) t.join();
  const double scan_ms = ms_since(t1);
  std::sort(times.begin(), times.end());
  auto pct = [&](double p) { return times.empty() ? 0.0 : times[static_cast<std::size_t>(p * (times.size() - 1))]; };
  std::printf("scanned      %zu messages, %.1f MB, %u threads, %.1f s: %.0f msg/s\n", messages.size(), bytes / 1e6,
              threads, scan_ms / 1000, messages.size() / (scan_ms / 1000));
  std::printf("per message  median %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.1f ms\n", pct(0.5), pct(0.95), pct(0.99),
              times.empty() ? 0.0 : times.back());
  std::printf("verdicts    ");
  for (auto& [k, n] : verdicts) std::printf(" %s %llu", k.c_str(), static_cast<unsigned long long>(n));
  std::printf("\n");
  if (!reload) return 0;
  auto old = (*scanner)->engine();  // held as an in-flight scan would hold it
  auto t2 = Clock::now();
  if (auto s = (*scanner)->reload(); !s) {
    std::fprintf(stderr, "reload: %s\n", s.error().to_string().c_str());
    return 1;
  }
  std::printf("reload       %.1f s, resident %ld MB while old and new engines both exist\n", ms_since(t2) / 1000,
              rss_kb() / 1024);
  return 0;
}
