// mailark verify: walk the hash chain and check every stored message.
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/verify.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct VerifyArgs {
  bool json = false;
};

int run_verify(const GlobalOptions& g, const VerifyArgs& args) {
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  Progress progress("verifying");
  auto rep =
      verify_archive((*engine)->archive(), [&](std::uint64_t d, std::uint64_t t) { progress.update(d, t); });
  progress.finish();
  if (!rep) return report(rep.error());
  if (args.json) {
    nlohmann::json j = {{"intact", rep->intact},
                        {"records_checked", rep->records_checked},
                        {"messages_checked", rep->messages_checked},
                        {"head_seq", rep->head.seq},
                        {"head_hash", to_hex(rep->head.hash)}};
    if (!rep->intact) {
      j["first_bad_record"] = rep->first_bad;
      j["problem"] = rep->problem;
    }
    std::cout << j.dump() << "\n";
  } else if (rep->intact) {
    std::cout << "archive intact: " << rep->records_checked << " records, " << rep->messages_checked
              << " stored messages checked\nchain head: record " << rep->head.seq << " "
              << to_hex(rep->head.hash) << "\n";
  } else {
    std::cout << "ARCHIVE DAMAGED at record " << rep->first_bad << ": " << rep->problem << "\n"
              << "(" << rep->records_checked << " records before it are intact)\n";
  }
  return rep->intact ? kExitOk : kExitFailure;
}

}  // namespace

void register_verify(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<VerifyArgs>();
  auto* cmd = app.add_subcommand("verify", "check the archive's hash chain and every stored message");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_verify(g, *args); }; });
}

}  // namespace mailark::cli
