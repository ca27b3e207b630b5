// mailark import PATH...: Maildir folders, mbox files, Outlook PST files, single messages, directories
// (recursive). `mailark pst-read` is the child process that reads a PST for it (engine/pst.h).
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/json_text.h"
#include "engine/ingest.h"
#include "engine/mailbox.h"
#include "engine/pst.h"
#include "engine/users.h"
#include "engine/sources.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct ImportArgs {
  std::vector<std::string> paths;
  bool json = false;
  bool no_scan = false;
  std::string owner;      // --owner: the user whose mailbox this is
  std::string custodian;  // --custodian: whose mail this is, for eDiscovery (default: the owner)
  bool custodian_per_folder = false;  // --custodian-per-folder: each folder inside a PATH is one
  std::optional<std::uint64_t> disk_reserve;  // --disk-reserve: free bytes left (default: a message + 64 MiB)
  std::string config;  // --config: a server's configuration file, whose [limits] the import takes
};

// --custodian-per-folder: the custodian of a file below one of `roots` is the name of the folder
// directly inside that root, and the record's folder is the path between it and the file (a
// Maildir's cur/new dropped): enron/maildir/allen-p/inbox/1. -> "allen-p", "inbox".
std::pair<std::string, std::string> custodian_from_path(const std::vector<std::string>& roots, const std::string& file) {
  namespace fs = std::filesystem;
  for (const auto& root : roots) {
    const fs::path rel = fs::path(file).lexically_relative(root);
    if (rel.empty() || *rel.begin() == ".." || *rel.begin() == ".") continue;
    auto it = rel.begin();
    const std::string who = it->string();
    if (std::next(it) == rel.end()) return {};  // a file directly inside the root: nobody's folder
    fs::path folder;
    for (++it; std::next(it) != rel.end(); ++it) folder /= *it;
    if (folder.filename() == "cur" || folder.filename() == "new") folder = folder.parent_path();
    return {who, folder.generic_string()};
  }
  return {};
}


struct Summary {
  std::uint64_t messages = 0, imported = 0, duplicates = 0, infected = 0, unscannable = 0, unscanned = 0, malformed = 0,
                errors = 0, skipped = 0, failed = 0;
  nlohmann::json error_files = nlohmann::json::array();
  std::map<std::string, std::uint64_t> skipped_kinds;  // what was skipped ("mail store metadata", "a contact, not mail")
};

std::uint64_t count_files(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::uint64_t n = 0;
  std::error_code ec;
  for (const auto& p : paths) {
    if (!fs::is_directory(p, ec)) {
      ++n;
      continue;
    }
    for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      if (it->is_regular_file(ec)) ++n;
    }
  }
  return n;
}

int run_import(const GlobalOptions& g, const ImportArgs& args) {
  std::string owner;
  if (!args.owner.empty()) {
    auto o = normalize_address(args.owner);
    if (!o) return report(o.error());
    owner = *o;
  }
  std::string custodian = owner;
  if (args.custodian_per_folder && !args.custodian.empty())
    return report(make_error(ErrorCode::kInvalidArgument, "--custodian and --custodian-per-folder exclude each other"));
  std::vector<std::string> roots;  // --custodian-per-folder: the directories given
  if (args.custodian_per_folder) {
    std::error_code ec;
    for (const auto& p : args.paths)
      if (std::filesystem::is_directory(p, ec)) roots.push_back(p);
    if (roots.empty())
      return report(make_error(ErrorCode::kInvalidArgument, "--custodian-per-folder needs a directory of mailboxes",
                               "give the folder that holds one folder per custodian"));
  }
  if (!args.custodian.empty()) {
    auto c = check_custodian(args.custodian);
    if (!c) return report(Error{c.error().code, "--custodian: " + c.error().context, c.error().hint});
    custodian = *c;
  }
  EngineOptions options;
  options.writer = "import";
  // With --config, the limits a server with that file works by (its message size, scan limits and disk
  // reserve) and its scanner's temporary folder; else the defaults.
  std::optional<std::uint64_t> config_reserve;
  if (!args.config.empty()) {
    auto settings = intake_settings(args.config);
    if (!settings) return report(settings.error());
    options.limits = settings->limits;
    options.scanner_temp_dir = settings->scanner_temp_dir;
    config_reserve = settings->limits.disk_reserve_bytes;
  }
  auto engine = open_engine(g, std::move(options));
  if (!engine) return report(engine.error());
  Engine& e = **engine;
  const scanner::Scanner* scanner = nullptr;
  double signature_load_seconds = 0;  // before any other thread starts (cmd_serve.cc says why)
  if (!args.no_scan) {
    const auto t0 = std::chrono::steady_clock::now();
    auto s = e.scanner();
    if (!s) return report(s.error());
    scanner = *s;
    signature_load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  auto writer = e.index_writer();
  if (!writer) return report(writer.error());

  Summary sum;
  std::mutex mu;
  // An import stops, rather than fail every message after it, when the archive's disk is short: before
  // it would leave less than the reserve free (the server's room to record what it takes in: --disk-reserve,
  // else the configuration's limits.disk_reserve_bytes with --config, else a message of the largest size
  // and 64 MiB), or at the first commit the archive
  // refused (a full disk, an I/O error). Running the same import again later goes on where it stopped:
  // what is archived already counts as duplicates (tests/e2e/test_failures.py
  // test_an_import_stops_when_its_disk_is_short_and_goes_on_when_run_again).
  const std::uint64_t reserve = args.disk_reserve.value_or(
      config_reserve.value_or(e.options().limits.max_message_bytes + (std::uint64_t{64} << 20)));
  const std::string reserve_source =
      args.disk_reserve || !config_reserve ? "--disk-reserve" : "limits.disk_reserve_bytes of " + args.config;
  const std::vector<std::string> disk_dirs = {e.archive_dir(), g.data_dir};
  std::atomic<bool> stopping{false};
  std::string stopped_why;  // under mu
  // Bytes of messages read and not yet committed (the pipeline runs ahead of the disk); under mu. Each
  // message's own result gives its bytes back (IngestItem::on_done). The archive keeps them
  // compressed: their raw size is an upper bound.
  std::uint64_t in_flight_bytes = 0;
  Progress progress("importing");
  const std::uint64_t total_files = count_files(args.paths);
  std::uint64_t processed = 0;

  auto on_result = [&](const IngestResult& r) {
    std::lock_guard lock(mu);
    ++processed;
    switch (r.outcome) {
      case IngestOutcome::kArchived:
        sum.imported++;
        if (r.verdict == scanner::VerdictKind::kInfected) sum.infected++;
        if (r.verdict == scanner::VerdictKind::kUnscannable) sum.unscannable++;
        if (r.verdict == scanner::VerdictKind::kUnscanned) sum.unscanned++;
        if (r.malformed) sum.malformed++;
        break;
      case IngestOutcome::kDuplicate:
        sum.duplicates++;
        break;
      case IngestOutcome::kRefused:
        sum.errors++;
        sum.error_files.push_back({{"path", r.origin}, {"reason", r.reason}});
        break;
      case IngestOutcome::kFailed:
      case IngestOutcome::kDeferred:  // imports never defer; counted as failed if one ever did
        if (r.store_failed && !stopping.exchange(true))
          stopped_why = "the archive could not record a batch (" + r.reason + ")";
        sum.failed++;
        sum.errors++;
        sum.error_files.push_back({{"path", r.origin}, {"reason", r.reason}});
        break;
    }
    progress.update(processed, std::max(total_files, processed));
  };

  Status fatal;
  {
    Ingest ingest(e.archive(), **writer, scanner, e.options().limits, IngestOptions{}, on_result);
    SourceCallbacks cb;
    cb.stop = [&] {
      if (stopping) return true;
      if (reserve == 0) return false;
      std::string where;
      const std::optional<std::uint64_t> least = least_free_bytes(disk_dirs, &where);
      std::lock_guard lock(mu);
      if (!least || *least >= reserve + in_flight_bytes) return false;
      auto mib = [](std::uint64_t b) {
        char s[32];
        std::snprintf(s, sizeof s, "%.1f MiB", static_cast<double>(b) / (1 << 20));
        return std::string(s);
      };
      if (!stopping.exchange(true))
        stopped_why = mib(*least) + " free in " + where + " (" + mib(in_flight_bytes) +
                      " of messages on their way there), under the " + mib(reserve) + " an import leaves (" + reserve_source + ")";
      return true;
    };
    cb.on_message = [&](SourceMessage&& m) {
      if (stopping) return;  // a PST's child goes on reading to its end; nothing more is taken
      {
        std::lock_guard lock(mu);
        sum.messages++;
        in_flight_bytes += m.raw.size();
      }
      IngestItem item;
      item.on_done = [&mu, &in_flight_bytes, bytes = std::uint64_t{m.raw.size()}](const IngestResult&) {
        std::lock_guard lock(mu);
        in_flight_bytes -= bytes;
      };
      item.origin = std::move(m.origin);
      item.raw = std::move(m.raw);
      item.envelope.direction = Direction::kImport;
      item.envelope.mail_from = std::move(m.mail_from);
      item.envelope.client = "import";
      item.envelope.connector = "import";
      item.envelope.source = item.origin;
      item.envelope.custodian = custodian;
      if (!roots.empty()) {
        auto [who, folder] = custodian_from_path(roots, m.file);
        if (auto c = check_custodian(who); c) item.envelope.custodian = *c;
        item.envelope.folder = folder.size() <= 1000 ? folder : std::string();
      }
      if (!m.folder.empty()) item.envelope.folder = m.folder.size() <= 1000 ? m.folder : std::string();
      item.envelope.received_at = m.received_at;
      if (!owner.empty()) item.envelope.rcpt_to = {owner};  // the mailbox store places it for the owner
      // Imports archive everything: an unscannable message of an old mailbox stays visible (its
      // verdict says why), an infected one is quarantined; nothing is delivered.
      item.on_unscannable = ScanAction::kDeliver;
      item.on_infected = ScanAction::kQuarantine;
      ingest.submit(std::move(item));
    };
    cb.on_error = [&](const std::string& origin, const std::string& reason) {
      std::lock_guard lock(mu);
      sum.errors++;
      sum.error_files.push_back({{"path", origin}, {"reason", reason}});
    };
    cb.on_skipped = [&](const std::string&, const std::string& what) {
      std::lock_guard lock(mu);
      sum.skipped++;
      sum.skipped_kinds[what]++;
    };
    // libpst trusts the file it reads: a PST is read by a child process, so one that crashes libpst
    // ends that file, not this import (engine/pst.h). The child is the `mailark` binary, whose start
    // loads fewer libraries than mailark-server's (where an import runs) and whose allocator is
    // glibc's, as in the test that crashes it (tests/e2e/test_pst.py
    // test_a_damaged_pst_ends_that_file_not_the_import).
    cb.pst_helper = {cli_binary(), "pst-read", "--max-message-bytes",
                     std::to_string(e.options().limits.max_message_bytes)};
    Status walked = walk_sources(args.paths, e.options().limits, cb);
    fatal = ingest.finish();
    if (!walked) {
      progress.finish();
      return report(walked.error());
    }
  }
  progress.finish();
  if (fatal && sum.imported > 0) {
    // Bulk imports leave half-full index blocks; a compact rewrite takes well under a second per 20k
    // messages and shrinks the index by about 40%.
    if (auto c = e.compact_index(); !c) report(c.error());
  }

  // Users' folders follow the archive (mailbox.h): place what was imported now, when there are users.
  std::uint64_t placed = 0;
  if (std::filesystem::exists(g.data_dir + "/mailbox/data.mdb")) {
    if (auto store = MailboxStore::open(g.data_dir + "/mailbox", false)) {
      while (true) {
        auto f = (*store)->follow(e.archive(), 20000);
        if (!f) {
          report(f.error());
          break;
        }
        placed += f->placed;
        if (f->followed >= e.archive().head().seq) break;
      }
    } else {
      report(store.error());
    }
  }

  std::string stopped;
  if (stopping) {
    std::lock_guard lock(mu);
    stopped = "stopped: " + stopped_why +
              ". Free space where the data folder is and run the same import again: what is archived already "
              "counts as duplicates.";
  }
  if (args.json) {
    nlohmann::json j = {{"messages", sum.messages},       {"imported", sum.imported},
                        {"duplicates", sum.duplicates},   {"infected", sum.infected},
                        {"unscannable", sum.unscannable}, {"unscanned", sum.unscanned},
                        {"malformed", sum.malformed},
                        {"errors", sum.errors},           {"skipped", sum.skipped},
                        {"skipped_kinds", sum.skipped_kinds},
                        {"error_files", sum.error_files}, {"archive_head", e.archive().head().seq},
                        {"signature_load_seconds", signature_load_seconds},
                        {"placed_in_folders", placed}};
    if (!stopped.empty()) j["stopped"] = stopped;
    std::cout << json_text(j) << "\n";
  } else {
    std::cout << "messages   " << sum.messages << "\n"
              << "imported   " << sum.imported << "\n"
              << "duplicates " << sum.duplicates << "\n"
              << "infected   " << sum.infected << "\n"
              << "unscannable " << sum.unscannable << "\n"
              << "unscanned  " << sum.unscanned << "\n"
              << "malformed  " << sum.malformed << "\n"
              << "errors     " << sum.errors << "\n";
    if (placed) std::cout << "placed     " << placed << " in users' folders\n";
    if (sum.skipped) {
      std::string kinds;
      for (const auto& [what, n] : sum.skipped_kinds) kinds += (kinds.empty() ? "" : "; ") + std::to_string(n) + " " + what;
      std::cout << "skipped    " << sum.skipped << " (" << kinds << ")\n";
    }
    for (const auto& ef : sum.error_files) {
      std::cout << "  error: " << ef["path"].get<std::string>() << ": " << ef["reason"].get<std::string>()
                << "\n";
    }
  }
  if (!stopped.empty()) std::cerr << "mailark: import " << stopped << "\n";
  if (!fatal) return report(fatal.error());
  return sum.failed || !stopped.empty() ? kExitFailure : kExitOk;
}

}  // namespace

void register_import(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<ImportArgs>();
  auto* cmd = app.add_subcommand("import", "import Maildir folders, mbox files, Outlook PST files, .eml files and directories");
  cmd->add_option("paths", args->paths, "what to import")->required();
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->add_flag("--no-scan", args->no_scan, "skip virus scanning (messages are recorded as unscanned)");
  cmd->add_option("--owner", args->owner,
                  "the user whose mailbox this is: messages go to their INBOX (or Sent, when they wrote them);\n"
                  "without it, imported mail is placed by its From, To and Cc header fields");
  cmd->add_option("--custodian", args->custodian,
                  "whose mailbox this is, for eDiscovery (a name or an address; default: --owner): each\n"
                  "custodian's copy of a message is its own record (the bytes are stored once), so searches,\n"
                  "`show` and exports name everyone who held it; a message this custodian already has is a duplicate");
  cmd->add_option("--disk-reserve", args->disk_reserve,
                  "bytes to leave free where the data folder is: the import stops before it would leave less\n"
                  "(default: limits.disk_reserve_bytes with --config, else the message size limit and 64 MiB;\n"
                  "0: go on until the disk is full)");
  cmd->add_option("--config", args->config,
                  "the server's configuration file (TOML, as `serve --config`): import by its [limits] (message\n"
                  "size, scan limits, disk reserve) and [scanner] temp_dir, as that server takes mail in");
  cmd->add_flag("--custodian-per-folder", args->custodian_per_folder,
                "each folder directly inside a PATH is one custodian's mailbox, named by the folder\n"
                "(maildir/allen-p/inbox/1. -> custodian allen-p, folder inbox)");
  cmd->callback([&g, &run, args] {
    run = [&g, args] {
      if (auto handed = run_in_server(g)) return *handed;
      return run_import(g, *args);
    };
  });

  // The child process an import reads a PST through (engine/pst.h): frames on standard output.
  auto pst = std::make_shared<std::pair<std::string, std::size_t>>("", Limits{}.max_message_bytes);
  auto* child = app.add_subcommand("pst-read", "read a PST file for `import` (frames on standard output)");
  child->group("");  // not listed in --help: import runs it
  child->add_option("path", pst->first)->required();
  child->add_option("--max-message-bytes", pst->second);
  child->callback([&run, pst] {
    run = [pst] {
      struct rlimit no_core {0, 0};
      ::setrlimit(RLIMIT_CORE, &no_core);  // a file that crashes libpst leaves no core dump behind
      Limits limits;
      limits.max_message_bytes = pst->second;
      return write_pst_frames(pst->first, limits, 1) == 0 ? kExitOk : kExitFailure;
    };
  });
}

}  // namespace mailark::cli
