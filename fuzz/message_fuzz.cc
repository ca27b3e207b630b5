// Fuzzes message parsing (GMime, engine/message.cc) with index-field extraction and document building:
// what every archived message goes through, whatever its bytes; parse_plain_text against it; and the
// 7-bit conversion delivery makes for a server without 8BITMIME.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/index_fields.h"
#include "engine/message.h"
#include "indexer/index.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const mailark::Limits limits = [] {
    mailark::Limits l;
    l.max_mime_parts = 200;
    l.max_mime_depth = 20;
    return l;
  }();
  std::string_view raw(reinterpret_cast<const char*>(data), size);
  (void)mailark::not_mail_reason(raw);
  if (auto v = mailark::header_field(raw, "X-Mailark-Probe"); v && v->size() > size) __builtin_trap();
  // The declared charset is a plain token (what the readers hand to iconv) of at most 40 bytes
  const std::string charset = mailark::declared_charset(raw);
  if (charset.size() > 40) __builtin_trap();
  for (char c : charset)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == ':')) __builtin_trap();
  mailark::ParsedMessage m = mailark::parse_message_or_flag(raw, limits);
  // A phrase check on a header field parses the header block only: it must see the same header
  // fields the index was built from, whatever the bytes.
  mailark::ParsedMessage h = mailark::parse_message_or_flag(raw, limits, /*headers_only=*/true);
  auto same = [](const std::vector<mailark::Address>& a, const std::vector<mailark::Address>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (a[i].name != b[i].name || a[i].addr != b[i].addr) return false;
    return true;
  };
  if (h.subject != m.subject || h.message_id != m.message_id || !same(h.from, m.from) || !same(h.to, m.to) ||
      !same(h.cc, m.cc) || !same(h.bcc, m.bcc) || !h.body_text.empty())
    __builtin_trap();
  // A message phrase checks read without GMime gives what GMime gives (the subject and body a phrase
  // is checked against), and nothing a phrase could be checked against elsewhere.
  if (auto plain = mailark::parse_plain_text(raw, limits)) {
    if (plain->subject != m.subject || plain->body_text != m.body_text || !m.attachment_text.empty() ||
        m.has_attachment())
      __builtin_trap();
  }
  // The 7-bit conversion for a server without 8BITMIME (delivery): only for an 8-bit body, and what it
  // writes parses again.
  if (auto seven = mailark::seven_bit_message(raw)) {
    if (!mailark::has_eight_bit_body(raw)) __builtin_trap();
    (void)mailark::parse_message_or_flag(*seven, limits);
  }
  mailark::ArchiveRecord r;
  r.seq = 1;
  r.raw_size = size;
  Xapian::Document doc = mailark::indexer::build_document(mailark::index_fields(m, r));
  (void)doc.termlist_count();
  return 0;
}
