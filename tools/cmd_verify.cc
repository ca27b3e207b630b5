// mailark verify: walk the hash chain and check every stored message.
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/json_text.h"
#include "engine/checkpoint.h"
#include "engine/verify.h"
#include "indexer/index.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct VerifyArgs {
  bool json = false;
  std::vector<std::string> checkpoints;  // files of signed checkpoints kept outside the archive
  std::string key;                       // a verifier key, or a file holding one; default: the archive's own
  bool index = false;                    // also Xapian's check of every local shard
};

// The checkpoints, each opened (signature, origin) with the key given or the archive's own.
Result<std::vector<Checkpoint>> open_checkpoints(const GlobalOptions& g, const Archive& archive, const VerifyArgs& args) {
  std::vector<Checkpoint> out;
  if (args.checkpoints.empty()) return out;
  const std::string id = archive.archive_id();
  if (id.empty())
    return make_error(ErrorCode::kUnsupported, "this archive has no Merkle tree yet (an older format)",
                      "any writing command (`mailark import`, `serve`) builds it");
  // Each checkpoint read first: one of another archive is named as such, whatever the key.
  std::vector<ReadCheckpoint> read;
  auto named = [](const std::string& path, const Error& e) { return make_error(e.code, path + ": " + e.context, e.hint); };
  for (const auto& path : args.checkpoints) {
    MAILARK_ASSIGN_OR_RETURN(std::string note, read_file_head(path, kMaxNoteBytes));
    auto r = read_checkpoint(note, id);
    if (!r) return named(path, r.error());
    read.push_back(std::move(*r));
  }
  NoteVerifier verifier;
  if (!args.key.empty()) {
    MAILARK_ASSIGN_OR_RETURN(verifier, verifier_key_arg(args.key));
  } else {
    MAILARK_ASSIGN_OR_RETURN(SigningKey key, archive_signing_key(g.data_dir, /*create=*/false));
    verifier = archive_verifier(id, key);
  }
  for (std::size_t i = 0; i < read.size(); ++i) {
    if (auto s = check_signature(read[i], verifier); !s) return named(args.checkpoints[i], s.error());
    out.push_back(read[i].checkpoint);
  }
  return out;
}

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

// The index's own check (--index): damage there is not archive damage (the index is derived, and
// `mailark reindex` rebuilds it from the archive), but a search over a damaged shard fails, misses
// mail or crashes the reader, so it fails the command. Test: tests/e2e/test_cli.py test_verify_index_names_a_damaged_shard.
struct IndexCheckReport {
  std::vector<indexer::ShardCheck> shards;
  std::uint64_t damaged = 0, gaps = 0, bytes = 0;
};
Result<IndexCheckReport> check_the_index(const std::string& index_dir) {
  Progress progress("checking the index");
  MAILARK_ASSIGN_OR_RETURN(auto shards, indexer::check_index(index_dir));
  progress.finish();
  IndexCheckReport r;
  for (const auto& c : shards) {
    r.damaged += c.errors != 0 && c.settled;
    r.gaps += c.gaps;
    r.bytes += c.bytes;
  }
  r.shards = std::move(shards);
  return r;
}

void print_index_check(const IndexCheckReport& r) {
  for (const auto& c : r.shards) {
    if (c.errors && c.settled)
      std::cout << "INDEX DAMAGED: " << c.shard << " (segment " << c.segment << "): " << c.problem << "\n";
    else if (c.errors)
      std::cout << "index " << c.shard << " (segment " << c.segment
                << "): not checked, written to during each of three checks (run again when the server is quieter)\n";
    if (c.gaps)
      std::cout << "index " << c.shard << " (segment " << c.segment << "): " << c.gaps
                << " ids missing (an earlier release's retention); the next `mailark retention run` writes it whole\n";
  }
  std::cout << "index checked: " << r.shards.size() << " shard" << (r.shards.size() == 1 ? "" : "s") << ", "
            << r.bytes << " bytes, " << (r.damaged ? std::to_string(r.damaged) + " damaged" : std::string("intact"))
            << "\n";
  if (r.damaged)
    std::cout << "the archive is the truth: `mailark reindex` (with the server stopped) rebuilds the index from it\n";
}

// What verify says of the index: its watermark and unindexed records (not read when a shard is
// damaged), then the check's findings when --index asked for it.
void print_index_status(std::uint64_t watermark, std::uint64_t lag,
                        const Result<std::pair<std::uint64_t, std::vector<std::pair<std::uint64_t, std::string>>>>& unindexed,
                        const std::optional<IndexCheckReport>& check) {
  if (check && check->damaged)
    std::cout << "index: not read (a shard is damaged, below)\n";
  else
    print_index_status(watermark, lag, unindexed);
  if (check) print_index_check(*check);
}

int run_verify(const GlobalOptions& g, const VerifyArgs& args) {
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  // The index's check comes before anything reads the index: Xapian trusts its blocks, and reading a
  // damaged one may crash the reader (a segmentation fault under ASan in the test named above).
  std::optional<IndexCheckReport> index_check;
  if (args.index) {
    auto r = check_the_index((*engine)->index_dir());
    if (!r) return report(r.error());
    index_check = std::move(*r);
  }
  const bool index_damaged = index_check && index_check->damaged > 0;
  VerifyOptions options;
  if (auto cps = open_checkpoints(g, (*engine)->archive(), args); !cps) {
    return report(cps.error());
  } else {
    options.checkpoints = std::move(*cps);
  }
  // Tombstones (retention) are checked against the key given, or the archive's own.
  if (!args.key.empty()) {
    auto v = verifier_key_arg(args.key);
    if (!v) return report(v.error());
    options.tombstone_key = v->key;
  } else if (auto key = archive_signing_key(g.data_dir, /*create=*/false)) {
    options.tombstone_key = key->public_key();
  }
  Progress progress("verifying");
  auto rep = verify_archive(
      (*engine)->archive(), [&](std::uint64_t d, std::uint64_t t) { progress.update(d, t); }, options);
  progress.finish();
  if (!rep) return report(rep.error());
  // The index is derived: it may lag (the server catches it up) and it lists records it could not
  // index. Neither is archive damage, but both are shown, never hidden. A damaged index is not read.
  const std::uint64_t watermark = index_damaged ? 0 : (*engine)->index_watermark();
  const std::uint64_t lag = rep->head.seq > watermark ? rep->head.seq - watermark : 0;
  using Unindexed = decltype((*engine)->unindexed(100));
  const Unindexed unindexed =
      index_damaged ? Unindexed(make_error(ErrorCode::kCorrupt, "the index is damaged")) : (*engine)->unindexed(100);
  if (args.json) {
    nlohmann::json j = {{"intact", rep->intact},
                        {"records_checked", rep->records_checked},
                        {"records_expired", rep->records_expired},
                        {"tombstones", rep->tombstones},
                        {"messages_checked", rep->messages_checked},
                        {"head_seq", rep->head.seq},
                        {"head_hash", to_hex(rep->head.hash)},
                        {"index_watermark", watermark},
                        {"index_lag", lag}};
    if (index_damaged) j["index_watermark"] = j["index_lag"] = nullptr;  // not read: a shard is damaged
    nlohmann::json list = nlohmann::json::array();
    if (unindexed) {
      for (const auto& [id, why] : unindexed->second) list.push_back({{"id", id}, {"reason", why}});
      j["unindexed_total"] = unindexed->first;
    }
    j["unindexed"] = list;
    j["tree_root"] = to_hex(rep->tree_root);
    j["tree_stored"] = rep->tree_stored;
    nlohmann::json cps = nlohmann::json::array();
    for (std::size_t i = 0; i < rep->checkpoints.size(); ++i) {
      const auto& c = rep->checkpoints[i];
      cps.push_back({{"file", args.checkpoints[i]},
                     {"size", c.checkpoint.size},
                     {"time", c.checkpoint.time},
                     {"holds", c.holds},
                     {"problem", c.problem}});
    }
    j["checkpoints"] = cps;
    if (index_check) {
      nlohmann::json shards = nlohmann::json::array();
      for (const auto& c : index_check->shards)
        shards.push_back({{"shard", c.shard},
                          {"segment", c.segment},
                          {"small_tier", c.small_tier},
                          {"bytes", c.bytes},
                          {"intact", c.errors == 0},
                          {"settled", c.settled},
                          {"errors", c.errors},
                          {"problem", c.problem},
                          {"gaps", c.gaps}});
      j["index_check"] = {{"shards", shards}, {"damaged", index_check->damaged}, {"intact", !index_damaged}};
    }
    if (!rep->intact) {
      j["first_bad_record"] = rep->first_bad;
      j["problem"] = rep->problem;
    }
    std::cout << json_text(j) << "\n";
  } else if (rep->intact) {
    print_index_status(watermark, lag, unindexed, index_check);
    for (std::size_t i = 0; i < rep->checkpoints.size(); ++i)
      std::cout << "checkpoint " << args.checkpoints[i] << ": holds (" << rep->checkpoints[i].checkpoint.size
                << " records, signed " << iso8601(rep->checkpoints[i].checkpoint.time) << ")\n";
    std::cout << "archive intact: " << rep->records_checked << " records, " << rep->messages_checked
              << " stored messages checked\n";
    if (rep->tombstones)
      std::cout << "expired by retention: " << rep->records_expired << " records under " << rep->tombstones
                << " signed tombstone" << (rep->tombstones == 1 ? "" : "s") << " (chain and Merkle tree proved across them)\n";
    std::cout << "chain head: record " << rep->head.seq << " "
              << to_hex(rep->head.hash) << "\n";
  } else {
    print_index_status(watermark, lag, unindexed, index_check);
    for (std::size_t i = 0; i < rep->checkpoints.size(); ++i) {
      const auto& c = rep->checkpoints[i];
      std::cout << "checkpoint " << args.checkpoints[i] << ": " << (c.holds ? "holds" : "FAILS: " + c.problem) << "\n";
    }
    if (rep->first_bad) {
      std::cout << "ARCHIVE DAMAGED at record " << rep->first_bad << ": " << rep->problem << "\n"
                << "(" << rep->records_checked << " records before it are intact)\n";
    } else {
      std::cout << "ARCHIVE DAMAGED: " << rep->problem << "\n";
    }
  }
  return rep->intact && !index_damaged ? kExitOk : kExitFailure;
}

}  // namespace

void register_verify(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<VerifyArgs>();
  auto* cmd = app.add_subcommand("verify", "check the archive's hash chain and every stored message");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->add_option("--checkpoint", args->checkpoints,
                  "a signed checkpoint kept outside the archive (`mailark checkpoint`); repeatable");
  cmd->add_option("--key", args->key,
                  "the verifier key the checkpoints must be signed with, or a file holding it (`mailark checkpoint "
                  "key`); default: the archive's own key");
  cmd->add_flag("--index", args->index,
                "also check every local shard of the index with Xapian's own check (reads the whole index; a "
                "damaged shard fails the command)");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_verify(g, *args); }; });
}

}  // namespace mailark::cli
