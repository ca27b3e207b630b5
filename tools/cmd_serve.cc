// mailark serve: run the configured listeners (SMTP inbound and outbound) until SIGTERM.
#include <spdlog/spdlog.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "api/accept.h"
#include "api/config.h"
#include "api/smtp/server.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct ServeArgs {
  std::string config;
};

int run_serve(const GlobalOptions& g, const ServeArgs& args) {
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S%z mailark[%P]: %v");
  auto config = api::load_serve_config(args.config);
  if (!config) return report(config.error());
  // Every connection is a descriptor: the soft limit up to the hard one (api/accept.h).
  if (const std::uint64_t files = api::raise_open_file_limit(); files < 4096)
    spdlog::warn("open files: at most {} (the hard limit): fewer connections than the configured limits "
                 "may be taken at once; listeners wait while none is left", files);
  // One set of limits: the configuration's bound the SMTP parser, the message parser, the scanner
  // and the archive alike (tests/e2e/test_failures.py test_message_at_the_configured_maximum_reads_back).
  EngineOptions options;
  options.limits = config->limits;
  options.limits.max_message_bytes += Limits::kTraceHeaderBytes;
  options.scanner_temp_dir = config->scanner_temp_dir;
  auto host = scan_host_for(config->scanner_isolation);
  if (!host) return report(host.error());
  options.scanner_host = *host;
  options.writer = "serve";
  // Records the index lacks are caught up by the ingest's shard threads with the door open, not
  // before it opens: the index never keeps mail out (engine/ingest.cc index_loop).
  options.catch_up_on_open = false;
  auto engine = open_engine(g, std::move(options));
  if (!engine) return report(engine.error());
  // The signatures before anything starts a thread: libclamav reads plain signature files a character
  // at a time and glibc locks each read once a second thread exists (loading bench/sigs' database
  // takes 9 s single-threaded, 21 s after). Listeners bind only after this too (server.cc).
  const auto load_start = std::chrono::steady_clock::now();
  if (auto sc = (*engine)->scanner(); !sc) return report(sc.error());
  spdlog::info("signatures loaded in {:.1f} s",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
  auto server = api::SmtpServer::create(**engine, *config, args.config);
  if (!server) return report(server.error());
  spdlog::info("data folder {}, archive head {}, signatures: {}", g.data_dir, (*engine)->archive().head().seq,
               (*engine)->scanner().ok() ? (*(*engine)->scanner())->description() : "none");
  if (auto sc = (*engine)->scanner()) {
    std::string warning = scanner::temp_space_warning((*sc)->config(), (*engine)->options().limits.max_message_bytes,
                                                      std::max(1u, std::thread::hardware_concurrency()));
    if (!warning.empty()) spdlog::warn("{}", warning);
  }
  Status s = (*server)->run();
  if (!s) return report(s.error());
  return kExitOk;
}

}  // namespace

std::optional<int> run_in_server(const GlobalOptions&) { return std::nullopt; }  // this is the server

Result<IntakeSettings> intake_settings(const std::string& config_path) {
  auto config = api::load_serve_config(config_path);
  if (!config) return config.error();
  return IntakeSettings{config->limits, config->scanner_temp_dir, config->scanner_isolation};
}

void register_serve(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "run the SMTP listeners (see docs/CONFIG.md)");
  cmd->add_option("--config", args->config, "configuration file (TOML); without it, the embedded default");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_serve(g, *args); }; });
}

}  // namespace mailark::cli
