// Shared pieces of the `mailark` CLI: global options, opening the engine, error reporting and exit
// statuses. One file per subcommand registers itself through the register_* functions below.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/checkpoint.h"
#include "engine/cases.h"
#include "engine/engine.h"

namespace mailark::cli {

struct GlobalOptions {
  std::string data_dir;
  std::vector<std::string> argv;  // the command line as given (commands handed over to mailark-server)
};

// Exit statuses, stable for scripts.
enum ExitStatus : int {
  kExitOk = 0,
  kExitFailure = 1,  // the command ran and found a problem (verify: archive damaged)
  kExitUsage = 2,    // bad arguments or query
  kExitNotFound = 3,
  kExitCorrupt = 4,
  kExitIo = 5,
  kExitUnsupported = 6,
  kExitInternal = 70,
};

int exit_status(ErrorCode code);
// Prints "mailark: <error>" (and the hint) to stderr and returns the exit status for it.
int report(const Error& e);

// catch_up: a read-write open first brings the index up to date (it needs the index write lock, which
// a running server holds; commands that only touch the archive pass false).
// writer: the command's name for the data folder's writer lock; empty for commands that may write
// beside a running server (queue, quarantine).
Result<std::unique_ptr<Engine>> open_engine(const GlobalOptions& g, bool read_only, bool catch_up = true,
                                            const std::string& writer = "a writer");
// The same with every option given (serve passes its configuration's limits and scanner folder).
Result<std::unique_ptr<Engine>> open_engine(const GlobalOptions& g, EngineOptions options);

std::string iso8601(std::int64_t unix_seconds);

// mailark-server, beside the running binary (or this binary when it is mailark-server): the commands
// that need the servers' libraries or libarchive hand over to it with execv.
std::string server_binary();
// The `mailark` binary beside this one (itself, in `mailark`); /proc/self/exe when there is none.
std::string cli_binary();
// The scan host for scanner.isolation (scanner/scan_host.h): mailark-scan beside this binary for
// "process", empty for "thread". Errors: kNotFound when "process" and the host is not there.
Result<std::string> scan_host_for(const std::string& isolation);

// The operating-system account that runs the command (SUDO_USER first, then USER, else "uid N").
std::string os_account();
// The data folder's case store (DATA/cases), opened once per process for reading and writing.
Result<CaseStore*> case_store(const GlobalOptions& g);
// Appends an entry to the data folder's audit log (DATA/cases, engine/cases.h) as "cli:<account>".
// Fail closed: a command whose audit entry cannot be written says so and shows nothing
// (tests/e2e/test_cases.py test_a_search_whose_audit_entry_cannot_be_written_shows_nothing; that
// every search, view and export is logged: test_every_search_view_and_export_is_in_the_audit_log).
Status audit(const GlobalOptions& g, const std::string& action, const std::string& target,
             const std::string& detail_json = "{}");
// A --key argument: a verifier key ("NAME+ID+KEY"), or a file holding one.
Result<NoteVerifier> verifier_key_arg(const std::string& arg);
// "512 B", "3.4 KiB", "70.5 MiB", "1.2 GiB".
std::string human_bytes(std::uint64_t bytes);

// A progress line on stderr when it is a terminal: count, rate and ETA. Silent otherwise.
class Progress {
 public:
  explicit Progress(std::string what);
  void update(std::uint64_t done, std::uint64_t total);  // total 0: unknown
  void finish();

 private:
  std::string what_;
  bool tty_;
  double start_;
  double last_draw_ = 0;
};

using Runner = std::function<int()>;
void register_import(CLI::App& app, GlobalOptions& g, Runner& run);
void register_search(CLI::App& app, GlobalOptions& g, Runner& run);
void register_show(CLI::App& app, GlobalOptions& g, Runner& run);
void register_verify(CLI::App& app, GlobalOptions& g, Runner& run);
void register_stats(CLI::App& app, GlobalOptions& g, Runner& run);
void register_reindex(CLI::App& app, GlobalOptions& g, Runner& run);
void register_train_dictionary(CLI::App& app, GlobalOptions& g, Runner& run);
void register_serve(CLI::App& app, GlobalOptions& g, Runner& run);
void register_queue(CLI::App& app, GlobalOptions& g, Runner& run);
void register_quarantine(CLI::App& app, GlobalOptions& g, Runner& run);
void register_continuity(CLI::App& app, GlobalOptions& g, Runner& run);
void register_user(CLI::App& app, GlobalOptions& g, Runner& run);
void register_segments(CLI::App& app, GlobalOptions& g, Runner& run);
void register_checkpoint(CLI::App& app, GlobalOptions& g, Runner& run);
// export and verify-export: in mailark-server (tools/cmd_export.cc); `mailark` hands them over to it.
void register_export(CLI::App& app, GlobalOptions& g, Runner& run);
// import and reindex, the commands that run the ingest pipeline for minutes or hours, run in
// mailark-server, which is linked with TCMalloc: with it an import takes about a quarter less time
// than with glibc's allocator (docs/BENCHMARKS.md, "TCMalloc for the pipeline"); the short commands
// keep glibc's, with which they fault in fewer pages at start-up. In `mailark`
// this hands the command line over to mailark-server (execv; returns only when that fails, with the
// exit status to report), in mailark-server it returns nothing and the command runs there.
// Test: tests/e2e/test_cli.py test_import_and_reindex_run_in_the_server_binary.
std::optional<int> run_in_server(const GlobalOptions& g);
// What a server configuration file (`serve --config`) says about taking mail in, for `import
// --config`: its [limits] (message size, scan limits, disk reserve) and the scanner's temporary
// folder, so that an import takes, refuses and scans mail as that server would. Defined in
// mailark-server (tools/cmd_serve.cc, with api/config.h), where import runs (run_in_server); errors
// as api::load_serve_config. Test: tests/e2e/test_cli.py test_import_takes_the_servers_limits_with_config.
struct IntakeSettings {
  Limits limits;
  std::string scanner_temp_dir;
  std::string scanner_isolation = "thread";
};
Result<IntakeSettings> intake_settings(const std::string& config_path);
// The other spelling of an address of an internationalised domain (api::other_address_form: its
// A-labels for UTF-8, its UTF-8 for A-labels), for the mailbox store's follower
// (MailboxStore::set_other_address_form); null in `mailark`, which does not link libidn2 (the
// commands that place mail, import and reindex, run in mailark-server).
std::function<std::string(std::string_view)> address_other_form();
void register_case(CLI::App& app, GlobalOptions& g, Runner& run);
void register_retention(CLI::App& app, GlobalOptions& g, Runner& run);

}  // namespace mailark::cli
