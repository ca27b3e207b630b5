// The delivery agent: delivers queued messages (engine/queue.h) onward, inside `mailark serve`.
//
// Inbound mail goes to the primary server's hosts, tried in order; outbound mail to the smarthost
// (MX lookup arrives with the DNS resolver). Per recipient: a 2xx delivers, a 5xx bounces (a DSN,
// RFC 3464, goes to the envelope sender, never to the null sender), a 4xx or a connection failure
// defers with backoff until the queue lifetime ends, then bounces. Connections are reused for the
// messages to one destination, with a limit of concurrent connections per destination. Held entries
// are left alone. Each result is written back to the queue entry; finished entries are removed (the
// archive keeps the message).
//
// Thread safety: runs on the server's io_context thread; wake() may be called from any thread.
#pragma once

#include <functional>
#include <memory>

#include <asio.hpp>
#include <asio/ssl.hpp>

#include "api/config.h"
#include "engine/archive.h"
#include "engine/ingest.h"

namespace mailark::api {

class DeliveryAgent {
 public:
  // inject: submits a generated message (a DSN) to the pipeline.
  DeliveryAgent(asio::io_context& io, Archive& archive, const ServeConfig& config,
                std::function<void(IngestItem)> inject);
  ~DeliveryAgent();

  asio::awaitable<void> run();  // until stop()
  void wake();                  // new mail was queued, or an administrator asked for a retry
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Builds a delivery status notification (RFC 3464 multipart/report) for recipients that failed.
std::string make_dsn(const std::string& reporting_host, const std::string& original_sender,
                     const std::vector<std::pair<std::string, std::string>>& failed,  // address, diagnostic
                     const std::string& original_headers, std::int64_t arrival);

}  // namespace mailark::api
