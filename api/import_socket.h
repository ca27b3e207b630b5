// The server's end of an import handed to it (engine/handoff.h): a Unix socket in the data folder,
// DATA/import.sock, mode 0600, where `mailark import` run beside `mailark serve` hands over the
// messages it reads. One import at a time (a second is told to wait for the first); only a client
// running as the server's own user, or root, is heard (the socket's mode, and its peer's
// credentials). Each message goes through the server's pipeline like SMTP mail, with the server's
// loaded signatures and limits, as an import (archived whatever the scan says, never delivered).
//
// What the import may hold of the server: at most kMaxInFlight messages and kMaxInFlightBytes of
// them in the pipeline at once (one larger message alone); the server makes the pipeline's work queue
// that much deeper for it (api/smtp/server.cc). Before each message the server asks its disk
// reserve (limits.disk_reserve_bytes) as the SMTP door does, and stops the import when it is short.
// Tests: tests/e2e/test_import_handoff.py.
//
// Beside it, DATA/index.sock (engine/handoff.h): a reader in another process asks for the index to
// be made current (Ingest::sync_index), under the same access rule; each such reader waits on a
// thread of its own, at most kMaxSyncs at once (more are answered "behind" at once), each at most
// kSyncTimeout.
//
// Threads: one that accepts, two per import (one reads the messages and submits them on the
// io thread, one writes the results), and one per reader waiting for the index; stop() is safe from
// the io thread, join() after the pipeline has finished.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <asio/io_context.hpp>

#include "common/limits.h"
#include "common/result.h"

namespace mailark {
class Ingest;
}

namespace mailark::api {

class DiskReserve;

class ImportSocket {
 public:
  static constexpr std::size_t kMaxInFlight = 256;
  static constexpr std::uint64_t kMaxInFlightBytes = std::uint64_t{64} << 20;
  // How long a reader waits for the index to commit what is archived (a shard compacting may take
  // longer; the reader then reads what is committed). The server's own readers wait as long.
  static constexpr std::chrono::seconds kSyncTimeout{5};

  // limits: the configuration's (the message size the import is told). head: the archive's head.
  // stuck_after: an import that takes none of the server's replies for this long is let go (its
  // socket shut down; what it handed is still archived), so that a live import that stopped
  // reading holds the door for other imports no longer (tests/import_socket_test.cc).
  ImportSocket(asio::io_context& io, Ingest& ingest, DiskReserve& reserve, Limits limits, std::string path,
               std::function<std::uint64_t()> head, std::chrono::milliseconds stuck_after = std::chrono::minutes(5));
  ~ImportSocket();  // stops and joins
  ImportSocket(const ImportSocket&) = delete;
  ImportSocket& operator=(const ImportSocket&) = delete;

  // Binds the socket (a stale one of an earlier server is replaced: the data folder's lock says no
  // other server runs). Errors: kIo naming the path.
  Status open();
  void start();
  void stop();  // no new import; the one running is told the server stops
  void join();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailark::api
