// Alerts about the primary: a webhook (JSON POST; SMS gateways take these), e-mail to alternate
// addresses that mailark delivers itself by MX (route internet, never the primary), and an optional
// command. Each target is tried on the alert thread, retried on the configured schedule and logged;
// nothing here runs on the server's event loop or holds up mail (tests/e2e/test_continuity.py
// test_failing_alert_targets_are_retried_and_never_slow_mail).
//
// Thread safety: send() may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "api/config.h"

namespace mailark::api {

struct Alert {
  std::string kind;     // "primary_failing", "primary_still_failing", "primary_recovered", "event_started", "event_stopped",
                        // "disk_short", "disk_ok" (api/disk_reserve.h)
  std::string summary;  // one line: the subject of the e-mail, the text of an SMS
  std::string details;  // a few lines of figures
  std::string panic_url;  // a one-time link that starts an event (empty when an event runs already)
  std::int64_t at = 0;
  std::uint32_t counter = 0;
  std::string state;    // the continuity state
};

std::string alert_json(const Alert& a, const std::string& hostname);
// The alert as an RFC 5322 message from `from` to `to`.
std::string alert_message(const Alert& a, const std::string& hostname, const std::string& from,
                          const std::vector<std::string>& to);

class Alerter {
 public:
  // email: hands an alert message to the server to archive and queue for the internet; returns false
  // when it cannot take it now (it is retried). Called on the alert thread.
  Alerter(const ServeConfig& config, std::function<bool(const std::string& message, const std::vector<std::string>& to)> email);
  ~Alerter();  // stops the thread; alerts still pending are dropped (and logged)
  void send(const Alert& alert);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailark::api
