// What the indexer is told about one message: plain values, no archive or MIME types. engine/ fills it
// from the message model and the archive record.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mailark::indexer {

struct IndexedAttachment {
  std::string name;
  std::string mime_type;
  std::uint64_t size = 0;
};

struct IndexedAddress {
  std::string name;  // display name, may be empty
  std::string addr;  // local@domain as written, may be empty
};

// "Name <addr>, ..." for display.
std::string display_addresses(const std::vector<IndexedAddress>& list);

struct IndexFields {
  std::uint64_t id = 0;  // archive sequence number
  std::string message_id;
  std::int64_t date = 0;  // Unix seconds (Date header, else received time)
  std::int64_t received = 0;
  std::uint64_t size = 0;  // raw bytes
  std::vector<IndexedAddress> from, to, cc, bcc;
  std::vector<std::string> envelope_rcpts;
  std::string subject;
  std::string body;
  std::string attachment_text;
  std::vector<IndexedAttachment> attachments;
  std::string direction;  // "import", "inbound", "outbound"
  std::string verdict;    // "clean", "infected", "unscanned"
  std::vector<std::string> signatures;
  bool malformed = false;
  bool quarantined = false;
  std::string extracted_text;  // words of PDF, Office and OpenDocument attachments (engine/extract.h)
  // Whose mail this record is (eDiscovery custodians: as given, or lower-case addresses).
  std::vector<std::string> custodians;
  // What copies of one message share (the SHA-256 of its bytes, 32 raw bytes; empty: never collapsed).
  std::string content_key;
  // An earlier record holds the same bytes (another custodian's copy, another delivery): an
  // archive-wide search of the message's content shows the earliest record only (Kcopy).
  bool copy = false;
  // Keep the texts a phrase check reads (subject, body, attachment and extracted text, attachment
  // names) in the document (schema::kSlotTexts), so that the check needs neither the archive nor a
  // MIME parser. engine/ sets it for a message whose texts a MIME parser must decode
  // (quoted-printable, base64, HTML, attachments): a plain message is read from the archive as cheaply.
  bool keep_texts = false;
};

// What a search result shows, stored in the document data so result lists need no archive reads.
struct Summary {
  std::uint64_t id = 0;
  std::string message_id;
  std::int64_t date = 0;
  std::string from;
  std::string subject;
  std::string verdict;
  std::uint64_t size = 0;
  bool attachment = false;  // set by IndexReader::summaries and search (not stored in the data)
};

}  // namespace mailark::indexer
