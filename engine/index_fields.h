// Turns the message model and an archive record into the plain fields the indexer takes.
#pragma once

#include <xapian.h>

#include "common/limits.h"
#include "engine/archive.h"
#include "engine/message.h"
#include "engine/record.h"
#include "indexer/fields.h"

namespace mailark {

// record.seq may be 0 when the record is not yet appended (the id is the Xapian docid).
indexer::IndexFields index_fields(const ParsedMessage& message, const ArchiveRecord& record);

// The index document of an archived record, from its stored bytes. A record whose bytes cannot be
// read (archive damage, which `verify` names) gets a placeholder document with the reason, found by
// is:unindexed: never skipped silently.
Xapian::Document document_for_record(const ArchiveSnapshot& snapshot, const ArchiveRecord& record,
                                     const Limits& limits);

}  // namespace mailark
