#include "api/http/server.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <map>
#include <set>

#include "api/escaped.h"
#include "api/accept.h"
#include "api/room.h"
#include "api/config.h"
#include "api/write.h"
#include "common/ascii.h"

namespace mailark::api::http {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

Response json_response(int status, std::string body) {
  Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  if (r.body.empty() || r.body.back() != '\n') r.body.push_back('\n');
  return r;
}

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  asio::io_context& io;
  asio::ssl::context& tls_ctx;
  ServerOptions options;
  Handler handler;
  std::unique_ptr<tcp::acceptor> acceptor;
  bool stopping = false;
  std::set<tcp::socket*> sockets;
  std::map<std::string, unsigned> per_client;
  Room receiving{options.body_room_bytes};  // the large bodies being received

  Impl(asio::io_context& i, asio::ssl::context& t, ServerOptions o, Handler h)
      : io(i), tls_ctx(t), options(std::move(o)), handler(std::move(h)) {}

  // Reads until one request is complete (or an error, a timeout, the peer's close).
  template <typename Stream>
  awaitable<void> converse(Stream& stream, const Client& client) {
    RequestReader reader(16 * 1024, options.max_body_bytes);
    reader.set_body_limit([this, &client](const Request& head) -> std::size_t {
      return options.body_limit ? options.body_limit(head, client) : std::size_t(64 * 1024);
    });
    std::vector<char> buf(16384);
    // A client that reads nothing of an answer for as long as a request may take ends (api/write.h).
    const auto stall = std::chrono::seconds(options.request_timeout_s);
    unsigned served = 0;
    bool pending = false;  // bytes of the next request may already be in the reader
    Room::Hold room(receiving);  // this request's body, given back once it is answered
    while (!stopping && served < options.max_requests) {
      room.release();
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.request_timeout_s);
      RequestReader::State state = pending ? reader.feed({}) : RequestReader::State::kNeedMore;
      bool continued = false;
      bool roomed = false;
      while (state == RequestReader::State::kNeedMore) {
        if (!roomed && reader.head_complete() && options.body_room_bytes > 0) {
          roomed = true;
          const Request& head = reader.request();
          const std::size_t want = reader.body_bound();
          if (want > 64 * 1024 && !room.take(want)) {
            spdlog::info("{}: [{}] {} {} of {} bytes refused for now: {} bytes of requests are being received",
                         options.name, client.ip, head.method, head.path, want, receiving.used());
            std::string busy = response(503, "application/json",
                                        "{\"error\":\"the server is receiving too much at once; try again shortly\"}",
                                        {{"Retry-After", "5"}}, false);
            (void)co_await write_within(stream, asio::buffer(busy), stall);
            co_return;
          }
        }
        // A client that asks before sending its body (curl does above 1 KiB) hears that it may:
        // the header passed, and so did its Content-Length (RFC 9110 10.1.1).
        if (!continued && reader.head_complete() &&
            ascii_lower(reader.request().header("expect")) == "100-continue") {
          continued = true;
          static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
          if (co_await write_within(stream, asio::buffer(kContinue, sizeof kContinue - 1), stall)) co_return;
        }
        asio::steady_timer timer(io);
        timer.expires_at(deadline);
        auto r = co_await (stream.async_read_some(asio::buffer(buf), as_tuple(use_awaitable)) ||
                           timer.async_wait(as_tuple(use_awaitable)));
        if (r.index() == 1) co_return;  // too slow (or idle too long): closed without an answer
        auto [ec, n] = std::get<0>(r);
        if (ec || stopping) co_return;
        state = reader.feed(std::string_view(buf.data(), n));
      }
      std::string out;
      bool keep = false;
      if (state == RequestReader::State::kError) {
        spdlog::info("{}: [{}] bad request: {}", options.name, client.ip, reader.error_text());
        out = response(reader.error_status(), "text/plain", reader.error_text() + "\n");
      } else {
        const Request& req = reader.request();
        Response res;
        try {
          res = co_await handler(req, client);
        } catch (...) {  // of any type (api/escaped.h): Xapian's errors are not std::exceptions
          spdlog::error("{}: [{}] {} {}: {}", options.name, client.ip, req.method, req.path,
                        describe_escaped(std::current_exception()));
          res = json_response(500, "{\"error\":\"internal error\"}");
        }
        ++served;
        keep = req.keep_alive && served < options.max_requests && !stopping;
        spdlog::debug("{}: [{}] {} {} -> {}", options.name, client.ip, req.method, req.path, res.status);
        if (!res.file.empty()) {
          // A body from a file (an export), a chunk at a time after its head; the file is removed
          // once sent, or when the client goes away.
          struct Remove {
            std::string path;
            ~Remove() {
              if (!path.empty()) std::remove(path.c_str());
            }
          } remove{res.remove_file ? res.file : std::string()};
          std::ifstream in(res.file, std::ios::binary);
          std::error_code fec;
          const auto size = std::filesystem::file_size(res.file, fec);
          if (!in || fec) {
            out = response(500, "application/json", "{\"error\":\"the response's file is gone\"}", {}, keep);
          } else {
            out = response_head(res.status, res.content_type, size, res.headers, keep);
            if (co_await write_within(stream, asio::buffer(out), stall)) co_return;
            std::vector<char> chunk(256 * 1024);
            std::uint64_t left = size;
            while (left > 0) {
              in.read(chunk.data(), static_cast<std::streamsize>(std::min<std::uint64_t>(chunk.size(), left)));
              const auto got = static_cast<std::size_t>(in.gcount());
              if (got == 0) co_return;  // shorter than it said: the connection cannot be framed on
              if (co_await write_within(stream, asio::buffer(chunk.data(), got), stall)) co_return;
              left -= got;
            }
            if (!keep) co_return;
            reader.reset();
            pending = true;
            continue;
          }
        } else {
          out = response(res.status, res.content_type, res.body, res.headers, keep);
        }
      }
      if (co_await write_within(stream, asio::buffer(out), stall) || !keep) co_return;  // an error, or the end
      reader.reset();
      pending = true;
    }
  }

  awaitable<void> serve(tcp::socket sock) {
    auto self = shared_from_this();
    asio::error_code ec;
    auto remote = sock.remote_endpoint(ec);
    Client client;
    client.ip = ec ? "unknown" : remote.address().to_string();
    client.key = client_group(client.ip);
    client.tls = options.tls == "implicit";
    if (sockets.size() >= options.max_connections || per_client[client.key] >= options.max_per_client) {
      spdlog::warn("{}: [{}] refused: too many connections", options.name, client.ip);
      if (!client.tls) {
        std::string out = response(503, "text/plain", "too many connections; try again later\n", {{"Retry-After", "10"}});
        co_await asio::async_write(sock, asio::buffer(out), as_tuple(use_awaitable));
      }
      if (per_client[client.key] == 0) per_client.erase(client.key);
      sock.shutdown(tcp::socket::shutdown_both, ec);
      co_return;
    }
    sockets.insert(&sock);
    per_client[client.key]++;
    struct Release {
      Impl* self;
      tcp::socket* s;
      std::string key;
      ~Release() {
        self->sockets.erase(s);
        if (--self->per_client[key] == 0) self->per_client.erase(key);
      }
    } release{this, &sock, client.key};
    sock.set_option(tcp::no_delay(true), ec);
    if (client.tls) {
      asio::ssl::stream<tcp::socket&> tls(sock, tls_ctx);
      asio::steady_timer timer(io);
      timer.expires_after(std::chrono::seconds(options.request_timeout_s));
      auto r = co_await (tls.async_handshake(asio::ssl::stream_base::server, as_tuple(use_awaitable)) ||
                         timer.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1 || std::get<0>(std::get<0>(r))) co_return;
      co_await converse(tls, client);
      timer.expires_after(std::chrono::seconds(5));
      co_await (tls.async_shutdown(as_tuple(use_awaitable)) || timer.async_wait(as_tuple(use_awaitable)));
    } else {
      co_await converse(sock, client);
    }
    sock.shutdown(tcp::socket::shutdown_both, ec);
  }
};

Server::Server(asio::io_context& io, asio::ssl::context& tls, ServerOptions options, Handler handler)
    : impl_(std::make_shared<Impl>(io, tls, std::move(options), std::move(handler))) {}

Server::~Server() = default;

Status Server::setup() {
  Impl& m = *impl_;
  auto hp = parse_host_port(m.options.listen, m.options.default_port);
  if (!hp) return hp.error();
  asio::error_code ec;
  auto addr = asio::ip::make_address(hp->host == "localhost" ? "127.0.0.1" : hp->host, ec);
  if (ec) return make_error(ErrorCode::kInvalidArgument, m.options.name + ".listen: bad address " + hp->host);
  tcp::endpoint ep(addr, hp->port);
  m.acceptor = std::make_unique<tcp::acceptor>(m.io);
  m.acceptor->open(ep.protocol(), ec);
  if (!ec) m.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) m.acceptor->bind(ep, ec);
  if (!ec) m.acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return make_error(ErrorCode::kIo, m.options.name + " listener on " + m.options.listen + ": " + ec.message());
  return ok_status();
}

std::uint16_t Server::port() const {
  asio::error_code ec;
  return impl_->acceptor->local_endpoint(ec).port();
}

awaitable<void> Server::run() {
  auto m = impl_;
  AcceptBackoff backoff(m->options.name);  // api/accept.h: out of file descriptors, wait; never spin
  while (!m->stopping) {
    auto [ec, sock] = co_await m->acceptor->async_accept(as_tuple(use_awaitable));
    if (ec) {
      if (m->stopping || ec == asio::error::operation_aborted) co_return;
      co_await backoff.failed(ec);
      continue;
    }
    backoff.accepted();
    asio::co_spawn(m->io, m->serve(std::move(sock)), asio::detached);
  }
}

void Server::stop() {
  impl_->stopping = true;
  asio::error_code ec;
  if (impl_->acceptor) impl_->acceptor->close(ec);
  for (auto* s : impl_->sockets) s->cancel(ec);
}

}  // namespace mailark::api::http
