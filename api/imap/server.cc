#include "api/imap/server.h"

#include <spdlog/spdlog.h>

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <map>
#include <set>

#include "api/accept.h"
#include "api/blocking.h"
#include "api/room.h"
#include "api/write.h"

namespace mailark::api {

using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {
void log_imap_exception(std::exception_ptr e) { log_escaped("imap", e); }
}  // namespace

struct ImapServer::Impl {
  asio::io_context& io;
  asio::ssl::context& tls;
  imap::ImapContext& ctx;
  const ServeConfig& config;
  asio::thread_pool pool{4};
  struct Listener {
    ListenerConfig cfg;
    std::unique_ptr<tcp::acceptor> acceptor;
  };
  std::vector<Listener> listeners;
  // On the io thread only.
  std::map<std::uint32_t, std::set<asio::steady_timer*>> idle_waiters;
  std::set<tcp::socket*> open_sockets;
  unsigned sessions = 0;
  std::map<std::string, unsigned> per_client;
  bool stopping = false;
  Room uploads{config.limits.store_bytes};  // the APPEND literals being received now
  asio::steady_timer follower_timer{io};

  Impl(asio::io_context& i, asio::ssl::context& t, imap::ImapContext& c, const ServeConfig& cfg)
      : io(i), tls(t), ctx(c), config(cfg) {}

  ~Impl() { pool.join(); }

  Status setup() {
    asio::error_code ec;
    for (const auto& l : config.listeners) {
      if (l.role != "imap") continue;
      Listener lst{l, std::make_unique<tcp::acceptor>(io)};
      auto addr = asio::ip::make_address(l.address, ec);
      if (ec) return make_error(ErrorCode::kInvalidArgument, "listener " + l.name + ": bad address " + l.address);
      tcp::endpoint ep(addr, l.port);
      lst.acceptor->open(ep.protocol(), ec);
      if (!ec) lst.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) lst.acceptor->bind(ep, ec);
      if (!ec) lst.acceptor->listen(asio::socket_base::max_listen_connections, ec);
      if (ec)
        return make_error(ErrorCode::kIo, "listener " + l.name + " on " + l.address + ":" + std::to_string(l.port) + ": " +
                                              ec.message());
      listeners.push_back(std::move(lst));
    }
    return ok_status();
  }

  awaitable<void> accept_loop(Listener& l) {
    AcceptBackoff backoff("imap " + l.cfg.name);  // api/accept.h: out of file descriptors, wait; never spin
    while (!stopping) {
      auto [ec, sock] = co_await l.acceptor->async_accept(asio::experimental::as_tuple(use_awaitable));
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) co_return;
        co_await backoff.failed(ec);
        continue;
      }
      backoff.accepted();
      asio::co_spawn(io, serve(std::move(sock), l.cfg), log_imap_exception);
    }
  }

  awaitable<void> follower() {
    while (!stopping) {
      Result<FollowStats> got = FollowStats{};
      auto work = [&] {
        do {
          got = ctx.store.follow(ctx.archive, 5000);
        } while (got && got->followed < ctx.archive.head().seq && !stopping);
      };
      if (ctx.store.followed() < ctx.archive.head().seq) co_await run_blocking(pool, work);
      if (!got) spdlog::warn("mailbox store: {}", got.error().to_string());
      follower_timer.expires_after(std::chrono::milliseconds(500));
      auto [ec] = co_await follower_timer.async_wait(asio::experimental::as_tuple(use_awaitable));
      (void)ec;
    }
  }

  awaitable<void> serve(tcp::socket sock, ListenerConfig lc) {
    asio::error_code ec;
    auto remote = sock.remote_endpoint(ec);
    std::string ip = ec ? "unknown" : remote.address().to_string();
    if (ip.rfind("::ffff:", 0) == 0) ip = ip.substr(7);
    const std::string group = client_group(ip);
    if (sessions >= config.imap_max_sessions || per_client[group] >= config.imap_max_sessions_per_ip) {
      if (lc.tls != "implicit") {
        std::string busy = "* BYE too many connections, try again later\r\n";
        co_await asio::async_write(sock, asio::buffer(busy), asio::experimental::as_tuple(use_awaitable));
      }
      co_return;
    }
    ++sessions;
    ++per_client[group];
    open_sockets.insert(&sock);
    struct Release {
      Impl* self;
      std::string group;
      tcp::socket* s;
      ~Release() {
        --self->sessions;
        if (--self->per_client[group] == 0) self->per_client.erase(group);
        self->open_sockets.erase(s);
      }
    } release{this, group, &sock};

    asio::ssl::stream<tcp::socket&> tls_stream(sock, tls);
    bool secure = false;
    const imap::ImapSession* in_session = nullptr;  // set below: a client that reads nothing has as long
                                                    // as a silent one (api/write.h)
    auto write = [&](const std::string& bytes) -> awaitable<bool> {
      if (bytes.empty()) co_return true;
      const auto stall = in_session && in_session->logged_in() ? std::chrono::seconds(config.imap_idle_timeout_s)
                                                               : std::chrono::seconds(60);
      const asio::error_code ec = secure ? co_await write_within(tls_stream, asio::buffer(bytes), stall)
                                         : co_await write_within(sock, asio::buffer(bytes), stall);
      if (ec == asio::error::timed_out)
        spdlog::info("imap {}: [{}] the client read nothing for {} s: session ended", lc.name, ip,
                     std::chrono::duration_cast<std::chrono::seconds>(stall).count());
      co_return !ec;
    };
    auto handshake = [&]() -> awaitable<bool> {
      asio::steady_timer timer(io);
      timer.expires_after(std::chrono::seconds(60));
      auto r = co_await (tls_stream.async_handshake(asio::ssl::stream_base::server, asio::experimental::as_tuple(use_awaitable)) ||
                         timer.async_wait(asio::experimental::as_tuple(use_awaitable)));
      if (r.index() == 1 || std::get<0>(std::get<0>(r))) co_return false;
      secure = true;
      co_return true;
    };
    if (lc.tls == "implicit") {
      bool ok = co_await handshake();
      if (!ok) co_return;
    }
    const bool trusted = std::any_of(config.plaintext_login_networks.begin(), config.plaintext_login_networks.end(),
                                     [&](const Network& n) { return n.contains(ip); });
    imap::ImapSession session(ctx, ip, secure, lc.tls == "starttls", trusted);
    in_session = &session;
    imap::CommandLimits limits;
    limits.max_append_bytes = ctx.max_message_bytes;
    // A message's literal (anything over 64 KiB, after login) needs room on disk (NO [OVERQUOTA]
    // while the data folder's free space is short, api/disk_reserve.h) and takes room among the
    // messages being uploaded over all connections, limits.store_bytes: one always has room, more get
    // NO [UNAVAILABLE] until there is room again; one user's many connections cannot make the server
    // hold connections x 64 MiB (bench/imap/held_append.py; tests/e2e/test_imap.py
    // test_appends_over_many_connections_share_a_bounded_room).
    Room::Hold upload(uploads);  // this connection's command in progress
    auto make_reader = [&] {
      auto r = std::make_unique<imap::CommandReader>(limits);
      r->set_literal_gate([this, &upload, &session, &ip](std::uint64_t n) -> std::optional<std::string> {
        if (ctx.disk_room && !ctx.disk_room(n)) {
          spdlog::info("imap: [{}] {}: an APPEND of {} bytes refused: the data folder's disk is short "
                       "(limits.disk_reserve_bytes)", ip, session.user_name(), n);
          return std::string(imap::kNoDiskSpace);
        }
        if (upload.take(static_cast<std::size_t>(n))) return std::nullopt;
        spdlog::info("imap: [{}] {}: an APPEND of {} bytes refused for now: {} bytes of messages are being "
                     "uploaded (limits.store_bytes)", ip, session.user_name(), n, uploads.used());
        return "[UNAVAILABLE] the server is receiving too many messages at once; try again shortly";
      });
      return r;
    };
    auto reader = make_reader();
    bool greeted = co_await write(session.greeting());
    if (!greeted) co_return;

    std::vector<char> buf(65536);
    // Reads once into the reader; false when the client is gone or too slow.
    auto read_more = [&](std::chrono::steady_clock::duration limit) -> awaitable<bool> {
      asio::steady_timer timer(io);
      timer.expires_after(limit);
      std::variant<std::tuple<asio::error_code, std::size_t>, std::tuple<asio::error_code>> r;
      if (secure) r = co_await (tls_stream.async_read_some(asio::buffer(buf), asio::experimental::as_tuple(use_awaitable)) ||
                                timer.async_wait(asio::experimental::as_tuple(use_awaitable)));
      else r = co_await (sock.async_read_some(asio::buffer(buf), asio::experimental::as_tuple(use_awaitable)) ||
                         timer.async_wait(asio::experimental::as_tuple(use_awaitable)));
      if (r.index() == 1) co_return false;
      auto [e, n] = std::get<0>(r);
      if (e || stopping) co_return false;
      reader->feed(std::string_view(buf.data(), n));
      co_return true;
    };
    // RFC 9051 5.4: at least 30 minutes before an authenticated client is logged out; a client that
    // has not logged in gets a minute of silence, and imap.login_timeout in all (as Dovecot's login
    // processes): a client that sends a byte now and then never logging in holds a connection no
    // longer (test_failures.py test_an_imap_client_that_never_logs_in_is_cut_off).
    const auto login_by = std::chrono::steady_clock::now() + std::chrono::seconds(config.imap_login_timeout_s);
    auto idle_limit = [&]() -> std::chrono::steady_clock::duration {
      if (session.logged_in()) return std::chrono::seconds(config.imap_idle_timeout_s);
      return std::min<std::chrono::steady_clock::duration>(std::chrono::seconds(60),
                                                           login_by - std::chrono::steady_clock::now());
    };

    auto past_login_time = [&] { return !session.logged_in() && std::chrono::steady_clock::now() >= login_by; };
    auto end_at_login_time = [&]() -> awaitable<void> {
      spdlog::info("imap {}: [{}] not logged in after {} s: session ended (imap.login_timeout)", lc.name, ip,
                   config.imap_login_timeout_s);
      (void)co_await write("* BYE login time limit\r\n");
    };

    while (!stopping) {
      if (past_login_time()) {
        co_await end_at_login_time();
        co_return;
      }
      reader->set_authenticated(session.logged_in());  // a message's literal only after login
      auto ev = reader->next();
      if (ev == imap::CommandReader::Event::kNone) {
        bool more = co_await read_more(idle_limit());
        if (!more && !stopping && past_login_time()) {
          co_await end_at_login_time();
          co_return;
        }
        if (!more) {
          (void)co_await write("* BYE " + std::string(stopping ? "shutting down" : "autologout") + "\r\n");
          co_return;
        }
        continue;
      }
      if (ev == imap::CommandReader::Event::kContinue) {
        bool w = co_await write("+ OK\r\n");
        if (!w) co_return;
        continue;
      }
      if (ev == imap::CommandReader::Event::kBad || ev == imap::CommandReader::Event::kTooBig ||
          ev == imap::CommandReader::Event::kBusy || ev == imap::CommandReader::Event::kClose) {
        upload.release();
        std::string out;
        if (ev == imap::CommandReader::Event::kBad) out = session.bad(reader->error_tag(), reader->error());
        else if (ev == imap::CommandReader::Event::kTooBig) out = reader->error_tag() + " NO [TOOBIG] " + reader->error() + "\r\n";
        else if (ev == imap::CommandReader::Event::kBusy) out = reader->error_tag() + " NO " + reader->error() + "\r\n";
        else out = "* BYE " + reader->error() + "\r\n";
        bool w = co_await write(out);
        if (!w || ev == imap::CommandReader::Event::kClose || session.too_many_errors()) co_return;
        continue;
      }
      if (ev == imap::CommandReader::Event::kLine) continue;  // a stray line outside IDLE/AUTHENTICATE
      imap::Command cmd = reader->take_command();
      imap::ImapSession::Reply reply;
      auto exec = [&] { reply = session.execute(cmd); };
      co_await run_blocking(pool, exec);
      while (true) {
        bool w = co_await write(reply.out);
        if (!w) co_return;
        using Then = imap::ImapSession::Then;
        if (reply.then == Then::kMore) {
          auto more = [&] { reply = session.more(); };
          co_await run_blocking(pool, more);
          continue;
        }
        if (reply.then == Then::kClose) co_return;
        if (reply.then == Then::kStartTls) {
          bool ok = co_await handshake();
          if (!ok) co_return;
          session.tls_started();
          // Nothing sent in plaintext after STARTTLS may count as a command (RFC 9051 11.1; test:
          // test_imap.py test_commands_sent_in_plaintext_behind_starttls_are_discarded).
          reader = make_reader();
          break;
        }
        if (reply.then == Then::kAuthLine) {
          reader->expect_line();
          std::optional<std::string> line;
          while (!line) {
            auto e2 = reader->next();
            if (e2 == imap::CommandReader::Event::kLine) {
              line = reader->raw_line();
            } else if (e2 == imap::CommandReader::Event::kNone) {
              bool more = co_await read_more(std::chrono::seconds(60));
              if (!more) co_return;
            } else {
              co_return;
            }
          }
          auto step = [&] { reply = session.auth_line(*line); };
          co_await run_blocking(pool, step);
          continue;
        }
        if (reply.then == Then::kIdle) {
          bool done = co_await idle(session, *reader, read_more, write);
          if (!done) co_return;
          auto fin = [&] { reply = session.idle_done(reader->raw_line()); };
          co_await run_blocking(pool, fin);
          continue;
        }
        break;
      }
      upload.release();  // the command is done with its literal
      if (session.too_many_errors()) co_return;
    }
    if (stopping) (void)co_await write(session.shutdown_notice());
  }

  // Waits for DONE; meanwhile sends what changes. True when DONE (or another line) arrived.
  template <typename ReadMore, typename Write>
  awaitable<bool> idle(imap::ImapSession& session, imap::CommandReader& reader, ReadMore& read_more, Write& write) {
    reader.expect_line();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(config.imap_idle_timeout_s);
    asio::steady_timer wake(io);
    const std::uint32_t user = session.user_id();
    while (!stopping && std::chrono::steady_clock::now() < deadline) {
      auto ev = reader.next();
      if (ev == imap::CommandReader::Event::kLine) co_return true;
      if (ev != imap::CommandReader::Event::kNone) co_return false;
      // Wait for input, a change, or the poll interval.
      wake.expires_after(std::chrono::seconds(30));
      idle_waiters[user].insert(&wake);
      bool input = false;
      {
        auto wait_change = [&]() -> awaitable<void> {
          auto [e] = co_await wake.async_wait(asio::experimental::as_tuple(use_awaitable));
          (void)e;
        };
        auto r = co_await (read_more(deadline - std::chrono::steady_clock::now()) || wait_change());
        if (r.index() == 0) {
          input = std::get<0>(r);
          if (!input) {
            idle_waiters[user].erase(&wake);
            co_return false;
          }
        }
      }
      idle_waiters[user].erase(&wake);
      if (idle_waiters[user].empty()) idle_waiters.erase(user);
      if (!input) {
        std::string changes;
        auto poll = [&] { changes = session.idle_poll(); };
        co_await run_blocking(pool, poll);
        bool w = co_await write(changes);
        if (!w) co_return false;
      }
    }
    co_return false;
  }
};

ImapServer::ImapServer(asio::io_context& io, asio::ssl::context& tls, imap::ImapContext& ctx, const ServeConfig& config)
    : impl_(std::make_unique<Impl>(io, tls, ctx, config)) {}
ImapServer::~ImapServer() = default;

Status ImapServer::setup() {
  return impl_->setup();
}

std::vector<std::uint16_t> ImapServer::ports() const {
  std::vector<std::uint16_t> out;
  asio::error_code ec;
  for (const auto& l : impl_->listeners) out.push_back(l.acceptor->local_endpoint(ec).port());
  return out;
}

awaitable<void> ImapServer::run() {
  for (auto& l : impl_->listeners) {
    asio::error_code ec;
    spdlog::info("imap listener {} on {}:{} (tls {})", l.cfg.name, l.cfg.address, l.acceptor->local_endpoint(ec).port(), l.cfg.tls);
    asio::co_spawn(impl_->io, impl_->accept_loop(l), log_imap_exception);
  }
  co_await impl_->follower();
}

void ImapServer::stop() {
  asio::post(impl_->io, [m = impl_.get()] {
    m->stopping = true;
    asio::error_code ec;
    for (auto& l : m->listeners) l.acceptor->close(ec);
    for (auto* s : m->open_sockets) s->cancel(ec);
    m->follower_timer.cancel();
    for (auto& [u, timers] : m->idle_waiters)
      for (auto* t : timers) t->cancel();
  });
}

void ImapServer::notify(const std::vector<std::uint32_t>& users) {
  asio::post(impl_->io, [m = impl_.get(), users] {
    for (auto u : users) {
      auto it = m->idle_waiters.find(u);
      if (it == m->idle_waiters.end()) continue;
      for (auto* t : it->second) t->cancel();
    }
  });
}

void ImapServer::wake_follower() {
  asio::post(impl_->io, [m = impl_.get()] { m->follower_timer.cancel(); });
}

}  // namespace mailark::api
