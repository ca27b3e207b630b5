#include "api/smtp/reply.h"

#include <algorithm>

#include "common/numbers.h"

namespace mailark::smtp {

void ReplyReader::reset() {
  buffer_.clear();
  scan_ = pending_ = searched_ = 0;
  lines_.clear();
  last_lines_.clear();
  failed_.reset();
}

std::optional<ClientReply> ReplyReader::fail(std::string why) {
  failed_ = ClientReply{0, std::move(why)};
  buffer_.clear();
  scan_ = searched_ = 0;
  lines_.clear();
  return failed_;
}

std::optional<ClientReply> ReplyReader::next() {
  if (failed_) return failed_;
  while (true) {
    // The search goes on where the last one ended (less one byte: a CR there may have its LF now), so a
    // reply that comes a few bytes at a time is not searched again from its start each time.
    const std::size_t nl = buffer_.find("\r\n", std::max(scan_, searched_));
    if (nl == std::string::npos) {
      searched_ = buffer_.empty() ? 0 : buffer_.size() - 1;
      // The line not yet ended counts too: a reply that never ends its line is as long as one that
      // never ends.
      if (pending_ + (buffer_.size() - scan_) > kMaxReplyBytes) return fail("reply too long");
      if (scan_ > 0) {
        buffer_.erase(0, scan_);
        searched_ = searched_ > scan_ ? searched_ - scan_ : 0;
        scan_ = 0;
      }
      return std::nullopt;
    }
    std::string line = buffer_.substr(scan_, nl - scan_);
    scan_ = nl + 2;
    pending_ += line.size() + 2;
    if (pending_ > kMaxReplyBytes) return fail("reply too long");
    // A server's reply goes into logs, the queue and DSNs: a control byte in it (a bare LF that would
    // forge a log line or break a DSN's body, an ESC for the terminal of whoever reads them) is '?'.
    // Test: test_delivery.py test_control_bytes_in_a_servers_reply_are_neutralised.
    for (char& c : line)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = '?';
    const auto code = line.size() >= 3 ? parse_decimal(std::string_view(line).substr(0, 3)) : std::nullopt;
    if (!code || line[0] < '2' || line[0] > '5' || (line.size() > 3 && line[3] != ' ' && line[3] != '-'))
      return fail("malformed reply: " + line.substr(0, 100));
    lines_.push_back(line.size() > 4 ? line.substr(4) : "");
    if (line.size() == 3 || line[3] == ' ') {
      ClientReply reply;
      reply.code = static_cast<int>(*code);
      for (std::size_t i = 0; i < lines_.size(); ++i) reply.text += (i ? "; " : "") + lines_[i];
      last_lines_ = std::move(lines_);
      lines_.clear();
      pending_ = 0;
      return reply;
    }
  }
}

}  // namespace mailark::smtp
