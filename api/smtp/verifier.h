// Recipient verification against the primary server (inbound.verify_recipients = "primary"), as
// Postfix's reject_unverified_recipient: an RCPT probe (MAIL FROM:<>, RCPT TO, RSET) tells whether the
// primary would take mail for an address, so mailark refuses unknown recipients at RCPT time and never
// has to bounce (no backscatter). Probes share connections to the primary, each kept a few seconds for
// the next. Answers are cached in memory and in the archive (table rcpt_cache): accepted ones for
// inbound.verify_positive_ttl, refused ones for inbound.verify_negative_ttl. When the primary cannot be
// asked (down, 4xx), an address it accepted before, however long ago, is accepted, so known users keep
// receiving mail through an outage; others are deferred (451 4.4.3) or accepted per
// inbound.verify_unreachable. Probes for one address are shared, and at most kMaxProbes run at once.
// Tests: tests/e2e/test_postfix.py test_unknown_recipients_are_refused_at_rcpt_time_by_asking_postfix
// (refused, cached, durable, accepted through an outage), test_recipient_probes_share_connections_to_the_primary.
//
// Thread safety: used on the server's io_context thread only.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "api/config.h"
#include "api/smtp/protocol.h"
#include "engine/archive.h"

namespace mailark::api {

class RecipientVerifier {
 public:
  static constexpr unsigned kMaxProbes = 8;

  RecipientVerifier(asio::io_context& io, asio::thread_pool& blocking, Archive& archive, const ServeConfig& config);
  ~RecipientVerifier();

  enum class Known { kUnknown, kAccepted, kRefused };
  // A fresh cached answer, if there is one (refusal: the reply to send).
  Known lookup(const std::string& address, smtp::Reply* refusal) const;
  // The answer when the primary cannot be asked (it is down or answers 4xx, or a continuity event
  // holds its mail): an address it accepted at any time is accepted (nothing), a fresh refusal
  // stands, others are accepted or deferred (451 4.4.3) as inbound.verify_unreachable says. Asks
  // nobody.
  std::optional<smtp::Reply> answer_without_primary(const std::string& address) const;
  // Probes the primary (or waits for a probe already running). Nothing: accept; else the reply.
  asio::awaitable<std::optional<smtp::Reply>> verify(const std::string& address);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailark::api
