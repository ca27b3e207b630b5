// mailark serve: run the configured listeners (SMTP inbound and outbound) until SIGTERM.
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include <asio/ssl.hpp>
#include <chrono>
#include <iostream>
#include <thread>

#include "api/accept.h"
#include "api/config.h"
#include "api/dns.h"
#include "api/tls.h"
#include "api/smtp/server.h"
#include "tools/cli.h"
#include "tools/terminal_safe.h"

namespace mailark::cli {
namespace {

struct ServeArgs {
  std::string config;
  bool check = false;
};

// `serve --check`: reads the configuration as `serve` and SIGHUP do, and loads the TLS certificate
// and key it names (and checks that they belong together), without opening the data folder: so it
// works beside a running server, before a reload or a restart (as `postfix check`, `nginx -t`).
// Test: test_serve.py test_serve_check_reads_the_configuration_beside_a_running_server.
int check_serve_config(const ServeArgs& args) {
  auto config = api::load_serve_config(args.config);
  if (!config) return report(config.error());
  for (const auto& l : config->listeners) {
    asio::error_code ec;
    (void)asio::ip::make_address(l.address, ec);
    if (ec) return report(make_error(ErrorCode::kInvalidArgument, "listener " + l.name + ": bad address " + l.address));
  }
  if (!config->tls_cert.empty() && !config->tls_key.empty()) {
    asio::ssl::context ssl(asio::ssl::context::tls_server);
    if (auto s = api::use_server_certificate(ssl, config->tls_cert, config->tls_key); !s) return report(s.error());
  }
  std::cout << "configuration ok: " << (args.config.empty() ? std::string("the embedded default") : args.config) << "\n";
  std::cout << "hostname " << config->hostname << "; TLS certificate "
            << (config->tls_cert.empty() ? std::string("self-signed, in the data folder") : config->tls_cert) << "\n";
  for (const auto& l : config->listeners)
    std::cout << "listener " << l.name << ": " << l.role << " on " << l.address << ":" << l.port << " tls=" << l.tls << "\n";
  if (!config->web.listen.empty()) std::cout << "web portal on " << config->web.listen << " tls=" << config->web.tls << "\n";
  if (!config->admin.listen.empty()) std::cout << "admin on " << config->admin.listen << " tls=" << config->admin.tls << "\n";
  std::string domains;
  for (const auto& d : config->inbound_domains) domains += (domains.empty() ? "" : ", ") + d;
  std::cout << "inbound domains: " << (domains.empty() ? std::string("none") : domains) << "\n";
  std::string primary;
  for (const auto& p : config->delivery.primary) primary += (primary.empty() ? "" : ", ") + p.host + ":" + std::to_string(p.port);
  std::cout << "primary: " << (primary.empty() ? std::string("none (inbound mail is kept for the mailbox views)") : primary)
            << "\n";
  return kExitOk;
}

// %* in the server's log pattern: the message made safe (tools/terminal_safe.h, newlines shown too):
// what a log line quotes from outside (a login name, an address, a server's reply) can neither forge a
// line nor send the reader's terminal a control sequence. (The short commands do not log through
// spdlog, and do not load it.) Test: test_web.py test_a_hostile_login_name_cannot_forge_a_log_line.
class SafeMessage : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string safe = terminal_safe(std::string_view(msg.payload.data(), msg.payload.size()), /*lines=*/false);
    dest.append(safe.data(), safe.data() + safe.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<SafeMessage>(); }
};

int run_serve(const GlobalOptions& g, const ServeArgs& args) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<SafeMessage>('*').set_pattern("%Y-%m-%dT%H:%M:%S%z mailark[%P]: %*");
  spdlog::set_formatter(std::move(formatter));
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

std::function<std::string(std::string_view)> address_other_form() { return api::other_address_form; }

Result<IntakeSettings> intake_settings(const std::string& config_path) {
  auto config = api::load_serve_config(config_path);
  if (!config) return config.error();
  return IntakeSettings{config->limits, config->scanner_temp_dir, config->scanner_isolation};
}

void register_serve(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "run the SMTP listeners (see docs/CONFIG.md)");
  cmd->add_option("--config", args->config, "configuration file (TOML); without it, the embedded default");
  cmd->add_flag("--check", args->check,
                "read the configuration and its TLS files, say what it sets up, and exit (works beside a running server)");
  cmd->callback([&g, &run, args] {
    run = [&g, args] { return args->check ? check_serve_config(*args) : run_serve(g, *args); };
  });
}

}  // namespace mailark::cli
