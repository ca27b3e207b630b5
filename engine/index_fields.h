// Turns the message model and an archive record into the plain fields the indexer takes.
#pragma once

#include "engine/message.h"
#include "engine/record.h"
#include "indexer/fields.h"

namespace mailark {

// record.seq may be 0 when the record is not yet appended (the id is the Xapian docid).
indexer::IndexFields index_fields(const ParsedMessage& message, const ArchiveRecord& record);

}  // namespace mailark
