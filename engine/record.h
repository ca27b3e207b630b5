// Archive records: the envelope and verdict of one accepted message, and their on-disk encoding.
//
// Format v1 (docs/FORMAT.md, "records"): value = body || hash, where body is the version byte 0x01 and
// then the fields of ArchiveRecord in declaration order (varints are LEB128, signed ones zigzag, strings
// are varint length + bytes, digests 32 raw bytes), and
//   hash = SHA-256("mailark-record-v1" || prev_hash || seq as 8 bytes big-endian || body)
// Format v2 (archive format 7) is v1 with the version byte 0x02 and two more strings after `source`:
// the custodian and the folder. A record is written as v2 only when it has either, so SMTP records
// stay v1; the chain's hash is the same for both (the version byte is part of the body).
// prev_hash is the previous record's hash (32 zero bytes for seq 1). The chain makes any changed,
// removed or reordered record detectable by `mailark verify`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/sha256.h"
#include "scanner/scanner.h"

namespace mailark {

// kProbe (archive format 3): the continuity monitor's own probe, come back through the outbound
// listener; archived for the record, never delivered, never shown as user mail.
enum class Direction : std::uint8_t { kImport = 0, kInbound = 1, kOutbound = 2, kProbe = 3 };
const char* direction_name(Direction d);  // "import", "inbound", "outbound", "probe"

struct Envelope {
  Direction direction = Direction::kImport;
  std::string mail_from;             // MAIL FROM, or for imports the mbox From_ / Return-Path sender
  std::vector<std::string> rcpt_to;  // every RCPT TO
  std::string client;                // client IP, or "import"
  std::string helo;
  std::string tls;               // "TLSv1.3 TLS_AES_256_GCM_SHA384", or empty
  std::string connector = "import";  // listener name; "import" for imports (the default, as direction)
  std::string source;            // for imports: the file (and "#n" for the n-th message of an mbox)
  // Record v2 (archive format 7): whose mailbox this copy came from (`import --custodian`, or the
  // owner of `import --owner`), and the folder inside it (a PST's folder path). Empty for SMTP.
  std::string custodian;
  std::string folder;
  std::int64_t received_at = 0;  // Unix seconds
};

// A message imported by `mailark import` (direction import, connector "import"): a copy held in a
// custodian's mailbox, recorded once per custodian (archive.h, table `holdings`). IMAP APPENDs and
// every SMTP delivery are events of their own.
inline bool is_mailbox_import(const Envelope& e) { return e.direction == Direction::kImport && e.connector == "import"; }

// A submission with internal and external recipients is archived as two records of the same bytes
// (api/smtp/server.cc submit): the one for the internal recipients has the connector
// "<listener>+internal". It is not the sender's copy: no Sent folder, no continuity Sent copy.
inline bool is_internal_copy(const Envelope& e) {
  constexpr std::string_view kSuffix = "+internal";
  return e.connector.size() > kSuffix.size() &&
         std::string_view(e.connector).substr(e.connector.size() - kSuffix.size()) == kSuffix;
}

struct StoredVerdict {
  scanner::VerdictKind kind = scanner::VerdictKind::kUnscanned;
  std::vector<std::string> signatures;
  std::string reason;
};

// Record flags (bit set).
enum RecordFlag : std::uint32_t {
  kFlagMalformed = 1u << 0,    // GMime could not fully parse the message
  kFlagQuarantined = 1u << 1,  // kept out of user views (infected)
};

struct ArchiveRecord {
  std::uint64_t seq = 0;
  Envelope envelope;
  StoredVerdict verdict;
  std::uint32_t flags = 0;
  Digest content_sha256{};  // of the raw bytes; the key of the blob that holds them
  std::uint64_t raw_size = 0;
  std::int64_t archived_at = 0;
  Digest prev_hash{};
  Digest hash{};  // filled by encode / decode
};

// Encodes the record's body and computes its hash into record.hash. Returns the stored value.
std::string encode_record(ArchiveRecord& record);
// Decodes a stored value (v1 or v2) for key `seq`. Does not check the chain (verify does). Errors:
// kCorrupt, kUnsupported for an unknown version byte.
Result<ArchiveRecord> decode_record(std::uint64_t seq, std::string_view value);
// Whose mail a record is, for eDiscovery: its custodian when it has one (imports), else the people
// it was delivered for: the envelope recipients of inbound mail, the sender of outbound mail (and the
// recipients of an internal copy). Lower-case addresses; the custodian as given. Empty for probes and
// imports without a custodian.
std::vector<std::string> custodians_of(const ArchiveRecord& record);

// A custodian's name as an officer types it (`import --custodian`, a case's custodians): spaces and
// tabs around it trimmed; refused when blank, longer than 200 bytes, or holding a control character
// (it is read back in exports and queries). Tests: test_export.py
// test_custodian_per_folder_loads_many_mailboxes_at_once, Cases.NamesAreUniqueAndFoundByIdNameOrTheirStart.
Result<std::string> check_custodian(std::string name);

// Recomputes the hash of a stored value for `seq` with the given predecessor hash.
Digest record_hash(const Digest& prev_hash, std::uint64_t seq, std::string_view body);

// Blobs (format v1): key = SHA-256 of the raw bytes; value = version 0x01, dictionary id (u32 LE),
// raw size (u64 LE), zstd frame.
struct BlobHeader {
  std::uint32_t dict_id = 0;
  std::uint64_t raw_size = 0;
  std::string_view frame;
};
std::string encode_blob(std::uint32_t dict_id, std::uint64_t raw_size, std::string_view frame);
Result<BlobHeader> decode_blob(std::string_view value);

}  // namespace mailark
