// The Xapian schema of mailark's index, in one place (mirrored in docs/FORMAT.md, "index").
// Changing a prefix or slot changes the schema version: bump kSchemaVersion and reindex.
#pragma once

#include <xapian.h>

#include <cstddef>
#include <cstdint>

namespace mailark::indexer::schema {

inline constexpr const char* kSchemaVersion = "1";

// Metadata keys.
inline constexpr const char* kMetaSchema = "mailark:schema";
inline constexpr const char* kMetaWatermark = "mailark:watermark";  // highest archive seq indexed (decimal)
// The highest shard document id without Kpairs (decimal; "0": none). Absent in a shard created before
// it: any of its documents may lack Kpairs.
inline constexpr const char* kMetaUnpairedTo = "mailark:unpaired-to";

// The highest shard document id without date terms (kPrefixDate; decimal, "0": none). Absent in a
// shard created before them: any of its documents may lack them.
inline constexpr const char* kMetaUndatedTo = "mailark:undated-to";

// The highest shard document id whose header fields were read by an older reading than this
// release's (decimal; "0": none), and the reading the shard's later documents were read with
// (kMetaReading). kReading "2": raw 8-bit header bytes outside encoded words read in the charset the
// message declares (decode_header_text), and Chinese, Japanese and Korean letters indexed as words
// of one letter each (cjk_words; before, a run of them between spaces or punctuation was one word,
// which a search of a word inside it never found); since 2026-12-07. kReading "3": every text in
// Unicode's compatibility form before it is cut into words (words_form: a decomposed "é" one letter,
// full-width "ＰＣ" as "PC", half-width katakana full-width; before, such words were found only when
// typed the same way; Thai and Lao AM kept; soft hyphens dropped and "ß" read as "ss", search_form),
// and runs of Thai, Lao, Khmer and Burmese letters cut
// into words by ICU's dictionaries (sea_words; before, a run was one word); since 2026-12-07.
// kReading "4": as "3", and Latin and Greek letters read without their marks ("résumé" as
// "resume"; Hebrew points and Arabic harakat dropped, Arabic letter forms read as one), the Greek final sigma as the sigma (search_form; before, "οδος" typed in lower case did
// not find "ΟΔΟΣ", which the index lower-cases to "οδοσ"), and address and custodian terms in that
// form and in lower case beyond ASCII (address_key); since 2026-12-08.
// Absent: an older release, which read them
// as windows-1252 (2026-12-05 and -06), and before that (GMime 3.2's reading as it was) also cut a
// subject, name or attachment name written as base64 words split mid-character at the first word's
// padding and decoded raw 8-bit bytes inside an encoded word twice. Such documents keep that text
// until `mailark reindex` (or a pairing rebuild) reads them again. A writer that opens a shard of an
// older reading moves kMetaUnrepairedTo to its last document; absent in a shard created before the
// key: any of its documents may be older. `mailark stats` says how many
// (IndexReader::documents_read_before_repairs; test IndexUpgrade.DocumentsReadBeforeTheRepairsAreCounted).
inline constexpr const char* kMetaUnrepairedTo = "mailark:unrepaired-to";
inline constexpr const char* kMetaReading = "mailark:reading";
inline constexpr const char* kReading = "4";

// A live shard's size in bytes right after the writer last compacted it (decimal; absent: never
// compacted while live). IndexWriter::compact_if_grown compacts again once the shard has grown past
// it by half.
inline constexpr const char* kMetaCompactedBytes = "mailark:compacted-bytes";
// "room" in a shard this release created or packed with room in its blocks (never FULLER, which
// Xapian 1.4.22 corrupts when the database is written again). A live shard without it (an earlier
// release's import packed its live segment FULLER) is packed again before it is written:
// IndexUpgrade.ALiveShardPackedFullIsPackedAgainBeforeItIsWritten.
inline constexpr const char* kMetaPacking = "mailark:packing";
// In a shard's small tier (IndexWriter::set_small_tier): the first document id it holds (its shard
// holds every one before; decimal).
inline constexpr const char* kMetaFreshFrom = "mailark:fresh-from";

// Document ids: the archive sequence number (docid == seq, so seq must stay below 2^32 per archive
// segment; time-segmented archives keep each segment far below that).

// Free-text prefixes (TermGenerator, lower-cased, no stemming, no positions; see phrase handling in
// index.h; Chinese, Japanese and Korean letters one word each, cjk_words, since reading 2; every text
// in Unicode's compatibility form first and Thai, Lao, Khmer and Burmese runs cut into words,
// words_form, since reading 3). Unprefixed terms hold subject, body, attachment names and attachment text. For address
// fields the free text is the display name and the local part split at . _ - +; whole addresses and
// domains are exact terms under the matching kPrefix*Addr below.
inline constexpr const char* kPrefixFrom = "F";
inline constexpr const char* kPrefixTo = "T";
inline constexpr const char* kPrefixCc = "C";
inline constexpr const char* kPrefixBcc = "B";
inline constexpr const char* kPrefixRcpt = "XR";  // envelope recipients (RCPT TO)
inline constexpr const char* kPrefixSubject = "S";
inline constexpr const char* kPrefixAttachment = "XA";  // attachment file names
inline constexpr const char* kPrefixExtracted = "XE";   // text extracted from PDF, Office and OpenDocument attachments (engine/extract.h)

// Exact address terms, lower case: the whole address, its local part, its domain and each parent
// domain of two or more labels (jeff.skilling@mail.enron.com -> jeff.skilling@mail.enron.com,
// jeff.skilling, mail.enron.com, enron.com).
inline constexpr const char* kPrefixFromAddr = "XAF";
inline constexpr const char* kPrefixToAddr = "XAT";
inline constexpr const char* kPrefixCcAddr = "XAC";
inline constexpr const char* kPrefixBccAddr = "XAB";
inline constexpr const char* kPrefixRcptAddr = "XAR";

// Pair terms: XP<word> <word> for each adjacent pair of pair words in the unprefixed free text and the
// extracted text (XPXE...), and XP<prefix><word> <word> for each adjacent pair of words in the short
// fields F, T, C, B, XR, S, XA (index.h). A document built with pair terms also has the term Kpairs.
inline constexpr const char* kPrefixPair = "XP";
inline constexpr const char* kTermHasPairs = "Kpairs";
// A placeholder for a record retention expired (index.h build_expired_document).
inline constexpr const char* kTermExpired = "Kexpired";
inline constexpr const char* kPairWordsFile = "pair-words";  // in the index folder
inline constexpr const char* kPairWordsHeader = "mailark-pair-words 1";
inline constexpr std::uint64_t kPairTrainDocs = 2000;  // documents before the pair words are chosen
inline constexpr std::size_t kPairWords = 1000;        // at most this many, the most frequent words
inline constexpr std::uint64_t kPairMinPerMille = 5;   // each in at least 0.5% of the documents

// Boolean prefixes (exact terms, no tokenisation).
inline constexpr const char* kPrefixMessageId = "XMID";  // XMID<message-id>, or XMID#<sha256 hex> if long
inline constexpr const char* kPrefixFlag = "K";  // Kattachment, Kmalformed, Kquarantined, Kunindexed (a
                                                 // placeholder for a record that could not be indexed),
                                                 // Kpairs (built with pair terms), Kcopy (an earlier
                                                 // record holds the same bytes), Kexpired (a
                                                 // placeholder for a record retention expired: it
                                                 // keeps a sealed shard's ids dense, index.h
                                                 // build_expired_document)
inline constexpr const char* kPrefixVerdict = "XV";  // XVclean, XVinfected, XVunscanned, XVunscannable
inline constexpr const char* kPrefixDirection = "XD";    // XDimport, XDinbound, XDoutbound, XDprobe
inline constexpr const char* kPrefixMimeType = "XT";     // XT<type/subtype> of each attachment
inline constexpr const char* kPrefixSignature = "XS";    // XS<signature name, lower case>
inline constexpr const char* kPrefixCustodian = "XCU";   // XCU<custodian, lower case> (added in schema 1)
// Date terms, from the same Unix seconds as kSlotDate, in UTC: XY<yyyy> (the year) and XY<yyyymm>
// (the month); XY- for a date before the year 1000, XY+ for one after 9999 (no year or month term
// then). A date range is their union, with the value slot checked only in the months it cuts, and a
// newest-first page of many results looks at the newest months first (index.cc, DateBuckets). Added
// after schema 1 was first released: documents built before lack them (kMetaUndatedTo says which),
// and are matched by the value slot as before.
inline constexpr const char* kPrefixDate = "XY";
// Q<archive id, decimal>: every document's own term, so a set of documents can be named in a query that
// Xapian's remote backend runs (a phrase under OR or NOT over remote segments). Added after schema 1
// was first released: documents built before lack it (docs/FORMAT.md).
inline constexpr const char* kPrefixId = "Q";

// Value slots.
inline constexpr Xapian::valueno kSlotDate = 0;      // sortable_serialise(Unix seconds of Date, or received)
inline constexpr Xapian::valueno kSlotSize = 1;      // sortable_serialise(raw bytes)
inline constexpr Xapian::valueno kSlotReceived = 2;  // sortable_serialise(Unix seconds received/imported)
// The pair filter (index.h): a Bloom filter of every two adjacent words of the document's texts that
// have no pair term. Byte 0 is the filter's version (kPairFilterVersion), the rest its bits (bit j is
// byte 1 + j / 8, mask 1 << j % 8). Added after schema 1 was first released: documents built before
// have no value here and are checked as before.
inline constexpr Xapian::valueno kSlotPairFilter = 3;
// The first 16 bytes of the message's SHA-256: records of the same bytes (custodians' copies) share it,
// and an archive-wide search shows one of them (SearchOptions::one_per_message). Added after schema 1
// was first released: documents built before have none and are never collapsed.
inline constexpr Xapian::valueno kSlotContent = 4;
// The texts a phrase check reads, kept for a message that needs a MIME parser to give them
// (IndexFields::keep_texts): byte 0 the version (kKeptTextsVersion), then one zstd frame of the subject,
// body, attachment text, extracted text, then the number of attachment names and each name, every
// string a LEB128 length and its bytes. Left out past kKeptTextsMaxBytes, or texts of more than three
// times that before compression (the check then reads the
// archive). Added after schema 1 was first released: documents without it are checked against the
// archive as before (docs/FORMAT.md "Kept texts").
inline constexpr Xapian::valueno kSlotTexts = 5;
inline constexpr unsigned char kKeptTextsVersion = 1;
inline constexpr std::size_t kKeptTextsMaxBytes = 256 * 1024;
inline constexpr unsigned char kPairFilterVersion = 1;
inline constexpr std::size_t kPairFilterBitsPerPair = 10;  // about 0.8% false positives with 7 probes
inline constexpr unsigned kPairFilterProbes = 7;
inline constexpr std::size_t kPairFilterMaxBytes = 32768;  // past ~26,000 distinct pairs the rate rises

// Terms longer than this are hashed (Xapian's limit is 245 bytes including the prefix).
inline constexpr std::size_t kMaxBooleanTermBytes = 200;

}  // namespace mailark::indexer::schema
