// An import handed to a running server. `mailark serve` holds the data folder (one writer, issue 6),
// so `mailark import` beside it cannot open the archive; instead it reads the mailboxes itself and
// hands each message to the server over a Unix socket in the data folder (DATA/import.sock, mode
// 0600, only the server's own user or root: api/import_socket.h), and the server takes it through
// its pipeline with the signatures it has loaded. The archive gets what a stopped server's import
// would have written (direction import, connector "import", the same custodian, folder and
// provenance), in the order the pipeline finishes them rather than the order of the files.
//
// The conversation, in frames (common/frames.h):
//   import -> serve   'm' origin, bytes, received at (decimal, may be negative), folder, envelope
//                         sender, custodian, owner (an address or empty)
//                     'x' no more messages
//   serve -> import   'h' first: the protocol's version (1) and the server's message size limit,
//                         which the import then reads its mailboxes by
//                     'r' one message's result: origin, outcome, verdict, archive id, reason, scan
//                         reason, flags ("m" malformed, "s" the archive's commit failed)
//                     's' the server stops taking this import, and why (a disk short of its
//                         reserve, a frame it cannot read, the server stopping); results of what
//                         it took before still follow
//                     'x' every result is sent; the archive's head
// The server reads nothing it has not bounded: a message at most one byte over the server's message
// size limit (the pipeline refuses that one with the SMTP door's reason; a larger frame ends the
// conversation, said why), every other field at most 4 KiB. The import reads its mailboxes by the
// limit the server's hello gives, so it sends no larger message.
// Fuzzed: fuzz/handoff_fuzz.cc. Tests: tests/e2e/test_import_handoff.py.
#pragma once

#include <sys/un.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "common/limits.h"
#include "common/result.h"
#include "engine/ingest.h"

namespace mailark {

inline constexpr const char* kHandoffSocketName = "import.sock";

// Beside it, DATA/index.sock: a reader in another process (`mailark search`, `stats`, `verify`,
// `export`) asks the running server to make what it has archived searchable before it opens the
// index (Ingest::sync_index; a server otherwise commits its index every
// archive.index_commit_interval_ms). The client connects and sends nothing; the server answers one
// line, "current" or "behind: why", and closes. Same access rule as import.sock
// (tests/e2e/test_import_handoff.py test_the_index_socket_answers_only_the_servers_user).
inline constexpr const char* kIndexSyncSocketName = "index.sock";

// Asks the server running on `data_dir`, if one answers there, to make its index current. False when
// none answers (no server runs, or one of an earlier release without the socket), or it says the
// index is behind (`why` then says why); the caller reads what is committed either way.
// Test: tests/e2e/test_serve.py test_a_search_beside_the_server_finds_mail_the_moment_it_is_accepted.
bool ask_server_to_sync_index(const std::string& data_dir, std::string* why = nullptr);

struct HandoffMessage {
  std::string origin;
  std::string raw;
  std::int64_t received_at = 0;
  std::string folder;
  std::string mail_from;
  std::string custodian;
  std::string owner;
};

std::string encode_handoff_message(const HandoffMessage& m);
std::string encode_handoff_done();  // 'x' from import
std::string encode_handoff_hello(std::uint64_t max_message_bytes);
std::string encode_handoff_result(const IngestResult& r);
std::string encode_handoff_stop(std::string_view why);
std::string encode_handoff_end(std::uint64_t head);

// The server's side. kMessage: `out` holds the next message, checked (custodian and owner as
// `import --custodian/--owner` check them, a folder of at most 1,000 bytes); kDone: the import said
// it has no more; kBad: `why` says what was wrong (the conversation ends there).
enum class HandoffRequest { kMessage, kDone, kBad };
HandoffRequest read_handoff_request(std::FILE* in, const Limits& limits, HandoffMessage& out, std::string& why);

// The pipeline item for a handed message: what `mailark import` submits for it when it runs alone.
IngestItem handoff_item(HandoffMessage&& m);

// The socket's address for `path`; false when the path is longer than a Unix socket's may be.
bool handoff_address(const std::string& path, sockaddr_un& out);

// The import socket of a server running on `data_dir`, connected; -1 when none answers (no server
// runs, or one from before servers took imports: the data folder's lock then says who holds it).
int connect_handoff(const std::string& data_dir);

// The import's side.
struct HandoffReply {
  enum Kind { kHello, kResult, kStop, kEnd } kind = kEnd;
  std::uint64_t max_message_bytes = 0;  // kHello
  IngestResult result;   // kResult
  std::string why;       // kStop
  std::uint64_t head = 0;  // kEnd
};
// False at the end of the stream or on what is not a reply (`why` says which).
bool read_handoff_reply(std::FILE* in, HandoffReply& out, std::string& why);

}  // namespace mailark
