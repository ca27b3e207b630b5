// mailark import PATH...: Maildir folders, mbox files, Outlook PST files, single messages, directories
// (recursive). `mailark pst-read` is the child process that reads a PST for it (engine/pst.h).
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <vector>
#include <thread>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/json_text.h"
#include "engine/handoff.h"
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

// Counts one message's result; true when it failed.
bool count_result(Summary& sum, const IngestResult& r) {
  switch (r.outcome) {
    case IngestOutcome::kArchived:
      sum.imported++;
      if (r.verdict == scanner::VerdictKind::kInfected) sum.infected++;
      if (r.verdict == scanner::VerdictKind::kUnscannable) sum.unscannable++;
      if (r.verdict == scanner::VerdictKind::kUnscanned) sum.unscanned++;
      if (r.malformed) sum.malformed++;
      return false;
    case IngestOutcome::kDuplicate:
      sum.duplicates++;
      return false;
    case IngestOutcome::kRefused:
      sum.errors++;
      sum.error_files.push_back({{"path", r.origin}, {"reason", r.reason}});
      return false;
    case IngestOutcome::kFailed:
    case IngestOutcome::kDeferred:  // imports never defer; counted as failed if one ever did
      sum.failed++;
      sum.errors++;
      sum.error_files.push_back({{"path", r.origin}, {"reason", r.reason}});
      return true;
  }
  return false;
}

struct Outcome {
  std::uint64_t archive_head = 0;
  std::optional<std::uint64_t> indexed;  // the index's watermark after a lone import (every record up to it)
  double signature_load_seconds = 0;
  std::uint64_t placed = 0;
  bool handed = false;  // handed to a running server
  std::string stopped;  // why the import stopped before its end, with what to do
};

int print_summary(const ImportArgs& args, const Summary& sum, const Outcome& o) {
  if (args.json) {
    nlohmann::json j = {{"messages", sum.messages},       {"imported", sum.imported},
                        {"duplicates", sum.duplicates},   {"infected", sum.infected},
                        {"unscannable", sum.unscannable}, {"unscanned", sum.unscanned},
                        {"malformed", sum.malformed},
                        {"errors", sum.errors},           {"skipped", sum.skipped},
                        {"skipped_kinds", sum.skipped_kinds},
                        {"error_files", sum.error_files}, {"archive_head", o.archive_head},
                        {"signature_load_seconds", o.signature_load_seconds},
                        {"placed_in_folders", o.placed},  {"handed_to_server", o.handed}};
    if (!o.stopped.empty()) j["stopped"] = o.stopped;
    if (o.indexed) j["index_watermark"] = *o.indexed;
    std::cout << json_text(j) << "\n";
  } else {
    if (o.handed) std::cout << "handed to the running server (mailark serve), which scanned and archived it\n";
    std::cout << "messages   " << sum.messages << "\n"
              << "imported   " << sum.imported << "\n"
              << "duplicates " << sum.duplicates << "\n"
              << "infected   " << sum.infected << "\n"
              << "unscannable " << sum.unscannable << "\n"
              << "unscanned  " << sum.unscanned << "\n"
              << "malformed  " << sum.malformed << "\n"
              << "errors     " << sum.errors << "\n";
    if (o.placed) std::cout << "placed     " << o.placed << " in users' folders\n";
    if (o.indexed && *o.indexed < o.archive_head)
      std::cout << "indexed    up to message " << *o.indexed << " of " << o.archive_head
                << " (the rest is archived; the index catches up from the archive once it can be written)\n";
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
  if (!o.stopped.empty()) std::cerr << "mailark: import " << o.stopped << "\n";
  return sum.failed || !o.stopped.empty() ? kExitFailure : kExitOk;
}

// The envelope fields an import sets from where a message was found (--custodian-per-folder, a
// PST's folders), the same whether it archives the message itself or hands it to a server.
void place_message(const SourceMessage& m, const std::vector<std::string>& roots, std::string& custodian,
                   std::string& folder) {
  if (!roots.empty()) {
    auto [who, in] = custodian_from_path(roots, m.file);
    if (auto c = check_custodian(who); c) custodian = *c;
    folder = in.size() <= 1000 ? in : std::string();
  }
  if (!m.folder.empty()) folder = m.folder.size() <= 1000 ? m.folder : std::string();
}

// What an import hands the pipeline for a message it read (engine/handoff.h handoff_item makes the
// item), the same whether it archives the message itself or hands it to a running server.
HandoffMessage describe(SourceMessage&& m, const std::vector<std::string>& roots, const std::string& custodian,
                        const std::string& owner) {
  HandoffMessage h;
  h.custodian = custodian;
  place_message(m, roots, h.custodian, h.folder);
  h.origin = std::move(m.origin);
  h.raw = std::move(m.raw);
  h.received_at = m.received_at;
  h.mail_from = std::move(m.mail_from);
  h.owner = owner;
  return h;
}

// Errors and skipped items of the walk, counted.
void count_walk(SourceCallbacks& cb, Summary& sum, std::mutex& mu) {
  cb.on_error = [&sum, &mu](const std::string& origin, const std::string& reason) {
    std::lock_guard lock(mu);
    sum.errors++;
    sum.error_files.push_back({{"path", origin}, {"reason", reason}});
  };
  cb.on_skipped = [&sum, &mu](const std::string&, const std::string& what) {
    std::lock_guard lock(mu);
    sum.skipped++;
    sum.skipped_kinds[what]++;
  };
}

// The import when `mailark serve` runs on the data folder: the mailboxes are read here, each
// message handed to the server, which scans and archives it with what it has loaded
// (engine/handoff.h). Test: tests/e2e/test_import_handoff.py.
int run_handed_import(const ImportArgs& args, int fd, const std::string& owner, const std::string& custodian,
                      const std::vector<std::string>& roots) {
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  const int in_fd = ::dup(fd);
  std::FILE* in = in_fd >= 0 ? ::fdopen(in_fd, "rb") : nullptr;
  if (!in) return report(make_error(ErrorCode::kIo, std::string("reading the server's import socket: ") + std::strerror(errno)));
  struct FileCloser {
    std::FILE* f;
    ~FileCloser() { std::fclose(f); }
  } in_closer{in};
  HandoffReply hello;
  std::string why;
  if (!read_handoff_reply(in, hello, why) || hello.kind != HandoffReply::kHello) {
    if (hello.kind == HandoffReply::kStop) why = hello.why;
    return report(make_error(ErrorCode::kIo, "the running server (mailark serve) did not take the import: " + why));
  }
  if (args.no_scan) {
    send_all(fd, encode_handoff_done());  // nothing to hand: the server ends the conversation cleanly
    return report(make_error(ErrorCode::kInvalidArgument,
                             "--no-scan: `mailark serve` runs on this data folder and scans everything it archives",
                             "import without --no-scan (the server's signatures are loaded already), or stop the server first"));
  }
  Limits limits;  // the server's message size; the mailboxes are read by it
  limits.max_message_bytes = static_cast<std::size_t>(hello.max_message_bytes);
  // The server decides what it takes in: an option that would have decided it alone is said to be
  // set aside, not silently dropped (test_import_handoff.py).
  if (args.disk_reserve)
    std::cerr << "mailark: --disk-reserve is not used: the running server keeps its own reserve "
                 "(limits.disk_reserve_bytes of its configuration)\n";
  if (!args.config.empty())
    std::cerr << "mailark: --config is not used: the running server scans and archives by its own configuration\n";

  Summary sum;
  std::mutex mu;
  std::atomic<bool> stopping{false};
  std::string stopped_why;  // under mu
  Outcome outcome;
  outcome.handed = true;
  Progress progress("importing");
  const std::uint64_t total_files = count_files(args.paths);
  std::uint64_t processed = 0;
  bool ended = false;
  std::thread reader([&] {
    HandoffReply reply;
    std::string lost;
    while (read_handoff_reply(in, reply, lost)) {
      std::lock_guard lock(mu);
      if (reply.kind == HandoffReply::kResult) {
        ++processed;
        count_result(sum, reply.result);
        progress.update(processed, std::max(total_files, processed));
      } else if (reply.kind == HandoffReply::kStop) {
        if (!stopping.exchange(true) || stopped_why.empty()) stopped_why = reply.why;
        ::shutdown(fd, SHUT_WR);  // a send blocked on the socket ends now
      } else if (reply.kind == HandoffReply::kEnd) {
        outcome.archive_head = reply.head;
        ended = true;
        return;
      }
    }
    std::lock_guard lock(mu);
    stopping = true;
    if (stopped_why.empty())
      stopped_why = "the server ended the import before it had reported every message (" + lost + ")";
    ::shutdown(fd, SHUT_WR);
  });

  SourceCallbacks cb;
  cb.stop = [&] { return stopping.load(); };
  cb.on_message = [&](SourceMessage&& m) {
    if (stopping) return;
    if (!send_all(fd, encode_handoff_message(describe(std::move(m), roots, custodian, owner)))) {
      stopping = true;  // the reader says why
      return;
    }
    std::lock_guard lock(mu);
    sum.messages++;
  };
  count_walk(cb, sum, mu);
  cb.pst_helper = {cli_binary(), "pst-read", "--max-message-bytes", std::to_string(limits.max_message_bytes)};
  Status walked = walk_sources(args.paths, limits, cb);
  if (!stopping) send_all(fd, encode_handoff_done());
  reader.join();
  progress.finish();
  if (!walked) return report(walked.error());
  if (!ended || stopping) {
    outcome.stopped = "stopped: " + (stopped_why.empty() ? std::string("the server did not say why") : stopped_why) +
                      ". Run the same import again: what is archived already counts as duplicates.";
  }
  // Users' folders follow the archive inside the server.
  return print_summary(args, sum, outcome);
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
  // A server runs on this data folder: hand it the messages (it holds the archive).
  if (const int fd = connect_handoff(g.data_dir); fd >= 0) return run_handed_import(args, fd, owner, custodian, roots);
  EngineOptions options;
  options.writer = "import";
  // An index that lags the archive (and may not be writable: a full disk) never keeps mail out: its
  // shards catch up inside the import's pipeline, as a server's do (engine/ingest.cc index_loop;
  // test_failures.py test_an_import_with_its_index_disk_full_archives_everything).
  options.catch_up_on_open = false;
  // With --config, the limits a server with that file works by (its message size, scan limits and disk
  // reserve) and its scanner's temporary folder; else the defaults.
  std::optional<std::uint64_t> config_reserve;
  std::string isolation = "thread";
  if (!args.config.empty()) {
    auto settings = intake_settings(args.config);
    if (!settings) return report(settings.error());
    options.limits = settings->limits;
    options.scanner_temp_dir = settings->scanner_temp_dir;
    isolation = settings->scanner_isolation;
    config_reserve = settings->limits.disk_reserve_bytes;
  }
  if (!args.no_scan) {
    auto host = scan_host_for(isolation);
    if (!host) return report(host.error());
    options.scanner_host = *host;
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
    if (count_result(sum, r) && r.store_failed && !stopping.exchange(true))
      stopped_why = "the archive could not record a batch (" + r.reason + ")";
    progress.update(processed, std::max(total_files, processed));
  };

  // The pipeline's warnings (an index that cannot be written: the mail is archived all the same): the
  // first and the last, and how many, once the import is done rather than through its progress line.
  std::vector<std::string> warnings;  // under mu: at most the first and the last
  std::uint64_t warning_count = 0;
  IngestOptions ingest_options;
  ingest_options.on_warning = [&](const std::string& w) {
    std::lock_guard lock(mu);
    if (warnings.size() < 2) warnings.push_back(w); else warnings.back() = w;
    ++warning_count;
  };
  Status fatal;
  {
    Ingest ingest(e.archive(), **writer, scanner, e.options().limits, ingest_options, on_result);
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
      const std::uint64_t bytes = m.raw.size();
      IngestItem item = handoff_item(describe(std::move(m), roots, custodian, owner));
      item.on_done = [&mu, &in_flight_bytes, bytes](const IngestResult&) {
        std::lock_guard lock(mu);
        in_flight_bytes -= bytes;
      };
      ingest.submit(std::move(item));
    };
    count_walk(cb, sum, mu);
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
  for (std::size_t k = 0; k < warnings.size(); ++k)
    std::cerr << "mailark: " << (k == 0 ? "" : "last: ") << warnings[k] << "\n";
  if (warning_count > warnings.size())
    std::cerr << "mailark: (" << warning_count << " warnings in all)\n";
  const std::uint64_t indexed = (*writer)->watermark();
  if (fatal && sum.imported > 0) {
    // Bulk imports leave half-full index blocks; a compact rewrite takes well under a second per 20k
    // messages and shrinks the index by about 40%.
    if (auto c = e.compact_index(); !c) report(c.error());
  }

  // Users' folders follow the archive (mailbox.h): place what was imported now, when there are users.
  std::uint64_t placed = 0;
  if (std::filesystem::exists(g.data_dir + "/mailbox/data.mdb")) {
    if (auto store = MailboxStore::open(g.data_dir + "/mailbox", false)) {
      // Users of an IDN domain get mail addressed in either spelling, as the server places it.
      if (auto other = address_other_form()) (*store)->set_other_address_form(std::move(other));
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

  Outcome outcome;
  outcome.archive_head = e.archive().head().seq;
  outcome.indexed = indexed;
  outcome.signature_load_seconds = signature_load_seconds;
  outcome.placed = placed;
  if (stopping) {
    std::lock_guard lock(mu);
    outcome.stopped = "stopped: " + stopped_why +
                      ". Free space where the data folder is and run the same import again: what is archived already "
                      "counts as duplicates.";
  }
  const int code = print_summary(args, sum, outcome);
  if (!fatal) return report(fatal.error());
  return code;
}

}  // namespace

void register_import(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<ImportArgs>();
  auto* cmd = app.add_subcommand("import", "import Maildir folders, mbox files, Outlook PST files, .eml files and directories\n"
                                           "(beside a running `mailark serve`, handed to it: it scans and archives them by its own\n"
                                           "signatures, limits and disk reserve; --no-scan, --config and --disk-reserve are then the server's)");
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
