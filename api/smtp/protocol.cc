#include "api/smtp/protocol.h"

#include <algorithm>
#include <cctype>

namespace mailark::smtp {
namespace {

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool valid_mailbox(std::string_view addr, bool allow_postmaster) {
  if (addr.empty() || addr.size() > 254) return false;
  bool quoted = false;
  for (char c : addr) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 32 || u == 127) return false;
    if (c == '"') quoted = !quoted;
    if (!quoted && (c == ' ' || c == '<' || c == '>' || c == '(' || c == ')' || c == ',' || c == ';')) return false;
  }
  if (quoted) return false;
  std::size_t at = addr.rfind('@');
  if (at == std::string_view::npos) {
    return allow_postmaster && upper(addr) == "POSTMASTER";
  }
  return at > 0 && at + 1 < addr.size() && addr.substr(at + 1).find('.') != 0;
}

}  // namespace

std::optional<std::pair<std::string, std::string>> parse_path(std::string_view text, bool allow_null) {
  text = trim(text);
  if (text.empty() || text.front() != '<') return std::nullopt;
  std::size_t close = text.find('>');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view inside = text.substr(1, close - 1);
  std::string_view rest = trim(text.substr(close + 1));
  if (inside.empty()) {
    if (!allow_null) return std::nullopt;
    return std::make_pair(std::string(), std::string(rest));
  }
  // An obsolete source route ("@a,@b:user@example.com") is accepted and ignored (RFC 5321 4.1.2).
  if (inside.front() == '@') {
    std::size_t colon = inside.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    inside = inside.substr(colon + 1);
  }
  if (!valid_mailbox(inside, /*allow_postmaster=*/!allow_null)) return std::nullopt;
  return std::make_pair(std::string(inside), std::string(rest));
}

Session::Session(ProtocolConfig config, Policy& policy)
    : config_(std::move(config)), policy_(policy), tls_(config_.tls_active) {}

std::string Session::greeting() const { return "220 " + config_.hostname + " ESMTP mailark\r\n"; }

void Session::reply(Output& out, int code, const std::string& text) {
  out.to_send += std::to_string(code) + " " + text + "\r\n";
}

void Session::error(Output& out, int code, const std::string& text) {
  reply(out, code, text);
  if (++errors_ >= config_.max_errors) close_with(out, "4.7.0 " + config_.hostname + " Too many errors, closing connection");
}

void Session::reset_transaction() {
  std::string helo = txn_.helo;
  txn_ = ReceivedMessage{};
  txn_.helo = std::move(helo);
  declared_size_ = 0;
  data_too_big_ = false;
  data_line_too_long_ = false;
}

Session::Output Session::receive(std::string_view bytes) {
  Output out;
  if (state_ == State::kClosed || state_ == State::kStartTls) return out;
  buffer_.append(bytes);
  process(out);
  return out;
}

void Session::process(Output& out) {
  while (state_ != State::kStoring && state_ != State::kStartTls && state_ != State::kClosed) {
    const bool in_data = state_ == State::kData;
    const std::size_t limit = in_data ? config_.max_line_bytes : config_.max_command_bytes;
    std::size_t nl = buffer_.find('\n');
    if (nl == std::string::npos) {
      if (buffer_.size() > limit) {
        // An over-long line: drop what we have, and the rest of it as it arrives. Memory stays bounded.
        buffer_.clear();
        if (!discarding_line_) {
          discarding_line_ = true;
          if (in_data) data_line_too_long_ = true;
          else error(out, 500, "5.5.2 Line too long");
        }
      }
      return;
    }
    std::string line = buffer_.substr(0, nl + 1);
    buffer_.erase(0, nl + 1);
    if (discarding_line_) {
      discarding_line_ = false;
      continue;
    }
    if (line.size() > limit) {
      if (in_data) {
        data_line_too_long_ = true;
      } else {
        error(out, 500, "5.5.2 Line too long");
      }
      continue;
    }
    if (in_data) {
      data_line(line, out);
    } else {
      std::string_view cmd(line);
      cmd.remove_suffix(1);
      if (!cmd.empty() && cmd.back() == '\r') cmd.remove_suffix(1);
      command(cmd, out);
    }
  }
}

void Session::data_line(std::string_view line, Output& out) {
  bool crlf = line.size() >= 2 && line[line.size() - 2] == '\r';
  std::string_view content = line.substr(0, line.size() - (crlf ? 2 : 1));
  // Only <CR><LF>.<CR><LF> ends the data: a dot line ending in a bare LF is content, so nobody can
  // smuggle a second message past a server that reads line ends differently.
  if (crlf && content == ".") {
    if (data_too_big_) {
      reply(out, 552, "5.3.4 Message exceeds the size limit of " + std::to_string(config_.max_message_bytes) + " bytes");
      reset_transaction();
      state_ = State::kReady;
    } else if (data_line_too_long_) {
      reply(out, 554, "5.6.0 Message has a line longer than " + std::to_string(config_.max_line_bytes) + " bytes");
      reset_transaction();
      state_ = State::kReady;
    } else {
      state_ = State::kStoring;
      out.message = std::move(txn_);
      txn_ = ReceivedMessage{};
      txn_.helo = out.message->helo;
    }
    return;
  }
  if (!crlf) txn_.bare_lf_seen = true;
  if (!content.empty() && content.front() == '.') content.remove_prefix(1);
  if (data_too_big_) return;
  if (txn_.data.size() + content.size() + 2 > config_.max_message_bytes) {
    data_too_big_ = true;
    txn_.data.clear();
    txn_.data.shrink_to_fit();
    return;
  }
  txn_.data.append(content);
  txn_.data.append("\r\n");
}

void Session::command(std::string_view line, Output& out) {
  // Control characters never belong in a command; UTF-8 only in SMTPUTF8 addresses (checked below).
  for (char c : line) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 32 && u != '\t') {
      error(out, 500, "5.5.2 Command contains invalid characters");
      return;
    }
  }
  std::size_t sp = line.find(' ');
  std::string verb = upper(line.substr(0, sp));
  std::string_view arg = sp == std::string_view::npos ? std::string_view() : trim(line.substr(sp + 1));

  if (verb == "EHLO" || verb == "HELO") {
    if (arg.empty()) return error(out, 501, "5.5.4 " + verb + " requires a domain or address");
    reset_transaction();
    txn_.helo = std::string(arg);
    have_helo_ = true;
    esmtp_ = verb == "EHLO";
    state_ = State::kReady;
    if (!esmtp_) return reply(out, 250, config_.hostname);
    std::vector<std::string> lines = {config_.hostname, "PIPELINING", "SIZE " + std::to_string(config_.max_message_bytes),
                                      "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"};
    if (config_.tls_available && !tls_) lines.push_back("STARTTLS");
    for (std::size_t i = 0; i < lines.size(); ++i) {
      out.to_send += "250" + std::string(i + 1 < lines.size() ? "-" : " ") + lines[i] + "\r\n";
    }
    return;
  }
  if (verb == "MAIL") {
    if (!have_helo_) return error(out, 503, "5.5.1 Send EHLO or HELO first");
    if (state_ == State::kMail) return error(out, 503, "5.5.1 Nested MAIL command");
    if (!iequals_prefix(arg, "FROM:")) return error(out, 501, "5.5.4 Syntax: MAIL FROM:<address>");
    auto path = parse_path(arg.substr(5), /*allow_null=*/true);
    if (!path) return error(out, 501, "5.1.7 Bad sender address syntax");
    ReceivedMessage fresh;
    fresh.helo = txn_.helo;
    std::size_t size = 0;
    std::string_view params = path->second;
    while (!params.empty()) {
      std::size_t end = params.find(' ');
      std::string p = upper(params.substr(0, end));
      params = end == std::string_view::npos ? std::string_view() : trim(params.substr(end));
      if (p.rfind("SIZE=", 0) == 0) {
        std::string digits = p.substr(5);
        if (digits.empty() || digits.size() > 15 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) {
          return error(out, 501, "5.5.4 Bad SIZE parameter");
        }
        size = std::stoull(digits);
        if (size > config_.max_message_bytes) {
          return error(out, 552, "5.3.4 Message size exceeds the limit of " + std::to_string(config_.max_message_bytes) + " bytes");
        }
      } else if (p == "BODY=8BITMIME") {
        fresh.body_8bitmime = true;
      } else if (p == "BODY=7BIT") {
      } else if (p == "SMTPUTF8") {
        fresh.smtputf8 = true;
      } else {
        return error(out, 555, "5.5.4 Unsupported MAIL parameter " + p.substr(0, 40));
      }
    }
    if (!fresh.smtputf8) {
      for (char c : path->first)
        if (static_cast<unsigned char>(c) >= 128) return error(out, 553, "5.6.7 Non-ASCII address needs SMTPUTF8");
    }
    if (auto rejected = policy_.check_sender(path->first)) return error(out, rejected->code, rejected->text);
    fresh.mail_from = path->first;
    txn_ = std::move(fresh);
    declared_size_ = size;
    state_ = State::kMail;
    return reply(out, 250, "2.1.0 Sender ok");
  }
  if (verb == "RCPT") {
    if (state_ != State::kMail) return error(out, 503, "5.5.1 Send MAIL first");
    if (!iequals_prefix(arg, "TO:")) return error(out, 501, "5.5.4 Syntax: RCPT TO:<address>");
    auto path = parse_path(arg.substr(3), /*allow_null=*/false);
    if (!path) return error(out, 501, "5.1.3 Bad recipient address syntax");
    if (!path->second.empty()) return error(out, 555, "5.5.4 Unsupported RCPT parameter");
    if (txn_.rcpt_to.size() >= config_.max_recipients) {
      return error(out, 452, "4.5.3 Too many recipients; send the rest in another message");
    }
    if (!txn_.smtputf8) {
      for (char c : path->first)
        if (static_cast<unsigned char>(c) >= 128) return error(out, 553, "5.6.7 Non-ASCII address needs SMTPUTF8");
    }
    if (auto rejected = policy_.check_recipient(path->first)) return error(out, rejected->code, rejected->text);
    txn_.rcpt_to.push_back(path->first);
    return reply(out, 250, "2.1.5 Recipient ok");
  }
  if (verb == "DATA") {
    if (!arg.empty()) return error(out, 501, "5.5.4 DATA takes no argument");
    if (state_ != State::kMail) return error(out, 503, "5.5.1 Send MAIL first");
    if (txn_.rcpt_to.empty()) return error(out, 554, "5.5.1 No valid recipients");
    state_ = State::kData;
    return reply(out, 354, "End data with <CR><LF>.<CR><LF>");
  }
  if (verb == "RSET") {
    reset_transaction();
    state_ = have_helo_ ? State::kReady : State::kGreeted;
    return reply(out, 250, "2.0.0 Ok");
  }
  if (verb == "NOOP") return reply(out, 250, "2.0.0 Ok");
  if (verb == "QUIT") {
    reply(out, 221, "2.0.0 Bye");
    out.close = true;
    state_ = State::kClosed;
    return;
  }
  if (verb == "VRFY") return reply(out, 252, "2.5.0 Cannot VRFY user; send mail and see");
  if (verb == "HELP") return reply(out, 214, "2.0.0 See RFC 5321");
  if (verb == "STARTTLS") {
    if (!config_.tls_available) return error(out, 502, "5.5.1 STARTTLS not available");
    if (tls_) return error(out, 503, "5.5.1 TLS already active");
    if (!arg.empty()) return error(out, 501, "5.5.4 STARTTLS takes no argument");
    reply(out, 220, "2.0.0 Ready to start TLS");
    // Anything pipelined after STARTTLS arrived in plain text: it must not be obeyed after the
    // handshake (CVE-2011-0411).
    buffer_.clear();
    state_ = State::kStartTls;
    out.start_tls = true;
    return;
  }
  error(out, 500, "5.5.2 Command not recognized");
}

Session::Output Session::message_stored(const std::string& queue_id) {
  Output out;
  if (state_ != State::kStoring) return out;
  reply(out, 250, "2.0.0 Ok: queued as " + queue_id);
  reset_transaction();
  state_ = State::kReady;
  process(out);
  return out;
}

Session::Output Session::message_rejected(const Reply& r) {
  Output out;
  if (state_ != State::kStoring) return out;
  reply(out, r.code, r.text);
  reset_transaction();
  state_ = State::kReady;
  process(out);
  return out;
}

Session::Output Session::tls_started() {
  Output out;
  tls_ = true;
  have_helo_ = false;
  esmtp_ = false;
  buffer_.clear();
  reset_transaction();
  txn_.helo.clear();
  state_ = State::kGreeted;
  return out;
}

void Session::close_with(Output& out, const std::string& text) {
  reply(out, 421, text);
  out.close = true;
  state_ = State::kClosed;
}

Session::Output Session::timed_out() {
  Output out;
  close_with(out, "4.4.2 " + config_.hostname + " Timeout, closing connection");
  return out;
}

Session::Output Session::shutting_down() {
  Output out;
  close_with(out, "4.3.2 " + config_.hostname + " Service shutting down");
  return out;
}

}  // namespace mailark::smtp
