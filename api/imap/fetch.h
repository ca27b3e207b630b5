// What IMAP FETCH sends about one message, I/O-free: ENVELOPE, BODY and BODYSTRUCTURE (RFC 9051
// 7.5.2) from the message's MIME tree (engine/mime_tree.h), and the bytes of BODY[section]<partial>
// cut from the stored bytes exactly. Tests: ImapFetch.* in tests/imap_core_test.cc; fuzzed with the
// MIME tree (fuzz/mime_tree_fuzz.cc).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "api/imap/command.h"
#include "engine/mime_tree.h"

namespace mailark::api::imap {

// ENVELOPE of the message whose header section this node holds.
std::string envelope(std::string_view raw, const MimeNode& message);
// BODYSTRUCTURE (extensible = true) or BODY.
std::string body_structure(std::string_view raw, const MimeNode& node, bool extensible);
// The bytes of a section, before any partial range. Nothing when the section names a part the
// message does not have (IMAP then answers an empty string).
std::optional<std::string> section_bytes(std::string_view raw, const MimeNode& top, const Section& section);
// BINARY[part] (RFC 3516, RFC 9051 6.4.5): the part's content with its Content-Transfer-Encoding
// undone (base64, quoted-printable, uuencode), as it stands for 7bit, 8bit, binary and for
// multiparts and attached messages; the whole message for no part. Nothing when the message has no
// such part, and then *unknown_cte is set when the part has an encoding no one can undo (the FETCH
// fails with NO [UNKNOWN-CTE]). Tests: ImapFetch.BinarySections, test_imap.py
// test_binary_fetch_gives_decoded_parts.
std::optional<std::string> binary_section(std::string_view raw, const MimeNode& top, const Section& section,
                                          bool* unknown_cte);

}  // namespace mailark::api::imap
