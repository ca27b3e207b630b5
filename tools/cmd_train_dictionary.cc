// mailark train-dictionary: train a new zstd dictionary on the newest archived mail.
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/json_text.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct TrainArgs {
  std::size_t samples = 5000;
  std::size_t bytes = 64 * 1024;
  bool json = false;
};

int run_train(const GlobalOptions& g, const TrainArgs& args) {
  auto engine = open_engine(g, /*read_only=*/false, /*catch_up=*/false, "train-dictionary");
  if (!engine) return report(engine.error());
  Engine& e = **engine;
  std::uint32_t before = e.archive().codec()->active_dictionary();
  auto id = e.train_dictionary(args.samples, args.bytes);
  if (!id) return report(id.error());
  if (args.json) {
    std::cout << json_text(nlohmann::json({{"dictionary", *id}, {"previous", before}})) << "\n";
  } else {
    std::cout << "trained dictionary " << *id << " on the newest " << args.samples
              << " messages; new mail is compressed with it (dictionary " << before
              << " stays for the messages written with it)\n";
  }
  return kExitOk;
}

}  // namespace

void register_train_dictionary(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train-dictionary",
                                 "train a new compression dictionary on the newest archived mail");
  cmd->add_option("--samples", args->samples, "how many of the newest messages to learn from (default 5000)");
  cmd->add_option("--bytes", args->bytes, "dictionary size in bytes (default 65536)");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_train(g, *args); }; });
}

}  // namespace mailark::cli
