// The message model: what mailark reads out of one RFC 5322 message, via GMime 3 (the one translation
// point to GMime is message.cc; engine/mime_tree.cc finds part boundaries on the bytes and asks
// message.cc for the header fields that need GMime).
//
// parse_message never rejects a message that looks like mail: whatever GMime cannot fully parse is
// flagged `malformed` with the problems found, and everything that could be read is returned. It refuses
// (kBadInput) only input that is not mail at all: empty, or not starting with a header field.
// All strings are valid UTF-8 (RFC 2047/2231 decoded, charsets converted, invalid bytes replaced).
// Thread safety: reentrant; GMime is initialised once per process on first use.
// Linking: message_common.cc holds what needs no GMime; message.cc the rest. The `mailark` CLI links
// engine/message_loader.cc instead of message.cc, which loads message.cc (built as the module
// mailark-mime.so beside the binary, engine/mime_api.h) on the first call that needs GMime: commands
// that parse no mail start without GMime, GLib, GIO and gpgme (tests/e2e/test_cli.py
// test_commands_that_parse_no_mail_do_not_load_gmime).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.h"
#include "common/result.h"
#include "common/sha256.h"

namespace mailark {

struct Address {
  std::string name;  // display name, may be empty
  std::string addr;  // addr-spec as written (local@domain), may be empty for a bare group
  // parse_address_list(..., keep_groups): the start of a group (name = the group's name, no
  // address) and its end; the group's members stand between them.
  enum class Group : std::uint8_t { kNone, kStart, kEnd } group = Group::kNone;
  std::string to_string() const;
};

// One node of the MIME tree, in document order.
struct MimePart {
  unsigned depth = 0;             // 0 for the top-level message's body
  std::string content_type;       // lower-case type/subtype
  std::string filename;           // decoded (RFC 2231/2047), empty if none
  std::string disposition;        // "attachment", "inline" or empty
  std::string transfer_encoding;  // lower-case Content-Transfer-Encoding, empty if none
  std::uint64_t size = 0;         // decoded bytes (for leaves); 0 for containers
  bool is_attachment = false;     // listed as an attachment (has a file name, or disposition attachment,
                                  // or a non-text leaf, or a message/rfc822)
  Digest sha256{};                // of the decoded content, for attachments
};

struct ParsedMessage {
  bool malformed = false;
  std::vector<std::string> problems;  // why it is malformed, or parser warnings worth showing

  std::string message_id;  // without angle brackets
  std::string subject;
  std::optional<std::int64_t> date;  // Unix seconds from the Date header, if it parsed
  std::vector<Address> from, to, cc, bcc, reply_to;
  std::string in_reply_to;
  std::vector<std::string> references;

  std::string body_text;        // text/plain parts, and text/html reduced to text, of the main message
  std::string attachment_text;  // text of text attachments and of forwarded messages
  std::string extracted_text;   // words of PDF, Office and OpenDocument attachments (extract_documents)
  std::vector<MimePart> parts;  // the whole tree
  bool has_attachment() const;
  // True when the message is one text/plain part with no transfer encoding: every byte a MIME decoder
  // would extract already stands verbatim in the raw message (used to scan without mail parsing).
  bool is_plain_single_part() const;
};

// Parses raw message bytes. Errors: kBadInput for input that is not an email message.
// headers_only: only the top-level header block is parsed (identifiers, subject, date, addresses;
// no body text or parts), for phrase checks on header fields: GMime never sees the body
// (tests/corpus_test.cc CorpusTest.HeaderOnlyParseGivesTheSameHeaderFields).
// extract_documents: PDF, Office and OpenDocument attachments give their words (extracted_text),
// through the text extractor (engine/extract.h; none set: no text); for indexing only.
Result<ParsedMessage> parse_message(std::string_view raw, const Limits& limits, bool headers_only = false,
                                    bool extract_documents = false);

// The subject and body text of a message simple enough to need no MIME parser, or nothing: every byte
// printable ASCII, tab or CRLF/LF line ends (no NUL, no bare CR, no escape), no RFC 2047 encoded word
// in the header section, one text/plain part (no Content-Type, or text/plain with only charset,
// format, delsp or reply-type parameters and an ASCII-compatible charset; no Content-Disposition; no
// transfer encoding but 7bit, 8bit or binary), each of Subject, Content-Type and
// Content-Transfer-Encoding at most once. Where it gives them, subject and body_text are what
// parse_message gives (tests/corpus_test.cc CorpusTest.PlainTextMessagesReadWithoutGMimeGiveTheSameText,
// every corpus message; fuzz/message_fuzz.cc traps on any input where they differ); the other fields
// stay empty. For phrase checks (ArchiveFieldSource::load_text):
// most Enron messages (docs/BENCHMARKS.md), so a phrase search over such mail never loads GMime.
std::optional<ParsedMessage> parse_plain_text(std::string_view raw, const Limits& limits);

// Tests only: text parts read as GMime's g_mime_text_part_get_text reads them (their content decoded a
// second time) instead of from the content decoded once; both give the same text
// (CorpusTest.TextPartsDecodedOnceGiveTheSameText compares them over the whole corpus).
void set_text_by_second_decode_for_test(bool on);

// parse_message for the pipeline: a message that does not parse at all (not mail) still yields a
// model, flagged malformed with the reason, so whatever archived it can still index it.
ParsedMessage parse_message_or_flag(std::string_view raw, const Limits& limits, bool headers_only = false,
                                    bool extract_documents = false);

// Cheap check used before archiving: empty input, or a first line that is not a header field (nor an
// mbox "From " line) means the input is not mail. Returns the reason, or empty when it looks like mail.
std::string not_mail_reason(std::string_view raw);
// True when `line` begins with a header field name (1 to 200 printable ASCII characters, no space)
// and a colon.
bool is_header_field_line(std::string_view line);

std::string join_addresses(const std::vector<Address>& list);

// The content of one leaf part (its header section and body as they stand in the message, e.g. the
// byte ranges of engine/mime_tree.h), decoded by GMime: the transfer encoding undone and, with
// as_text, the charset converted to UTF-8 (invalid bytes replaced). At most max_bytes (truncated
// tells). The web portal's message view and attachment downloads.
std::string decode_part(std::string_view part, bool as_text, std::size_t max_bytes, bool* truncated = nullptr);

// A new message, written by GMime (the web portal's compose): multipart/alternative when there is
// HTML beside the text, multipart/mixed with the attachments (base64) and a forwarded message
// (message/rfc822, whole). Header fields RFC 2047-encoded where needed; Bcc is never written.
struct ComposeAttachment {
  std::string filename;
  std::string content_type;  // "application/octet-stream" when empty or not type/subtype
  std::string data;
};
struct Draft {
  Address from;
  std::vector<Address> to, cc;
  std::string subject;
  std::string text;  // the body, UTF-8
  std::string html;  // optional
  std::string in_reply_to;               // "<id>", optional
  std::vector<std::string> references;  // "<id>" each
  std::vector<ComposeAttachment> attachments;
  std::string forward_raw;  // a message attached whole, optional
  std::string hostname = "localhost";  // the Message-ID's right side
};
std::string compose_message(const Draft& draft);

// A message rebuilt from a mail store that keeps properties instead of RFC 5322 bytes (Outlook's PST
// files, engine/pst.h), written by GMime with CRLF line ends. The header section is the original
// internet one when the store kept it (transport_headers; the fields that describe the body, MIME-Version
// and Content-Type, -Transfer-Encoding, -Disposition, -ID, -MD5, -Description, -Location, -Base, dropped,
// as the body is rebuilt), with the fields below added only where it lacks them; without
// it, the fields below. The body as compose_message writes it (text, html beside it), then the
// attachments (base64, filename, content id: an inline image keeps its cid), then embedded messages
// (message/rfc822, rebuilt the same way). The same input gives the same bytes (each multipart's
// boundary is a hash of what the message holds), so importing a store twice finds its duplicates.
// Tests: Pst.* in tests/pst_test.cc.
struct ConvertedAttachment {
  std::string filename;
  std::string content_type;  // "application/octet-stream" when empty or not type/subtype
  std::string content_id;    // without angle brackets
  std::string data;
};
struct ConvertedMessage {
  std::string transport_headers;
  Address from;
  std::vector<Address> to, cc, bcc;               // bcc: a sent item's own copy names them
  std::string subject, message_id, in_reply_to;  // ids with or without angle brackets
  std::int64_t date = 0;                          // Unix seconds; 0: none known
  std::vector<std::pair<std::string, std::string>> extra_headers;  // written as given (ASCII names)
  std::string text, html;                                          // UTF-8
  std::vector<ConvertedAttachment> attachments;
  std::vector<ConvertedMessage> embedded;
};
std::string write_converted_message(const ConvertedMessage& m);

// The message for a server that does not offer 8BITMIME (RFC 6152 3: a message with 8-bit data
// is converted to 7-bit MIME or not sent; Postfix converts, as here): every leaf part whose body holds
// bytes past 127 (or is declared binary) and is not already quoted-printable or base64 gets the
// encoding GMime finds best under the 7-bit constraint (quoted-printable when little of it is 8-bit,
// base64 else), its Content-Transfer-Encoding field set to match; 8-bit text that names no charset is
// named (utf-8, or unknown-8bit when it is not UTF-8); a MIME-Version field is added when there was
// none. Header fields stay as they are (as Postfix leaves 8-bit headers), and so do parts that held
// only ASCII and signed or encrypted multiparts (a conversion would break the signature). Nothing
// when the body has no 8-bit byte (send it as it is), or when GMime cannot read it as a message. CRLF
// line ends. Tests: MessageSevenBit.* (signed parts: ASignedPartIsLeftWhole), test_postfix.py
// test_eight_bit_mail_is_converted_for_a_primary_without_8bitmime; fuzzed with the message target.
std::optional<std::string> seven_bit_message(std::string_view raw);
// Whether the message has a byte past 127 after its header section (where 8BITMIME matters).
bool has_eight_bit_body(std::string_view raw);

// The addresses of one header field's raw value (an RFC 5322 address-list; groups flattened, RFC 2047
// names decoded), at most `max`. What GMime cannot parse (or drops, or finds as an encoded word where
// a sender encoded a whole "Name <addr>") is split loosely on commas, decoded, so no address is lost:
// the mailbox store places imported mail by these, IMAP's ENVELOPE and SEARCH and the web read them
// (tests: Message.AddressesGMimeDropsAreKept, Message.AWholeAddressInEncodedWordsIsFound). Fuzzed
// through IMAP's ENVELOPE by the mime_tree target (fuzz/mime_tree_fuzz.cc).
// `charset`: the message's declared charset (declared_charset), tried after UTF-8 for raw 8-bit bytes.
std::vector<Address> parse_address_list(std::string_view value, unsigned max = 1000, bool keep_groups = false,
                                        std::string_view charset = {});
// A header field's text with the raw 8-bit bytes inside Q-encoded RFC 2047 words written as =XX
// escapes (GMime's address parser would decode them twice); nothing when it has none. Used by
// parse_address_list and parse_message (the GMime half, engine/message.cc).
std::optional<std::string> escape_8bit_in_encoded_words(std::string_view text);
// A header field's text with each run of adjacent base64 words of one charset, a word before the
// last padded, joined into one word (GMime 3.2 decodes such a run only to the first padding); nothing
// when it has none. And both repairs, as parse_address_list, parse_message and decode_header_text
// make them before GMime decodes (the GMime half).
std::optional<std::string> join_split_base64_words(std::string_view text);
std::optional<std::string> repaired_encoded_words(std::string_view text);

// A Content-Type or Content-Disposition field value, parsed by GMime (RFC 2045; RFC 2231 parameter
// continuations and charsets decoded). Type, subtype and disposition lower case. Nothing when the
// value has no type/subtype (engine/mime_tree.cc uses the defaults then). Fuzzed with mime_tree.
struct MediaType {
  std::string type, subtype;
  std::vector<std::pair<std::string, std::string>> params;
};
// `charset`: the message's declared_charset, for raw 8-bit bytes in a parameter (a file name).
std::optional<MediaType> parse_content_type(std::string_view value, std::string_view charset = {});
struct Disposition {
  std::string disposition;
  std::vector<std::pair<std::string, std::string>> params;
};
std::optional<Disposition> parse_content_disposition(std::string_view value, std::string_view charset = {});
// A Date header field's value (RFC 5322 date-time, GMime's lenient reading) as Unix seconds.
std::optional<std::int64_t> parse_date_value(std::string_view value);
// The calendar day the Date value names in its own time zone, as days since 1970-01-01 (IMAP's
// SENTON, SENTBEFORE, SENTSINCE disregard time and zone).
std::optional<std::int64_t> date_value_day(std::string_view value);
// A header field value with its RFC 2047 encoded words decoded (UTF-8; invalid bytes replaced).
// Raw 8-bit bytes outside encoded words (which RFC 5322 does not allow, and older mailers and much
// spam send) are read as UTF-8 when they are, else in `charset` (the message's declared_charset) when
// it converts them, else as windows-1252: the rule of every reader of a message's fields (the index,
// the web view, the load file, IMAP's ENVELOPE and SEARCH). Tests: Message.RawHeaderBytesReadInTheDeclaredCharset,
// MessageView.RawHeaderBytesReadInTheDeclaredCharset, ImapFetch.EnvelopeNamesInTheDeclaredCharset.
std::string decode_header_text(std::string_view value, std::string_view charset = {});
// The charset a message declares for its text: the first `charset` parameter of a Content-Type
// field of the message or of its parts that names neither US-ASCII nor UTF-8, lower case, as iconv
// should read it (a label's usual superset: GB2312 as GB18030, EUC-KR as CP949); empty when there is
// none, when it is ISO-8859-1 or windows-1252 (read as windows-1252 anyway), when the name is not
// a plain charset token, and when the message has no 8-bit byte, so nothing to read in it
// (Message.DeclaredCharsetIsTheFirstThatSaysSomething). Both looked for in the first 1 MiB. Readers take it as the likeliest
// charset of raw 8-bit bytes in header fields, as mail clients do (decode_header_text). A scan of the
// first 1 MiB, GMime-free (engine/message_common.cc); fuzzed with the message target.
std::string declared_charset(std::string_view raw);
// An RFC 2047 encoded phrase for a display name (as-is when it is printable ASCII).
std::string encode_phrase(std::string_view utf8);

// The raw value of the first header field `name` (case-insensitive) of the message's header section,
// folded lines joined, without decoding; nothing when the section has none. A cheap scan that stops
// at the first blank line, for a server deciding before the full parse (the continuity probe's
// token). Fuzzed with the message target (fuzz/message_fuzz.cc).
std::optional<std::string> header_field(std::string_view raw, std::string_view name);

// What a message submission agent adds to a submitted message that lacks them (RFC 6409 8.3; as
// Postfix's cleanup does for its own clients): a Date: field for `now` and a Message-ID: whose right
// side is `hostname`, at the end of the header section, with the line ends the section uses. Receivers
// refuse mail without a Message-ID (Gmail: 550 5.7.1), and clients sort and thread by both; scanners,
// printers and scripts send without them. A message that has both is returned as it was. Test:
// Message.SubmissionAddsAMissingDateAndMessageId.
std::string with_origin_fields(std::string raw, std::int64_t now, std::string_view hostname);

}  // namespace mailark
