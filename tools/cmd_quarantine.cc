// mailark quarantine: list, release or delete messages held back from delivery (infected, or
// unscannable under policy "reject" or "quarantine"). Releasing queues the message to the recipients
// it had, and records who released it and when, in one transaction, and places it in their mailbox
// views (mail without a route, kept for the mailbox views by a server without a primary, is queued
// for no one); deleting drops it from the quarantine only. The archive keeps the message either way. Works beside a running server.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/json_text.h"
#include "engine/mailbox.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct QuarantineArgs {
  std::string action = "list";
  std::vector<std::uint64_t> ids;
  bool all = false;    // list: decided entries too
  bool force = false;  // release: an infected message too
  std::string by;
  bool json = false;
};

std::string who(const QuarantineArgs& args) {
  if (!args.by.empty()) return args.by;
  for (const char* var : {"SUDO_USER", "USER", "LOGNAME"}) {
    if (const char* v = std::getenv(var); v && *v) return v;
  }
  return "uid " + std::to_string(::getuid());
}

nlohmann::json to_json(const QuarantineEntry& q, const Result<ArchiveRecord>& rec) {
  return nlohmann::json::parse(quarantine_entry_to_json(q, rec ? &*rec : nullptr));
}

int run_quarantine(const GlobalOptions& g, const QuarantineArgs& args) {
  const bool writes = args.action != "list";
  auto engine = open_engine(g, /*read_only=*/!writes, /*catch_up=*/false, /*writer=*/"");
  if (!engine) return report(engine.error());
  Archive& archive = (*engine)->archive();
  if (args.action == "list") {
    auto entries = archive.quarantine_entries(args.all);
    if (!entries) return report(entries.error());
    if (args.json) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& q : *entries) list.push_back(to_json(q, archive.record(q.seq)));
      std::cout << json_text(nlohmann::json({{"entries", list}, {"total", entries->size()}})) << "\n";
      return kExitOk;
    }
    for (const auto& q : *entries) {
      auto rec = archive.record(q.seq);
      std::cout << q.seq << "  " << iso8601(q.created_at) << "  " << quarantine_status_name(q.status) << "  from <"
                << (rec ? rec->envelope.mail_from : std::string("?")) << ">  " << q.reason << "\n";
      std::cout << "    to";
      for (const auto& r : q.recipients) std::cout << " " << r;
      if (q.refused) std::cout << "  (the sender was refused at SMTP time)";
      if (q.status != QuarantineStatus::kHeld) std::cout << "  " << quarantine_status_name(q.status) << " by " << q.decided_by;
      std::cout << "\n";
    }
    std::cout << entries->size() << (args.all ? " quarantined" : " held") << " message" << (entries->size() == 1 ? "" : "s")
              << "\n";
    return kExitOk;
  }
  if (args.ids.empty()) return report(make_error(ErrorCode::kInvalidArgument, "name the message ids"));
  std::unique_ptr<MailboxStore> mailboxes;
  if (args.action == "release" && std::filesystem::exists(g.data_dir + "/mailbox/data.mdb")) {
    auto m = MailboxStore::open(g.data_dir + "/mailbox", false);
    if (!m) return report(m.error());
    mailboxes = std::move(*m);
  }
  const std::string by = who(args);
  int failures = 0;
  nlohmann::json done = nlohmann::json::array();
  nlohmann::json decisions = nlohmann::json::array();
  for (std::uint64_t id : args.ids) {
    if (args.action == "release" && !args.force) {
      auto rec = archive.record(id);
      if (rec && rec->verdict.kind == scanner::VerdictKind::kInfected) {
        report(make_error(ErrorCode::kInvalidArgument, "message " + std::to_string(id) + " is infected (" +
                                                           (rec->verdict.signatures.empty() ? "" : rec->verdict.signatures[0]) +
                                                           ")",
                          "release it with --force if you are sure"));
        ++failures;
        continue;
      }
    }
    auto decided = archive.quarantine_decide(
        id, args.action == "release" ? QuarantineStatus::kReleased : QuarantineStatus::kDeleted, by);
    if (!decided) {
      report(decided.error());
      ++failures;
      continue;
    }
    done.push_back(id);
    // A released message reaches its recipients' mailbox views now, as any clean one does (without
    // a route, a server without a primary, that is its only delivery).
    std::optional<std::uint64_t> placed = 0;
    if (args.action == "release" && mailboxes) {
      auto p = mailboxes->place_released(archive, id);
      if (!p) report(p.error());
      else placed = *p;
    }
    if (args.json) {
      // Per message: where a release goes (queued for delivery to its recipients, or their mailbox
      // views: how many were placed now, null when the server's follower places them).
      nlohmann::json d = {{"id", id}, {"recipients", decided->recipients}};
      if (args.action == "release") {
        d["queued"] = decided->route != Route::kNone;
        if (decided->route == Route::kNone) d["placed"] = placed ? nlohmann::json(*placed) : nlohmann::json(nullptr);
      }
      decisions.push_back(std::move(d));
    } else {
      std::cout << (args.action == "release" ? "released " : "deleted ") << id;
      if (args.action == "release") {
        std::cout << (decided->route == Route::kNone ? " to the mailboxes of" : " to");
        for (const auto& r : decided->recipients) std::cout << " " << r;
        if (decided->route == Route::kNone) {
          if (placed) std::cout << " (" << *placed << " placed)";
          else std::cout << " (placed as the mailbox views reach it)";
        }
      }
      std::cout << " (by " << by << ")\n";
    }
  }
  if (args.json) {
    std::cout << json_text(nlohmann::json(
                     {{"action", args.action}, {"ids", done}, {"by", by}, {"failed", failures}, {"decisions", decisions}}))
              << "\n";
  }
  return failures ? kExitFailure : kExitOk;
}

}  // namespace

void register_quarantine(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<QuarantineArgs>();
  auto* cmd = app.add_subcommand("quarantine", "list, release or delete messages held back from delivery");
  cmd->add_option("action", args->action, "list (default), release, delete")
      ->check(CLI::IsMember({"list", "release", "delete"}));
  cmd->add_option("ids", args->ids, "message ids");
  cmd->add_flag("--all", args->all, "list: released and deleted messages too");
  cmd->add_flag("--force", args->force, "release: an infected message too");
  cmd->add_option("--by", args->by, "who decides (recorded; default: $SUDO_USER or $USER)");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->footer(
      "Releasing queues the message to its recipients and records the decision; deleting removes it from the\n"
      "quarantine. The archive keeps the message either way.");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_quarantine(g, *args); }; });
}

}  // namespace mailark::cli
