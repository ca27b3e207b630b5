// The delivery agent: delivers queued messages (engine/queue.h) onward, inside `mailark serve`.
//
// Inbound mail goes to the primary server's hosts, tried in order; outbound mail to the smarthost or
// to the recipient domains' mail exchangers. Per recipient: a 2xx delivers; a 4xx or a connection
// failure defers with backoff. A 5xx, or the end of the queue lifetime:
// - outbound: the recipient fails, and a DSN (RFC 3464) goes to the (internal) sender, never to the
//   null sender. The DSN is archived and queued in the same transaction that marks the recipient
//   bounced, so it is sent exactly once, even across a crash (tests: Archive.DsnIsArchivedOnce,
//   tests/e2e/test_delivery.py test_outbound_permanent_refusal_bounces_with_one_dsn_to_the_sender).
// - inbound: no DSN ever goes to an outside sender (no backscatter). The recipient is kept in the
//   queue for the administrator (`mailark queue` shows it; retry or delete; tests/e2e/test_delivery.py
//   test_inbound_refusal_by_the_primary_after_250_is_kept_for_the_administrator).
// Connections are reused for the messages to one destination, with a limit of concurrent connections
// per destination. Held entries are left alone. The agent reads only what is due, from the queue's due
// index (engine/queue.h), a bounded number of entries per scan, in arrival order.
//
// Continuity (engine/continuity.h): while an event is active nothing is offered to the primary; while
// its mail drains, at most continuity.drain_rate messages per second go to the primary, in arrival
// order, and a recipient whose copy of the message (same Message-ID) the primary already accepted is
// not sent again (the delivered log; tests/e2e/test_continuity.py).
//
// Duplicates after a crash: results are committed in groups; a connection waits before its next
// message while 32 results are uncommitted. A crash (SIGKILL, power) therefore repeats at most the
// results of the commit in progress and those waiting (each at most 32 plus one per connection) and
// the message in transfer on each connection: at most 2 x 32 + 3 x connections per destination
// (76 with the default 4), whatever the backlog (tests/e2e/test_continuity.py
// test_sigkill_in_the_middle_of_the_drain_loses_nothing). Results are written as deltas (Archive::queue_apply)
// in group commits on a pool thread, never on the event loop, so an administrator's hold made
// meanwhile stands.
//
// Thread safety: runs on the server's io_context thread; wake() may be called from any thread.
#pragma once

#include <functional>
#include <memory>

#include <asio.hpp>
#include <asio/ssl.hpp>

#include "api/config.h"
#include "engine/archive.h"
#include "engine/continuity.h"
#include "engine/ingest.h"

namespace mailark::api {

// How one delivery attempt to the primary went, for the continuity monitor's organic check.
enum class PrimaryAttempt { kDelivered, kRefused, kDeferred, kUnreachable };

struct DeliveryHooks {
  // Each attempt to deliver a message to the primary, with its time. Called on the io thread.
  std::function<void(PrimaryAttempt, std::chrono::milliseconds)> on_primary_attempt;
  // The continuity state changed here (a drain ended). Called on the io thread.
  std::function<void()> on_continuity_change;
};

class DeliveryAgent {
 public:
  // inject: offers a generated message (a DSN) to the pipeline; false when it is full (the DSN is
  // made again on a later scan). blocking: the pool that runs archive reads and writes.
  DeliveryAgent(asio::io_context& io, asio::thread_pool& blocking, Archive& archive, const ServeConfig& config,
                std::function<bool(IngestItem&)> inject, DeliveryHooks hooks = {});
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
