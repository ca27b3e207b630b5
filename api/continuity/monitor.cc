#include "api/continuity/monitor.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio/experimental/as_tuple.hpp>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include "api/blocking.h"
#include "api/imap/client.h"
#include "api/smtp/client.h"
#include "common/ascii.h"
#include "common/dates.h"
#include "common/secret_file.h"
#include "common/sha256.h"

namespace mailark::api {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;

std::string probe_token(const std::string& key, const std::string& id, std::int64_t sent_at) {
  const std::string data = "mailark-probe-v1|" + id + "|" + std::to_string(sent_at);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), mac, &len);
  return id + "." + std::to_string(sent_at) + "." + to_hex(std::span<const std::uint8_t>(mac, len));
}

bool check_probe_token(const std::string& key, std::string_view token, std::string& id, std::int64_t& sent_at) {
  while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t' || token.back() == '\r' || token.back() == '\n'))
    token.remove_suffix(1);
  if (token.size() > 200) return false;
  std::size_t a = token.find('.'), b = token.find('.', a == std::string_view::npos ? 0 : a + 1);
  if (a == std::string_view::npos || b == std::string_view::npos || a == 0) return false;
  std::string i(token.substr(0, a));
  std::string when(token.substr(a + 1, b - a - 1));
  if (when.empty() || when.size() > 18 || !std::all_of(when.begin(), when.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  if (!std::all_of(i.begin(), i.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); })) return false;
  const std::int64_t t = std::stoll(when);
  const std::string expected = probe_token(key, i, t);
  if (expected.size() != token.size() || CRYPTO_memcmp(expected.data(), token.data(), token.size()) != 0) return false;
  id = i;
  sent_at = t;
  return true;
}

struct ContinuityMonitor::Impl {
  asio::io_context& io;
  asio::thread_pool& blocking;
  Archive& archive;
  ServeConfig config;
  std::string data_dir;
  Alerter& alerter;
  Continuity continuity{archive};
  MonitorPolicy policy;
  asio::ssl::context tls{asio::ssl::context::tls_client};

  mutable std::mutex snap_mu;
  std::shared_ptr<const ContinuitySnapshot> snap = std::make_shared<ContinuitySnapshot>();

  std::string probe_key;
  bool stopping = false;
  asio::steady_timer tick{io};

  // The current window (io thread).
  std::int64_t window_start = 0;
  WindowFigures figures;
  MonitorState state;
  std::map<std::string, std::chrono::steady_clock::time_point> probes;  // in flight: id -> sent
  std::chrono::steady_clock::time_point next_probe{};
  std::uint64_t probe_counter = 0;
  std::set<smtp::SmtpClient*> clients;
  std::set<imap::Client*> imap_clients;
  bool copying = false;  // a round of Sent copies is running
  std::chrono::steady_clock::time_point next_prune{};  // the delivered log's pruning, hourly
  std::chrono::steady_clock::time_point next_copy_round{};
  std::set<std::string> own_domains;

  Impl(asio::io_context& i, asio::thread_pool& b, Archive& a, const ServeConfig& c, std::string d, Alerter& al)
      : io(i), blocking(b), archive(a), config(c), data_dir(std::move(d)), alerter(al) {
    policy.alert_after = config.continuity.alert_after;
    policy.repeat_seconds = config.continuity.alert_repeat;
    policy.auto_start = config.continuity.auto_start;
    policy.auto_stop = config.continuity.auto_stop;
    tls.set_verify_mode(asio::ssl::verify_none);
  }

  bool probing() const { return !config.continuity.probe_to.empty(); }

  static imap::Client::Tls imap_tls(const std::string& mode) {
    if (mode == "implicit") return imap::Client::Tls::kImplicit;
    if (mode == "starttls") return imap::Client::Tls::kStartTls;
    return imap::Client::Tls::kNone;
  }

  // The optional IMAP login check: one login per window; its result counts in the window it ends in.
  awaitable<void> imap_check() {
    imap::Outcome result{false, true, "no host"};
    for (const auto& h : config.continuity.imap_check) {
      imap::Client client(io, tls, std::chrono::seconds(std::min(60u, config.delivery.connect_timeout)));
      imap_clients.insert(&client);
      result = co_await client.connect(h.host, h.port, imap_tls(config.continuity.imap_tls));
      if (result.ok) result = co_await client.login(config.continuity.imap_user, config.continuity.imap_password);
      if (result.ok) co_await client.logout();
      imap_clients.erase(&client);
      if (result.ok || stopping) break;
    }
    if (stopping) co_return;
    figures.imap = result.ok ? 1 : 0;
    if (!result.ok) spdlog::warn("continuity: IMAP login check failed: {}", result.text);
  }

  // Users' mail sent during a stopped event goes into their Sent folder on the primary: APPEND as
  // the master user on behalf of each sender, once per message (the marker is written after the
  // server's OK: a crash between the two makes at most one duplicate per connection).
  awaitable<void> copy_sent_round() {
    struct Copy {
      std::uint64_t seq;
      std::string user;
    };
    std::optional<ContinuityEvent> event;
    std::vector<Copy> todo;
    Status read_status;
    auto find = [&] {
      auto st = continuity.status(0, 20);
      if (!st) {
        read_status = st.error();
        return;
      }
      for (auto it = st->events.rbegin(); it != st->events.rend(); ++it) {
        if (it->stopped_at && !it->sent_copies_done_at) {
          event = *it;
          break;
        }
      }
      if (!event || event->last_seq < event->first_seq) return;
      auto snap = archive.snapshot();
      if (!snap) {
        read_status = snap.error();
        return;
      }
      read_status = (*snap)->scan(
          event->first_seq,
          [&](const ArchiveRecord& r, std::string_view) {
            if (r.seq > event->last_seq || todo.size() >= 200) return false;
            const std::string from = ascii_lower(r.envelope.mail_from);
            std::size_t at = from.rfind('@');
            if (r.envelope.direction != Direction::kOutbound || at == std::string::npos ||
                !own_domains.count(from.substr(at + 1)) || (r.flags & kFlagQuarantined) || is_internal_copy(r.envelope))
              return true;
            auto done = continuity.sent_copy_done(r.seq);
            if (done && !*done) todo.push_back({r.seq, from});
            return true;
          },
          [](std::uint64_t, const Error&) { return true; });
    };
    co_await run_blocking(blocking, find);
    if (!read_status) {
      spdlog::error("continuity: finding sent mail to copy: {}", read_status.error().to_string());
      co_return;
    }
    if (!event) co_return;
    if (todo.empty()) {
      Status s;
      auto finish = [&] { s = continuity.finish_sent_copies(event->id); };
      co_await run_blocking(blocking, finish);
      if (s) spdlog::info("continuity: event {}: sent copies done", event->id);
      co_return;
    }
    const HostPort& host = config.continuity.sent_copy_imap.front();
    for (const Copy& c : todo) {
      if (stopping) co_return;
      Result<std::string> raw = make_error(ErrorCode::kInternal, "not read");
      auto read = [&] {
        auto rec = archive.record(c.seq);
        raw = rec ? archive.raw(*rec) : Result<std::string>(rec.error());
      };
      co_await run_blocking(blocking, read);
      if (!raw) {
        spdlog::error("continuity: sent copy of message {}: {}", c.seq, raw.error().to_string());
        continue;
      }
      imap::Client client(io, tls, std::chrono::seconds(60));
      imap_clients.insert(&client);
      imap::Outcome r = co_await client.connect(host.host, host.port, imap_tls(config.continuity.sent_copy_tls));
      if (r.ok) r = co_await client.authenticate_plain(c.user, config.continuity.sent_copy_user, config.continuity.sent_copy_password);
      if (r.ok) r = co_await client.append(config.continuity.sent_copy_folder, "\\Seen", *raw);
      if (!r.connection) co_await client.logout();
      imap_clients.erase(&client);
      if (r.connection) {
        spdlog::warn("continuity: sent copies: the primary's IMAP server cannot be reached ({}); trying again in 30 s", r.text);
        co_return;
      }
      Status marked;
      auto mark = [&] { marked = continuity.mark_sent_copy(event->id, c.seq, r.ok, r.text); };
      co_await run_blocking(blocking, mark);
      if (r.ok) spdlog::info("continuity: message {} appended to {}'s {} folder on the primary", c.seq, c.user, config.continuity.sent_copy_folder);
      else spdlog::warn("continuity: message {}: the primary refused the sent copy for {}: {}", c.seq, c.user, r.text);
    }
    next_copy_round = std::chrono::steady_clock::now();  // more may be left: go on at once
  }

  void set_snapshot(std::shared_ptr<const ContinuitySnapshot> s) {
    std::lock_guard lock(snap_mu);
    snap = std::move(s);
  }

  Status read_state() {
    auto s = std::make_shared<ContinuitySnapshot>();
    auto st = continuity.state(&s->event);
    if (!st) return st.error();
    s->state = *st;
    auto before = snapshot_copy();
    if (before->state != s->state || (before->event ? before->event->id : 0) != (s->event ? s->event->id : 0)) {
      // Whoever changed it (this process, the CLI, another admin), the log says when the server follows.
      spdlog::info("continuity: the state is now {}{}", continuity_state_name(s->state),
                   s->event ? " (event " + std::to_string(s->event->id) + ")" : "");
    }
    set_snapshot(std::move(s));
    return ok_status();
  }

  std::string base_url() const {
    if (!config.admin.public_url.empty()) {
      std::string u = config.admin.public_url;
      while (!u.empty() && u.back() == '/') u.pop_back();
      return u;
    }
    if (config.admin.listen.empty()) return "";
    return (config.admin.tls == "implicit" ? "https://" : "http://") + config.admin.listen;
  }

  Alert make_alert(const std::string& kind, const std::string& summary, const std::string& details, bool with_link) {
    Alert a;
    a.kind = kind;
    a.summary = summary;
    a.details = details;
    a.at = unix_now();
    a.counter = state.counter;  // (read on the pool while the io thread waits for it: not changing)
    auto s = snapshot_copy();
    a.state = continuity_state_name(s->state);
    if (with_link && !s->holding() && !base_url().empty()) {
      auto token = continuity.issue_token(config.continuity.token_ttl, "panic");
      if (token) a.panic_url = base_url() + "/continuity/panic?token=" + *token;
      else spdlog::error("continuity: issuing a panic-button token: {}", token.error().to_string());
    }
    return a;
  }

  std::shared_ptr<const ContinuitySnapshot> snapshot_copy() const {
    std::lock_guard lock(snap_mu);
    return snap;
  }

  std::string window_text(const WindowFigures& f) const {
    std::string t = "last window (" + std::to_string(config.continuity.window) + " s): deliveries to the primary " +
                    std::to_string(f.delivered) + " delivered, " + std::to_string(f.deferred) + " deferred, " +
                    std::to_string(f.refused) + " refused, " + std::to_string(f.unreachable) + " unreachable";
    if (probing())
      t += "; probes " + std::to_string(f.probes_sent) + " sent, " + std::to_string(f.probes_returned) + " back, " +
           std::to_string(f.probes_lost) + " lost, " + std::to_string(f.probes_refused) + " refused";
    if (f.imap >= 0) t += std::string("; IMAP login ") + (f.imap ? "ok" : "failed");
    return t;
  }

  // Closes the window: persists it, then acts on the rule's answer. Runs on the io thread; the
  // archive writes go to the pool.
  awaitable<void> close_current_window() {
    const std::int64_t end = unix_now();
    MonitorWindow w;
    w.start = window_start;
    w.end = end;
    w.figures = figures;
    w.failed = figures.failed();
    auto cont = snapshot_copy();
    MonitorActions actions = close_window(state, figures, policy, end, cont->holding());
    w.counter = state.counter;
    figures = WindowFigures{};
    window_start = end;
    const std::int64_t keep = static_cast<std::int64_t>(config.continuity.history_days) * 86400;
    Status written;
    MonitorState st = state;
    auto write = [&] { written = continuity.record_window(w, st, keep); };
    co_await run_blocking(blocking, write);
    if (!written) spdlog::error("continuity: recording a window: {}", written.error().to_string());
    spdlog::info("continuity: window {} counter={} {}", w.failed ? "FAILED" : "ok", state.counter, window_text(w.figures));
    const std::string figures_text = window_text(w.figures);
    // Alerts issue tokens and events write the archive: on the pool, never on the event loop.
    auto act = [&] {
      if (actions.alert || actions.repeat) {
        Alert a = make_alert(actions.alert ? "primary_failing" : "primary_still_failing",
                             std::string(actions.alert ? "The primary mail server is failing"
                                                       : "The primary mail server is still failing") +
                                 " (" + config.hostname + ")",
                             "The continuity monitor counts " + std::to_string(st.counter) +
                                 " failed windows (net).\n" + figures_text,
                             true);
        spdlog::warn("continuity: ALERT {}: {}", a.kind, a.summary);
        alerter.send(a);
      }
      if (actions.recovered) {
        Alert a = make_alert("primary_recovered", "The primary mail server is working again (" + config.hostname + ")",
                             figures_text + (cont->holding() ? "\nA continuity event is still running: stop it to deliver "
                                                               "the held mail (mailark continuity stop, or the admin listener)."
                                                             : ""),
                             false);
        spdlog::info("continuity: {}", a.summary);
        alerter.send(a);
      }
      bool already = false;
      if (actions.auto_start)
        (void)start_event("monitor", "automatic: " + std::to_string(st.counter) + " failed windows", true, &already);
      if (actions.auto_stop) (void)stop_event("monitor", &already);
    };
    if (actions.alert || actions.repeat || actions.recovered || actions.auto_start || actions.auto_stop)
      co_await run_blocking(blocking, act);
  }

  Result<ContinuityEvent> start_event(const std::string& by, const std::string& reason, bool automatic, bool* already) {
    auto ev = continuity.start(by, reason, automatic, already);
    if (!ev) {
      spdlog::error("continuity: starting an event ({}): {}", by, ev.error().to_string());
      return ev;
    }
    (void)read_state();
    if (*already) {
      spdlog::info("continuity: start by {}: event {} is already running; nothing changed", by, ev->id);
      return ev;
    }
    spdlog::warn("continuity: event {} STARTED by {}{}: inbound mail is held in the archive, not offered to the primary",
                 ev->id, by, reason.empty() ? "" : " (" + reason + ")");
    if (automatic) {
      alerter.send(make_alert("event_started", "A continuity event started automatically (" + config.hostname + ")",
                              "Event " + std::to_string(ev->id) + ": " + reason +
                                  ".\nInbound mail is held in mailark; users read it from the archive. Stop the "
                                  "event when the primary works again.",
                              false));
    }
    return ev;
  }

  Result<ContinuityEvent> stop_event(const std::string& by, bool* already) {
    auto ev = continuity.stop(by, already);
    if (!ev) {
      spdlog::error("continuity: stopping the event ({}): {}", by, ev.error().to_string());
      return ev;
    }
    (void)read_state();
    if (*already) {
      spdlog::info("continuity: stop by {}: no event is running; nothing changed", by);
      return ev;
    }
    spdlog::warn("continuity: event {} STOPPED by {}: {} held messages ({} recipients) drain to the primary", ev->id, by,
                 ev->held_messages, ev->held_recipients);
    if (by == "monitor") {
      alerter.send(make_alert("event_stopped", "The continuity event stopped automatically (" + config.hostname + ")",
                              "Event " + std::to_string(ev->id) + ": the primary worked for " +
                                  std::to_string(policy.auto_stop) + " windows in a row; " +
                                  std::to_string(ev->held_messages) + " held messages drain to it.",
                              false));
    }
    return ev;
  }

  awaitable<void> send_probe() {
    const auto& hosts = config.continuity.probe_host.empty() ? config.delivery.primary : config.continuity.probe_host;
    char idbuf[32];
    std::snprintf(idbuf, sizeof idbuf, "%llx%04llx", static_cast<unsigned long long>(unix_now()),
                  static_cast<unsigned long long>(++probe_counter & 0xFFFF));
    const std::string id = idbuf;
    const std::int64_t sent_at = unix_now();
    const std::string from = config.continuity.probe_from.empty() ? "mailark-probe@" + config.hostname : config.continuity.probe_from;
    std::string msg;
    msg += "From: mailark continuity probe <" + from + ">\r\n";
    msg += "To: <" + config.continuity.probe_to + ">\r\n";
    msg += "Subject: mailark continuity probe " + id + "\r\n";
    msg += "Date: " + rfc5322_date(sent_at) + "\r\n";
    msg += "Message-ID: <probe." + id + "@" + config.hostname + ">\r\n";
    msg += "X-Mailark-Probe: " + probe_token(probe_key, id, sent_at) + "\r\n";
    msg += "Auto-Submitted: auto-generated\r\n\r\n";
    msg += "This message checks that the primary mail server accepts mail and relays it back out through\r\n";
    msg += "mailark. mailark recognises it on the way back and keeps it out of every mailbox.\r\n";
    smtp::ClientReply result{0, "no probe host"};
    // In flight from before the first byte: the primary may relay it back before our QUIT is answered.
    probes[id] = std::chrono::steady_clock::now();
    for (const auto& h : hosts) {
      auto client = std::make_unique<smtp::SmtpClient>(io, tls, config.hostname, std::chrono::seconds(config.delivery.connect_timeout),
                                                       std::chrono::seconds(std::min(60u, config.delivery.reply_timeout)));
      client->set_plaintext_fallback(!config.delivery.verify_certificates);  // as delivery to it does
      clients.insert(client.get());
      result = co_await client->open(h.host, h.port, smtp::SmtpClient::Tls::kOpportunistic, h.host);
      if (result.ok() && !config.continuity.probe_user.empty())
        result = co_await client->auth_plain(config.continuity.probe_user, config.continuity.probe_password);
      if (result.ok()) result = co_await client->command("MAIL FROM:<" + from + ">");
      if (result.ok()) result = co_await client->command("RCPT TO:<" + config.continuity.probe_to + ">");
      if (result.ok()) result = co_await client->command("DATA");
      if (result.code == 354) result = co_await client->send_data(msg);
      if (result.code != 0) co_await client->quit();
      clients.erase(client.get());
      if (result.ok() || stopping) break;
    }
    if (stopping) co_return;
    if (result.ok()) {
      figures.probes_sent++;
      spdlog::info("continuity: probe {} sent to the primary", id);
    } else {
      probes.erase(id);
      figures.probes_refused++;
      spdlog::warn("continuity: probe {} not accepted by the primary: {}", id, result.to_string());
    }
  }

  void expire_probes() {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = probes.begin(); it != probes.end();) {
      if (now - it->second >= std::chrono::seconds(config.continuity.probe_timeout)) {
        spdlog::warn("continuity: probe {} lost: not back through the outbound listener within {} s", it->first,
                     config.continuity.probe_timeout);
        figures.probes_lost++;
        it = probes.erase(it);
      } else {
        ++it;
      }
    }
  }
};

ContinuityMonitor::ContinuityMonitor(asio::io_context& io, asio::thread_pool& blocking, Archive& archive,
                                     const ServeConfig& config, std::string data_dir, Alerter& alerter)
    : impl_(std::make_unique<Impl>(io, blocking, archive, config, std::move(data_dir), alerter)) {}

ContinuityMonitor::~ContinuityMonitor() = default;

Status ContinuityMonitor::setup() {
  Impl& m = *impl_;
  MAILARK_TRY(m.read_state());
  auto st = m.continuity.monitor_state();
  if (st) m.state = *st;
  auto key = read_or_create_secret(m.data_dir + "/continuity-probe.key", 32, 64);
  if (!key) return key.error();
  m.probe_key = *key;
  m.window_start = unix_now();
  for (const auto& d : m.config.inbound_domains) m.own_domains.insert(ascii_lower(d));
  if (m.probing()) {
    m.next_probe = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    spdlog::info("continuity: probes to <{}> every {} s (lost after {} s)", m.config.continuity.probe_to,
                 m.config.continuity.probe_interval, m.config.continuity.probe_timeout);
  }
  auto snap = snapshot();
  if (snap->state != ContinuityState::kNormal)
    spdlog::warn("continuity: event {} is {}", snap->event ? snap->event->id : 0, continuity_state_name(snap->state));
  return ok_status();
}

awaitable<void> ContinuityMonitor::run() {
  Impl& m = *impl_;
  while (!m.stopping) {
    m.tick.expires_after(std::chrono::seconds(1));
    co_await m.tick.async_wait(as_tuple(use_awaitable));
    if (m.stopping) break;
    // The state, as the CLI or the admin listener may have changed it.
    Status read;
    auto r = [&] { read = m.read_state(); };
    co_await run_blocking(m.blocking, r);
    if (!read) spdlog::error("continuity: reading the state: {}", read.error().to_string());
    m.expire_probes();
    if (m.probing() && std::chrono::steady_clock::now() >= m.next_probe) {
      m.next_probe = std::chrono::steady_clock::now() + std::chrono::seconds(m.config.continuity.probe_interval);
      asio::co_spawn(m.io, m.send_probe(), asio::detached);
    }
    if (unix_now() - m.window_start >= static_cast<std::int64_t>(m.config.continuity.window)) {
      co_await m.close_current_window();
      if (!m.config.continuity.imap_check.empty()) asio::co_spawn(m.io, m.imap_check(), asio::detached);
    }
    // The delivered log keeps continuity.dedupe_window seconds.
    if (std::chrono::steady_clock::now() >= m.next_prune) {
      m.next_prune = std::chrono::steady_clock::now() + std::chrono::hours(1);
      Result<std::uint64_t> pruned = std::uint64_t{0};
      auto prune = [&] { pruned = m.archive.delivered_prune(unix_now() - static_cast<std::int64_t>(m.config.continuity.dedupe_window)); };
      co_await run_blocking(m.blocking, prune);
      // More left than one transaction takes: go on in a minute.
      if (pruned && *pruned >= 20000) m.next_prune = std::chrono::steady_clock::now() + std::chrono::minutes(1);
      if (!pruned) spdlog::error("continuity: pruning the delivered log: {}", pruned.error().to_string());
      else if (*pruned) spdlog::info("continuity: {} entries older than {} s dropped from the delivered log", *pruned, m.config.continuity.dedupe_window);
    }
    // Sent copies for stopped events, while the primary's IMAP server takes them.
    if (!m.config.continuity.sent_copy_imap.empty() && !m.copying && std::chrono::steady_clock::now() >= m.next_copy_round &&
        !m.snapshot_copy()->holding()) {
      m.copying = true;
      m.next_copy_round = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      asio::co_spawn(m.io, m.copy_sent_round(), [&m](std::exception_ptr) { m.copying = false; });
    }
  }
}

void ContinuityMonitor::stop() {
  impl_->stopping = true;
  impl_->tick.cancel();
  for (auto* c : impl_->clients) c->abort();
  for (auto* c : impl_->imap_clients) c->abort();
}

std::shared_ptr<const ContinuitySnapshot> ContinuityMonitor::snapshot() const { return impl_->snapshot_copy(); }

void ContinuityMonitor::refresh() { (void)impl_->read_state(); }

void ContinuityMonitor::observe(PrimaryAttempt attempt, std::chrono::milliseconds latency) {
  WindowFigures& f = impl_->figures;
  switch (attempt) {
    case PrimaryAttempt::kDelivered: f.delivered++; break;
    case PrimaryAttempt::kRefused: f.refused++; break;
    case PrimaryAttempt::kDeferred: f.deferred++; break;
    case PrimaryAttempt::kUnreachable: f.unreachable++; break;
  }
  if (attempt != PrimaryAttempt::kUnreachable) {
    const auto ms = static_cast<std::uint64_t>(std::max<std::int64_t>(0, latency.count()));
    f.latency_ms_total += ms;
    f.latency_ms_max = std::max(f.latency_ms_max, ms);
  }
}

bool ContinuityMonitor::probe_arrived(std::string_view header_value) {
  Impl& m = *impl_;
  std::string id;
  std::int64_t sent_at = 0;
  if (!check_probe_token(m.probe_key, header_value, id, sent_at)) return false;
  auto it = m.probes.find(id);
  if (it != m.probes.end()) {
    const auto rtt = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - it->second);
    m.figures.probes_returned++;
    m.figures.probe_rtt_ms_total += static_cast<std::uint64_t>(rtt.count());
    m.probes.erase(it);
    spdlog::info("continuity: probe {} back after {} ms", id, rtt.count());
  } else {
    // Ours (the key signed it) but not in flight: late (already counted lost), or sent before a
    // restart. Still a probe: archived as one, never delivered.
    spdlog::info("continuity: probe {} back (late, or sent before a restart)", id);
  }
  return true;
}

Result<ContinuityEvent> ContinuityMonitor::start(const std::string& by, const std::string& reason, bool automatic,
                                                 bool* already) {
  return impl_->start_event(by, reason, automatic, already);
}

Result<ContinuityEvent> ContinuityMonitor::stop(const std::string& by, bool* already) {
  return impl_->stop_event(by, already);
}

Result<std::string> ContinuityMonitor::panic_url() {
  auto token = impl_->continuity.issue_token(impl_->config.continuity.token_ttl, "panic");
  if (!token) return token.error();
  return impl_->base_url() + "/continuity/panic?token=" + *token;
}

std::string ContinuityMonitor::admin_base_url() const { return impl_->base_url(); }

}  // namespace mailark::api
