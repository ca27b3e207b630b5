// mailark checkpoint: signed checkpoints of the archive's Merkle tree and the proofs that go with
// them (engine/checkpoint.h, common/merkle.h):
//   mailark checkpoint [--out FILE]          a signed checkpoint of the archive as it is now
//   mailark checkpoint key                   the verifier key (the public half of DATA/checkpoint.key)
//   mailark checkpoint prove ID [--size N]   record ID's inclusion proof in the tree of N records
//   mailark checkpoint consistency OLD [--size N]  proof that the tree of N records extends the one of OLD
// Proofs are JSON with hex hashes; the record's stored value is given (base64) so that a verifier can
// hash the leaf itself (tests/e2e/test_checkpoint.py checks them in Python, without mailark).
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "common/dates.h"
#include "common/file_util.h"
#include "engine/checkpoint.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct CheckpointArgs {
  std::string out;
  std::uint64_t id = 0;
  std::uint64_t old_size = 0;
  std::uint64_t size = 0;  // 0: the whole tree
};

nlohmann::json hexes(const std::vector<Digest>& ds) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& d : ds) a.push_back(to_hex(d));
  return a;
}

// The archive read-only, with its tree (an older archive has none until a writing command runs).
Result<std::unique_ptr<Engine>> open_with_tree(const GlobalOptions& g) {
  MAILARK_ASSIGN_OR_RETURN(auto engine, open_engine(g, /*read_only=*/true, /*catch_up=*/false));
  if (engine->archive().format() < 6)
    return make_error(ErrorCode::kUnsupported,
                      "this archive (format " + std::to_string(engine->archive().format()) + ") has no Merkle tree yet",
                      "any writing command (`mailark import`, `serve`) migrates it and builds the tree");
  return engine;
}

Result<std::uint64_t> tree_size_for(const ArchiveSnapshot& s, std::uint64_t wanted) {
  const std::uint64_t size = s.tree_size();
  if (wanted == 0) return size;
  if (wanted > size)
    return make_error(ErrorCode::kInvalidArgument, "the tree has " + std::to_string(size) + " records, not " +
                                                       std::to_string(wanted));
  return wanted;
}

int run_sign(const GlobalOptions& g, const CheckpointArgs& args) {
  auto engine = open_with_tree(g);
  if (!engine) return report(engine.error());
  auto key = archive_signing_key(g.data_dir, /*create=*/true);
  if (!key) return report(key.error());
  auto snap = (*engine)->archive().snapshot();
  if (!snap) return report(snap.error());
  auto cp = sign_checkpoint(**snap, *key, unix_now());
  if (!cp) return report(cp.error());
  if (args.out.empty()) {
    std::cout << cp->note;
    return kExitOk;
  }
  if (auto written = write_file_atomically(args.out, cp->note); !written) return report(written.error());
  std::cerr << "checkpoint of " << cp->checkpoint.size << " records written to " << args.out << "\n";
  return kExitOk;
}

int run_key(const GlobalOptions& g) {
  auto engine = open_with_tree(g);
  if (!engine) return report(engine.error());
  auto key = archive_signing_key(g.data_dir, /*create=*/true);
  if (!key) return report(key.error());
  std::cout << archive_verifier((*engine)->archive().archive_id(), *key).text() << "\n";
  return kExitOk;
}

Result<nlohmann::json> prove_json(const ArchiveSnapshot& s, const CheckpointArgs& args) {
  MAILARK_ASSIGN_OR_RETURN(std::uint64_t size, tree_size_for(s, args.size));
  if (args.id == 0 || args.id > size)
    return make_error(ErrorCode::kNotFound, "no record " + std::to_string(args.id) + " in a tree of " + std::to_string(size));
  MAILARK_ASSIGN_OR_RETURN(std::string value, s.record_value(args.id));
  MAILARK_ASSIGN_OR_RETURN(std::vector<Digest> proof, merkle::inclusion_proof(args.id - 1, size, s.tree_nodes()));
  MAILARK_ASSIGN_OR_RETURN(Digest root, merkle::root(size, s.tree_nodes()));
  return nlohmann::json{{"origin", checkpoint_origin(s.archive_id())},
                        {"id", args.id},
                        {"leaf_index", args.id - 1},
                        {"tree_size", size},
                        {"record", base64_encode(value)},
                        {"leaf_hash", to_hex(merkle::leaf_hash(value))},
                        {"proof", hexes(proof)},
                        {"root", to_hex(root)}};
}

Result<nlohmann::json> consistency_json(const ArchiveSnapshot& s, const CheckpointArgs& args) {
  MAILARK_ASSIGN_OR_RETURN(std::uint64_t size, tree_size_for(s, args.size));
  MAILARK_ASSIGN_OR_RETURN(std::vector<Digest> proof, merkle::consistency_proof(args.old_size, size, s.tree_nodes()));
  MAILARK_ASSIGN_OR_RETURN(Digest old_root, merkle::root(args.old_size, s.tree_nodes()));
  MAILARK_ASSIGN_OR_RETURN(Digest new_root, merkle::root(size, s.tree_nodes()));
  return nlohmann::json{{"origin", checkpoint_origin(s.archive_id())},
                        {"old_size", args.old_size},
                        {"old_root", to_hex(old_root)},
                        {"new_size", size},
                        {"new_root", to_hex(new_root)},
                        {"proof", hexes(proof)}};
}

// Runs one of the proofs above on a snapshot of the archive and prints its JSON.
int run_proof(const GlobalOptions& g, const CheckpointArgs& args,
              Result<nlohmann::json> (*make)(const ArchiveSnapshot&, const CheckpointArgs&)) {
  auto engine = open_with_tree(g);
  if (!engine) return report(engine.error());
  auto snap = (*engine)->archive().snapshot();
  if (!snap) return report(snap.error());
  auto j = make(**snap, args);
  if (!j) return report(j.error());
  std::cout << j->dump() << "\n";
  return kExitOk;
}

}  // namespace

void register_checkpoint(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<CheckpointArgs>();
  auto* cmd = app.add_subcommand("checkpoint", "sign a checkpoint of the archive's Merkle tree; proofs against it");
  cmd->add_option("--out", args->out, "write the signed checkpoint to this file (default: standard output)");
  cmd->callback([&g, &run, args, cmd] {
    if (cmd->get_subcommands().empty()) run = [&g, args] { return run_sign(g, *args); };
  });
  auto* key = cmd->add_subcommand("key", "print the verifier key of the archive's checkpoints");
  key->callback([&g, &run] { run = [&g] { return run_key(g); }; });
  auto* prove = cmd->add_subcommand("prove", "a record's inclusion proof (JSON)");
  prove->add_option("id", args->id, "the record's id")->required();
  prove->add_option("--size", args->size, "the tree size (a checkpoint's); default: the whole tree");
  prove->callback([&g, &run, args] { run = [&g, args] { return run_proof(g, *args, prove_json); }; });
  auto* cons = cmd->add_subcommand("consistency", "proof that the tree extends an earlier one unchanged (JSON)");
  cons->add_option("old_size", args->old_size, "the earlier tree's size (an older checkpoint's)")->required();
  cons->add_option("--size", args->size, "the later tree's size; default: the whole tree");
  cons->callback([&g, &run, args] { run = [&g, args] { return run_proof(g, *args, consistency_json); }; });
}

}  // namespace mailark::cli
