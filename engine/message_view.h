// One archived message as a reader sees it (the web portal's message view): its header fields, the
// body to show (the text part, and the HTML part sanitised), and its attachments, each with the
// IMAP section number that fetches it (engine/mime_tree.h byte ranges, decoded by GMime).
//
// Body choice, as mail clients do: depth first, not entering attached messages, the first text/plain
// and the first text/html leaf that are not attachments are the body; every other leaf (and every
// attached message, whole) is an attachment. Inline images named by the HTML (cid:) are embedded
// as data: URLs (up to 10 MiB in all), because the sanitised HTML is shown in a sandboxed frame
// that has no access to the portal's session. Tests: MessageView.* (tests/web_test.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/message.h"

namespace mailark {

struct ViewPart {
  std::string section;       // IMAP part number: "2", "1.3"
  std::string content_type;  // lower case type/subtype
  std::string filename;      // decoded, may be empty
  std::string content_id;    // without angle brackets
  std::uint64_t size = 0;    // encoded bytes as stored (decoded size is about 3/4 of it for base64)
  bool inline_image = false;  // referenced by the HTML body (cid:)
};

struct MessageView {
  std::string subject, message_id, in_reply_to;
  std::vector<std::string> references;
  std::optional<std::int64_t> date;
  std::vector<Address> from, to, cc, bcc, reply_to;
  // Every header field in order (at most 500), values RFC 2047-decoded: Received lines, authentication
  // results, list headers, for whoever needs to see where a message came from.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string text;          // the text body in UTF-8 (the HTML reduced to text when there is no text part)
  bool has_html = false;
  unsigned remote_images = 0;  // remote images the sanitised HTML leaves out (view_html shows them on request)
  std::vector<ViewPart> attachments;
};

MessageView view_message(std::string_view raw, std::size_t max_text_bytes = 4u << 20);

// The header fields and the attachments alone, as view_message gives them (no body, no header list,
// no part decoded): an export's load file (engine/export.cc), at a fraction of a full parse's cost.
MessageView view_message_fields(std::string_view raw);

// The HTML body sanitised (engine/html_sanitize.h), or the text body as HTML when there is no HTML
// part. remote_blocked counts remote images left out.
std::string view_html(std::string_view raw, bool allow_remote_images, unsigned* remote_blocked);

struct PartContent {
  std::string content_type;
  std::string filename;
  std::string bytes;  // decoded
};
// The part with this IMAP section number, decoded; nothing when there is no such leaf part. An
// attached message (message/rfc822) comes back whole, as stored.
std::optional<PartContent> part_content(std::string_view raw, std::string_view section, std::size_t max_bytes);

}  // namespace mailark
