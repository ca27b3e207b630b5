// mailark queue: list, hold, release, retry and delete queue entries. Deleting never touches the
// archive: the message stays archived and searchable; only its delivery is dropped.
#include <iostream>

#include <nlohmann/json.hpp>

#include "common/json_text.h"
#include "engine/continuity.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct QueueArgs {
  std::string action = "list";
  std::vector<std::uint64_t> ids;
  bool all = false;
  bool json = false;
};

nlohmann::json to_json(const QueueEntry& e) { return nlohmann::json::parse(queue_entry_to_json(e)); }

int run_queue(const GlobalOptions& g, const QueueArgs& args) {
  const bool writes = args.action != "list";
  auto engine = open_engine(g, /*read_only=*/!writes, /*catch_up=*/false, /*writer=*/"");
  if (!engine) return report(engine.error());
  Archive& archive = (*engine)->archive();
  if (args.action == "list") {
    auto entries = archive.queue_entries();
    if (!entries) return report(entries.error());
    if (args.json) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& e : *entries) list.push_back(to_json(e));
      std::optional<ContinuityEvent> event;
      auto state = Continuity(archive).state(&event);
      std::cout << json_text(
                       nlohmann::json({{"entries", list},
                                       {"total", entries->size()},
                                       {"continuity", state ? continuity_state_name(*state) : "unknown"}}))
                << "\n";
      return kExitOk;
    }
    std::optional<ContinuityEvent> event;
    auto state = Continuity(archive).state(&event);
    if (state && *state == ContinuityState::kActive && event) {
      std::cout << "continuity event " << event->id << " is active: mail for the primary is held until it stops "
                << "(mailark continuity)\n";
    } else if (state && *state == ContinuityState::kDraining && event) {
      std::cout << "continuity event " << event->id << " is draining: held mail goes to the primary in arrival order\n";
    }
    for (const auto& e : *entries) {
      auto rec = archive.record(e.seq);
      std::cout << e.seq << "  " << iso8601(e.created_at) << "  " << route_name(e.route) << (e.held ? "  HELD" : "")
                << "  from <" << (rec ? rec->envelope.mail_from : std::string("?")) << ">\n";
      for (const auto& r : e.recipients) {
        std::cout << "    " << r.address << "  " << recipient_state_name(r.state) << "  attempts " << r.attempts;
        if (!r.last_response.empty()) std::cout << "  (" << r.last_response << ")";
        std::cout << "\n";
      }
    }
    std::cout << entries->size() << " queued message" << (entries->size() == 1 ? "" : "s") << "\n";
    return kExitOk;
  }
  std::vector<std::uint64_t> ids = args.ids;
  if (args.all) {
    auto entries = archive.queue_entries();
    if (!entries) return report(entries.error());
    for (const auto& e : *entries) ids.push_back(e.seq);
  }
  if (ids.empty()) return report(make_error(ErrorCode::kInvalidArgument, "name the queue ids, or --all"));
  int failures = 0;
  for (std::uint64_t id : ids) {
    Status s;
    if (args.action == "delete") {
      s = archive.queue_remove(id);
    } else {
      // Read, change and write in one transaction: a delivery result arriving meanwhile is applied
      // to the entry as changed here, never the other way round.
      auto changed = archive.queue_modify(id, [&](QueueEntry& e) -> Status {
        if (args.action == "hold") e.held = true;
        if (args.action == "release") e.held = false;
        if (args.action == "retry") {
          for (auto& r : e.recipients) {
            if (r.state == RecipientState::kKept) r.state = RecipientState::kPending;  // the admin's call
            if (r.state == RecipientState::kPending) r.next_attempt_at = 0;
          }
        }
        return ok_status();
      });
      if (!changed) s = changed.error();
    }
    if (!s) {
      report(s.error());
      ++failures;
    } else if (!args.json) {
      std::cout << args.action << " " << id << "\n";
    }
  }
  if (args.json)
    std::cout << json_text(nlohmann::json({{"action", args.action}, {"ids", ids}, {"failed", failures}}))
              << "\n";
  return failures ? kExitNotFound : kExitOk;
}

}  // namespace

void register_queue(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<QueueArgs>();
  auto* cmd = app.add_subcommand("queue", "list, hold, release, retry or delete queued deliveries");
  cmd->add_option("action", args->action, "list (default), hold, release, retry, delete")
      ->check(CLI::IsMember({"list", "hold", "release", "retry", "delete"}));
  cmd->add_option("ids", args->ids, "queue ids (the archive ids of the messages)");
  cmd->add_flag("--all", args->all, "every queued message");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->footer("Deleting a queue entry drops the delivery only; the message stays in the archive.");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_queue(g, *args); }; });
}

}  // namespace mailark::cli
