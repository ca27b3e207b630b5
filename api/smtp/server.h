// `mailark serve`: the SMTP listeners (inbound MX, outbound from the primary) over Asio with C++20
// coroutines and OpenSSL. Each connection runs a protocol Session (protocol.h); each complete message
// goes through the engine's ingest pipeline, and the 250 is sent only when its archive record and
// queue entry are committed (group commit across sessions).
//
// One log line per message event, Postfix style: "<txn id>: received from=<...> to=<...> ...".
// SIGTERM/SIGINT: stop accepting, answer sessions in flight (a message being stored is finished first),
// flush, return. SIGHUP: reload the configuration's policies and the virus signatures without dropping
// connections.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "api/config.h"
#include "common/result.h"
#include "engine/engine.h"

namespace mailark::api {

class SmtpServer {
 public:
  // engine must outlive the server. config_path is re-read on SIGHUP (empty: defaults only).
  static Result<std::unique_ptr<SmtpServer>> create(Engine& engine, ServeConfig config, std::string config_path);
  ~SmtpServer();

  // The port each listener is bound to, in configuration order (useful with port 0 in tests).
  std::vector<std::uint16_t> ports() const;
  // Serves until a stop signal (or stop()); returns after a clean shutdown.
  Status run();
  // Asks run() to shut down as on SIGTERM. Thread safe.
  void stop();

 private:
  SmtpServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailark::api
