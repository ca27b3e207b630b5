#include "api/http/admin.h"

#include <spdlog/spdlog.h>

#include <map>
#include <nlohmann/json.hpp>

#include "api/blocking.h"
#include "api/http/request.h"
#include "api/http/server.h"
#include "common/json_text.h"
#include "common/secret_file.h"
#include "common/sha256.h"

namespace mailark::api {

using asio::awaitable;
using json = nlohmann::json;

namespace {


std::string page(const std::string& title, const std::string& body) {
  return "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
         "content=\"width=device-width, initial-scale=1\"><title>" +
         http::html_escape(title) +
         "</title><style>body{font-family:sans-serif;max-width:36em;margin:2em auto;padding:0 1em}"
         "button{font-size:1.2em;padding:.6em 1.2em;background:#b00;color:#fff;border:0;border-radius:4px}"
         "input{width:100%;padding:.4em;margin:.5em 0 1em}</style></head><body><h1>" +
         http::html_escape(title) + "</h1>" + body + "</body></html>";
}

}  // namespace

struct AdminServer::Impl {
  asio::io_context& io;
  asio::thread_pool& blocking;
  Archive& archive;
  ContinuityMonitor& monitor;
  ServeConfig config;
  std::string data_dir;
  asio::ssl::context& server_tls;
  std::unique_ptr<http::Server> server;
  std::string token;
  // Refusals per client address in the current minute.
  std::map<std::string, std::pair<std::chrono::steady_clock::time_point, unsigned>> refusals;
  static constexpr unsigned kMaxRefusalsPerMinute = 20;

  Impl(asio::io_context& i, asio::thread_pool& b, Archive& a, ContinuityMonitor& m, const ServeConfig& c, std::string d,
       asio::ssl::context& t)
      : io(i), blocking(b), archive(a), monitor(m), config(c), data_dir(std::move(d)), server_tls(t) {}

  bool throttled(const std::string& ip) {
    auto it = refusals.find(ip);
    if (it == refusals.end()) return false;
    if (std::chrono::steady_clock::now() - it->second.first > std::chrono::minutes(1)) {
      refusals.erase(it);
      return false;
    }
    return it->second.second >= kMaxRefusalsPerMinute;
  }
  void refused(const std::string& ip) {
    auto now = std::chrono::steady_clock::now();
    auto& r = refusals[ip];
    if (now - r.first > std::chrono::minutes(1)) r = {now, 0};
    r.second++;
    if (refusals.size() > 10000) refusals.clear();  // bounded, whatever the number of clients
  }

  bool authorised(const http::Request& req) const {
    std::string auth = req.header("authorization");
    const std::string prefix = "Bearer ";
    if (auth.size() <= prefix.size() || auth.compare(0, prefix.size(), prefix) != 0) return false;
    std::string given = auth.substr(prefix.size());
    return same_secret(given, token);
  }

  static http::Response json_response(int status, const json& j) {
    return http::json_response(status, json_text(j));
  }

  awaitable<http::Response> handle(const http::Request& req, const std::string& ip) {
    const std::string& path = req.path;
    if (throttled(ip)) {
      co_return http::Response{429, "text/plain", "too many refused requests from this address; try again in a minute\n"};
    }
    if (path == "/health" && req.method == "GET") {
      co_return json_response(200, {{"status", "ok"}, {"continuity", continuity_state_name(monitor.snapshot()->state)}});
    }
    if (path == "/continuity/panic") co_return co_await panic(req, ip);
    if (path.rfind("/api/", 0) == 0) {
      if (!authorised(req)) {
        refused(ip);
        spdlog::warn("admin: [{}] {} {}: refused: no valid bearer token", ip, req.method, path);
        co_return http::Response{401, "application/json", "{\"error\":\"a valid bearer token is needed (DATA/admin-token)\"}\n",
                                 {{"WWW-Authenticate", "Bearer realm=\"mailark\""}}};
      }
      if (path == "/api/continuity" && req.method == "GET") {
        std::string body;
        auto read = [&] {
          Continuity c(archive);
          auto st = c.status(50, 20);
          if (!st) {
            body = json_text(json{{"error", st.error().to_string()}});
            return;
          }
          std::optional<QueueRangeFigures> remaining;
          if (st->event && st->state == ContinuityState::kDraining) {
            auto r = archive.queue_range(Route::kPrimary, st->event->drain_from_seq, st->event->last_seq, false);
            if (r) remaining = *r;
          }
          body = status_to_json(*st, remaining);
        };
        co_await run_blocking(blocking, read);
        co_return http::json_response(200, body);
      }
      if ((path == "/api/continuity/start" || path == "/api/continuity/stop") && req.method == "POST") {
        std::string reason;
        if (!req.body.empty()) {
          json j = json::parse(req.body, nullptr, false);
          if (j.is_discarded() || !j.is_object()) co_return json_response(400, {{"error", "the body must be a JSON object"}});
          if (j.contains("reason")) {
            if (!j["reason"].is_string()) co_return json_response(400, {{"error", "reason must be a string"}});
            reason = j["reason"].get<std::string>().substr(0, 1000);
          }
        }
        const bool start = path.ends_with("/start");
        bool already = false;
        Result<ContinuityEvent> ev = make_error(ErrorCode::kInternal, "not run");
        const std::string by = "http:admin-token [" + ip + "]";
        auto go = [&] { ev = start ? monitor.start(by, reason, false, &already) : monitor.stop(by, &already); };
        co_await run_blocking(blocking, go);
        if (!ev) co_return json_response(500, {{"error", ev.error().to_string()}});
        co_return json_response(200, {{"changed", !already}, {"event", ev->id ? json::parse(event_to_json(*ev)) : json(nullptr)}});
      }
      if (path == "/api/continuity/panic-link" && req.method == "POST") {
        Result<std::string> url = make_error(ErrorCode::kInternal, "not run");
        auto go = [&] { url = monitor.panic_url(); };
        co_await run_blocking(blocking, go);
        if (!url) co_return json_response(500, {{"error", url.error().to_string()}});
        co_return json_response(200, {{"url", *url}});
      }
      co_return json_response(404, {{"error", "no such endpoint: " + req.method + " " + path}});
    }
    co_return http::Response{404, "text/plain", "not found\n"};
  }

  awaitable<http::Response> panic(const http::Request& req, const std::string& ip) {
    const bool post = req.method == "POST";
    if (!post && req.method != "GET") co_return http::Response{405, "text/plain", "GET or POST\n", {{"Allow", "GET, POST"}}};
    auto params = http::parse_params(post ? std::string_view(req.body) : std::string_view(req.query));
    const std::string token = params.count("token") ? params["token"] : "";
    const std::string reason = params.count("reason") ? params["reason"].substr(0, 1000) : "";
    Result<TokenCheck> check = make_error(ErrorCode::kInternal, "not run");
    Result<ContinuityEvent> ev = make_error(ErrorCode::kInternal, "not run");
    bool already = false;
    auto go = [&] {
      Continuity c(archive);
      check = post ? c.consume_token(token, "panic-button [" + ip + "]") : c.check_token(token);
      if (post && check && *check == TokenCheck::kValid)
        ev = monitor.start("panic-button [" + ip + "]", reason.empty() ? "panic button" : reason, false, &already);
    };
    co_await run_blocking(blocking, go);
    if (!check) co_return http::Response{500, "text/plain", check.error().to_string() + "\n"};
    if (*check != TokenCheck::kValid) {
      refused(ip);
      spdlog::warn("admin: [{}] panic button refused: token {}", ip, token_check_name(*check));
      co_return http::Response{403, "text/html; charset=utf-8",
                               page("Link not valid", "<p>This panic-button link is " + http::html_escape(token_check_name(*check)) +
                                                          ". Each link works once, for a limited time. Use a link from a newer alert, "
                                                          "or <code>mailark continuity start</code>.</p>"),
                               {{"Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"}}};
    }
    if (!post) {
      co_return http::Response{
          200, "text/html; charset=utf-8",
          page("Start a continuity event?",
               "<p>Inbound mail will be held in mailark instead of being offered to the primary server; users read "
               "it from the archive, and their outgoing mail goes straight out. When the primary works again, stop "
               "the event and the held mail is delivered to it.</p><form method=\"post\" action=\"/continuity/panic\">"
               "<input type=\"hidden\" name=\"token\" value=\"" + http::html_escape(token) +
               "\"><label>Reason (optional)<input name=\"reason\" maxlength=\"200\"></label>"
               "<button type=\"submit\">Start the continuity event</button></form>"),
          {{"Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"}}};
    }
    if (!ev) co_return http::Response{500, "text/plain", ev.error().to_string() + "\n"};
    co_return http::Response{200, "text/html; charset=utf-8",
                             page(already ? "A continuity event is already running" : "Continuity event started",
                                  "<p>Event " + std::to_string(ev->id) +
                                      (already ? " was already running; nothing changed." : " started: inbound mail is now held in mailark.") +
                                      "</p><p>Stop it with <code>mailark continuity stop</code> when the primary works again.</p>"),
                             {{"Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"}}};
  }

};

AdminServer::AdminServer(asio::io_context& io, asio::thread_pool& blocking, Archive& archive, ContinuityMonitor& monitor,
                         const ServeConfig& config, std::string data_dir, asio::ssl::context& server_tls)
    : impl_(std::make_unique<Impl>(io, blocking, archive, monitor, config, std::move(data_dir), server_tls)) {}

AdminServer::~AdminServer() = default;

Status AdminServer::setup() {
  Impl& m = *impl_;
  auto token = read_or_create_secret(m.config.admin.token_file.empty() ? m.data_dir + "/admin-token" : m.config.admin.token_file,
                                     32, 16);
  if (!token) return token.error();
  m.token = *token;
  http::ServerOptions o;
  o.name = "admin";
  o.listen = m.config.admin.listen;
  o.default_port = 8025;
  o.tls = m.config.admin.tls;
  o.max_connections = 100;
  o.max_per_client = 20;
  o.max_requests = 1;  // one request per connection, as before
  Impl* impl = &m;
  m.server = std::make_unique<http::Server>(m.io, m.server_tls, o, [impl](const http::Request& req, const http::Client& c) {
    return impl->handle(req, c.ip);
  });
  return m.server->setup();
}

std::uint16_t AdminServer::port() const { return impl_->server->port(); }

awaitable<void> AdminServer::run() { co_await impl_->server->run(); }

void AdminServer::stop() {
  if (impl_->server) impl_->server->stop();
}

}  // namespace mailark::api
