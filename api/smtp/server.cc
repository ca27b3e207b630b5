#include "api/smtp/server.h"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ssl.hpp>
#include <atomic>
#include <chrono>
#include <ctime>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "api/accept.h"
#include "api/dns.h"
#include "api/blocking.h"
#include "api/disk_reserve.h"
#include "api/import_socket.h"
#include "api/room.h"
#include "api/write.h"
#include "api/checkpoints.h"
#include "common/json_text.h"
#include <nlohmann/json.hpp>
#include "common/sha256.h"
#include "common/file_util.h"
#include <fstream>

#include <filesystem>
#include "api/retention_pass.h"
#include "api/continuity/alerts.h"
#include "api/continuity/monitor.h"
#include "api/auth.h"
#include "api/http/admin.h"
#include "api/imap/server.h"
#include "api/web/portal.h"
#include "engine/metrics.h"
#include "api/smtp/delivery.h"
#include "api/smtp/protocol.h"
#include "api/smtp/spool.h"
#include "api/smtp/verifier.h"
#include "api/tls.h"
#include "common/ascii.h"
#include "common/dates.h"
#include "engine/handoff.h"
#include "engine/ingest.h"
#include "engine/mailbox.h"
#include "engine/message.h"

namespace mailark::api {

namespace {

using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

std::string new_txn_id() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%012llX", static_cast<unsigned long long>(rng() & 0xFFFFFFFFFFFFull));
  return buf;
}

ScanAction scan_action(const std::string& policy) {
  if (policy == "quarantine") return ScanAction::kQuarantine;
  if (policy == "deliver") return ScanAction::kDeliver;
  return ScanAction::kReject;
}

// The rules that SIGHUP may change, shared by all sessions.
struct PolicyData {
  std::set<std::string> domains;
  std::set<std::string> recipients;
  std::vector<Network> networks;
  ServeConfig::ScanPolicy inbound_scan, outbound_scan;
  bool verify_with_primary = false;
};

std::shared_ptr<const PolicyData> policy_data(const ServeConfig& c) {
  auto p = std::make_shared<PolicyData>();
  for (const auto& d : c.inbound_domains) p->domains.insert(domain_key(d));  // IDNs by their A-labels
  for (const auto& r : c.inbound_recipients) {
    p->recipients.insert(ascii_lower(r));
    if (std::string other = other_address_form(r); !other.empty()) p->recipients.insert(ascii_lower(other));
  }
  p->networks = c.outbound_networks;
  p->inbound_scan = c.inbound_scan;
  p->outbound_scan = c.outbound_scan;
  const std::string& v = c.verify_recipients;
  p->verify_with_primary =
      !c.delivery.primary.empty() && (v == "primary" || (v == "auto" && c.inbound_recipients.empty()));
  if (v == "none") p->recipients.clear();
  return p;
}

// Inbound: only the configured domains (and addresses), never a relay, and no sender-specified
// routing (tests: SmtpProtocol.RoutingInTheLocalPartIsFound, tests/e2e/test_serve.py
// test_routing_tricks_are_refused_on_the_inbound_listener); unknown recipients refused at RCPT time
// through the primary or the list (tests/e2e/test_postfix.py
// test_unknown_recipients_are_refused_at_rcpt_time_by_asking_postfix, tests/e2e/test_serve.py
// test_recipient_list_accepts_only_listed_addresses). Outbound: anyone may be a recipient; who may connect
// at all was checked at connection time.
class ListenerPolicy : public smtp::Policy {
 public:
  // `data` returns the rules in force now, so sessions open across a SIGHUP follow the new rules.
  // `where` names the listener and client in log lines ("mx: [192.0.2.1]").
  // holding: a continuity event is active (the primary is not asked about recipients then).
  ListenerPolicy(bool inbound, std::function<std::shared_ptr<const PolicyData>()> data, RecipientVerifier& verifier,
                 std::string where, std::function<bool()> holding, DiskReserve& disk)
      : inbound_(inbound), data_(std::move(data)), verifier_(verifier), where_(std::move(where)),
        holding_(std::move(holding)), disk_(disk) {}
  // MAIL: no new message while writing it would leave less than the data folder's reserve free
  // (api/disk_reserve.h; SmtpProtocol.MailAsksForRoomOnDiskWithTheDeclaredSize, tests/e2e/test_failures.py
  // test_a_disk_short_of_its_reserve_refuses_new_mail_and_keeps_what_it_took).
  std::optional<smtp::Reply> check_storage(std::uint64_t declared) override {
    if (disk_.room_for(declared, "smtp")) return std::nullopt;
    smtp::Reply r{452, "4.3.1 Insufficient system storage"};
    spdlog::info("NOQUEUE: rejected {} size={}: {} {} (limits.disk_reserve_bytes)", where_, declared, r.code, r.text);
    return r;
  }
  std::optional<smtp::Reply> check_sender(const smtp::Path& sender) override {
    sender_ = sender.address;
    // Submission: the envelope sender must be one of the authenticated user's addresses.
    if (submitter_ && !has_address_either_form(*submitter_, sender.address))
      return smtp::Reply{553, "5.7.1 <" + sender.address + ">: Sender address rejected: not owned by user " + submitter_->name};
    return std::nullopt;
  }
  // Submission: who authenticated (set once AUTH succeeded).
  void set_submitter(std::optional<User> u) { submitter_ = std::move(u); }
  const std::optional<User>& submitter() const { return submitter_; }
  smtp::RecipientDecision check_recipient(const smtp::Path& rcpt) override {
    auto verdict = decide(rcpt);
    if (verdict.kind == smtp::RecipientDecision::Kind::kReject) log_rejection(rcpt.address, verdict.reply);
    return verdict;
  }
  void log_rejection(const std::string& rcpt, const smtp::Reply& r) const {
    spdlog::info("NOQUEUE: rejected {} from=<{}> to=<{}>: {} {}", where_, sender_, rcpt, r.code, r.text);
    metrics::counter("mailark_smtp_recipients_refused_total", "Recipients refused at RCPT time, by reply code",
                     {{"code", std::to_string(r.code)}})
        .inc();
  }

 private:
  smtp::RecipientDecision decide(const smtp::Path& rcpt) {
    using smtp::RecipientDecision;
    if (!inbound_) return RecipientDecision::accept();
    if (std::string routing = smtp::routing_in_path(rcpt); !routing.empty()) {
      return RecipientDecision::reject(
          {554, "5.7.1 <" + rcpt.address + ">: Relay access denied (sender-specified routing: " + routing + ")"});
    }
    std::string addr = ascii_lower(rcpt.address);
    if (rcpt.domain.empty()) return RecipientDecision::accept();  // <Postmaster>
    auto rules = data_();
    if (!rules->domains.count(domain_key(rcpt.domain))) {
      return RecipientDecision::reject({554, "5.7.1 <" + rcpt.address + ">: Relay access denied"});
    }
    // postmaster@ a served domain is always taken (RFC 5321 4.5.1: every SMTP server MUST support
    // it), whether or not the list names it (test_serve.py test_recipient_list_accepts_only_listed_addresses).
    if (!rules->recipients.empty() && !rules->recipients.count(addr) &&
        ascii_lower(rcpt.local_part) != "postmaster") {
      return RecipientDecision::reject({550, "5.1.1 <" + rcpt.address + ">: Recipient address rejected: user unknown"});
    }
    if (rules->verify_with_primary && holding_()) {
      // A continuity event: the primary is not asked; its earlier answers and inbound.verify_unreachable
      // decide (tests/e2e/test_continuity.py test_during_an_event_recipients_are_not_checked_with_the_primary).
      if (auto refused = verifier_.answer_without_primary(rcpt.address)) return RecipientDecision::reject(*refused);
      return RecipientDecision::accept();
    }
    if (rules->verify_with_primary) {
      smtp::Reply refusal;
      switch (verifier_.lookup(rcpt.address, &refusal)) {
        case RecipientVerifier::Known::kAccepted:
          return RecipientDecision::accept();
        case RecipientVerifier::Known::kRefused:
          return RecipientDecision::reject(refusal);
        case RecipientVerifier::Known::kUnknown:
          return RecipientDecision::verify();
      }
    }
    return RecipientDecision::accept();
  }

  bool inbound_;
  std::function<std::shared_ptr<const PolicyData>()> data_;
  RecipientVerifier& verifier_;
  std::string where_;
  std::function<bool()> holding_;
  DiskReserve& disk_;
  std::string sender_;
  std::optional<User> submitter_;
};

// Completion of a detached coroutine: an escaped exception is a bug, logged rather than lost.
void log_exception(std::exception_ptr e) { log_escaped("internal error in a server task", e); }

}  // namespace

struct SmtpServer::Impl {
  Engine& engine;
  ServeConfig config;
  std::string config_path;
  asio::io_context io{1};
  // Blocking work (signature reloads, archive reads and writes of the delivery agent, cache writes)
  // runs here, never on the io_context's one thread.
  asio::thread_pool blocking{2};
  // Writing and reading back message content past limits.spill_bytes (api/smtp/spool.h): its own
  // threads, so a slow disk never holds up logins or the queue.
  asio::thread_pool spooling{2};
  std::string spool_dir;
  Room store_room{config.limits.store_bytes};  // the messages being archived now
  RoomQueue store_queue{io, store_room};        // those waiting for room, first come first served
  // Free space kept for what was taken in: new mail from outside waits while it is short.
  DiskReserve disk_reserve{{engine.options().data_dir, engine.archive_dir(), engine.options().data_dir + "/spool"},
                           config.limits.disk_reserve_bytes};
  asio::ssl::context ssl{asio::ssl::context::tls_server};
  struct Listener {
    ListenerConfig cfg;
    std::unique_ptr<tcp::acceptor> acceptor;
  };
  std::vector<Listener> listeners;
  std::unique_ptr<Ingest> ingest;
  std::unique_ptr<ImportSocket> import_socket;  // imports handed to this server (engine/handoff.h)
  std::unique_ptr<DeliveryAgent> delivery;
  std::unique_ptr<RecipientVerifier> verifier;
  std::unique_ptr<Alerter> alerter;
  std::unique_ptr<CheckpointPublisher> checkpoints;
  std::unique_ptr<ContinuityMonitor> monitor;
  std::unique_ptr<AdminServer> admin;
  // Mailbox access (IMAP): the store, logins, and the server; declared in this order so the IMAP
  // server (and its threads) go before what they use.
  std::unique_ptr<MailboxStore> mailboxes;
  std::unique_ptr<CaseStore> cases;  // before auth, which writes to it
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<imap::ImapContext> imap_ctx;
  std::unique_ptr<ImapServer> imap;  // with no IMAP listener, it only follows the archive (for the web)
  std::unique_ptr<WebContext> web_ctx;
  std::unique_ptr<WebPortal> web;
  std::unique_ptr<RetentionPass> retention;  // last: it uses the archive, the case and mailbox stores

  std::mutex policy_mu;
  std::shared_ptr<const PolicyData> policy;

  // Touched only on the io_context thread.
  unsigned sessions = 0;
  std::map<std::string, unsigned> sessions_per_client;
  std::set<tcp::socket*> open_sockets;
  bool stopping = false;
  asio::signal_set stop_signals{io, SIGTERM, SIGINT};
  asio::signal_set hup_signals{io, SIGHUP};
  asio::steady_timer dictionary_timer{io};

  Impl(Engine& e, ServeConfig c, std::string path) : engine(e), config(std::move(c)), config_path(std::move(path)) {}

  std::shared_ptr<const PolicyData> current_policy() {
    std::lock_guard lock(policy_mu);
    return policy;
  }

  Status setup() {
    policy = policy_data(config);
    std::string cert = config.tls_cert, key = config.tls_key;
    if (cert.empty() || key.empty()) {
      auto made = ensure_self_signed(engine.options().data_dir + "/tls", config.hostname);
      if (!made) return made.error();
      cert = made->first;
      key = made->second;
    }
    asio::error_code ec;
    ssl.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1,
                    ec);
    // No renegotiation, whatever the OpenSSL build's defaults: a client could make the server repeat the
    // handshake's public-key work at will (test_serve.py test_client_initiated_renegotiation_is_refused).
    // No TLS compression either (CRIME); OpenSSL 3 as Debian builds it has none to offer.
    SSL_CTX_set_options(ssl.native_handle(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_clear_options(ssl.native_handle(), SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
    MAILARK_TRY(use_server_certificate(ssl, cert, key));

    // The signatures first (seconds with a full database): a listener bound before them would accept
    // connections that then wait.
    auto scanner = engine.scanner();
    if (!scanner) return scanner.error();
    for (const auto& l : config.listeners) {
      if (l.role == "imap") continue;  // ImapServer binds those
      Listener lst{l, std::make_unique<tcp::acceptor>(io)};
      auto addr = asio::ip::make_address(l.address, ec);
      if (ec) return make_error(ErrorCode::kInvalidArgument, "listener " + l.name + ": bad address " + l.address);
      tcp::endpoint ep(addr, l.port);
      lst.acceptor->open(ep.protocol(), ec);
      if (!ec) lst.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) lst.acceptor->bind(ep, ec);
      if (!ec) lst.acceptor->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) {
        return make_error(ErrorCode::kIo, "listener " + l.name + " on " + l.address + ":" + std::to_string(l.port) +
                                              ": " + ec.message());
      }
      listeners.push_back(std::move(lst));
    }

    spool_dir = engine.options().data_dir + "/spool";
    MAILARK_TRY(prepare_spool_dir(spool_dir));
    std::string least_at;
    if (auto free = disk_reserve.least_free(&least_at); free && disk_reserve.reserve() > 0)
      spdlog::info("{} MiB free in {}; new mail is refused while less than {} MiB would be (limits.disk_reserve_bytes)",
                   *free >> 20, least_at, disk_reserve.reserve() >> 20);
    auto writer = engine.index_writer();
    if (!writer) return writer.error();
    IngestOptions opts;
    opts.linger_ms = config.group_commit_linger_ms;
    opts.index_commit_interval_ms = config.index_commit_interval_ms;
    // An import handed to the server (nobody waits for each of its results) is batched as a lone
    // import is: up to 50 ms for a fuller archive transaction, the index committed by count or every
    // 10 s while only imports' documents wait (docs/BENCHMARKS.md "An import handed to the running server").
    opts.bulk_linger_ms = 50;
    opts.index_bulk_commit_interval_ms = 10000;
    opts.seal_interval_ms = config.seal_interval_ms;
    // A server holds no mail back to train a dictionary: it trains one on its pool once the archive
    // holds archive.train_dictionary_after messages (dictionary_loop).
    opts.train_after = 0;
    opts.compact_live_index = true;
    opts.preserve_order = false;   // a slow scan holds up only its own session's reply
    // Room for every session, and beside it for what an import handed to the server may hold.
    opts.queue_depth = std::max(16u, config.max_sessions) + ImportSocket::kMaxInFlight;
    opts.on_warning = [](const std::string& w) { spdlog::warn("{}", w); };
    opts.on_info = [](const std::string& w) { spdlog::info("{}", w); };
    Limits limits = config.limits;
    limits.max_message_bytes += Limits::kTraceHeaderBytes;  // room for the Received header this hop adds
    ingest = std::make_unique<Ingest>(engine.archive(), **writer, *scanner, limits, opts, nullptr);
    import_socket = std::make_unique<ImportSocket>(io, *ingest, disk_reserve, config.limits,
                                                   engine.options().data_dir + "/" + kHandoffSocketName,
                                                   [this] { return engine.archive().head().seq; });
    if (Status opened = import_socket->open(); !opened) {
      spdlog::warn("imports cannot be handed to this server: {}", opened.error().to_string());
      import_socket.reset();
    }
    verifier = std::make_unique<RecipientVerifier>(io, blocking, engine.archive(), config);
    // Alert e-mail goes through the pipeline (archived, scanned) and the queue's internet route:
    // mailark delivers it itself, never through the primary.
    alerter = std::make_unique<Alerter>(config, [this](const std::string& message, const std::vector<std::string>& to) {
      auto taken = std::make_shared<std::promise<bool>>();
      auto answer = taken->get_future();
      asio::post(io, [this, message, to, taken] { taken->set_value(submit_generated(message, to, "alerts")); });
      return answer.wait_for(std::chrono::seconds(10)) == std::future_status::ready && answer.get();
    });
    checkpoints = std::make_unique<CheckpointPublisher>(engine.archive(), engine.options().data_dir, config.checkpoints);
    // The admins hear of a disk short of its reserve as of the primary's failure (alerts.*).
    disk_reserve.on_change([this](bool short_now, std::uint64_t free, const std::string& dir) {
      Alert a;
      a.kind = short_now ? "disk_short" : "disk_ok";
      a.summary = short_now ? "mailark refuses new mail: its disk is nearly full (" + config.hostname + ")"
                            : "mailark accepts mail again: its disk has room (" + config.hostname + ")";
      a.details = std::to_string(free >> 20) + " MiB free in " + dir + "; the reserve (limits.disk_reserve_bytes) is " +
                  std::to_string(config.limits.disk_reserve_bytes >> 20) + " MiB" +
                  (short_now ? ". Senders get 452 4.3.1 and try again later; nothing accepted is lost." : ".");
      a.at = unix_now();
      if (monitor) a.state = continuity_state_name(monitor->snapshot()->state);
      alerter->send(a);
    });
    monitor = std::make_unique<ContinuityMonitor>(io, blocking, engine.archive(), config, engine.options().data_dir, *alerter);
    MAILARK_TRY(monitor->setup());
    DeliveryHooks hooks;
    hooks.on_primary_attempt = [this](PrimaryAttempt a, std::chrono::milliseconds ms) { monitor->observe(a, ms); };
    hooks.on_continuity_change = [this] { monitor->refresh(); };
    delivery = std::make_unique<DeliveryAgent>(io, blocking, engine.archive(), config,
                                               [this](IngestItem& item) { return ingest->try_submit(item); }, hooks);
    if (!config.admin.listen.empty()) {
      admin = std::make_unique<AdminServer>(io, blocking, engine.archive(), *monitor, config, engine.options().data_dir, ssl);
      MAILARK_TRY(admin->setup());
    }
    if (!config.web.listen.empty() ||
        std::any_of(config.listeners.begin(), config.listeners.end(),
                    [](const ListenerConfig& l) { return l.role == "imap" || l.role == "submission"; }))
      MAILARK_TRY(setup_mailboxes(limits));
    // The audit log: configuration changes, and retention's legal holds.
    MAILARK_TRY(open_cases());
    audit_configuration(config, "start");
    if (config.retention.every > 0) {
      retention = std::make_unique<RetentionPass>(engine.archive(), **writer, engine.options().data_dir, limits, *cases,
                                                  mailboxes.get(), config.retention);
    }
    if (policy->verify_with_primary) spdlog::info("recipients are verified with the primary server at RCPT time");
    return ok_status();
  }

  // DATA/cases: the audit log and the legal holds (one handle per process: LMDB allows no more).
  Status open_cases() {
    if (cases) return ok_status();
    auto case_store = CaseStore::open(engine.options().data_dir + "/cases", false);
    if (!case_store) return case_store.error();
    cases = std::move(*case_store);
    return ok_status();
  }

  // A configuration change is an audit entry: when the server starts (or reloads) with a file whose
  // SHA-256 is not the one it last ran with (DATA/config.sha256), "config.change" names the file and
  // both hashes (tests/e2e/test_retention.py test_the_server_expires_while_it_serves).
  void audit_configuration(const ServeConfig& loaded, const char* when) {
    // Of the bytes the load read, not read again.
    const std::string now = loaded.source_sha256.empty() ? to_hex(sha256(std::string("(built-in defaults)")))
                                                         : loaded.source_sha256;
    const std::string state = engine.options().data_dir + "/config.sha256";
    std::string before;
    {
      std::ifstream in(state);
      std::getline(in, before);
    }
    if (before == now || !cases) return;
    auto e =
        cases->audit("server", "config.change", config_path.empty() ? "(built-in defaults)" : config_path,
                     json_text(nlohmann::json{{"sha256", now}, {"before", before}, {"when", when}}));
    if (!e) {
      spdlog::error("the configuration change is not in the audit log: {}", e.error().to_string());
      return;
    }
    if (auto w = write_file_atomically(state, now + "\n"); !w) spdlog::error("{}", w.error().to_string());
  }

  // The user directory and mailbox views: for IMAP and for submission's logins.
  Status setup_mailboxes(const Limits& limits) {
    auto store = MailboxStore::open(engine.options().data_dir + "/mailbox", false);
    if (!store) return store.error();
    mailboxes = std::move(*store);
    mailboxes->set_other_address_form(other_address_form);  // users of an IDN domain, in either form
    auth = std::make_unique<Authenticator>(*mailboxes, config.ldap);
    // Logins, the portal's searches and case changes go to the audit log: no login without it.
    MAILARK_TRY(open_cases());
    auth->set_audit(cases.get());
    if (config.web.listen.empty() &&
        std::none_of(config.listeners.begin(), config.listeners.end(), [](const ListenerConfig& l) { return l.role == "imap"; }))
      return ok_status();
    imap_ctx = std::make_unique<imap::ImapContext>(imap::ImapContext{*mailboxes, engine.archive(), engine.index_dir(), *auth});
    imap_ctx->audit = cases.get();
    imap_ctx->hostname = config.hostname;
    imap_ctx->max_message_bytes = limits.max_message_bytes;
    imap_ctx->append = [this](const User& u, const std::string& folder, std::string raw, std::int64_t date) {
      return append_for_imap(u, folder, std::move(raw), date);
    };
    imap_ctx->disk_room = [this](std::uint64_t bytes) { return disk_reserve.room_for(bytes, "imap"); };
    imap_ctx->sync_index = [this] { (void)ingest->sync_index(ImportSocket::kSyncTimeout); };
    imap = std::make_unique<ImapServer>(io, ssl, *imap_ctx, config);
    MAILARK_TRY(imap->setup());
    mailboxes->set_observer([this](const std::vector<std::uint32_t>& users) { imap->notify(users); });
    if (!config.web.listen.empty()) {
      web_ctx = std::make_unique<WebContext>(WebContext{*mailboxes, engine.archive(), engine.index_dir(), *auth, monitor.get()});
      web_ctx->data_dir = engine.options().data_dir;
      web_ctx->sync_index = [this] {
        (void)ingest->sync_index(ImportSocket::kSyncTimeout);
        return ingest->index_commits();
      };
      web_ctx->index_state = [this] { return WebContext::IndexState{ingest->index_commits(), ingest->index_taken_in()}; };
      {
        // An export the portal was sending when the server stopped is of no use to anyone.
        std::error_code ec;
        for (const auto& f : std::filesystem::directory_iterator(web_ctx->data_dir + "/tmp", ec))
          if (f.path().filename().string().rfind("export-", 0) == 0) std::filesystem::remove(f.path(), ec);
      }
      web_ctx->hostname = config.hostname;
      web_ctx->max_message_bytes = limits.max_message_bytes;
      web_ctx->limits = limits;
      web_ctx->submit = [this](const User& u, std::string mail_from, std::vector<std::string> rcpts, std::string raw,
                               std::string ip) { return submit_from_web(u, std::move(mail_from), std::move(rcpts), std::move(raw), std::move(ip)); };
      web_ctx->wake_follower = [this] { imap->wake_follower(); };
      web_ctx->cases = cases.get();
      web_ctx->disk = &disk_reserve;
      web = std::make_unique<WebPortal>(io, ssl, *web_ctx, config);
      MAILARK_TRY(web->setup());
    }
    return ok_status();
  }

  // The web portal's send: submission without SMTP (the same checks, records and routes).
  awaitable<WebContext::Sent> submit_from_web(User u, std::string mail_from, std::vector<std::string> rcpts, std::string raw,
                                              std::string ip) {
    if (!disk_reserve.room_for(raw.size(), "web")) {
      spdlog::info("web: [{}] {}: a send of {} bytes refused: the data folder's disk is short (limits.disk_reserve_bytes)",
                   ip, u.name, raw.size());
      WebContext::Sent full;
      full.code = 452;
      full.text = "4.3.1 Insufficient system storage";
      co_return full;
    }
    smtp::ReceivedMessage msg;
    msg.helo = "web";
    msg.mail_from = std::move(mail_from);
    msg.rcpt_to = std::move(rcpts);
    msg.data = std::move(raw);
    ListenerConfig lc;
    lc.name = "web";
    lc.role = "submission";
    Stored stored = co_await submit(std::move(msg), config.web.tls == "implicit", lc, ip,
                                    config.web.tls == "implicit" ? "https" : "", std::optional<User>(std::move(u)));
    WebContext::Sent out;
    out.ok = !stored.refusal;
    out.seq = stored.seq;
    if (stored.refusal) {
      out.code = stored.refusal->code;
      out.text = stored.refusal->text;
    }
    co_return out;
  }

  // IMAP APPEND (on an IMAP pool thread): the message goes through the pipeline like any other
  // (scanned, archived; archive format: direction import, connector "imap", source "imap:<folder>",
  // the user in rcpt_to, so the mailbox store's follower places it in that folder).
  Result<std::uint64_t> append_for_imap(const User& u, const std::string& folder, std::string raw, std::int64_t date) {
    auto done = std::make_shared<std::promise<IngestResult>>();
    auto answer = done->get_future();
    auto item = std::make_shared<IngestItem>();
    item->raw = std::move(raw);
    item->origin = "imap append by " + u.name;
    item->envelope.direction = Direction::kImport;
    item->envelope.mail_from = u.name;
    item->envelope.rcpt_to = {u.name};
    item->envelope.client = "imap";
    item->envelope.connector = "imap";
    item->envelope.source = "imap:" + folder;
    item->envelope.custodian = u.name;  // whose mailbox: the user appending (record v2)
    item->envelope.received_at = date;
    item->defer_on_scan_error = true;
    item->on_infected = ScanAction::kReject;
    item->on_unscannable = scan_action(current_policy()->inbound_scan.unscannable);
    item->on_done = [done](const IngestResult& r) { done->set_value(r); };
    asio::post(io, [this, item, done] {
      if (!ingest->try_submit(*item)) {
        IngestResult r;
        r.outcome = IngestOutcome::kDeferred;
        r.reason = "the server is busy; try again";
        done->set_value(r);
      }
    });
    if (answer.wait_for(std::chrono::minutes(5)) != std::future_status::ready)
      return make_error(ErrorCode::kIo, "the archive did not answer in time");
    IngestResult r = answer.get();
    if (r.outcome != IngestOutcome::kArchived)
      return make_error(ErrorCode::kInvalidArgument, r.reason.empty() ? "the message was not archived" : r.reason);
    if (r.verdict == scanner::VerdictKind::kInfected) {
      std::string sig = r.signatures.empty() ? std::string("a virus") : r.signatures.front();
      return make_error(ErrorCode::kInvalidArgument, "the message is infected (" + sig + "); it was quarantined");
    }
    if (r.verdict == scanner::VerdictKind::kUnscannable && item->on_unscannable != ScanAction::kDeliver)
      return make_error(ErrorCode::kInvalidArgument, "the message cannot be scanned (" + r.scan_reason + "); it was quarantined");
    spdlog::info("imap: {} appended message {} to {}", u.name, r.seq, folder);
    return r.seq;
  }

  // A message mailark writes itself (an alert) for outside addresses: archived as outbound and queued
  // for the internet route. On the io thread. False when the pipeline is full.
  bool submit_generated(const std::string& message, const std::vector<std::string>& to, const std::string& connector) {
    IngestItem item;
    item.raw = message;
    item.origin = connector;
    item.envelope.direction = Direction::kOutbound;
    item.envelope.mail_from = "";
    item.envelope.rcpt_to = to;
    item.envelope.client = "local";
    item.envelope.connector = connector;
    item.envelope.source = connector;
    item.envelope.received_at = unix_now();
    QueueEntry q;
    q.route = Route::kInternet;
    for (const auto& r : to) q.recipients.push_back({r});
    item.queue = std::move(q);
    item.on_unscannable = ScanAction::kDeliver;
    item.on_done = [this](const IngestResult& r) {
      if (r.queued) delivery->wake();
      if (r.outcome != IngestOutcome::kArchived) spdlog::error("alert e-mail not archived: {}", r.reason);
    };
    return ingest->try_submit(item);
  }

  awaitable<void> accept_loop(Listener& l) {
    AcceptBackoff backoff(l.cfg.name);  // api/accept.h: out of file descriptors, wait; never spin
    while (!stopping) {
      auto [ec, sock] = co_await l.acceptor->async_accept(asio::experimental::as_tuple(use_awaitable));
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) co_return;
        co_await backoff.failed(ec);
        continue;
      }
      backoff.accepted();
      asio::co_spawn(io, serve(std::move(sock), l.cfg), log_exception);
    }
  }

  // Reads with a deadline; returns 0 bytes and sets timed_out when the deadline passed.
  template <typename Stream>
  awaitable<std::size_t> read_some(Stream& s, asio::mutable_buffer buf, std::chrono::steady_clock::duration limit,
                                   bool& timed_out, asio::error_code& ec) {
    asio::steady_timer timer(io);
    timer.expires_after(limit);
    auto r = co_await (s.async_read_some(buf, asio::experimental::as_tuple(use_awaitable)) ||
                       timer.async_wait(asio::experimental::as_tuple(use_awaitable)));
    if (r.index() == 1) {
      timed_out = true;
      co_return 0;
    }
    auto [e, n] = std::get<0>(r);
    ec = e;
    co_return n;
  }

  awaitable<void> serve(tcp::socket sock, ListenerConfig lc) {
    asio::error_code ec;
    auto remote = sock.remote_endpoint(ec);
    std::string ip = ec ? "unknown" : remote.address().to_string();
    if (ip.rfind("::ffff:", 0) == 0) ip = ip.substr(7);
    const bool inbound = lc.role == "inbound";
    const bool submission = lc.role == "submission";
    const std::string group = client_group(ip);

    // Session limits, in total and per client (an IPv6 client by its /64).
    if (sessions >= config.max_sessions || sessions_per_client[group] >= config.max_sessions_per_ip) {
      std::string busy = "421 4.7.0 " + config.hostname + " Too many connections, try again later\r\n";
      co_await asio::async_write(sock, asio::buffer(busy), asio::experimental::as_tuple(use_awaitable));
      spdlog::info("{}: connection from [{}] refused: too many sessions", lc.name, ip);
      co_return;
    }
    // The outbound listener relays for the company's own servers only: who may talk is decided from
    // the address alone, before a TLS handshake costs anything.
    if (lc.role == "outbound") {
      auto pol = current_policy();
      bool allowed = std::any_of(pol->networks.begin(), pol->networks.end(), [&](const Network& n) { return n.contains(ip); });
      if (!allowed) {
        if (lc.tls != "implicit") {
          std::string refused = "554 5.7.1 " + config.hostname + " Client [" + ip + "] may not relay through this server\r\n";
          co_await asio::async_write(sock, asio::buffer(refused), asio::experimental::as_tuple(use_awaitable));
        }
        spdlog::info("{}: connection from [{}] refused: not in outbound.networks", lc.name, ip);
        co_return;
      }
    }
    ++sessions;
    ++sessions_per_client[group];
    open_sockets.insert(&sock);
    struct Release {
      Impl* self;
      std::string group;
      tcp::socket* s;
      ~Release() {
        --self->sessions;
        if (--self->sessions_per_client[group] == 0) self->sessions_per_client.erase(group);
        self->open_sockets.erase(s);
      }
    } release{this, group, &sock};
    const auto session_deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(config.limits.smtp_session_timeout_s);

    asio::ssl::stream<tcp::socket&> tls_stream(sock, ssl);
    bool tls = false;
    std::string tls_info;
    // A client that does not read its replies has the command timeout to start again, and the
    // session's own deadline in all (api/write.h); then the session ends.
    auto write = [&](const std::string& bytes) -> awaitable<bool> {
      if (bytes.empty()) co_return true;
      const auto stall = std::chrono::seconds(config.limits.smtp_command_timeout_s);
      const asio::error_code ec = tls ? co_await write_within(tls_stream, asio::buffer(bytes), stall, session_deadline)
                                      : co_await write_within(sock, asio::buffer(bytes), stall, session_deadline);
      if (ec == asio::error::timed_out) {
        if (std::chrono::steady_clock::now() >= session_deadline - std::chrono::milliseconds(10))
          spdlog::info("{}: [{}] session time limit of {} s reached while writing", lc.name, ip,
                       config.limits.smtp_session_timeout_s);
        else
          spdlog::info("{}: [{}] the client read nothing for {} s: session ended", lc.name, ip,
                       config.limits.smtp_command_timeout_s);
      }
      co_return !ec;
    };
    auto handshake = [&]() -> awaitable<bool> {
      asio::steady_timer timer(io);
      timer.expires_after(std::chrono::seconds(60));
      auto r = co_await (tls_stream.async_handshake(asio::ssl::stream_base::server, asio::experimental::as_tuple(use_awaitable)) ||
                         timer.async_wait(asio::experimental::as_tuple(use_awaitable)));
      if (r.index() == 1 || std::get<0>(std::get<0>(r))) co_return false;
      SSL* s = tls_stream.native_handle();
      tls_info = std::string(SSL_get_version(s)) + " " + SSL_get_cipher_name(s);
      tls = true;
      co_return true;
    };

    if (lc.tls == "implicit") {
      bool secured = co_await handshake();
      if (!secured) co_return;
    }

    ListenerPolicy policy(inbound, [this] { return current_policy(); }, *verifier, lc.name + ": [" + ip + "]",
                          [this] { return monitor->snapshot()->holding(); }, disk_reserve);
    smtp::ProtocolConfig pc;
    pc.hostname = config.hostname;
    const Limits& lim = config.limits;
    pc.max_message_bytes = lim.max_message_bytes;
    pc.max_recipients = lim.smtp_recipients;
    pc.max_command_bytes = lim.smtp_command_bytes;
    pc.max_line_bytes = lim.smtp_line_bytes;
    pc.max_errors = lim.smtp_errors;
    pc.max_hops = lim.smtp_hops;
    pc.spill_bytes = lim.smtp_spill_bytes;
    pc.bare_newline = lc.bare_newline == "normalize" ? smtp::BareNewline::kNormalize : smtp::BareNewline::kReject;
    pc.tls_available = lc.tls == "starttls";
    pc.tls_active = tls;
    pc.auth_offered = pc.auth_required = submission;
    pc.auth_in_clear = std::any_of(config.plaintext_login_networks.begin(), config.plaintext_login_networks.end(),
                                   [&](const Network& n) { return n.contains(ip); });
    smtp::Session session(pc, policy);
    Spool spool(spool_dir, &disk_reserve);  // the message in DATA past limits.spill_bytes
    // (Every co_await stands alone in its statement: GCC 12 miscompiles it inside conditions.)
    bool greeted = co_await write(session.greeting());
    if (!greeted) co_return;

    std::vector<char> buf(16384);
    auto data_started = std::chrono::steady_clock::now();
    std::uint64_t data_bytes = 0;
    bool was_in_data = false;
    while (true) {
      smtp::Session::Output out;
      const auto now = std::chrono::steady_clock::now();
      if (stopping) {
        out = session.shutting_down();
      } else if (now >= session_deadline) {
        out = session.timed_out();
        spdlog::info("{}: [{}] session time limit of {} s reached", lc.name, ip, config.limits.smtp_session_timeout_s);
      } else {
        bool timed_out = false;
        asio::error_code rec;
        std::chrono::steady_clock::duration limit = std::chrono::seconds(
            session.in_data() ? config.limits.smtp_data_timeout_s : config.limits.smtp_command_timeout_s);
        limit = std::min(limit, session_deadline - now);
        std::size_t n = 0;
        if (tls) n = co_await read_some(tls_stream, asio::buffer(buf), limit, timed_out, rec);
        else n = co_await read_some(sock, asio::buffer(buf), limit, timed_out, rec);
        if (rec == asio::error::operation_aborted && stopping) {
          out = session.shutting_down();
        } else if (rec) {
          co_return;  // the client went away; nothing it sent without a 250 was acknowledged
        } else if (timed_out) {
          out = session.timed_out();
          if (std::chrono::steady_clock::now() >= session_deadline) {
            spdlog::info("{}: [{}] session time limit of {} s reached", lc.name, ip, config.limits.smtp_session_timeout_s);
          } else {
            spdlog::info("{}: [{}] timed out", lc.name, ip);
          }
        } else {
          // Minimum data rate during DATA, after a grace period.
          if (session.in_data() && !was_in_data) {
            data_started = std::chrono::steady_clock::now();
            data_bytes = 0;
          }
          was_in_data = session.in_data();
          data_bytes += n;
          auto elapsed = std::chrono::steady_clock::now() - data_started;
          const double rate = static_cast<double>(data_bytes) / std::chrono::duration<double>(elapsed).count();
          if (was_in_data && elapsed > std::chrono::seconds(config.limits.smtp_data_rate_grace_s) &&
              rate < static_cast<double>(config.limits.smtp_min_data_rate)) {
            out = session.timed_out();
            spdlog::info("{}: [{}] data rate below {} bytes/s", lc.name, ip, config.limits.smtp_min_data_rate);
          } else {
            out = session.receive(std::string_view(buf.data(), n));
          }
        }
      }
      // Act on the output until the session wants more input.
      while (true) {
        if (!out.spill.empty()) {
          std::string chunk = std::move(out.spill);
          const std::uint64_t at = out.spill_at;
          auto keep = [&] { spool.append(at, chunk); };
          co_await run_blocking(spooling, keep);
        }
        bool written = co_await write(out.to_send);
        if (!written) co_return;
        if (out.close) co_return;
        if (out.start_tls) {
          bool secured = co_await handshake();
          if (!secured) co_return;
          out = session.tls_started();
          continue;
        }
        if (out.verify) {
          std::string rcpt = *out.verify;
          std::optional<smtp::Reply> rejection = co_await verifier->verify(rcpt);
          if (rejection) policy.log_rejection(rcpt, *rejection);
          out = session.recipient_verified(rejection);
          continue;
        }
        if (out.authenticate) {
          smtp::Credentials cred = std::move(*out.authenticate);
          Authenticator::Answer answer;
          auto check = [&] { answer = auth->login(cred.user, cred.password, ip, "smtp"); };
          co_await run_blocking(blocking, check);
          std::optional<smtp::Reply> failure;
          switch (answer.outcome) {
            case Authenticator::Outcome::kOk:
              policy.set_submitter(answer.user);
              spdlog::info("{}: [{}] authenticated as {}", lc.name, ip, answer.user.name);
              break;
            case Authenticator::Outcome::kThrottled:
              failure = smtp::Reply{454, "4.7.0 Temporary authentication failure: too many failed logins, try later"};
              break;
            case Authenticator::Outcome::kUnavailable:
              failure = smtp::Reply{454, "4.7.0 Temporary authentication failure: the directory cannot be reached"};
              break;
            case Authenticator::Outcome::kDisabled:
            case Authenticator::Outcome::kBadCredentials:
              failure = smtp::Reply{535, "5.7.8 Authentication credentials invalid"};
              spdlog::info("{}: [{}] authentication failed for {}", lc.name, ip, cred.user.substr(0, 100));
              break;
          }
          out = session.authenticated(failure);
          continue;
        }
        if (out.message) {
          smtp::ReceivedMessage msg = std::move(*out.message);
          Stored stored;
          Room::Hold room(store_room);
          const std::size_t size = msg.spilled + msg.data.size();
          if (!store_room.fits(size) || store_queue.waiting() > 0)
            spdlog::info("{}: [{}] from=<{}> size={} waits for room: {} bytes of mail are being archived "
                         "(limits.store_bytes)", lc.name, ip, msg.mail_from, size, store_room.used());
          const bool roomy = co_await take_waiting(room, size);
          if (!roomy) {
            spdlog::warn("{}: [{}] deferred from=<{}> size={}: no room among the {} bytes of mail being archived "
                         "(limits.store_bytes)", lc.name, ip, msg.mail_from, size, store_room.used());
            stored.refusal = smtp::Reply{451, "4.3.2 System busy, try again later"};
          } else if (msg.spilled > 0) {
            Result<std::string> whole = std::string();
            auto back = [&] {
              whole = spool.read_back(msg.spilled, msg.data);
              spool.clear();
            };
            co_await run_blocking(spooling, back);
            if (!whole) {
              spdlog::error("{}: [{}] deferred from=<{}>: {}", lc.name, ip, msg.mail_from, whole.error().to_string());
              stored.refusal = smtp::Reply{452, "4.3.1 Insufficient system storage"};
            } else {
              msg.data = std::move(*whole);
              msg.spilled = 0;
            }
          }
          if (!stored.refusal) {
            if (submission)
              stored = co_await submit(std::move(msg), session.tls_active(), lc, ip, tls_info, policy.submitter());
            else
              stored = co_await store(std::move(msg), session.tls_active(), lc, ip, tls_info);
          }
          out = stored.refusal ? session.message_rejected(*stored.refusal) : session.message_stored(stored.txn);
          was_in_data = false;
          continue;
        }
        break;
      }
      // A message refused at its end (too large, a bare line end...) leaves nothing kept.
      if (spool.size() > 0 && !session.in_data() && !session.awaiting_storage()) {
        auto drop = [&] { spool.clear(); };
        co_await run_blocking(spooling, drop);
      }
    }
  }

  // Takes room for `bytes` among the messages being archived (limits.store_bytes): at once, or after
  // waiting in arrival order while others are archived (RoomQueue: a large message is not passed over
  // by smaller ones), up to 5 minutes (half of the 10 a client waits for the reply to its final dot,
  // RFC 5321 4.5.3.2.6: a message sent again costs its whole transfer). False when there was no room
  // in time, or none at once while the server is stopping (the server answers 451 4.3.2).
  awaitable<bool> take_waiting(Room::Hold& hold, std::size_t bytes) {
    co_return co_await store_queue.take(hold, bytes, std::chrono::steady_clock::now() + 300s);
  }

  // What became of one message: stored (the 250: txn and archive id) or refused (the reply).
  struct Stored {
    std::optional<smtp::Reply> refusal;
    std::string txn;
    std::uint64_t seq = 0;
  };

  // Submission (RFC 6409): the From: header must name the authenticated user too; a missing Date:
  // or Message-ID: is added (with_origin_fields); then the message is archived as outbound
  // (connector = the listener's name, so the mailbox store puts it in the sender's Sent folder) and
  // queued: external recipients to the internet, internal ones to
  // the primary when there is one (a continuity event holds them; the recipients read them in
  // mailark meanwhile). A message with both goes in as two records of the same bytes (stored once):
  // the internal one's connector is "<listener>+internal", which the mailbox store never puts in
  // Sent, so the sender sees one copy.
  awaitable<Stored> submit(smtp::ReceivedMessage msg, bool tls_active, const ListenerConfig& lc, const std::string& ip,
                           const std::string& tls_info, const std::optional<User>& user) {
    if (!user) co_return Stored{smtp::Reply{530, "5.7.0 Authentication required"}};
    {
      auto from = header_field(msg.data, "From");
      std::vector<Address> addrs = from ? parse_address_list(*from, 50) : std::vector<Address>{};
      bool own = !addrs.empty();
      for (const auto& a : addrs) own = own && has_address_either_form(*user, a.addr);
      if (!own)
        co_return Stored{smtp::Reply{550, "5.7.1 The From: header must name one of your addresses (" + user->name + ")"}};
    }
    // A Date: and a Message-ID: where the client left them out (RFC 6409 8.3), in what is archived,
    // filed in Sent and delivered alike (within the trace header's room: Limits::kTraceHeaderBytes).
    msg.data = with_origin_fields(std::move(msg.data), unix_now(), config.hostname);
    auto pol = current_policy();
    std::vector<std::string> internal, external;
    for (const auto& r : msg.rcpt_to) {
      bool ours = pol->domains.count(domain_key(domain_of(r))) > 0;
      (ours ? internal : external).push_back(r);
    }
    if (internal.empty() || external.empty())
      co_return co_await store(std::move(msg), tls_active, lc, ip, tls_info, internal.empty() ? Route::kInternet : Route::kPrimary);
    smtp::ReceivedMessage inside = msg;
    inside.rcpt_to = internal;
    msg.rcpt_to = external;
    ListenerConfig inner = lc;
    inner.name = lc.name + "+internal";  // engine/record.h is_internal_copy
    Stored first = co_await store(std::move(inside), tls_active, inner, ip, tls_info, Route::kPrimary);
    if (first.refusal) co_return first;  // refused: the second part is not tried
    co_return co_await store(std::move(msg), tls_active, lc, ip, tls_info, Route::kInternet);
  }

  // route: for submission, where the queue entry goes.
  awaitable<Stored> store(smtp::ReceivedMessage msg, bool tls_active, const ListenerConfig& lc, const std::string& ip,
                          const std::string& tls_info, std::optional<Route> submission_route = std::nullopt) {
    const bool inbound = lc.role == "inbound";
    const std::string txn = new_txn_id();
    auto count = [&lc](const char* result, const char* reason) {
      metrics::counter("mailark_smtp_messages_total", "Messages at the end of DATA, by listener, result and reason",
                       {{"listener", lc.role}, {"result", result}, {"reason", reason}})
          .inc();
    };
    IngestItem item;
    item.origin = txn;
    // The trace header this hop adds (RFC 5321 4.4).
    std::string with = std::string(tls_active ? "ESMTPS" : "ESMTP");
    // The continuity monitor's probe, come back from the primary: archived as a probe, never relayed.
    bool probe = false;
    if (!inbound) {
      if (auto token = header_field(msg.data, "X-Mailark-Probe")) {
        probe = monitor->probe_arrived(*token);
        if (!probe) spdlog::warn("{}: X-Mailark-Probe header with a token this server did not make: treated as ordinary mail", txn);
      }
    }
    // The client's address as RFC 5321 4.1.3 writes a literal: [192.0.2.1], [IPv6:2001:db8::1].
    const std::string literal = ip.find(':') != std::string::npos ? "IPv6:" + ip : ip;
    item.raw = "Received: from " + msg.helo + " ([" + literal + "])\r\n\tby " + config.hostname + " (mailark) with " + with +
               " id " + txn + (msg.rcpt_to.size() == 1 ? "\r\n\tfor <" + msg.rcpt_to[0] + ">" : "") + ";\r\n\t" +
               rfc5322_date(unix_now()) + "\r\n";
    item.raw.reserve(item.raw.size() + msg.data.size());
    item.raw += msg.data;
    msg.data = std::string();  // the pipeline's copy is the one kept while it is archived
    item.envelope.direction = inbound ? Direction::kInbound : Direction::kOutbound;
    item.envelope.mail_from = msg.mail_from;
    item.envelope.rcpt_to = msg.rcpt_to;
    item.envelope.client = ip;
    item.envelope.helo = msg.helo;
    item.envelope.tls = tls_info;
    item.envelope.connector = lc.name;
    item.envelope.source = txn;
    item.envelope.received_at = unix_now();
    if (probe) {
      item.envelope.direction = Direction::kProbe;
    } else {
      // Outbound mail is queued for the internet; inbound mail for the primary server when one is
      // configured; submission's as submit() routed it. Without a primary, inbound and internal
      // mail is kept for the mailbox views only (Route::kNone: no queue entry is written), and its
      // recipients still go with it, for a quarantine entry when the scan holds it back.
      QueueEntry q;
      if (submission_route)
        q.route = *submission_route;
      else
        q.route = inbound ? Route::kPrimary : Route::kInternet;
      if (q.route == Route::kPrimary && config.delivery.primary.empty()) q.route = Route::kNone;
      for (const auto& r : msg.rcpt_to) q.recipients.push_back({r});
      item.queue = std::move(q);
    }
    auto pol = current_policy();
    const ServeConfig::ScanPolicy& scan = inbound ? pol->inbound_scan : pol->outbound_scan;
    item.on_infected = scan_action(scan.infected);
    item.on_unscannable = scan_action(scan.unscannable);
    item.defer_on_scan_error = true;

    asio::steady_timer done(io);
    done.expires_at(asio::steady_timer::time_point::max());
    auto result = std::make_shared<IngestResult>();
    item.on_done = [this, result, &done](const IngestResult& r) {
      if (r.queued) delivery->wake();
      // From a pipeline thread: hand the result to the session's thread and wake it.
      asio::post(io, [result, r, &done] {
        *result = r;
        done.cancel();
      });
    };
    const std::size_t size = item.raw.size();
    std::string rcpts;
    for (const auto& r : msg.rcpt_to) rcpts += (rcpts.empty() ? "<" : ",<") + r + ">";
    // A full pipeline is a temporary condition: say so rather than stall every session's event loop.
    if (!ingest->try_submit(item)) {
      spdlog::warn("{}: deferred from=<{}> to={} client=[{}]: the pipeline is full", txn, msg.mail_from, rcpts, ip);
      count("deferred", "busy");
      co_return Stored{smtp::Reply{451, "4.3.2 System busy, try again later"}, txn};
    }
    co_await done.async_wait(asio::experimental::as_tuple(use_awaitable));

    const IngestResult& r = *result;
    using scanner::VerdictKind;
    switch (r.outcome) {
      case IngestOutcome::kArchived: {
        if (r.verdict == VerdictKind::kInfected || (r.verdict == VerdictKind::kUnscannable && r.quarantined)) {
          const bool infected = r.verdict == VerdictKind::kInfected;
          const std::string& action = infected ? scan.infected : scan.unscannable;
          std::string what = infected ? "virus=" + (r.signatures.empty() ? std::string("unknown") : r.signatures[0])
                                      : "unscannable=\"" + r.scan_reason + "\"";
          spdlog::info("{}: quarantined id={} from=<{}> to={} size={} client=[{}] {} action={}", txn, r.seq,
                       msg.mail_from, rcpts, size, ip, what, action);
          if (action == "reject") {
            std::string why = infected ? "virus found (" + (r.signatures.empty() ? std::string("unknown") : r.signatures[0]) + ")"
                                       : "it cannot be scanned (" + r.scan_reason + ")";
            count("refused", infected ? "virus" : "unscannable");
            co_return Stored{smtp::Reply{554, "5.7.1 Message rejected: " + why}, txn, r.seq};
          }
          count("accepted", "quarantined");
          co_return Stored{std::nullopt, txn, r.seq};
        }
        spdlog::info("{}: received id={} from=<{}> to={} size={} client=[{}] helo={} tls={} connector={} verdict={}{}{}",
                     txn, r.seq, msg.mail_from, rcpts, size, ip, msg.helo, tls_info.empty() ? "none" : tls_info,
                     lc.name, scanner::verdict_name(r.verdict),
                     r.scan_reason.empty() ? "" : " (" + r.scan_reason + ")", r.queued ? " queued" : "");
        count("accepted", "clean");
        co_return Stored{std::nullopt, txn, r.seq};
      }
      case IngestOutcome::kDeferred:
        spdlog::warn("{}: deferred from=<{}> to={} client=[{}]: {}", txn, msg.mail_from, rcpts, ip, r.reason);
        count("deferred", "scanner");
        co_return Stored{smtp::Reply{451, "4.7.1 Message could not be scanned now, try again later"}, txn};
      case IngestOutcome::kRefused:
        spdlog::info("{}: rejected from=<{}> to={} client=[{}]: {}", txn, msg.mail_from, rcpts, ip, r.reason);
        count("refused", "not-mail");
        co_return Stored{smtp::Reply{554, "5.6.0 Message refused: " + r.reason}, txn};
      default:
        spdlog::error("{}: deferred from=<{}> to={} client=[{}]: {}", txn, msg.mail_from, rcpts, ip, r.reason);
        count("deferred", "storage");
        co_return Stored{smtp::Reply{451, "4.3.0 Message not stored, try again later"}, txn};
    }
  }

  // An archive without a compression dictionary (a server started on a new data folder: a server's
  // pipeline trains none, as a reply must not wait on it) gets one once it holds
  // archive.train_dictionary_after messages: trained on the pool from the newest of them, as `mailark
  // train-dictionary` does; new mail is compressed with it, what was written before stays as it is
  // (tests/e2e/test_import_handoff.py test_a_server_trains_a_dictionary_for_an_archive_without_one).
  awaitable<void> dictionary_loop() {
    const std::uint64_t after = config.train_dictionary_after;
    if (after == 0) co_return;
    std::uint64_t tried_at = 0;  // the head when training last failed: tried again at twice it
    while (!stopping) {
      dictionary_timer.expires_after(std::chrono::seconds(2));
      auto [ec] = co_await dictionary_timer.async_wait(asio::experimental::as_tuple(use_awaitable));
      if (ec || stopping) co_return;
      if (engine.archive().codec()->active_dictionary() != 0) co_return;
      const std::uint64_t head = engine.archive().head().seq;
      if (head < after || (tried_at && head < 2 * tried_at)) continue;
      Result<std::uint32_t> id = make_error(ErrorCode::kInternal, "not run");
      const auto start = std::chrono::steady_clock::now();
      auto train = [&] { id = engine.train_dictionary(after, 64 * 1024); };
      co_await run_blocking(blocking, train);
      if (!id) {
        tried_at = head;
        spdlog::warn("compression dictionary: not trained from the newest {} messages ({}); tried again at {}", after,
                     id.error().to_string(), 2 * head);
        continue;
      }
      spdlog::info("compression dictionary {} trained from the newest {} messages in {:.1f} s; new mail is compressed "
                   "with it (archive.train_dictionary_after)",
                   *id, after, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      co_return;
    }
  }

  awaitable<void> watch_hup() {
    while (true) {
      auto [ec, sig] = co_await hup_signals.async_wait(asio::experimental::as_tuple(use_awaitable));
      if (ec) co_return;
      auto fresh = load_serve_config(config_path);
      if (!fresh) {
        spdlog::error("reload: {}; keeping the running configuration", fresh.error().to_string());
      } else {
        std::lock_guard lock(policy_mu);
        policy = policy_data(*fresh);
        spdlog::info("reload: configuration re-read from {} (listeners change on restart)",
                     config_path.empty() ? "defaults" : config_path);
        audit_configuration(*fresh, "reload");
      }
      // Compiling signatures takes seconds with a full database: on the pool, while sessions go on
      // with the engine in use (tests/e2e/test_failures.py test_reload_under_load_drops_nothing).
      Status reloaded;
      auto reload = [&] { reloaded = engine.reload_scanner(); };
      co_await run_blocking(blocking, reload);
      if (!reloaded) spdlog::error("reload: signatures: {}", reloaded.error().to_string());
      else spdlog::info("reload: virus signatures reloaded");
    }
  }

  void begin_shutdown() {
    if (stopping) return;
    stopping = true;
    spdlog::info("shutting down: no new connections, finishing sessions");
    store_queue.close();  // messages waiting for room get 451 4.3.2 now; one that fits is still taken
    asio::error_code ec;
    for (auto& l : listeners) l.acceptor->close(ec);
    for (auto* s : open_sockets) s->cancel(ec);
    hup_signals.cancel(ec);
    dictionary_timer.cancel();
    stop_signals.cancel(ec);
    delivery->stop();
    monitor->stop();
    if (admin) admin->stop();
    if (imap) imap->stop();
    if (web) web->stop();
    if (import_socket) import_socket->stop();
  }
};

Result<std::unique_ptr<SmtpServer>> SmtpServer::create(Engine& engine, ServeConfig config, std::string config_path) {
  std::unique_ptr<SmtpServer> s(new SmtpServer());
  s->impl_ = std::make_unique<Impl>(engine, std::move(config), std::move(config_path));
  MAILARK_TRY(s->impl_->setup());
  return s;
}

SmtpServer::~SmtpServer() = default;

std::vector<std::uint16_t> SmtpServer::ports() const {
  std::vector<std::uint16_t> out;
  for (const auto& l : impl_->listeners) {
    asio::error_code ec;
    out.push_back(l.acceptor->local_endpoint(ec).port());
  }
  return out;
}

void SmtpServer::stop() {
  asio::post(impl_->io, [this] { impl_->begin_shutdown(); });
}

Status SmtpServer::run() {
  Impl& m = *impl_;
  for (auto& l : m.listeners) {
    asio::co_spawn(m.io, m.accept_loop(l), log_exception);
    asio::error_code ec;
    spdlog::info("listening: {} ({}) on {}:{} tls={}", l.cfg.name, l.cfg.role, l.cfg.address,
                 l.acceptor->local_endpoint(ec).port(), l.cfg.tls);
  }
  m.stop_signals.async_wait([&m](const asio::error_code& ec, int) {
    if (!ec) m.begin_shutdown();
  });
  asio::co_spawn(m.io, m.watch_hup(), log_exception);
  asio::co_spawn(m.io, m.dictionary_loop(), log_exception);
  asio::co_spawn(m.io, m.delivery->run(), log_exception);
  asio::co_spawn(m.io, m.monitor->run(), log_exception);
  if (m.admin) {
    asio::co_spawn(m.io, m.admin->run(), log_exception);
    spdlog::info("listening: admin (http) on {} port {} (token in {})", m.config.admin.listen, m.admin->port(),
                 m.config.admin.token_file.empty() ? m.engine.options().data_dir + "/admin-token" : m.config.admin.token_file);
  }
  if (m.imap) asio::co_spawn(m.io, m.imap->run(), log_exception);
  if (m.import_socket) {
    m.import_socket->start();
    spdlog::info("listening: imports handed to the server on {}/{}", m.engine.options().data_dir, kHandoffSocketName);
  }
  if (m.web) {
    asio::co_spawn(m.io, m.web->run(), log_exception);
    spdlog::info("listening: web portal on {} port {} (tls {})", m.config.web.listen, m.web->port(), m.config.web.tls);
  }
  // A handler that throws on the io thread is logged and the loop goes on (api/blocking.h
  // run_event_loop); work on the pool threads is caught where it runs (run_blocking).
  run_event_loop(m.io, [](const std::string& what) {
    spdlog::error("unexpected error in the event loop, which goes on: {}", what);
  });
  m.blocking.join();
  // A write failure met while serving was answered then (451 for the messages it hit) and did not
  // stop the server; it does not make a clean shutdown fail either.
  if (Status flushed = m.ingest->finish(); !flushed) {
    spdlog::warn("while serving, an archive write failed once: {}", flushed.error().to_string());
  }
  if (m.import_socket) m.import_socket->join();  // its last results were reported as the pipeline finished
  spdlog::info("stopped");
  return ok_status();
}

}  // namespace mailark::api
