// mailark segments: the archive's time segments with their figures; `segments policy` sets how the
// archive cuts them (engine/archive.h, "Time segments").
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/json_text.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct SegmentsArgs {
  bool json = false;
  std::uint64_t first = 0;
  std::vector<std::string> endpoints;
  std::string period;
  std::int64_t max_records = -1;
};

const char* period_name(SegmentPeriod p) {
  switch (p) {
    case SegmentPeriod::kNone: return "none";
    case SegmentPeriod::kMonth: return "month";
    case SegmentPeriod::kQuarter: return "quarter";
    case SegmentPeriod::kYear: return "year";
  }
  return "none";
}

int run_list(const GlobalOptions& g, const SegmentsArgs& args) {
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  Engine& e = **engine;
  const auto segments = e.archive().segments();
  const SegmentPolicy policy = e.archive().segment_policy();
  std::map<std::uint64_t, indexer::IndexSegment> index;
  if (auto is = indexer::index_segments(e.index_dir()))
    for (const auto& s : *is) index[s.first] = s;
  nlohmann::json list = nlohmann::json::array();
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const SegmentInfo& s = segments[i];
    const auto ix = index.find(s.first);
    nlohmann::json j = {{"first", s.first},
                        {"last", s.last},
                        {"records", s.last >= s.first ? s.last - s.first + 1 : 0},
                        {"period", s.period},
                        {"opened_at", s.opened_at ? iso8601(s.opened_at) : ""},
                        {"live", i + 1 == segments.size()},
                        // Where its records and messages are: a store file of its own, or (a segment of
                        // an archive from before format 5) the main archive environment.
                        {"store", s.own_store ? e.archive().store_path(s.first) : ""},
                        {"store_bytes", s.own_store ? e.archive().store_bytes(s.first) : 0},
                        {"store_sealed", s.own_store && e.archive().store_sealed(s.first)},
                        {"index_documents", ix == index.end() ? 0 : ix->second.documents},
                        {"index_bytes", ix == index.end() ? 0 : ix->second.bytes},
                        {"sealed", ix != index.end() && ix->second.sealed},
                        // Documents an older release read (a server reads a sealed segment's again).
                        {"older_reading", ix == index.end() ? 0 : ix->second.older_reading},
                        // Ids an earlier release's retention left out of its shards (written whole by
                        // the next retention pass: indexer::IndexSegment::gaps).
                        {"index_gaps", ix == index.end() ? 0 : ix->second.gaps},
                        {"remote", ix == index.end() ? std::vector<std::string>() : ix->second.remote}};
    list.push_back(std::move(j));
  }
  if (args.json) {
    nlohmann::json out = {{"segments", list},
                          {"policy", {{"period", period_name(policy.period)}, {"max_records", policy.max_records}}}};
    std::cout << json_text(out) << "\n";
    return kExitOk;
  }
  if (policy.period == SegmentPeriod::kNone)
    std::cout << "policy: "
              << (policy.max_records ? "a new segment every " + std::to_string(policy.max_records) + " messages"
                                     : std::string("one segment (no period, no size)"));
  else
    std::cout << "policy: a new segment every " << period_name(policy.period)
              << (policy.max_records ? " or every " + std::to_string(policy.max_records) + " messages" : "");
  std::cout << "\n";
  std::cout << std::left << std::setw(12) << "FIRST" << std::setw(12) << "LAST" << std::setw(10) << "RECORDS"
            << std::setw(10) << "PERIOD" << std::setw(12) << "STORE" << std::setw(12) << "INDEXED" << std::setw(12)
            << "INDEX" << "STATE\n";
  for (const auto& j : list) {
    std::cout << std::setw(12) << j["first"].get<std::uint64_t>() << std::setw(12) << j["last"].get<std::uint64_t>()
              << std::setw(10) << j["records"].get<std::uint64_t>()
              << std::setw(10) << (j["period"].get<std::string>().empty() ? "-" : j["period"].get<std::string>())
              << std::setw(12)
              << (j["store"].get<std::string>().empty() ? std::string("(main)")
                                                       : human_bytes(j["store_bytes"].get<std::uint64_t>()))
              << std::setw(12) << j["index_documents"].get<std::uint64_t>() << std::setw(12)
              << human_bytes(j["index_bytes"].get<std::uint64_t>())
              << (j["live"].get<bool>() ? "live" : j["sealed"].get<bool>() ? "sealed" : "closed");
    for (const auto& r : j["remote"]) std::cout << " " << r.get<std::string>();
    if (const auto older = j["older_reading"].get<std::uint64_t>())
      std::cout << " (" << older << " documents of an older reading)";
    if (const auto gaps = j["index_gaps"].get<std::uint64_t>())
      std::cout << " (" << gaps << " ids missing from its index: the next retention pass writes it whole)";
    std::cout << "\n";
  }
  return kExitOk;
}

int run_policy(const GlobalOptions& g, const SegmentsArgs& args) {
  // The policy is a value in the archive's meta table: LMDB serialises it with a running server's
  // appends, which read it at every batch.
  auto engine = open_engine(g, /*read_only=*/false, /*catch_up=*/false, /*writer=*/"");
  if (!engine) return report(engine.error());
  SegmentPolicy policy = (*engine)->archive().segment_policy();
  const nlohmann::json before = {{"period", period_name(policy.period)}, {"max_records", policy.max_records}};
  if (!args.period.empty()) {
    auto p = parse_segment_period(args.period);
    if (!p) return report(make_error(ErrorCode::kInvalidArgument, "unknown period " + args.period,
                                     "one of month, quarter, year, none"));
    policy.period = *p;
  }
  if (args.max_records >= 0) policy.max_records = static_cast<std::uint64_t>(args.max_records);
  if (auto s = (*engine)->archive().set_segment_policy(policy); !s) return report(s.error());
  nlohmann::json out = {{"period", period_name(policy.period)}, {"max_records", policy.max_records}};
  // A configuration change (segments are what retention expires): in the audit log.
  if (Status a = audit(g, "segments.policy", "policy",
                       json_text(nlohmann::json{{"before", before}, {"after", out}}));
      !a)
    return report(a.error());
  std::cout << (args.json ? json_text(out) : "segment policy: " + json_text(out)) << "\n";
  return kExitOk;
}

int run_seal(const GlobalOptions& g, const SegmentsArgs& args) {
  // The index writer lock and the data folder's: not beside a running server or import.
  auto engine = open_engine(g, /*read_only=*/false, /*catch_up=*/true, /*writer=*/"segments seal");
  if (!engine) return report(engine.error());
  if (auto s = (*engine)->compact_index(); !s) return report(s.error());
  std::uint64_t sealed = 0;
  if (auto is = indexer::index_segments((*engine)->index_dir()))
    for (const auto& s : *is) sealed += s.sealed ? 1 : 0;
  nlohmann::json out = {{"sealed", sealed}};
  std::cout << (args.json ? json_text(out) : std::to_string(sealed) + " sealed segments") << "\n";
  return kExitOk;
}

int run_move(const GlobalOptions& g, const SegmentsArgs& args) {
  // The data folder's lock: not beside a running server or import (a server's retention pass moves
  // what it is about to expire itself).
  auto engine = open_engine(g, /*read_only=*/false, /*catch_up=*/false, /*writer=*/"segments move");
  if (!engine) return report(engine.error());
  auto moved = (*engine)->archive().move_segments_to_stores(args.first, [&](const SegmentMove& m) {
    if (!args.json)
      std::cout << "segment " << m.first << "-" << m.last << ": " << m.records << " records and " << m.packs
                << " packs moved to " << (*engine)->archive().store_path(m.first) << " (" << human_bytes(m.store_bytes)
                << ")" << std::endl;
  });
  if (!moved) return report(moved.error());
  nlohmann::json list = nlohmann::json::array();
  for (const auto& m : *moved)
    list.push_back({{"first", m.first},
                    {"last", m.last},
                    {"records", m.records},
                    {"packs", m.packs},
                    {"first_pack", m.first_pack},
                    {"store", (*engine)->archive().store_path(m.first)},
                    {"store_bytes", m.store_bytes}});
  // The pages the moved records and packs took in the main environment go back to the file system
  // (once this process has closed it, and when no other has it open).
  const std::string dir = (*engine)->archive_dir();
  engine->reset();
  auto c = Archive::compact_main_environment(dir, 0);
  if (!c) return report(c.error());
  nlohmann::json main = {{"bytes_before", c->file_bytes}, {"free_bytes", c->free_bytes},
                         {"compacted", c->after_bytes != 0}, {"bytes_after", c->after_bytes}, {"busy", c->busy}};
  if (args.json) {
    std::cout << json_text(nlohmann::json{{"moved", list}, {"main_environment", main}}) << "\n";
    return kExitOk;
  }
  if (moved->empty()) std::cout << "every closed segment has a store of its own\n";
  if (c->after_bytes)
    std::cout << "main environment compacted: " << human_bytes(c->file_bytes) << " -> " << human_bytes(c->after_bytes) << "\n";
  else if (c->busy)
    std::cout << "main environment not compacted: another process has the data folder open (the next start of "
                 "`mailark serve` or `import` does it)\n";
  return kExitOk;
}

int run_remote(const GlobalOptions& g, const SegmentsArgs& args) {
  // Only the segment's stub changes (one small file, replaced atomically); a running server's
  // readers see it at their next open.
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  if (auto s = indexer::set_segment_remote((*engine)->index_dir(), args.first, args.endpoints); !s)
    return report(s.error());
  nlohmann::json out = {{"first", args.first}, {"remote", args.endpoints}};
  std::cout << (args.json ? json_text(out)
                          : "segment " + std::to_string(args.first) +
                                (args.endpoints.empty() ? " is searched locally" : " is searched remotely"))
            << "\n";
  return kExitOk;
}

}  // namespace

void register_segments(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<SegmentsArgs>();
  auto* cmd = app.add_subcommand("segments", "the archive's time segments, with their figures");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([&g, &run, args, cmd] {
    if (cmd->get_subcommands().empty()) run = [&g, args] { return run_list(g, *args); };
  });
  auto* policy = cmd->add_subcommand("policy", "set how new segments are cut (stored in the archive)");
  policy->add_option("--period", args->period, "a new segment for every month, quarter, year, or none");
  policy->add_option("--max-records", args->max_records, "and whenever the live one holds this many (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  policy->add_flag("--json", args->json, "print one JSON object");
  policy->callback([&g, &run, args] { run = [&g, args] { return run_policy(g, *args); }; });
  auto* seal = cmd->add_subcommand("seal", "compact the index and seal every closed segment (not beside a server)");
  seal->add_flag("--json", args->json, "print one JSON object");
  seal->callback([&g, &run, args] { run = [&g, args] { return run_seal(g, *args); }; });
  auto* move = cmd->add_subcommand(
      "move", "move the segments an older release kept in the main environment into stores of their own "
              "(what retention expires; not beside a server)");
  move->add_option("first", args->first, "only down to the segment beginning at this message id (default: all)");
  move->add_flag("--json", args->json, "print one JSON object");
  move->callback([&g, &run, args] { run = [&g, args] { return run_move(g, *args); }; });
  auto* remote = cmd->add_subcommand(
      "remote", "search a sealed segment through xapian-tcpsrv (one HOST:PORT per shard, in its stub's order)");
  remote->add_option("first", args->first, "the segment's first message id")->required();
  remote->add_option("endpoints", args->endpoints, "HOST:PORT of each shard")->required();
  remote->add_flag("--json", args->json, "print one JSON object");
  remote->callback([&g, &run, args] { run = [&g, args] { return run_remote(g, *args); }; });
  auto* local = cmd->add_subcommand("local", "search a remote segment from its local shards again");
  local->add_option("first", args->first, "the segment's first message id")->required();
  local->add_flag("--json", args->json, "print one JSON object");
  local->callback([&g, &run, args] {
    args->endpoints.clear();
    run = [&g, args] { return run_remote(g, *args); };
  });
}

}  // namespace mailark::cli
