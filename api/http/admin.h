// The HTTP admin listener (loopback by default): continuity status, start and stop for scripts
// (Authorization: Bearer <token from DATA/admin-token>), and the panic button behind the one-time
// links of the alerts. The REST API of the web portal builds on it.
//
//   GET  /health                      no authentication: {"status":"ok","continuity":"normal"}
//   GET  /api/continuity              the status (as `mailark continuity status --json`)
//   POST /api/continuity/start        {"reason": "..."} (optional) -> {"changed": bool, "event": {...}}
//   POST /api/continuity/stop         -> {"changed": bool, "event": {...}}
//   POST /api/continuity/panic-link   -> {"url": "..."}: a fresh one-time link
//   GET  /continuity/panic?token=T    a confirmation page (a link preview or a mail scanner that
//                                     fetches the link starts nothing)
//   POST /continuity/panic            token=T[&reason=...]: starts an event; the token is used up
//
// A bad, expired or reused token is refused (403) and logged; so is a wrong bearer token (401),
// and a client with more than 20 refusals a minute gets 429 (tests/e2e/test_continuity.py).
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <memory>
#include <string>

#include "api/config.h"
#include "api/continuity/monitor.h"
#include "engine/archive.h"

namespace mailark::api {

class AdminServer {
 public:
  AdminServer(asio::io_context& io, asio::thread_pool& blocking, Archive& archive, ContinuityMonitor& monitor,
              const ServeConfig& config, std::string data_dir, asio::ssl::context& server_tls);
  ~AdminServer();
  // Binds the listener and reads (or makes) the token. Errors: kIo, kInvalidArgument.
  Status setup();
  std::uint16_t port() const;
  asio::awaitable<void> run();  // accepts until stop()
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailark::api
