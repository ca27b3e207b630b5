// Fuzzes the SMTP protocol core (api/smtp/protocol.cc): a whole session's bytes, fed in chunks whose
// sizes come from the input, with recipient verification, storage and STARTTLS answered both ways.
// Checks what must hold for any input: a stored message has only CRLF line ends, never more than the
// size limit, and the session never buffers without bound. Content is spilled (ProtocolConfig::
// spill_bytes) in half the inputs: the spills come in order and the message they make is checked whole.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "api/smtp/protocol.h"

namespace {

using namespace mailark::smtp;

class FuzzPolicy : public Policy {
 public:
  std::optional<Reply> check_sender(const Path& p) override {
    (void)routing_in_path(p);
    return std::nullopt;
  }
  RecipientDecision check_recipient(const Path& p) override {
    if (!routing_in_path(p).empty()) return RecipientDecision::reject({554, "5.7.1 routing"});
    if (p.domain.size() % 3 == 0) return RecipientDecision::verify();
    if (p.domain.size() % 3 == 1) return RecipientDecision::reject({550, "5.1.1 unknown"});
    return RecipientDecision::accept();
  }
  // A disk short of room for some declared sizes (452 at MAIL).
  std::optional<Reply> check_storage(std::uint64_t declared) override {
    if (declared % 7 == 3) return Reply{452, "4.3.1 Insufficient system storage"};
    return std::nullopt;
  }
};

void check_stored(const ReceivedMessage& m, std::size_t max_bytes) {
  if (m.data.size() > max_bytes) std::abort();
  for (std::size_t i = 0; i < m.data.size(); ++i) {
    if (m.data[i] == '\r' && (i + 1 >= m.data.size() || m.data[i + 1] != '\n')) std::abort();
    if (m.data[i] == '\n' && (i == 0 || m.data[i - 1] != '\r')) std::abort();
  }
  // What delivery sends onward must end only where this message ends.
  std::string stuffed = dot_stuff(m.data);
  if (stuffed.find("\r\n.\r\n") != stuffed.size() - 5 && !(stuffed == ".\r\n")) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  ProtocolConfig cfg;
  cfg.max_command_bytes = 512 + data[0] % 64;
  cfg.max_line_bytes = 100 + data[0];
  cfg.max_message_bytes = 2000;
  cfg.max_recipients = 5;
  cfg.max_errors = 50;
  cfg.tls_available = data[1] & 1;
  cfg.bare_newline = (data[1] & 2) ? BareNewline::kNormalize : BareNewline::kReject;
  const bool accept_all = data[1] & 4;
  if (data[1] & 8) cfg.spill_bytes = 1 + data[0] % 200;
  std::string spool;  // what was spilled of the message in DATA, as the server keeps it in a file
  FuzzPolicy policy;
  Session s(cfg, policy);
  std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);
  std::size_t pos = 0, turn = 0;
  while (pos < in.size()) {
    std::size_t chunk = 1 + static_cast<unsigned char>(in[pos]) % 37;
    Session::Output out = s.receive(in.substr(pos, chunk));
    pos += chunk;
    for (int guard = 0; guard < 100000; ++guard) {
      if (!out.spill.empty()) {
        if (cfg.spill_bytes == 0 || out.spill.size() < cfg.spill_bytes) std::abort();
        if (out.spill_at == 0) spool.clear();
        if (out.spill_at != spool.size()) std::abort();
        spool += out.spill;
        out.spill.clear();
      }
      if (out.close) return 0;
      if (out.start_tls) {
        out = s.tls_started();
        continue;
      }
      if (out.verify) {
        out = s.recipient_verified((accept_all || ++turn % 2) ? std::nullopt : std::optional<Reply>(Reply{550, "no"}));
        continue;
      }
      if (out.message) {
        if (out.message->spilled != (out.message->spilled ? spool.size() : 0)) std::abort();
        out.message->data = spool.substr(0, out.message->spilled) + out.message->data;
        spool.clear();
        check_stored(*out.message, cfg.max_message_bytes);
        out = (accept_all || ++turn % 3) ? s.message_stored("Q") : s.message_rejected({451, "4.3.0 later"});
        continue;
      }
      break;
    }
  }
  (void)s.timed_out();
  return 0;
}
