#include "engine/continuity.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>

#include "common/dates.h"
#include "common/json_text.h"
#include "common/random.h"
#include "common/sha256.h"

namespace mailark {
namespace {

using json = nlohmann::json;

// Keys of the continuity table (docs/FORMAT.md, "continuity"): text prefixes, then for ordered
// families a u64 big-endian number. Values are JSON objects with "v": 1.
constexpr std::string_view kState = "state";
constexpr std::string_view kMonitor = "monitor";
constexpr std::string_view kEventPrefix = "event/";
constexpr std::string_view kWindowPrefix = "window/";
constexpr std::string_view kTokenPrefix = "token/";
constexpr std::string_view kSentPrefix = "sent/";

std::string be64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) s[static_cast<std::size_t>(i)] = static_cast<char>(v & 0xFF);
  return s;
}

std::string event_key(std::uint64_t id) { return std::string(kEventPrefix) + be64(id); }

json event_json(const ContinuityEvent& e) {
  return json{{"v", 1},
              {"id", e.id},
              {"started_at", e.started_at},
              {"started_by", e.started_by},
              {"reason", e.reason},
              {"first_seq", e.first_seq},
              {"drain_from_seq", e.drain_from_seq},
              {"stopped_at", e.stopped_at},
              {"stopped_by", e.stopped_by},
              {"last_seq", e.last_seq},
              {"drained_at", e.drained_at},
              {"held_messages", e.held_messages},
              {"held_recipients", e.held_recipients},
              {"kept_recipients", e.kept_recipients},
              {"deduplicated", e.deduplicated},
              {"drained_recipients", e.drained_recipients},
              {"inbound", e.inbound},
              {"outbound", e.outbound},
              {"sent_copies", e.sent_copies},
              {"sent_copy_failures", e.sent_copy_failures},
              {"sent_copies_done_at", e.sent_copies_done_at},
              {"automatic", e.automatic}};
}

// Stored values are our own, but a damaged or hand-edited one must not throw out of here: every
// field is read with a default.
template <typename T>
T field(const json& j, const char* name, T fallback) {
  auto it = j.find(name);
  if (it == j.end()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return fallback;
  }
}

std::optional<json> parse(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

ContinuityEvent event_from(const json& j) {
  ContinuityEvent e;
  e.id = field<std::uint64_t>(j, "id", 0);
  e.started_at = field<std::int64_t>(j, "started_at", 0);
  e.started_by = field<std::string>(j, "started_by", "");
  e.reason = field<std::string>(j, "reason", "");
  e.first_seq = field<std::uint64_t>(j, "first_seq", 0);
  e.drain_from_seq = field<std::uint64_t>(j, "drain_from_seq", e.first_seq);
  e.stopped_at = field<std::int64_t>(j, "stopped_at", 0);
  e.stopped_by = field<std::string>(j, "stopped_by", "");
  e.last_seq = field<std::uint64_t>(j, "last_seq", 0);
  e.drained_at = field<std::int64_t>(j, "drained_at", 0);
  e.held_messages = field<std::uint64_t>(j, "held_messages", 0);
  e.held_recipients = field<std::uint64_t>(j, "held_recipients", 0);
  e.kept_recipients = field<std::uint64_t>(j, "kept_recipients", 0);
  e.deduplicated = field<std::uint64_t>(j, "deduplicated", 0);
  e.drained_recipients = field<std::uint64_t>(j, "drained_recipients", 0);
  e.inbound = field<std::uint64_t>(j, "inbound", 0);
  e.outbound = field<std::uint64_t>(j, "outbound", 0);
  e.sent_copies = field<std::uint64_t>(j, "sent_copies", 0);
  e.sent_copy_failures = field<std::uint64_t>(j, "sent_copy_failures", 0);
  e.sent_copies_done_at = field<std::int64_t>(j, "sent_copies_done_at", 0);
  e.automatic = field<bool>(j, "automatic", false);
  return e;
}

json window_json(const MonitorWindow& w) {
  const WindowFigures& f = w.figures;
  return json{{"v", 1},
              {"start", w.start},
              {"end", w.end},
              {"failed", w.failed},
              {"counter", w.counter},
              {"delivered", f.delivered},
              {"refused", f.refused},
              {"deferred", f.deferred},
              {"unreachable", f.unreachable},
              {"latency_ms_total", f.latency_ms_total},
              {"latency_ms_max", f.latency_ms_max},
              {"probes_sent", f.probes_sent},
              {"probes_returned", f.probes_returned},
              {"probes_lost", f.probes_lost},
              {"probes_refused", f.probes_refused},
              {"probe_rtt_ms_total", f.probe_rtt_ms_total},
              {"imap", f.imap}};
}

MonitorWindow window_from(const json& j) {
  MonitorWindow w;
  w.start = field<std::int64_t>(j, "start", 0);
  w.end = field<std::int64_t>(j, "end", 0);
  w.failed = field<bool>(j, "failed", false);
  w.counter = field<std::uint32_t>(j, "counter", 0);
  WindowFigures& f = w.figures;
  f.delivered = field<std::uint32_t>(j, "delivered", 0);
  f.refused = field<std::uint32_t>(j, "refused", 0);
  f.deferred = field<std::uint32_t>(j, "deferred", 0);
  f.unreachable = field<std::uint32_t>(j, "unreachable", 0);
  f.latency_ms_total = field<std::uint64_t>(j, "latency_ms_total", 0);
  f.latency_ms_max = field<std::uint64_t>(j, "latency_ms_max", 0);
  f.probes_sent = field<std::uint32_t>(j, "probes_sent", 0);
  f.probes_returned = field<std::uint32_t>(j, "probes_returned", 0);
  f.probes_lost = field<std::uint32_t>(j, "probes_lost", 0);
  f.probes_refused = field<std::uint32_t>(j, "probes_refused", 0);
  f.probe_rtt_ms_total = field<std::uint64_t>(j, "probe_rtt_ms_total", 0);
  f.imap = field<int>(j, "imap", -1);
  return w;
}

json monitor_json(const MonitorState& m) {
  return json{{"v", 1},
              {"counter", m.counter},
              {"good_streak", m.good_streak},
              {"alerting", m.alerting},
              {"last_alert_at", m.last_alert_at},
              {"last_window_end", m.last_window_end}};
}

MonitorState monitor_from(const json& j) {
  MonitorState m;
  m.counter = field<std::uint32_t>(j, "counter", 0);
  m.good_streak = field<std::uint32_t>(j, "good_streak", 0);
  m.alerting = field<bool>(j, "alerting", false);
  m.last_alert_at = field<std::int64_t>(j, "last_alert_at", 0);
  m.last_window_end = field<std::int64_t>(j, "last_window_end", 0);
  return m;
}

struct StoredState {
  ContinuityState state = ContinuityState::kNormal;
  std::uint64_t event = 0;  // the current event (active or draining)
  std::uint64_t last_event = 0;
};

StoredState read_state(const StateView& v) {
  StoredState s;
  auto text = v.get(kState);
  if (!text) return s;
  auto j = parse(*text);
  if (!j) return s;
  std::string name = field<std::string>(*j, "state", "normal");
  s.state = name == "active" ? ContinuityState::kActive
            : name == "draining" ? ContinuityState::kDraining
                                 : ContinuityState::kNormal;
  s.event = field<std::uint64_t>(*j, "event", 0);
  s.last_event = field<std::uint64_t>(*j, "last_event", 0);
  return s;
}

Status write_state(StateWriter& w, const StoredState& s) {
  json j{{"v", 1}, {"state", continuity_state_name(s.state)}, {"event", s.event}, {"last_event", s.last_event}};
  return w.put(kState, json_text(j));
}

std::optional<ContinuityEvent> read_event(const StateView& v, std::uint64_t id) {
  if (id == 0) return std::nullopt;
  auto text = v.get(event_key(id));
  if (!text) return std::nullopt;
  auto j = parse(*text);
  if (!j) return std::nullopt;
  return event_from(*j);
}

Status write_event(StateWriter& w, const ContinuityEvent& e) {
  return w.put(event_key(e.id), json_text(event_json(e)));
}

std::string token_key(const std::string& token) {
  Digest d = sha256("mailark-token-v1\n" + token);
  return std::string(kTokenPrefix) + to_hex(d);
}

}  // namespace

const char* continuity_state_name(ContinuityState s) {
  switch (s) {
    case ContinuityState::kNormal: return "normal";
    case ContinuityState::kActive: return "active";
    case ContinuityState::kDraining: return "draining";
  }
  return "normal";
}

const char* token_check_name(TokenCheck c) {
  switch (c) {
    case TokenCheck::kValid: return "valid";
    case TokenCheck::kUnknown: return "unknown";
    case TokenCheck::kExpired: return "expired";
    case TokenCheck::kUsed: return "already used";
  }
  return "unknown";
}

// A window failed when the primary did not do its job in it: a probe was lost or refused, the IMAP
// login failed, or delivery attempts failed (4xx or unreachable) at least as often as they were
// answered. A 5xx is an answer (a verdict on a recipient): a server that says "no such user" is up.
bool WindowFigures::failed() const {
  if (probes_lost > 0 || probes_refused > 0 || imap == 0) return true;
  const std::uint32_t bad = deferred + unreachable, good = delivered + refused;
  return bad > 0 && bad >= good;
}

bool WindowFigures::positive() const { return delivered + refused > 0 || probes_returned > 0 || imap == 1; }

MonitorActions close_window(MonitorState& s, const WindowFigures& w, const MonitorPolicy& p, std::int64_t now,
                            bool event_active) {
  MonitorActions a;
  const bool failed = w.failed();
  if (failed) {
    ++s.counter;
    s.good_streak = 0;
  } else {
    if (s.counter > 0) --s.counter;
    // Only evidence counts towards stopping an event: a window without traffic proves nothing
    // (during an event nothing is offered to the primary).
    if (w.positive()) ++s.good_streak;
  }
  const std::uint32_t threshold = std::max<std::uint32_t>(1, p.alert_after);
  if (s.counter >= threshold) {
    if (!s.alerting) {
      a.alert = true;
      s.alerting = true;
      s.last_alert_at = now;
    } else if (now - s.last_alert_at >= static_cast<std::int64_t>(p.repeat_seconds)) {
      a.repeat = true;
      s.last_alert_at = now;
    }
  } else if (s.alerting && s.counter == 0) {
    a.recovered = true;
    s.alerting = false;
  }
  if (p.auto_start > 0 && !event_active && s.counter >= p.auto_start) a.auto_start = true;
  if (p.auto_stop > 0 && event_active && s.good_streak >= p.auto_stop) a.auto_stop = true;
  s.last_window_end = now;
  return a;
}

Result<ContinuityEvent> Continuity::start(const std::string& by, const std::string& reason, bool automatic,
                                          bool* already) {
  ContinuityEvent out;
  bool was_active = false;
  MAILARK_TRY(archive_.state_write([&](StateWriter& w) -> Status {
    StoredState st = read_state(w);
    if (st.state == ContinuityState::kActive) {
      was_active = true;
      auto e = read_event(w, st.event);
      if (e) out = *e;
      return ok_status();
    }
    ContinuityEvent e;
    e.id = st.last_event + 1;
    e.started_at = unix_now();
    e.started_by = by;
    e.reason = reason;
    e.automatic = automatic;
    // Inside the write transaction nothing can be appended: the head read now is the last message
    // before the event.
    e.first_seq = archive_.head().seq + 1;
    e.drain_from_seq = e.first_seq;
    if (st.state == ContinuityState::kDraining) {
      // The previous event's drain is cut short: what it left is drained with this one.
      if (auto prev = read_event(w, st.event)) e.drain_from_seq = std::min(e.first_seq, prev->drain_from_seq);
    }
    MAILARK_TRY(write_event(w, e));
    st.state = ContinuityState::kActive;
    st.event = e.id;
    st.last_event = e.id;
    MAILARK_TRY(write_state(w, st));
    out = e;
    return ok_status();
  }));
  if (already) *already = was_active;
  return out;
}

Result<ContinuityEvent> Continuity::stop(const std::string& by, bool* already) {
  ContinuityEvent out;
  bool was_inactive = false;
  MAILARK_TRY(archive_.state_write([&](StateWriter& w) -> Status {
    StoredState st = read_state(w);
    if (st.state != ContinuityState::kActive) {
      was_inactive = true;
      if (auto e = read_event(w, st.event ? st.event : st.last_event)) out = *e;
      return ok_status();
    }
    auto e = read_event(w, st.event);
    if (!e) return make_error(ErrorCode::kCorrupt, "the continuity state names event " + std::to_string(st.event) +
                                                       ", which is not stored");
    e->stopped_at = unix_now();
    e->stopped_by = by;
    e->last_seq = archive_.head().seq;
    // What is held, counted inside this transaction: no delivery result can be committed before the
    // state says draining (a large event holds the writer for the walk: appends wait that long).
    auto held = archive_.queue_range(Route::kPrimary, e->drain_from_seq, e->last_seq, false);
    if (!held) return held.error();
    e->held_messages = held->pending_messages + held->held_by_admin;
    e->held_recipients = held->pending_recipients;
    MAILARK_TRY(write_event(w, *e));
    st.state = ContinuityState::kDraining;
    MAILARK_TRY(write_state(w, st));
    out = *e;
    return ok_status();
  }));
  if (already) *already = was_inactive;
  if (was_inactive) return out;
  // The primary is back: everything queued for it is due now, so the drain goes in arrival order
  // (messages deferred before the event included).
  MAILARK_TRY(archive_.queue_retry_now(Route::kPrimary, 0, out.last_seq));
  // The figures by direction, read outside the write transaction that stopped the event (walking a
  // large event's records must not hold up appends; records never change).
  std::uint64_t inbound = 0, outbound = 0;
  if (out.last_seq >= out.first_seq) {
    auto snap = archive_.snapshot();
    if (!snap) return snap.error();
    MAILARK_TRY((*snap)->scan(
        out.first_seq,
        [&](const ArchiveRecord& r, std::string_view) {
          if (r.seq > out.last_seq) return false;
          if (r.envelope.direction == Direction::kInbound) ++inbound;
          // Users' mail: not what mailark wrote itself (alerts, DSNs).
          if (r.envelope.direction == Direction::kOutbound && r.envelope.connector != "alerts" &&
              r.envelope.connector != "dsn")
            ++outbound;
          return true;
        },
        [](std::uint64_t, const Error&) { return true; }));
  }
  MAILARK_TRY(archive_.state_write([&](StateWriter& w) -> Status {
    auto e = read_event(w, out.id);
    if (!e) return ok_status();
    e->inbound = inbound;
    e->outbound = outbound;
    MAILARK_TRY(write_event(w, *e));
    out = *e;
    return ok_status();
  }));
  return out;
}

Status Continuity::finish_drain(std::uint64_t event_id, std::uint64_t kept_recipients) {
  return archive_.state_write([&](StateWriter& w) -> Status {
    StoredState st = read_state(w);
    if (st.state != ContinuityState::kDraining || st.event != event_id) return ok_status();
    auto e = read_event(w, event_id);
    if (e) {
      e->drained_at = unix_now();
      e->kept_recipients = kept_recipients;
      e->drained_recipients = e->held_recipients > kept_recipients ? e->held_recipients - kept_recipients : 0;
      MAILARK_TRY(write_event(w, *e));
    }
    st.state = ContinuityState::kNormal;
    st.event = 0;
    return write_state(w, st);
  });
}

Status Continuity::count(std::uint64_t event_id, std::uint64_t deduplicated, std::uint64_t sent_copies,
                         std::uint64_t sent_copy_failures) {
  return archive_.state_write([&](StateWriter& w) -> Status {
    auto e = read_event(w, event_id);
    if (!e) return ok_status();
    e->deduplicated += deduplicated;
    e->sent_copies += sent_copies;
    e->sent_copy_failures += sent_copy_failures;
    return write_event(w, *e);
  });
}

Result<ContinuityState> Continuity::state(std::optional<ContinuityEvent>* event) const {
  ContinuityState out = ContinuityState::kNormal;
  MAILARK_TRY(archive_.state_read([&](const StateView& v) -> Status {
    StoredState st = read_state(v);
    out = st.state;
    if (event) *event = st.state == ContinuityState::kNormal ? std::nullopt : read_event(v, st.event);
    return ok_status();
  }));
  return out;
}

Result<ContinuityStatus> Continuity::status(std::size_t windows, std::size_t events) const {
  ContinuityStatus out;
  MAILARK_TRY(archive_.state_read([&](const StateView& v) -> Status {
    StoredState st = read_state(v);
    out.state = st.state;
    if (st.state != ContinuityState::kNormal) out.event = read_event(v, st.event);
    if (auto m = v.get(kMonitor))
      if (auto j = parse(*m)) out.monitor = monitor_from(*j);
    if (windows > 0) {
      v.scan(kWindowPrefix, [&](std::string_view, std::string_view value) {
        if (auto j = parse(value)) out.windows.push_back(window_from(*j));
        return out.windows.size() < windows;
      }, true);
    }
    if (events > 0) {
      v.scan(kEventPrefix, [&](std::string_view, std::string_view value) {
        if (auto j = parse(value)) out.events.push_back(event_from(*j));
        return out.events.size() < events;
      }, true);
    }
    return ok_status();
  }));
  return out;
}

Status Continuity::record_window(const MonitorWindow& win, const MonitorState& state, std::int64_t keep_seconds) {
  return archive_.state_write([&](StateWriter& w) -> Status {
    MAILARK_TRY(w.put(std::string(kWindowPrefix) + be64(static_cast<std::uint64_t>(win.start)),
                      json_text(window_json(win))));
    MAILARK_TRY(w.put(kMonitor, json_text(monitor_json(state))));
    // The history is kept for charts; older windows go (a few per call, oldest first).
    std::vector<std::string> old;
    const std::string bound = std::string(kWindowPrefix) + be64(static_cast<std::uint64_t>(std::max<std::int64_t>(0, win.start - keep_seconds)));
    w.scan(kWindowPrefix, [&](std::string_view key, std::string_view) {
      if (key >= bound || old.size() >= 64) return false;
      old.emplace_back(key);
      return true;
    });
    for (const auto& k : old) MAILARK_TRY(w.del(k));
    return ok_status();
  });
}

Result<MonitorState> Continuity::monitor_state() const {
  MonitorState out;
  MAILARK_TRY(archive_.state_read([&](const StateView& v) -> Status {
    if (auto m = v.get(kMonitor))
      if (auto j = parse(*m)) out = monitor_from(*j);
    return ok_status();
  }));
  return out;
}

Result<std::string> Continuity::issue_token(std::int64_t ttl_seconds, const std::string& purpose) {
  unsigned char bytes[24];
  if (!random_bytes(bytes, sizeof bytes)) return make_error(ErrorCode::kInternal, "no random bytes for a token");
  std::string token = to_hex(std::span<const std::uint8_t>(bytes, sizeof bytes));
  const std::int64_t now = unix_now();
  json j{{"v", 1}, {"purpose", purpose}, {"created_at", now}, {"expires_at", now + ttl_seconds}, {"used_at", 0}, {"used_by", ""}};
  MAILARK_TRY(archive_.state_write([&](StateWriter& w) -> Status {
    MAILARK_TRY(w.put(token_key(token), json_text(j)));
    // Expired tokens are dropped as new ones are issued (a few at a time).
    std::vector<std::string> expired;
    w.scan(kTokenPrefix, [&](std::string_view key, std::string_view value) {
      if (auto t = parse(value); t && field<std::int64_t>(*t, "expires_at", 0) + 7 * 86400 < now) expired.emplace_back(key);
      return expired.size() < 16;
    });
    for (const auto& k : expired) MAILARK_TRY(w.del(k));
    return ok_status();
  }));
  return token;
}

namespace {
TokenCheck check(const StateView& v, const std::string& token, std::int64_t now, json* out) {
  // Tokens are 48 hex digits; anything else is not worth a lookup.
  if (token.size() != 48 || !std::all_of(token.begin(), token.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      }))
    return TokenCheck::kUnknown;
  auto text = v.get(token_key(token));
  if (!text) return TokenCheck::kUnknown;
  auto j = parse(*text);
  if (!j) return TokenCheck::kUnknown;
  if (out) *out = *j;
  if (field<std::int64_t>(*j, "used_at", 0) != 0) return TokenCheck::kUsed;
  if (field<std::int64_t>(*j, "expires_at", 0) <= now) return TokenCheck::kExpired;
  return TokenCheck::kValid;
}
}  // namespace

Result<TokenCheck> Continuity::consume_token(const std::string& token, const std::string& by) {
  TokenCheck out = TokenCheck::kUnknown;
  MAILARK_TRY(archive_.state_write([&](StateWriter& w) -> Status {
    json j;
    const std::int64_t now = unix_now();
    out = check(w, token, now, &j);
    if (out != TokenCheck::kValid) return ok_status();
    j["used_at"] = now;
    j["used_by"] = by;
    return w.put(token_key(token), json_text(j));
  }));
  return out;
}

Result<TokenCheck> Continuity::check_token(const std::string& token) const {
  TokenCheck out = TokenCheck::kUnknown;
  MAILARK_TRY(archive_.state_read([&](const StateView& v) -> Status {
    out = check(v, token, unix_now(), nullptr);
    return ok_status();
  }));
  return out;
}

Result<bool> Continuity::sent_copy_done(std::uint64_t seq) const {
  bool done = false;
  MAILARK_TRY(archive_.state_read([&](const StateView& v) -> Status {
    done = v.get(std::string(kSentPrefix) + be64(seq)).has_value();
    return ok_status();
  }));
  return done;
}

Status Continuity::mark_sent_copy(std::uint64_t event_id, std::uint64_t seq, bool ok, const std::string& detail) {
  return archive_.state_write([&](StateWriter& w) -> Status {
    const std::string key = std::string(kSentPrefix) + be64(seq);
    if (w.get(key)) return ok_status();
    json j{{"v", 1}, {"event", event_id}, {"at", unix_now()}, {"ok", ok}, {"detail", detail}};
    MAILARK_TRY(w.put(key, json_text(j)));
    auto e = read_event(w, event_id);
    if (!e) return ok_status();
    if (ok) ++e->sent_copies;
    else ++e->sent_copy_failures;
    return write_event(w, *e);
  });
}

Status Continuity::finish_sent_copies(std::uint64_t event_id) {
  return archive_.state_write([&](StateWriter& w) -> Status {
    auto e = read_event(w, event_id);
    if (!e || e->sent_copies_done_at) return ok_status();
    e->sent_copies_done_at = unix_now();
    return write_event(w, *e);
  });
}

std::string event_to_json(const ContinuityEvent& e) {
  return json_text(event_json(e));
}

std::string status_to_json(const ContinuityStatus& s, const std::optional<QueueRangeFigures>& remaining) {
  json j{{"state", continuity_state_name(s.state)}};
  if (s.event) {
    json e = event_json(*s.event);
    e.erase("v");
    if (remaining) {
      e["remaining"] = {{"messages", remaining->pending_messages},
                        {"recipients", remaining->pending_recipients},
                        {"kept_recipients", remaining->kept_recipients},
                        {"held_by_admin", remaining->held_by_admin}};
    }
    j["event"] = e;
  } else {
    j["event"] = nullptr;
  }
  json m = monitor_json(s.monitor);
  m.erase("v");
  j["monitor"] = m;
  json windows = json::array();
  for (const auto& w : s.windows) {
    json x = window_json(w);
    x.erase("v");
    windows.push_back(x);
  }
  j["windows"] = windows;
  json events = json::array();
  for (const auto& e : s.events) {
    json x = event_json(e);
    x.erase("v");
    events.push_back(x);
  }
  j["events"] = events;
  return json_text(j);
}
std::string window_to_json(const MonitorWindow& w) {
  return json_text(window_json(w));
}

}  // namespace mailark
