// The one settings struct that bounds every parser and decoder in mailark.
//
// Hostile input is the normal case for a mail gateway: every reader of untrusted bytes takes its bounds
// from here, never from a constant of its own, so an administrator can see and change them in one place.
// Defaults suit a company gateway; tests shrink them to exercise the limit paths.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mailark {

struct Limits {
  // No configuration may allow a message larger than this; a stored record claiming more is damaged.
  // Reading a stored message is bounded by the size its record states, never by the limits in force
  // when it is read, so whatever was accepted reads back.
  static constexpr std::size_t kMaxStoredMessageBytes = std::size_t{1} << 30;
  // What a server adds to a message before archiving it (its Received header), at most.
  static constexpr std::size_t kTraceHeaderBytes = 64 * 1024;

  // Whole message, as received or imported. Larger inputs are refused with a per-file reason.
  std::size_t max_message_bytes = 64u << 20;
  // Header block of the top-level message; a larger one is archived but flagged malformed and only its
  // first max_header_bytes are read for indexing.
  std::size_t max_header_bytes = 1u << 20;
  // A single header or body line for the line-oriented readers (mbox splitting, SMTP later).
  std::size_t max_line_bytes = 16u << 20;
  // MIME tree: nesting depth and number of parts visited when extracting text and attachments.
  unsigned max_mime_depth = 64;
  unsigned max_mime_parts = 2000;
  // Text taken from one message for the index (bodies plus text attachments), after decoding.
  std::size_t max_index_text_bytes = 4u << 20;
  // Decoded size of a single part read for text or hashing.
  std::size_t max_part_bytes = 64u << 20;
  // Addresses per address header kept for the index.
  unsigned max_addresses = 1000;
  // Attachments listed per message.
  unsigned max_attachments = 500;

  // SMTP sessions (api/smtp): one command line, one content line, recipients per message, error
  // replies before the session is closed, and the deadlines (a minimum data rate applies after the
  // grace period of DATA).
  std::size_t smtp_command_bytes = 4096;
  std::size_t smtp_line_bytes = 1u << 20;
  unsigned smtp_recipients = 100;
  unsigned smtp_errors = 20;
  // Received header fields a message may carry: past it the message is in a mail loop and is refused
  // (554 5.4.6) rather than archived and passed on again (RFC 5321 6.3: at least 100).
  unsigned smtp_hops = 100;
  unsigned smtp_command_timeout_s = 300;
  unsigned smtp_data_timeout_s = 600;
  std::uint64_t smtp_min_data_rate = 1024;
  unsigned smtp_data_rate_grace_s = 30;
  unsigned smtp_session_timeout_s = 3600;  // a whole session, however busy (421 4.4.2 after it)
  // Memory for mail in flight (api/smtp/server.cc). A session keeps at most about smtp_spill_bytes
  // of the message it is receiving in memory, the rest in a file (api/smtp/spool.h). Messages being
  // archived (read back, scanned, compressed, written) hold at most store_bytes together, one
  // message at a time whatever its size; the next waits up to 5 minutes for room, then gets 451 4.3.2.
  // A server's configuration sets store_bytes to four times the message limit unless it is set.
  std::size_t smtp_spill_bytes = 512u << 10;
  std::size_t store_bytes = 256u << 20;
  // Free space kept on the data folder's file system for what was already taken in (api/disk_reserve.h):
  // mail from outside is refused while writing it would leave less (0: no reserve). A server's
  // configuration sets it to store_bytes plus 64 MiB unless it is set.
  std::uint64_t disk_reserve_bytes = (256ull << 20) + (64ull << 20);
  // Free space the index's writer leaves on the index's file system (0: none; at most a sixteenth of
  // the file system): a commit, compaction
  // or rewrite of a shard that would start with less free is not begun, and the shard catches up from
  // the archive once there is room (indexer/index.h IndexWriter::set_min_free_bytes). Xapian 1.4 can
  // end the whole process when a commit meets a full disk, so the index never fills its disk.
  std::uint64_t index_min_free_bytes = 64ull << 20;

  // Virus scanning (libclamav engine limits). Exceeding any of them makes the verdict `unscannable`.
  // A server's configuration raises the size limits to the message limit unless they are set.
  std::uint64_t scan_max_scan_bytes = 256ull << 20;
  std::uint64_t scan_max_file_bytes = 100ull << 20;
  std::uint32_t scan_max_recursion = 17;
  std::uint32_t scan_max_files = 10000;
  std::uint32_t scan_max_ms = 120000;
  // Memory one scan may take beyond the signature engine, in scan processes (scanner.isolation =
  // "process"; scanner/scan_host.h): a scan process past it is stopped and the message unscannable.
  // Unless set, scan_memory_for(scan_max_scan_bytes) (a server's configuration recomputes it once it
  // knows the scan limit). Scans on the server's threads have no bound of their own.
  static constexpr std::uint64_t scan_memory_for(std::uint64_t scan_bytes) { return (1ull << 30) + 4 * scan_bytes; }
  std::uint64_t scan_max_memory_bytes = scan_memory_for(scan_max_scan_bytes);
};

}  // namespace mailark
