#include "engine/index_fields.h"

namespace mailark {

indexer::IndexFields index_fields(const ParsedMessage& m, const ArchiveRecord& r) {
  indexer::IndexFields f;
  f.id = r.seq;
  f.message_id = m.message_id;
  f.received = r.envelope.received_at;
  f.date = m.date.value_or(r.envelope.received_at);
  f.size = r.raw_size;
  f.from = join_addresses(m.from);
  f.to = join_addresses(m.to);
  f.cc = join_addresses(m.cc);
  f.bcc = join_addresses(m.bcc);
  f.envelope_rcpts = r.envelope.rcpt_to;
  f.subject = m.subject;
  f.body = m.body_text;
  f.attachment_text = m.attachment_text;
  for (const auto& p : m.parts) {
    if (!p.is_attachment) continue;
    f.attachments.push_back({p.filename, p.content_type, p.size});
  }
  f.direction = direction_name(r.envelope.direction);
  f.verdict = scanner::verdict_name(r.verdict.kind);
  f.signatures = r.verdict.signatures;
  f.malformed = (r.flags & kFlagMalformed) != 0;
  f.quarantined = (r.flags & kFlagQuarantined) != 0;
  return f;
}

}  // namespace mailark
