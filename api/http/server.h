// One HTTP/1.1 listener over Asio coroutines, shared by the admin listener (api/http/admin.cc) and the
// web portal (api/web/portal.cc): accept, optional implicit TLS (OpenSSL through asio::ssl), requests
// framed by Boost.Beast (api/http/request.h), keep-alive, and the limits an internet-facing listener
// needs. What a request means is the handler's business.
//
// Limits (tests/e2e/test_web.py `test_limits`):
// - connections: at most max_connections in all and max_per_client per client (an IPv6 client by its
//   /64, api/config.h client_group); one more is answered 503 and closed;
// - time: a TLS handshake and each request must arrive within request_timeout_s of the connection's
//   last answer, or the connection is closed (a slow-loris client holds a socket for that long, no
//   more); a kept-alive connection lives at most max_requests requests;
// - size: a header at most 16 KiB (431), a body at most what body_limit() allows for that request's
//   header (413, before the body is read);
// - memory: bodies over 64 KiB take room among the bodies being received over all connections
//   (body_room_bytes; one always has room); without room the answer is 503 with Retry-After before
//   the body is read, and the connection closes (tests/e2e/test_web.py
//   test_large_bodies_over_many_connections_share_a_bounded_room).
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "api/http/request.h"
#include "common/result.h"

namespace mailark::api::http {

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // A body too large to hold in memory (an export): this file's bytes, sent a chunk at a time, and
  // removed once sent (or the connection lost) when remove_file. body is then not sent.
  std::string file;
  bool remove_file = false;
};

struct Client {
  std::string ip;   // the peer's address as text
  std::string key;  // what per-client limits count by (client_group: IPv6 by its /64)
  bool tls = false;
};

struct ServerOptions {
  std::string name = "http";  // in log lines
  std::string listen;         // "host:port"
  std::uint16_t default_port = 80;
  std::string tls = "none";   // "none" or "implicit"
  unsigned max_connections = 1000;
  unsigned max_per_client = 100;
  unsigned request_timeout_s = 30;
  unsigned max_requests = 1000;  // per connection
  std::size_t max_body_bytes = 64 * 1024;
  // The body limit for one request (its header known), at most max_body_bytes; empty: 64 KiB.
  std::function<std::size_t(const Request& head, const Client& client)> body_limit;
  std::size_t body_room_bytes = 0;  // 0: no bound
};

using Handler = std::function<asio::awaitable<Response>(const Request& request, const Client& client)>;

class Server {
 public:
  Server(asio::io_context& io, asio::ssl::context& tls, ServerOptions options, Handler handler);
  ~Server();
  // Binds the listener. Errors: kInvalidArgument (a bad address), kIo (cannot bind).
  Status setup();
  std::uint16_t port() const;
  asio::awaitable<void> run();  // accepts until stop()
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// A JSON response.
Response json_response(int status, std::string body);

}  // namespace mailark::api::http
