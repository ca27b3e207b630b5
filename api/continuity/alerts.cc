#include "api/continuity/alerts.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "api/outcall.h"
#include "common/dates.h"
#include "common/json_text.h"
#include "common/exceptions.h"

extern char** environ;

namespace mailark::api {

std::string alert_json(const Alert& a, const std::string& hostname) {
  nlohmann::json j{{"kind", a.kind},       {"summary", a.summary}, {"details", a.details},
                   {"host", hostname},     {"at", a.at},           {"time", rfc5322_date(a.at)},
                   {"counter", a.counter}, {"state", a.state}};
  j["panic_url"] = a.panic_url.empty() ? nlohmann::json(nullptr) : nlohmann::json(a.panic_url);
  return json_text(j);
}

std::string alert_message(const Alert& a, const std::string& hostname, const std::string& from,
                          const std::vector<std::string>& to) {
  std::mt19937_64 rng(std::random_device{}());
  char id[24];
  std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(rng()));
  std::string rcpts;
  for (const auto& t : to) rcpts += (rcpts.empty() ? "<" : ", <") + t + ">";
  std::string m;
  m += "From: mailark on " + hostname + " <" + from + ">\r\n";
  m += "To: " + rcpts + "\r\n";
  // The summary is ours, but keep the header one line whatever it holds.
  std::string subject = "[mailark] " + a.summary;
  for (char& c : subject)
    if (c == '\r' || c == '\n') c = ' ';
  m += "Subject: " + subject + "\r\n";
  m += "Date: " + rfc5322_date(a.at) + "\r\n";
  m += "Message-ID: <alert." + std::string(id) + "@" + hostname + ">\r\n";
  m += "Auto-Submitted: auto-generated\r\n";
  m += "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n";
  std::string body = a.summary + "\n\n" + a.details + "\n";
  if (!a.panic_url.empty()) {
    body += "\nTo start a continuity event (hold inbound mail in mailark, users read it from the archive),\n"
            "open this link (valid once, for 24 hours):\n\n  " + a.panic_url + "\n";
  }
  body += "\nContinuity state: " + a.state + "; failure counter: " + std::to_string(a.counter) + ".\n";
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '\n') m += "\r\n";
    else m += body[i];
  }
  return m;
}

struct Alerter::Impl {
  ServeConfig config;
  std::function<bool(const std::string&, const std::vector<std::string>&)> email;
  struct Job {
    std::string target;  // "webhook <url>", "command", "email"
    Alert alert;
    unsigned attempt = 0;
    std::chrono::steady_clock::time_point due;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> jobs;
  bool stopping = false;
  std::thread thread;

  void loop() {
    std::unique_lock lock(mu);
    while (true) {
      if (stopping) break;
      auto now = std::chrono::steady_clock::now();
      auto it = std::min_element(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) { return a.due < b.due; });
      if (it == jobs.end()) {
        cv.wait(lock);
        continue;
      }
      if (it->due > now) {
        cv.wait_until(lock, it->due);
        continue;
      }
      Job job = std::move(*it);
      jobs.erase(it);
      lock.unlock();
      std::string error;
      try {
        error = attempt(job);
      } catch (...) {  // this thread must not end the server: a failed attempt
        error = "internal error: " + describe_current_exception();
      }
      lock.lock();
      if (error.empty()) {
        spdlog::info("alert {}: sent to {} (attempt {})", job.alert.kind, job.target, job.attempt + 1);
        continue;
      }
      if (job.attempt < config.alerts.retry.size()) {
        unsigned wait = config.alerts.retry[job.attempt];
        spdlog::warn("alert {}: {} failed (attempt {}): {}; trying again in {} s", job.alert.kind, job.target,
                     job.attempt + 1, error, wait);
        job.due = std::chrono::steady_clock::now() + std::chrono::seconds(wait);
        job.attempt++;
        jobs.push_back(std::move(job));
      } else {
        spdlog::error("alert {}: {} failed (attempt {}): {}; giving up", job.alert.kind, job.target, job.attempt + 1, error);
      }
    }
    for (const auto& j : jobs) spdlog::warn("alert {}: {} not sent: shutting down", j.alert.kind, j.target);
  }

  std::string attempt(const Job& job) {
    const std::string json = alert_json(job.alert, config.hostname);
    if (job.target.rfind("webhook ", 0) == 0)
      return post(job.target.substr(8), json, "application/json", config.alerts.webhook_headers, config.alerts.timeout,
                  "mailark-alerts");
    if (job.target == "command")
      return run_command(config.alerts.command, json,
                         {"MAILARK_ALERT_KIND=" + job.alert.kind, "MAILARK_ALERT_SUMMARY=" + job.alert.summary,
                          "MAILARK_ALERT_PANIC_URL=" + job.alert.panic_url},
                         config.alerts.timeout);
    if (job.target == "email") {
      std::string from = config.alerts.from.empty() ? "mailark@" + config.hostname : config.alerts.from;
      if (!email(alert_message(job.alert, config.hostname, from, config.alerts.email), config.alerts.email))
        return "the pipeline is full";
      return "";
    }
    return "unknown target";
  }
};

Alerter::Alerter(const ServeConfig& config,
                 std::function<bool(const std::string&, const std::vector<std::string>&)> email)
    : impl_(std::make_unique<Impl>()) {
  impl_->config = config;
  impl_->email = std::move(email);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  impl_->thread = std::thread([this] { impl_->loop(); });
}

Alerter::~Alerter() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->thread.join();
}

void Alerter::send(const Alert& alert) {
  std::lock_guard lock(impl_->mu);
  const auto now = std::chrono::steady_clock::now();
  for (const auto& url : impl_->config.alerts.webhooks) impl_->jobs.push_back({"webhook " + url, alert, 0, now});
  if (!impl_->config.alerts.email.empty()) impl_->jobs.push_back({"email", alert, 0, now});
  if (!impl_->config.alerts.command.empty()) impl_->jobs.push_back({"command", alert, 0, now});
  if (impl_->config.alerts.webhooks.empty() && impl_->config.alerts.email.empty() && impl_->config.alerts.command.empty())
    spdlog::warn("alert {}: {} (no alert targets configured: [alerts] in the configuration)", alert.kind, alert.summary);
  impl_->cv.notify_all();
}

}  // namespace mailark::api
