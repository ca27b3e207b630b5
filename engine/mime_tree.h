// The MIME structure of a message as byte ranges of its original bytes (RFC 2045/2046), for the
// mailbox views: IMAP's BODY[section] must return parts exactly as stored, and its BODYSTRUCTURE
// must describe the same bytes. GMime parses the header fields that carry structure (Content-Type
// and Content-Disposition with RFC 2231 parameters, in mime_tree.cc); the boundaries are found here,
// on the stored bytes, because GMime re-serialises what it parses and keeps no offsets.
//
// Boundaries are found as Dovecot finds them: one pass, each line that begins with "--" compared
// with the boundaries of every multipart open around it (RFC 2046 5.1.1's note: the boundary begins
// the line, text after it is allowed; the longest match wins, then the innermost). So an unclosed
// inner multipart ends at an outer delimiter, and nested multiparts may share a boundary
// (MimeTree.DelimiterLinesAreMatchedByTheirBeginning, MimeTree.SameBoundaryNested).
//
// Never fails: a missing boundary makes a leaf, an unclosed multipart ends at its parent's end, a
// part without a blank line is all header, and the parts of a multipart past kMaxMimeParts are one
// opaque last part. Bounded (kMaxMimeDepth; kMaxMimeParts, plus one such part a level) and fuzzed
// (fuzz/mime_tree_fuzz.cc); tests: MimeTree.* in tests/imap_core_test.cc.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailark {

inline constexpr unsigned kMaxMimeDepth = 40;
inline constexpr std::size_t kMaxMimeParts = 5000;

using MimeParams = std::vector<std::pair<std::string, std::string>>;

struct MimeNode {
  std::size_t header_begin = 0, header_end = 0;  // the header section, with the blank line ending it
  std::size_t body_begin = 0, body_end = 0;
  std::string type = "text", subtype = "plain";  // lower case
  MimeParams params;                              // Content-Type parameters (values decoded, RFC 2231)
  std::optional<std::string> id, description, md5, language, location;
  std::string encoding = "7bit";  // Content-Transfer-Encoding, lower case
  std::optional<std::string> disposition;  // lower case
  MimeParams disposition_params;
  std::size_t lines = 0;  // body lines (text/* and message/rfc822)
  // multipart: the parts; message/rfc822: one child, the encapsulated message (its header and body).
  std::vector<MimeNode> children;

  bool is_multipart() const { return type == "multipart"; }
  bool is_message() const { return type == "message" && (subtype == "rfc822" || subtype == "global"); }
};

// The top-level message: header_begin = 0, body_end = raw.size().
MimeNode parse_mime_tree(std::string_view raw);

// A message as the mailbox views send it: lines end in CRLF (RFC 5322 2.1, RFC 9051 2.3.4's message
// data), so every LF not after a CR gets one; bare CRs stay. The archive keeps the bytes as they came
// (an mbox, Maildir or PST import has LF line ends); IMAP serves this form, and its RFC822.SIZE is
// this form's size (tests: MimeTree.CrlfLines, test_imap.py
// test_imported_mail_is_served_with_crlf_line_ends).
std::string crlf_lines(std::string raw);
std::size_t crlf_lines_size(std::string_view raw);

// The first header field `name` of a header section (case-insensitive), unfolded (CRLF + WSP -> WSP),
// leading blanks removed. Nothing when absent.
std::optional<std::string> mime_header(std::string_view header_section, std::string_view name);
// The last header field `name`, as mime_header gives the first. A field that may appear once
// (Subject, Date, Message-ID) but is written twice is read as GMime reads it, the last one, so that
// IMAP's ENVELOPE and the web show what the index holds (and what Dovecot's ENVELOPE shows; a field
// put before the signed ones is what DKIM leaves unsigned). Test: ImapFetch.FieldsWrittenTwiceGiveTheLast.
std::optional<std::string> mime_header_last(std::string_view header_section, std::string_view name);
// Every header field `name`, each as mime_header gives it, joined with ", ": an address field written
// twice (two To or Cc fields, against RFC 5322 but seen) lists the addresses of both, as Dovecot's
// ENVELOPE does. A later field that would take the whole past kMaxJoinedHeaderBytes is left out, and
// the ones after it (the first is kept whole, as mime_header gives it). Nothing when absent. Tests: MimeTree.AnAddressFieldWrittenTwiceListsBoth, ImapFetch.EnvelopeOfAddressesWrittenAsEncodedWords.
inline constexpr std::size_t kMaxJoinedHeaderBytes = 256 * 1024;
std::optional<std::string> mime_header_joined(std::string_view header_section, std::string_view name);
// Every header field of a header section in order, as (name as written, value unfolded and trimmed;
// not decoded), at most `max`. Lines that are not fields (no colon, a name with blanks) are left out.
std::vector<std::pair<std::string, std::string>> mime_header_list(std::string_view header_section, std::size_t max = 1000);
// The header fields named (or, with exclude, all others) exactly as they stand, followed by the
// blank line (IMAP's HEADER.FIELDS and HEADER.FIELDS.NOT).
std::string mime_header_fields(std::string_view header_section, const std::vector<std::string>& names, bool exclude);

}  // namespace mailark
