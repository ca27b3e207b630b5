// mailark continuity: the state of the continuity monitor and events; start and stop an event.
// The running server (`mailark serve`) picks a change made here up within a second: the state lives
// in the archive (engine/continuity.h), shared through LMDB.
#include <pwd.h>
#include <unistd.h>

#include <iostream>

#include "engine/continuity.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct ContinuityArgs {
  std::string action = "status";
  std::string reason;
  std::size_t windows = 10;
  std::size_t events = 10;
  bool json = false;
};

std::string who() {
  const char* user = std::getenv("SUDO_USER");
  if (user && *user) return std::string("cli:") + user;
  if (struct passwd* pw = getpwuid(getuid())) return std::string("cli:") + pw->pw_name;
  return "cli:uid " + std::to_string(getuid());
}

void print_event(const ContinuityEvent& e, const std::optional<QueueRangeFigures>& remaining) {
  std::cout << "event " << e.id << ": started " << iso8601(e.started_at) << " by " << e.started_by
            << (e.automatic ? " (automatic)" : "") << (e.reason.empty() ? "" : ", reason: " + e.reason) << "\n";
  if (e.stopped_at) {
    std::cout << "  stopped " << iso8601(e.stopped_at) << " by " << e.stopped_by << "; held for the primary: "
              << e.held_messages << " messages (" << e.held_recipients << " recipients); during the event "
              << e.inbound << " inbound, " << e.outbound << " outbound\n";
  }
  if (remaining) {
    std::cout << "  still to drain: " << remaining->pending_messages << " messages (" << remaining->pending_recipients
              << " recipients)";
    if (remaining->held_by_admin) std::cout << ", " << remaining->held_by_admin << " held by an administrator";
    if (remaining->kept_recipients) std::cout << ", " << remaining->kept_recipients << " refused by the primary (mailark queue)";
    std::cout << "\n";
  }
  if (e.drained_at) {
    std::cout << "  drained " << iso8601(e.drained_at) << ": " << e.drained_recipients
              << " recipients reached the primary (not sent again, the primary had them: " << e.deduplicated
              << "); refused by the primary: " << e.kept_recipients << "\n";
  }
  if (e.sent_copies || e.sent_copy_failures)
    std::cout << "  sent copies appended on the primary: " << e.sent_copies << " (failed: " << e.sent_copy_failures << ")\n";
}

int run_continuity(const GlobalOptions& g, const ContinuityArgs& args) {
  const bool writes = args.action != "status";
  auto engine = open_engine(g, /*read_only=*/!writes, /*catch_up=*/false, /*writer=*/"");
  if (!engine) return report(engine.error());
  Archive& archive = (*engine)->archive();
  Continuity c(archive);
  if (args.action == "start" || args.action == "stop") {
    bool already = false;
    auto ev = args.action == "start" ? c.start(who(), args.reason, false, &already) : c.stop(who(), &already);
    if (!ev) return report(ev.error());
    std::string what = args.action == "start" ? (already ? "already running" : "started") : (already ? "not running" : "stopped");
    if (args.json) {
      std::cout << "{\"action\":\"" << args.action << "\",\"changed\":" << (already ? "false" : "true")
                << ",\"event\":" << (ev->id ? event_to_json(*ev) : std::string("null")) << "}\n";
    } else if (args.action == "start") {
      std::cout << "continuity event " << ev->id << " " << what
                << (already ? "" : ": inbound mail is held in the archive; a running `mailark serve` follows within a second")
                << "\n";
    } else if (already) {
      std::cout << "no continuity event is running; nothing changed\n";
    } else {
      std::cout << "continuity event " << ev->id << " stopped: " << ev->held_messages
                << " held messages drain to the primary in arrival order\n";
    }
    return kExitOk;
  }
  auto st = c.status(args.windows, args.events);
  if (!st) return report(st.error());
  std::optional<QueueRangeFigures> remaining;
  if (st->event && st->state == ContinuityState::kDraining) {
    auto r = archive.queue_range(Route::kPrimary, st->event->drain_from_seq, st->event->last_seq, false);
    if (r) remaining = *r;
  }
  if (args.json) {
    std::cout << status_to_json(*st, remaining) << "\n";
    return kExitOk;
  }
  std::cout << "state: " << continuity_state_name(st->state) << "\n";
  if (st->event) print_event(*st->event, remaining);
  std::cout << "monitor: failure counter " << st->monitor.counter << (st->monitor.alerting ? ", alerting" : "");
  if (st->monitor.last_window_end) std::cout << ", last window ended " << iso8601(st->monitor.last_window_end);
  std::cout << "\n";
  if (!st->windows.empty()) {
    std::cout << "windows (newest first):\n";
    for (const auto& w : st->windows) {
      const WindowFigures& f = w.figures;
      std::cout << "  " << iso8601(w.start) << "  " << (w.failed ? "FAILED" : "ok    ") << "  counter " << w.counter
                << "  deliveries " << f.delivered << " ok, " << f.deferred << " deferred, " << f.refused << " refused, "
                << f.unreachable << " unreachable";
      if (f.attempts() > f.unreachable && f.delivered + f.refused + f.deferred > 0)
        std::cout << ", latency avg " << f.latency_ms_total / (f.delivered + f.refused + f.deferred) << " ms";
      if (f.probes_sent || f.probes_returned || f.probes_lost)
        std::cout << "; probes " << f.probes_sent << " sent, " << f.probes_returned << " back, " << f.probes_lost << " lost";
      if (f.imap >= 0) std::cout << "; imap login " << (f.imap ? "ok" : "FAILED");
      std::cout << "\n";
    }
  }
  if (!st->events.empty()) {
    std::cout << "events (newest first):\n";
    for (const auto& e : st->events) print_event(e, std::nullopt);
  }
  return kExitOk;
}

}  // namespace

void register_continuity(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<ContinuityArgs>();
  auto* cmd = app.add_subcommand("continuity", "the continuity monitor and events: status, start, stop");
  cmd->add_option("action", args->action, "status (default), start, stop")
      ->check(CLI::IsMember({"status", "start", "stop"}));
  cmd->add_option("--reason", args->reason, "why the event starts (recorded in its history)");
  cmd->add_option("--windows", args->windows, "monitor windows to show (default 10)");
  cmd->add_option("--events", args->events, "events to show (default 10)");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->footer(
      "During an event inbound mail is archived and held (readable at once), never offered to the\n"
      "primary; outbound mail goes straight to the internet. `stop` drains the held mail to the primary\n"
      "in arrival order, each recipient once. Starting or stopping twice changes nothing.");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_continuity(g, *args); }; });
}

}  // namespace mailark::cli
