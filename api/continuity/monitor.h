// The continuity monitor inside `mailark serve`: watches the primary, keeps the window history,
// raises alerts, starts and stops events (automatically when configured), and holds the state the
// rest of the server acts on (engine/continuity.h).
//
// - Organic check: every delivery attempt to the primary (DeliveryAgent's hook) is counted in the
//   current window: delivered, refused (5xx), deferred (4xx), unreachable, with its latency.
// - Synthetic check: every continuity.probe_interval seconds a probe goes to the primary by SMTP,
//   addressed so that the primary relays it back out through mailark's outbound listener. It carries
//   X-Mailark-Probe: <id>.<sent-at>.<HMAC-SHA256 of both, keyed with DATA/continuity-probe.key>; the
//   outbound listener hands that header to probe_arrived(), which recognises only tokens made with
//   this key (a forged or replayed header is ordinary mail). A probe not back within
//   continuity.probe_timeout is lost: a failed window.
// - Each window's figures and the monitor's counter are written to the archive (durable history);
//   alerts, auto_start and auto_stop follow close_window()'s rule.
//
// Thread safety: snapshot() from any thread; start(), stop() and panic_url() from any thread (they
// write the archive: call them off the event loop); everything else on the io_context thread.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "api/config.h"
#include "api/continuity/alerts.h"
#include "api/smtp/delivery.h"
#include "engine/archive.h"
#include "engine/continuity.h"

namespace mailark::api {

class ContinuityMonitor {
 public:
  ContinuityMonitor(asio::io_context& io, asio::thread_pool& blocking, Archive& archive, const ServeConfig& config,
                    std::string data_dir, Alerter& alerter);
  ~ContinuityMonitor();
  // Reads the state and creates the probe key if there is none. Errors: kIo.
  Status setup();

  asio::awaitable<void> run();  // until stop()
  void stop();

  std::shared_ptr<const ContinuitySnapshot> snapshot() const;
  void refresh();  // re-read the state now (after a change made in this process)

  void observe(PrimaryAttempt attempt, std::chrono::milliseconds latency);
  // True when header_value is a token this data folder's key signed: the message is our probe.
  bool probe_arrived(std::string_view header_value);

  // Starting and stopping events, with their log lines and notices. `by` says who.
  Result<ContinuityEvent> start(const std::string& by, const std::string& reason, bool automatic, bool* already);
  Result<ContinuityEvent> stop(const std::string& by, bool* already);
  // A one-time link that starts an event (the panic button), valid continuity.token_ttl seconds.
  Result<std::string> panic_url();
  std::string admin_base_url() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The probe token: "<id>.<sent-at>.<hex HMAC-SHA256(key, "mailark-probe-v1|" id "|" sent-at)>".
std::string probe_token(const std::string& key, const std::string& id, std::int64_t sent_at);
// Checks a token against the key; on success fills id and sent_at.
bool check_probe_token(const std::string& key, std::string_view token, std::string& id, std::int64_t& sent_at);

}  // namespace mailark::api
