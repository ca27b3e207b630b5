#include "engine/index_fields.h"

#include "indexer/index.h"

namespace mailark {

indexer::IndexFields index_fields(const ParsedMessage& m, const ArchiveRecord& r) {
  indexer::IndexFields f;
  f.id = r.seq;
  f.message_id = m.message_id;
  f.received = r.envelope.received_at;
  f.date = m.date.value_or(r.envelope.received_at);
  f.size = r.raw_size;
  auto convert = [](const std::vector<Address>& list) {
    std::vector<indexer::IndexedAddress> out;
    out.reserve(list.size());
    for (const auto& a : list) out.push_back({a.name, a.addr});
    return out;
  };
  f.from = convert(m.from);
  f.to = convert(m.to);
  f.cc = convert(m.cc);
  f.bcc = convert(m.bcc);
  f.envelope_rcpts = r.envelope.rcpt_to;
  f.subject = m.subject;
  f.body = m.body_text;
  f.attachment_text = m.attachment_text;
  f.extracted_text = m.extracted_text;
  for (const auto& p : m.parts) {
    if (!p.is_attachment) continue;
    f.attachments.push_back({p.filename, p.content_type, p.size});
  }
  f.direction = direction_name(r.envelope.direction);
  f.verdict = scanner::verdict_name(r.verdict.kind);
  f.signatures = r.verdict.signatures;
  f.malformed = (r.flags & kFlagMalformed) != 0;
  f.quarantined = (r.flags & kFlagQuarantined) != 0;
  f.custodians = custodians_of(r);
  f.content_key.assign(reinterpret_cast<const char*>(r.content_sha256.data()), r.content_sha256.size());
  return f;
}

indexer::IndexFields document_fields(const ParsedMessage& message, const ArchiveRecord& record, std::string_view raw,
                                     const Limits& limits) {
  indexer::IndexFields f = index_fields(message, record);
  f.keep_texts = !parse_plain_text(raw, limits).has_value();
  return f;
}

Xapian::Document document_for_record(const ArchiveSnapshot& snapshot, const ArchiveRecord& record,
                                     const Limits& limits, const indexer::PairWords* pairs) {
  auto raw = snapshot.raw(record);
  if (!raw) return indexer::build_unindexed_document(record.seq, raw.error().context);
  ParsedMessage msg = parse_message_or_flag(*raw, limits, /*headers_only=*/false, /*extract_documents=*/true);
  indexer::IndexFields f = document_fields(msg, record, *raw, limits);
  // A copy: an earlier record holds these bytes (what the append said when it wrote this one).
  if (auto ids = snapshot.copies(record.content_sha256); ids && !ids->empty() && ids->front() < record.seq) f.copy = true;
  return indexer::build_document(f, pairs);
}

Xapian::Document document_for_id(const ArchiveSnapshot& snapshot, std::uint64_t id, const Limits& limits,
                                 const indexer::PairWords* pairs) {
  auto rec = snapshot.record(id);
  if (!rec) return indexer::build_unindexed_document(id, rec.error().context);
  return document_for_record(snapshot, *rec, limits, pairs);
}

Status pair_unpaired_documents(const Archive& archive, indexer::IndexWriter& index, unsigned shard,
                               const Limits& limits) {
  const auto pairs = index.pair_words();
  if (!pairs || !index.has_unpaired(shard)) return ok_status();
  MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
  auto replaced = index.pair_unpaired(
      shard, [&](std::uint64_t id) { return document_for_id(*snap, id, limits, pairs.get()); });
  if (!replaced) return replaced.error();
  return ok_status();
}

std::optional<indexer::IndexFields> ArchiveFieldSource::read(std::uint64_t id, Part part) {
  // One snapshot for both reads: one read transaction and one look at the segments table.
  auto snap = archive_.snapshot();
  if (!snap) return std::nullopt;
  auto rec = (*snap)->record(id);
  if (!rec) return std::nullopt;
  auto raw = (*snap)->raw(*rec);
  if (!raw) return std::nullopt;
  if (part == Part::kText) {
    if (auto plain = parse_plain_text(*raw, limits_)) return index_fields(*plain, *rec);
  }
  // The fields as the index built them: the attachments' text too (a phrase may be in a PDF).
  const bool headers_only = part == Part::kHeaders;
  return index_fields(parse_message_or_flag(*raw, limits_, headers_only, /*extract_documents=*/!headers_only), *rec);
}

std::optional<indexer::IndexFields> ArchiveFieldSource::load(std::uint64_t id) { return read(id, Part::kWhole); }

std::optional<indexer::IndexFields> ArchiveFieldSource::load_headers(std::uint64_t id) {
  return read(id, Part::kHeaders);
}

std::optional<indexer::IndexFields> ArchiveFieldSource::load_text(std::uint64_t id) { return read(id, Part::kText); }

}  // namespace mailark
