#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <utility>
#include <ctime>
#include <iostream>

#include "common/file_util.h"
#include "common/dates.h"
#include "engine/cases.h"
#include "tools/cli.h"

namespace mailark::cli {

int exit_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return kExitUsage;
    case ErrorCode::kNotFound:
      return kExitNotFound;
    case ErrorCode::kCorrupt:
      return kExitCorrupt;
    case ErrorCode::kIo:
      return kExitIo;
    case ErrorCode::kLimit:
      return kExitFailure;
    case ErrorCode::kUnsupported:
      return kExitUnsupported;
    case ErrorCode::kBadInput:
      return kExitUsage;
    case ErrorCode::kInternal:
      return kExitInternal;
  }
  return kExitInternal;
}

int report(const Error& e) {
  std::cerr << "mailark: " << error_code_name(e.code) << ": " << e.context << "\n";
  if (!e.hint.empty()) std::cerr << "  hint: " << e.hint << "\n";
  return exit_status(e.code);
}

Result<std::unique_ptr<Engine>> open_engine(const GlobalOptions& g, bool read_only, bool catch_up,
                                            const std::string& writer) {
  EngineOptions o;
  o.read_only = read_only;
  o.catch_up_on_open = catch_up;
  o.writer = writer;
  return open_engine(g, std::move(o));
}

Result<std::unique_ptr<Engine>> open_engine(const GlobalOptions& g, EngineOptions o) {
  o.data_dir = g.data_dir;
  auto engine = Engine::open(std::move(o));
  // A writer's open may have given the main environment's free pages back (Engine::open): the
  // command says so on stderr, `serve` in its log (its stderr).
  if (engine && !(*engine)->compaction_note().empty()) std::cerr << "mailark: " << (*engine)->compaction_note() << "\n";
  return engine;
}

std::string iso8601(std::int64_t t) { return iso8601_date(t); }

namespace {

// This binary, and the folder it is in (".", when /proc/self/exe cannot be read).
std::pair<std::filesystem::path, std::filesystem::path> self_and_folder() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {"/proc/self/exe", "."};
  return {self, self.parent_path()};
}

}  // namespace

std::string server_binary() {
  const auto [self, folder] = self_and_folder();
  if (self.filename() == "mailark-server") return self.string();
  return (folder / "mailark-server").string();
}

std::string cli_binary() {
  const auto [self, folder] = self_and_folder();
  std::error_code ec;
  const std::filesystem::path cli = folder / "mailark";
  return std::filesystem::exists(cli, ec) ? cli.string() : self.string();
}

Result<std::string> scan_host_for(const std::string& isolation) {
  if (isolation == "thread") return std::string();
  const auto [self, folder] = self_and_folder();
  std::error_code ec;
  const std::filesystem::path host = folder / "mailark-scan";
  if (!std::filesystem::exists(host, ec))
    return make_error(ErrorCode::kNotFound, "the scan host " + host.string() + " is missing",
                      "build it beside mailark, or set scanner.isolation = \"thread\" to scan in the server");
  return host.string();
}

std::string os_account() {
  if (const char* u = std::getenv("SUDO_USER"); u && *u) return u;
  if (const char* u = std::getenv("USER"); u && *u) return u;
  if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_name) return pw->pw_name;
  return "uid " + std::to_string(::getuid());
}

Result<CaseStore*> case_store(const GlobalOptions& g) {
  // One environment handle per process: LMDB forbids opening the same environment twice in one
  // process (closing one handle drops the process's locks for both).
  static std::unique_ptr<CaseStore> store;
  if (!store) {
    auto s = CaseStore::open(g.data_dir + "/cases", /*read_only=*/false);
    if (!s) return s.error();
    store = std::move(*s);
  }
  return store.get();
}

Status audit(const GlobalOptions& g, const std::string& action, const std::string& target,
             const std::string& detail_json) {
  auto store = case_store(g);
  if (!store) return Error{store.error().code, "cannot write the audit log: " + store.error().context, store.error().hint};
  auto e = (*store)->audit("cli:" + os_account(), action, target, detail_json);
  if (!e) return Error{e.error().code, "cannot write the audit log: " + e.error().context, e.error().hint};
  return ok_status();
}

Result<NoteVerifier> verifier_key_arg(const std::string& arg) {
  if (arg.find('+') != std::string::npos) return parse_verifier_key(arg);
  MAILARK_ASSIGN_OR_RETURN(std::string text, read_file_head(arg, 4096));
  return parse_verifier_key(text);
}

std::string human_bytes(std::uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

static double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string what)
    : what_(std::move(what)), tty_(::isatty(STDERR_FILENO)), start_(now_seconds()) {}

void Progress::update(std::uint64_t done, std::uint64_t total) {
  if (!tty_) return;
  double now = now_seconds();
  if (now - last_draw_ < 0.2 && done != total) return;
  last_draw_ = now;
  double elapsed = std::max(now - start_, 1e-6);
  double rate = static_cast<double>(done) / elapsed;
  char line[200];
  if (total > 0) {
    double eta = rate > 0 ? static_cast<double>(total - std::min(done, total)) / rate : 0;
    int width = 30;
    int filled = static_cast<int>(width * static_cast<double>(done) / static_cast<double>(total));
    std::string bar(static_cast<std::size_t>(std::min(filled, width)), '#');
    bar.resize(static_cast<std::size_t>(width), '.');
    std::snprintf(line, sizeof line, "\r%s [%s] %llu/%llu  %.0f msg/s  ETA %.0fs ", what_.c_str(),
                  bar.c_str(), static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                  rate, eta);
  } else {
    std::snprintf(line, sizeof line, "\r%s %llu messages  %.0f msg/s ", what_.c_str(),
                  static_cast<unsigned long long>(done), rate);
  }
  std::cerr << line << std::flush;
}

void Progress::finish() {
  if (tty_ && last_draw_ > 0) std::cerr << "\n";
}

}  // namespace mailark::cli
