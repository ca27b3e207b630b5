// mailark reindex: rebuild the Xapian index from the archive.
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/json_text.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct ReindexArgs {
  bool json = false;
};

int run_reindex(const GlobalOptions& g, const ReindexArgs& args) {
  EngineOptions o;
  o.data_dir = g.data_dir;
  o.catch_up_on_open = false;
  o.writer = "reindex";
  auto engine = Engine::open(o);
  if (!engine) {
    // Beside a running server: it reads the sealed segments an older release indexed again by itself.
    Error e = engine.error();
    if (e.code == ErrorCode::kIo && e.context.find("in use by `mailark serve`") != std::string::npos)
      e.hint += "; a running server reads again by itself every sealed segment an older release indexed, in "
                "its daily pass (`mailark segments` shows which are left): a whole reindex is needed only for the "
                "rest";
    return report(e);
  }
  const bool in_place = (*engine)->index_on_own_file_system();
  Progress progress(in_place ? "reindexing in place" : "reindexing");
  auto n = (*engine)->reindex([&](std::uint64_t d, std::uint64_t t) { progress.update(d, t); });
  progress.finish();
  if (!n) return report(n.error());
  if (args.json) {
    std::cout << json_text(nlohmann::json({{"indexed", *n},
                                           {"index_watermark", (*engine)->index_watermark()},
                                           {"in_place", in_place}}))
              << "\n";
  } else {
    std::cout << "reindexed " << *n << " messages"
              << (in_place ? " (in place: the index is a file system of its own; its live segment is not compacted)"
                           : "")
              << "\n";
  }
  return kExitOk;
}

}  // namespace

void register_reindex(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<ReindexArgs>();
  auto* cmd = app.add_subcommand("reindex", "rebuild the search index from the archive");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([&g, &run, args] {
    run = [&g, args] {
      if (auto handed = run_in_server(g)) return *handed;
      return run_reindex(g, *args);
    };
  });
}

}  // namespace mailark::cli
