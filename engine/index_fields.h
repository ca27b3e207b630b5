// Turns the message model and an archive record into the plain fields the indexer takes.
#pragma once

#include <xapian.h>

#include "common/limits.h"
#include "engine/archive.h"
#include "engine/message.h"
#include "engine/record.h"
#include "indexer/fields.h"
#include "indexer/index.h"

namespace mailark {

// record.seq may be 0 when the record is not yet appended (the id is the Xapian docid).
indexer::IndexFields index_fields(const ParsedMessage& message, const ArchiveRecord& record);

// index_fields for the record's document, from its bytes `raw` too: the index keeps the texts of a
// message that only a MIME parser can read (parse_plain_text gives nothing), so that a phrase check
// of it needs neither the archive nor GMime (indexer::IndexFields::keep_texts). Test:
// Engine.TextsOfMessagesThatNeedAMimeParserAreKeptInTheIndex, CorpusTest.KeptTextsAreWhatTheArchiveGives.
indexer::IndexFields document_fields(const ParsedMessage& message, const ArchiveRecord& record, std::string_view raw,
                                     const Limits& limits);

// The index document of an archived record, from its stored bytes. A record whose bytes cannot be
// read (archive damage, which `verify` names) gets a placeholder document with the reason, found by
// is:unindexed: never skipped silently.
// `pairs`: the index's pair words (IndexWriter::pair_words), or null.
Xapian::Document document_for_record(const ArchiveSnapshot& snapshot, const ArchiveRecord& record,
                                     const Limits& limits, const indexer::PairWords* pairs);

// The index document of archive record `id`, read in `snapshot`: document_for_record, or a
// placeholder saying why when the record does not decode.
Xapian::Document document_for_id(const ArchiveSnapshot& snapshot, std::uint64_t id, const Limits& limits,
                                 const indexer::PairWords* pairs);

// Gives the documents of one shard that were built before the index chose its pair words their pair
// terms, each built again from the archive (IndexWriter::pair_unpaired): once per index, after the
// commit that chose the words, so that a phrase of two pair words never reads the archive. Nothing
// to do costs nothing. On the shard's thread, with nothing uncommitted. Errors: the index's (the
// shard should then be reopened, as after a failed commit).
Status pair_unpaired_documents(const Archive& archive, indexer::IndexWriter& index, unsigned shard,
                               const Limits& limits);

// Phrase checks for a search outside the Engine (the web portal, on its pool threads): a message's
// fields read from the archive, as the index built them. Thread safe as the Archive is.
class ArchiveFieldSource : public indexer::FieldSource {
 public:
  ArchiveFieldSource(const Archive& archive, Limits limits) : archive_(archive), limits_(limits) {}
  std::optional<indexer::IndexFields> load(std::uint64_t id) override;
  std::optional<indexer::IndexFields> load_headers(std::uint64_t id) override;
  // A plain text message (parse_plain_text) gives its subject and body without GMime; any other is
  // parsed whole.
  std::optional<indexer::IndexFields> load_text(std::uint64_t id) override;
  bool concurrent() const override { return true; }

 private:
  enum class Part { kWhole, kHeaders, kText };
  std::optional<indexer::IndexFields> read(std::uint64_t id, Part part);
  const Archive& archive_;
  Limits limits_;
};

}  // namespace mailark
