#include "api/smtp/verifier.h"

#include <spdlog/spdlog.h>

#include <asio/experimental/as_tuple.hpp>
#include <ctime>

#include "api/blocking.h"
#include "api/smtp/client.h"
#include "common/ascii.h"
#include "common/dates.h"

namespace mailark::api {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;

struct RecipientVerifier::Impl {
  asio::io_context& io;
  asio::thread_pool& blocking;
  Archive& archive;
  ServeConfig config;
  asio::ssl::context tls{asio::ssl::context::tls_client};
  std::map<std::string, CachedRecipient> cache;
  struct Pending {
    explicit Pending(asio::io_context& io) : done(io) { done.expires_at(asio::steady_timer::time_point::max()); }
    asio::steady_timer done;
    std::optional<smtp::Reply> answer;
  };
  std::map<std::string, std::shared_ptr<Pending>> pending;
  unsigned running = 0;
  asio::steady_timer slot_freed{io};

  Impl(asio::io_context& i, asio::thread_pool& b, Archive& a, const ServeConfig& c)
      : io(i), blocking(b), archive(a), config(c) {
    tls.set_verify_mode(asio::ssl::verify_none);
    slot_freed.expires_at(asio::steady_timer::time_point::max());
    if (auto loaded = archive.recipient_cache()) {
      for (auto& e : *loaded) cache[e.address] = std::move(e);
    } else {
      spdlog::warn("recipient verification: cache not loaded: {}", loaded.error().to_string());
    }
  }

  bool fresh(const CachedRecipient& c) const {
    const std::int64_t ttl = c.exists ? config.verify_positive_ttl : config.verify_negative_ttl;
    return unix_now() - c.checked_at < ttl;
  }

  std::optional<smtp::Reply> without_primary(const std::string& address) const {
    auto known = cache.find(ascii_lower(address));
    if (known != cache.end() && known->second.exists) return std::nullopt;  // accepted before, however long ago
    if (known != cache.end() && fresh(known->second)) return refusal(address, known->second.reply);
    if (config.verify_unreachable == "accept") return std::nullopt;
    return smtp::Reply{451, "4.4.3 <" + address + ">: Recipient address verification is not possible now, try again later"};
  }

  static smtp::Reply refusal(const std::string& address, const std::string& primary_reply) {
    return {550, "5.1.1 <" + address + ">: Recipient address rejected: " +
                     (primary_reply.empty() ? std::string("user unknown") : primary_reply.substr(0, 200))};
  }

  // Connections to the primary between probes, newest last: a message for many recipients, or many
  // messages at once, cost the primary a few sessions, not one per address (as Postfix's probes
  // share its SMTP client's connection cache). Each is closed after kIdle without a probe, or after
  // kProbesPerConnection probes. Test: test_postfix.py test_recipient_probes_share_connections_to_the_primary.
  static constexpr auto kIdle = std::chrono::seconds(5);
  static constexpr unsigned kProbesPerConnection = 100;
  struct Connection {
    std::shared_ptr<smtp::SmtpClient> client;
    unsigned probes = 0;
    std::chrono::steady_clock::time_point idle_since;
  };
  std::vector<Connection> idle;
  asio::steady_timer reaper{io};
  bool reaping = false;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  ~Impl() {
    *alive = false;
    for (auto& c : idle) c.client->abort();
  }

  // One probe over an open connection: MAIL FROM:<>, RCPT TO and RSET (one write when the primary
  // offers PIPELINING), leaving the connection ready for the next. Code 0: the connection broke.
  struct Asked {
    smtp::ClientReply mail, rcpt;
    bool reusable = false;  // reset and still open
  };
  static awaitable<Asked> ask(smtp::SmtpClient& client, const std::string& address) {
    const std::vector<std::string> lines{"MAIL FROM:<>", "RCPT TO:<" + address + ">", "RSET"};
    std::vector<smtp::ClientReply> r;
    if (client.has_extension("PIPELINING")) {
      r = co_await client.pipeline(lines);
    } else {
      for (const auto& line : lines) {
        r.push_back(co_await client.command(line));
        if (r.back().code == 0 || (line == lines[0] && !r.back().ok())) break;
      }
    }
    r.resize(3, smtp::ClientReply{0, "connection lost"});
    co_return Asked{r[0], r[1], r[2].code == 250};
  }

  void park(std::shared_ptr<smtp::SmtpClient> client, unsigned probes) {
    if (probes >= kProbesPerConnection) {
      asio::co_spawn(io, [client]() -> awaitable<void> { co_await client->quit(); }, asio::detached);
      return;
    }
    idle.push_back(Connection{std::move(client), probes, std::chrono::steady_clock::now()});
    if (!reaping) {
      reaping = true;
      asio::co_spawn(io, reap(alive), asio::detached);
    }
  }

  // Closes parked connections kIdle after their last probe; ends when none is parked.
  awaitable<void> reap(std::shared_ptr<bool> live) {
    while (*live && !idle.empty()) {
      reaper.expires_at(idle.front().idle_since + kIdle);
      co_await reaper.async_wait(as_tuple(use_awaitable));
      if (!*live) co_return;  // the verifier is gone (its connections aborted)
      const auto now = std::chrono::steady_clock::now();
      while (!idle.empty() && idle.front().idle_since + kIdle <= now) {
        auto client = std::move(idle.front().client);
        idle.erase(idle.begin());
        co_await client->quit();
        if (!*live) co_return;
      }
    }
    if (*live) reaping = false;
  }

  // One probe: 2xx accepted, 5xx refused, anything else (no answer, 4xx) unknown.
  awaitable<smtp::ClientReply> probe(const std::string& address) {
    // A parked connection first; one the primary closed meanwhile is dropped and the next tried.
    while (!idle.empty()) {
      Connection c = std::move(idle.back());
      idle.pop_back();
      Asked a = co_await ask(*c.client, address);
      if (a.mail.code == 0 || (a.mail.ok() && a.rcpt.code == 0)) {
        spdlog::info("verify: a connection kept for probes is closed ({}); another is tried",
                     (a.mail.code == 0 ? a.mail : a.rcpt).to_string());
        c.client->abort();
        continue;
      }
      if (!a.mail.ok()) {  // the primary refuses the null sender now: a new session below says why
        co_await c.client->quit();
        break;
      }
      if (a.reusable) park(c.client, c.probes + 1);
      else co_await c.client->quit();
      co_return a.rcpt;
    }
    smtp::ClientReply last{0, "no primary server configured"};
    for (const auto& hp : config.delivery.primary) {
      auto client = std::make_shared<smtp::SmtpClient>(
          io, tls, config.hostname, std::chrono::seconds(std::min(10u, config.delivery.connect_timeout)),
          std::chrono::seconds(std::min(30u, config.delivery.reply_timeout)));
      smtp::ClientReply opened = co_await client->open(hp.host, hp.port, smtp::SmtpClient::Tls::kNone);
      if (!opened.ok()) {
        last = smtp::ClientReply{0, opened.to_string()};
        continue;
      }
      Asked a = co_await ask(*client, address);
      if (!a.mail.ok()) {
        last = smtp::ClientReply{a.mail.code >= 500 ? 0 : a.mail.code, "MAIL FROM:<> refused: " + a.mail.to_string()};
        co_await client->quit();
        continue;
      }
      if (a.reusable) park(client, 1);
      else co_await client->quit();
      co_return a.rcpt;
    }
    co_return last;
  }

  awaitable<std::optional<smtp::Reply>> run_probe(const std::string& address) {
    const std::string key = ascii_lower(address);
    while (running >= kMaxProbes) {
      co_await slot_freed.async_wait(as_tuple(use_awaitable));
    }
    ++running;
    smtp::ClientReply r = co_await probe(address);
    --running;
    slot_freed.cancel();
    slot_freed.expires_at(asio::steady_timer::time_point::max());

    std::optional<smtp::Reply> answer;
    if (r.ok() || (r.code >= 500 && r.code < 600)) {
      CachedRecipient c;
      c.address = key;
      c.exists = r.ok();
      c.checked_at = unix_now();
      c.reply = r.to_string();
      cache[key] = c;
      auto store = [this, &c] {
        if (auto s = archive.store_recipients({c}); !s)
          spdlog::warn("recipient verification: caching <{}>: {}", c.address, s.error().to_string());
      };
      co_await run_blocking(blocking, store);
      spdlog::info("verify: <{}> {} by the primary: {}", address, c.exists ? "accepted" : "refused", c.reply);
      if (!c.exists) answer = refusal(address, c.reply);
    } else {
      answer = without_primary(address);
      spdlog::info("verify: <{}>: the primary cannot be asked ({}); {}", address, r.to_string(),
                   answer ? answer->text : "accepted (as it was before, or verify_unreachable = accept)");
    }
    co_return answer;
  }
};

RecipientVerifier::RecipientVerifier(asio::io_context& io, asio::thread_pool& blocking, Archive& archive,
                                     const ServeConfig& config)
    : impl_(std::make_unique<Impl>(io, blocking, archive, config)) {}

RecipientVerifier::~RecipientVerifier() = default;

std::optional<smtp::Reply> RecipientVerifier::answer_without_primary(const std::string& address) const {
  return impl_->without_primary(address);
}

RecipientVerifier::Known RecipientVerifier::lookup(const std::string& address, smtp::Reply* refusal) const {
  auto it = impl_->cache.find(ascii_lower(address));
  if (it == impl_->cache.end() || !impl_->fresh(it->second)) return Known::kUnknown;
  if (it->second.exists) return Known::kAccepted;
  if (refusal) *refusal = Impl::refusal(address, it->second.reply);
  return Known::kRefused;
}

awaitable<std::optional<smtp::Reply>> RecipientVerifier::verify(const std::string& address_in) {
  const std::string address = address_in;  // the caller's string may not outlive the first suspension
  Impl& m = *impl_;
  const std::string key = ascii_lower(address);
  auto shared = m.pending.find(key);
  if (shared != m.pending.end()) {
    // A probe for this address is running: wait for its answer.
    std::shared_ptr<Impl::Pending> p = shared->second;
    co_await p->done.async_wait(as_tuple(use_awaitable));
    co_return p->answer;
  }
  auto p = std::make_shared<Impl::Pending>(m.io);
  m.pending[key] = p;
  std::optional<smtp::Reply> answer = co_await m.run_probe(address);
  p->answer = answer;
  m.pending.erase(key);
  p->done.cancel();
  co_return answer;
}

}  // namespace mailark::api
