// Fuzzes both ends of an import handed to a running server (engine/handoff.h): the server's reader
// of what `mailark import` sends over DATA/import.sock (bounded fields, checked custodian and owner),
// the pipeline item it makes of each message, and the import's reader of the server's replies. The
// first byte picks the end; the rest is the stream.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/handoff.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::FILE* in = fmemopen(stream.empty() ? nullptr : stream.data(), stream.size(), "rb");
  if (!in) return 0;
  if (data[0] % 2 == 0) {
    mailark::Limits limits;
    limits.max_message_bytes = 1u << 14;
    for (int i = 0; i < 64; ++i) {
      mailark::HandoffMessage m;
      std::string why;
      const auto got = mailark::read_handoff_request(in, limits, m, why);
      if (got != mailark::HandoffRequest::kMessage) {
        if (got == mailark::HandoffRequest::kBad && why.empty()) std::abort();  // a refusal always says why
        break;
      }
      if (m.raw.size() > limits.max_message_bytes + 1 || m.folder.size() > 1000 || m.origin.size() > 4096) std::abort();
      // What the server read, sent again, reads back the same.
      const std::string again = mailark::encode_handoff_message(m);
      std::FILE* re = fmemopen(const_cast<char*>(again.data()), again.size(), "rb");
      mailark::HandoffMessage back;
      std::string why2;
      if (mailark::read_handoff_request(re, limits, back, why2) != mailark::HandoffRequest::kMessage) std::abort();
      std::fclose(re);
      if (back.raw != m.raw || back.origin != m.origin || back.custodian != m.custodian || back.owner != m.owner ||
          back.folder != m.folder || back.received_at != m.received_at || back.mail_from != m.mail_from)
        std::abort();
      mailark::IngestItem item = mailark::handoff_item(std::move(m));
      if (item.envelope.connector != "import" || item.on_infected == mailark::ScanAction::kDeliver) std::abort();
    }
  } else {
    for (int i = 0; i < 64; ++i) {
      mailark::HandoffReply r;
      std::string why;
      if (!mailark::read_handoff_reply(in, r, why)) {
        if (why.empty()) std::abort();
        break;
      }
      if (r.kind == mailark::HandoffReply::kResult &&
          static_cast<int>(r.result.outcome) > static_cast<int>(mailark::IngestOutcome::kDeferred))
        std::abort();
    }
  }
  std::fclose(in);
  return 0;
}
