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

}  // namespace mailark::api::imap
