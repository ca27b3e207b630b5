// In-process virus scanning with libclamav, the one translation point to that library.
//
// A ScanEngine is one compiled libclamav engine: loaded once (the full official database takes about
// 1.2 GiB), immutable after compilation and shared by every worker thread; each scan passes its own
// options. A Scanner holds the current engine and swaps in a new one on reload: the new engine is built
// beside the old, which lives until its last in-flight scan drops it.
//
// Fail closed: the answer is one of clean, infected (the signature names), unscannable (why: an
// encrypted archive or document, a scan limit exceeded, content libclamav could not parse) or a
// temporary error (the scanner itself could not work: temporary folder full, out of memory). Anything
// that stops a complete scan is never kClean (tests/scanner_test.cc: Scanner.*NeverClean*,
// Scanner.EncryptedZipIsUnscannable, Scanner.FullTemporaryFolderIsATemporaryErrorNeverClean).
//
// This module knows nothing about the archive: it takes bytes and returns a verdict.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/result.h"

struct cl_engine;

namespace mailark::scanner {

// Stored in archive records as one byte (docs/FORMAT.md, "records"): the values never change.
enum class VerdictKind : std::uint8_t {
  kClean = 0,
  kInfected = 1,
  kUnscanned = 2,    // not scanned at all (import --no-scan, or the scanner failed temporarily)
  kUnscannable = 3,  // scanned, but the scanner could not vouch for the content (see reason)
  kTemporaryError = 4,  // a scan result only, never stored: try again later
};

const char* verdict_name(VerdictKind kind);  // "clean", "infected", "unscanned", "unscannable", "error"

// Why content is unscannable. The reason text of a verdict starts with this word and a colon.
enum class Unscannable : std::uint8_t { kNone = 0, kEncrypted, kLimit, kParse };
const char* unscannable_name(Unscannable why);  // "encrypted", "limit", "parse"

struct ScanVerdict {
  VerdictKind kind = VerdictKind::kUnscanned;
  std::vector<std::string> signatures;  // kInfected: the names that matched
  Unscannable why = Unscannable::kNone; // kUnscannable
  std::string reason;                   // kUnscannable, kTemporaryError, kUnscanned: "why: details"
};

struct ScannerConfig {
  // Directories whose signature files (.cvd, .cld, .ndb, .hdb, ...) are loaded into one engine.
  // Missing directories are skipped; a configuration with no loadable signature at all is an error.
  std::vector<std::string> signature_dirs;
  // Where libclamav writes its temporary files; tmpfs keeps extraction off the disk. Each scan in
  // flight needs room for twice its message plus max_scan_bytes there (see scanner.cc), or it is a
  // temporary error. A missing or unwritable folder fails load().
  std::string tmp_dir = "/dev/shm";
  std::uint64_t max_scan_bytes = 256ull << 20;
  std::uint64_t max_file_bytes = 100ull << 20;
  std::uint32_t max_recursion = 17;
  std::uint32_t max_files = 10000;
  std::uint32_t max_scan_ms = 120000;
  // Scan processes only (host set): the memory a scan may take beyond the engine (its process's
  // resident anonymous memory over what it had when it was forked), checked every 100 ms while a
  // scan runs; past it the process is stopped and the message unscannable. 0: no bound.
  std::uint64_t max_memory_bytes = 0;
  // Gate the logical signatures that can wait behind a prefilter of plain body signatures in a second
  // engine (logical_split.h): the same verdicts, without evaluating every logical signature on every
  // layer of every message. Off only for tests that compare both ways.
  bool split_logical = true;
  // Scan in processes of their own (scan_host.h): the path of the host program, mailark-scan. Empty:
  // in this process, on the caller's thread.
  std::string host;
  // Scans at once in scan processes, at most (more wait for one).
  unsigned max_processes = 4;
};

// The temporary folder's room for one scan in flight (ScannerConfig::tmp_dir), counted over this
// process's scans and held while the scan runs: a scan sent to a scan process takes it in the
// process that sent it, which sees every scan in flight.
class TempRoom {
 public:
  TempRoom() = default;
  ~TempRoom();
  TempRoom(const TempRoom&) = delete;
  TempRoom& operator=(const TempRoom&) = delete;
  // A temporary-error verdict when the folder lacks room for a scan of a message of this size; else
  // nothing, and the room is held until this is destroyed.
  std::optional<ScanVerdict> take(const std::string& tmp_dir, std::size_t message_bytes, std::uint64_t max_scan_bytes);

 private:
  std::uint64_t bytes_ = 0;
};

// Empty when the temporary folder has room for `concurrent` scans of messages up to
// `max_message_bytes` at once; otherwise a warning saying how much is missing.
std::string temp_space_warning(const ScannerConfig& config, std::uint64_t max_message_bytes, unsigned concurrent);

class ScanEngine {
 public:
  // Builds and compiles an engine. Errors: kNotFound when no signature could be loaded, kInternal
  // for a libclamav failure (with libclamav's message).
  static Result<std::shared_ptr<const ScanEngine>> load(const ScannerConfig& config);
  ~ScanEngine();
  ScanEngine(const ScanEngine&) = delete;
  ScanEngine& operator=(const ScanEngine&) = delete;

  // Thread safe. Scans one message as it came in: libclamav's mail parser decodes every part (MIME
  // encodings, uuencode, BinHex, parts embedded in bounce texts) and the archives inside them.
  ScanVerdict scan(std::string_view bytes) const;

  const std::string& description() const { return description_; }

 private:
  ScanEngine() = default;
  static Result<cl_engine*> new_engine(const ScannerConfig& config);
  cl_engine* engine_ = nullptr;  // every signature, but the gated logical ones, plus their prefilter
  cl_engine* logic_ = nullptr;   // the gated logical signatures; null when none are gated
  std::unordered_set<std::string> official_gated_;  // gated names from signed containers
  unsigned signatures_ = 0;
  std::uint64_t max_file_bytes_ = 0;
  std::uint64_t max_scan_bytes_ = 0;
  std::string tmp_dir_;
  std::string description_;  // directories loaded, for logs and stats
};

class ScanPool;

// Holds the engine in use: in this process, or in scan processes (ScannerConfig::host). Thread safe.
class Scanner {
 public:
  static Result<std::unique_ptr<Scanner>> open(ScannerConfig config);
  ~Scanner();
  // Builds a new engine from the same configuration (a new host, in scan processes) and swaps it in;
  // scans in flight finish with the old one. On failure the old engine stays.
  Status reload();
  // The engine in this process; null when scans run in scan processes.
  std::shared_ptr<const ScanEngine> engine() const;
  ScanVerdict scan(std::string_view bytes) const;
  // What was loaded (directories, signature counts), and where scans run.
  std::string description() const;
  const ScannerConfig& config() const { return config_; }

 private:
  explicit Scanner(ScannerConfig config) : config_(std::move(config)) {}
  ScannerConfig config_;
  mutable std::mutex mu_;
  std::shared_ptr<const ScanEngine> engine_;
  std::shared_ptr<ScanPool> pool_;
};

}  // namespace mailark::scanner
