// The IMAP listeners (listener role "imap" in the configuration: implicit TLS or STARTTLS), over
// Asio coroutines on the server's io_context. Each connection runs a CommandReader (framing, limits)
// and an ImapSession (meaning); the session's calls run on the IMAP thread pool because they read
// LMDB, decompress messages and ask Xapian. Long FETCH answers go out a megabyte at a time, so a
// full mailbox pull never sits whole in memory.
//
// IDLE: a connection waits for its client's DONE, for a change to its user's folders (the mailbox
// store's observer, in this process: new mail as the follower places it, flag changes by other
// sessions), or 30 seconds, whichever comes first, and then asks its session what changed. One
// coroutine and a timer per idle connection: nothing else is held.
//
// The follower: every half second (or when woken) the archive's new records are placed in users'
// folders (MailboxStore::follow), so mail that SMTP accepted shows up in IMAP within a second.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <memory>
#include <string>
#include <vector>

#include "api/config.h"
#include "api/imap/session.h"

namespace mailark::api {

class ImapServer {
 public:
  ImapServer(asio::io_context& io, asio::ssl::context& tls, imap::ImapContext& ctx, const ServeConfig& config);
  ~ImapServer();
  // Binds the "imap" listeners of the configuration. Errors: kIo, kInvalidArgument.
  Status setup();
  std::vector<std::uint16_t> ports() const;
  asio::awaitable<void> run();  // accepts (and follows the archive) until stop()
  void stop();
  // Wakes idle sessions of these users (any thread).
  void notify(const std::vector<std::uint32_t>& users);
  // Wakes the follower (any thread).
  void wake_follower();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailark::api
