// mailark stats: counts, sizes, ratios and the index watermark.
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/json_text.h"
#include "engine/continuity.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct StatsArgs {
  bool json = false;
};

int run_stats(const GlobalOptions& g, const StatsArgs& args) {
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  Engine& e = **engine;
  ArchiveCounters c = e.archive().counters();
  ChainHead head = e.archive().head();
  std::uint64_t archive_bytes = e.archive().file_bytes();
  std::uint64_t index_bytes = e.index_bytes();
  std::uint64_t watermark = e.index_watermark();
  const auto health = e.index_health();  // zeros without an index
  const std::uint64_t unindexed_count = health ? health->unindexed : 0;
  const std::uint64_t unrepaired = health ? health->read_before_repairs : 0;
  std::uint64_t expired = 0;
  if (auto snap = e.archive().snapshot())
    if (auto runs = (*snap)->expired_runs())
      for (const auto& r : *runs) expired += r.last - r.first + 1;
  auto quarantine = e.archive().quarantine_entries(false);
  const std::uint64_t held = quarantine ? quarantine->size() : 0;
  std::optional<ContinuityEvent> event;
  auto cstate = Continuity(e.archive()).state(&event);
  const std::string continuity = cstate ? continuity_state_name(*cstate) : "unknown";
  double compression =
      c.stored_bytes ? static_cast<double>(c.unique_raw_bytes) / static_cast<double>(c.stored_bytes) : 0;
  double dedup =
      c.unique_raw_bytes ? static_cast<double>(c.raw_bytes) / static_cast<double>(c.unique_raw_bytes) : 0;
  double on_disk =
      c.raw_bytes ? static_cast<double>(archive_bytes + index_bytes) / static_cast<double>(c.raw_bytes) : 0;
  if (args.json) {
    nlohmann::json j = {{"messages", c.records},
                        {"unique_messages", c.blobs},
                        {"expired", expired},
                        {"raw_bytes", c.raw_bytes},
                        {"unique_raw_bytes", c.unique_raw_bytes},
                        {"compressed_bytes", c.stored_bytes},
                        {"archive_bytes", archive_bytes},
                        {"index_bytes", index_bytes},
                        {"compression_ratio", compression},
                        {"dedup_ratio", dedup},
                        {"disk_to_raw_ratio", on_disk},
                        {"clean", c.clean},
                        {"infected", c.infected},
                        {"unscanned", c.unscanned},
                        {"unscannable", c.unscannable},
                        {"quarantine_held", held},
                        {"unindexed", unindexed_count},
                        {"indexed_before_repairs", unrepaired},
                        {"malformed", c.malformed},
                        {"dictionary", e.archive().codec()->active_dictionary()},
                        {"archive_head", head.seq},
                        {"archive_format", e.archive().format()},
                        {"head_hash", to_hex(head.hash)},
                        {"index_watermark", watermark},
                        {"continuity", continuity}};
    std::cout << json_text(j) << "\n";
    return kExitOk;
  }
  std::cout << std::fixed << std::setprecision(1);
  std::cout << "messages         " << c.records << " (" << c.blobs << " unique)"
            << (expired ? " and " + std::to_string(expired) + " removed by retention" : std::string()) << "\n"
            << "raw mail         " << human_bytes(c.raw_bytes) << "\n"
            << "archive on disk  " << human_bytes(archive_bytes) << " (compressed messages "
            << human_bytes(c.stored_bytes) << ")\n"
            << "index on disk    " << human_bytes(index_bytes) << "\n"
            << std::setprecision(2) << "compression      " << compression << "x (zstd, dictionary "
            << e.archive().codec()->active_dictionary() << ")\n"
            << "deduplication    " << dedup << "x\n"
            << "disk / raw       " << on_disk << "\n"
            << "verdicts         clean " << c.clean << ", infected " << c.infected << ", unscannable "
            << c.unscannable << ", unscanned " << c.unscanned << "\n"
            << "quarantine       " << held << " held (mailark quarantine list)\n"
            << "malformed        " << c.malformed << "\n"
            << "index watermark  " << watermark << " of " << head.seq << "\n"
            << "not indexed      " << unindexed_count << (unindexed_count ? " (search is:unindexed; mailark verify lists them)" : "") << "\n";
  if (unrepaired)
    std::cout << "older reading    " << unrepaired
              << " documents indexed by an older release, which read some texts less well (names split\n"
                 "                 across encoded words, raw 8-bit bytes, words in Chinese, Japanese or Korean,\n"
                 "                 or written decomposed or full-width, words typed without their accents, Greek\n"
                 "                 words ending in a final sigma, may not be found); a running server\n"
                 "                 reads a sealed segment's again by itself (`mailark segments` shows\n"
                 "                 where they are), `mailark reindex` reads them all again\n";
  std::cout
            << "continuity       " << continuity << (event ? " (event " + std::to_string(event->id) + "; mailark continuity)" : "") << "\n";
  return kExitOk;
}

}  // namespace

void register_stats(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<StatsArgs>();
  auto* cmd = app.add_subcommand("stats", "archive and index statistics");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_stats(g, *args); }; });
}

}  // namespace mailark::cli
