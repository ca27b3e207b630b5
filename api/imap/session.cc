#include "api/imap/session.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>
#include <map>
#include <set>

#include "api/imap/fetch.h"
#include "common/ascii.h"
#include "common/base64.h"
#include "common/dates.h"
#include "common/json_text.h"
#include "common/unicode_form.h"
#include "engine/message.h"
#include "engine/mime_tree.h"
#include "indexer/index.h"

namespace mailark::api::imap {
namespace {

// A '*' / '%' pattern (RFC 9051 6.3.9) against a folder name: '*' matches anything, '%' anything but
// the hierarchy separator. Dynamic programming over (pattern, name) positions: no backtracking blow-up.
bool list_match(std::string_view pattern, std::string_view name) {
  if (pattern.size() > 1024) return false;
  // ok[j]: pattern[0..i) matches name[0..j)
  std::vector<char> ok(name.size() + 1, 0), next(name.size() + 1, 0);
  ok[0] = 1;
  for (char pc : pattern) {
    std::fill(next.begin(), next.end(), 0);
    if (pc == '*' || pc == '%') {
      for (std::size_t j = 0; j <= name.size(); ++j) {
        if (ok[j]) next[j] = 1;
        if (j > 0 && next[j - 1] && (pc == '*' || name[j - 1] != '/')) next[j] = 1;
      }
    } else {
      for (std::size_t j = 1; j <= name.size(); ++j) next[j] = ok[j - 1] && name[j - 1] == pc;
    }
    ok.swap(next);
  }
  return ok[name.size()] != 0;
}

// Whether a record's bytes may differ from the form IMAP sends (imap_form), and so its RFC822.SIZE
// from the record's size: only imported ones (mbox, Maildir, PST, IMAP APPEND) may hold LF line ends
// or binary data. SMTP's DATA is stored with CRLF line ends (api/smtp/protocol.cc append_content),
// and so are the messages the portal composes (GMime's DOS newline format) and the DSNs delivery
// writes; they are sent as stored.
bool may_differ_in_imap_form(const ArchiveRecord& r) { return r.envelope.direction == Direction::kImport; }

// The form IMAP sends an imported message in: CRLF line ends (mime_tree.h crlf_lines). A message that
// holds a NUL byte (binary data, as an APPEND with a literal8 brings) first gets its binary and 8-bit
// parts in base64 or quoted-printable (engine/message.h seven_bit_message), because only BINARY's
// literal8 may carry a NUL (RFC 9051 4.3) and a line-end conversion would change binary bytes; BINARY
// decodes them back to the bytes that came (imaptest's append-binary, test_imaptest.py).
std::string imap_form(std::string raw) {
  if (raw.find('\0') != std::string::npos)
    if (auto seven = seven_bit_message(raw)) return crlf_lines(std::move(*seven));
  return crlf_lines(std::move(raw));
}

// Body data outside BINARY: a NUL byte, which only BINARY's literal8 may carry (RFC 9051 4.3), is
// sent as 0x80, as Dovecot sends it; the size stays (mail that came by SMTP may hold NULs, and is
// otherwise sent as stored; test_imap.py test_imported_mail_is_served_with_crlf_line_ends).
std::string without_nul(std::string bytes) {
  std::replace(bytes.begin(), bytes.end(), '\0', '\x80');
  return bytes;
}

// RFC822.SIZE: the size of the message in the form IMAP sends it.
std::uint64_t imap_size(const ArchiveRecord& r, const ArchiveSnapshot& snap, ImapSizeCache& cache) {
  if (!may_differ_in_imap_form(r)) return r.raw_size;
  if (auto known = cache.get(r.seq)) return *known;
  auto raw = snap.raw(r);
  if (!raw) return r.raw_size;
  std::uint64_t size = raw->find('\0') != std::string::npos ? imap_form(std::move(*raw)).size() : crlf_lines_size(*raw);
  cache.put(r.seq, size);
  return size;
}

bool list_match_name(const std::string& pattern, const std::string& name) {
  // INBOX matches case-insensitively.
  if (name == "INBOX" || name.rfind("INBOX/", 0) == 0) {
    std::string p = pattern;
    if (p.size() >= 5 && ascii_iequals(p.substr(0, 5), "INBOX")) p.replace(0, 5, "INBOX");
    return list_match(p, name);
  }
  return list_match(pattern, name);
}

std::string join_uids(const std::vector<std::uint32_t>& uids) {
  // Compact "1:3,5" form.
  std::string out;
  for (std::size_t i = 0; i < uids.size();) {
    std::size_t j = i;
    while (j + 1 < uids.size() && uids[j + 1] == uids[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(uids[i]);
    if (j > i) out += ":" + std::to_string(uids[j]);
    i = j + 1;
  }
  return out;
}

// IMAP's substring match (RFC 9051 6.4.4), case and Unicode form set aside (common/unicode_form.h)
bool contains_ci(std::string_view hay, std::string_view needle) { return contains_folded(hay, needle); }

// Every value of a header field (all occurrences), unfolded, RFC 2047 decoded (raw 8-bit bytes read
// in `charset`, the message's declared_charset), one per line.
std::string header_values(std::string_view header, const std::string& name, std::string_view charset,
                          bool decode = true) {
  std::string fields = mime_header_fields(header, {name}, false);
  std::string out;
  std::size_t pos = 0;
  while (pos < fields.size()) {
    std::size_t nl = fields.find('\n', pos);
    std::string_view line(fields.data() + pos, (nl == std::string::npos ? fields.size() : nl) - pos);
    pos = nl == std::string::npos ? fields.size() : nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if (line[0] == ' ' || line[0] == '\t') {
      out += std::string(line);
      continue;
    }
    auto colon = line.find(':');
    if (!out.empty()) out += '\n';
    out += std::string(colon == std::string_view::npos ? line : line.substr(colon + 1));
  }
  return decode ? decode_header_text(out, charset) : out;
}

// An address field: its decoded text, or any of its addresses as parsed (comments and routes
// removed: "<user (c)@ (c) domain.org>" is user@domain.org).
bool address_field_has(std::string_view header, const std::string& name, const std::string& text,
                       std::string_view charset) {
  if (contains_ci(header_values(header, name, charset), text)) return true;
  std::string raw = header_values(header, name, charset, false);
  for (auto& line : {raw}) {
    std::string joined = line;
    std::replace(joined.begin(), joined.end(), '\n', ',');
    for (const auto& a : parse_address_list(joined, 1000, false, charset))
      if (contains_ci(a.addr, text) || contains_ci(a.name, text) || contains_ci(a.name + " <" + a.addr + ">", text)) return true;
  }
  return false;
}

bool has_modseq_key(const SearchKey& k) {
  if (k.kind == SearchKey::Kind::kModseq) return true;
  for (const auto& c : k.children)
    if (has_modseq_key(c)) return true;
  return false;
}

}  // namespace

bool ImapSession::text_matches(const SearchKey& k, const std::string& raw, TextCache& cache) {
  using K = SearchKey::Kind;
  if (!cache.tree) cache.tree = parse_mime_tree(raw);
  if (!cache.charset) cache.charset = declared_charset(raw);
  const std::string_view charset = *cache.charset;
  const MimeNode& top = *cache.tree;
  std::string_view header(raw.data() + top.header_begin, top.header_end - top.header_begin);
  std::string_view body(raw.data() + top.body_begin, top.body_end - top.body_begin);
  auto body_has = [&] {
    if (contains_ci(body, k.text)) return true;
    if (!cache.decoded) {
      Limits limits;
      cache.decoded = parse_message_or_flag(raw, limits);  // decoded text of every part, once a message
    }
    return contains_ci(cache.decoded->body_text, k.text) || contains_ci(cache.decoded->attachment_text, k.text);
  };
  switch (k.kind) {
    case K::kSubject: return contains_ci(header_values(header, "Subject", charset), k.text);
    case K::kFrom: return address_field_has(header, "From", k.text, charset);
    case K::kTo: return address_field_has(header, "To", k.text, charset);
    case K::kCc: return address_field_has(header, "Cc", k.text, charset);
    case K::kBcc: return address_field_has(header, "Bcc", k.text, charset);
    case K::kHeader: {
      if (!mime_header(header, k.keyword)) return false;
      return contains_ci(header_values(header, k.keyword, charset), k.text);
    }
    case K::kBody: return body_has();
    case K::kText:
      return contains_ci(header, k.text) || contains_ci(decode_header_text(header, charset), k.text) || body_has();
    default: return false;
  }
}

ImapSession::~ImapSession() { write_views(); }

// One audit entry for what the session read: the count and the ids as ranges ("3-7,12"), at most
// about 4,000 characters of them (the count is always whole).
void ImapSession::write_views() {
  if (!ctx_.audit || (viewed_.empty() && searches_ == 0)) return;
  std::string ranges;
  bool cut = false;
  for (auto it = viewed_.begin(); it != viewed_.end();) {
    auto first = *it, last = *it;
    for (++it; it != viewed_.end() && *it == last + 1; ++it) last = *it;
    if (ranges.size() > 4000) {
      cut = true;
      break;
    }
    ranges += (ranges.empty() ? "" : ",") + std::to_string(first) + (last > first ? "-" + std::to_string(last) : "");
  }
  nlohmann::json detail = {{"messages", viewed_.size()}, {"ids", ranges}, {"ip", client_ip_}};
  if (cut) detail["ids_truncated"] = true;
  if (searches_) {
    detail["searches"] = searches_;  // how many SEARCH commands, and the first 50 of them
    detail["search_criteria"] = searched_;
  }
  auto e = ctx_.audit->audit("imap:" + user_.name, "imap.views", user_.name, json_text(detail));
  if (!e) spdlog::error("imap: the views of {}'s session are not in the audit log: {}", user_.name, e.error().to_string());
  viewed_.clear();
  searched_.clear();
  searches_ = 0;
}

ImapSession::ImapSession(ImapContext& ctx, std::string client_ip, bool tls_active, bool starttls_available, bool loopback)
    : ctx_(ctx), client_ip_(std::move(client_ip)), tls_(tls_active), starttls_available_(starttls_available), loopback_(loopback) {}

std::string ImapSession::capabilities() const {
  std::string c = "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN "
                  "SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH CONDSTORE BINARY";
  if (state_ == State::kNotAuthenticated) {
    if (!tls_ && starttls_available_) c += " STARTTLS";
    if (tls_ || loopback_)
      c += " AUTH=PLAIN AUTH=LOGIN";
    else
      c += " LOGINDISABLED";
  }
  return c;
}

std::string ImapSession::flags_lines() const {
  std::string kw;
  if (sel_)
    for (const auto& k : sel_->keywords) kw += " " + k;
  return "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft" + kw + ")\r\n" +
         "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft" + kw + " \\*)] flags are kept\r\n";
}

std::string ImapSession::flags_of(const MailEntry& e) const {
  std::string f = flags_text(e.flags, e.keywords);
  if (!rev2_ && sel_ && sel_->recent.count(e.uid)) f.insert(1, f.size() > 2 ? "\\Recent " : "\\Recent");
  return f;
}

std::string ImapSession::announce(const std::vector<std::string>& keywords) {
  if (!sel_) return {};
  bool fresh = false;
  for (const auto& k : keywords) {
    if (sel_->keywords.size() >= 1000) break;
    if (sel_->keywords_lower.insert(ascii_lower(k)).second) {
      sel_->keywords.push_back(k);
      fresh = true;
    }
  }
  return fresh ? flags_lines() : std::string();
}

std::string ImapSession::enable_condstore() {
  if (condstore_) return {};
  condstore_ = true;
  if (!sel_) return {};
  return "* OK [HIGHESTMODSEQ " + std::to_string(sel_->folder.highest_modseq) + "] CONDSTORE enabled\r\n";
}

std::string ImapSession::greeting() const {
  return "* OK [CAPABILITY " + capabilities() + "] " + ctx_.hostname + " mailark IMAP ready\r\n";
}

ImapSession::Reply ImapSession::ok(const std::string& tag, const std::string& text, Then then) {
  return {tag + " OK " + text + "\r\n", then};
}

ImapSession::Reply ImapSession::fail(const std::string& tag, const std::string& text) {
  return {tag + " NO " + text + "\r\n", Then::kNone};
}

std::string ImapSession::bad(const std::string& tag, const std::string& why) {
  ++errors_;
  std::string out = tag + " BAD " + why + "\r\n";
  if (too_many_errors()) out += "* BYE too many errors\r\n";
  return out;
}

std::optional<std::string> ImapSession::folder_name(const Value& v) const {
  if (!v.is_astring()) return std::nullopt;
  std::string name = v.text;
  if (!rev2_) {
    auto decoded = mutf7_decode(name);
    if (!decoded) return std::nullopt;
    name = *decoded;
  }
  auto n = normalize_folder_name(name);
  if (!n) return std::nullopt;
  return *n;
}

std::string ImapSession::client_name(const std::string& stored) const {
  return imap_string(rev2_ ? stored : mutf7_encode(stored));
}

std::vector<std::size_t> ImapSession::resolve(const SequenceSet& set, bool uid) const {
  std::vector<std::size_t> out;
  if (!sel_) return out;
  const auto& view = sel_->view;
  if (set.saved) {
    std::set<std::uint32_t> wanted(saved_uids_.begin(), saved_uids_.end());
    for (std::size_t i = 0; i < view.size(); ++i)
      if (wanted.count(view[i].uid)) out.push_back(i);
    return out;
  }
  if (view.empty()) return out;
  if (!uid) {
    for (std::uint32_t n : set.resolve(static_cast<std::uint32_t>(view.size()))) out.push_back(n - 1);
    return out;
  }
  // UIDs: "*" is the largest UID in the view; ranges may name UIDs that do not exist.
  const std::uint32_t largest = view.back().uid;
  for (std::size_t i = 0; i < view.size(); ++i)
    if (set.contains(view[i].uid, largest)) out.push_back(i);
  // "n:*" with n above the largest UID still names the largest (RFC 9051 6.4.8).
  if (out.empty())
    for (auto [a, b] : set.ranges)
      if (a == SequenceSet::kStar || b == SequenceSet::kStar) {
        out.push_back(view.size() - 1);
        break;
      }
  return out;
}

std::string ImapSession::sync(bool allow_expunge) {
  if (!sel_ || sel_->gone) return {};
  // Every change to a folder (new message, flags, expunge) moves its HIGHESTMODSEQ or UIDNEXT: when
  // neither moved, nothing changed, and the folder's entries are not read (one LMDB lookup per
  // command instead of the whole folder: a client fetching 20,000 messages one by one).
  // The folder record is read before the entries: a change between the two reads makes the next
  // sync read the entries again, never miss them.
  auto folder_now = ctx_.store.folder_by_id(user_.id, sel_->folder.id);
  if (folder_now && folder_now->highest_modseq == sel_->folder.highest_modseq &&
      folder_now->uidnext == sel_->folder.uidnext && !(allow_expunge && sel_->expunge_pending))
    return {};
  auto entries = ctx_.store.entries(user_.id, sel_->folder.id);
  std::string out;
  if (!entries) {
    if (entries.error().code == ErrorCode::kNotFound) {
      sel_->gone = true;
      return "* BYE the selected folder was deleted\r\n";
    }
    return {};
  }
  auto& view = sel_->view;
  std::map<std::uint32_t, const MailEntry*> now;
  for (const auto& e : *entries) now[e.uid] = &e;
  if (allow_expunge) {
    for (std::size_t i = view.size(); i-- > 0;) {
      if (!now.count(view[i].uid)) {
        out += "* " + std::to_string(i + 1) + " EXPUNGE\r\n";
        // RECENT never counts more than EXISTS (test_imap.py test_recent_never_counts_a_message_another_session_expunged)
        sel_->recent.erase(view[i].uid);
        view.erase(view.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
    sel_->expunge_pending = false;
  } else {
    // Expunges another session made wait for a command that may report them.
    sel_->expunge_pending = std::any_of(view.begin(), view.end(), [&](const MailEntry& e) { return !now.count(e.uid); });
  }
  for (std::size_t i = 0; i < view.size(); ++i) {
    auto it = now.find(view[i].uid);
    if (it == now.end()) continue;
    const MailEntry& e = *it->second;
    if (e.modseq != view[i].modseq) {
      if (e.flags != view[i].flags || e.keywords != view[i].keywords) {
        out += announce(e.keywords);
        out += "* " + std::to_string(i + 1) + " FETCH (UID " + std::to_string(e.uid) + " FLAGS " +
               flags_of(e);
        if (condstore_) out += " MODSEQ (" + std::to_string(e.modseq) + ")";
        out += ")\r\n";
      }
      view[i] = e;
    }
  }
  const std::uint32_t last = view.empty() ? 0 : view.back().uid;
  bool grew = false;
  for (const auto& e : *entries)
    if (e.uid > last) {
      view.push_back(e);
      out += announce(e.keywords);
      grew = true;
    }
  if (grew) {
    out += "* " + std::to_string(view.size()) + " EXISTS\r\n";
    if (!sel_->read_only) {
      if (auto r = ctx_.store.claim_recent(user_.id, sel_->folder.id); r)
        for (const auto& e : view)
          if (e.uid >= r->first && e.uid < r->second) sel_->recent.insert(e.uid);
    }
    if (!rev2_) out += "* " + std::to_string(sel_->recent.size()) + " RECENT\r\n";
  }
  if (folder_now) sel_->folder = *folder_now;
  return out;
}

ImapSession::Reply ImapSession::capability(const std::string& tag) {
  return {"* CAPABILITY " + capabilities() + "\r\n" + tag + " OK CAPABILITY completed\r\n", Then::kNone};
}

ImapSession::Reply ImapSession::login(const std::string& tag, const std::string& name, const std::string& password) {
  auto a = ctx_.auth.login(name, password, client_ip_, "imap");
  switch (a.outcome) {
    case Authenticator::Outcome::kOk:
      break;
    case Authenticator::Outcome::kThrottled:
      return fail(tag, "[UNAVAILABLE] too many failed logins; try again later");
    case Authenticator::Outcome::kUnavailable:
      return fail(tag, "[UNAVAILABLE] the company directory cannot be reached; try again later");
    case Authenticator::Outcome::kDisabled:
      return fail(tag, "[AUTHORIZATIONFAILED] this account is disabled");
    case Authenticator::Outcome::kBadCredentials:
      return fail(tag, "[AUTHENTICATIONFAILED] invalid credentials");
  }
  user_ = a.user;
  state_ = State::kAuthenticated;
  return ok(tag, "[CAPABILITY " + capabilities() + "] logged in as " + user_.name);
}

ImapSession::Reply ImapSession::auth_line(const std::string& line) {
  if (!auth_) return {"* BAD no authentication in progress\r\n", Then::kNone};
  PendingAuth a = *auth_;
  if (line == "*") {
    auth_.reset();
    return {bad(a.tag, "authentication cancelled"), Then::kNone};
  }
  auto decoded = base64_decode(line, 8192);
  if (!decoded) {
    auth_.reset();
    return {bad(a.tag, "the answer is not base64"), Then::kNone};
  }
  if (a.mechanism == "PLAIN") {
    auth_.reset();
    // authzid NUL authcid NUL passwd (RFC 4616)
    auto z1 = decoded->find('\0');
    auto z2 = z1 == std::string::npos ? std::string::npos : decoded->find('\0', z1 + 1);
    if (z2 == std::string::npos) return {bad(a.tag, "a malformed PLAIN answer"), Then::kNone};
    std::string authz = decoded->substr(0, z1), authc = decoded->substr(z1 + 1, z2 - z1 - 1),
                pass = decoded->substr(z2 + 1);
    if (!authz.empty() && !ascii_iequals(authz, authc))
      return fail(a.tag, "[AUTHORIZATIONFAILED] logging in as another user is not allowed");
    return login(a.tag, authc, pass);
  }
  // LOGIN: user name, then password.
  if (a.step == 0) {
    auth_->login_user = *decoded;
    auth_->step = 1;
    return {"+ UGFzc3dvcmQ6\r\n", Then::kAuthLine};
  }
  auth_.reset();
  return login(a.tag, a.login_user, *decoded);
}

ImapSession::Reply ImapSession::execute(Command& c) {
  const std::string& tag = c.tag;
  const std::string& n = c.name;
  if (state_ == State::kLogout) return {"", Then::kClose};
  auto argc = [&](std::size_t want) { return c.args.size() == want; };

  // Any state.
  if (n == "CAPABILITY") {
    if (!argc(0)) return {bad(tag, "CAPABILITY takes no arguments"), Then::kNone};
    return capability(tag);
  }
  if (n == "NOOP" || n == "CHECK") {
    if (n == "CHECK" && state_ != State::kSelected) return {bad(tag, "CHECK needs a selected folder"), Then::kNone};
    return {sync(true) + tag + " OK " + n + " completed\r\n", Then::kNone};
  }
  if (n == "LOGOUT") {
    write_views();
    state_ = State::kLogout;
    return {"* BYE logging out\r\n" + tag + " OK LOGOUT completed\r\n", Then::kClose};
  }
  if (n == "ID") {
    return {"* ID (\"name\" \"mailark\" \"version\" \"0.1\")\r\n" + tag + " OK ID completed\r\n", Then::kNone};
  }

  if (state_ == State::kNotAuthenticated) {
    if (n == "STARTTLS") {
      if (tls_) return {bad(tag, "TLS is already active"), Then::kNone};
      if (!starttls_available_) return {bad(tag, "STARTTLS is not offered here"), Then::kNone};
      return ok(tag, "begin TLS negotiation now", Then::kStartTls);
    }
    if (n == "LOGIN" || n == "AUTHENTICATE") {
      if (!tls_ && !loopback_)
        return fail(tag, "[PRIVACYREQUIRED] log in over TLS (STARTTLS, or the implicit-TLS port)");
      if (n == "LOGIN") {
        if (!argc(2) || !c.args[0].is_astring() || !c.args[1].is_astring())
          return {bad(tag, "LOGIN needs a user name and a password"), Then::kNone};
        return login(tag, c.args[0].text, c.args[1].text);
      }
      if (c.args.empty() || c.args.size() > 2 || !c.args[0].is_atom())
        return {bad(tag, "AUTHENTICATE needs a mechanism"), Then::kNone};
      std::string mech = ascii_upper(c.args[0].text);
      if (mech != "PLAIN" && mech != "LOGIN") return fail(tag, "[CANNOT] mechanisms: PLAIN, LOGIN");
      auth_ = PendingAuth{tag, mech, "", 0};
      if (c.args.size() == 2) {
        // SASL-IR: the first answer on the command line ("=" for an empty one).
        std::string ir = c.args[1].text == "=" ? std::string() : c.args[1].text;
        return auth_line(ir);
      }
      return {mech == "PLAIN" ? "+ \r\n" : "+ VXNlcm5hbWU6\r\n", Then::kAuthLine};
    }
    return {bad(tag, "log in first (" + n.substr(0, 30) + " is not allowed before)"), Then::kNone};
  }

  if (n == "STARTTLS" || n == "LOGIN" || n == "AUTHENTICATE") return {bad(tag, "already logged in"), Then::kNone};
  if (n == "ENABLE") {
    std::string enabled;
    for (const auto& v : c.args) {
      std::string cap = ascii_upper(v.text);
      if (cap == "CONDSTORE" && !condstore_) {
        condstore_ = true;
        enabled += " CONDSTORE";
      } else if (cap == "IMAP4REV2" && !rev2_) {
        rev2_ = true;
        enabled += " IMAP4rev2";
      }
    }
    return {"* ENABLED" + enabled + "\r\n" + tag + " OK ENABLE completed\r\n", Then::kNone};
  }
  if (n == "NAMESPACE") return {"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n" + tag + " OK NAMESPACE completed\r\n", Then::kNone};
  if (n == "SELECT" || n == "EXAMINE") return select(c, n == "EXAMINE");
  if (n == "LIST" || n == "LSUB") return list(c, n == "LSUB");
  if (n == "STATUS") return status(c);
  if (n == "CREATE" || n == "DELETE" || n == "RENAME") return create_delete_rename(c);
  if (n == "SUBSCRIBE" || n == "UNSUBSCRIBE") return subscribe(c, n == "SUBSCRIBE");
  if (n == "APPEND") return append(c);
  if (n == "IDLE") {
    idle_tag_ = tag;
    return {sync(true) + "+ idling\r\n", Then::kIdle};
  }

  static const std::set<std::string, std::less<>> kSelectedOnly = {
      "CLOSE", "UNSELECT", "FETCH", "UID FETCH", "STORE", "UID STORE", "SEARCH", "UID SEARCH",
      "COPY",  "UID COPY", "MOVE",  "UID MOVE",  "EXPUNGE", "UID EXPUNGE"};
  if (!kSelectedOnly.contains(n)) return {bad(tag, "unknown command " + n.substr(0, 30)), Then::kNone};
  if (state_ != State::kSelected) return {bad(tag, n.substr(0, 30) + " needs a selected folder"), Then::kNone};
  if (n == "CLOSE" || n == "UNSELECT") {
    if (n == "CLOSE" && !sel_->read_only) (void)ctx_.store.expunge(user_.id, sel_->folder.id, std::nullopt);
    sel_.reset();
    state_ = State::kAuthenticated;
    return ok(tag, n + " completed");
  }
  if (n == "FETCH" || n == "UID FETCH") return fetch(c, n == "UID FETCH");
  if (n == "STORE" || n == "UID STORE") return store_flags(c, n == "UID STORE");
  if (n == "SEARCH" || n == "UID SEARCH") return search(c, n == "UID SEARCH");
  if (n == "COPY" || n == "UID COPY") return copy_move(c, n == "UID COPY", false);
  if (n == "MOVE" || n == "UID MOVE") return copy_move(c, n == "UID MOVE", true);
  return expunge(c, n == "UID EXPUNGE");
}

ImapSession::Reply ImapSession::select(const Command& c, bool read_only) {
  const std::string& tag = c.tag;
  sel_.reset();
  state_ = State::kAuthenticated;
  if (c.args.empty() || c.args.size() > 2) return {bad(tag, "SELECT needs a folder name"), Then::kNone};
  if (c.args.size() == 2) {
    // (CONDSTORE) parameter
    if (!c.args[1].is_list()) return {bad(tag, "bad SELECT parameters"), Then::kNone};
    for (const auto& p : c.args[1].list)
      if (ascii_iequals(p.text, "CONDSTORE")) condstore_ = true;
  }
  auto name = folder_name(c.args[0]);
  if (!name) return fail(tag, "[NONEXISTENT] no such folder");
  auto f = ctx_.store.folder(user_.id, *name);
  if (!f) return fail(tag, "[NONEXISTENT] no such folder");
  auto entries = ctx_.store.entries(user_.id, f->id);
  if (!entries) return fail(tag, "[SERVERBUG] " + entries.error().to_string());
  Selected s;
  s.folder = *f;
  s.read_only = read_only;
  s.view = std::move(*entries);
  std::size_t first_unseen = 0;
  for (std::size_t i = 0; i < s.view.size(); ++i) {
    for (const auto& k : s.view[i].keywords)
      if (s.keywords.size() < 1000 && s.keywords_lower.insert(ascii_lower(k)).second) s.keywords.push_back(k);
    if (!first_unseen && !(s.view[i].flags & kMsgSeen)) first_unseen = i + 1;
  }
  // \Recent: a read-write SELECT takes the folder's recent messages for itself; EXAMINE only looks.
  std::pair<std::uint32_t, std::uint32_t> recent{s.folder.first_recent_uid, s.folder.uidnext};
  if (!read_only)
    if (auto r = ctx_.store.claim_recent(user_.id, s.folder.id); r) recent = *r;
  for (const auto& e : s.view)
    if (e.uid >= recent.first && e.uid < recent.second) s.recent.insert(e.uid);
  sel_ = std::move(s);
  std::string out = flags_lines();
  out += "* " + std::to_string(sel_->view.size()) + " EXISTS\r\n";
  if (!rev2_) {
    out += "* " + std::to_string(sel_->recent.size()) + " RECENT\r\n";
    if (first_unseen) out += "* OK [UNSEEN " + std::to_string(first_unseen) + "] first unseen\r\n";
  }
  out += "* OK [UIDVALIDITY " + std::to_string(sel_->folder.uidvalidity) + "] UIDs valid\r\n";
  out += "* OK [UIDNEXT " + std::to_string(sel_->folder.uidnext) + "] predicted next UID\r\n";
  out += "* OK [HIGHESTMODSEQ " + std::to_string(sel_->folder.highest_modseq) + "] highest\r\n";
  if (rev2_) {
    out += "* LIST () \"/\" " + client_name(sel_->folder.name) + "\r\n";
  }
  state_ = State::kSelected;
  out += tag + (read_only ? " OK [READ-ONLY] EXAMINE completed\r\n" : " OK [READ-WRITE] SELECT completed\r\n");
  return {out, Then::kNone};
}

std::string ImapSession::status_items(const Folder& f, const std::vector<std::string>& items) {
  auto counts = ctx_.store.counts(user_.id, f.id);
  FolderCounts cn = counts ? *counts : FolderCounts{};
  std::uint32_t recent_count = 0;
  if (std::find(items.begin(), items.end(), "RECENT") != items.end())
    if (auto entries = ctx_.store.entries(user_.id, f.id); entries)
      for (const auto& e : *entries) recent_count += e.uid >= f.first_recent_uid;
  std::uint64_t size = 0;
  bool want_size = std::find(items.begin(), items.end(), "SIZE") != items.end();
  if (want_size) {
    auto snap = ctx_.archive.snapshot();
    if (auto entries = ctx_.store.entries(user_.id, f.id); entries && snap)
      for (const auto& e : *entries)
        if (auto r = (*snap)->record(e.seq)) size += imap_size(*r, **snap, *ctx_.sizes);
  }
  std::string out;
  for (const auto& it : items) {
    if (!out.empty()) out += ' ';
    if (it == "MESSAGES") out += "MESSAGES " + std::to_string(cn.messages);
    else if (it == "UIDNEXT") out += "UIDNEXT " + std::to_string(f.uidnext);
    else if (it == "UIDVALIDITY") out += "UIDVALIDITY " + std::to_string(f.uidvalidity);
    else if (it == "UNSEEN") out += "UNSEEN " + std::to_string(cn.unseen);
    else if (it == "DELETED") out += "DELETED " + std::to_string(cn.deleted);
    else if (it == "RECENT") out += "RECENT " + std::to_string(recent_count);
    else if (it == "SIZE") out += "SIZE " + std::to_string(size);
    else if (it == "HIGHESTMODSEQ") out += "HIGHESTMODSEQ " + std::to_string(f.highest_modseq);
  }
  return "* STATUS " + client_name(f.name) + " (" + out + ")\r\n";
}

ImapSession::Reply ImapSession::status(const Command& c) {
  const std::string& tag = c.tag;
  if (c.args.size() != 2 || !c.args[1].is_list() || c.args[1].list.empty())
    return {bad(tag, "STATUS needs a folder and a list of items"), Then::kNone};
  std::vector<std::string> items;
  for (const auto& v : c.args[1].list) {
    std::string it = ascii_upper(v.text);
    static const std::set<std::string> known = {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                                                "DELETED",  "RECENT",  "SIZE",        "HIGHESTMODSEQ"};
    if (!v.is_atom() || !known.count(it)) return {bad(tag, "unknown STATUS item " + v.text.substr(0, 30)), Then::kNone};
    items.push_back(it);
  }
  auto name = folder_name(c.args[0]);
  if (!name) return fail(tag, "[NONEXISTENT] no such folder");
  auto f = ctx_.store.folder(user_.id, *name);
  if (!f) return fail(tag, "[NONEXISTENT] no such folder");
  return {status_items(*f, items) + tag + " OK STATUS completed\r\n", Then::kNone};
}

ImapSession::Reply ImapSession::list(const Command& c, bool lsub) {
  const std::string& tag = c.tag;
  std::size_t i = 0;
  bool sel_subscribed = lsub, sel_special = false, ret_subscribed = false, ret_special = true, ret_children = true,
       recursive = false;
  std::vector<std::string> ret_status;
  if (!lsub && i < c.args.size() && c.args[i].is_list()) {
    for (const auto& o : c.args[i].list) {
      std::string u = ascii_upper(o.text);
      if (u == "SUBSCRIBED") sel_subscribed = ret_subscribed = true;
      else if (u == "SPECIAL-USE") sel_special = true;
      else if (u == "RECURSIVEMATCH") recursive = true;
      else if (u != "REMOTE") return {bad(tag, "unknown LIST selection option " + o.text.substr(0, 30)), Then::kNone};
    }
    // RFC 5258: RECURSIVEMATCH only modifies another selection option.
    if (recursive && !sel_subscribed && !sel_special) return {bad(tag, "RECURSIVEMATCH needs another selection option"), Then::kNone};
    ++i;
  }
  if (c.args.size() < i + 2 || !c.args[i].is_astring()) return {bad(tag, "LIST needs a reference and a pattern"), Then::kNone};
  std::string reference = c.args[i].text;
  std::vector<std::string> patterns;
  const Value& pv = c.args[i + 1];
  if (pv.is_list()) {
    for (const auto& p : pv.list) patterns.push_back(p.text);
  } else {
    patterns.push_back(pv.text);
  }
  i += 2;
  if (i < c.args.size()) {
    if (lsub || !c.args[i].is_atom() || !ascii_iequals(c.args[i].text, "RETURN") || i + 1 >= c.args.size() ||
        !c.args[i + 1].is_list())
      return {bad(tag, "bad LIST arguments"), Then::kNone};
    for (std::size_t k = 0; k < c.args[i + 1].list.size(); ++k) {
      const Value& o = c.args[i + 1].list[k];
      std::string u = ascii_upper(o.text);
      if (u == "SUBSCRIBED") ret_subscribed = true;
      else if (u == "SPECIAL-USE") ret_special = true;
      else if (u == "CHILDREN") ret_children = true;
      else if (u == "STATUS" && k + 1 < c.args[i + 1].list.size() && c.args[i + 1].list[k + 1].is_list()) {
        for (const auto& s : c.args[i + 1].list[++k].list) ret_status.push_back(ascii_upper(s.text));
      } else {
        return {bad(tag, "unknown LIST RETURN option " + o.text.substr(0, 30)), Then::kNone};
      }
    }
  }
  if (patterns.size() == 1 && patterns[0].empty()) {
    return {std::string("* ") + (lsub ? "LSUB" : "LIST") + " (\\Noselect) \"/\" \"\"\r\n" + tag + " OK " +
                (lsub ? "LSUB" : "LIST") + " completed\r\n",
            Then::kNone};
  }
  auto folders = ctx_.store.folders(user_.id);
  if (!folders) return fail(tag, "[SERVERBUG] " + folders.error().to_string());
  auto subscribed_list = ctx_.store.subscriptions(user_.id);
  if (!subscribed_list) return fail(tag, "[SERVERBUG] " + subscribed_list.error().to_string());
  const std::set<std::string> subs(subscribed_list->begin(), subscribed_list->end());
  std::map<std::string, const Folder*> by_name;
  for (const auto& f : *folders) by_name[f.name] = &f;
  // Names with their implied parents; subscribed names too (they may have lost their folder).
  std::set<std::string> names;
  auto with_parents = [&](const std::string& n) {
    names.insert(n);
    for (std::size_t s = n.find('/'); s != std::string::npos; s = n.find('/', s + 1)) names.insert(n.substr(0, s));
  };
  for (const auto& f : *folders) with_parents(f.name);
  if (sel_subscribed) for (const auto& n : subs) with_parents(n);
  auto has_children = [&](const std::string& name) {
    for (const auto& f : *folders)
      if (f.name.size() > name.size() && f.name.compare(0, name.size() + 1, name + "/") == 0) return true;
    return false;
  };
  std::vector<std::string> full_patterns;
  for (const auto& p : patterns) {
    std::string full = reference + p;
    if (!rev2_) {
      auto d = mutf7_decode(full);
      if (d) full = *d;
    }
    full_patterns.push_back(full);
  }
  auto matches = [&](const std::string& name) {
    for (const auto& p : full_patterns)
      if (list_match_name(p, name)) return true;
    return false;
  };
  std::string out;
  const char* verb = lsub ? "LSUB" : "LIST";
  for (const auto& name : names) {
    if (!matches(name)) continue;
    auto it = by_name.find(name);
    const Folder* f = it == by_name.end() ? nullptr : it->second;
    const bool is_subscribed = subs.count(name) > 0;
    std::string extended;
    if (sel_subscribed) {
      // A subscribed descendant that the patterns do not name itself: LSUB lists the name as
      // \Noselect (RFC 3501 6.3.9), RECURSIVEMATCH with CHILDINFO (RFC 5258 3.5).
      bool child_subscribed = false;
      for (const auto& n : subs)
        if (n.size() > name.size() && n.compare(0, name.size() + 1, name + "/") == 0 && !matches(n)) child_subscribed = true;
      if (!is_subscribed) {
        if (lsub && child_subscribed) {
          out += std::string("* LSUB (\\Noselect) \"/\" ") + client_name(name) + "\r\n";
        } else if (recursive && child_subscribed) {
          std::vector<std::string> attrs;
          if (!f) attrs.push_back(rev2_ ? "\\NonExistent" : "\\Noselect");
          if (ret_children) attrs.push_back(has_children(name) ? "\\HasChildren" : "\\HasNoChildren");
          std::string a;
          for (const auto& x : attrs) a += (a.empty() ? "" : " ") + x;
          out += "* LIST (" + a + ") \"/\" " + client_name(name) + " (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n";
        }
        continue;
      }
    }
    if (sel_special && (!f || f->special_use.empty())) continue;
    std::vector<std::string> attrs;
    if (!f) attrs.push_back(lsub ? "\\Noselect" : (rev2_ || sel_subscribed) ? "\\NonExistent" : "\\Noselect");
    if (ret_children && !lsub) attrs.push_back(has_children(name) ? "\\HasChildren" : "\\HasNoChildren");
    if (ret_special && f && !f->special_use.empty() && !lsub) attrs.push_back(f->special_use);
    if (ret_subscribed && is_subscribed && !lsub) attrs.push_back("\\Subscribed");
    std::string a;
    for (const auto& x : attrs) a += (a.empty() ? "" : " ") + x;
    out += std::string("* ") + verb + " (" + a + ") \"/\" " + client_name(name) + "\r\n";
    if (f && !ret_status.empty()) out += status_items(*f, ret_status);
  }
  return {out + tag + " OK " + verb + " completed\r\n", Then::kNone};
}

ImapSession::Reply ImapSession::create_delete_rename(const Command& c) {
  const std::string& tag = c.tag;
  const bool rename = c.name == "RENAME";
  if (c.args.size() != (rename ? 2u : 1u) && !(c.name == "CREATE" && c.args.size() == 2))
    return {bad(tag, c.name + " needs " + (rename ? "two folder names" : "a folder name")), Then::kNone};
  Value first = c.args[0];
  // "CREATE a/b/": the folder is "a/b" (RFC 9051 6.3.4: a trailing separator only says more may
  // be created below it).
  if (c.name == "CREATE" && first.text.size() > 1 && first.text.back() == '/') first.text.pop_back();
  auto name = folder_name(first);
  if (!name) return fail(tag, "[CANNOT] invalid folder name");
  Status s = ok_status();
  if (c.name == "CREATE") {
    std::string special;
    if (c.args.size() == 2 && c.args[1].is_list() && c.args[1].list.size() == 2 &&
        ascii_iequals(c.args[1].list[0].text, "USE") && c.args[1].list[1].is_list() && c.args[1].list[1].list.size() == 1)
      special = c.args[1].list[1].list[0].text;
    if (*name == "INBOX") return fail(tag, "[ALREADYEXISTS] INBOX exists");
    if (ctx_.store.folder(user_.id, *name)) return fail(tag, "[ALREADYEXISTS] the folder exists");
    auto made = ctx_.store.create_folder(user_.id, *name, special);
    if (!made) return fail(tag, "[CANNOT] " + made.error().context);
    return ok(tag, "CREATE completed");
  }
  if (c.name == "DELETE") {
    if (*name == "INBOX") return fail(tag, "[CANNOT] INBOX cannot be deleted");
    s = ctx_.store.delete_folder(user_.id, *name);
    if (!s) return fail(tag, s.error().code == ErrorCode::kNotFound ? "[NONEXISTENT] no such folder" : "[CANNOT] " + s.error().context);
    if (sel_ && sel_->folder.name == *name) sel_->gone = true;
    return ok(tag, "DELETE completed");
  }
  auto to = folder_name(c.args[1]);
  if (!to) return fail(tag, "[CANNOT] invalid folder name");
  s = ctx_.store.rename_folder(user_.id, *name, *to);
  if (!s) {
    if (s.error().code == ErrorCode::kNotFound) return fail(tag, "[NONEXISTENT] no such folder");
    if (s.error().context.find("already exists") != std::string::npos) return fail(tag, "[ALREADYEXISTS] " + s.error().context);
    return fail(tag, "[CANNOT] " + s.error().context);
  }
  return ok(tag, "RENAME completed");
}

ImapSession::Reply ImapSession::subscribe(const Command& c, bool on) {
  if (c.args.size() != 1) return {bad(c.tag, c.name + " needs a folder name"), Then::kNone};
  auto name = folder_name(c.args[0]);
  if (!name) return fail(c.tag, "[NONEXISTENT] no such folder");
  auto s = ctx_.store.set_subscribed(user_.id, *name, on);
  if (!s) return fail(c.tag, "[NONEXISTENT] no such folder");
  return ok(c.tag, c.name + " completed");
}

ImapSession::Reply ImapSession::append(Command& c) {
  const std::string& tag = c.tag;
  if (c.args.size() < 2 || c.args.size() > 4 || !c.args.back().is_string())
    return {bad(tag, "APPEND needs a folder and a message literal"), Then::kNone};
  auto name = folder_name(c.args[0]);
  if (!name) return fail(tag, "[TRYCREATE] no such folder");
  auto f = ctx_.store.folder(user_.id, *name);
  if (!f) return fail(tag, "[TRYCREATE] no such folder");
  std::uint32_t flags = 0;
  std::vector<std::string> keywords;
  std::int64_t date = unix_now();
  for (std::size_t i = 1; i + 1 < c.args.size(); ++i) {
    const Value& v = c.args[i];
    std::string error;
    if (v.is_list()) {
      if (!parse_flag_list(v, &flags, &keywords, &error)) return {bad(tag, error), Then::kNone};
    } else if (v.is_string()) {
      auto d = parse_imap_date_time(v.text);
      if (!d) return {bad(tag, "a bad date-time"), Then::kNone};
      date = *d;
    } else {
      return {bad(tag, "bad APPEND arguments"), Then::kNone};
    }
  }
  std::string raw = std::move(c.args.back().text);
  if (raw.empty()) return fail(tag, "an empty message");
  if (raw.size() > ctx_.max_message_bytes) return fail(tag, "[TOOBIG] the message is over the size limit");
  if (!ctx_.append) return fail(tag, "[CANNOT] APPEND is not available here");
  if (ctx_.disk_room && !ctx_.disk_room(raw.size())) return fail(tag, std::string(kNoDiskSpace));
  auto seq = ctx_.append(user_, f->name, std::move(raw), date);
  if (!seq) return fail(tag, "[CANNOT] " + seq.error().context);
  // The follower places it (engine/mailbox.h, connector "imap"); find the UID it got.
  for (int i = 0; i < 100 && ctx_.store.followed() < *seq; ++i)
    if (!ctx_.store.follow(ctx_.archive)) break;
  auto entry = ctx_.store.find_seq(user_.id, f->id, *seq);
  if (!entry || !*entry) return fail(tag, "[SERVERBUG] the message was archived but is not in the folder");
  if (flags || !keywords.empty()) (void)ctx_.store.change_flags(user_.id, f->id, {(*entry)->uid}, {FlagMode::kAdd, flags, keywords, {}});
  // A client's own copy of mail it just sent replaces the one submission filed in Sent (one copy,
  // not two; MailboxStore::replace_sent_copies). Failing to find or drop it leaves both, as before.
  if (f->special_use == "\\Sent") (void)ctx_.store.replace_sent_copies(user_.id, f->id, (*entry)->uid, ctx_.archive);
  std::string out = sel_ && sel_->folder.id == f->id ? sync(true) : std::string();
  return {out + tag + " OK [APPENDUID " + std::to_string(f->uidvalidity) + " " + std::to_string((*entry)->uid) +
              "] APPEND completed\r\n",
          Then::kNone};
}

// ---- FETCH ----

ImapSession::Reply ImapSession::fetch(const Command& c, bool uid) {
  const std::string& tag = c.tag;
  if (c.args.size() < 2 || c.args.size() > 3 || !c.args[0].is_atom())
    return {bad(tag, "FETCH needs a sequence set and attributes"), Then::kNone};
  auto set = parse_sequence_set(c.args[0].text);
  if (!set) return {bad(tag, "a bad sequence set"), Then::kNone};
  std::string error;
  auto attrs = parse_fetch_attrs(c.args[1], &error);
  if (!attrs) return {bad(tag, error), Then::kNone};
  std::optional<std::uint64_t> changed_since;
  if (c.args.size() == 3) {
    const Value& m = c.args[2];
    if (!m.is_list() || m.list.size() != 2 || !ascii_iequals(m.list[0].text, "CHANGEDSINCE"))
      return {bad(tag, "unknown FETCH modifier"), Then::kNone};
    try {
      changed_since = std::stoull(m.list[1].text);
    } catch (...) {
      return {bad(tag, "a bad CHANGEDSINCE"), Then::kNone};
    }
  }
  std::string pre;
  if (changed_since || std::any_of(attrs->begin(), attrs->end(), [](const FetchAttr& a) { return a.kind == FetchAttr::Kind::kModseq; }))
    pre += enable_condstore();
  pre += sync(false);
  PendingFetch f;
  f.tag = tag;
  f.uid = uid;
  f.attrs = std::move(*attrs);
  f.name = uid ? "UID FETCH" : "FETCH";
  f.want_modseq = condstore_ && (changed_since || std::any_of(f.attrs.begin(), f.attrs.end(), [](const FetchAttr& a) {
                                   return a.kind == FetchAttr::Kind::kModseq;
                                 }));
  for (const auto& a : f.attrs)
    if (((a.kind == FetchAttr::Kind::kSection || a.kind == FetchAttr::Kind::kBinary) && !a.peek) ||
        a.kind == FetchAttr::Kind::kRfc822 ||
        a.kind == FetchAttr::Kind::kRfc822Text)
      f.mark_seen = !sel_->read_only;
  f.indexes = resolve(*set, uid);
  if (changed_since)
    std::erase_if(f.indexes, [&](std::size_t i) { return sel_->view[i].modseq <= *changed_since; });
  if (!uid && !set->saved)
    for (auto [a, b] : set->ranges)
      if ((a != SequenceSet::kStar && a > sel_->view.size()) || (b != SequenceSet::kStar && b > sel_->view.size()))
        return {pre + bad(tag, "a sequence number beyond the last message (" + std::to_string(sel_->view.size()) + ")"),
                Then::kNone};
  fetch_ = std::move(f);
  Reply r = more();
  r.out = pre + r.out;
  return r;
}

std::string ImapSession::fetch_one(std::size_t index, PendingFetch& f, const ArchiveSnapshot& snap) {
  MailEntry& e = sel_->view[index];
  using K = FetchAttr::Kind;
  bool need_record = false, need_raw = false, need_tree = false;
  for (const auto& a : f.attrs) {
    switch (a.kind) {
      case K::kInternalDate:
      case K::kSize:
        need_record = true;
        break;
      case K::kEnvelope:
      case K::kBody:
      case K::kBodyStructure:
      case K::kBinarySize:
      case K::kBinary:
        need_record = need_raw = need_tree = true;
        break;
      case K::kSection:
      case K::kRfc822:
      case K::kRfc822Header:
      case K::kRfc822Text:
        need_record = need_raw = true;
        need_tree = need_tree || (a.kind != K::kRfc822 && !(a.kind == K::kSection && a.section.part.empty() &&
                                                              a.section.text == Section::Text::kAll));
        break;
      default:
        break;
    }
  }
  std::optional<ArchiveRecord> rec;
  std::string raw;
  if (need_record) {
    auto r = snap.record(e.seq);
    if (r) rec = std::move(*r);
  }
  // RFC822.SIZE of an imported message: the size of its IMAP form, counted once (ctx_.sizes).
  std::optional<std::uint64_t> size;
  if (rec) {
    const bool want_size = std::any_of(f.attrs.begin(), f.attrs.end(), [](const FetchAttr& a) { return a.kind == K::kSize; });
    if (want_size && !need_raw) size = imap_size(*rec, snap, *ctx_.sizes);
  }
  if (need_raw && rec) {
    auto r = snap.raw(*rec);
    if (r) raw = may_differ_in_imap_form(*rec) ? imap_form(std::move(*r)) : std::move(*r);
    size = r ? raw.size() : rec->raw_size;
    if (viewed_.size() < 1000000) viewed_.insert(e.seq);
  }
  MimeNode tree;
  if (need_tree) tree = parse_mime_tree(raw);
  bool set_seen = f.mark_seen && !(e.flags & kMsgSeen);
  if (set_seen) {
    auto ch = ctx_.store.change_flags(user_.id, sel_->folder.id, {e.uid}, {FlagMode::kAdd, kMsgSeen, {}, {}});
    if (ch && !ch->changed.empty()) e = ch->changed[0];
  }
  std::string items;
  auto add = [&](const std::string& s) {
    if (!items.empty()) items += ' ';
    items += s;
  };
  bool has_uid = false, has_flags = false, has_modseq = false;
  for (const auto& a : f.attrs) {
    switch (a.kind) {
      case K::kUid:
        if (!has_uid) add("UID " + std::to_string(e.uid));
        has_uid = true;
        break;
      case K::kFlags:
        if (!has_flags) add("FLAGS " + flags_of(e));
        has_flags = true;
        break;
      case K::kModseq:
        if (!has_modseq) add("MODSEQ (" + std::to_string(e.modseq) + ")");
        has_modseq = true;
        break;
      case K::kInternalDate:
        add("INTERNALDATE " + imap_date_time(rec ? rec->envelope.received_at : 0));
        break;
      case K::kSize:
        add("RFC822.SIZE " + std::to_string(size.value_or(0)));
        break;
      case K::kEnvelope:
        add("ENVELOPE " + envelope(raw, tree));
        break;
      case K::kBody:
        add("BODY " + body_structure(raw, tree, false));
        break;
      case K::kBodyStructure:
        add("BODYSTRUCTURE " + body_structure(raw, tree, true));
        break;
      case K::kBinarySize:
      case K::kBinary: {
        bool unknown_cte = false;
        auto bytes = binary_section(raw, tree, a.section, &unknown_cte);
        if (unknown_cte) {
          f.unknown_cte = true;  // the item is left out; the FETCH ends NO [UNKNOWN-CTE]
          break;
        }
        std::string b = bytes ? std::move(*bytes) : std::string();
        if (a.kind == K::kBinarySize) {
          add(a.name + " " + std::to_string(b.size()));
          break;
        }
        if (a.partial) {
          auto [off, count] = *a.partial;
          b = off >= b.size() ? std::string() : b.substr(static_cast<std::size_t>(off), static_cast<std::size_t>(count));
        }
        // A literal8 (RFC 3516 4.2) when the bytes hold a NUL, which a plain literal may not.
        const bool nul = b.find('\0') != std::string::npos;
        add(a.name + (nul ? " ~{" : " {") + std::to_string(b.size()) + "}\r\n" + b);
        break;
      }
      case K::kRfc822:
        add("RFC822 " + imap_string(without_nul(raw)));
        break;
      case K::kRfc822Header:
        add("RFC822.HEADER " + imap_string(without_nul(raw.substr(tree.header_begin, tree.header_end - tree.header_begin))));
        break;
      case K::kRfc822Text:
        add("RFC822.TEXT " + imap_string(without_nul(raw.substr(tree.body_begin, tree.body_end - tree.body_begin))));
        break;
      case K::kSection: {
        std::optional<std::string> bytes;
        if (a.section.part.empty() && a.section.text == Section::Text::kAll)
          bytes = raw;
        else
          bytes = section_bytes(raw, tree, a.section);
        std::string b = bytes ? without_nul(std::move(*bytes)) : std::string();
        if (a.partial) {
          auto [off, count] = *a.partial;
          b = off >= b.size() ? std::string() : b.substr(static_cast<std::size_t>(off), static_cast<std::size_t>(count));
        }
        // Always a literal for body data: clients expect it, and bytes may be 8-bit.
        add(a.name + " {" + std::to_string(b.size()) + "}\r\n" + b);
        break;
      }
    }
  }
  if (f.uid && !has_uid) items = "UID " + std::to_string(e.uid) + (items.empty() ? "" : " ") + items;
  if (set_seen && !has_flags) add("FLAGS " + flags_of(e));
  if (f.want_modseq && !has_modseq) add("MODSEQ (" + std::to_string(e.modseq) + ")");
  std::string pre = (has_flags || set_seen) ? announce(e.keywords) : std::string();
  return pre + "* " + std::to_string(index + 1) + " FETCH (" + items + ")\r\n";
}

ImapSession::Reply ImapSession::more() {
  if (!fetch_) return {"", Then::kNone};
  PendingFetch& f = *fetch_;
  std::string out;
  auto snap = ctx_.archive.snapshot();
  if (!snap) {
    std::string tag = f.tag;
    fetch_.reset();
    return fail(tag, "[SERVERBUG] " + snap.error().to_string());
  }
  while (f.next < f.indexes.size() && out.size() < kFetchChunkBytes) out += fetch_one(f.indexes[f.next++], f, **snap);
  if (f.next < f.indexes.size()) return {out, Then::kMore};
  if (f.unknown_cte)
    out += f.tag + " NO [UNKNOWN-CTE] a part has a Content-Transfer-Encoding that cannot be decoded\r\n";
  else
    out += f.tag + " OK " + f.name + " completed\r\n";
  fetch_.reset();
  return {out, Then::kNone};
}

// ---- STORE ----

ImapSession::Reply ImapSession::store_flags(const Command& c, bool uid) {
  const std::string& tag = c.tag;
  std::size_t i = 0;
  if (c.args.size() < 3 || !c.args[0].is_atom()) return {bad(tag, "STORE needs a set, an action and flags"), Then::kNone};
  auto set = parse_sequence_set(c.args[i++].text);
  if (!set) return {bad(tag, "a bad sequence set"), Then::kNone};
  std::optional<std::uint64_t> unchanged_since;
  if (c.args[i].is_list()) {
    const Value& m = c.args[i++];
    if (m.list.size() != 2 || !ascii_iequals(m.list[0].text, "UNCHANGEDSINCE"))
      return {bad(tag, "unknown STORE modifier"), Then::kNone};
    try {
      unchanged_since = std::stoull(m.list[1].text);
    } catch (...) {
      return {bad(tag, "a bad UNCHANGEDSINCE"), Then::kNone};
    }
  }
  if (i + 2 > c.args.size() || !c.args[i].is_atom()) return {bad(tag, "STORE needs an action and flags"), Then::kNone};
  std::string action = ascii_upper(c.args[i++].text);
  bool silent = false;
  if (action.size() > 7 && action.substr(action.size() - 7) == ".SILENT") {
    silent = true;
    action.resize(action.size() - 7);
  }
  FlagChange change;
  if (action == "FLAGS") change.mode = FlagMode::kReplace;
  else if (action == "+FLAGS") change.mode = FlagMode::kAdd;
  else if (action == "-FLAGS") change.mode = FlagMode::kRemove;
  else return {bad(tag, "STORE action must be FLAGS, +FLAGS or -FLAGS"), Then::kNone};
  std::string error;
  Value flags_value;
  if (i + 1 == c.args.size()) {
    flags_value = c.args[i];
  } else {
    flags_value.kind = Value::Kind::kList;  // flags without parentheses
    flags_value.list.assign(c.args.begin() + static_cast<std::ptrdiff_t>(i), c.args.end());
  }
  if (!parse_flag_list(flags_value, &change.flags, &change.keywords, &error)) return {bad(tag, error), Then::kNone};
  change.unchanged_since = unchanged_since;
  if (sel_->read_only) return fail(tag, "[READ-ONLY] the folder is open read-only");
  std::string pre = unchanged_since ? enable_condstore() : std::string();
  pre += sync(false);
  auto indexes = resolve(*set, uid);
  std::vector<std::uint32_t> uids;
  for (auto ix : indexes) uids.push_back(sel_->view[ix].uid);
  auto r = ctx_.store.change_flags(user_.id, sel_->folder.id, uids, change);
  if (!r) return fail(tag, "[SERVERBUG] " + r.error().to_string());
  std::map<std::uint32_t, std::size_t> pos;
  for (auto ix : indexes) pos[sel_->view[ix].uid] = ix;
  std::string out = pre;
  for (const auto& e : r->changed) {
    auto it = pos.find(e.uid);
    if (it == pos.end()) continue;
    sel_->view[it->second] = e;
    out += announce(e.keywords);
    if (!silent || condstore_) {
      out += "* " + std::to_string(it->second + 1) + " FETCH (";
      std::string items;
      if (uid) items += "UID " + std::to_string(e.uid);
      if (!silent) items += std::string(items.empty() ? "" : " ") + "FLAGS " + flags_of(e);
      if (condstore_) items += std::string(items.empty() ? "" : " ") + "MODSEQ (" + std::to_string(e.modseq) + ")";
      out += items + ")\r\n";
    }
  }
  if (!r->failed_modified.empty()) {
    std::vector<std::uint32_t> ids;
    for (auto u : r->failed_modified) {
      if (uid) {
        ids.push_back(u);
      } else if (auto it = pos.find(u); it != pos.end()) {
        ids.push_back(static_cast<std::uint32_t>(it->second + 1));
      }
    }
    std::sort(ids.begin(), ids.end());
    return {out + tag + " OK [MODIFIED " + join_uids(ids) + "] conditional STORE completed\r\n", Then::kNone};
  }
  return {out + tag + " OK STORE completed\r\n", Then::kNone};
}

// ---- SEARCH ----

namespace {

struct SearchData {
  std::map<const SearchKey*, std::set<std::uint64_t>> text_hits;  // from the index
  std::uint64_t indexed_upto = 0;  // records above this are checked against their bytes
};

void collect_text_keys(const SearchKey& k, std::vector<const SearchKey*>& out) {
  using K = SearchKey::Kind;
  switch (k.kind) {
    case K::kText: case K::kBody: case K::kSubject: case K::kFrom: case K::kTo: case K::kCc: case K::kBcc:
      out.push_back(&k);
      break;
    default:
      for (const auto& c : k.children) collect_text_keys(c, out);
  }
}

}  // namespace

namespace {

// A command's arguments as text, for the audit log (strings quoted, lists in parentheses, at most
// about 500 bytes).
void args_text(const std::vector<Value>& args, std::string& out) {
  for (const Value& v : args) {
    if (out.size() > 500) return;
    if (!out.empty() && out.back() != '(') out += ' ';
    if (v.is_list()) {
      out += '(';
      args_text(v.list, out);
      out += ')';
    } else if (v.is_string()) {
      out += '"' + v.text.substr(0, 200) + '"';
    } else {
      out += v.text.substr(0, 200);
    }
  }
}

}  // namespace

ImapSession::Reply ImapSession::search(const Command& c, bool uid) {
  const std::string& tag = c.tag;
  std::string error;
  auto req = parse_search(c.args, 0, &error);
  if (!req) return {bad(tag, error), Then::kNone};
  ++searches_;
  if (searched_.size() < 50) {
    std::string text;
    args_text(c.args, text);
    searched_.push_back(std::move(text));
  }
  if (!req->charset.empty() && req->charset != "UTF-8" && req->charset != "US-ASCII")
    return fail(tag, "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset");
  std::string pre = has_modseq_key(req->key) ? enable_condstore() : std::string();
  pre += sync(false);
  auto& view = sel_->view;
  // Text keys through the index, once each, in large folders; small ones are read message by
  // message (exact substrings).
  std::vector<const SearchKey*> text_keys;
  collect_text_keys(req->key, text_keys);
  SearchData data;
  std::unique_ptr<indexer::IndexReader> reader;
  const bool exact = view.size() <= kExactSearchMessages;
  if (!text_keys.empty() && !exact) {
    // Messages past the index's watermark are read and matched one by one (below): a few cost less
    // than the commit a reader may ask for (it writes the index blocks it changes), so the
    // index is asked to commit (ctx_.sync_index) only when more than kAskAbove of the folder's are.
    // Test: tests/e2e/test_imap.py ImapIndexSearchTest.
    auto open = [&] {
      auto r = indexer::IndexReader::open(ctx_.index_dir);
      reader = r ? std::move(*r) : nullptr;
      data.indexed_upto = reader ? reader->watermark() : 0;
    };
    open();
    if (ctx_.sync_index) {
      std::size_t past = 0;
      for (const MailEntry& e : view) past += e.seq > data.indexed_upto;
      if (past > kAskAbove) {
        ctx_.sync_index();
        open();
      }
    }
    using K = SearchKey::Kind;
    for (const SearchKey* k : text_keys) {
      if (!reader) break;
      indexer::TextField f = indexer::TextField::kText;
      switch (k->kind) {
        case K::kBody: f = indexer::TextField::kBody; break;
        case K::kSubject: f = indexer::TextField::kSubject; break;
        case K::kFrom: f = indexer::TextField::kFrom; break;
        case K::kTo: f = indexer::TextField::kTo; break;
        case K::kCc: f = indexer::TextField::kCc; break;
        case K::kBcc: f = indexer::TextField::kBcc; break;
        default: break;
      }
      auto hits = reader->match_words(f, k->text);
      if (!hits) return fail(tag, "[SERVERBUG] " + hits.error().to_string());
      data.text_hits[k].insert(hits->begin(), hits->end());
    }
  }
  auto snap = ctx_.archive.snapshot();
  if (!snap) return fail(tag, "[SERVERBUG] " + snap.error().to_string());
  const std::uint32_t largest_uid = view.empty() ? 0 : view.back().uid;
  std::vector<std::uint32_t> matched_seqnums, matched_uids;
  std::vector<std::uint64_t> matched_modseqs;
  std::uint64_t max_modseq = 0;
  bool uses_modseq = false;
  for (std::size_t i = 0; i < view.size(); ++i) {
    const MailEntry& e = view[i];
    std::optional<ArchiveRecord> rec;
    std::optional<std::string> raw;
    TextCache text_cache;  // for every key of this SEARCH that reads the message: text_matches, SENT*
    auto record = [&]() -> const ArchiveRecord* {
      if (!rec) {
        auto r = (*snap)->record(e.seq);
        if (!r) return nullptr;
        rec = std::move(*r);
      }
      return &*rec;
    };
    auto bytes = [&]() -> const std::string& {
      if (!raw) {
        raw = std::string();
        if (auto* r = record())
          if (auto b = (*snap)->raw(*r)) raw = may_differ_in_imap_form(*r) ? imap_form(std::move(*b)) : std::move(*b);
      }
      return *raw;
    };
    auto size = [&]() -> std::optional<std::uint64_t> {
      auto* r = record();
      if (!r) return std::nullopt;
      return raw ? raw->size() : imap_size(*r, **snap, *ctx_.sizes);
    };
    std::function<bool(const SearchKey&)> eval = [&](const SearchKey& k) -> bool {
      using K = SearchKey::Kind;
      switch (k.kind) {
        case K::kAll: return true;
        case K::kAnd:
          for (const auto& ch : k.children)
            if (!eval(ch)) return false;
          return true;
        case K::kOr: return eval(k.children[0]) || eval(k.children[1]);
        case K::kNot: return !eval(k.children[0]);
        case K::kSequence: return k.set->saved ? std::count(saved_uids_.begin(), saved_uids_.end(), e.uid) > 0
                                               : k.set->contains(static_cast<std::uint32_t>(i + 1), static_cast<std::uint32_t>(view.size()));
        case K::kUid: return k.set->saved ? std::count(saved_uids_.begin(), saved_uids_.end(), e.uid) > 0
                                          : k.set->contains(e.uid, largest_uid);
        case K::kFlag:
          if (!k.keyword.empty())
            return std::any_of(e.keywords.begin(), e.keywords.end(), [&](const std::string& x) { return ascii_iequals(x, k.keyword); });
          return (e.flags & k.flag) != 0;
        case K::kUnflag:
          if (!k.keyword.empty())
            return !std::any_of(e.keywords.begin(), e.keywords.end(), [&](const std::string& x) { return ascii_iequals(x, k.keyword); });
          return (e.flags & k.flag) == 0;
        case K::kNew: return sel_->recent.count(e.uid) && !(e.flags & kMsgSeen);
        case K::kRecent: return sel_->recent.count(e.uid) > 0;
        case K::kOld: return !sel_->recent.count(e.uid);
        case K::kModseq:
          uses_modseq = true;
          return e.modseq >= static_cast<std::uint64_t>(k.number);
        case K::kLarger: { auto n = size(); return n && *n > static_cast<std::uint64_t>(k.number); }
        case K::kSmaller: { auto n = size(); return n && *n < static_cast<std::uint64_t>(k.number); }
        case K::kBefore: case K::kOn: case K::kSince: {
          auto* r = record();
          if (!r) return false;
          std::int64_t day = r->envelope.received_at >= 0 ? r->envelope.received_at / 86400 : (r->envelope.received_at - 86399) / 86400;
          return k.kind == K::kBefore ? day < k.number : k.kind == K::kOn ? day == k.number : day >= k.number;
        }
        case K::kSentBefore: case K::kSentOn: case K::kSentSince: {
          if (!text_cache.tree) text_cache.tree = parse_mime_tree(bytes());
          const MimeNode& t = *text_cache.tree;
          auto h = mime_header(std::string_view(bytes()).substr(t.header_begin, t.header_end - t.header_begin), "Date");
          if (!h) return false;
          auto day = date_value_day(*h);  // the date as written, in its own zone
          if (!day) return false;
          return k.kind == K::kSentBefore ? *day < k.number : k.kind == K::kSentOn ? *day == k.number : *day >= k.number;
        }
        default: {
          // Text keys: in a large folder the index answers for what it holds; everything else
          // (small folders, records newer than the index, HEADER) is read.
          auto it = data.text_hits.find(&k);
          if (it != data.text_hits.end() && e.seq <= data.indexed_upto) return it->second.count(e.seq) > 0;
          return text_matches(k, bytes(), text_cache);
        }
      }
    };
    if (eval(req->key)) {
      matched_seqnums.push_back(static_cast<std::uint32_t>(i + 1));
      matched_uids.push_back(e.uid);
      matched_modseqs.push_back(e.modseq);
      max_modseq = std::max(max_modseq, e.modseq);
    }
  }
  const auto& ids = uid ? matched_uids : matched_seqnums;
  std::string out = pre;
  if (req->esearch || rev2_) {
    std::vector<std::string> opts = req->esearch ? *req->esearch : std::vector<std::string>{"ALL"};
    if (opts.empty()) opts = {"ALL"};
    bool save = std::find(opts.begin(), opts.end(), "SAVE") != opts.end();
    if (save) saved_uids_ = matched_uids;
    out += "* ESEARCH (TAG " + imap_string(tag) + ")" + (uid ? " UID" : "");
    for (const auto& o : opts) {
      if (o == "MIN" && !ids.empty()) out += " MIN " + std::to_string(ids.front());
      if (o == "MAX" && !ids.empty()) out += " MAX " + std::to_string(ids.back());
      if (o == "COUNT") out += " COUNT " + std::to_string(ids.size());
      if (o == "ALL" && !ids.empty()) out += " ALL " + join_uids(ids);
    }
    if (uses_modseq && !ids.empty()) {
      // RFC 7162 3.1.5: the highest mod-sequence of the messages returned (only MIN's and MAX's
      // when nothing else is asked for).
      bool only_min_max = std::none_of(opts.begin(), opts.end(), [](const std::string& o) { return o == "ALL" || o == "COUNT"; });
      std::uint64_t m = max_modseq;
      if (only_min_max) {
        m = 0;
        for (const auto& o : opts) {
          if (o == "MIN") m = std::max(m, matched_modseqs.front());
          if (o == "MAX") m = std::max(m, matched_modseqs.back());
        }
      }
      if (m) out += " MODSEQ " + std::to_string(m);
    }
    out += "\r\n";
  } else {
    out += "* SEARCH";
    for (auto id : ids) out += " " + std::to_string(id);
    if (uses_modseq && !ids.empty()) out += " (MODSEQ " + std::to_string(max_modseq) + ")";
    out += "\r\n";
  }
  return {out + tag + " OK SEARCH completed\r\n", Then::kNone};
}

// ---- COPY, MOVE, EXPUNGE ----

ImapSession::Reply ImapSession::copy_move(const Command& c, bool uid, bool move) {
  const std::string& tag = c.tag;
  if (c.args.size() != 2 || !c.args[0].is_atom()) return {bad(tag, c.name + " needs a set and a folder"), Then::kNone};
  auto set = parse_sequence_set(c.args[0].text);
  if (!set) return {bad(tag, "a bad sequence set"), Then::kNone};
  auto name = folder_name(c.args[1]);
  if (!name) return fail(tag, "[TRYCREATE] no such folder");
  auto dest = ctx_.store.folder(user_.id, *name);
  if (!dest) return fail(tag, "[TRYCREATE] no such folder");
  if (move && sel_->read_only) return fail(tag, "[READ-ONLY] the folder is open read-only");
  std::string pre = sync(false);
  auto indexes = resolve(*set, uid);
  if (indexes.empty()) return {pre + tag + " OK " + c.name + " completed: nothing to do\r\n", Then::kNone};
  std::vector<std::uint32_t> uids;
  for (auto ix : indexes) uids.push_back(sel_->view[ix].uid);
  auto r = ctx_.store.copy(user_.id, sel_->folder.id, uids, dest->id, move);
  if (!r) return fail(tag, "[SERVERBUG] " + r.error().to_string());
  std::vector<std::uint32_t> from, to;
  for (auto [a, b] : r->uids) {
    from.push_back(a);
    to.push_back(b);
  }
  std::string code = from.empty() ? std::string()
                                  : "[COPYUID " + std::to_string(r->uidvalidity) + " " + join_uids(from) + " " + join_uids(to) + "] ";
  if (move) {
    // RFC 6851: COPYUID in an untagged OK, then the expunges, then the tagged OK.
    std::string out = pre + (code.empty() ? "" : "* OK " + code + "moved\r\n") + sync(true);
    return {out + tag + " OK MOVE completed\r\n", Then::kNone};
  }
  return {pre + tag + " OK " + code + "COPY completed\r\n", Then::kNone};
}

ImapSession::Reply ImapSession::expunge(const Command& c, bool uid) {
  const std::string& tag = c.tag;
  if (sel_->read_only) return fail(tag, "[READ-ONLY] the folder is open read-only");
  std::optional<std::vector<std::uint32_t>> only;
  if (uid) {
    if (c.args.size() != 1 || !c.args[0].is_atom()) return {bad(tag, "UID EXPUNGE needs a UID set"), Then::kNone};
    auto set = parse_sequence_set(c.args[0].text);
    if (!set) return {bad(tag, "a bad UID set"), Then::kNone};
    only.emplace();
    for (auto ix : resolve(*set, true)) only->push_back(sel_->view[ix].uid);
  } else if (!c.args.empty()) {
    return {bad(tag, "EXPUNGE takes no arguments"), Then::kNone};
  }
  auto r = ctx_.store.expunge(user_.id, sel_->folder.id, only);
  if (!r) return fail(tag, "[SERVERBUG] " + r.error().to_string());
  std::string out = sync(true);
  return {out + tag + " OK EXPUNGE completed\r\n", Then::kNone};
}

std::string ImapSession::idle_poll() {
  return sync(true);
}

ImapSession::Reply ImapSession::idle_done(const std::string& line) {
  std::string tag = idle_tag_;
  idle_tag_.clear();
  if (!ascii_iequals(line, "DONE")) return {bad(tag, "IDLE ends with DONE"), Then::kNone};
  return {sync(true) + tag + " OK IDLE terminated\r\n", Then::kNone};
}

}  // namespace mailark::api::imap
