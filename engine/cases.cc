// The case store's LMDB translation point (engine/cases.h).
#include "engine/cases.h"

#include <lmdb.h>

#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/ascii.h"
#include "common/dates.h"
#include "common/json_text.h"
#include "engine/lmdb_util.h"
#include "engine/record.h"

namespace mailark {

using lmdb::be32;
using lmdb::be64;
using lmdb::from_be32;
using lmdb::from_be64;
using lmdb::Txn;
using lmdb::val;
using lmdb::view;

namespace {

constexpr std::uint32_t kFormat = 1;
constexpr std::size_t kMapSize = std::size_t{1} << 34;  // 16 GiB of address space; the file grows as used
constexpr std::size_t kMaxText = 64 * 1024;            // a name, description, note or query

Error store_error(const std::string& what, int rc) {
  return Error{ErrorCode::kIo, "case store: " + what + ": " + mdb_strerror(rc), ""};
}

nlohmann::json to_json(const Case& c) {
  nlohmann::json searches = nlohmann::json::array(), notes = nlohmann::json::array();
  for (const auto& s : c.searches)
    searches.push_back({{"query", s.query}, {"from", s.from}, {"to", s.to}, {"saved_at", s.saved_at}, {"saved_by", s.saved_by}});
  for (const auto& n : c.notes) notes.push_back({{"at", n.at}, {"by", n.by}, {"text", n.text}});
  return {{"v", 1},           {"id", c.id},         {"name", c.name},         {"description", c.description},
          {"custodians", c.custodians}, {"searches", searches}, {"notes", notes}, {"hold", c.hold},
          {"closed", c.closed}, {"created_at", c.created_at}, {"created_by", c.created_by}, {"closed_at", c.closed_at}};
}

Result<Case> from_json(std::string_view bytes) {
  auto j = nlohmann::json::parse(bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("v", 0) != 1)
    return make_error(ErrorCode::kCorrupt, "case store: a case record is not version 1 JSON");
  try {
    Case c;
    c.id = j.at("id").get<std::uint32_t>();
    c.name = j.at("name").get<std::string>();
    c.description = j.value("description", "");
    c.custodians = j.value("custodians", std::vector<std::string>{});
    for (const auto& s : j.value("searches", nlohmann::json::array()))
      c.searches.push_back({s.at("query").get<std::string>(), s.value("from", ""), s.value("to", ""),
                            s.value("saved_at", std::int64_t{0}), s.value("saved_by", "")});
    for (const auto& n : j.value("notes", nlohmann::json::array()))
      c.notes.push_back({n.value("at", std::int64_t{0}), n.value("by", ""), n.at("text").get<std::string>()});
    c.hold = j.value("hold", false);
    c.closed = j.value("closed", false);
    c.created_at = j.value("created_at", std::int64_t{0});
    c.created_by = j.value("created_by", "");
    c.closed_at = j.value("closed_at", std::int64_t{0});
    return c;
  } catch (const nlohmann::json::exception& e) {
    return make_error(ErrorCode::kCorrupt, std::string("case store: a case record is damaged: ") + e.what());
  }
}

Status check_text(const std::string& what, const std::string& s, bool one_line) {
  if (s.size() > kMaxText) return make_error(ErrorCode::kInvalidArgument, what + " is longer than 64 KiB");
  for (unsigned char c : s)
    if ((c < 0x20 && !(c == '\n' && !one_line) && c != '\t') || c == 0x7f)
      return make_error(ErrorCode::kInvalidArgument, what + " holds a control character");
  return ok_status();
}

// A YYYY-MM-DD date, or empty.
Status check_day(const std::string& what, const std::string& d) {
  if (d.empty()) return ok_status();
  bool ok = d.size() == 10 && d[4] == '-' && d[7] == '-';
  for (std::size_t i = 0; ok && i < d.size(); ++i) ok = (i == 4 || i == 7) || (d[i] >= '0' && d[i] <= '9');
  if (ok) {  // a day of the calendar: it reads back the same (no 2001-02-30)
    std::tm tm{};
    tm.tm_year = std::stoi(d.substr(0, 4)) - 1900;
    tm.tm_mon = std::stoi(d.substr(5, 2)) - 1;
    tm.tm_mday = std::stoi(d.substr(8, 2));
    std::tm want = tm;
    std::time_t t = timegm(&tm);
    std::tm back{};
    ok = gmtime_r(&t, &back) && back.tm_year == want.tm_year && back.tm_mon == want.tm_mon &&
         back.tm_mday == want.tm_mday;
  }
  if (!ok) return make_error(ErrorCode::kInvalidArgument, what + " is not a date (YYYY-MM-DD): " + d);
  return ok_status();
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s)
    if (c != '"') out.push_back(c);
  return out + "\"";
}

std::string custodian_part(const Case& c) {
  std::string out;
  for (const auto& who : c.custodians) out += (out.empty() ? "" : " OR ") + std::string("custodian:") + quoted(who);
  return c.custodians.size() > 1 ? "(" + out + ")" : out;
}

}  // namespace

nlohmann::json case_to_json(const Case& c) {
  nlohmann::json searches = nlohmann::json::array(), notes = nlohmann::json::array();
  for (const auto& s : c.searches)
    searches.push_back({{"query", s.query}, {"from", s.from}, {"to", s.to}, {"runs", case_query(c, s)},
                        {"saved_at", iso8601_date(s.saved_at)}, {"saved_by", s.saved_by}});
  for (const auto& n : c.notes) notes.push_back({{"at", iso8601_date(n.at)}, {"by", n.by}, {"text", n.text}});
  return {{"id", c.id},
          {"name", c.name},
          {"description", c.description},
          {"custodians", c.custodians},
          {"searches", searches},
          {"notes", notes},
          {"hold", c.hold},
          {"status", c.closed ? "closed" : "open"},
          {"created_at", iso8601_date(c.created_at)},
          {"created_by", c.created_by},
          {"closed_at", c.closed ? iso8601_date(c.closed_at) : ""}};
}

nlohmann::json audit_to_json(const AuditEntry& e) {
  return {{"seq", e.seq},       {"at", iso8601_date(e.at)}, {"actor", e.actor},
          {"action", e.action}, {"target", e.target},      {"detail", nlohmann::json::parse(e.detail, nullptr, false)},
          {"hash", to_hex(e.hash)}};
}

Digest audit_hash(const Digest& previous, std::string_view bytes) {
  Sha256 h;
  h.update("mailark-audit-v1\n");
  h.update(std::string_view(reinterpret_cast<const char*>(previous.data()), previous.size()));
  h.update(bytes);
  return h.finish();
}

std::string case_scope(const Case& c, const SavedSearch& s) {
  std::string out;
  if (!c.custodians.empty()) out = custodian_part(c);
  if (!s.from.empty() || !s.to.empty()) out += (out.empty() ? "" : " AND ") + ("date:" + s.from + ".." + s.to);
  return out;
}

std::string case_query(const Case& c, const SavedSearch& s) {
  std::string out = s.query.empty() ? "" : "(" + s.query + ")";
  if (std::string scope = case_scope(c, s); !scope.empty()) out += (out.empty() ? "" : " AND ") + scope;
  return out;
}

std::string case_all_query(const Case& c) {
  std::string out;
  for (const auto& s : c.searches) {
    std::string q = case_query(c, s);
    if (q.empty()) return custodian_part(c);  // a search for everything the custodians hold
    out += (out.empty() ? "" : " OR ") + ("(" + q + ")");
  }
  return out;
}

struct CaseStore::Impl {
  MDB_env* env = nullptr;
  MDB_dbi meta = 0, cases = 0, names = 0, audit = 0;
  bool read_only = false;

  ~Impl() {
    if (env) mdb_env_close(env);
  }

  Result<Case> load(MDB_txn* txn, std::uint32_t id) const {
    std::string key = be32(id);
    MDB_val k = val(key), v;
    int rc = mdb_get(txn, cases, &k, &v);
    if (rc == MDB_NOTFOUND) return make_error(ErrorCode::kNotFound, "no case " + std::to_string(id), "`mailark case list`");
    if (rc) return store_error("reading a case", rc);
    return from_json(view(v));
  }

  Status put_case(MDB_txn* txn, const Case& c) {
    std::string key = be32(c.id), bytes = json_text(to_json(c));
    MDB_val k = val(key), v = val(bytes);
    int rc = mdb_put(txn, cases, &k, &v, 0);
    return rc ? Status(store_error("writing a case", rc)) : ok_status();
  }

  Result<AuditEntry> append(MDB_txn* txn, const std::string& actor, const std::string& action,
                            const std::string& target, const std::string& detail_json) {
    auto detail = nlohmann::json::parse(detail_json, nullptr, false);
    if (detail.is_discarded() || !detail.is_object())
      return make_error(ErrorCode::kInvalidArgument, "an audit entry's detail is not a JSON object");
    AuditEntry e;
    MDB_val hk = val("audit_head"), hv;
    Digest previous{};
    int rc = mdb_get(txn, meta, &hk, &hv);
    if (rc == 0 && hv.mv_size == 8 + previous.size()) {
      e.seq = from_be64(view(hv).substr(0, 8)) + 1;
      std::memcpy(previous.data(), static_cast<const char*>(hv.mv_data) + 8, previous.size());
    } else if (rc == MDB_NOTFOUND) {
      e.seq = 1;
    } else {
      return rc ? Error(store_error("reading the audit head", rc))
                : make_error(ErrorCode::kCorrupt, "case store: the audit head is damaged");
    }
    e.at = unix_now();
    e.actor = actor;
    e.action = action;
    e.target = target;
    e.detail = json_text(detail);
    e.bytes = json_text(nlohmann::json{{"v", 1},
                                       {"seq", e.seq},
                                       {"at", e.at},
                                       {"actor", actor},
                                       {"action", action},
                                       {"target", target},
                                       {"detail", detail}});
    e.hash = audit_hash(previous, e.bytes);
    std::string key = be64(e.seq);
    std::string value(reinterpret_cast<const char*>(e.hash.data()), e.hash.size());
    value += e.bytes;
    MDB_val k = val(key), v = val(value);
    rc = mdb_put(txn, audit, &k, &v, MDB_APPEND);
    if (rc) return store_error("appending to the audit log", rc);
    std::string head = key + std::string(reinterpret_cast<const char*>(e.hash.data()), e.hash.size());
    MDB_val headv = val(head);
    rc = mdb_put(txn, meta, &hk, &headv, 0);
    if (rc) return store_error("writing the audit head", rc);
    return e;
  }

  // A change to one case and its audit entry, in one write transaction.
  template <typename F>
  Result<Case> change(std::uint32_t id, const std::string& actor, const std::string& action, F&& edit) {
    if (read_only) return make_error(ErrorCode::kInvalidArgument, "the case store is open read-only");
    Txn t;
    int rc = mdb_txn_begin(env, nullptr, 0, &t.txn);
    if (rc) return store_error("begin", rc);
    auto c = load(t.txn, id);
    if (!c) return c.error();
    nlohmann::json detail = nlohmann::json::object();
    if (Status s = edit(*c, detail); !s) return s.error();
    if (Status s = put_case(t.txn, *c); !s) return s.error();
    auto e = append(t.txn, actor, action, c->name, json_text(detail));
    if (!e) return e.error();
    rc = t.commit();
    if (rc) return store_error("commit", rc);
    return c;
  }
};

CaseStore::~CaseStore() = default;

Result<std::unique_ptr<CaseStore>> CaseStore::open(const std::string& dir, bool read_only) {
  std::unique_ptr<CaseStore> s(new CaseStore());
  s->impl_ = std::make_unique<Impl>();
  Impl& m = *s->impl_;
  m.read_only = read_only;
  std::error_code ec;
  if (read_only) {
    if (!std::filesystem::exists(std::filesystem::path(dir) / "data.mdb", ec))
      return make_error(ErrorCode::kNotFound, "no case store in " + dir, "create a case first (`mailark case create`)");
  } else {
    std::filesystem::create_directories(dir, ec);
    if (ec) return make_error(ErrorCode::kIo, "creating " + dir + ": " + ec.message());
  }
  int rc = mdb_env_create(&m.env);
  if (rc) return store_error("mdb_env_create", rc);
  mdb_env_set_maxdbs(m.env, 8);
  mdb_env_set_mapsize(m.env, kMapSize);
  rc = mdb_env_open(m.env, dir.c_str(), MDB_NOTLS | (read_only ? MDB_RDONLY : 0), 0640);
  if (rc) return store_error("opening " + dir, rc);
  Txn t;
  rc = mdb_txn_begin(m.env, nullptr, read_only ? MDB_RDONLY : 0, &t.txn);
  if (rc) return store_error("begin", rc);
  for (auto [name, dbi] : {std::pair{"meta", &m.meta}, std::pair{"cases", &m.cases}, std::pair{"case_names", &m.names},
                           std::pair{"audit", &m.audit}}) {
    rc = mdb_dbi_open(t.txn, name, read_only ? 0 : MDB_CREATE, dbi);
    if (rc) return store_error(std::string("opening table ") + name, rc);
  }
  MDB_val k = val("format"), v;
  rc = mdb_get(t.txn, m.meta, &k, &v);
  if (rc == MDB_NOTFOUND && !read_only) {
    std::string f = be32(kFormat);
    MDB_val fv = val(f);
    rc = mdb_put(t.txn, m.meta, &k, &fv, 0);
    if (rc) return store_error("writing the format", rc);
  } else if (rc) {
    return rc == MDB_NOTFOUND ? make_error(ErrorCode::kCorrupt, "the case store in " + dir + " has no format marker")
                              : Error(store_error("reading the format", rc));
  } else if (v.mv_size != 4 || from_be32(view(v)) > kFormat) {
    return make_error(ErrorCode::kCorrupt, "the case store in " + dir + " was written by a newer release",
                      "upgrade mailark");
  }
  rc = t.commit();
  if (rc) return store_error("commit", rc);
  return s;
}

Result<Case> CaseStore::create(const std::string& name, const std::string& description,
                               const std::vector<std::string>& custodians, const std::string& actor) {
  Impl& m = *impl_;
  if (m.read_only) return make_error(ErrorCode::kInvalidArgument, "the case store is open read-only");
  std::string trimmed = name;
  while (!trimmed.empty() && (trimmed.back() == ' ' || trimmed.back() == '\t')) trimmed.pop_back();
  while (!trimmed.empty() && (trimmed.front() == ' ' || trimmed.front() == '\t')) trimmed.erase(0, 1);
  if (trimmed.empty()) return make_error(ErrorCode::kInvalidArgument, "a case needs a name");
  if (trimmed.size() > 200) return make_error(ErrorCode::kInvalidArgument, "a case's name is longer than 200 bytes");
  if (Status s = check_text("the case's name", trimmed, true); !s) return s.error();
  if (trimmed.find_first_not_of("0123456789") == std::string::npos)
    return make_error(ErrorCode::kInvalidArgument, "a case's name cannot be a number (numbers are case ids)");
  if (Status s = check_text("the description", description, false); !s) return s.error();
  std::vector<std::string> checked;
  for (const auto& who : custodians) {
    auto c = check_custodian(who);  // the same rule as import --custodian
    if (!c) return c.error();
    checked.push_back(std::move(*c));
  }
  Txn t;
  int rc = mdb_txn_begin(m.env, nullptr, 0, &t.txn);
  if (rc) return store_error("begin", rc);
  std::string lname = ascii_lower(trimmed);
  MDB_val nk = val(lname), nv;
  rc = mdb_get(t.txn, m.names, &nk, &nv);
  if (rc == 0) return make_error(ErrorCode::kInvalidArgument, "a case named \"" + trimmed + "\" exists (id " +
                                                             std::to_string(from_be32(view(nv))) + ")");
  if (rc != MDB_NOTFOUND) return store_error("reading case names", rc);
  MDB_val ck = val("next_case"), cv;
  std::uint32_t id = 1;
  rc = mdb_get(t.txn, m.meta, &ck, &cv);
  if (rc == 0 && cv.mv_size == 4) id = from_be32(view(cv));
  std::string next = be32(id + 1);
  MDB_val nextv = val(next);
  if ((rc = mdb_put(t.txn, m.meta, &ck, &nextv, 0))) return store_error("writing the next case id", rc);
  std::string idv = be32(id);
  MDB_val idval = val(idv);
  if ((rc = mdb_put(t.txn, m.names, &nk, &idval, 0))) return store_error("writing a case name", rc);
  Case c;
  c.id = id;
  c.name = trimmed;
  c.description = description;
  c.custodians = checked;
  c.created_at = unix_now();
  c.created_by = actor;
  if (Status s = m.put_case(t.txn, c); !s) return s.error();
  auto e =
      m.append(t.txn, actor, "case.create", c.name,
               json_text(nlohmann::json{{"id", id}, {"description", description}, {"custodians", checked}}));
  if (!e) return e.error();
  if ((rc = t.commit())) return store_error("commit", rc);
  return c;
}

Result<Case> CaseStore::get(std::uint32_t id) const {
  Txn t;
  int rc = mdb_txn_begin(impl_->env, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return store_error("begin", rc);
  return impl_->load(t.txn, id);
}

Result<Case> CaseStore::find(const std::string& id_or_name) const {
  if (!id_or_name.empty() && id_or_name.size() < 10 && id_or_name.find_first_not_of("0123456789") == std::string::npos)
    return get(static_cast<std::uint32_t>(std::stoul(id_or_name)));
  Txn t;
  int rc = mdb_txn_begin(impl_->env, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return store_error("begin", rc);
  std::string lname = ascii_lower(id_or_name);
  MDB_val k = val(lname), v;
  rc = mdb_get(t.txn, impl_->names, &k, &v);
  if (rc == 0) return impl_->load(t.txn, from_be32(view(v)));
  if (rc != MDB_NOTFOUND) return store_error("reading case names", rc);
  // Not a whole name: the one case whose name starts with it.
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(t.txn, impl_->names, &cur))) return store_error("cursor", rc);
  std::vector<std::uint32_t> ids;
  std::string names;
  k = val(lname);
  for (rc = lname.empty() ? MDB_NOTFOUND : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
       rc == 0 && view(k).substr(0, lname.size()) == lname && ids.size() < 10; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    ids.push_back(from_be32(view(v)));
    names += (names.empty() ? "" : ", ") + std::string(view(k));
  }
  mdb_cursor_close(cur);
  if (ids.empty()) return make_error(ErrorCode::kNotFound, "no case named \"" + id_or_name + "\"", "`mailark case list`");
  if (ids.size() > 1)
    return make_error(ErrorCode::kInvalidArgument, "\"" + id_or_name + "\" names several cases (" + names + ")",
                      "give more of the name, or the id");
  return impl_->load(t.txn, ids[0]);
}

Result<std::vector<Case>> CaseStore::list() const {
  Txn t;
  int rc = mdb_txn_begin(impl_->env, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return store_error("begin", rc);
  std::vector<Case> out;
  std::optional<Error> bad;
  rc = lmdb::walk(t.txn, impl_->cases, [&](std::string_view, std::string_view v) {
    auto c = from_json(v);
    if (!c) bad = c.error();
    else out.push_back(std::move(*c));
    return !bad;
  });
  if (bad) return *bad;
  if (rc) return store_error("reading the cases", rc);
  return out;
}

Result<Case> CaseStore::add_search(std::uint32_t id, SavedSearch s, const std::string& actor) {
  if (Status st = check_text("the query", s.query, true); !st) return st.error();
  if (Status st = check_day("--from", s.from); !st) return st.error();
  if (Status st = check_day("--to", s.to); !st) return st.error();
  if (!s.from.empty() && !s.to.empty() && s.from > s.to)
    return make_error(ErrorCode::kInvalidArgument, "--from " + s.from + " is after --to " + s.to);
  s.saved_at = unix_now();
  s.saved_by = actor;
  return impl_->change(id, actor, "case.search.save", [&](Case& c, nlohmann::json& d) -> Status {
    if (c.closed) return make_error(ErrorCode::kInvalidArgument, "case \"" + c.name + "\" is closed");
    c.searches.push_back(s);
    d = {{"query", s.query}, {"from", s.from}, {"to", s.to}, {"hold", c.hold}};
    return ok_status();
  });
}

Result<Case> CaseStore::add_note(std::uint32_t id, const std::string& text, const std::string& actor) {
  if (text.empty()) return make_error(ErrorCode::kInvalidArgument, "a note needs text");
  if (Status st = check_text("the note", text, false); !st) return st.error();
  return impl_->change(id, actor, "case.note", [&](Case& c, nlohmann::json& d) -> Status {
    c.notes.push_back({unix_now(), actor, text});
    d = {{"text", text}};
    return ok_status();
  });
}

Result<Case> CaseStore::set_hold(std::uint32_t id, bool hold, const std::string& reason, const std::string& actor) {
  if (Status st = check_text("the reason", reason, false); !st) return st.error();
  return impl_->change(id, actor, hold ? "case.hold" : "case.release", [&](Case& c, nlohmann::json& d) -> Status {
    if (c.closed) return make_error(ErrorCode::kInvalidArgument, "case \"" + c.name + "\" is closed");
    if (c.hold == hold)
      return make_error(ErrorCode::kInvalidArgument,
                        "case \"" + c.name + "\" is " + (hold ? "already under hold" : "not under hold"));
    c.hold = hold;
    d = {{"reason", reason}, {"query", case_all_query(c)}};
    return ok_status();
  });
}

Result<Case> CaseStore::close(std::uint32_t id, const std::string& actor) {
  return impl_->change(id, actor, "case.close", [&](Case& c, nlohmann::json&) -> Status {
    if (c.closed) return make_error(ErrorCode::kInvalidArgument, "case \"" + c.name + "\" is already closed");
    if (c.hold)
      return make_error(ErrorCode::kInvalidArgument, "case \"" + c.name + "\" is under legal hold",
                        "lift the hold first (`mailark case release`): closing a case never drops a hold");
    c.closed = true;
    c.closed_at = unix_now();
    return ok_status();
  });
}

Result<std::vector<std::string>> CaseStore::held_queries() const {
  auto cases = list();
  if (!cases) return cases.error();
  std::vector<std::string> out;
  for (const auto& c : *cases) {
    if (!c.hold || c.closed) continue;
    std::string q = case_all_query(c);
    if (q.empty()) q = custodian_part(c);
    out.push_back(q);  // empty: the whole archive
  }
  return out;
}

Result<AuditEntry> CaseStore::audit(const std::string& actor, const std::string& action, const std::string& target,
                                    const std::string& detail_json) {
  Impl& m = *impl_;
  if (m.read_only) return make_error(ErrorCode::kInvalidArgument, "the case store is open read-only");
  Txn t;
  int rc = mdb_txn_begin(m.env, nullptr, 0, &t.txn);
  if (rc) return store_error("begin", rc);
  auto e = m.append(t.txn, actor, action, target, detail_json);
  if (!e) return e.error();
  if ((rc = t.commit())) return store_error("commit", rc);
  return e;
}

Result<std::vector<AuditEntry>> CaseStore::audit_entries(std::uint64_t from, std::size_t limit) const {
  Txn t;
  int rc = mdb_txn_begin(impl_->env, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return store_error("begin", rc);
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(t.txn, impl_->audit, &cur))) return store_error("cursor", rc);
  std::vector<AuditEntry> out;
  std::string start = be64(from);
  MDB_val k = val(start), v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && out.size() < limit;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    AuditEntry e;
    if (k.mv_size != 8 || v.mv_size < 32) {
      mdb_cursor_close(cur);
      return make_error(ErrorCode::kCorrupt, "case store: an audit entry is damaged");
    }
    e.seq = from_be64(view(k));
    std::memcpy(e.hash.data(), v.mv_data, 32);
    e.bytes = std::string(view(v).substr(32));
    auto j = nlohmann::json::parse(e.bytes, nullptr, false);
    if (j.is_object()) {
      e.at = j.value("at", std::int64_t{0});
      e.actor = j.value("actor", "");
      e.action = j.value("action", "");
      e.target = j.value("target", "");
      e.detail = j.contains("detail") ? json_text(j["detail"]) : "{}";
    }
    out.push_back(std::move(e));
  }
  mdb_cursor_close(cur);
  return out;
}

Result<std::pair<std::uint64_t, Digest>> CaseStore::audit_head() const {
  Txn t;
  int rc = mdb_txn_begin(impl_->env, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return store_error("begin", rc);
  MDB_val k = val("audit_head"), v;
  rc = mdb_get(t.txn, impl_->meta, &k, &v);
  if (rc == MDB_NOTFOUND) return std::pair<std::uint64_t, Digest>{0, Digest{}};
  if (rc) return store_error("reading the audit head", rc);
  if (v.mv_size != 40) return make_error(ErrorCode::kCorrupt, "case store: the audit head is damaged");
  Digest d{};
  std::memcpy(d.data(), static_cast<const char*>(v.mv_data) + 8, 32);
  return std::pair{from_be64(view(v).substr(0, 8)), d};
}

AuditCheck CaseStore::verify_audit() const {
  AuditCheck out;
  auto head = audit_head();
  if (!head) return {false, head.error().to_string(), 0, {}};
  Digest previous{};
  std::uint64_t expect = 1;
  for (;;) {
    auto batch = audit_entries(expect, 4096);
    if (!batch) return {false, batch.error().to_string(), out.entries, previous};
    for (const auto& e : *batch) {
      if (e.seq != expect) return {false, "audit entry " + std::to_string(expect) + " is missing", out.entries, previous};
      auto j = nlohmann::json::parse(e.bytes, nullptr, false);
      if (!j.is_object() || j.value("seq", std::uint64_t{0}) != e.seq)
        return {false, "audit entry " + std::to_string(e.seq) + " does not name its own place", out.entries, previous};
      Digest h = audit_hash(previous, e.bytes);
      if (h != e.hash)
        return {false, "audit entry " + std::to_string(e.seq) + " was changed (its hash does not chain)", out.entries,
                previous};
      previous = h;
      ++expect;
      ++out.entries;
    }
    if (batch->size() < 4096) break;
  }
  if (out.entries != head->first || previous != head->second)
    return {false,
            "the audit log ends at entry " + std::to_string(out.entries) + " but its head names entry " +
                std::to_string(head->first) + " (entries were cut or the head rewritten)",
            out.entries, previous};
  out.head = previous;
  return out;
}

}  // namespace mailark
