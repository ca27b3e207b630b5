// The full-text index: a Xapian database derived from the archive. The one translation point to
// Xapian's exceptions is index.cc (xapian_error).
//
// Phrases without positions: the index stores no term positions (they would make the data folder
// 1.6 times the raw mail; docs/BENCHMARKS.md "Phrases"). A phrase in a query ("quarterly results", or
// from:jeff.skilling@enron.com, which Xapian splits into a phrase) is answered in two steps: the
// documents holding all of the phrase's terms are candidates, and each candidate is checked by
// re-indexing its fields with positions in memory (FieldSource supplies them from the archive). The
// result is exact; the cost is paid only by phrase queries, in proportion to their candidates.
//
// Pair terms make the costly phrases cheap: once the index holds kPairTrainDocs documents, the
// kPairWords most frequent words become its pair words (the file index/pair-words), and every later
// document also gets a term for each adjacent pair of pair words in its free text (XP<a> <b>), for
// each adjacent pair of words at all in its short fields (names, subjects, attachment names:
// XP<prefix><a> <b>), and the term Kpairs. A phrase of two such words ("natural gas",
// from:"kenneth lay") is then answered from the index for those documents, and only the documents
// indexed before the list (without Kpairs) are checked; a longer phrase takes its covered pairs as a
// narrower candidate set. Tests: IndexPairs.*.
//
// The pair filter (below) covers the pairs pair terms do not: a candidate whose filter says it never
// has the phrase's words side by side is dropped without reading the message. A phrase with few
// candidates left is checked at once (exact total); with more, and standing where every result must
// hold it, its check is deferred to the search's walk through the results in their order, which
// tests each one's filter and then checks it, only as far as the page; the total is then estimated
// (total_exact false). Tests: IndexDeferredPhrase.*, PairFilter.*.
//
// Thread safety: build_document is reentrant. An IndexWriter is used by one thread. An IndexReader is
// used by one thread; open one per thread.
#pragma once

#include <xapian.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/result.h"
#include "indexer/fields.h"

namespace mailark::indexer {

// The index's pair words (see above); loaded from and written to index/pair-words.
struct PairWords {
  std::unordered_set<std::string> words;
  bool has(const std::string& w) const { return words.count(w) > 0; }
};

// Pair words chosen before any document is built, from the texts of an import's first messages (held
// back anyway to train the zstd dictionary): the kPairWords most frequent words in at least
// kPairMinPerMille of the texts, by a plain split (runs of letters, digits, '_' and non-ASCII bytes,
// joined by one ' or & between them, ASCII lower-cased) rather than the index's own TermGenerator
// (on the 21,903 Enron messages, 974 of the 1,000 words the index would choose). Any list is correct (a phrase of two
// listed words is answered by their pair term wherever the document was built with the list; a
// listed word TermGenerator never yields is never used): the list only decides which phrases are
// cheap. Null when there are fewer than kPairTrainDocs / 2 texts. Test:
// IndexPairs.WordsChosenFromTextsBeforeAnyDocument.
std::shared_ptr<const PairWords> choose_pair_words(const std::vector<std::string_view>& texts);

// Documents a shard takes between commits while the index has no pair words yet (callers commit that
// often so that the words are chosen soon after kPairTrainDocs documents).
inline constexpr std::size_t kPairTrainCommitEvery = 1000;

// A shard written before its index chose pair words is written again with them
// (IndexWriter::pair_unpaired) only while it holds at most this many documents: right after the
// words are chosen it holds about kPairTrainDocs / shards. An index from before pair terms keeps its
// older documents as they are (a phrase checks them) until `mailark reindex`, rather than stalling
// its indexing for a rewrite of a large shard.
inline constexpr std::size_t kPairRebuildMaxDocs = 10000;

// Was the document built without pair terms, though it holds words (not a placeholder)? The index
// records such documents (kMetaUnpairedTo), and a phrase checks them against the archive.
bool lacks_pair_terms(const Xapian::Document& doc);
// Marks a document as a copy (IndexFields::copy), once its record is appended and known to be one.
void mark_copy(Xapian::Document& doc);

// The pair filter (value slot schema::kSlotPairFilter) makes the phrases pair terms do not cover
// cheap: a Bloom filter of every two adjacent words of the document's texts that have no pair term
// (with pair words: the pairs with a word outside them in the long texts; without: every pair). A
// phrase's candidates are tested against it before any is read from the archive, so that those
// holding the words apart ("power" here, "crisis" there) are dropped without a read. It has no false
// negatives and about 0.8% false positives a pair, which the check against the archive removes:
// answers stay exact. Tests: PairFilter.*, IndexTest.PhraseVerificationOnlyLoadsCandidates.
std::uint64_t pair_filter_key(std::string_view prefix, std::string_view a, std::string_view b);
// The filter's value for these keys (duplicates allowed).
std::string encode_pair_filter(std::vector<std::uint64_t> keys);
// False only when a document with this filter cannot hold the pair. A filter of another version: true.
bool pair_filter_may_hold(std::string_view filter, std::uint64_t key);

// Chinese, Japanese and Korean are written without spaces between words (Korean with particles
// joined to its words): the index takes each of their characters as a word of its own (Xapian's
// FLAG_CJK_NGRAM does the same for its unigrams), so that a query's run of them is the phrase of its
// characters (cjk_query_phrases) and the phrase machinery above answers it exactly. The text with a
// space on each side of every Han, kana, Hangul and Bopomofo character, as the index, the phrase
// check and match_words read texts (through for_each_text); unchanged (and not copied) when it holds
// none. Tests: IndexCjk.*.
std::string cjk_words(std::string_view text);
bool has_cjk(std::string_view text);
// A text as the index cuts it into words, and the phrase check, match_words and the choice of pair
// words read it: in Unicode's compatibility form (common/unicode_form.h search_form: "ＰＣ１２３" is
// "PC123", a decomposed "é" one letter, half-width katakana full-width; soft hyphens dropped, "ß"
// as "ss", "ς" as "σ", Latin and Greek letters without their marks, "é" as "e"), with runs of Thai, Lao, Khmer and
// Burmese letters cut into words (sea_words, indexer/word_breaks.h), then with Chinese, Japanese and
// Korean letters each a word (cjk_words). `text` itself when they leave it as it is (ASCII text always),
// else `scratch`, which holds the result. Tests: IndexForms.*, IndexCjk.*, IndexWordBreaks.*.
const std::string& words_form(const std::string& text, std::string& scratch);
// An address (or a custodian) as its exact terms hold it: in search_form (as every query is read)
// and in lower case beyond ASCII too ("José@Exämple.org" is "jose@example.org"). Test
// IndexForms.OneWordWrittenTwoWaysIsOneWord.
std::string address_key(const std::string& address);
// A query whose every whitespace-delimited token with those letters (or Thai, Lao, Khmer or Burmese
// ones) outside quotes is made the quoted phrase of its words as the index cuts them ("原装" ->
// "\"原 装\"", subject:原装 -> subject:"原 装", 原装-进口 one phrase, "กินน้ำ" -> "\"กิน น้ำ\""), and
// whose letters inside quotes are spaced (runs of the others cut into words), where the field
// takes words (free text, subject:, attachment:, extracted:); other fields' values as typed
// (custodian:, id:; from: to: cc: bcc: rcpt: are AddressField's, which spaces name words itself and
// keeps "李四@例子.中国" an address). Fuzzed with the query target.
std::string cjk_query_phrases(const std::string& query);
// A query with a quote left open closed at its end: Xapian 1.4 reads `subject:"golf` otherwise as
// neither the phrase nor the word (63 Enron messages where `subject:"golf"` finds 19). Test
// IndexCjk.ARunOfLettersIsFoundInsideLongerText.
std::string closed_quotes(std::string query);

// The value of schema::kSlotTexts for these fields, or empty when it would pass kKeptTextsMaxBytes.
std::string encode_kept_texts(const IndexFields& fields);
// The texts of such a value (subject, body, attachment_text, extracted_text and the attachments' names;
// the other fields empty), or nothing for a value that is not one (another version, damaged, or
// decoding past `max_bytes`). Test: KeptTexts.*; fuzz/record_fuzz.cc feeds it arbitrary bytes.
std::optional<IndexFields> decode_kept_texts(std::string_view value, std::size_t max_bytes = 64u << 20);

// The date terms of a document dated `seconds` (schema::kPrefixDate): its year and month in UTC, or
// XY- / XY+ outside the years 1000-9999. Test: IndexDates.*.
std::vector<std::string> date_terms(std::int64_t seconds);

// Builds the document for one message (with its pair filter and date terms); with `pairs`, also its
// pair terms and Kpairs.
Xapian::Document build_document(const IndexFields& fields, const PairWords* pairs = nullptr);
// The document for a record that could not be indexed (its bytes unreadable, its document refused):
// it keeps the document ids dense and is found by is:unindexed, with the reason in its summary.
Xapian::Document build_unindexed_document(std::uint64_t id, const std::string& reason);
// The document for a record retention expired (Kexpired, no data, nothing else): a sealed shard keeps
// its ids dense, 1 to its last, because Xapian 1.4 cannot search some queries over a database with
// gaps (a term every document holds, matched without its wdf, is read from the document-length list
// under the term's name, and its second chunk fails: DatabaseCorruptError "Unexpected end of posting
// list"). Retention's rewrite of a segment puts one at each expired id, and the writer at each id a
// catch-up or reindex passes over (the archive's walk skips expired records). Readers leave
// placeholders out of every search, count and summary. Tests:
// IndexExpiry.ASegmentThatLostDocumentsIsSearchedWhole, IndexExpiry.IdsPassedOverArePlaceholders.
Xapian::Document build_expired_document();

// What the exception being handled is, for a log line: common/exceptions.h's answer, and Xapian's
// errors (not std::exceptions) with their message. Call only inside a catch block.
std::string describe_current_exception();

// The index is split into time segments (the archive's: engine/archive.h) and each segment into shards
// so that documents can be added by several threads: message id n of the segment beginning at F lives
// in shard (n - 1) % shards as document (n - F) / shards + 1. The first segment is at the top of the
// index directory (its stub DATA/index/XAPIANDB), each later one in DATA/index/segment-F; readers open
// them all as one database and translate its document ids to archive ids (docs/FORMAT.md, "Index").
// Each shard records its own watermark in every segment; a shard's highest one counts.
class IndexWriter {
 public:
  static constexpr unsigned kDefaultShards = 2;

  // Opens or creates the index in dir (a new index gets `shards_if_new` shards). Errors: kIo when
  // another process holds the write lock, kUnsupported for an index of another schema version.
  static Result<std::unique_ptr<IndexWriter>> open(const std::string& dir,
                                                   unsigned shards_if_new = kDefaultShards);
  ~IndexWriter();

  unsigned shard_count() const { return static_cast<unsigned>(shards_.size()); }
  const std::string& dir() const { return dir_; }
  // The free space the writer leaves on the index's file system (0, the default: none), at most a
  // sixteenth of the file system (a small one holds small shards). Xapian 1.4.22 ends the process
  // (std::terminate: the error crosses a noexcept frame inside the library) when a commit of added
  // documents meets a full disk: seen in runs of bench/import/door_catch_up.py in the commit of
  // pair_unpaired's new copy, and in the close() (which commits) of a shard reopened after a refused
  // commit; so reopen_shard, the destructor and a failed copy drop what they hold uncommitted without
  // writing it, and a shard is never written to the last byte (docs/BENCHMARKS.md). A commit
  // writes new copies of the blocks it changes (up to the whole shard, when it is small) and the new
  // documents: commit_shard fails (kIo, naming the free space; the caller reopens the shard and
  // catches up later, as after any error) unless this, the shard's size and twice what its
  // uncommitted documents hold are free. pair_unpaired and compact_if_grown, which write a copy of the
  // shard beside it, do nothing (and try again at a later call) unless this and twice
  // (pair_unpaired) or once (compact_if_grown) the shard's size are free. The live shard is bounded by
  // its time segment (sealed ones are never written). Tests: IndexRoom.*,
  // Ingest.IndexFailureNeverFailsAMessage, test_failures.py test_index_disk_full_never_refuses_mail.
  void set_min_free_bytes(std::uint64_t bytes) { min_free_ = bytes; }
  std::uint64_t min_free_bytes() const { return min_free_; }
  // Registers a time segment that begins at archive id `first` (idempotent; safe from any thread):
  // ids from `first` on go to that segment's shards, created on first use, until a later segment
  // begins. Call it before adding the segment's first id. The engine registers the archive's segments
  // at open, and the ingest pipeline each new one as the archive begins it.
  void add_segment(std::uint64_t first);
  // The segments known (first ids, ascending; the first is 1).
  std::vector<std::uint64_t> segments() const;
  unsigned shard_of(std::uint64_t id) const { return static_cast<unsigned>((id - 1) % shards_.size()); }

  // Adds message `id` to its shard. An id its shard already holds is skipped: at or below the shard's
  // watermark, or committed past it (Xapian commits by itself every so many documents, so a crash can
  // leave documents beyond the watermark; they came from the same records), so catching up twice is
  // harmless (tests: Index.DocumentsCommittedPastTheWatermarkAreKept). A document Xapian refuses
  // (kInvalidArgument) is replaced by a placeholder (build_unindexed_document). Calls for different
  // shards may run on different threads; one thread per shard at a time. Errors: kIo and others from
  // the environment (disk full); the shard should then be reopened.
  Status add(std::uint64_t id, const Xapian::Document& doc);
  // Discards a shard's uncommitted changes and opens it again (after an error). Its watermark is
  // read back from disk.
  Status reopen_shard(unsigned shard);
  std::uint64_t shard_watermark(unsigned shard) const { return shards_[shard].watermark; }
  // Makes one shard durable, recording that every id of that shard up to `watermark` is in it.
  Status commit_shard(unsigned shard, std::uint64_t watermark);
  // Makes every shard durable and records that every archive record up to `watermark` is indexed.
  Status commit(std::uint64_t watermark);
  // Every archive record up to this id is indexed: the lowest shard coverage (shard_coverage).
  std::uint64_t watermark() const;
  // The pair words documents are built with from now on; null until the index has trained them (at
  // a commit that leaves kPairTrainDocs documents or more). Safe to call from any thread.
  std::shared_ptr<const PairWords> pair_words() const;
  // Gives the documents of the shard's open segment that lack pair terms (built before the pair
  // words were chosen) their pair terms: a database without a termlist cannot replace a document, so
  // the shard is written again beside itself, each of its documents built again by `rebuild` (its
  // archive id in, a document built with pair_words() out), with a record that none is left
  // (schema::kMetaUnpairedTo), and swapped in atomically; a phrase of two pair words is then answered
  // from the index alone. Returns how many documents it built: none without pair words, when none
  // lacks them, in a sealed segment (never written again; a phrase checks its older documents), or
  // without the room set_min_free_bytes asks for (tried again at the next call).
  // Call on the shard's thread with nothing uncommitted (after commit_shard), right after the commit
  // that chose the words, while the shard is small; after that it costs nothing.
  // Test: IndexPairs.DocumentsBuiltBeforeThePairWordsGetThemLater.
  Result<std::size_t> pair_unpaired(unsigned shard, const std::function<Xapian::Document(std::uint64_t id)>& rebuild);
  // Makes `pairs` the index's pair words (its index/pair-words file) when it has none yet and no
  // document built with another list; documents are then built with them from the first (none to
  // build again). Returns whether it did. Errors: writing the file.
  Result<bool> adopt_pair_words(std::shared_ptr<const PairWords> pairs);
  // Does the shard's open segment hold documents without pair terms that pair_unpaired would build
  // again (at most kPairRebuildMaxDocs documents in the shard)?
  bool has_unpaired(unsigned shard) const;
  // Keeps the shard the writer has open near its compact size. A shard written a little at a time
  // (a server commits each second) leaves its B-tree blocks about half full, and each commit writes
  // new copies of the blocks it changes (the old ones are reused by the next): the index a server
  // wrote was twice the size of the same documents written at once and compacted (docs/BENCHMARKS.md
  // "The index a server writes"). The shard is closed, compacted beside itself, swapped in with one
  // atomic rename as sealing does (a reader that has the old one open keeps reading it) and opened
  // again (the same documents at the same ids, watermark and metadata) when it is at least
  // `min_bytes` and either has grown by half (and by min_bytes) since it settled after its last
  // compaction (its size at the call after that compaction, so that what one commit changes is not
  // counted as growth: geometric, a few times the final size written in all) or, `idle` (no document
  // since the last commit: the caller calls it then too) and written to since this writer opened or
  // compacted it, is a quarter (and a quarter of min_bytes) larger than right after its last compaction
  // (schema::kMetaCompactedBytes; never compacted: at once). So a server's shards are compact soon
  // after mail stops arriving, and while it arrives they stay within half again of what they
  // settled at. Call on the shard's thread with nothing uncommitted (after commit_shard). Returns
  // whether it compacted, and the sizes before and after. Errors (a full disk): the shard is opened
  // again as it was and not tried again until it has grown by another quarter; when it cannot be
  // opened again (shard_open false), reopen_shard as after any other error. Test: IndexLiveCompaction.*.
  //
  // While mail arrives (not `idle`), a shard over `max_busy_bytes` is left for idle time and sealing:
  // the shard takes no document while it is compacted (about 3 ms a MB here, docs/BENCHMARKS.md "The
  // index a server writes"), so its documents wait in the ingest's queue (1,024 a shard), and once
  // that is full the archive writer, and every SMTP session's 250, waits too. 512 MiB is about 1.5 s
  // here; a shard of a segment cut at 250,000 messages (the default) stays below it (about 270 MB
  // before compaction), and a node at 1,000 msg/s fills two shards' queues in about 2 s (derived
  // figures, docs/BENCHMARKS.md). Test:
  // IndexLiveCompaction.ABigShardIsLeftForIdleTimeWhileMailArrives.
  struct Compaction {
    bool compacted = false;
    std::uint64_t before = 0, after = 0;  // the shard's bytes
  };
  Result<Compaction> compact_if_grown(unsigned shard, bool idle, std::uint64_t min_bytes = kLiveCompactMinBytes,
                                      std::uint64_t max_busy_bytes = kLiveCompactMaxBusyBytes);
  static constexpr std::uint64_t kLiveCompactMinBytes = 4u << 20;
  static constexpr std::uint64_t kLiveCompactMaxBusyBytes = std::uint64_t{512} << 20;
  bool shard_open(unsigned shard) const { return shards_[shard].db != nullptr; }

  // The small tier: a commit writes a new copy of every block it changes, and a document's rarer terms
  // each change a block of their own, so a commit of a few documents to a large shard wrote tens of MB
  // (docs/BENCHMARKS.md "What a server writes on a large live segment"). Once the live shard is
  // `from_bytes` or larger (after a commit), its new documents go to a small database beside it
  // (freshK.gN, listed in the segment's stub after the shards; its document t is the shard's
  // document F - 1 + t, F its schema::kMetaFreshFrom), so that commits write the small database's
  // blocks only. compact_if_grown merges the two into a new shardK.gN (Xapian's renumbering
  // compaction, which offsets the tier's ids by the shard's last: every document back at its shard
  // id) once the small tier is
  // `merge_bytes` or a sixteenth of the shard, whichever is larger (while mail stops, `idle`, once it
  // is `idle_merge_bytes`: a merge writes the whole shard again, so not after every quiet half
  // minute of a server that takes a message a minute), and switches readers to it with one atomic
  // write of the stub; readers that have the old ones open keep reading them. Sealing and the
  // import's compaction fold a small tier in the same way. 0: off. Tests: IndexSmallTier.*.
  void set_small_tier(std::uint64_t from_bytes, std::uint64_t merge_bytes, std::uint64_t idle_merge_bytes) {
    small_from_ = from_bytes;
    small_merge_ = merge_bytes;
    small_idle_merge_ = idle_merge_bytes;
  }
  static constexpr std::uint64_t kSmallTierFromBytes = 16u << 20;
  static constexpr std::uint64_t kSmallTierMergeBytes = 4u << 20;
  static constexpr std::uint64_t kSmallTierIdleMergeBytes = 1u << 20;
  // Whether the shard's new documents go to its small tier now (tests).
  bool has_small_tier(unsigned shard) const { return shards_[shard].fresh != nullptr; }

 private:
  // Trains the pair words from the committed index's document frequencies, once it is big enough.
  Status train_pair_words();
  struct Shard {
    unsigned index = 0;
    std::uint64_t segment = 1;  // first id of the segment whose shard is open
    std::string path;
    std::unique_ptr<Xapian::WritableDatabase> db;
    std::uint64_t watermark = 0;  // every id of this shard up to it is in the index (any segment)
    std::uint64_t elsewhere = 0;  // the highest watermark of this shard in other segments
    // The highest document id of the open shard without Kpairs (schema::kMetaUnpairedTo); not known
    // in a shard created before it was recorded.
    std::optional<Xapian::docid> unpaired_to;
    std::uint64_t compacted_bytes = 0;  // schema::kMetaCompactedBytes; 0: never compacted while live
    std::uint64_t compact_retry_at = 0;  // after a failed compaction: not again below this size
    std::uint64_t settled_bytes = 0;  // its size at the first call after its last compaction (0: not yet)
    bool written = false;  // documents added since this writer opened or compacted it
    std::uint64_t pending_bytes = 0;  // about what the uncommitted documents hold (room_to_commit)
    // The small tier (set_small_tier): open when the segment's stub names one for this shard.
    std::unique_ptr<Xapian::WritableDatabase> fresh;
    std::string fresh_path;
    std::optional<Xapian::docid> fresh_unpaired_to;  // its kMetaUnpairedTo
    Xapian::docid fresh_base = 0;  // its document t is the shard's fresh_base + t
  };
  IndexWriter() = default;
  // Commits and closes the shard's open segment, if any, and opens its shard of `segment`.
  Status open_shard(Shard& sh, std::uint64_t segment);
  // Puts `doc` (archive id `id`) at document `local` of `db` (added when it is next, else replaced);
  // a document Xapian refuses becomes a placeholder that says why.
  static void put(Xapian::WritableDatabase& db, Xapian::docid local, std::uint64_t id, const Xapian::Document& doc);
  // Whether the shard's file system has room for a commit of what it holds (set_min_free_bytes);
  // else an error that says how much is free, for `what`.
  Status room_to_commit(const Shard& sh, const std::string& what) const;
  std::string shard_path(std::uint64_t segment, unsigned shard) const;
  // Rewrites a segment's stub (atomically) with `change` applied to its entries; one writer thread at
  // a time (stub_mu_).
  Status change_stub(std::uint64_t segment, const std::function<void(std::vector<std::string>& shards,
                                                                     std::vector<std::string>& fresh)>& change);
  // Begins the shard's small tier when it is large enough (set_small_tier; after a commit). A failure
  // (a full disk) leaves the shard taking its documents itself.
  void start_small_tier(Shard& sh);
  // Merges the shard's small tier into a new generation of the shard (compact_if_grown).
  Result<Compaction> merge_small_tier(Shard& sh, std::uint64_t before);
  // After a compaction or a merge: the shard's size now, recorded (schema::kMetaCompactedBytes).
  Result<std::uint64_t> record_compacted(Shard& sh, const std::string& what);
  std::uint64_t segment_of(std::uint64_t id) const;
  std::string dir_;
  std::vector<Shard> shards_;
  mutable std::mutex segments_mu_;
  std::vector<std::uint64_t> segments_;  // first ids, ascending
  mutable std::mutex pairs_mu_;  // guards pairs_ (shards commit on their own threads)
  std::shared_ptr<const PairWords> pairs_;
  std::uint64_t min_free_ = 0;  // set_min_free_bytes
  std::uint64_t small_from_ = kSmallTierFromBytes, small_merge_ = kSmallTierMergeBytes,
                small_idle_merge_ = kSmallTierIdleMergeBytes;  // set_small_tier
  std::mutex stub_mu_;  // change_stub
};

// What a shard's watermark vouches for: every id up to the one before the shard's next own id (ids
// in between belong to other shards). Test: Index.WatermarkCoversOtherShardsIds.
std::uint64_t shard_coverage(std::uint64_t watermark, unsigned shard, unsigned shards);

// Gives the index about to be built in to_dir the pair words of the index in from_dir (its file, or
// chosen from its document frequencies when it has none), so that every document of the new index
// gets pair terms. Nothing when from_dir has no index or too few documents.
Status seed_pair_words(const std::string& from_dir, const std::string& to_dir);

// Rewrites the index in dir into out_dir in compact form (full blocks; typically 40% smaller after a
// bulk import). Segments, shards and document ids are kept. Sealed segments are linked, not rewritten;
// a closed segment (not the last) whose every document is in is sealed. The caller swaps the
// directories. Its callers hold the data folder's lock with no index writer open, so no commit can
// meet a disk this fills; a compaction that fails (a full disk: Xapian's error, an ordinary one here)
// removes out_dir. Test: IndexRoom.SealingWaitsForRoomAndFailedCopiesAreRemoved.
Status compact_index(const std::string& dir, const std::string& out_dir);

// Seals, in place, every closed segment whose documents are all committed and that every shard has
// left (each has committed a document of a later segment), beside readers and the writer of the live
// segment (a running server): each shard is compacted beside itself and swapped with it in one
// atomic rename (renameat2 RENAME_EXCHANGE), then the segment's `sealed` file is written. A reader
// that has the old shard open keeps reading it (the same documents); readers opened later get the
// compacted one. A crash in between leaves a closed segment whose shards are whole databases, sealed
// at the next call. Returns how many it sealed. A first-release index (one plain glass database) is
// left to compact_index. Test: IndexSegments.ClosedSegmentsAreSealedInPlaceBesideReaders,
// tests/e2e/test_segments.py test_smtp_mail_cuts_segments_that_search_spans. A shard is compacted
// only while `min_free` and its own size are free (else kIo, and the segment is sealed at a later
// call), and a failed copy is removed at once, so that the live shards' commits keep their room
// (IndexRoom.SealingWaitsForRoomAndFailedCopiesAreRemoved).
Result<unsigned> seal_closed_segments(const std::string& dir, std::uint64_t min_free = 0);

// compact_index for an index that cannot be swapped whole (a file system of its own mounted on
// DATA/index: rename(2) of a mount point is EBUSY): seals the closed segments in place as above, then
// compacts every shard of the segments left (the live one) beside itself and swaps it in the same way,
// with the same room rules. No writer may have the index open. A first-release index is left as
// written. Returns the shards compacted besides the sealed ones. Test: test_failures.py
// test_reindex_and_compaction_of_an_index_on_a_disk_of_its_own.
Result<unsigned> compact_shards_in_place(const std::string& dir, std::uint64_t min_free = 0);

// Retention: writes the shards of the sealed segment beginning at archive id `first` again, holding
// only the documents of `keep` (its archive ids that did not expire), each built again by `rebuild`
// (a database without a termlist cannot delete a document), at the same document ids, and a
// placeholder (build_expired_document) at every other id of the segment; each shard is
// swapped in with one atomic rename as sealing does (a crash before leaves the old one: the search
// of an expired id finds no record, and the next retention run writes it again). Returns the
// documents built. Errors: kInvalidArgument (the live segment, or one not sealed), kUnsupported (served
// remotely), kIo without room for a shard's copy beside it and `min_free` (as
// IndexWriter::set_min_free_bytes). Tests: Retention.ExpiredMessagesLeaveTheIndex,
// Retention.AnExpiredSegmentsIndexIsWrittenOnlyWithRoomForItsCopy (tests/retention_test.cc).
Result<std::uint64_t> expire_segment_documents(const std::string& dir, std::uint64_t first,
                                               const std::vector<std::uint64_t>& keep,
                                               const std::function<Xapian::Document(std::uint64_t id)>& rebuild,
                                               std::uint64_t min_free = 0);
// The same writing of a sealed segment's shards, for any reason (`what` names it in errors): reading
// a segment an older release indexed again keeps every record (engine/retention.h
// reread_older_segments).
Result<std::uint64_t> rewrite_sealed_segment(const std::string& dir, std::uint64_t first,
                                             const std::vector<std::uint64_t>& keep,
                                             const std::function<Xapian::Document(std::uint64_t id)>& rebuild,
                                             std::uint64_t min_free, const std::string& what);

// One time segment of the index (`mailark segments`).
struct IndexSegment {
  std::uint64_t first = 1;  // its first archive id
  unsigned shards = 0;
  std::uint64_t documents = 0;  // placeholders of expired records left out
  // Ids missing inside its local shards (each shard's last id less its documents): an earlier
  // release's retention left expired records out, where this one writes placeholders (Xapian cannot
  // search such a shard whole: build_expired_document). Retention reads such a segment again
  // (engine/retention.h reread_older_segments). Test: IndexExpiry.AShardWithGapsIsFoundAndWrittenWhole.
  std::uint64_t gaps = 0;
  std::uint64_t bytes = 0;
  bool sealed = false;  // closed, compacted, never added to (written again whole only by retention and
                        // after an upgrade: rewrite_sealed_segment)
  std::vector<std::string> remote;  // HOST:PORT of each shard served by xapian-tcpsrv; empty: local
  // Documents of its local shards an older reading than this release's read (schema.h kReading;
  // IndexReader::documents_read_before_repairs counts the same over the whole index).
  std::uint64_t older_reading = 0;
};
Result<std::vector<IndexSegment>> index_segments(const std::string& dir);

// One local shard (or small tier) of the index, checked by Xapian's own structural check (what
// xapian-check does: every table's B-tree, and the tables against one another).
struct ShardCheck {
  std::uint64_t segment = 1;  // the first archive id of its segment
  std::string shard;          // its directory, relative to the index folder
  bool small_tier = false;
  std::uint64_t errors = 0;   // 0: intact
  bool settled = true;        // false: written to during each of three checks, its faults unproven (not counted)
  std::string problem;        // what Xapian reported first (a few lines), or the error that stopped the check
  std::uint64_t gaps = 0;     // ids missing inside it (IndexSegment::gaps), which Xapian 1.4 cannot search whole
  std::uint64_t bytes = 0;
};
// Every local shard and small tier of the index, checked (`mailark verify --index`). Remote shards
// are their machine's to check and are left out. A shard that a running writer committed to, or that
// a merge replaced, while it was read is checked again (three tries), so that a check beside a
// running server reports only what stays damaged. Reads every block: about 0.2 s for the 47 MB index of
// the 21,903 Enron messages with a warm page cache (docs/BENCHMARKS.md "Checking the index").
// Tests: IndexCheck.ADamagedShardIsNamedAndAnIntactIndexPasses, IndexCheck.AShardWrittenWhileCheckedIsCheckedAgain.
Result<std::vector<ShardCheck>> check_index(const std::string& dir);

// Search across machines: a sealed segment's shards may be served by Xapian's own remote backend
// (xapian-tcpsrv, one per shard, over copies of the segment's shard directories). With endpoints
// (HOST:PORT, one per shard in the order of the segment's stub), the segment's stub names them
// ("remote HOST:PORT", Xapian's stub syntax) once each answers as the same database; without, it
// names the local shards again. Readers then open remote and local shards as one database; the
// writer never writes a sealed segment. Errors: kNotFound (no such segment, or no local copy to go
// back to), kInvalidArgument (not sealed, wrong number of endpoints, another database), kIo.
// Test: tests/e2e/test_segments.py test_sealed_segments_served_by_xapian_tcpsrv.
Status set_segment_remote(const std::string& dir, std::uint64_t first, const std::vector<std::string>& endpoints);

// Supplies a message's fields for phrase verification.
class FieldSource {
 public:
  virtual ~FieldSource() = default;
  virtual std::optional<IndexFields> load(std::uint64_t id) = 0;
  // Enough for phrases in header fields (from, to, cc, bcc, envelope recipients, subject): the body,
  // attachments and extracted text may be left empty, which makes a check of from:"kenneth lay" on a
  // long message far cheaper.
  virtual std::optional<IndexFields> load_headers(std::uint64_t id) { return load(id); }
  // Enough for phrases outside the header fields: subject, body, attachment and extracted text and
  // attachment names (for_each_text's unprefixed, extracted: and attachment: texts); addresses may be
  // left empty, which lets a plain text message be read without a MIME parser
  // (ArchiveFieldSource::load_text).
  virtual std::optional<IndexFields> load_text(std::uint64_t id) { return load(id); }
  // May load, load_headers and load_text run on several threads at once? Then a search reads the messages its
  // phrase checks need side by side (one thread a core), and reads its estimate's pair filters on a
  // second thread beside its walk; otherwise everything runs on the caller's thread.
  virtual bool concurrent() const { return false; }
};

// A phrase every result must hold is checked as the search walks its results, as far as the page
// asked for; when it has at most this many candidates the walk checks them all, for an exact total
// (test IndexDeferredPhrase.FewCandidatesGiveAnExactTotalOnAShortPage).
inline constexpr std::uint32_t kEagerPhraseChecks = 50;

// What one query may ask, so that no query (the web portal's and IMAP's users type them) holds a
// thread for long: Xapian's match of an OR grows with the square of its terms (2,000 words took 0.32 s
// at 21,903 messages, 5,000 took 2.06 s: docs/BENCHMARKS.md "The bounds of one query"), a phrase's
// check with the square of its words for a word the text repeats, and a wildcard of one letter is
// thousands of words. A query past a bound is refused
// with a clear error (kInvalidArgument), never cut short in silence (tests/index_test.cc
// IndexQueryBounds.*). SearchOptions::bounded says when they apply.
inline constexpr std::size_t kMaxQueryTerms = 1024;     // every word, field term, phrase word and word a wildcard stands for
inline constexpr std::size_t kMaxPhraseWords = 64;      // in the query's quoted phrases, all of them together
inline constexpr Xapian::termcount kMaxWildcardWords = 1000;  // words one wildcard (`contract*`) stands for

struct SearchOptions {
  std::size_t offset = 0;
  std::size_t limit = 20;
  // When set, only these archive ids (ascending) can match: a user's search in the web portal sees
  // that user's messages only. A filter inside Xapian's match, so total stays exact.
  std::shared_ptr<const std::vector<std::uint32_t>> only_ids;
  // Check every candidate of every phrase, so that the total is exact whatever it costs (counts for
  // eDiscovery, `mailark search --exact`).
  bool exact_total = false;
  // One hit for the records of the same message (custodians' copies, repeated deliveries of the same
  // bytes); the total counts messages. A query of content alone shows the earliest record (the others
  // carry Kcopy); one naming custodian:, rcpt:, direction:, verdict:, signature: or is: shows the
  // newest record that matches (Xapian's collapse on the content key). Engine::search sets it when
  // the archive holds any message twice.
  bool one_per_message = false;
  // Only the `part`-th (from 0) of `parts` parts of the index: each shard's documents cut into `parts`
  // runs of its own document ids. A caller that wants every match (an export: engine/export.h
  // export_matches) walks the parts, so it never holds more than one part's hits. An index with a
  // remote shard is one part: part 0 holds every match, the others none.
  std::uint32_t part = 0, parts = 1;
  // The query's bounds (kMaxQueryTerms, kMaxPhraseWords, kMaxWildcardWords) apply: to every search a
  // person types. Unset only for a whole made of searches each run within them when saved (a case's
  // searches OR'ed, with its custodians in each), run by an officer's act: a case's export and its
  // legal holds, which an old case's many searches must not stop (engine/export.cc export_matches,
  // engine/retention.cc held_ids).
  bool bounded = true;
  // A query ANDed with the one asked (as a filter: it adds no weight), outside the bounds: the scope
  // an officer gave a case (its custodians, a search's dates: engine/cases.h case_scope), which a
  // person's typed search in that case does not pay for (a case of 2,000 custodians is searched
  // like any other: test IndexQueryBounds.AScopeIsOutsideTheBounds). Empty: none.
  std::string scope;
};

// The parts a walk over every match of `documents` documents is cut into: about 32,768 documents a
// part, so what one part's search holds stays small whatever the archive's size (an export's memory:
// docs/BENCHMARKS.md "Flat to a million").
inline std::uint32_t parts_for(std::uint64_t documents) {
  constexpr std::uint64_t kDocumentsAPart = 32768;
  return static_cast<std::uint32_t>(documents / kDocumentsAPart > 0 ? documents / kDocumentsAPart : 1);
}

struct SearchResults {
  // The number of matching messages: exact, unless total_exact is false (a phrase with many candidates
  // is checked only as far as the page asked for; the total is then estimated from the share of the
  // checked candidates that held it). The page itself is always exact.
  std::uint64_t total = 0;
  bool total_exact = true;
  std::vector<Summary> hits;  // newest first
  std::uint64_t watermark = 0;  // the index covered archive records 1..watermark when searched
  // Documents of the index an older release read (documents_read_before_repairs): a word it wrote
  // otherwise may be missing from these results until `mailark reindex`.
  std::uint64_t older_reading = 0;
};

// The fields IMAP SEARCH asks about (RFC 9051 6.4.4: BODY, TEXT, SUBJECT, FROM, TO, CC, BCC).
enum class TextField { kBody, kText, kSubject, kFrom, kTo, kCc, kBcc };

// How the document ids of the index opened as one (every segment's shards) map to archive ids.
struct DocMap;

class IndexReader {
 public:
  // Opens every shard once (a search command used to open each shard three times over).
  // Errors: kNotFound when there is no index yet.
  static Result<std::unique_ptr<IndexReader>> open(const std::string& dir);
  ~IndexReader();
  IndexReader& operator=(IndexReader&&) = default;  // search takes a reader opened again

  // Errors: kInvalidArgument for a query that does not parse (with Xapian's message). A reader whose
  // revision the writer has discarded meanwhile (two commits since it opened) is opened again, at
  // the index as it is then, and the search run again (watermark() then says so too; below).
  Result<SearchResults> search(const std::string& query, SearchOptions options, FieldSource* fields);
  // Archive ids of the messages whose field holds every word of `text`, each word matched as the
  // start of an indexed word ("invo" finds "invoice"; IMAP asks for substrings, and an index of words
  // answers for word starts, as Dovecot's full-text search does). For address fields a whole address
  // or domain also matches exactly. Ascending. Text without words matches every message.
  Result<std::vector<std::uint64_t>> match_words(TextField field, const std::string& text);
  // The stored summaries of these archive ids, in order; nothing for an id the index does not hold
  // (yet) or holds in a remote segment (callers read those from the archive), nor for any when the
  // index cannot be read. attachment is set from the has:attachment term.
  std::vector<std::optional<Summary>> summaries(const std::vector<std::uint64_t>& ids);
  // The Message-IDs of these archive ids, in order ("" for an id the index does not hold, or whose
  // message has none): what an export's manifest names (engine/export.h). Remote shards are asked too.
  // Errors: kIo when the index cannot be read (an export then stops rather than write a manifest
  // without them).
  Result<std::vector<std::string>> message_ids(const std::vector<std::uint64_t>& ids);
  // Documents in the index (every shard), as of open().
  std::uint64_t documents() const;
  // Documents whose subject, names and attachment names were read by a release before the RFC 2047
  // repairs (schema::kMetaUnrepairedTo; remote shards not counted), as of open(): `mailark reindex`
  // reads them again.
  std::uint64_t documents_read_before_repairs() const { return unrepaired_; }
  // The last archive record every shard holds, as of open().
  std::uint64_t watermark() const { return watermark_; }
  // Records indexed as placeholders (is:unindexed): id and reason, at most `limit`, and their number.
  Result<std::pair<std::uint64_t, std::vector<std::pair<std::uint64_t, std::string>>>> unindexed(std::size_t limit);
  // Every method that reads the index (search, match_words, summaries, message_ids, unindexed) reads
  // it again when the writer's commits left this reader behind: Xapian keeps a reader's revision only
  // until the writer's second commit after it (a server commits every second), then throws
  // DatabaseModifiedError; the reader is opened again, at the index as it is then, and the read run
  // again, three times at most. Tests: IndexReaderRetry.*, IndexReaderLeftBehind.*.

 private:
  IndexReader() = default;
  // One try of open(); sets *vanished (when given) if a database the stub named could not be opened
  // or changed under it.
  static Result<std::unique_ptr<IndexReader>> open_once(const std::string& dir, bool* vanished);
  // Runs `read`; on DatabaseModifiedError opens this reader again and runs it again (three runs in
  // all); the last error, or the first when the index cannot be opened again, is thrown on.
  template <typename Read>
  auto retrying(Read read) -> decltype(read());
  Result<SearchResults> search_once(const std::string& query, SearchOptions options, FieldSource* fields);
  std::string dir_;
  std::unique_ptr<Xapian::Database> db_;
  std::vector<std::string> paths_;  // every shard's entry, in db_'s order (reopen)
  // The same shards as db_, opened again: for another thread (a Xapian database is not shared).
  Xapian::Database reopen() const;
  std::vector<std::string> shard_uuids_;  // in docid interleaving order
  std::vector<std::optional<Xapian::docid>> unpaired_to_;  // per shard, as shard_uuids_ (schema::kMetaUnpairedTo)
  std::vector<std::optional<Xapian::docid>> undated_to_;   // per shard, as shard_uuids_ (schema::kMetaUndatedTo)
  std::uint64_t unrepaired_ = 0;                            // documents_read_before_repairs
  std::uint64_t expired_ = 0;  // placeholders of expired records (build_expired_document), left out of every answer
  std::shared_ptr<const DocMap> map_;
  bool remote_ = false;  // some shard is served by xapian-tcpsrv (no PostingSource of ours runs there)
  std::uint64_t watermark_ = 0;
  std::shared_ptr<const PairWords> pairs_;  // null: the index has no pair terms
};

// Parses a date as the query syntax does: YYYY, YYYY-MM, YYYY-MM-DD or YYYYMMDD (UTC). Returns the first
// and last second of that period.
std::optional<std::pair<std::int64_t, std::int64_t>> parse_date_period(const std::string& text);

}  // namespace mailark::indexer
