#include "api/web/portal.h"
#include "api/dns.h"
#include <filesystem>
#include "common/json_text.h"
#include "engine/checkpoint.h"
#include "engine/export.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>
#include <variant>

#include "api/escaped.h"
#include "api/blocking.h"
#include "api/disk_reserve.h"
#include "api/http/request.h"
#include "api/http/server.h"
#include "api/web/assets.h"
#include "common/ascii.h"
#include "common/base64.h"
#include "common/dates.h"
#include "common/sha256.h"
#include "engine/continuity.h"
#include "engine/index_fields.h"
#include "engine/message_view.h"
#include "engine/metrics.h"
#include "engine/quarantine.h"
#include "engine/retention.h"
#include "indexer/index.h"

namespace mailark::api {

using asio::awaitable;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// The portal's pages: scripts and styles from this server only, no inline code, message HTML only in
// frames from this server, never framed by another site.
constexpr const char* kUiCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
constexpr const char* kApiCsp = "default-src 'none'; frame-ancestors 'none'; sandbox";
constexpr std::size_t kMaxPage = 200;

http::Response error(int status, const std::string& message) {
  http::Response r = http::json_response(status, json_text(json{{"error", message}}));
  r.headers.emplace_back("Content-Security-Policy", kApiCsp);
  return r;
}

http::Response ok_json(const json& j, int status = 200) {
  http::Response r = http::json_response(status, json_text(j));
  r.headers.emplace_back("Content-Security-Policy", kApiCsp);
  return r;
}

json address_json(const std::vector<Address>& list) {
  json out = json::array();
  for (const auto& a : list) out.push_back({{"name", a.name}, {"address", a.addr}});
  return out;
}

json flags_json(const MailEntry& e) {
  json f = json::array();
  if (e.flags & kMsgSeen) f.push_back("seen");
  if (e.flags & kMsgAnswered) f.push_back("answered");
  if (e.flags & kMsgFlagged) f.push_back("flagged");
  if (e.flags & kMsgDeleted) f.push_back("deleted");
  if (e.flags & kMsgDraft) f.push_back("draft");
  for (const auto& k : e.keywords) f.push_back(k);
  return f;
}

// "seen" -> kMsgSeen; other names are keywords (IMAP atoms: no specials, at most 100 bytes).
Status parse_flags(const json& list, std::uint32_t& flags, std::vector<std::string>& keywords) {
  if (!list.is_array()) return make_error(ErrorCode::kInvalidArgument, "flags must be a list of names");
  for (const auto& v : list) {
    if (!v.is_string()) return make_error(ErrorCode::kInvalidArgument, "flags must be a list of names");
    std::string name = v.get<std::string>();
    std::string lower = ascii_lower(name);
    if (lower == "seen" || lower == "\\seen") flags |= kMsgSeen;
    else if (lower == "answered" || lower == "\\answered") flags |= kMsgAnswered;
    else if (lower == "flagged" || lower == "\\flagged") flags |= kMsgFlagged;
    else if (lower == "deleted" || lower == "\\deleted") flags |= kMsgDeleted;
    else if (lower == "draft" || lower == "\\draft") flags |= kMsgDraft;
    else {
      if (name.empty() || name.size() > kMaxKeywordBytes || name.find_first_of("(){ %*\"\\]") != std::string::npos ||
          std::any_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; }))
        return make_error(ErrorCode::kInvalidArgument, "not a flag name: " + name.substr(0, 100));
      keywords.push_back(name);
    }
  }
  return ok_status();
}

std::optional<std::uint64_t> number(std::string_view s, std::uint64_t max = UINT32_MAX) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (v > max) return std::nullopt;
  return v;
}

// A listing's offset and limit (query parameters; absent: 0 and 50). A limit above kMaxPage is
// taken as kMaxPage (the documented page size); what is not a number, a limit of 0 or an offset past
// 2^30 is refused, never read as the default (test_web.py test_paging_parameters_are_checked).
struct Page {
  std::size_t offset = 0, limit = 50;
};
std::optional<Page> page_params(const std::string& offset, const std::string& limit) {
  Page p;
  if (!offset.empty()) {
    auto o = number(offset, 1u << 30);
    if (!o) return std::nullopt;
    p.offset = *o;
  }
  if (!limit.empty()) {
    auto l = number(limit, UINT64_MAX / 2);
    if (!l || *l == 0) return std::nullopt;
    p.limit = std::min<std::size_t>(*l, kMaxPage);
  }
  return p;
}
constexpr const char* kBadPage = "offset and limit are whole numbers (offset at most 1073741824, limit 1 to 200)";

}  // namespace

struct WebPortal::Impl {
  asio::io_context& io;
  asio::ssl::context& tls;
  WebContext& ctx;
  ServeConfig config;
  std::unique_ptr<http::Server> server;
  asio::thread_pool pool{4};  // the portal's blocking work (LMDB, Xapian, the archive, scrypt)

  // Sessions, API tokens and rate buckets are touched on the io thread only.
  struct WebSession {
    std::string key;   // its key in `sessions`: the SHA-256 of the cookie value
    std::string user;  // login name
    std::string csrf;
    std::int64_t created_ms = 0;  // wall clock: the age limit, and the user's sessions_after_ms
    Clock::time_point used;
  };
  static std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  bool expired(const WebSession& s) const {
    return Clock::now() - s.used > std::chrono::minutes(config.web.session_idle_minutes) ||
           now_ms() - s.created_ms > std::int64_t{config.web.session_max_hours} * 3600 * 1000;
  }
  std::unordered_map<std::string, WebSession> sessions;  // by SHA-256 of the cookie value
  struct Bucket {
    double tokens = 0;
    Clock::time_point at;
  };
  std::unordered_map<std::string, Bucket> buckets;

  // Xapian readers, one per pool thread at a time, reopened after any index commit (new mail shows)
  // or when a second old.
  std::mutex readers_mu;
  // A reader, when it was opened and the index's commit count then (ctx.sync_index).
  struct Reader {
    Clock::time_point opened;
    std::uint64_t commits = 0;
    std::unique_ptr<indexer::IndexReader> r;
    explicit operator bool() const { return r != nullptr; }
    indexer::IndexReader* operator->() const { return r.get(); }
  };
  std::vector<Reader> readers;

  struct Caller {
    User user;
    WebSession* session = nullptr;  // null for an API token
  };

  Impl(asio::io_context& i, asio::ssl::context& t, WebContext& c, const ServeConfig& conf)
      : io(i), tls(t), ctx(c), config(conf) {}

  // ---- credentials ----

  bool rate_ok(const std::string& key) {
    const double rate = config.web.requests_per_second, burst = rate * 10;
    auto now = Clock::now();
    if (buckets.size() > 100000) buckets.clear();  // bounded, whatever the number of clients
    auto [it, fresh] = buckets.try_emplace(key, Bucket{burst, now});
    Bucket& b = it->second;
    b.tokens = std::min(burst, b.tokens + rate * std::chrono::duration<double>(now - b.at).count());
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  WebSession* find_session(const http::Request& req) {
    std::string cookie = http::cookie(req, "mailark_session");
    if (cookie.empty() || cookie.size() > 100) return nullptr;
    auto it = sessions.find(to_hex(sha256(cookie)));
    if (it == sessions.end()) return nullptr;
    if (expired(it->second)) {
      sessions.erase(it);
      return nullptr;
    }
    return &it->second;
  }

  // The user of an API token (the mailbox store's tokens table: a token made a moment ago by the
  // CLI in another process works at once, a revoked one stops at once).
  std::optional<User> token_user(const std::string& token) const {
    if (token.size() < 10 || token.size() > 200 || token.rfind("mkt_", 0) != 0) return std::nullopt;
    auto u = ctx.store.find_user_by_token(api_token_hash(token));
    if (!u) return std::nullopt;
    return *u;
  }

  // The caller, or the response that refuses them.
  std::variant<Caller, http::Response> authenticate(const http::Request& req, const http::Client& client) {
    std::string auth = req.header("authorization");
    std::string name;
    WebSession* session = nullptr;
    if (auth.rfind("Bearer ", 0) == 0) {
      auto u = token_user(auth.substr(7));
      if (!u) {
        spdlog::info("web: [{}] {} {}: refused: unknown API token", client.ip, req.method, req.path);
        return error(401, "this API token is not valid");
      }
      if (u->disabled) return error(401, "this account cannot log in");
      return Caller{std::move(*u), nullptr};
    } else {
      session = find_session(req);
      if (!session) return error(401, "log in first (POST /api/v1/login), or send an API token");
      name = session->user;
      // CSRF: unsafe methods with a cookie carry the session's token, and come from this origin.
      if (req.method != "GET" && req.method != "HEAD") {
        if (!same_secret(req.header("x-csrf-token"), session->csrf)) {
          spdlog::warn("web: [{}] {} {}: refused: no valid CSRF token", client.ip, req.method, req.path);
          return error(403, "missing or wrong X-CSRF-Token");
        }
        if (!origin_ok(req)) return error(403, "cross-origin request refused");
      }
      session->used = Clock::now();
    }
    auto user = ctx.store.find_user(name);
    if (!user || user->disabled || (session && session->created_ms <= user->sessions_after_ms)) {
      if (session) sessions.erase(session->key);
      return error(401, "this account cannot log in");
    }
    return Caller{std::move(*user), session};
  }

  static bool origin_ok(const http::Request& req) {
    std::string origin = req.header("origin");
    if (origin.empty()) return true;
    std::string host = req.header("host");
    std::size_t scheme = origin.find("://");
    return scheme != std::string::npos && !host.empty() && ascii_iequals(origin.substr(scheme + 3), host);
  }

  // ---- the request ----

  awaitable<http::Response> handle(const http::Request& req, const http::Client& client) {
    http::Response r = co_await route(req, client);
    static auto& requests_ok = metrics::counter("mailark_http_requests_total", "Web requests by status class", {{"class", "2xx"}});
    static auto& requests_4xx = metrics::counter("mailark_http_requests_total", "Web requests by status class", {{"class", "4xx"}});
    static auto& requests_5xx = metrics::counter("mailark_http_requests_total", "Web requests by status class", {{"class", "5xx"}});
    (r.status >= 500 ? requests_5xx : r.status >= 400 ? requests_4xx : requests_ok).inc();
    r.headers.emplace_back("Referrer-Policy", "no-referrer");
    if (client.tls) r.headers.emplace_back("Strict-Transport-Security", "max-age=31536000");
    co_return r;
  }

  awaitable<http::Response> route(const http::Request& req, const http::Client& client) {
    if (!rate_ok(client.key)) {
      http::Response r = error(429, "too many requests; slow down");
      r.headers.emplace_back("Retry-After", "1");
      co_return r;
    }
    const std::string& path = req.path;
    if (path == "/health") co_return ok_json({{"status", "ok"}});
    if (req.method == "GET" && path.rfind("/api/", 0) != 0 && path != "/metrics") co_return static_file(path);
    if (path == "/api/v1/login") co_return co_await login(req, client);

    auto who = authenticate(req, client);
    if (auto* refusal = std::get_if<http::Response>(&who)) co_return *refusal;
    Caller caller = std::get<Caller>(std::move(who));

    if (path == "/api/v1/logout" && req.method == "POST") {
      if (caller.session) sessions.erase(caller.session->key);
      http::Response r = ok_json({{"ok", true}});
      r.headers.emplace_back("Set-Cookie", cookie_header("", 0, client.tls));
      co_return r;
    }
    if (path == "/api/v1/session" && req.method == "GET") co_return ok_json(session_json(caller));
    if (path == "/api/v1/openapi.json" && req.method == "GET") {
      http::Response r{200, "application/json", std::string(web_asset("openapi.json")->data), {}};
      r.headers.emplace_back("Content-Security-Policy", kApiCsp);
      co_return r;
    }
    if (path == "/api/v1/send" && req.method == "POST") co_return co_await send(caller, req, client);
    if (path.rfind("/api/v1/cases", 0) == 0 || path.rfind("/api/v1/audit", 0) == 0 ||
        path.rfind("/api/v1/exports", 0) == 0) {
      if (caller.user.role != Role::kAuditor && caller.user.role != Role::kAdmin)
        co_return error(403, "this needs the auditor role");
      if (!ctx.cases) co_return error(503, "no case store");
      http::Response out;
      auto work = [&] { out = path.rfind("/api/v1/exports", 0) == 0 ? exports_request(caller, req) : cases_request(caller, req); };
      co_await run_blocking(pool, work);
      co_return out;
    }
    if (path == "/metrics" || path.rfind("/api/v1/admin/", 0) == 0) {
      if (caller.user.role != Role::kAdmin) co_return error(403, "this needs the admin role");
      co_return co_await admin(caller, req, client);
    }
    // Everything else reads or writes the mailbox store, Xapian or the archive: on the pool.
    http::Response out;
    auto work = [&] { out = mailbox_request(caller, req); };
    co_await run_blocking(pool, work);
    co_return out;
  }

  std::string cookie_header(const std::string& value, long max_age, bool secure) const {
    return "mailark_session=" + value + "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" + std::to_string(max_age) +
           (secure ? "; Secure" : "");
  }

  json session_json(const Caller& c) const {
    json j = {{"user", c.user.name},
              {"display_name", c.user.display_name},
              {"role", role_name(c.user.role)},
              {"addresses", c.user.addresses()}};
    if (c.session) j["csrf"] = c.session->csrf;
    if (ctx.monitor) j["continuity"] = continuity_state_name(ctx.monitor->snapshot()->state);
    return j;
  }

  http::Response static_file(const std::string& path) {
    std::string name = path == "/" ? "index.html" : path.substr(1);
    const WebAsset* a = web_asset(name);
    if (!a || name == "openapi.json") {
      // The UI routes in the browser (/#/...) never reach here; anything else is unknown.
      return http::Response{404, "text/plain", "not found\n", {{"Content-Security-Policy", kApiCsp}}};
    }
    http::Response r{200, a->content_type, std::string(a->data, a->size), {}};
    r.headers.emplace_back("Content-Security-Policy", kUiCsp);
    r.headers.emplace_back("X-Frame-Options", "DENY");
    return r;
  }

  awaitable<http::Response> login(const http::Request& req, const http::Client& client) {
    if (req.method != "POST") co_return error(405, "POST {\"user\": ..., \"password\": ...}");
    if (ascii_lower(req.header("content-type")).rfind("application/json", 0) != 0)
      co_return error(415, "send the credentials as JSON");
    if (!origin_ok(req)) co_return error(403, "cross-origin request refused");
    json j = json::parse(req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("user") || !j.contains("password") || !j["user"].is_string() ||
        !j["password"].is_string())
      co_return error(400, "send {\"user\": ..., \"password\": ...}");
    std::string name = j["user"].get<std::string>(), password = j["password"].get<std::string>();
    if (name.size() > 320 || password.size() > 1024) co_return error(400, "credentials too long");
    Authenticator::Answer answer;
    auto check = [&] { answer = ctx.auth.login(name, password, client.ip, "web"); };
    co_await run_blocking(pool, check);
    switch (answer.outcome) {
      case Authenticator::Outcome::kOk: break;
      case Authenticator::Outcome::kThrottled: {
        http::Response r = error(429, "too many failed logins; try again later");
        r.headers.emplace_back("Retry-After", "60");
        co_return r;
      }
      case Authenticator::Outcome::kUnavailable:
        co_return error(503, "the directory cannot be reached; try again later");
      default:
        spdlog::info("web: [{}] login failed for {}", client.ip, name.substr(0, 100));
        co_return error(401, "wrong user name or password");
    }
    if (sessions.size() > 100000) expire_sessions();
    std::string secret = random_token();
    const std::string key = to_hex(sha256(secret));
    WebSession& s = sessions[key] = WebSession{key, answer.user.name, random_token(), now_ms(), Clock::now()};
    spdlog::info("web: [{}] {} logged in", client.ip, answer.user.name);
    Caller c{answer.user, &s};
    http::Response r = ok_json(session_json(c));
    r.headers.emplace_back("Set-Cookie", cookie_header(secret, static_cast<long>(config.web.session_max_hours) * 3600, client.tls));
    co_return r;
  }

  void expire_sessions() { std::erase_if(sessions, [this](const auto& kv) { return expired(kv.second); }); }

  // ---- mailbox (pool thread) ----

  // A reader of the index as it is now, with what was archived before the call searchable
  // (ctx.sync_index); give it back when done. A kept reader is reused while the index has not been
  // committed since it was opened, and for a second at most.
  // With `ask` false (/metrics), nothing is committed for it: it reads what is committed, from a
  // kept reader while the commit count has not moved.
  Reader take_reader(bool ask = true) {
    const std::uint64_t commits = ask ? (ctx.sync_index ? ctx.sync_index() : 0) : (ctx.index_state ? ctx.index_state().commits : 0);
    {
      std::lock_guard lock(readers_mu);
      while (!readers.empty()) {
        Reader k = std::move(readers.back());
        readers.pop_back();
        if (k.commits == commits && Clock::now() - k.opened < std::chrono::seconds(1)) return k;
      }
    }
    auto opened = Clock::now();
    auto r = indexer::IndexReader::open(ctx.index_dir);
    if (!r) return Reader{opened, commits, nullptr};
    return Reader{opened, commits, std::move(*r)};
  }
  void give_reader(Reader r) {
    std::lock_guard lock(readers_mu);
    if (readers.size() < 8 && r.r) readers.push_back(std::move(r));
  }

  // Where each of a user's messages is (archive id -> folder and entry) and the sorted ids a search
  // is filtered to, overall and per folder. Built from every entry of the user's folders, and kept
  // while no folder of the user changed (each folder's UIDNEXT and HIGHESTMODSEQ: a new message, a
  // flag, an expunge or a move changes one), for the last few users who searched.
  struct Located {
    std::uint32_t folder;
    MailEntry entry;
  };
  struct UserIndex {
    std::vector<std::uint64_t> key;  // folder id, uidnext, highest_modseq of each folder
    std::unordered_map<std::uint64_t, Located> where;  // a message in several folders: its first
    std::shared_ptr<std::vector<std::uint32_t>> all;
    std::map<std::uint32_t, std::shared_ptr<std::vector<std::uint32_t>>> by_folder;
  };
  std::mutex user_index_mu;
  std::map<std::uint32_t, std::pair<Clock::time_point, std::shared_ptr<const UserIndex>>> user_indexes;
  static constexpr std::size_t kUserIndexes = 8;

  Result<std::shared_ptr<const UserIndex>> user_index(const User& u) {
    auto folders = ctx.store.folders(u.id);
    if (!folders) return folders.error();
    std::vector<std::uint64_t> key;
    for (const auto& f : *folders) key.insert(key.end(), {f.id, f.uidnext, f.highest_modseq});
    {
      std::lock_guard lock(user_index_mu);
      auto it = user_indexes.find(u.id);
      if (it != user_indexes.end() && it->second.second->key == key) {
        it->second.first = Clock::now();
        return it->second.second;
      }
    }
    auto idx = std::make_shared<UserIndex>();
    idx->key = key;
    idx->all = std::make_shared<std::vector<std::uint32_t>>();
    for (const auto& f : *folders) {
      auto entries = ctx.store.entries(u.id, f.id);
      if (!entries) return entries.error();
      auto ids = std::make_shared<std::vector<std::uint32_t>>();
      ids->reserve(entries->size());
      for (auto& e : *entries) {
        if (e.seq > UINT32_MAX) continue;  // Xapian's document ids are 32 bits
        ids->push_back(static_cast<std::uint32_t>(e.seq));
        idx->where.emplace(e.seq, Located{f.id, std::move(e)});
      }
      std::sort(ids->begin(), ids->end());
      idx->all->insert(idx->all->end(), ids->begin(), ids->end());
      idx->by_folder[f.id] = std::move(ids);
    }
    std::sort(idx->all->begin(), idx->all->end());
    idx->all->erase(std::unique(idx->all->begin(), idx->all->end()), idx->all->end());
    std::lock_guard lock(user_index_mu);
    if (user_indexes.size() >= kUserIndexes && !user_indexes.count(u.id)) {
      auto oldest = std::min_element(user_indexes.begin(), user_indexes.end(),
                                     [](const auto& a, const auto& b) { return a.second.first < b.second.first; });
      user_indexes.erase(oldest);
    }
    user_indexes[u.id] = {Clock::now(), idx};
    return std::shared_ptr<const UserIndex>(idx);
  }

  // A folder's counts, kept while the folder is unchanged (counting reads every entry).
  std::mutex counts_mu;
  std::map<std::uint32_t, std::pair<std::pair<std::uint32_t, std::uint64_t>, FolderCounts>> folder_counts;

  Result<FolderCounts> counts(const User& u, const Folder& f) {
    const auto key = std::make_pair(f.uidnext, f.highest_modseq);
    {
      std::lock_guard lock(counts_mu);
      auto it = folder_counts.find(f.id);
      if (it != folder_counts.end() && it->second.first == key) return it->second.second;
    }
    auto c = ctx.store.counts(u.id, f.id);
    if (!c) return c.error();
    std::lock_guard lock(counts_mu);
    if (folder_counts.size() > 100000) folder_counts.clear();
    folder_counts[f.id] = {key, *c};
    return *c;
  }

  json summary_json(std::uint32_t folder, const MailEntry& e, const std::optional<indexer::Summary>& s) {
    json j = {{"folder", folder}, {"uid", e.uid}, {"id", e.seq}, {"flags", flags_json(e)}};
    if (s) {
      j["from"] = s->from;
      j["subject"] = s->subject;
      j["date"] = s->date ? iso8601_date(s->date) : "";
      j["size"] = s->size;
      j["attachment"] = s->attachment;
    } else {
      // Not indexed yet (seconds after arrival): read from the archive.
      auto rec = ctx.archive.record(e.seq);
      auto raw = rec ? ctx.archive.raw(*rec) : Result<std::string>(rec.error());
      if (raw) {
        MessageView v = view_message(*raw, 1024);
        j["from"] = v.from.empty() ? "" : v.from[0].to_string();
        j["subject"] = v.subject;
        j["date"] = v.date ? iso8601_date(*v.date) : "";
        j["size"] = raw->size();
        j["attachment"] = !v.attachments.empty();
      }
    }
    return j;
  }

  http::Response mailbox_request(const Caller& c, const http::Request& req) {
    const auto parts = http::split_path(req.path);  // "api", "v1", ...
    if (parts.size() < 3 || parts[0] != "api" || parts[1] != "v1") return error(404, "no such endpoint");
    const std::string& what = parts[2];
    const auto params = http::parse_params(req.query);
    auto param = [&](const char* name) -> std::string {
      auto it = params.find(name);
      return it == params.end() ? "" : it->second;
    };
    const User& u = c.user;

    if (what == "folders" && parts.size() == 3) {
      if (req.method == "GET") {
        auto folders = ctx.store.folders(u.id);
        if (!folders) return error(500, folders.error().to_string());
        json list = json::array();
        for (const auto& f : *folders) {
          auto c = counts(u, f);
          list.push_back({{"id", f.id}, {"name", f.name}, {"special_use", f.special_use},
                          {"messages", c ? c->messages : 0}, {"unseen", c ? c->unseen : 0}});
        }
        return ok_json({{"folders", list}});
      }
      if (req.method == "POST") {
        json j = json::parse(req.body, nullptr, false);
        if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return error(400, "send {\"name\": ...}");
        auto f = ctx.store.create_folder(u.id, j["name"].get<std::string>());
        if (!f) return error(400, f.error().to_string());
        return ok_json({{"id", f->id}, {"name", f->name}}, 201);
      }
      return error(405, "GET or POST");
    }
    if (what == "folders" && parts.size() >= 4) {
      auto fid = number(parts[3]);
      if (!fid) return error(404, "no such folder");
      auto folder = ctx.store.folder_by_id(u.id, static_cast<std::uint32_t>(*fid));
      if (!folder) return error(404, "no such folder");
      if (parts.size() == 4 && req.method == "DELETE") {
        if (folder->name == "INBOX") return error(400, "INBOX cannot be deleted");
        auto s = ctx.store.delete_folder(u.id, folder->name);
        if (!s) return error(400, s.error().to_string());
        return ok_json({{"deleted", folder->id}});
      }
      if (parts.size() == 4 && req.method == "PATCH") {
        json j = json::parse(req.body, nullptr, false);
        if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return error(400, "send {\"name\": ...}");
        auto s = ctx.store.rename_folder(u.id, folder->name, j["name"].get<std::string>());
        if (!s) return error(400, s.error().to_string());
        return ok_json({{"renamed", folder->id}});
      }
      if (parts.size() == 5 && parts[4] == "messages" && req.method == "GET") {
        auto paging = page_params(param("offset"), param("limit"));
        if (!paging) return error(400, kBadPage);
        const std::size_t offset = paging->offset;
        auto page = ctx.store.entries_page(u.id, folder->id, offset, paging->limit);
        if (!page) return error(500, page.error().to_string());
        std::vector<std::uint64_t> ids;
        for (const auto& e : *page) ids.push_back(e.seq);
        std::vector<std::optional<indexer::Summary>> sums(ids.size());
        // No commit for a listing (the page refreshes every 30 s): a message the index has not
        // committed yet is read from the archive (summary_json).
        if (auto reader = take_reader(/*ask=*/false)) {
          sums = reader->summaries(ids);
          give_reader(std::move(reader));
        }
        json list = json::array();
        for (std::size_t i = 0; i < page->size(); ++i) list.push_back(summary_json(folder->id, (*page)[i], sums[i]));
        auto c = counts(u, *folder);
        return ok_json({{"folder", folder->id}, {"name", folder->name}, {"total", c ? c->messages : 0},
                        {"unseen", c ? c->unseen : 0}, {"offset", offset}, {"messages", list}});
      }
      return error(404, "no such endpoint");
    }
    if (what == "messages" && parts.size() >= 5) return message_request(c, req, parts, params);
    if (what == "search" && req.method == "GET") return search(c, param("q"), param("folder"), param("offset"), param("limit"));
    if (what == "tokens") return tokens(c, req, parts);
    return error(404, "no such endpoint: " + req.method + " " + req.path);
  }

  http::Response message_request(const Caller& c, const http::Request& req, const std::vector<std::string>& parts,
                                 const std::map<std::string, std::string>& params) {
    const User& u = c.user;
    auto fid = number(parts[3]);
    auto uid = number(parts[4]);
    if (!fid || !uid) return error(404, "no such message");
    const auto folder_id = static_cast<std::uint32_t>(*fid);
    // The store checks the folder is this user's (Mailbox.AnotherUsersFolderIsNeverReached).
    auto entries = ctx.store.entries(u.id, folder_id);
    if (!entries) return error(404, "no such message");
    auto it = std::lower_bound(entries->begin(), entries->end(), static_cast<std::uint32_t>(*uid),
                               [](const MailEntry& e, std::uint32_t v) { return e.uid < v; });
    if (it == entries->end() || it->uid != *uid) return error(404, "no such message");
    MailEntry entry = *it;
    const std::string sub = parts.size() > 5 ? parts[5] : "";

    if (sub == "flags" && req.method == "POST") {
      json j = json::parse(req.body, nullptr, false);
      if (!j.is_object()) return error(400, "send {\"add\": [...], \"remove\": [...]}");
      for (const char* key : {"add", "remove"}) {
        if (!j.contains(key)) continue;
        FlagChange ch;
        ch.mode = std::string(key) == "add" ? FlagMode::kAdd : FlagMode::kRemove;
        if (auto s = parse_flags(j[key], ch.flags, ch.keywords); !s) return error(400, s.error().context);
        auto out = ctx.store.change_flags(u.id, folder_id, {entry.uid}, ch);
        if (!out) return error(400, out.error().to_string());
        if (!out->changed.empty()) entry = out->changed.front();
      }
      return ok_json({{"folder", folder_id}, {"uid", entry.uid}, {"flags", flags_json(entry)}});
    }
    if (sub == "move" && req.method == "POST") {
      json j = json::parse(req.body, nullptr, false);
      if (!j.is_object() || !j.contains("to") || !j["to"].is_number_unsigned()) return error(400, "send {\"to\": folder id}");
      auto to = ctx.store.folder_by_id(u.id, j["to"].get<std::uint32_t>());
      if (!to) return error(404, "no such folder");
      auto out = ctx.store.copy(u.id, folder_id, {entry.uid}, to->id, /*move=*/true);
      if (!out) return error(400, out.error().to_string());
      return ok_json({{"folder", to->id}, {"uid", out->uids.empty() ? 0 : out->uids[0].second}});
    }
    if (sub.empty() && req.method == "DELETE") {
      // To Trash; from Trash, for good (the archive keeps it either way).
      auto folders = ctx.store.folders(u.id);
      std::optional<Folder> trash;
      if (folders)
        for (const auto& f : *folders)
          if (f.special_use == "\\Trash") trash = f;
      if (trash && trash->id != folder_id) {
        auto out = ctx.store.copy(u.id, folder_id, {entry.uid}, trash->id, true);
        if (!out) return error(400, out.error().to_string());
        return ok_json({{"moved_to", trash->id}});
      }
      FlagChange ch;
      ch.flags = kMsgDeleted;
      if (auto s = ctx.store.change_flags(u.id, folder_id, {entry.uid}, ch); !s) return error(400, s.error().to_string());
      auto out = ctx.store.expunge(u.id, folder_id, std::vector<std::uint32_t>{entry.uid});
      if (!out) return error(400, out.error().to_string());
      return ok_json({{"expunged", entry.uid}});
    }
    if (req.method != "GET") return error(405, "no such endpoint");

    auto rec = ctx.archive.record(entry.seq);
    if (!rec) return error(500, rec.error().to_string());
    auto raw = ctx.archive.raw(*rec);
    if (!raw) return error(500, raw.error().to_string());
    // A view (the message, or its raw bytes) is an audit entry, as `mailark show` is; refused
    // when the entry cannot be written.
    if (req.method == "GET" && (sub.empty() || sub == "raw")) {
      if (Status a = audit(c, sub.empty() ? "show" : "show.raw", std::to_string(entry.seq),
                           {{"folder", folder_id}, {"uid", entry.uid}});
          !a)
        return error(503, a.error().to_string());
    }

    if (sub.empty()) {
      MessageView v = view_message(*raw);
      json headers = json::array();
      for (const auto& [name, value] : v.headers) headers.push_back({name, value});
      json atts = json::array();
      for (const auto& a : v.attachments)
        atts.push_back({{"section", a.section}, {"content_type", a.content_type}, {"filename", a.filename},
                        {"size", a.size}, {"inline", a.inline_image}});
      auto p = params.find("peek");
      if ((p == params.end() || p->second != "1") && !(entry.flags & kMsgSeen)) {
        FlagChange ch;
        ch.flags = kMsgSeen;
        auto out = ctx.store.change_flags(u.id, folder_id, {entry.uid}, ch);
        if (out && !out->changed.empty()) entry = out->changed.front();
      }
      json j = {{"folder", folder_id},
                {"uid", entry.uid},
                {"id", entry.seq},
                {"flags", flags_json(entry)},
                {"subject", v.subject},
                {"message_id", v.message_id},
                {"in_reply_to", v.in_reply_to},
                {"date", v.date ? iso8601_date(*v.date) : ""},
                {"from", address_json(v.from)},
                {"to", address_json(v.to)},
                {"cc", address_json(v.cc)},
                {"reply_to", address_json(v.reply_to)},
                {"text", v.text},
                {"has_html", v.has_html},
                {"remote_images", v.remote_images},
                {"attachments", atts},
                {"headers", headers},
                {"size", raw->size()},
                {"verdict", scanner::verdict_name(rec->verdict.kind)},
                {"received_at", iso8601_date(rec->envelope.received_at)}};
      return ok_json(j);
    }
    if (sub == "html") {
      auto p = params.find("images");
      const bool images = p != params.end() && p->second == "1";
      unsigned blocked = 0;
      std::string body = view_html(*raw, images, &blocked);
      std::string doc =
          "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">"
          "<style>body{font-family:system-ui,sans-serif;font-size:15px;margin:8px;overflow-wrap:anywhere;color:#111}"
          "img{max-width:100%;height:auto}table{max-width:100%}pre{white-space:pre-wrap}</style></head><body>" +
          body + "</body></html>";
      // Defence in depth behind the sanitiser: nothing runs, nothing loads but inline styles and the
      // images allowed, and the document is sandboxed even when opened on its own.
      std::string csp = std::string("default-src 'none'; style-src 'unsafe-inline'; img-src data:") +
                        (images ? " https: http:" : "") +
                        "; form-action 'none'; base-uri 'none'; frame-ancestors 'self'; "
                        "sandbox allow-popups allow-popups-to-escape-sandbox";
      http::Response r{200, "text/html; charset=utf-8", std::move(doc), {}};
      r.headers.emplace_back("Content-Security-Policy", csp);
      r.headers.emplace_back("X-Frame-Options", "SAMEORIGIN");
      r.headers.emplace_back("X-Remote-Images-Blocked", std::to_string(blocked));
      return r;
    }
    if (sub == "raw") {
      http::Response r{200, "message/rfc822", std::move(*raw), {}};
      r.headers.emplace_back("Content-Disposition", http::attachment_disposition("message-" + std::to_string(entry.seq) + ".eml"));
      r.headers.emplace_back("Content-Security-Policy", kApiCsp);
      return r;
    }
    if (sub == "parts" && parts.size() == 7) {
      auto part = part_content(*raw, parts[6], ctx.max_message_bytes);
      if (!part) return error(404, "no such part");
      // Always a download, never rendered in the portal's origin; HTML and SVG as plain bytes.
      std::string type = part->content_type;
      if (type == "text/html" || type.find("svg") != std::string::npos || type.find("xml") != std::string::npos ||
          type.find("javascript") != std::string::npos || type.find_first_of(" ;\"\r\n") != std::string::npos)
        type = "application/octet-stream";
      std::string name = part->filename.empty() ? "part-" + parts[6] : part->filename;
      http::Response r{200, type, std::move(part->bytes), {}};
      r.headers.emplace_back("Content-Disposition", http::attachment_disposition(name));
      r.headers.emplace_back("Content-Security-Policy", kApiCsp);
      return r;
    }
    return error(404, "no such endpoint");
  }

  // An audit entry for what the caller did (pool thread). Fail closed: callers refuse on error (503,
  // nothing shown: tests/e2e/test_failures.py test_a_web_view_whose_audit_entry_cannot_be_written_shows_nothing).
  Status audit(const Caller& c, const std::string& action, const std::string& target, const json& detail) {
    return audit_as(c.user.name, action, target, detail);
  }
  Status audit_as(const std::string& user, const std::string& action, const std::string& target, const json& detail) {
    if (!ctx.cases) return ok_status();
    auto e = ctx.cases->audit("web:" + user, action, target, json_text(detail));
    if (!e) return Error{e.error().code, "cannot write the audit log: " + e.error().context, ""};
    return ok_status();
  }

  // /api/v1/cases and /api/v1/audit, for the auditor and admin roles (pool thread): the same cases
  // and log as `mailark case` and `mailark audit`.
  http::Response cases_request(const Caller& c, const http::Request& req) {
    const auto parts = http::split_path(req.path);  // "api", "v1", "cases", ID, ...
    const std::string actor = "web:" + c.user.name;
    auto answer = [](const Result<Case>& r) {
      if (!r) return error(r.error().code == ErrorCode::kNotFound ? 404 : 400, r.error().to_string());
      return ok_json(case_to_json(*r));
    };
    json body = req.body.empty() ? json::object() : json::parse(req.body, nullptr, false);
    auto text = [&](const char* name) {
      return body.is_object() && body.contains(name) && body[name].is_string() ? body[name].get<std::string>()
                                                                                : std::string();
    };
    if (parts.size() == 3 && parts[2] == "audit" && req.method == "GET") {
      const auto params = http::parse_params(req.query);
      auto since = params.count("since") ? number(params.at("since")) : std::optional<std::uint64_t>(1);
      auto limit = params.count("limit") ? number(params.at("limit"), 10000) : std::optional<std::uint64_t>(100);
      if (!since || !limit) return error(400, "since and limit are numbers (limit at most 10000)");
      auto entries = ctx.cases->audit_entries(*since, *limit);
      if (!entries) return error(500, entries.error().to_string());
      json list = json::array();
      for (const auto& e : *entries) list.push_back(audit_to_json(e));
      return ok_json({{"entries", list}});
    }
    if (parts.size() < 3 || parts[2] != "cases") return error(404, "no such endpoint");
    if (req.method != "GET" && !body.is_object()) return error(400, "send a JSON object");
    if (parts.size() == 3) {
      if (req.method == "GET") {
        auto list = ctx.cases->list();
        if (!list) return error(500, list.error().to_string());
        json out = json::array();
        for (const auto& k : *list) out.push_back(case_to_json(k));
        return ok_json({{"cases", out}});
      }
      if (req.method == "POST") {
        std::vector<std::string> custodians;
        if (body.contains("custodians")) {
          if (!body["custodians"].is_array()) return error(400, "custodians is a list of names");
          for (const auto& x : body["custodians"]) {
            if (!x.is_string()) return error(400, "custodians is a list of names");
            custodians.push_back(x.get<std::string>());
          }
        }
        auto made = ctx.cases->create(text("name"), text("description"), custodians, actor);
        if (!made) return error(400, made.error().to_string());
        return ok_json(case_to_json(*made), 201);
      }
      return error(405, "GET or POST");
    }
    auto found = ctx.cases->find(parts[3]);
    if (!found) return answer(found);
    const std::uint32_t id = found->id;
    if (parts.size() == 4 && req.method == "GET") {
      json j = case_to_json(*found);
      for (std::size_t i = 0; i < found->searches.size(); ++i) {
        auto n = count_saved(case_query(*found, found->searches[i]));
        if (!n) return error(400, n.error().to_string());
        j["searches"][i]["messages"] = *n;
      }
      if (Status a = audit(c, "case.show", found->name, json::object()); !a) return error(503, a.error().to_string());
      return ok_json(j);
    }
    if (parts.size() != 5 || req.method != "POST") return error(404, "no such endpoint");
    const std::string& what = parts[4];
    if (what == "searches") {
      SavedSearch s{text("query"), text("from"), text("to"), 0, ""};
      std::string query = case_query(*found, s);
      auto reader = take_reader();
      if (!reader) return error(503, "the index cannot be opened");
      indexer::SearchOptions opts;
      opts.exact_total = true;
      opts.limit = 100;
      opts.scope = case_scope(*found, s);  // the typed search within the bounds, the case's scope outside
      opts.one_per_message = ctx.archive.counters().has_copies();  // as the CLI's archive-wide search
      ArchiveFieldSource phrases(ctx.archive, ctx.limits);
      auto res = reader->search(s.query, opts, &phrases);
      give_reader(std::move(reader));
      if (!res) return error(res.error().code == ErrorCode::kInvalidArgument ? 400 : 500, res.error().to_string());
      bool save = body.value("save", false);
      if (save) {
        auto saved = ctx.cases->add_search(id, s, actor);
        if (!saved) return error(400, saved.error().to_string());
      }
      if (Status a = audit(c, "case.search", found->name, {{"query", query}, {"total", res->total}}); !a)
        return error(503, a.error().to_string());
      json hits = json::array();
      for (const auto& h : res->hits)
        hits.push_back({{"id", h.id}, {"date", iso8601_date(h.date)}, {"from", h.from}, {"subject", h.subject}});
      return ok_json({{"query", query}, {"total", res->total}, {"saved", save}, {"messages", hits}});
    }
    if (what == "hold") {
      if (!body.contains("hold") || !body["hold"].is_boolean()) return error(400, "send {\"hold\": true|false, \"reason\": ...}");
      bool hold = body["hold"].get<bool>();
      if (!hold && text("reason").empty()) return error(400, "a hold is lifted with a reason");
      return answer(ctx.cases->set_hold(id, hold, text("reason"), actor));
    }
    if (what == "export") {
      if (body.is_object() && body.contains("async") && !body["async"].is_boolean()) return error(400, "async is true or false");
      return export_case(c, *found, text("format"), body.is_object() && body.value("async", false));
    }
    if (what == "notes") return answer(ctx.cases->add_note(id, text("text"), actor));
    if (what == "close") return answer(ctx.cases->close(id, actor));
    return error(404, "no such endpoint");
  }

  // POST /api/v1/cases/{id}/export: every message of the case's saved searches, as `mailark case
  // export` writes them (manifest, proofs, signed checkpoint), written to DATA/tmp and sent from there
  // a chunk at a time (http::Response::file), then removed. An audit entry, or no export (pool thread).
  // With "async": true, a job instead (below): 202 at once, the zip fetched when it is written.
  http::Response export_case(const Caller& c, const Case& found, std::string format, bool async) {
    if (format.empty()) format = "eml";
    if (format != "eml" && format != "mbox") return error(400, "format is eml or mbox");
    if (found.searches.empty()) return error(400, "the case has no saved search: save one first");
    if (ctx.data_dir.empty()) return error(503, "exports are not set up");
    if (async) return start_export_job(c, found, format);
    int status = 500;
    auto made = write_case_export(c.user.name, found, format, nullptr, nullptr, status);
    if (!made) return error(status, made.error().to_string());
    http::Response r{200, "application/zip", "", {}};
    r.headers.emplace_back("Content-Disposition", "attachment; filename=\"case-" + std::to_string(found.id) + "." +
                                                      (format == "mbox" ? "mbox" : "eml") + ".zip\"");
    r.headers.emplace_back("X-Mailark-Messages", std::to_string(made->report.messages));
    r.headers.emplace_back("X-Mailark-Manifest-SHA256", made->report.manifest_sha256);
    r.headers.emplace_back("X-Mailark-Unsearchable", std::to_string(made->report.exceptions.unsearchable));
    r.headers.emplace_back("X-Mailark-Older-Reading", std::to_string(made->report.exceptions.older_reading));
    r.file = made->path;
    r.remove_file = true;
    return r;
  }

  struct CaseExport {
    std::string path;  // DATA/tmp/export-*.zip: the caller's to send and remove
    ExportReport report;
  };
  // Writes a case's export with its audit entry (any thread but the io thread); on an error, nothing
  // is left behind and `status` is the HTTP status that says it.
  Result<CaseExport> write_case_export(const std::string& user, const Case& found, const std::string& format,
                                       std::function<void(std::uint64_t, std::uint64_t)> progress,
                                       std::function<bool()> cancelled, int& status) {
    const std::string query = case_all_query(found);
    status = 503;
    MAILARK_ASSIGN_OR_RETURN(SigningKey key, archive_signing_key(ctx.data_dir, /*create=*/true));
    ExportRequest req;
    req.container = format == "mbox" ? ExportContainer::kMbox : ExportContainer::kEml;
    req.query = query;
    req.case_name = found.name;
    req.created_by = "web:" + user;
    req.progress = std::move(progress);
    // An export can be as large as the archive: it stops when the disk falls under the reserve kept
    // for mail, before it starts and every 256 messages (tests/e2e/test_failures.py
    // test_a_disk_short_of_its_reserve_refuses_new_mail_and_keeps_what_it_took, and
    // test_a_case_export_that_crosses_the_reserve_midway_stops_and_leaves_nothing).
    bool disk_short = false;
    req.cancelled = [this, cancelled = std::move(cancelled), &disk_short] {
      if (cancelled && cancelled()) return true;
      disk_short = ctx.disk && !ctx.disk->room_for(0, "export");
      return disk_short;
    };
    auto reader = take_reader();
    if (!reader) return make_error(ErrorCode::kIo, "the index cannot be opened");
    struct GiveBack {
      Impl& p;
      Reader& r;
      ~GiveBack() { p.give_reader(std::move(r)); }
    } give_back{*this, reader};
    {
      ArchiveFieldSource phrases(ctx.archive, ctx.limits);
      auto ids = export_matches(*reader.r, query, ctx.archive.counters().has_copies(), &phrases);
      if (!ids) {
        status = ids.error().code == ErrorCode::kInvalidArgument ? 400 : 500;
        return ids.error();
      }
      req.ids = std::move(*ids);
    }
    req.message_ids = [&](const std::vector<std::uint64_t>& batch) { return reader->message_ids(batch); };
    std::error_code ec;
    std::filesystem::create_directories(ctx.data_dir + "/tmp", ec);
    req.path = ctx.data_dir + "/tmp/export-" + random_token(12) + ".zip";
    auto rep = req.cancelled() ? Result<ExportReport>(make_error(ErrorCode::kInternal, "the export was cancelled"))
                               : write_export(ctx.archive, key, req);
    if (!rep) {
      std::remove(req.path.c_str());
      status = 500;
      if (disk_short) {
        status = 507;
        return make_error(ErrorCode::kIo,
                          "the export stopped: the data folder's disk is short of the room kept for mail "
                          "(limits.disk_reserve_bytes); export a smaller case, or free space");
      }
      return rep.error();
    }
    auto exceptions = search_exceptions(*reader.r);
    if (!exceptions) {
      std::remove(req.path.c_str());
      status = 500;
      return exceptions.error();
    }
    rep->exceptions = *exceptions;
    if (Status a = audit_as(user, "export", query,
                            {{"case", found.name}, {"via", "rest"}, {"messages", rep->messages},
                             {"manifest_sha256", rep->manifest_sha256},
                             {"unsearchable", rep->exceptions.unsearchable},
                             {"older_reading", rep->exceptions.older_reading}});
        !a) {
      std::remove(req.path.c_str());
      status = 503;
      return a.error();
    }
    return CaseExport{req.path, *rep};
  }

  // ---- export jobs ----
  // A large case's export takes minutes (a million messages: about two): a browser or a proxy should
  // not hold a request open that long. A job runs on the portal's export thread, one at a time (the
  // others wait their turn), says how far it got, and keeps its zip in DATA/tmp until its owner
  // deletes it, or an hour after it finished (and at the next start: leftovers are removed). Only
  // its owner (or an admin) sees it. Test: test_web.py test_case_export_as_a_job.
  struct ExportJob {
    std::string id, owner, format, case_name;
    std::uint64_t case_id = 0;
    std::atomic<std::uint64_t> done{0}, total{0};
    std::atomic<bool> cancelled{false};
    std::mutex mu;  // guards the rest
    std::string state = "queued";  // queued, running, done, failed
    std::string error;
    CaseExport result;
    Clock::time_point finished{};
  };
  static constexpr std::size_t kMaxExportJobs = 16;  // kept at once, finished ones included
  std::mutex jobs_mu;
  std::map<std::string, std::shared_ptr<ExportJob>> jobs;
  std::atomic<bool> stopping{false};
  asio::thread_pool exporter{1};

  json job_json(ExportJob& j) {
    std::lock_guard lock(j.mu);
    json out = {{"job", j.id},       {"state", j.state},         {"case", j.case_name}, {"case_id", j.case_id},
                {"format", j.format}, {"done", j.done.load()}, {"total", j.total.load()}};
    if (j.state == "failed") out["error"] = j.error;
    if (j.state == "done") {
      out["messages"] = j.result.report.messages;
      out["manifest_sha256"] = j.result.report.manifest_sha256;
      // What the search could not judge (engine/export.h SearchExceptions): the officer is told.
      out["unsearchable"] = j.result.report.exceptions.unsearchable;
      out["older_reading"] = j.result.report.exceptions.older_reading;
      out["file"] = "/api/v1/exports/" + j.id + "/file";
    }
    return out;
  }

  // Forgets finished jobs older than an hour, their files with them (jobs_mu held).
  void expire_jobs() {
    const auto now = Clock::now();
    std::erase_if(jobs, [&](const auto& kv) {
      ExportJob& j = *kv.second;
      std::lock_guard lock(j.mu);
      if ((j.state != "done" && j.state != "failed") || now - j.finished < std::chrono::hours(1)) return false;
      if (!j.result.path.empty()) std::remove(j.result.path.c_str());
      return true;
    });
  }

  http::Response start_export_job(const Caller& c, const Case& found, const std::string& format) {
    auto job = std::make_shared<ExportJob>();
    job->id = random_token(16);
    job->owner = c.user.name;
    job->format = format;
    job->case_name = found.name;
    job->case_id = found.id;
    {
      std::lock_guard lock(jobs_mu);
      expire_jobs();
      if (jobs.size() >= kMaxExportJobs) return error(429, "too many exports kept: delete finished ones first");
      jobs[job->id] = job;
    }
    asio::post(exporter, [this, job, found] {
      {
        std::lock_guard lock(job->mu);
        if (job->cancelled || stopping) {
          job->state = "failed";
          job->error = "cancelled";
          job->finished = Clock::now();
          return;
        }
        job->state = "running";
      }
      int status = 500;
      Result<CaseExport> made = make_error(ErrorCode::kInternal, "the export did not run");
      try {  // a throw here would leave the exporter's thread, and end the server
        made = write_case_export(
            job->owner, found, job->format,
            [job](std::uint64_t d, std::uint64_t t) {
              job->done = d;
              job->total = t;
            },
            [this, job] { return stopping.load() || job->cancelled.load(); }, status);
      } catch (...) {  // of any type (api/escaped.h): Xapian's errors are not std::exceptions
        made = make_error(ErrorCode::kInternal, "internal error: " + describe_escaped(std::current_exception()));
      }
      std::lock_guard lock(job->mu);
      job->finished = Clock::now();
      if (!made) {
        job->state = "failed";
        job->error = made.error().to_string();
        spdlog::warn("web: the export of case {} for {} failed: {}", job->case_name, job->owner, job->error);
        return;
      }
      if (job->cancelled) {  // deleted while it was written
        std::remove(made->path.c_str());
        job->state = "failed";
        job->error = "cancelled";
        return;
      }
      job->state = "done";
      job->result = std::move(*made);
    });
    http::Response r = ok_json(job_json(*job), 202);
    r.headers.emplace_back("Location", "/api/v1/exports/" + job->id);
    return r;
  }

  // /api/v1/exports[/{job}[/file]] (pool thread): the caller's jobs (an admin's: everyone's), one
  // job, its zip once written; DELETE cancels it or removes its zip.
  http::Response exports_request(const Caller& c, const http::Request& req) {
    const auto parts = http::split_path(req.path);  // "api", "v1", "exports", JOB, "file"
    std::lock_guard lock(jobs_mu);
    expire_jobs();
    auto mine = [&](const ExportJob& j) { return j.owner == c.user.name || c.user.role == Role::kAdmin; };
    if (parts.size() == 3 && req.method == "GET") {
      json list = json::array();
      for (auto& [id, j] : jobs)
        if (mine(*j)) list.push_back(job_json(*j));
      return ok_json({{"exports", list}});
    }
    if (parts.size() < 4 || parts.size() > 5) return error(404, "no such endpoint");
    auto it = jobs.find(parts[3]);
    if (it == jobs.end() || !mine(*it->second)) return error(404, "no such export");
    ExportJob& j = *it->second;
    if (parts.size() == 4 && req.method == "GET") return ok_json(job_json(j));
    if (parts.size() == 4 && req.method == "DELETE") {
      j.cancelled = true;
      {
        std::lock_guard job_lock(j.mu);
        if (!j.result.path.empty()) std::remove(j.result.path.c_str());
      }
      jobs.erase(it);
      return ok_json({{"deleted", parts[3]}});
    }
    if (parts.size() == 5 && parts[4] == "file" && req.method == "GET") {
      std::lock_guard job_lock(j.mu);
      if (j.state != "done") return error(409, "the export is " + j.state + (j.error.empty() ? "" : ": " + j.error));
      http::Response r{200, "application/zip", "", {}};
      r.headers.emplace_back("Content-Disposition", "attachment; filename=\"case-" + std::to_string(j.case_id) + "." +
                                                        j.format + ".zip\"");
      r.headers.emplace_back("X-Mailark-Messages", std::to_string(j.result.report.messages));
      r.headers.emplace_back("X-Mailark-Manifest-SHA256", j.result.report.manifest_sha256);
      r.headers.emplace_back("X-Mailark-Unsearchable", std::to_string(j.result.report.exceptions.unsearchable));
      r.headers.emplace_back("X-Mailark-Older-Reading", std::to_string(j.result.report.exceptions.older_reading));
      r.file = j.result.path;  // kept: fetched again until deleted or expired
      return r;
    }
    return error(404, "no such endpoint");
  }

  // Every match of an archive-wide query, counted exactly (pool thread).
  // A case's saved search, counted exactly: outside the query's bounds, as its export and its hold
  // (indexer::SearchOptions::bounded; the typed part ran within them when it was saved).
  Result<std::uint64_t> count_saved(const std::string& query) {
    auto reader = take_reader();
    if (!reader) return make_error(ErrorCode::kIo, "the index cannot be opened");
    indexer::SearchOptions opts;
    opts.exact_total = true;
    opts.limit = 0;
    opts.bounded = false;
    opts.one_per_message = ctx.archive.counters().has_copies();
    ArchiveFieldSource phrases(ctx.archive, ctx.limits);
    auto res = reader->search(query, opts, &phrases);
    give_reader(std::move(reader));
    if (!res) return res.error();
    return res->total;
  }

  http::Response search(const Caller& c, const std::string& q, const std::string& folder_param,
                        const std::string& offset_param, const std::string& limit_param) {
    if (q.size() > 2000) return error(400, "query too long");
    auto paging = page_params(offset_param, limit_param);
    if (!paging) return error(400, kBadPage);
    std::optional<std::uint32_t> only;
    if (!folder_param.empty()) {
      auto f = number(folder_param);
      if (!f) return error(400, "folder must be a folder id");
      only = static_cast<std::uint32_t>(*f);
    }
    auto idx = user_index(c.user);
    if (!idx) return error(500, idx.error().to_string());
    indexer::SearchOptions opts;
    opts.offset = paging->offset;
    opts.limit = paging->limit;
    if (only) {
      auto f = (*idx)->by_folder.find(*only);
      if (f == (*idx)->by_folder.end()) return error(404, "no such folder");
      opts.only_ids = f->second;
    } else {
      opts.only_ids = (*idx)->all;
    }
    // A user searches their own messages: the index commits for the search (ctx.sync_index) only when
    // one of them is past what it has committed, so that the pages of many users searching old mail
    // are not each a commit (each writes the index blocks it changes: docs/BENCHMARKS.md "The small tier").
    // Test: test_web.py test_only_a_search_that_needs_new_mail_commits_the_index.
    Reader reader = take_reader(/*ask=*/false);
    if (!reader || (!opts.only_ids->empty() && opts.only_ids->back() > reader->watermark())) {
      give_reader(std::move(reader));
      reader = take_reader(/*ask=*/true);
    }
    if (!reader) return ok_json({{"total", 0}, {"messages", json::array()}});
    ArchiveFieldSource phrases(ctx.archive, ctx.limits);  // phrases are checked against the messages
    auto found = reader->search(q, opts, &phrases);
    give_reader(std::move(reader));
    if (!found) return error(found.error().code == ErrorCode::kInvalidArgument ? 400 : 500, found.error().to_string());
    if (Status a = audit(c, "search", q, {{"total", found->total}, {"folder", folder_param}}); !a)
      return error(503, a.error().to_string());
    const auto& where = (*idx)->where;
    json list = json::array();
    for (const auto& hit : found->hits) {
      auto it = where.find(hit.id);
      if (it != where.end()) list.push_back(summary_json(it->second.folder, it->second.entry, hit));
    }
    return ok_json(
        {{"total", found->total}, {"total_exact", found->total_exact}, {"offset", opts.offset}, {"messages", list}});
  }

  http::Response tokens(const Caller& c, const http::Request& req, const std::vector<std::string>& parts) {
    if (req.method == "GET" && parts.size() == 3) {
      json list = json::array();
      for (std::size_t i = 0; i < c.user.api_tokens.size(); ++i)
        list.push_back({{"index", i}, {"label", c.user.api_tokens[i].label}, {"created", iso8601_date(c.user.api_tokens[i].created_at)}});
      return ok_json({{"tokens", list}});
    }
    if (req.method == "POST" && parts.size() == 3) {
      json j = json::parse(req.body, nullptr, false);
      std::string label = j.is_object() && j.contains("label") && j["label"].is_string() ? j["label"].get<std::string>() : "";
      if (label.empty() || label.size() > 100) return error(400, "send {\"label\": \"what the token is for\"}");
      std::string token = generate_api_token();
      auto done = ctx.store.update_user(c.user.name, [&](User& u) -> Status {
        if (u.api_tokens.size() >= 20) return make_error(ErrorCode::kInvalidArgument, "at most 20 API tokens per user");
        u.api_tokens.push_back({label, api_token_hash(token), unix_now()});
        return ok_status();
      });
      if (!done) return error(400, done.error().to_string());
      return ok_json({{"token", token}, {"label", label}, {"note", "shown once; keep it safe"}}, 201);
    }
    if (req.method == "DELETE" && parts.size() == 4) {
      auto index = number(parts[3], 100);
      if (!index) return error(404, "no such token");
      auto done = ctx.store.update_user(c.user.name, [&](User& u) -> Status {
        if (*index >= u.api_tokens.size()) return make_error(ErrorCode::kNotFound, "no such token");
        u.api_tokens.erase(u.api_tokens.begin() + static_cast<std::ptrdiff_t>(*index));
        return ok_status();
      });
      if (!done) return error(404, done.error().to_string());
      return ok_json({{"revoked", *index}});
    }
    return error(405, "no such endpoint");
  }

  // ---- sending ----

  awaitable<http::Response> send(const Caller& c, const http::Request& req, const http::Client& client) {
    json j = json::parse(req.body, nullptr, false);
    if (!j.is_object()) co_return error(400, "the body must be a JSON object");
    Draft d;
    d.hostname = ctx.hostname;
    std::vector<std::string> rcpts;
    std::string problem;
    auto read_list = [&](const char* key, std::vector<Address>* header) {
      if (!j.contains(key)) return;
      if (!j[key].is_array()) {
        problem = std::string(key) + " must be a list of addresses";
        return;
      }
      for (const auto& v : j[key]) {
        if (!v.is_string()) {
          problem = std::string(key) + " must be a list of addresses";
          return;
        }
        for (const auto& a : parse_address_list(v.get<std::string>(), 100)) {
          auto n = normalize_address(a.addr);
          if (!n) {
            problem = "not an address: " + v.get<std::string>().substr(0, 200);
            return;
          }
          if (header) header->push_back({a.name, *n});
          if (std::find(rcpts.begin(), rcpts.end(), *n) == rcpts.end()) rcpts.push_back(*n);
        }
      }
    };
    read_list("to", &d.to);
    read_list("cc", &d.cc);
    read_list("bcc", nullptr);
    if (!problem.empty()) co_return error(400, problem);
    if (rcpts.empty()) co_return error(400, "name at least one recipient (to, cc or bcc)");
    if (rcpts.size() > config.limits.smtp_recipients) co_return error(400, "too many recipients");
    auto str = [&](const char* key) { return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string(); };
    d.subject = str("subject").substr(0, 1000);
    d.text = str("text");
    d.html = str("html");
    std::string from = str("from").empty() ? c.user.name : ascii_lower(str("from"));
    if (!has_address_either_form(c.user, from)) co_return error(400, "from must be one of your addresses");
    d.from = {c.user.display_name, from};
    if (j.contains("attachments")) {
      if (!j["attachments"].is_array()) co_return error(400, "attachments must be a list");
      for (const auto& a : j["attachments"]) {
        if (!a.is_object() || !a.contains("data") || !a["data"].is_string()) co_return error(400, "an attachment needs data (base64)");
        auto data = base64_decode(a["data"].get<std::string>());
        if (!data) co_return error(400, "an attachment's data is not base64");
        d.attachments.push_back({a.value("filename", std::string("attachment")).substr(0, 255),
                                 a.value("content_type", std::string("application/octet-stream")).substr(0, 100), std::move(*data)});
      }
    }
    // Reply and forward name a message of the caller's, as (folder, uid).
    std::optional<std::pair<std::uint32_t, std::uint32_t>> answered;
    for (const char* key : {"reply_to_message", "forward_message"}) {
      if (!j.contains(key)) continue;
      const json& ref = j[key];
      if (!ref.is_object() || !ref.contains("folder") || !ref.contains("uid") || !ref["folder"].is_number_unsigned() ||
          !ref["uid"].is_number_unsigned())
        co_return error(400, std::string(key) + " must be {\"folder\": id, \"uid\": uid}");
      const auto fid = ref["folder"].get<std::uint32_t>(), uid = ref["uid"].get<std::uint32_t>();
      Result<std::string> raw = make_error(ErrorCode::kNotFound, "no such message");
      auto load = [&] {
        auto entries = ctx.store.entries(c.user.id, fid);
        if (!entries) return;
        for (const auto& e : *entries)
          if (e.uid == uid) {
            auto rec = ctx.archive.record(e.seq);
            if (rec) raw = ctx.archive.raw(*rec);
          }
      };
      co_await run_blocking(pool, load);
      if (!raw) co_return error(404, std::string(key) + ": no such message");
      if (std::string(key) == "reply_to_message") {
        MessageView v = view_message(*raw, 1);
        d.in_reply_to = v.message_id;
        d.references = v.references;
        if (!v.message_id.empty()) d.references.push_back(v.message_id);
        answered = std::make_pair(fid, uid);
      } else {
        d.forward_raw = std::move(*raw);
      }
    }
    std::string raw = compose_message(d);
    if (raw.size() > ctx.max_message_bytes)
      co_return error(413, "the message is larger than " + std::to_string(ctx.max_message_bytes) + " bytes");
    if (!ctx.submit) co_return error(503, "sending is not available");
    WebContext::Sent sent = co_await ctx.submit(c.user, from, rcpts, std::move(raw), client.ip);
    if (!sent.ok) co_return error(sent.code >= 500 ? 422 : 503, std::to_string(sent.code) + " " + sent.text);
    if (answered) {
      auto mark = [&] {
        FlagChange ch;
        ch.flags = kMsgAnswered;
        (void)ctx.store.change_flags(c.user.id, answered->first, {answered->second}, ch);
      };
      co_await run_blocking(pool, mark);
    }
    if (ctx.wake_follower) ctx.wake_follower();
    spdlog::info("web: [{}] {} sent message {} to {} recipient(s)", client.ip, c.user.name, sent.seq, rcpts.size());
    co_return ok_json({{"id", sent.seq}, {"recipients", rcpts}}, 201);
  }

  // ---- admin ----

  awaitable<http::Response> admin(const Caller& c, const http::Request& req, const http::Client& client) {
    const std::string& path = req.path;
    http::Response out;
    const std::string by = "web:" + c.user.name + " [" + client.ip + "]";
    if (path == "/metrics" && req.method == "GET") {
      const std::size_t live = sessions.size();  // read here, on the io thread that owns the sessions
      auto work = [&] { out = http::Response{200, "text/plain; version=0.0.4", metrics_text(live), {}}; };
      co_await run_blocking(pool, work);
      co_return out;
    }
    if (path == "/api/v1/admin/continuity" && req.method == "GET") {
      auto work = [&] {
        Continuity cont(ctx.archive);
        auto st = cont.status(200, 50);
        if (!st) {
          out = error(500, st.error().to_string());
          return;
        }
        std::optional<QueueRangeFigures> remaining;
        if (st->event && st->state == ContinuityState::kDraining) {
          auto r = ctx.archive.queue_range(Route::kPrimary, st->event->drain_from_seq, st->event->last_seq, false);
          if (r) remaining = *r;
        }
        out = ok_json(json::parse(status_to_json(*st, remaining)));
      };
      co_await run_blocking(pool, work);
      co_return out;
    }
    if ((path == "/api/v1/admin/continuity/start" || path == "/api/v1/admin/continuity/stop") && req.method == "POST") {
      if (!ctx.monitor) co_return error(503, "the continuity monitor is not running");
      std::string reason;
      if (!req.body.empty()) {
        json j = json::parse(req.body, nullptr, false);
        if (!j.is_object()) co_return error(400, "the body must be a JSON object");
        if (j.contains("reason") && j["reason"].is_string()) reason = j["reason"].get<std::string>().substr(0, 1000);
      }
      const bool start = path.ends_with("/start");
      bool already = false;
      Result<ContinuityEvent> ev = make_error(ErrorCode::kInternal, "not run");
      auto work = [&] { ev = start ? ctx.monitor->start(by, reason.empty() ? "web portal" : reason, false, &already) : ctx.monitor->stop(by, &already); };
      co_await run_blocking(pool, work);
      if (!ev) co_return error(500, ev.error().to_string());
      co_return ok_json({{"changed", !already}, {"event", ev->id ? json::parse(event_to_json(*ev)) : json(nullptr)}});
    }
    if (path == "/api/v1/admin/queue" && req.method == "GET") {
      auto work = [&] {
        auto entries = ctx.archive.queue_entries();
        if (!entries) {
          out = error(500, entries.error().to_string());
          return;
        }
        json list = json::array();
        std::map<std::string, std::uint64_t> by_route;
        for (const auto& e : *entries) {
          by_route[route_name(e.route)]++;
          if (list.size() < 1000) {
            json j = json::parse(queue_entry_to_json(e));
            if (auto rec = ctx.archive.record(e.seq)) j["mail_from"] = rec->envelope.mail_from;
            list.push_back(std::move(j));
          }
        }
        out = ok_json({{"total", entries->size()}, {"by_route", by_route}, {"entries", list}});
      };
      co_await run_blocking(pool, work);
      co_return out;
    }
    if (path == "/api/v1/admin/quarantine" && req.method == "GET") {
      auto work = [&] {
        auto entries = ctx.archive.quarantine_entries(false);
        if (!entries) {
          out = error(500, entries.error().to_string());
          return;
        }
        json list = json::array();
        for (const auto& q : *entries) {
          auto rec = ctx.archive.record(q.seq);
          list.push_back(json::parse(quarantine_entry_to_json(q, rec ? &*rec : nullptr)));
          if (list.size() >= 1000) break;
        }
        out = ok_json({{"total", entries->size()}, {"entries", list}});
      };
      co_await run_blocking(pool, work);
      co_return out;
    }
    if (path.rfind("/api/v1/admin/quarantine/", 0) == 0 && req.method == "POST") {
      auto parts = http::split_path(path);  // api v1 admin quarantine ID release|delete
      if (parts.size() != 6 || (parts[5] != "release" && parts[5] != "delete")) co_return error(404, "no such endpoint");
      auto id = number(parts[4], UINT64_MAX / 2);
      if (!id) co_return error(404, "no such message");
      json j = json::parse(req.body.empty() ? std::string("{}") : req.body, nullptr, false);
      const bool force = j.is_object() && j.value("force", false);
      auto work = [&] {
        if (parts[5] == "release" && !force) {
          auto rec = ctx.archive.record(*id);
          if (rec && rec->verdict.kind == scanner::VerdictKind::kInfected) {
            out = error(409, "message " + std::to_string(*id) + " is infected; release it with {\"force\": true} if you are sure");
            return;
          }
        }
        auto decided = ctx.archive.quarantine_decide(
            *id, parts[5] == "release" ? QuarantineStatus::kReleased : QuarantineStatus::kDeleted, by);
        if (!decided) {
          out = error(decided.error().code == ErrorCode::kNotFound ? 404 : 400, decided.error().to_string());
          return;
        }
        if (parts[5] == "release") {
          // Into the recipients' mailbox views now, as any clean message (without a primary, its only delivery).
          if (auto placed = ctx.store.place_released(ctx.archive, *id); !placed)
            spdlog::warn("web: placing released message {} in its recipients' folders: {}", *id, placed.error().to_string());
        }
        spdlog::info("web: {} {} quarantined message {}", by, parts[5] == "release" ? "released" : "deleted", *id);
        out = ok_json(json::parse(quarantine_entry_to_json(*decided, nullptr)));
      };
      co_await run_blocking(pool, work);
      co_return out;
    }
    if (path == "/api/v1/admin/users" && req.method == "GET") {
      auto work = [&] {
        auto users = ctx.store.users();
        if (!users) {
          out = error(500, users.error().to_string());
          return;
        }
        json list = json::array();
        for (const auto& u : *users)
          list.push_back({{"name", u.name}, {"aliases", u.aliases}, {"display_name", u.display_name},
                          {"role", role_name(u.role)}, {"disabled", u.disabled},
                          {"password", u.password_hash.empty() ? "directory" : "local"},
                          {"app_passwords", u.app_passwords.size()}, {"api_tokens", u.api_tokens.size()},
                          {"created", iso8601_date(u.created_at)}});
        out = ok_json({{"users", list}});
      };
      co_await run_blocking(pool, work);
      co_return out;
    }
    if (path == "/api/v1/admin/retention" && (req.method == "GET" || req.method == "PUT")) {
      auto work = [&] { out = retention_request(c, req); };
      co_await run_blocking(pool, work);
      co_return out;
    }
    if (path == "/api/v1/admin/stats" && req.method == "GET") {
      auto work = [&] { out = ok_json(stats_json()); };
      co_await run_blocking(pool, work);
      co_return out;
    }
    co_return error(404, "no such endpoint: " + req.method + " " + path);
  }

  // GET: the retention policy and how many tombstones stand for what expired. PUT: a change, as
  // `mailark retention set` makes one ({"minimum": "1y", "default": "7y" | "forever", "rules":
  // ["inbound:90", "domain=example.com:5y"]}; what is absent stays; "rules" replaces every rule):
  // the minimum can never be lowered (set_retention_policy, in the transaction that writes it). The
  // policy is written, then its audit entry (`retention.set`, before and after): an entry that cannot
  // be written is a 503 saying so, as the CLI exits with an error (pool thread).
  http::Response retention_request(const Caller& c, const http::Request& req) {
    auto current = retention_policy(ctx.archive);
    if (!current) return error(500, current.error().to_string());
    if (req.method == "GET") {
      auto snap = ctx.archive.snapshot();
      if (!snap) return error(500, snap.error().to_string());
      auto tombs = (*snap)->tombstones();
      if (!tombs) return error(500, tombs.error().to_string());
      return ok_json({{"policy", retention_policy_view(*current)}, {"tombstones", tombs->size()}});
    }
    const json body = json::parse(req.body, nullptr, false);
    if (!body.is_object()) return error(400, "the body is a JSON object: minimum, default, rules");
    RetentionChange change;
    auto days = [&](const char* key, std::optional<std::string>& into) -> std::string {
      if (!body.contains(key)) return "";
      const json& v = body[key];
      if (v.is_string()) {
        into = v.get<std::string>();
      } else if (v.is_number_unsigned()) {
        into = std::to_string(v.get<std::uint64_t>());
      } else {
        return std::string(key) + " is days (a number) or a string such as \"7y\" or \"90d\"";
      }
      return "";
    };
    if (std::string why = days("minimum", change.minimum); !why.empty()) return error(400, why);
    if (std::string why = days("default", change.default_days); !why.empty()) return error(400, why);
    if (body.contains("rules")) {
      if (!body["rules"].is_array()) return error(400, "rules is a list of rules such as \"inbound:90\"");
      change.clear_rules = true;
      for (const auto& r : body["rules"]) {
        if (!r.is_string()) return error(400, "each rule is a string such as \"domain=example.com:5y\"");
        change.rules.push_back(r.get<std::string>());
      }
    }
    for (const auto& [key, _] : body.items())
      if (key != "minimum" && key != "default" && key != "rules") return error(400, "unknown field: " + key);
    auto next = apply_retention_change(*current, change);
    if (!next) return error(400, next.error().to_string());
    next->set_at = unix_now();
    next->set_by = "web:" + c.user.name;
    auto before = set_retention_policy(ctx.archive, *next);
    if (!before) return error(before.error().code == ErrorCode::kInvalidArgument ? 400 : 500, before.error().to_string());
    spdlog::info("web: {} set the retention policy", c.user.name);
    if (Status a = audit(c, "retention.set", "policy",
                         {{"before", retention_policy_view(*before)}, {"after", retention_policy_view(*next)}});
        !a)
      return error(503, "the policy was set, but " + a.error().to_string());
    return ok_json({{"policy", retention_policy_view(*next)}});
  }

  json stats_json(bool ask = true) {
    ArchiveCounters cnt = ctx.archive.counters();
    ChainHead head = ctx.archive.head();
    std::uint64_t watermark = 0;
    if (auto reader = take_reader(ask)) {
      watermark = reader->watermark();
      give_reader(std::move(reader));
    }
    auto held = ctx.archive.quarantine_entries(false);
    return {{"messages", cnt.records},
            {"unique_messages", cnt.blobs},
            {"raw_bytes", cnt.raw_bytes},
            {"compressed_bytes", cnt.stored_bytes},
            {"archive_bytes", ctx.archive.file_bytes()},
            {"clean", cnt.clean},
            {"infected", cnt.infected},
            {"unscanned", cnt.unscanned},
            {"unscannable", cnt.unscannable},
            {"malformed", cnt.malformed},
            {"quarantine_held", held ? held->size() : 0},
            {"archive_head", head.seq},
            {"index_watermark", watermark},
            {"continuity", ctx.monitor ? continuity_state_name(ctx.monitor->snapshot()->state) : "unknown"}};
  }

  // Gauges read at scrape time, then every family.
  std::string metrics_text(std::size_t live_sessions) {
    std::map<std::string, std::uint64_t> depth;
    std::uint64_t held_by_admin = 0;
    if (auto entries = ctx.archive.queue_entries()) {
      for (const auto& e : *entries) {
        depth[route_name(e.route)]++;
        if (e.held) held_by_admin++;
      }
    }
    // Nothing here asks for a commit: a scrape every 15 s would otherwise commit the index every 15 s.
    // Test: test_web.py test_a_metrics_scrape_commits_nothing.
    json stats = stats_json(/*ask=*/false);
    const WebContext::IndexState index = ctx.index_state ? ctx.index_state() : WebContext::IndexState{};
    std::string extra;
    extra += "# HELP mailark_queue_depth Messages in the delivery queue, by route\n# TYPE mailark_queue_depth gauge\n";
    for (const char* r : {"primary", "internet"})
      extra += std::string("mailark_queue_depth{route=\"") + r + "\"} " + std::to_string(depth[r]) + "\n";
    if (ctx.disk) {
      if (auto free = ctx.disk->least_free()) {
        extra += "# HELP mailark_disk_free_bytes Free bytes where the data folder, its archive or its spool is (the least)\n"
                 "# TYPE mailark_disk_free_bytes gauge\nmailark_disk_free_bytes " + std::to_string(*free) + "\n";
      }
      extra += "# HELP mailark_disk_reserve_bytes Free bytes kept for mail already taken in (limits.disk_reserve_bytes)\n"
               "# TYPE mailark_disk_reserve_bytes gauge\nmailark_disk_reserve_bytes " + std::to_string(ctx.disk->reserve()) + "\n";
    }
    extra += "# HELP mailark_queue_held_by_admin Queue entries an administrator holds\n# TYPE mailark_queue_held_by_admin gauge\n";
    extra += "mailark_queue_held_by_admin " + std::to_string(held_by_admin) + "\n";
    // Lag: what a search, which asks for a commit, would not find now (a broken shard's, or a queue
    // the index threads have not reached).
    const std::uint64_t head = stats["archive_head"].get<std::uint64_t>(),
                        wm = std::max(stats["index_watermark"].get<std::uint64_t>(), index.taken_in);
    extra += "# HELP mailark_archive_messages Archive records\n# TYPE mailark_archive_messages gauge\n";
    extra += "mailark_archive_messages " + std::to_string(stats["messages"].get<std::uint64_t>()) + "\n";
    extra += "# HELP mailark_index_lag_messages Archive records not yet searchable\n# TYPE mailark_index_lag_messages gauge\n";
    extra += "mailark_index_lag_messages " + std::to_string(head > wm ? head - wm : 0) + "\n";
    // What a search cannot judge (engine/export.h SearchExceptions), for an alert before an officer's
    // export says it: records the index could not read, documents an older release read.
    extra += "# HELP mailark_index_commits_total Index commits and compactions of the live shards (each writes "
             "the blocks it changes)\n# TYPE mailark_index_commits_total counter\n";
    extra += "mailark_index_commits_total " + std::to_string(index.commits) + "\n";
    if (Reader reader = take_reader(/*ask=*/false)) {
      if (auto ex = search_exceptions(*reader.r)) {
        extra += "# HELP mailark_index_unsearchable_records Archive records the index could not read (is:unindexed): no "
                 "search finds them\n# TYPE mailark_index_unsearchable_records gauge\n";
        extra += "mailark_index_unsearchable_records " + std::to_string(ex->unsearchable) + "\n";
        extra += "# HELP mailark_index_older_reading_documents Index documents an older release read (the server reads "
                 "sealed segments again in its daily pass)\n# TYPE mailark_index_older_reading_documents gauge\n";
        extra += "mailark_index_older_reading_documents " + std::to_string(ex->older_reading) + "\n";
      }
      give_reader(std::move(reader));
    }
    extra += "# HELP mailark_quarantine_held Messages held in quarantine\n# TYPE mailark_quarantine_held gauge\n";
    extra += "mailark_quarantine_held " + std::to_string(stats["quarantine_held"].get<std::uint64_t>()) + "\n";
    if (ctx.monitor) {
      auto snap = ctx.monitor->snapshot();
      extra += "# HELP mailark_continuity_state 1 for the continuity state mailark is in\n# TYPE mailark_continuity_state gauge\n";
      for (auto s : {ContinuityState::kNormal, ContinuityState::kActive, ContinuityState::kDraining})
        extra += std::string("mailark_continuity_state{state=\"") + continuity_state_name(s) + "\"} " +
                 (snap->state == s ? "1" : "0") + "\n";
    }
    extra += "# HELP mailark_web_sessions Web portal sessions\n# TYPE mailark_web_sessions gauge\n";
    extra += "mailark_web_sessions " + std::to_string(live_sessions) + "\n";
    return metrics::render() + extra;
  }
};

WebPortal::WebPortal(asio::io_context& io, asio::ssl::context& tls, WebContext& ctx, const ServeConfig& config)
    : impl_(std::make_unique<Impl>(io, tls, ctx, config)) {}

Status WebPortal::setup() {
  Impl& m = *impl_;
  http::ServerOptions o;
  o.name = "web";
  o.listen = m.config.web.listen;
  o.default_port = 8080;
  o.tls = m.config.web.tls;
  o.max_connections = m.config.web.connections;
  o.max_per_client = m.config.web.connections_per_ip;
  // A send carries the message and its attachments as base64 in JSON: 4/3 of the message limit.
  o.max_body_bytes = m.ctx.max_message_bytes / 3 * 4 + (1u << 20);
  // Large bodies (a send) over all connections: room for four of the largest (limits.store_bytes
  // counts messages; a send's body is 4/3 of its message).
  o.body_room_bytes = m.config.limits.store_bytes / 3 * 4 + (1u << 20);
  Impl* impl = &m;
  o.body_limit = [impl](const http::Request& head, const http::Client&) -> std::size_t {
    const std::string auth = head.header("authorization");
    if (head.path == "/api/v1/send" &&
        (impl->find_session(head) || (auth.rfind("Bearer ", 0) == 0 && impl->token_user(auth.substr(7)).has_value())))
      return impl->ctx.max_message_bytes / 3 * 4 + (1u << 20);
    return 64 * 1024;
  };
  m.server = std::make_unique<http::Server>(m.io, m.tls, o, [impl](const http::Request& req, const http::Client& c) {
    return impl->handle(req, c);
  });
  return m.server->setup();
}

std::uint16_t WebPortal::port() const { return impl_->server->port(); }

awaitable<void> WebPortal::run() { co_await impl_->server->run(); }

void WebPortal::stop() {
  if (impl_->server) impl_->server->stop();
}

WebPortal::~WebPortal() {
  // A running export job stops at its next 256 messages (ExportRequest::cancelled); queued ones do
  // not start.
  impl_->stopping = true;
  impl_->exporter.join();
  impl_->pool.join();
}

}  // namespace mailark::api
