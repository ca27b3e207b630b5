// Continuity: the monitor's state, its windows, the events and the one-time panic-button tokens, kept
// durable in the archive's `continuity` table (docs/FORMAT.md, "continuity"). `mailark serve` (the
// monitor, the HTTP admin listener, the delivery agent) and the CLI (`mailark continuity`) share it
// through LMDB: every change is one write transaction, so a start from the CLI and a stop from the
// HTTP listener at the same moment serialise, and a crash leaves the state as of the last commit.
//
// States: normal -> active (an event: inbound mail is archived and held, never offered to the
// primary) -> draining (the event was stopped: held mail goes to the primary in arrival order) ->
// normal (nothing of the event is left to deliver). Starting during a drain starts a new event whose
// drain also covers what the previous one left. Starting or stopping twice changes nothing
// (tests: Continuity.StartAndStopTwiceAreHarmless).
//
// The monitor's arithmetic is here too, free of I/O (tests: Continuity.CounterRisesAndFalls...):
// per window, a failure counter rises by one for a failed window and falls by one (not below zero)
// for a good window or one without traffic.
//
// Thread safety: the Continuity object is stateless apart from the archive reference; every method
// may be called from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "engine/archive.h"

namespace mailark {

enum class ContinuityState : std::uint8_t { kNormal, kActive, kDraining };
const char* continuity_state_name(ContinuityState s);  // "normal", "active", "draining"

struct ContinuityEvent {
  std::uint64_t id = 0;
  std::int64_t started_at = 0;
  std::string started_by;   // "cli:root", "http:admin-token", "panic-button", "monitor"
  std::string reason;
  std::uint64_t first_seq = 0;       // the first archive record of the event
  std::uint64_t drain_from_seq = 0;  // first_seq, or an earlier event's when its drain was cut short
  std::int64_t stopped_at = 0;       // 0 while active
  std::string stopped_by;
  std::uint64_t last_seq = 0;  // the archive head when stopped
  std::int64_t drained_at = 0;  // 0 until nothing of it is left to deliver
  // Figures: at stop, what was held for the primary; at the end of the drain, what the primary
  // refused for good (kept for the administrator) and what the drain did not send again because the
  // primary had it already (same Message-ID and recipient).
  std::uint64_t held_messages = 0, held_recipients = 0, kept_recipients = 0, deduplicated = 0;
  std::uint64_t drained_recipients = 0;  // at the end of the drain: held recipients the primary now has
  std::uint64_t inbound = 0, outbound = 0;  // messages archived during the event, by direction
  std::uint64_t sent_copies = 0, sent_copy_failures = 0;  // users' sent mail appended on the primary
  std::int64_t sent_copies_done_at = 0;  // every sent copy of the event was made (or failed for good)
  bool automatic = false;  // started by the monitor (continuity.auto_start)
};

// What one window saw.
struct WindowFigures {
  // Organic inbound check: delivery attempts to the primary, by outcome.
  std::uint32_t delivered = 0;    // 2xx
  std::uint32_t refused = 0;      // 5xx: the server answered (a verdict on a recipient, not an outage)
  std::uint32_t deferred = 0;     // 4xx
  std::uint32_t unreachable = 0;  // connection, TLS or timeout failures
  std::uint64_t latency_ms_total = 0, latency_ms_max = 0;  // over answered attempts
  // Synthetic check: probes sent into the primary and come back through the outbound listener.
  std::uint32_t probes_sent = 0, probes_returned = 0, probes_lost = 0, probes_refused = 0;
  std::uint64_t probe_rtt_ms_total = 0;
  // The IMAP login check: -1 not run, 0 failed, 1 succeeded (the last of the window).
  int imap = -1;

  bool failed() const;    // the primary failed in this window (rules in continuity.cc)
  bool positive() const;  // the primary showed it works (an answered delivery, a returned probe, a login)
  std::uint32_t attempts() const { return delivered + refused + deferred + unreachable; }
};

struct MonitorWindow {
  std::int64_t start = 0, end = 0;
  WindowFigures figures;
  bool failed = false;
  std::uint32_t counter = 0;  // the failure counter after this window
};

struct MonitorState {
  std::uint32_t counter = 0;
  std::uint32_t good_streak = 0;   // consecutive windows with positive evidence and no failure
  bool alerting = false;           // an alert was sent and no recovery notice yet
  std::int64_t last_alert_at = 0;
  std::int64_t last_window_end = 0;
};

struct MonitorPolicy {
  std::uint32_t alert_after = 2;       // the counter value that raises an alert
  std::uint32_t repeat_seconds = 1800;  // the alert repeats while the problem stands
  std::uint32_t auto_start = 0;        // start an event at this counter value (0: manual only)
  std::uint32_t auto_stop = 0;         // stop the event after this many good windows in a row (0: manual)
};

// What closing a window asks the caller to do.
struct MonitorActions {
  bool alert = false;      // first alert of an episode
  bool repeat = false;     // the same alert again (repeat_seconds passed)
  bool recovered = false;  // the recovery notice
  bool auto_start = false;
  bool auto_stop = false;
};

// The monitor's rule, applied to the state when a window closes. event_active: an event is running.
MonitorActions close_window(MonitorState& state, const WindowFigures& w, const MonitorPolicy& policy,
                            std::int64_t now, bool event_active);

struct ContinuityStatus {
  ContinuityState state = ContinuityState::kNormal;
  std::optional<ContinuityEvent> event;  // the current (active or draining) event
  MonitorState monitor;
  std::vector<MonitorWindow> windows;    // newest first
  std::vector<ContinuityEvent> events;   // newest first
};

// The state as the running server acts on it: refreshed from the archive every second, so a change
// made by the CLI takes effect within a second.
struct ContinuitySnapshot {
  ContinuityState state = ContinuityState::kNormal;
  std::optional<ContinuityEvent> event;  // the active or draining event
  bool holding() const { return state == ContinuityState::kActive; }
  bool draining() const { return state == ContinuityState::kDraining && event.has_value(); }
};

enum class TokenCheck { kValid, kUnknown, kExpired, kUsed };
const char* token_check_name(TokenCheck c);

class Continuity {
 public:
  explicit Continuity(Archive& archive) : archive_(archive) {}

  // Starts an event. Already active: changes nothing and returns the running event with
  // *already = true.
  Result<ContinuityEvent> start(const std::string& by, const std::string& reason, bool automatic, bool* already);
  // Stops the active event: its held mail starts draining. No active event: changes nothing,
  // *already = true (and the last event is returned, if any). Also makes every queued message for
  // the primary due now, so the drain goes in arrival order.
  Result<ContinuityEvent> stop(const std::string& by, bool* already);
  // The drain of the current event is over: state normal, figures recorded.
  Status finish_drain(std::uint64_t event_id, std::uint64_t kept_recipients);
  // Adds to an event's figures (the delivery agent's dedupe and sent copies).
  Status count(std::uint64_t event_id, std::uint64_t deduplicated, std::uint64_t sent_copies,
               std::uint64_t sent_copy_failures);

  Result<ContinuityState> state(std::optional<ContinuityEvent>* event = nullptr) const;
  Result<ContinuityStatus> status(std::size_t windows, std::size_t events) const;

  // Records a closed window and the monitor state after it, in one transaction (windows older than
  // keep_seconds are dropped).
  Status record_window(const MonitorWindow& w, const MonitorState& state, std::int64_t keep_seconds);
  Result<MonitorState> monitor_state() const;

  // One-time tokens (the panic button): issue returns the token to put in a link, valid for
  // ttl_seconds; only its SHA-256 is stored. consume checks it and, when valid, marks it used by
  // `by` in the same transaction, so a token starts at most one event.
  Result<std::string> issue_token(std::int64_t ttl_seconds, const std::string& purpose);
  Result<TokenCheck> consume_token(const std::string& token, const std::string& by);
  // check only (the confirmation page), without using it.
  Result<TokenCheck> check_token(const std::string& token) const;

  // Users' sent mail appended to the primary (once per message: the marker is written with the
  // figure). Returns false if it was already done.
  Result<bool> sent_copy_done(std::uint64_t seq) const;
  Status mark_sent_copy(std::uint64_t event_id, std::uint64_t seq, bool ok, const std::string& detail);
  Status finish_sent_copies(std::uint64_t event_id);

 private:
  Archive& archive_;
};

std::string event_to_json(const ContinuityEvent& e);     // one JSON object (as stored)
std::string window_to_json(const MonitorWindow& w);
// The status as one JSON object (`mailark continuity status --json`, GET /api/continuity): state,
// event (with "remaining": what is still to drain, when draining), monitor, windows, events.
// remaining: the queue figures of the current event's range, if known.
std::string status_to_json(const ContinuityStatus& s, const std::optional<QueueRangeFigures>& remaining);

}  // namespace mailark
