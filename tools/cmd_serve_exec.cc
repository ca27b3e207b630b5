// mailark serve, export and verify-export (and import and reindex: run_in_server in tools/cli.h), in
// the `mailark` binary: hand over to `mailark-server`
// beside it (execv, same process id, same arguments), which links the servers' libraries (OpenSSL's
// TLS, libcurl, libldap, libunbound, Asio) and libarchive (with libxml2 and ICU). The commands that do
// not need them start without loading them: their start-up is about half of what it was
// (docs/BENCHMARKS.md, "Start-up").
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "tools/cli.h"

namespace mailark::cli {
namespace {

// The command line as given, to mailark-server.
int exec_as_given(const GlobalOptions& g) {
  const std::string server = server_binary();
  std::vector<std::string> argv_s = g.argv;
  if (argv_s.empty()) return kExitUsage;
  argv_s[0] = server;
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::cout.flush();  // what the filter of tools/terminal_safe.h holds, before the process is replaced
  ::execv(server.c_str(), argv.data());
  return report(make_error(ErrorCode::kNotFound, "cannot start " + server + ": " + std::strerror(errno),
                           "mailark-server is built beside mailark (the `mailark` build target builds both)"));
}

}  // namespace

std::optional<int> run_in_server(const GlobalOptions& g) { return exec_as_given(g); }

std::function<std::string(std::string_view)> address_other_form() { return nullptr; }

// Never reached here: import hands over to mailark-server (run_in_server) before it reads its settings.
Result<IntakeSettings> intake_settings(const std::string&) {
  return make_error(ErrorCode::kInternal, "configuration files are read by mailark-server");
}

void register_export(CLI::App& app, GlobalOptions& g, Runner& run) {
  for (const char* name : {"export", "verify-export"}) {
    auto* cmd = app.add_subcommand(name, std::string_view(name) == "export"
                                             ? "export what a query finds, with a manifest and proofs anyone can check"
                                             : "check an export without the archive");
    cmd->allow_extras();
    cmd->set_help_flag();  // --help too is mailark-server's
    cmd->callback([&g, &run] { run = [&g] { return exec_as_given(g); }; });
  }
}

void register_serve(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto* cmd = app.add_subcommand("serve", "run the SMTP listeners (see docs/CONFIG.md)");
  cmd->allow_extras();
  cmd->set_help_flag();  // --help too is mailark-server's (--config, --check)
  cmd->callback([&g, &run] { run = [&g] { return exec_as_given(g); }; });
}

}  // namespace mailark::cli
