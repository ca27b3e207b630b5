#include "api/smtp/delivery.h"

#include "engine/metrics.h"

#include <spdlog/spdlog.h>

#include <asio/experimental/as_tuple.hpp>
#include <algorithm>
#include <ctime>
#include <map>
#include <random>
#include <set>

#include "api/blocking.h"
#include "api/dns.h"
#include "api/smtp/client.h"
#include "common/ascii.h"
#include "common/dates.h"
#include "engine/message.h"

namespace mailark::api {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;

namespace {

// "550 5.1.1 <x>: user unknown" -> "5.1.1"; a default by class otherwise.
std::string status_of(const std::string& diagnostic, bool permanent) {
  std::size_t sp = diagnostic.find(' ');
  if (sp != std::string::npos) {
    std::string code = diagnostic.substr(sp + 1, diagnostic.find(' ', sp + 1) - sp - 1);
    if (code.size() >= 5 && (code[0] == '4' || code[0] == '5') && code[1] == '.') return code;
  }
  return permanent ? "5.0.0" : "4.0.0";
}

}  // namespace

std::string make_dsn(const std::string& reporting_host, const std::string& original_sender,
                     const std::vector<std::pair<std::string, std::string>>& failed,
                     const std::string& original_headers, std::int64_t arrival) {
  std::mt19937_64 rng(std::random_device{}());
  char boundary[40];
  std::snprintf(boundary, sizeof boundary, "mailark-dsn-%016llx", static_cast<unsigned long long>(rng()));
  std::int64_t now = unix_now();
  std::string m;
  m += "From: Mail Delivery System <MAILER-DAEMON@" + reporting_host + ">\r\n";
  m += "To: <" + original_sender + ">\r\n";
  m += "Subject: Undelivered Mail Returned to Sender\r\n";
  m += "Date: " + rfc5322_date(now) + "\r\n";
  m += "Message-ID: <dsn." + std::string(boundary + 12) + "@" + reporting_host + ">\r\n";
  m += "Auto-Submitted: auto-replied\r\n";
  m += "MIME-Version: 1.0\r\n";
  m += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"" + std::string(boundary) + "\"\r\n";
  m += "\r\n";
  m += "--" + std::string(boundary) + "\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n";
  m += "This is the mail system at host " + reporting_host + ".\r\n\r\n";
  m += "Your message could not be delivered to one or more recipients.\r\n\r\n";
  for (const auto& [addr, diag] : failed) m += "<" + addr + ">: " + diag + "\r\n";
  m += "\r\n--" + std::string(boundary) + "\r\nContent-Type: message/delivery-status\r\n\r\n";
  m += "Reporting-MTA: dns; " + reporting_host + "\r\n";
  m += "Arrival-Date: " + rfc5322_date(arrival) + "\r\n";
  for (const auto& [addr, diag] : failed) {
    m += "\r\nFinal-Recipient: rfc822; " + addr + "\r\n";
    m += "Action: failed\r\n";
    m += "Status: " + status_of(diag, true) + "\r\n";
    m += "Diagnostic-Code: smtp; " + diag + "\r\n";
  }
  m += "\r\n--" + std::string(boundary) + "\r\nContent-Type: text/rfc822-headers\r\n\r\n";
  m += original_headers;
  if (!original_headers.empty() && original_headers.back() != '\n') m += "\r\n";
  m += "\r\n--" + std::string(boundary) + "--\r\n";
  return m;
}

struct DeliveryAgent::Impl {
  asio::io_context& io;
  asio::thread_pool& blocking;
  Archive& archive;
  ServeConfig config;
  std::function<bool(IngestItem&)> inject;
  DeliveryHooks hooks;
  Continuity continuity{archive};
  // Entries being delivered (by seq, with how many destinations): the scan passes over them.
  std::map<std::uint64_t, unsigned> in_flight_seqs;
  // Entries read per lane and scan: a long queue is read in slices, never whole.
  static constexpr std::size_t kScanLimit = 2000;
  static constexpr std::uint64_t kInlineReadBytes = 256 * 1024;
  static constexpr std::size_t kBatch = 50;                // messages per batch on one connection
  static constexpr unsigned kBatchesPerConnection = 200;  // then the connection is closed and reopened
  // The drain's rate limit (continuity.drain_rate): a token bucket of messages.
  double drain_tokens = 0;
  std::chrono::steady_clock::time_point drain_refilled = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point drain_checked{};
  std::uint64_t deduplicated_unreported = 0;  // figures for the event, written with the next check
  asio::ssl::context tls{asio::ssl::context::tls_client};
  asio::steady_timer wakeup{io};
  bool stopping = false;
  std::set<std::string> in_flight;  // "seq|destination"
  std::map<std::string, unsigned> connections;
  std::unique_ptr<Resolver> resolver;
  std::set<smtp::SmtpClient*> clients;  // open connections, closed on stop
  std::set<std::uint64_t> dsn_in_flight;  // entries whose DSN is in the pipeline
  // Delivery results not yet committed: written together (group commit), so a busy agent does not
  // pay one fsync per message. A crash loses these results and those of the group commit in progress,
  // and the messages they describe are delivered again (the bound: delivery.h, "Duplicates after a
  // crash").
  static constexpr std::size_t kMaxUnflushed = 32;  // and at most 5 ms old
  std::vector<DeliveryResult> unflushed;
  asio::steady_timer flush_timer{io};
  bool flush_scheduled = false;
  bool flushing = false;  // one group commit at a time, on the pool
  asio::steady_timer flushed{io};  // cancelled whenever a group commit ends

  Impl(asio::io_context& i, asio::thread_pool& b, Archive& a, const ServeConfig& c, std::function<bool(IngestItem&)> inj,
       DeliveryHooks h)
      : io(i), blocking(b), archive(a), config(c), inject(std::move(inj)), hooks(std::move(h)) {
    auto r = Resolver::create(io, config.delivery.dns_servers);
    if (r) resolver = std::move(r).value();
    else spdlog::error("delivery: DNS: {}; mail to the internet needs delivery.smarthost", r.error().to_string());
    if (config.delivery.verify_certificates) {
      tls.set_default_verify_paths();
      tls.set_verify_mode(asio::ssl::verify_peer);
    } else {
      tls.set_verify_mode(asio::ssl::verify_none);
    }
    flushed.expires_at(asio::steady_timer::time_point::max());
  }

  // Where an entry's recipients go: "primary", "smarthost", or "mx:<domain>" per recipient domain.
  // Empty when there is no way yet (no primary configured; no smarthost and no resolver).
  std::string destination(const QueueEntry& e, const std::string& rcpt) const {
    if (e.route == Route::kPrimary) return config.delivery.primary.empty() ? "" : "primary";
    if (e.route == Route::kInternet) {
      if (!config.delivery.smarthost.empty()) return "smarthost";
      if (resolver) return "mx:" + domain_of(rcpt);
    }
    return "";
  }

  static std::string key(std::uint64_t seq, const std::string& dest) { return std::to_string(seq) + "|" + dest; }

  // Does this delivery attempt (to `dest`) cover this recipient now?
  bool covers(const QueueEntry& e, const QueueRecipient& r, const std::string& dest, std::int64_t now) const {
    return r.state == RecipientState::kPending && r.next_attempt_at <= now && destination(e, r.address) == dest;
  }

  smtp::SmtpClient::Tls tls_policy() const {
    if (config.delivery.tls == "none") return smtp::SmtpClient::Tls::kNone;
    if (config.delivery.tls == "required") return smtp::SmtpClient::Tls::kRequired;
    return smtp::SmtpClient::Tls::kOpportunistic;
  }

  // The continuity state as committed now (one LMDB read of a few microseconds): never a cached copy,
  // so a start made by another process holds mail from its commit on.
  ContinuitySnapshot continuity_now() const {
    ContinuitySnapshot s;
    auto st = continuity.state(&s.event);
    if (st) s.state = *st;
    else spdlog::error("delivery: reading the continuity state: {}", st.error().to_string());
    return s;
  }

  // The range of messages whose delivery to the primary is deduplicated against the delivered log:
  // those of the event now draining.
  struct DedupeRange {
    std::uint64_t event = 0, from = 1, to = 0;
    bool covers(std::uint64_t seq) const { return event != 0 && seq >= from && seq <= to; }
  };

  // Entries of a route due now, at most `limit`, not being delivered: none for the primary while an
  // event holds its mail, at most the drain rate's allowance while it drains (dedupe is set then).
  std::vector<QueueEntry> take_due(Route route, std::size_t limit, DedupeRange* dedupe) {
    const std::int64_t now = unix_now();
    ContinuitySnapshot cont;
    if (route == Route::kPrimary) {
      cont = continuity_now();
      if (cont.holding()) return {};  // an event: the mail is held in the archive
      if (cont.draining()) {
        *dedupe = {cont.event->id, cont.event->drain_from_seq, cont.event->last_seq};
        if (config.continuity.drain_rate > 0) {
          const auto t = std::chrono::steady_clock::now();
          const double rate = config.continuity.drain_rate;
          drain_tokens = std::min(rate, drain_tokens + rate * std::chrono::duration<double>(t - drain_refilled).count());
          drain_refilled = t;
          limit = std::min(limit, static_cast<std::size_t>(std::max(0.0, drain_tokens)));
          if (limit == 0) return {};
        }
      }
    }
    auto skip = [this](std::uint64_t seq) { return in_flight_seqs.count(seq) > 0; };
    auto entries = archive.queue_due(lane_of(route), now, limit, skip);
    if (!entries) {
      spdlog::error("delivery: reading the queue: {}", entries.error().to_string());
      return {};
    }
    // An event started between the two reads holds what was just read: the state is read again after
    // the queue, so nothing queued after a start (CLI, admin listener, monitor) is ever offered to the
    // primary (tests/e2e/test_continuity.py test_sigkill_in_the_middle_of_the_drain_loses_nothing
    // sends right after `mailark continuity start`).
    if (route == Route::kPrimary && continuity_now().holding()) return {};
    if (route == Route::kPrimary && cont.draining() && config.continuity.drain_rate > 0)
      drain_tokens -= static_cast<double>(entries->size());
    return std::move(entries).value();
  }

  void release(const std::vector<QueueEntry>& batch, const std::string& dest) {
    for (const auto& e : batch) {
      in_flight.erase(key(e.seq, dest));
      if (--in_flight_seqs[e.seq] == 0) in_flight_seqs.erase(e.seq);
    }
  }

  void schedule() {
    const std::int64_t now = unix_now();
    // Failures whose DSN was never archived (a crash in between, or a full pipeline): made now.
    if (auto failed = archive.queue_due(kDsnLane, now, 100)) {
      for (const auto& e : *failed) send_dsn_if_needed(e);
    } else {
      spdlog::error("delivery: reading the queue: {}", failed.error().to_string());
    }
    std::map<std::string, std::vector<QueueEntry>> due;
    DedupeRange dedupe;
    for (Route route : {Route::kInternet, Route::kPrimary}) {
      DedupeRange range;
      auto entries = take_due(route, kScanLimit, &range);
      if (route == Route::kPrimary) dedupe = range;
      for (auto& e : entries) {
        std::set<std::string> dests;
        for (const auto& r : e.recipients) {
          std::string d = destination(e, r.address);
          if (!d.empty() && r.state == RecipientState::kPending && r.next_attempt_at <= now && !in_flight.count(key(e.seq, d)))
            dests.insert(d);
        }
        for (const auto& d : dests) due[d].push_back(e);
      }
    }
    for (auto& [dest, list] : due) {
      unsigned limit = std::max(1u, config.delivery.connections_per_destination);
      unsigned active = connections[dest];
      if (active >= limit) continue;
      unsigned free = limit - active;
      std::size_t per = std::min<std::size_t>(kBatch, (list.size() + free - 1) / free);
      for (std::size_t start = 0; start < list.size() && connections[dest] < limit; start += per) {
        std::vector<QueueEntry> batch(list.begin() + static_cast<std::ptrdiff_t>(start),
                                      list.begin() + static_cast<std::ptrdiff_t>(std::min(list.size(), start + per)));
        for (const auto& e : batch) {
          in_flight.insert(key(e.seq, dest));
          in_flight_seqs[e.seq]++;
        }
        connections[dest]++;
        asio::co_spawn(io, deliver_batch(dest, std::move(batch), dest == "primary" ? dedupe : DedupeRange{}),
                       log_escaped_as("delivery: internal error"));
      }
    }
  }

  // While an event's mail drains: is anything of it left? When not, the event is over. The reads and
  // writes go to the pool.
  awaitable<void> check_drain() {
    const ContinuitySnapshot cont = continuity_now();
    if (!cont.draining()) co_return;
    const auto t = std::chrono::steady_clock::now();
    if (t - drain_checked < std::chrono::seconds(1)) co_return;
    drain_checked = t;
    const ContinuityEvent ev = *cont.event;
    const std::uint64_t dedupes = deduplicated_unreported;
    deduplicated_unreported = 0;
    const bool busy = connections["primary"] > 0;
    bool finished = false;
    std::uint64_t kept = 0, held_by_admin = 0, deduplicated = 0;
    Status status;
    auto work = [&] {
      if (dedupes > 0) status = continuity.count(ev.id, dedupes, 0, 0);
      if (!status || busy) return;
      auto left = archive.queue_range(Route::kPrimary, ev.drain_from_seq, ev.last_seq, true);
      if (!left || left->pending_messages > 0) return;
      auto all = archive.queue_range(Route::kPrimary, ev.drain_from_seq, ev.last_seq, false);
      kept = all ? all->kept_recipients : 0;
      held_by_admin = all ? all->held_by_admin : 0;
      status = continuity.finish_drain(ev.id, kept);
      finished = status.ok();
      if (auto st = continuity.status(0, 1); finished && st && !st->events.empty() && st->events[0].id == ev.id)
        deduplicated = st->events[0].deduplicated;  // the figure as written
    };
    co_await run_blocking(blocking, work);
    if (!status) {
      deduplicated_unreported += dedupes;
      spdlog::error("continuity: event {}: {}", ev.id, status.error().to_string());
      co_return;
    }
    if (!finished) co_return;
    spdlog::info("continuity: event {} drained: every held message was offered to the primary "
                 "(not sent again: {}; refused by the primary and kept: {}{})",
                 ev.id, deduplicated, kept,
                 held_by_admin ? "; held by an administrator: " + std::to_string(held_by_admin) : "");
    if (hooks.on_continuity_change) hooks.on_continuity_change();
  }

  struct Target {
    std::string address;  // what to connect to
    std::uint16_t port;
    std::string name;     // for SNI, certificate checks and logs
  };

  void observe(const std::string& dest, PrimaryAttempt a, std::chrono::steady_clock::time_point started) {
    if (dest != "primary" || !hooks.on_primary_attempt) return;
    hooks.on_primary_attempt(a, std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started));
  }

  static PrimaryAttempt classify(const smtp::ClientReply& r) {
    if (r.code == 0) return PrimaryAttempt::kUnreachable;
    if (r.ok()) return PrimaryAttempt::kDelivered;
    return r.temporary() ? PrimaryAttempt::kDeferred : PrimaryAttempt::kRefused;
  }

  awaitable<void> deliver_batch(std::string dest, std::vector<QueueEntry> batch, DedupeRange dedupe) {
    const auto opening = std::chrono::steady_clock::now();
    std::vector<Target> targets;
    smtp::ClientReply opened{0, "no host to deliver to"};
    if (dest == "primary" || dest == "smarthost") {
      for (const auto& hp : dest == "primary" ? config.delivery.primary : config.delivery.smarthost) {
        targets.push_back({hp.host, hp.port, hp.host});
      }
    } else {
      std::string domain = dest.substr(3);
      auto mx = co_await resolver->mail_exchangers(domain, config.delivery.mx_address_limit);
      if (!mx) {
        // A domain that does not exist (or accepts no mail) is a permanent failure; anything else
        // about DNS is temporary.
        opened = mx.error().code == ErrorCode::kNotFound ? smtp::ClientReply{550, "5.1.2 " + mx.error().context}
                                                          : smtp::ClientReply{0, mx.error().context};
      } else {
        for (const auto& e : *mx)
          for (const auto& a : e.addresses) targets.push_back({a, config.delivery.mx_port, e.host});
      }
    }
    std::unique_ptr<smtp::SmtpClient> client;
    std::string relay;
    for (const auto& t : targets) {
      client = std::make_unique<smtp::SmtpClient>(io, tls, config.hostname,
                                                  std::chrono::seconds(config.delivery.connect_timeout),
                                                  std::chrono::seconds(config.delivery.reply_timeout));
      // Opportunistic TLS whose handshake fails goes on without TLS, never when certificates are
      // verified (smtp::SmtpClient::open).
      client->set_plaintext_fallback(!config.delivery.verify_certificates);
      clients.insert(client.get());
      opened = co_await client->open(t.address, t.port, tls_policy(), t.name);
      clients.erase(client.get());
      relay = t.name == t.address ? t.address + ":" + std::to_string(t.port)
                                  : t.name + "[" + t.address + "]:" + std::to_string(t.port);
      // A server that refuses to talk (5xx greeting or EHLO) is a connection failure, not a verdict on
      // the recipients: try the next host, and later again.
      if (!opened.ok() && opened.code >= 500) opened = smtp::ClientReply{0, opened.to_string()};
      if (opened.ok() && client->tls_failed())
        spdlog::info("delivery: {} ({}): {}; delivering without TLS (delivery.tls = \"opportunistic\")", relay, dest,
                     client->tls_failure());
      if (opened.ok()) break;
      spdlog::info("delivery: {} ({}): {}", relay, dest, opened.to_string());
    }
    bool usable = opened.ok();
    if (!usable) observe(dest, classify(opened), opening);
    if (client) clients.insert(client.get());
    // A connection to the primary or the smarthost goes on with the next due messages when its batch
    // is done, rather than closing and waiting for the next scan (a drain of a large backlog is
    // limited by the wire, not by the scan interval); at most kBatchesPerConnection batches.
    const bool one_destination = dest == "primary" || dest == "smarthost";
    const Route route = dest == "primary" ? Route::kPrimary : Route::kInternet;
    for (unsigned round = 0;; ++round) {
      const std::int64_t now = unix_now();
      for (auto& e : batch) {
        if (stopping) break;
        if (!usable) {
          std::map<std::string, smtp::ClientReply> outcome;
          for (const auto& r : e.recipients)
            if (covers(e, r, dest, now)) outcome[r.address] = opened;
          record(e, outcome, relay);
          continue;
        }
        // At most kMaxUnflushed results (plus one per connection past this check together) wait for
        // their commit beside the group being committed: a crash repeats no more than those two groups
        // and the one message in transfer on each connection (delivery.h).
        while (unflushed.size() >= kMaxUnflushed) co_await flush_now();
        bool still_usable = co_await deliver_one(*client, e, dest, relay, dedupe);
        usable = still_usable;
      }
      // The results are committed before the entries leave in_flight, so the scheduler never sees
      // stale entries and delivers twice.
      co_await flush_now();
      release(batch, dest);
      batch.clear();
      if (!usable || stopping || !one_destination || round + 1 >= kBatchesPerConnection) break;
      DedupeRange range;
      for (auto& e : take_due(route, kBatch, &range)) {
        bool wanted = false;
        for (const auto& r : e.recipients) wanted |= covers(e, r, dest, now) && !in_flight.count(key(e.seq, dest));
        if (!wanted) continue;
        in_flight.insert(key(e.seq, dest));
        in_flight_seqs[e.seq]++;
        batch.push_back(std::move(e));
      }
      if (batch.empty()) break;
      dedupe = range;
    }
    if (usable && !stopping) co_await client->quit();
    if (client) clients.erase(client.get());
    connections[dest]--;
    wakeup.cancel();  // a connection is free: more may be due
  }

  // Delivers one queued message over an open connection. Returns false when the connection broke.
  awaitable<bool> deliver_one(smtp::SmtpClient& client, QueueEntry& e, const std::string& dest,
                              const std::string& relay, const DedupeRange& dedupe) {
    const auto started = std::chrono::steady_clock::now();
    const std::int64_t now = unix_now();
    std::vector<std::string> wanted;
    for (const auto& r : e.recipients)
      if (covers(e, r, dest, now)) wanted.push_back(r.address);
    Result<ArchiveRecord> rec = make_error(ErrorCode::kInternal, "not read");
    std::string raw;
    // What the primary has already (the continuity drain): recipient -> why it is not sent again.
    std::map<std::string, std::string> already;
    const std::uint64_t seq = e.seq;
    const bool check_delivered = dedupe.covers(seq) && !e.message_id.empty();
    // The record (an LMDB lookup of a few microseconds) and the dedupe lookups are read here; the
    // message bytes too when small, and on the pool when large (decompressing takes milliseconds).
    if (check_delivered) {
      for (const auto& a : wanted) {
        auto hit = archive.delivered_lookup(e.message_id, a);
        if (hit && hit->has_value() && (*hit)->seq != seq) {
          already[a] = "not sent again: the primary accepted this message (Message-ID <" + e.message_id +
                       ">) for this recipient as message " + std::to_string((*hit)->seq) + " at " +
                       rfc5322_date((*hit)->at);
        }
      }
    }
    rec = archive.record(seq);
    auto read_raw = [&] {
      auto r = archive.raw(*rec);
      if (r) raw = std::move(r).value();
      else rec = r.error();
    };
    if (rec && rec->raw_size <= kInlineReadBytes) read_raw();
    else if (rec) co_await run_blocking(blocking, read_raw);
    if (!rec) {
      spdlog::error("delivery: message {}: {}", e.seq, rec.error().to_string());
      co_return true;  // archive damage: leave the entry for an administrator (verify)
    }
    std::map<std::string, smtp::ClientReply> outcome;
    if (!already.empty()) {
      for (const auto& [a, why] : already) {
        outcome[a] = smtp::ClientReply{250, why};
        spdlog::info("{}: to=<{}> {}", seq, a, why);
      }
      deduplicated_unreported += already.size();
      std::erase_if(wanted, [&](const std::string& a) { return already.count(a) > 0; });
      if (wanted.empty()) {
        record(e, outcome, relay);
        co_return true;
      }
    }
    // A server that does not offer 8BITMIME gets 8-bit mail converted to 7-bit MIME (RFC 6152 3, as
    // Postfix does): the archive keeps the message as it came (test_postfix.py
    // test_eight_bit_mail_is_converted_for_a_primary_without_8bitmime).
    const bool eight_bit_mime = client.has_extension("8BITMIME");
    if (!eight_bit_mime && has_eight_bit_body(raw)) {
      bool converted = false;
      auto convert = [&] {
        if (auto seven = seven_bit_message(raw)) {
          raw = std::move(*seven);
          converted = true;
        }
      };
      if (raw.size() <= kInlineReadBytes) convert();
      else co_await run_blocking(blocking, convert);
      if (converted) spdlog::info("{}: converted to 7-bit MIME for {}, which does not offer 8BITMIME", seq, relay);
    }
    // Internationalised addresses need SMTPUTF8 on this hop too (RFC 6531), unless only their
    // domains are: those go in A-labels to a server without it ("ana@xn--bcher-kva.example"), as
    // Postfix sends them. A UTF-8 local part there cannot be relayed as it is: a permanent failure.
    auto non_ascii = [](const std::string& a) {
      return std::any_of(a.begin(), a.end(), [](char c) { return static_cast<unsigned char>(c) >= 128; });
    };
    std::string from = rec->envelope.mail_from;
    std::vector<std::string> rcpt_as_sent = wanted;  // wanted[i] as this server is given it
    bool needs_utf8 = non_ascii(from) || std::any_of(wanted.begin(), wanted.end(), non_ascii);
    if (needs_utf8 && !client.has_extension("SMTPUTF8")) {
      auto ascii_address = [](const std::string& a) -> std::optional<std::string> {
        const std::size_t at = a.rfind('@');
        if (at == std::string::npos) return std::nullopt;
        for (std::size_t i = 0; i < at; ++i)
          if (static_cast<unsigned char>(a[i]) >= 128) return std::nullopt;
        auto domain = ascii_domain(std::string_view(a).substr(at + 1));
        if (!domain) return std::nullopt;
        return a.substr(0, at + 1) + *domain;
      };
      bool downgraded = true;
      if (non_ascii(from)) {
        auto f = ascii_address(from);
        downgraded = f.has_value();
        if (f) from = *f;
      }
      for (std::size_t i = 0; downgraded && i < rcpt_as_sent.size(); ++i) {
        if (!non_ascii(rcpt_as_sent[i])) continue;
        auto r = ascii_address(rcpt_as_sent[i]);
        downgraded = r.has_value();
        if (r) rcpt_as_sent[i] = *r;
      }
      if (!downgraded) {
        for (const auto& a : wanted)
          outcome[a] = smtp::ClientReply{553, "5.6.7 " + relay + " does not support SMTPUTF8, which this message needs"};
        record(e, outcome, relay);
        co_return true;
      }
      needs_utf8 = false;
    }
    std::string mail = "MAIL FROM:<" + from + ">";
    if (client.has_extension("SIZE")) mail += " SIZE=" + std::to_string(raw.size());
    if (eight_bit_mime) mail += " BODY=8BITMIME";
    if (needs_utf8) mail += " SMTPUTF8";
    bool broken = false;
    if (client.has_extension("PIPELINING")) {
      // RFC 2920: MAIL, every RCPT and DATA in one write, the replies read together (two round trips
      // per message instead of three plus one per recipient).
      std::vector<std::string> lines{mail};
      for (const auto& a : rcpt_as_sent) lines.push_back("RCPT TO:<" + a + ">");
      lines.push_back("DATA");
      std::vector<smtp::ClientReply> replies = co_await client.pipeline(lines);
      const smtp::ClientReply& m = replies[0];
      const smtp::ClientReply& d = replies.back();
      std::vector<std::string> accepted;
      for (std::size_t i = 0; i < wanted.size(); ++i) {
        const smtp::ClientReply& r = m.ok() ? replies[i + 1] : m;
        if (r.ok()) accepted.push_back(wanted[i]);
        else outcome[wanted[i]] = r;
      }
      broken = std::any_of(replies.begin(), replies.end(), [](const smtp::ClientReply& r) { return r.code == 0; });
      if (d.code == 354 && accepted.empty()) {
        // A server that said 354 without a recipient: end the empty message; nothing is delivered.
        co_await client.send_data("");
        co_await client.command("RSET");
      } else if (d.code == 354) {
        smtp::ClientReply final_reply = co_await client.send_data(raw);
        for (const auto& a : accepted) outcome[a] = final_reply;
        broken |= final_reply.code == 0;
      } else {
        for (const auto& a : accepted) outcome[a] = d.code == 0 ? smtp::ClientReply{0, "connection lost before DATA"} : d;
        if (!broken) co_await client.command("RSET");
      }
    } else {
      smtp::ClientReply m = co_await client.command(mail);
      broken = m.code == 0;
      if (!m.ok()) {
        for (const auto& a : wanted) outcome[a] = m;
      } else {
        std::vector<std::string> accepted;
        for (std::size_t i = 0; i < wanted.size(); ++i) {
          const std::string& a = wanted[i];
          smtp::ClientReply r = co_await client.command("RCPT TO:<" + rcpt_as_sent[i] + ">");
          if (r.ok()) accepted.push_back(a);
          else outcome[a] = r;
          if (r.code == 0) {
            broken = true;
            break;
          }
        }
        if (broken) {
          for (const auto& a : wanted)
            if (!outcome.count(a)) outcome[a] = smtp::ClientReply{0, "connection lost during RCPT"};
        } else if (accepted.empty()) {
          co_await client.command("RSET");
        } else {
          smtp::ClientReply d = co_await client.command("DATA");
          smtp::ClientReply final_reply = d;
          if (d.code == 354) final_reply = co_await client.send_data(raw);
          for (const auto& a : accepted) outcome[a] = final_reply;
          broken |= final_reply.code == 0;
        }
      }
    }
    // The organic check: one attempt per message, classified by its best outcome.
    PrimaryAttempt attempt = PrimaryAttempt::kUnreachable;
    bool first = true;
    for (const auto& a : wanted) {
      auto it = outcome.find(a);
      if (it == outcome.end()) continue;
      PrimaryAttempt k = classify(it->second);
      if (first || static_cast<int>(k) < static_cast<int>(attempt)) attempt = k;
      first = false;
    }
    if (!first) observe(dest, attempt, started);
    record(e, outcome, relay);
    co_return !broken;
  }

  // Turns attempt replies into results (deltas) for the recipients attempted.
  void record(const QueueEntry& attempted, const std::map<std::string, smtp::ClientReply>& outcome,
              const std::string& relay) {
    const std::int64_t now = unix_now();
    const bool inbound = attempted.route == Route::kPrimary;
    // A 452 while the same transaction took other recipients is the server's limit of recipients a
    // message (RFC 5321 4.5.3.1.10): the rest go in another transaction at once, not after the retry
    // delay (test_postfix.py test_postfix_sends_more_recipients_than_one_message_takes). Each such
    // transaction delivers some, so this ends; a recipient refused again with none taken beside it
    // waits as any deferred one.
    const bool took_some = std::any_of(outcome.begin(), outcome.end(), [](const auto& o) { return o.second.ok(); });
    for (const auto& r : attempted.recipients) {
      auto it = outcome.find(r.address);
      if (it == outcome.end() || r.state != RecipientState::kPending) continue;
      const smtp::ClientReply& reply = it->second;
      const unsigned attempts = r.attempts + 1;
      DeliveryResult res;
      res.seq = attempted.seq;
      res.address = r.address;
      res.last_response = reply.to_string();
      const bool expired = now - attempted.created_at >= static_cast<std::int64_t>(config.delivery.queue_lifetime);
      auto count = [&](const char* outcome_name) {
        metrics::counter("mailark_delivery_outcomes_total", "Delivery attempts per recipient, by route and outcome",
                         {{"route", inbound ? "primary" : "internet"}, {"outcome", outcome_name}})
            .inc();
      };
      if (reply.ok()) {
        count("delivered");
        res.state = RecipientState::kDelivered;
        spdlog::info("{}: delivered to=<{}> relay={} attempts={} reply=\"{}\"", attempted.seq, r.address, relay,
                     attempts, reply.to_string());
      } else if (!reply.temporary() || expired) {
        std::string why =
            reply.temporary() ? "delivery time expired; last error: " + reply.to_string() : reply.to_string();
        res.last_response = why;
        if (inbound) {
          // Never a DSN to an outside sender: the message stays queued for the administrator.
          res.state = RecipientState::kKept;
          count("kept");
          spdlog::warn("{}: kept for the administrator to=<{}> relay={} attempts={} reply=\"{}\" "
                       "(no bounce to an outside sender; `mailark queue retry|delete {}`)",
                       attempted.seq, r.address, relay, attempts, why, attempted.seq);
        } else {
          res.state = RecipientState::kFailed;  // a DSN follows once this result is committed
          count("bounced");
          spdlog::info("{}: bounced to=<{}> relay={} attempts={} reply=\"{}\"", attempted.seq, r.address, relay,
                       attempts, why);
        }
      } else {
        const auto& sched = config.delivery.retry_schedule;
        const bool over_limit = reply.code == 452 && took_some;
        unsigned delay = over_limit ? 0 : sched[std::min<std::size_t>(attempts - 1, sched.size() - 1)];
        res.state = RecipientState::kPending;
        res.next_attempt_at = now + delay;
        count("deferred");
        spdlog::info("{}: deferred to=<{}> relay={} attempts={} retry_in={}s reply=\"{}\"", attempted.seq, r.address,
                     relay, attempts, delay, reply.to_string());
      }
      unflushed.push_back(std::move(res));
    }
    if (unflushed.size() >= kMaxUnflushed) {
      asio::co_spawn(io, flush_now(), asio::detached);
    } else {
      schedule_flush();
    }
  }

  void schedule_flush() {
    if (flush_scheduled) return;
    flush_scheduled = true;
    flush_timer.expires_after(std::chrono::milliseconds(5));
    flush_timer.async_wait([this](const asio::error_code&) {
      flush_scheduled = false;
      asio::co_spawn(io, flush_now(), asio::detached);
    });
  }

  // Commits the results gathered so far on the pool, one group commit at a time; returns when every
  // result recorded before the call is committed.
  awaitable<void> flush_now() {
    while (flushing) {
      co_await flushed.async_wait(as_tuple(use_awaitable));
    }
    if (unflushed.empty()) co_return;
    flushing = true;
    std::vector<DeliveryResult> results = std::move(unflushed);
    unflushed.clear();
    Result<std::vector<QueueEntry>> written = std::vector<QueueEntry>{};
    auto write = [&] { written = archive.queue_apply(results); };
    co_await run_blocking(blocking, write);
    flushing = false;
    flushed.cancel();
    if (!written) {
      spdlog::error("delivery: writing {} queue results: {}", results.size(), written.error().to_string());
      co_return;
    }
    for (const auto& e : *written) send_dsn_if_needed(e);
  }

  awaitable<void> mark_reported(std::uint64_t seq) {
    Result<QueueEntry> written = make_error(ErrorCode::kInternal, "not written");
    auto write = [&] {
      written = archive.queue_modify(seq, [](QueueEntry& q) {
        for (auto& r : q.recipients)
          if (r.state == RecipientState::kFailed) r.state = RecipientState::kBounced;
        return ok_status();
      });
    };
    co_await run_blocking(blocking, write);
    dsn_in_flight.erase(seq);
    if (written || written.error().code == ErrorCode::kNotFound) {
      spdlog::info("{}: no notification: the null sender never gets one", seq);
    } else {
      spdlog::error("{}: {}", seq, written.error().to_string());
    }
  }

  // An entry with recipients in kFailed needs its DSN: built here, archived and queued by the
  // pipeline in the same transaction that marks them bounced (PendingAppend::dsn_for).
  void send_dsn_if_needed(const QueueEntry& e) {
    std::vector<std::pair<std::string, std::string>> failed;
    for (const auto& r : e.recipients)
      if (r.state == RecipientState::kFailed) failed.emplace_back(r.address, r.last_response);
    if (failed.empty() || dsn_in_flight.count(e.seq)) return;
    auto rec = archive.record(e.seq);
    if (!rec) return;
    const std::string& sender = rec->envelope.mail_from;
    if (sender.empty()) {
      // The null sender (a DSN itself, an auto-reply) never gets a notification: that would loop.
      dsn_in_flight.insert(e.seq);
      asio::co_spawn(io, mark_reported(e.seq), asio::detached);
      return;
    }
    std::string headers;
    if (auto raw = archive.raw(*rec)) {
      std::size_t end = raw->find("\r\n\r\n");
      if (end == std::string::npos) end = raw->find("\n\n");
      headers = raw->substr(0, std::min<std::size_t>(end == std::string::npos ? raw->size() : end, 64 * 1024));
    }
    IngestItem item;
    item.raw = make_dsn(config.hostname, sender, failed, headers, rec->envelope.received_at);
    item.origin = "dsn-" + std::to_string(e.seq);
    bool internal = false;
    for (const auto& d : config.inbound_domains) internal |= domain_key(d) == domain_key(domain_of(sender));
    item.envelope.direction = internal ? Direction::kInbound : Direction::kOutbound;
    item.envelope.mail_from = "";
    item.envelope.rcpt_to = {sender};
    item.envelope.client = "local";
    item.envelope.connector = "dsn";
    item.envelope.source = "dsn for " + std::to_string(e.seq);
    item.envelope.received_at = unix_now();
    QueueEntry q;
    q.route = internal ? Route::kPrimary : Route::kInternet;
    q.recipients = {{sender}};
    item.queue = std::move(q);
    item.on_unscannable = ScanAction::kDeliver;  // our own report; its quoted headers are no attack
    DsnNotice notice;
    notice.seq = e.seq;
    for (const auto& f : failed) notice.recipients.push_back(f.first);
    item.dsn_for = std::move(notice);
    const std::uint64_t seq = e.seq;
    item.on_done = [this, seq](const IngestResult& r) {
      asio::post(io, [this, seq, outcome = r.outcome, reason = r.reason] {
        dsn_in_flight.erase(seq);
        if (outcome == IngestOutcome::kArchived) {
          wakeup.cancel();
        } else if (outcome != IngestOutcome::kDuplicate) {
          spdlog::error("{}: the DSN was not archived ({}); it is made again on the next queue scan", seq, reason);
        }
      });
    };
    if (!inject(item)) return;  // the pipeline is full: the next scan tries again
    dsn_in_flight.insert(seq);
    spdlog::info("{}: sender non-delivery notification to=<{}>", seq, sender);
  }
};

DeliveryAgent::DeliveryAgent(asio::io_context& io, asio::thread_pool& blocking, Archive& archive,
                             const ServeConfig& config, std::function<bool(IngestItem&)> inject, DeliveryHooks hooks)
    : impl_(std::make_unique<Impl>(io, blocking, archive, config, std::move(inject), std::move(hooks))) {}

DeliveryAgent::~DeliveryAgent() = default;

awaitable<void> DeliveryAgent::run() {
  Impl& m = *impl_;
  // A scan of the queue every second, or sooner when woken by new mail; wake-ups are coalesced to at
  // most one scan per 100 ms, so a busy server does not rescan a long queue for every message.
  constexpr auto kMinInterval = std::chrono::milliseconds(100);
  while (!m.stopping) {
    auto scanned = std::chrono::steady_clock::now();
    m.schedule();
    co_await m.check_drain();
    m.wakeup.expires_after(std::chrono::seconds(1));
    co_await m.wakeup.async_wait(as_tuple(use_awaitable));
    auto since = std::chrono::steady_clock::now() - scanned;
    if (!m.stopping && since < kMinInterval) {
      asio::steady_timer pause(m.io);
      pause.expires_after(kMinInterval - since);
      co_await pause.async_wait(as_tuple(use_awaitable));
    }
  }
}

void DeliveryAgent::wake() {
  asio::post(impl_->io, [this] { impl_->wakeup.cancel(); });
}

void DeliveryAgent::stop() {
  impl_->stopping = true;
  impl_->wakeup.cancel();
  asio::co_spawn(impl_->io, impl_->flush_now(), asio::detached);
  for (auto* c : impl_->clients) c->abort();
}

}  // namespace mailark::api
