// Fuzzes the decoders of every stored value: archive records, blobs, queue entries, quarantine
// entries and the texts an index document keeps (indexer::decode_kept_texts). A damaged or hostile
// value must be refused with an error, never read out of bounds; what decodes, encoded again, must
// decode to the same thing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "engine/quarantine.h"
#include "engine/queue.h"
#include "engine/record.h"
#include "indexer/index.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string_view v(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0: {
      auto r = mailark::decode_record(7, v);
      if (r) {
        mailark::ArchiveRecord copy = *r;
        std::string once = mailark::encode_record(copy);
        auto back = mailark::decode_record(7, once);
        if (!back) std::abort();
        mailark::ArchiveRecord copy2 = *back;
        if (mailark::encode_record(copy2) != once) std::abort();
      }
      break;
    }
    case 1: {
      auto b = mailark::decode_blob(v);
      if (b && b->frame.size() > v.size()) std::abort();
      break;
    }
    case 2: {
      auto e = mailark::decode_queue_entry(7, v);
      if (e) {
        std::string once = mailark::encode_queue_entry(*e);
        auto back = mailark::decode_queue_entry(7, once);
        if (!back || mailark::encode_queue_entry(*back) != once) std::abort();
      }
      break;
    }
    case 3: {
      auto q = mailark::decode_quarantine_entry(7, v);
      if (q) {
        std::string once = mailark::encode_quarantine_entry(*q);
        auto back = mailark::decode_quarantine_entry(7, once);
        if (!back || mailark::encode_quarantine_entry(*back) != once) std::abort();
      }
      break;
    }
    case 4: {
      auto t = mailark::indexer::decode_kept_texts(v, 1u << 20);
      if (t) {
        std::string once = mailark::indexer::encode_kept_texts(*t);
        if (once.empty()) break;  // past the cap: never kept
        auto back = mailark::indexer::decode_kept_texts(once, 1u << 20);
        if (!back || back->subject != t->subject || back->body != t->body || back->extracted_text != t->extracted_text ||
            back->attachment_text != t->attachment_text || back->attachments.size() != t->attachments.size())
          std::abort();
        for (std::size_t i = 0; i < t->attachments.size(); ++i)
          if (back->attachments[i].name != t->attachments[i].name) std::abort();
      }
      break;
    }
  }
  return 0;
}
