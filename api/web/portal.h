// The web portal and REST API ([web] in the configuration; docs/API.md, and the OpenAPI 3 document
// the server itself serves at /api/v1/openapi.json): users read, search and send their mail in a
// browser; admins watch the continuity monitor and press the panic button.
//
// Who may ask (tests/e2e/test_web.py):
// - Without credentials only GET /health, POST /api/v1/login and the static files of the login page
//   answer; everything else is 401 (`test_nothing_answers_without_credentials`).
// - A browser logs in with its password (the user directory; LDAP users too: api/auth.h) and gets a
//   session cookie: random 256 bits, HttpOnly, SameSite=Strict, Secure under TLS; ended after
//   web.session_idle_minutes unused or web.session_max_hours in all, and by logout.
// - CSRF: a state-changing request with the cookie must carry the session's CSRF token in
//   X-CSRF-Token, and an Origin header, when sent, must be this server (`test_csrf`). Login takes
//   JSON only (no cross-site form can send it).
// - Scripts use API tokens (`Authorization: Bearer mkt_...`; `mailark user token add`, or
//   POST /api/v1/tokens): no cookie, so no CSRF token.
// - Every client (IPv6 by /64) gets web.requests_per_second with bursts of ten times that (429 and
//   Retry-After beyond); login failures are throttled per user and per client (api/auth.h).
// - Isolation: every message is named by (folder id, UID) and the mailbox store checks the folder is
//   the caller's in the same transaction; search results are filtered to the caller's messages
//   inside Xapian's match (`test_isolation`). Admin endpoints (/api/v1/admin/..., /metrics) need
//   the admin role.
//
// Threads: what is in memory (sessions, rate buckets, routing) runs on the io_context thread; what
// reads LMDB, Xapian or the archive runs on the portal's own pool of four threads, so a slow search
// (a phrase over many messages) never holds up SMTP's pool and its 250 replies.
//
// HTML mail: /api/v1/messages/F/U/html serves the sanitised HTML (engine/html_sanitize.h) as its own
// document under `Content-Security-Policy: default-src 'none'; sandbox ...`, shown by the UI in an
// <iframe sandbox> without scripts and without the portal's origin; remote images are left out until
// asked for (?images=1). tests/e2e/test_web_ui.py checks in Chromium that a hostile message runs
// nothing.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "api/auth.h"
#include "api/config.h"
#include "api/continuity/monitor.h"
#include "engine/archive.h"
#include "engine/cases.h"
#include "engine/mailbox.h"

namespace mailark::api {

class DiskReserve;

struct WebContext {
  MailboxStore& store;
  Archive& archive;
  std::string index_dir;
  Authenticator& auth;
  ContinuityMonitor* monitor = nullptr;  // admin endpoints answer 503 without one
  std::string hostname = "localhost";
  std::size_t max_message_bytes = 64u << 20;
  Limits limits;  // the server's, for reading messages back (phrase checks)
  // Sending (as SMTP submission: scanned, archived, queued). On the io thread; the outcome says
  // refused (an SMTP-like code and text) or stored (the archive id).
  struct Sent {
    bool ok = false;
    int code = 0;
    std::string text;
    std::uint64_t seq = 0;
  };
  std::function<asio::awaitable<Sent>(const User& user, std::string mail_from, std::vector<std::string> rcpts,
                                       std::string raw, std::string client_ip)>
      submit;
  std::function<void()> wake_follower;  // so a sent message is in Sent at once
  // Called before a search that needs what is archived opens the index (a case's; a user's when one of
  // the user's messages is past the committed watermark): makes what is archived searchable (the server's
  // Ingest::sync_index; its index otherwise commits every archive.index_commit_interval_ms) and
  // returns the index's commit count (Ingest::index_commits), which tells whether a reader kept
  // from before is still current. Empty (tests): readers are reopened after a second.
  std::function<std::uint64_t()> sync_index;
  // The same count, and the last archive record the index has taken in (committed or not:
  // Ingest::index_taken_in), read without asking for a commit: /metrics, which a monitoring system
  // scrapes every few seconds and which must not commit the index each time. Empty (tests): both 0,
  // and the lag is read from the committed index.
  struct IndexState {
    std::uint64_t commits = 0, taken_in = 0;
  };
  std::function<IndexState()> index_state;
  // eDiscovery cases and the audit log (DATA/cases): logins, searches and case changes are entries
  // ("web:<user>"); the case endpoints answer 503 without it.
  CaseStore* cases = nullptr;
  // The data folder: the archive's signing key (exports) and DATA/tmp (an export before it is sent).
  std::string data_dir;
  // The room kept on the data folder's disk (api/disk_reserve.h): an export written to DATA/tmp
  // stops, 507, rather than eat into it; /metrics shows it. Null: no reserve (tests).
  DiskReserve* disk = nullptr;
};

class WebPortal {
 public:
  WebPortal(asio::io_context& io, asio::ssl::context& tls, WebContext& ctx, const ServeConfig& config);
  ~WebPortal();
  Status setup();  // binds web.listen. Errors: kIo, kInvalidArgument.
  std::uint16_t port() const;
  asio::awaitable<void> run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailark::api
