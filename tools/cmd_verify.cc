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

void print_index_status(std::uint64_t watermark, std::uint64_t lag,
                        const Result<std::pair<std::uint64_t, std::vector<std::pair<std::uint64_t, std::string>>>>& unindexed) {
  std::cout << "index: up to record " << watermark;
  if (lag) std::cout << " (" << lag << " behind the archive; a running server or the next writer catches it up)";
  std::cout << "\n";
  if (unindexed && unindexed->first > 0) {
    std::cout << "not indexed: " << unindexed->first << " record" << (unindexed->first == 1 ? "" : "s") << " (search is:unindexed)\n";
    for (const auto& [id, why] : unindexed->second) std::cout << "  " << id << ": " << why << "\n";
  }
}

int run_verify(const GlobalOptions& g, const VerifyArgs& args) {
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  Progress progress("verifying");
  auto rep =
      verify_archive((*engine)->archive(), [&](std::uint64_t d, std::uint64_t t) { progress.update(d, t); });
  progress.finish();
  if (!rep) return report(rep.error());
  // The index is derived: it may lag (the server catches it up) and it lists records it could not
  // index. Neither is archive damage, but both are shown, never hidden.
  const std::uint64_t watermark = (*engine)->index_watermark();
  const std::uint64_t lag = rep->head.seq > watermark ? rep->head.seq - watermark : 0;
  auto unindexed = (*engine)->unindexed(100);
  if (args.json) {
    nlohmann::json j = {{"intact", rep->intact},
                        {"records_checked", rep->records_checked},
                        {"messages_checked", rep->messages_checked},
                        {"head_seq", rep->head.seq},
                        {"head_hash", to_hex(rep->head.hash)},
                        {"index_watermark", watermark},
                        {"index_lag", lag}};
    nlohmann::json list = nlohmann::json::array();
    if (unindexed) {
      for (const auto& [id, why] : unindexed->second) list.push_back({{"id", id}, {"reason", why}});
      j["unindexed_total"] = unindexed->first;
    }
    j["unindexed"] = list;
    if (!rep->intact) {
      j["first_bad_record"] = rep->first_bad;
      j["problem"] = rep->problem;
    }
    std::cout << j.dump() << "\n";
  } else if (rep->intact) {
    print_index_status(watermark, lag, unindexed);
    std::cout << "archive intact: " << rep->records_checked << " records, " << rep->messages_checked
              << " stored messages checked\nchain head: record " << rep->head.seq << " "
              << to_hex(rep->head.hash) << "\n";
  } else {
    print_index_status(watermark, lag, unindexed);
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
