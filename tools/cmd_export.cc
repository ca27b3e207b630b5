// mailark export QUERY --out FILE.zip [--format eml|mbox] [--case NAME]: every message the query
// finds (counted exactly), with a manifest, inclusion proofs and a signed checkpoint
// (engine/export.h). mailark verify-export FILE [--key VKEY]: checks one without the archive.
// Both live in mailark-server (libarchive and its libraries stay out of the `mailark` binary's
// start-up); `mailark export` hands over to it (tools/cmd_serve_exec.cc).
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/json_text.h"
#include "engine/checkpoint.h"
#include "engine/export.h"
#include "engine/index_fields.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct ExportArgs {
  std::string query;
  std::string out;
  std::string format = "eml";
  std::string case_name;
  std::string key;
  std::string file;
  bool json = false;
};

int run_export(const GlobalOptions& g, const ExportArgs& args) {
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  auto key = archive_signing_key(g.data_dir, /*create=*/true);
  if (!key) return report(key.error());
  ExportRequest req;
  req.container = args.format == "mbox" ? ExportContainer::kMbox : ExportContainer::kEml;
  req.path = args.out;
  req.query = args.query;
  req.case_name = args.case_name;
  req.created_by = os_account();
  // Every match (phrases checked to the end), one bit a record: memory flat in the export's size.
  auto reader = (*engine)->open_reader();
  if (!reader) return report(reader.error());
  ArchiveFieldSource phrases((*engine)->archive(), (*engine)->options().limits);
  auto ids = export_matches(**reader, args.query, (*engine)->archive().counters().has_copies(), &phrases);
  if (!ids) return report(ids.error());
  req.ids = std::move(*ids);
  req.message_ids = [&](const std::vector<std::uint64_t>& batch) { return (*reader)->message_ids(batch); };
  Progress progress("exporting");
  req.progress = [&](std::uint64_t d, std::uint64_t t) { progress.update(d, t); };
  auto rep = write_export((*engine)->archive(), *key, req);
  progress.finish();
  if (!rep) return report(rep.error());
  auto exceptions = search_exceptions(**reader);
  if (!exceptions) return report(exceptions.error());
  rep->exceptions = *exceptions;
  // The export is in the audit log; an export whose entry cannot be written is removed (fail closed:
  // tests/e2e/test_cases.py test_a_search_whose_audit_entry_cannot_be_written_shows_nothing).
  if (Status a = audit(g, "export", args.query,
                       json_text(nlohmann::json{{"case", args.case_name},
                                                {"file", args.out},
                                                {"messages", rep->messages},
                                                {"manifest_sha256", rep->manifest_sha256},
                                                {"unsearchable", rep->exceptions.unsearchable},
                                                {"older_reading", rep->exceptions.older_reading}}));
      !a) {
    std::remove(args.out.c_str());
    return report(a.error());
  }
  if (args.json) {
    std::cout << json_text(nlohmann::json{{"file", args.out},
                                          {"messages", rep->messages},
                                          {"bytes", rep->bytes},
                                          {"tree_size", rep->checkpoint.size},
                                          {"origin", rep->checkpoint.origin},
                                          {"manifest_sha256", rep->manifest_sha256},
                                          {"unsearchable", rep->exceptions.unsearchable},
                                          {"older_reading", rep->exceptions.older_reading}})
              << "\n";
  } else {
    std::cout << "exported " << rep->messages << " messages (" << human_bytes(rep->bytes) << ") to " << args.out
              << "\nproved against a checkpoint of " << rep->checkpoint.size << " records of "
              << rep->checkpoint.origin << "\nmanifest sha256 " << rep->manifest_sha256
              << "\ncheck it with `mailark verify-export " << args.out << " --key \"$(mailark checkpoint key)\"`\n";
  }
  if (rep->exceptions.any()) std::cerr << "note: " << rep->exceptions.text();
  return kExitOk;
}

int run_verify_export(const ExportArgs& args) {
  std::string key;  // empty: verify_export takes the one the export names, and says so
  if (!args.key.empty()) {
    auto verifier = verifier_key_arg(args.key);
    if (!verifier) return report(verifier.error());
    key = verifier->text();
  }
  Progress progress("verifying");
  auto rep = verify_export(args.file, key, [&](std::uint64_t d, std::uint64_t t) { progress.update(d, t); });
  progress.finish();
  if (!rep) return report(rep.error());
  if (args.json) {
    std::cout << json_text(nlohmann::json{{"ok", rep->ok},
                                          {"problem", rep->problem},
                                          {"messages", rep->messages},
                                          {"bytes", rep->bytes},
                                          {"origin", rep->origin},
                                          {"tree_size", rep->checkpoint.size},
                                          {"query", rep->query},
                                          {"case", rep->case_name},
                                          {"created_at", rep->created_at},
                                          {"key_from_export", rep->key_from_export},
                                          {"load_file", rep->load_file}})
              << "\n";
  } else if (rep->ok) {
    std::cout << "export intact: " << rep->messages << " messages (" << human_bytes(rep->bytes)
              << "), each in the signed tree of " << rep->checkpoint.size << " records of " << rep->origin << "\n";
    if (rep->load_file) std::cout << "load file (loadfile.csv): a row for each, as the manifest says\n";
    if (rep->key_from_export)
      std::cout << "checked with the key the export names: pass --key with the archive's verifier key (`mailark "
                   "checkpoint key`, kept apart) to know it is the archive's\n";
  } else {
    std::cout << "EXPORT DOES NOT CHECK: " << rep->problem << "\n";
  }
  return rep->ok ? kExitOk : kExitFailure;
}

}  // namespace

void register_export(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "export what a query finds, with a manifest and proofs anyone can check");
  cmd->add_option("query", args->query, "the search (docs: query syntax); \"\" for every message")->required();
  cmd->add_option("--out", args->out, "the zip to write")->required();
  cmd->add_option("--format", args->format, "eml (a file per message) or mbox (one mboxrd file)")
      ->check(CLI::IsMember({"eml", "mbox"}));
  cmd->add_option("--case", args->case_name, "the eDiscovery case it is for (recorded in the manifest)");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_export(g, *args); }; });
  auto* ver = app.add_subcommand("verify-export", "check an export without the archive");
  ver->add_option("file", args->file, "the export (zip)")->required();
  ver->add_option("--key", args->key, "the archive's verifier key (`mailark checkpoint key`), or a file holding it");
  ver->add_flag("--json", args->json, "print one JSON object");
  ver->callback([&run, args] { run = [args] { return run_verify_export(*args); }; });
}

}  // namespace mailark::cli
