#include "api/smtp/protocol.h"

#include <algorithm>
#include <cctype>

#include "common/ascii.h"
#include "common/base64.h"
#include "common/numbers.h"

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

bool is_utf8_byte(unsigned char c) { return c >= 0x80; }  // SMTPUTF8 is checked by the caller

// The value of MAIL's AUTH parameter (RFC 4954 5): "<>" or an xtext (RFC 3461 4): the printable
// ASCII but "+" and "=", and "+" with two upper-case hex digits for any other byte.
bool is_auth_parameter_value(std::string_view v) {
  if (v == "<>") return true;
  if (v.empty()) return false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c == '+') {
      auto hex = [](char h) { return (h >= '0' && h <= '9') || (h >= 'A' && h <= 'F'); };
      if (i + 2 >= v.size() || !hex(v[i + 1]) || !hex(v[i + 2])) return false;
      i += 2;
    } else if (c < '!' || c > '~' || c == '=') {
      return false;
    }
  }
  return true;
}

// atext (RFC 5322 3.2.3), and UTF-8 for SMTPUTF8 addresses (RFC 6531).
bool is_atext(unsigned char c) {
  return std::isalnum(c) || std::string_view("!#$%&'*+-/=?^_`{|}~").find(static_cast<char>(c)) != std::string_view::npos ||
         is_utf8_byte(c);
}

// A domain: labels of letters, digits, '-' and '_' (seen in real host names), UTF-8 (IDN) allowed,
// separated by single dots; or an address literal "[...]".
bool valid_domain(std::string_view d) {
  if (d.empty() || d.size() > 255) return false;
  if (d.front() == '[') {
    if (d.back() != ']' || d.size() < 3) return false;
    for (char c : d.substr(1, d.size() - 2)) {
      unsigned char u = static_cast<unsigned char>(c);
      if (u < 33 || u > 126 || c == '[' || c == ']' || c == '\\') return false;
    }
    return true;
  }
  std::size_t label = 0;
  for (char c : d) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
    } else if (std::isalnum(u) || c == '-' || c == '_' || is_utf8_byte(u)) {
      if (++label > 63) return false;
    } else {
      return false;
    }
  }
  return label > 0;
}

// Reads a local part at the start of s: a quoted-string or a dot-string. Returns its length, or 0.
std::size_t local_part_length(std::string_view s, bool& quoted) {
  quoted = !s.empty() && s.front() == '"';
  if (quoted) {
    for (std::size_t i = 1; i < s.size(); ++i) {
      unsigned char u = static_cast<unsigned char>(s[i]);
      if (s[i] == '\\') {
        if (i + 1 >= s.size()) return 0;
        unsigned char next = static_cast<unsigned char>(s[i + 1]);
        if (next < 32 || next == 127) return 0;
        ++i;
      } else if (s[i] == '"') {
        return i + 1 >= 3 ? i + 1 : 0;  // "" is not a local part
      } else if (u < 32 || u == 127) {
        return 0;
      }
    }
    return 0;
  }
  std::size_t i = 0;
  // Dots are taken leniently (leading, trailing or doubled dots occur in real addresses).
  while (i < s.size() && (is_atext(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  return i;
}

}  // namespace

std::optional<Path> parse_path(std::string_view text, bool allow_null) {
  text = trim(text);
  if (!text.empty() && text.front() != '<') {
    // A bare address ("MAIL FROM: a@b.example", as scanners and scripts send it): taken as if in
    // angle brackets, as Postfix (strict_rfc821_envelopes = no) and Exchange take it; the address is
    // checked the same way. Not for quoted local parts, whose spaces would be ambiguous.
    std::size_t end = text.find(' ');
    std::string_view bare = text.substr(0, end);
    if (bare.find_first_of("<>\"") != std::string_view::npos) return std::nullopt;
    std::string wrapped = "<" + std::string(bare) + ">";
    if (end != std::string_view::npos) wrapped += std::string(text.substr(end));
    return parse_path(wrapped, allow_null);
  }
  if (text.empty()) return std::nullopt;
  Path p;
  std::string_view inside = text.substr(1);
  // Source route: "@a,@b:" (RFC 5321 4.1.2, obsolete, recorded so a listener can refuse it).
  if (!inside.empty() && inside.front() == '@') {
    std::size_t colon = inside.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::string_view route = inside.substr(0, colon);
    std::size_t pos = 0;
    while (pos < route.size()) {
      if (route[pos] != '@') return std::nullopt;
      std::size_t comma = route.find(',', pos);
      std::string_view domain =
          route.substr(pos + 1, comma == std::string_view::npos ? std::string_view::npos : comma - pos - 1);
      if (!valid_domain(domain)) return std::nullopt;
      pos = comma == std::string_view::npos ? route.size() : comma + 1;
    }
    p.source_route = std::string(route);
    inside = inside.substr(colon + 1);
  }
  if (!inside.empty() && inside.front() == '>') {
    if (!allow_null || !p.source_route.empty()) return std::nullopt;
    if (inside.size() > 1 && inside[1] != ' ') return std::nullopt;  // "<>X" is not a path
    p.params = std::string(trim(inside.substr(1)));
    return p;
  }
  bool quoted = false;
  std::size_t local = local_part_length(inside, quoted);
  if (local == 0) return std::nullopt;
  p.local_part = std::string(inside.substr(0, local));
  p.quoted_local = quoted;
  std::string_view rest = inside.substr(local);
  if (!rest.empty() && rest.front() == '@') {
    std::size_t close = rest.find('>');
    if (close == std::string_view::npos) return std::nullopt;
    std::string_view domain = rest.substr(1, close - 1);
    if (!valid_domain(domain)) return std::nullopt;
    p.domain = std::string(domain);
    rest = rest.substr(close);
  } else if (allow_null || quoted || ascii_upper(p.local_part) != "POSTMASTER" || !p.source_route.empty()) {
    return std::nullopt;  // only RCPT TO:<Postmaster> may omit the domain (RFC 5321 4.1.1.3)
  }
  if (rest.empty() || rest.front() != '>') return std::nullopt;
  p.address = p.domain.empty() ? p.local_part : p.local_part + "@" + p.domain;
  if (p.address.size() > 254) return std::nullopt;
  std::string_view params = rest.substr(1);
  if (!params.empty() && params.front() != ' ') return std::nullopt;  // "<a@b>X" is not a path
  p.params = std::string(trim(params));
  return p;
}

std::string routing_in_path(const Path& path) {
  if (!path.source_route.empty()) return "a source route";
  for (char c : {'%', '!', '@'}) {
    if (path.local_part.find(c) != std::string::npos) return std::string("'") + c + "' in the local part";
  }
  return {};
}

std::string dot_stuff(const std::string& message) {
  std::string out;
  out.reserve(message.size() + message.size() / 50 + 8);
  std::size_t pos = 0;
  while (pos < message.size()) {
    // A line ends at CRLF, a bare LF or a bare CR (an imported message may hold any of them); each
    // becomes CRLF, so the next hop sees no line end that it could read differently from us.
    std::size_t end = message.find_first_of("\r\n", pos);
    if (end == std::string::npos) end = message.size();
    if (message[pos] == '.') out.push_back('.');
    out.append(message, pos, end - pos);
    out.append("\r\n");
    if (end < message.size() && message[end] == '\r' && end + 1 < message.size() && message[end + 1] == '\n') ++end;
    pos = end + 1;
  }
  out.append(".\r\n");
  return out;
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
  data_too_big_ = false;
  data_line_too_long_ = false;
  bare_newline_ = nullptr;
}

Session::Output Session::receive(std::string_view bytes) {
  Output out;
  if (state_ == State::kClosed || state_ == State::kStartTls) return out;
  buffer_.append(bytes);
  process(out);
  return out;
}

void Session::process(Output& out) {
  while (true) {
    bool progressed = false;
    switch (state_) {
      case State::kGreeted:
      case State::kReady:
      case State::kMail:
        progressed = command_step(out);
        break;
      case State::kData:
        progressed = data_step(out);
        break;
      case State::kAuthLine:
        progressed = auth_step(out);
        break;
      default:
        return;  // waiting for verification, storage or TLS, or closed
    }
    if (!progressed) break;
  }
  // A message still arriving hands out what it has past the spill threshold; a message that ended
  // in this input goes out whole in out.message instead.
  if (state_ == State::kData && config_.spill_bytes > 0 && txn_.data.size() >= config_.spill_bytes) {
    out.spill_at = txn_.spilled;
    txn_.spilled += txn_.data.size();
    out.spill = std::move(txn_.data);
    txn_.data = std::string();
  }
}

// Drops what is buffered of an over-long line, keeping a trailing CR: it may pair with the LF that
// comes next, and whether the line ended in CRLF matters for what follows.
void Session::skip_over_long_line() {
  bool cr = !buffer_.empty() && buffer_.back() == '\r';
  buffer_.clear();
  if (cr) buffer_.push_back('\r');
  discarding_line_ = true;
}

bool Session::command_step(Output& out) {
  std::size_t end = buffer_.find("\r\n");
  if (end == std::string::npos) {
    if (buffer_.size() > config_.max_command_bytes) {
      if (!discarding_line_) error(out, 500, "5.5.2 Line too long");
      skip_over_long_line();
    }
    return false;
  }
  if (discarding_line_) {
    discarding_line_ = false;
    buffer_.erase(0, end + 2);
    return true;
  }
  if (end + 2 > config_.max_command_bytes) {
    buffer_.erase(0, end + 2);
    error(out, 500, "5.5.2 Line too long");
    return true;
  }
  std::string line = buffer_.substr(0, end);
  buffer_.erase(0, end + 2);
  command(line, out);
  return true;
}

bool Session::data_step(Output& out) {
  std::size_t nl = buffer_.find('\n');
  if (nl == std::string::npos) {
    if (buffer_.size() > config_.max_line_bytes) {
      data_line_too_long_ = true;
      skip_over_long_line();
    }
    return false;
  }
  const bool crlf = nl > 0 && buffer_[nl - 1] == '\r';
  if (discarding_line_ || nl + 1 > config_.max_line_bytes) {
    data_line_too_long_ = true;
    discarding_line_ = false;
    prev_line_crlf_ = crlf;
    buffer_.erase(0, nl + 1);
    return true;
  }
  std::string_view content(buffer_.data(), crlf ? nl - 1 : nl);
  // The only end of data: "." alone on a line that ends in CRLF, right after a line that ended in
  // CRLF. "\n.\r\n", "\r\n.\n", "\r.\r" and the like are content (or, with kReject, refuse the
  // message), never an end.
  if (crlf && prev_line_crlf_ && content == ".") {
    buffer_.erase(0, nl + 1);
    end_of_data(out);
    return true;
  }
  prev_line_crlf_ = crlf;
  const bool bare_cr = content.find('\r') != std::string_view::npos;
  if (!crlf || bare_cr) {
    if (config_.bare_newline == BareNewline::kReject) {
      if (!bare_newline_) bare_newline_ = !crlf ? "LF" : "CR";
    } else {
      txn_.bare_newline_seen = true;
      // Each bare CR (and the bare LF at the end) becomes a line end of its own.
      std::size_t start = 0;
      while (true) {
        std::size_t cr = content.find('\r', start);
        append_content(content.substr(start, cr == std::string_view::npos ? std::string_view::npos : cr - start));
        if (cr == std::string_view::npos) break;
        start = cr + 1;
      }
    }
  } else {
    append_content(content);
  }
  buffer_.erase(0, nl + 1);
  return true;
}

void Session::append_content(std::string_view content) {
  if (!content.empty() && content.front() == '.') content.remove_prefix(1);
  if (in_header_) {
    if (content.empty()) in_header_ = false;
    else if (iequals_prefix(content, "RECEIVED:")) ++hops_;
  }
  if (data_too_big_ || bare_newline_) return;  // the message is refused at its end anyway
  if (txn_.spilled + txn_.data.size() + content.size() + 2 > config_.max_message_bytes) {  // spilled or not
    data_too_big_ = true;
    txn_.data.clear();
    txn_.data.shrink_to_fit();
    return;
  }
  txn_.data.append(content);
  txn_.data.append("\r\n");
}

void Session::end_of_data(Output& out) {
  state_ = State::kReady;
  if (data_too_big_) {
    reply(out, 552, "5.3.4 Message exceeds the size limit of " + std::to_string(config_.max_message_bytes) + " bytes");
  } else if (data_line_too_long_) {
    reply(out, 554, "5.6.0 Message has a line longer than " + std::to_string(config_.max_line_bytes) + " bytes");
  } else if (bare_newline_) {
    reply(out, 550, std::string("5.5.2 Error: bare <") + bare_newline_ + "> received");
  } else if (hops_ > config_.max_hops) {
    reply(out, 554, "5.4.6 Too many hops: the message has passed " + std::to_string(hops_) +
                        " mail servers (a mail loop?)");
  } else {
    state_ = State::kStoring;
    out.message = std::move(txn_);
    txn_ = ReceivedMessage{};
    txn_.helo = out.message->helo;
  }
  if (state_ == State::kReady) reset_transaction();
}

void Session::command(std::string_view line, Output& out) {
  // A bare LF or CR never splits a command: the whole line up to CRLF is one refused command.
  if (line.find('\n') != std::string_view::npos) return error(out, 550, "5.5.2 Error: bare <LF> received");
  if (line.find('\r') != std::string_view::npos) return error(out, 550, "5.5.2 Error: bare <CR> received");
  // Other control characters never belong in a command; UTF-8 only in SMTPUTF8 addresses (below).
  for (char c : line) {
    unsigned char u = static_cast<unsigned char>(c);
    if ((u < 32 && u != '\t') || u == 127) return error(out, 500, "5.5.2 Command contains invalid characters");
  }
  std::size_t sp = line.find(' ');
  std::string verb = ascii_upper(line.substr(0, std::min(sp, std::size_t{16})));
  if (sp != std::string_view::npos && sp > 16) verb = "?";
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
    if (config_.auth_offered && (tls_ || config_.auth_in_clear) && auth_user_.empty()) lines.push_back("AUTH PLAIN LOGIN");
    for (std::size_t i = 0; i < lines.size(); ++i) {
      out.to_send += "250" + std::string(i + 1 < lines.size() ? "-" : " ") + lines[i] + "\r\n";
    }
    return;
  }
  if (verb == "MAIL") return mail(arg, out);
  if (verb == "AUTH") return auth(arg, out);
  if (verb == "RCPT") return rcpt(arg, out);
  if (verb == "DATA") {
    if (!arg.empty()) return error(out, 501, "5.5.4 DATA takes no argument");
    if (state_ != State::kMail) return error(out, 503, "5.5.1 Send MAIL first");
    if (txn_.rcpt_to.empty()) return error(out, 554, "5.5.1 No valid recipients");
    state_ = State::kData;
    in_header_ = true;
    hops_ = 0;
    txn_.spilled = 0;
    prev_line_crlf_ = true;  // the DATA command ended in CRLF
    discarding_line_ = false;
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
  // Known commands mailark does not offer: 502 (not implemented), as RFC 5321 4.2.4 asks, rather
  // than 500 (not recognised). EXPN would list a list's members; the rest are obsolete or for relays
  // that queue for a client (ETRN, ATRN, TURN). They count as errors, as unknown commands do.
  if (verb == "EXPN" || verb == "ETRN" || verb == "ATRN" || verb == "TURN" || verb == "SEND" || verb == "SOML" ||
      verb == "SAML")
    return error(out, 502, "5.5.1 " + verb + " is not implemented");
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

void Session::auth(std::string_view arg, Output& out) {
  if (!config_.auth_offered) return error(out, 502, "5.5.1 AUTH not available here");
  if (!have_helo_ || !esmtp_) return error(out, 503, "5.5.1 Send EHLO first");
  if (!auth_user_.empty()) return error(out, 503, "5.5.1 Already authenticated");
  if (state_ == State::kMail) return error(out, 503, "5.5.1 AUTH not allowed during a mail transaction");
  if (!tls_ && !config_.auth_in_clear) return error(out, 538, "5.7.11 Encryption required for requested authentication mechanism");
  std::size_t sp = arg.find(' ');
  std::string mech = ascii_upper(arg.substr(0, sp));
  std::string_view initial = sp == std::string_view::npos ? std::string_view() : trim(arg.substr(sp + 1));
  if (mech != "PLAIN" && mech != "LOGIN") return error(out, 504, "5.5.4 Unrecognized authentication type");
  auth_mechanism_ = mech;
  auth_login_user_.clear();
  if (!initial.empty()) return sasl_answer(initial == "=" ? std::string_view() : initial, out);
  state_ = State::kAuthLine;
  reply(out, 334, mech == "PLAIN" ? "" : "VXNlcm5hbWU6");
}

bool Session::auth_step(Output& out) {
  std::size_t end = buffer_.find("\r\n");
  if (end == std::string::npos) {
    if (buffer_.size() > config_.max_command_bytes) {
      buffer_.clear();
      state_ = State::kReady;
      error(out, 500, "5.5.2 Line too long");
      return true;
    }
    return false;
  }
  std::string line = buffer_.substr(0, end);
  buffer_.erase(0, end + 2);
  state_ = State::kReady;
  sasl_answer(line, out);
  return true;
}

void Session::sasl_answer(std::string_view line, Output& out) {
  state_ = State::kReady;
  if (line == "*") return error(out, 501, "5.7.0 Authentication cancelled");
  auto decoded = base64_decode(line, 4096);
  if (!decoded) return error(out, 501, "5.5.2 Cannot decode the response");
  if (auth_mechanism_ == "LOGIN" && auth_login_user_.empty()) {
    if (decoded->empty()) return error(out, 501, "5.5.2 An empty user name");
    auth_login_user_ = *decoded;
    state_ = State::kAuthLine;
    return reply(out, 334, "UGFzc3dvcmQ6");
  }
  Credentials c;
  if (auth_mechanism_ == "PLAIN") {
    // authzid NUL authcid NUL passwd (RFC 4616); an authorisation identity must be the user itself.
    auto z1 = decoded->find('\0');
    auto z2 = z1 == std::string::npos ? std::string::npos : decoded->find('\0', z1 + 1);
    if (z2 == std::string::npos) return error(out, 501, "5.5.2 A malformed PLAIN response");
    std::string authz = decoded->substr(0, z1);
    c.user = decoded->substr(z1 + 1, z2 - z1 - 1);
    c.password = decoded->substr(z2 + 1);
    if (!authz.empty() && !ascii_iequals(authz, c.user)) return error(out, 535, "5.7.8 Authentication credentials invalid");
  } else {
    c.user = auth_login_user_;
    c.password = *decoded;
  }
  auth_pending_user_ = c.user;
  state_ = State::kAuthenticating;
  out.authenticate = std::move(c);
}

Session::Output Session::authenticated(const std::optional<Reply>& failure) {
  Output out;
  if (state_ != State::kAuthenticating) return out;
  state_ = State::kReady;
  if (failure) {
    error(out, failure->code, failure->text);
  } else {
    auth_user_ = auth_pending_user_;
    reply(out, 235, "2.7.0 Authentication successful");
  }
  auth_pending_user_.clear();
  process(out);
  return out;
}

void Session::mail(std::string_view arg, Output& out) {
  if (!have_helo_) return error(out, 503, "5.5.1 Send EHLO or HELO first");
  if (config_.auth_required && auth_user_.empty()) return error(out, 530, "5.7.0 Authentication required");
  if (state_ == State::kMail) return error(out, 503, "5.5.1 Nested MAIL command");
  if (!iequals_prefix(arg, "FROM:")) return error(out, 501, "5.5.4 Syntax: MAIL FROM:<address>");
  auto path = parse_path(arg.substr(5), /*allow_null=*/true);
  if (!path) return error(out, 501, "5.1.7 Bad sender address syntax");
  ReceivedMessage fresh;
  fresh.helo = txn_.helo;
  std::string_view params = path->params;
  std::uint64_t declared = 0;
  while (!params.empty()) {
    std::size_t end = params.find(' ');
    std::string p = ascii_upper(params.substr(0, end));
    params = end == std::string_view::npos ? std::string_view() : trim(params.substr(end));
    if (p.rfind("SIZE=", 0) == 0) {
      std::string digits = p.substr(5);
      if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) {
        return error(out, 501, "5.5.4 Bad SIZE parameter");
      }
      // More digits than 2^64 holds is still a size (RFC 1870): too big, not malformed.
      declared = parse_decimal(digits).value_or(UINT64_MAX);
      if (declared > config_.max_message_bytes) {
        return error(out, 552, "5.3.4 Message size exceeds the limit of " + std::to_string(config_.max_message_bytes) + " bytes");
      }
    } else if (p == "BODY=8BITMIME") {
      fresh.body_8bitmime = true;
    } else if (p == "BODY=7BIT") {
    } else if (p == "SMTPUTF8") {
      fresh.smtputf8 = true;
    } else if (p.rfind("AUTH=", 0) == 0 && config_.auth_offered) {
      // RFC 4954 5: a server that offers AUTH takes the parameter (Exim sends AUTH=<> after it
      // authenticates), and one that does not vouch for the mailbox named behaves as if it were
      // <>: mailark names no one further on, so the value is checked and set aside.
      if (!is_auth_parameter_value(std::string_view(p).substr(5)))
        return error(out, 501, "5.5.4 Bad AUTH parameter syntax");
    } else {
      return error(out, 555, "5.5.4 Unsupported MAIL parameter " + p.substr(0, 40));
    }
  }
  if (!fresh.smtputf8) {
    for (char c : path->address)
      if (static_cast<unsigned char>(c) >= 128) return error(out, 553, "5.6.7 Non-ASCII address needs SMTPUTF8");
  }
  if (auto full = policy_.check_storage(declared)) return error(out, full->code, full->text);
  if (auto rejected = policy_.check_sender(*path)) return error(out, rejected->code, rejected->text);
  fresh.mail_from = path->address;
  txn_ = std::move(fresh);
  state_ = State::kMail;
  reply(out, 250, "2.1.0 Sender ok");
}

void Session::rcpt(std::string_view arg, Output& out) {
  if (state_ != State::kMail) return error(out, 503, "5.5.1 Send MAIL first");
  if (!iequals_prefix(arg, "TO:")) return error(out, 501, "5.5.4 Syntax: RCPT TO:<address>");
  auto path = parse_path(arg.substr(3), /*allow_null=*/false);
  if (!path) return error(out, 501, "5.1.3 Bad recipient address syntax");
  if (!path->params.empty()) return error(out, 555, "5.5.4 Unsupported RCPT parameter");
  // The same recipient again (any case): taken once, as Postfix's cleanup keeps one of duplicate
  // recipients, so the message is archived, queued and delivered once for it
  // (SmtpProtocol.ARecipientGivenTwiceIsKeptOnce).
  if (std::any_of(txn_.rcpt_to.begin(), txn_.rcpt_to.end(),
                  [&](const std::string& r) { return ascii_iequals(r, path->address); }))
    return reply(out, 250, "2.1.5 Recipient ok (already given)");
  if (txn_.rcpt_to.size() >= config_.max_recipients) {
    // Not an error of the client's (ProtocolConfig::max_recipient_overshoot) until it overdoes it.
    const char* too_many = "4.5.3 Too many recipients; send the rest in another message";
    return ++overshoot_ > config_.max_recipient_overshoot ? error(out, 452, too_many) : reply(out, 452, too_many);
  }
  if (!txn_.smtputf8) {
    for (char c : path->address)
      if (static_cast<unsigned char>(c) >= 128) return error(out, 553, "5.6.7 Non-ASCII address needs SMTPUTF8");
  }
  RecipientDecision d = policy_.check_recipient(*path);
  if (d.kind == RecipientDecision::Kind::kReject) return error(out, d.reply.code, d.reply.text);
  if (d.kind == RecipientDecision::Kind::kVerify) {
    verifying_ = path->address;
    state_ = State::kVerifying;
    out.verify = verifying_;
    return;
  }
  txn_.rcpt_to.push_back(path->address);
  reply(out, 250, "2.1.5 Recipient ok");
}

Session::Output Session::recipient_verified(const std::optional<Reply>& rejection) {
  Output out;
  if (state_ != State::kVerifying) return out;
  state_ = State::kMail;
  if (rejection) {
    error(out, rejection->code, rejection->text);
  } else {
    txn_.rcpt_to.push_back(std::move(verifying_));
    reply(out, 250, "2.1.5 Recipient ok");
  }
  verifying_.clear();
  process(out);
  return out;
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
  auth_user_.clear();
  have_helo_ = false;
  esmtp_ = false;
  buffer_.clear();
  discarding_line_ = false;
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
