#include "api/imap/fetch.h"

#include <algorithm>
#include <map>

#include "common/ascii.h"
#include "engine/message.h"

namespace mailark::api::imap {
namespace {

std::string nstring_opt(const std::optional<std::string>& v) {
  return v ? imap_string(*v) : std::string("NIL");
}

// Obsolete source routes ("<@relay:user@domain>", RFC 5322 4.4), which GMime drops: the route by
// the address it leads to, for ENVELOPE's adl field.
std::map<std::string, std::string> source_routes(const std::string& value) {
  std::map<std::string, std::string> out;
  for (std::size_t lt = value.find("<@"); lt != std::string::npos && out.size() < 100; lt = value.find("<@", lt + 2)) {
    std::size_t colon = value.find(':', lt), gt = value.find('>', lt);
    if (colon == std::string::npos || gt == std::string::npos || colon > gt) continue;
    out[ascii_lower(value.substr(colon + 1, gt - colon - 1))] = value.substr(lt + 1, colon - lt - 1);
  }
  return out;
}

std::string address_list(const std::optional<std::string>& value, std::string_view charset) {
  if (!value) return "NIL";
  auto addrs = parse_address_list(*value, 1000, /*keep_groups=*/true, charset);
  if (addrs.empty()) return "NIL";
  const auto routes = source_routes(*value);
  std::string out = "(";
  for (const auto& a : addrs) {
    // RFC 9051 7.5.2: a group is (NIL NIL "name" NIL), its members, then (NIL NIL NIL NIL).
    if (a.group == Address::Group::kStart) {
      out += "(NIL NIL " + imap_string(a.name) + " NIL)";
      continue;
    }
    if (a.group == Address::Group::kEnd) {
      out += "(NIL NIL NIL NIL)";
      continue;
    }
    std::string mailbox = a.addr, host;
    auto at = a.addr.rfind('@');
    if (at != std::string::npos) {
      mailbox = a.addr.substr(0, at);
      host = a.addr.substr(at + 1);
    }
    out += "(";
    out += a.name.empty() ? std::string("NIL") : imap_string(encode_phrase(a.name));
    auto route = routes.find(ascii_lower(a.addr));
    out += route == routes.end() ? std::string(" NIL ") : " " + imap_string(route->second) + " ";
    // A NIL host marks a group (above), so an address without a domain ("root") or a mailbox ("<>")
    // says what it lacks, as Dovecot does (test ImapFetch.EnvelopeOfAddressesWrittenAsEncodedWords).
    if (mailbox.empty()) mailbox = "MISSING_MAILBOX";
    if (at == std::string::npos || host.empty()) host = "MISSING_DOMAIN";
    out += imap_string(mailbox);
    out += " ";
    out += imap_string(host);
    out += ")";
  }
  return out + ")";
}

std::string params_list(const MimeParams& params) {
  if (params.empty()) return "NIL";
  std::string out = "(";
  for (const auto& [k, v] : params) {
    if (out.size() > 1) out += ' ';
    out += imap_string(k) + " " + imap_string(v);
  }
  return out + ")";
}

// Content-Language (RFC 3282: a list of language tags) as RFC 9051's body-fld-lang: a list of the
// tags, as Dovecot gives it, comments and blanks left out; NIL when it names none.
std::string language_list(const std::optional<std::string>& field) {
  if (!field) return "NIL";
  std::string out, tag;
  int comment = 0;
  auto flush = [&] {
    if (tag.empty()) return;
    out += (out.empty() ? "(" : " ") + imap_string(tag);
    tag.clear();
  };
  for (char c : *field) {
    if (c == '(') ++comment;
    else if (c == ')' && comment > 0) --comment;
    else if (comment > 0) continue;
    else if (c == ',' || c == ' ' || c == '\t') flush();
    else if (static_cast<unsigned char>(c) > 32 && c != '"') tag += c;
  }
  flush();
  return out.empty() ? "NIL" : out + ")";
}

// An empty text part, where RFC 9051's grammar wants a body and the message has none.
constexpr std::string_view kEmptyTextPart = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0";

std::string extension(const MimeNode& n) {
  std::string out;
  if (n.disposition)
    out += "(" + imap_string(*n.disposition) + " " + params_list(n.disposition_params) + ")";
  else
    out += "NIL";
  out += " " + language_list(n.language) + " " + nstring_opt(n.location);
  return out;
}

const MimeNode* into_message(const MimeNode& msg, unsigned n) {
  if (msg.is_multipart()) return n >= 1 && n <= msg.children.size() ? &msg.children[n - 1] : nullptr;
  return n == 1 ? &msg : nullptr;
}

std::string_view span(std::string_view raw, std::size_t a, std::size_t b) {
  return raw.substr(a, b - a);
}

// The node a section's part numbers name ("1.2": the second part of the first), or null.
const MimeNode* find_part(const MimeNode& top, const std::vector<unsigned>& part) {
  if (part.empty()) return &top;
  const MimeNode* cur = into_message(top, part[0]);
  for (std::size_t i = 1; cur && i < part.size(); ++i) {
    if (cur->is_multipart())
      cur = part[i] <= cur->children.size() ? &cur->children[part[i] - 1] : nullptr;
    else if (cur->is_message() && !cur->children.empty())
      cur = into_message(cur->children[0], part[i]);
    else
      cur = nullptr;
  }
  return cur;
}

}  // namespace

std::string envelope(std::string_view raw, const MimeNode& m) {
  std::string_view h = span(raw, m.header_begin, m.header_end);
  // An address field written twice lists the addresses of both, as Dovecot's ENVELOPE does (test
  // ImapFetch.EnvelopeOfAddressesWrittenAsEncodedWords).
  auto addresses = [&](std::string_view name) { return mime_header_joined(h, name); };
  auto from = addresses("From");
  auto sender = addresses("Sender");
  auto reply_to = addresses("Reply-To");
  // An empty Sender or Reply-To is as good as none: they default to From (RFC 9051 7.5.2).
  if (sender && sender->empty()) sender.reset();
  if (reply_to && reply_to->empty()) reply_to.reset();
  // Display names are sent as encoded words of their text: raw 8-bit bytes in them read in the
  // message's declared charset (decode_header_text; ImapFetch.EnvelopeNamesInTheDeclaredCharset).
  // The Subject goes as sent, as Dovecot sends it. Header fields of ASCII alone have no such bytes:
  // the message is not read for its charset then.
  const bool eight_bit = std::any_of(h.begin(), h.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
  const std::string charset = eight_bit ? declared_charset(span(raw, m.header_begin, m.body_end)) : std::string();
  std::string from_list = address_list(from, charset);
  std::string out = "(";
  out += nstring_opt(mime_header_last(h, "Date")) + " ";
  out += nstring_opt(mime_header_last(h, "Subject")) + " ";
  out += from_list + " ";
  out += (sender ? address_list(sender, charset) : from_list) + " ";
  out += (reply_to ? address_list(reply_to, charset) : from_list) + " ";
  out += address_list(addresses("To"), charset) + " ";
  out += address_list(addresses("Cc"), charset) + " ";
  out += address_list(addresses("Bcc"), charset) + " ";
  out += nstring_opt(mime_header_last(h, "In-Reply-To")) + " ";
  out += nstring_opt(mime_header_last(h, "Message-ID"));
  return out + ")";
}

std::string body_structure(std::string_view raw, const MimeNode& n, bool ext) {
  if (n.is_multipart()) {
    std::string out = "(";
    if (n.children.empty()) {
      // RFC 9051 requires at least one part: describe an empty text part.
      out += kEmptyTextPart;
      out += ext ? " NIL NIL NIL NIL)" : ")";
    }
    for (const auto& c : n.children) out += body_structure(raw, c, ext);
    out += " " + imap_string(n.subtype);
    if (ext) out += " " + params_list(n.params) + " " + extension(n);
    return out + ")";
  }
  // A text part without a charset is in US-ASCII (RFC 2045 5.2): said, as Dovecot and Cyrus say it,
  // so that a client need not know the default (ImapFetch.TextWithoutCharsetSaysUsAscii).
  const bool say_charset = n.type == "text" && std::none_of(n.params.begin(), n.params.end(), [](const auto& p) {
    return ascii_iequals(p.first, "charset");
  });
  MimeParams with_charset;
  if (say_charset) {
    with_charset = n.params;
    with_charset.emplace_back("charset", "us-ascii");
  }
  std::string out = "(" + imap_string(n.type) + " " + imap_string(n.subtype) + " " +
                    params_list(say_charset ? with_charset : n.params) + " " +
                    nstring_opt(n.id) + " " + nstring_opt(n.description) + " " + imap_string(n.encoding) + " " +
                    std::to_string(n.body_end - n.body_begin);
  if (n.is_message() && !n.children.empty()) {
    const MimeNode& inner = n.children[0];
    out += " " + envelope(raw, inner) + " " + body_structure(raw, inner, ext) + " " + std::to_string(n.lines);
  } else if (n.is_message()) {
    // Past kMaxMimeDepth the encapsulated message is not read; RFC 9051's grammar still wants an
    // envelope and a body for this type: empty ones (ImapFetch.AMessagePartPastTheDepthLimitKeepsTheGrammar).
    out += " (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) " + std::string(kEmptyTextPart) + ") " + std::to_string(n.lines);
  } else if (n.type == "text") {
    out += " " + std::to_string(n.lines);
  }
  if (ext) out += " " + nstring_opt(n.md5) + " " + extension(n);
  return out + ")";
}

std::optional<std::string> section_bytes(std::string_view raw, const MimeNode& top, const Section& s) {
  using T = Section::Text;
  const MimeNode* cur = find_part(top, s.part);
  if (!cur) return std::nullopt;
  // The message whose HEADER/TEXT is asked: the top one, or an encapsulated one.
  const MimeNode* msg = &top;
  if (!s.part.empty() && s.text != T::kAll && s.text != T::kMime) {
    if (!cur->is_message() || cur->children.empty()) return std::nullopt;
    msg = &cur->children[0];
  }
  switch (s.text) {
    case T::kAll:
      if (s.part.empty()) return std::string(raw);
      return std::string(span(raw, cur->body_begin, cur->body_end));
    case T::kMime:
      return std::string(span(raw, cur->header_begin, cur->header_end));
    case T::kHeader:
      return std::string(span(raw, msg->header_begin, msg->header_end));
    case T::kText:
      return std::string(span(raw, msg->body_begin, msg->body_end));
    case T::kHeaderFields:
    case T::kHeaderFieldsNot:
      return mime_header_fields(span(raw, msg->header_begin, msg->header_end), s.fields, s.text == T::kHeaderFieldsNot);
  }
  return std::nullopt;
}

std::optional<std::string> binary_section(std::string_view raw, const MimeNode& top, const Section& s, bool* unknown_cte) {
  *unknown_cte = false;
  if (s.part.empty()) return std::string(raw);
  const MimeNode* n = find_part(top, s.part);
  if (!n) return std::nullopt;
  std::string_view body = span(raw, n->body_begin, n->body_end);
  // A multipart or an attached message is sent as it stands (RFC 2045 6.4 allows them no other
  // encoding), and so is a leaf in 7bit, 8bit or binary.
  const std::string& e = n->encoding;
  if (n->is_multipart() || n->is_message() || e.empty() || e == "7bit" || e == "8bit" || e == "binary")
    return std::string(body);
  if (e != "base64" && e != "quoted-printable" && e != "uuencode" && e != "x-uuencode" && e != "x-uue") {
    *unknown_cte = true;
    return std::nullopt;
  }
  std::string part(span(raw, n->header_begin, n->body_begin));
  if (e == "quoted-printable") {
    // RFC 2045 6.7 (3): white space at the end of an encoded line was added in transport and is
    // deleted, so "=" followed by blanks is still a soft line break; GMime's decoder keeps them.
    std::size_t from = 0;
    while (from < body.size()) {
      std::size_t nl = body.find('\n', from);
      std::size_t end = nl == std::string_view::npos ? body.size() : nl;
      std::size_t text_end = end > from && body[end - 1] == '\r' ? end - 1 : end;
      std::size_t cut = text_end;
      while (cut > from && (body[cut - 1] == ' ' || body[cut - 1] == '\t')) --cut;
      part.append(body.substr(from, cut - from));
      part.append(body.substr(text_end, end - text_end + (nl == std::string_view::npos ? 0 : 1)));
      from = end + 1;
    }
  } else {
    part.append(body);
  }
  // Decoding never makes these encodings longer.
  return decode_part(part, /*as_text=*/false, body.size() + 64);
}

}  // namespace mailark::api::imap
