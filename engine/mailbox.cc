// LMDB translation point of the mailbox store (DATA/mailbox); see mailbox.h for the tables.
#include "engine/mailbox.h"

#include <lmdb.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>

#include "common/ascii.h"
#include "common/dates.h"
#include "common/encoding.h"
#include "engine/lmdb_util.h"
#include "engine/message.h"
#include "engine/mime_tree.h"

namespace mailark {
namespace {

using lmdb::be32;
using lmdb::be64;
using lmdb::from_be32;
using lmdb::from_be64;
using lmdb::Txn;
using lmdb::val;
using lmdb::view;

// Mailbox store format (meta "format"): 1 = this release (docs/FORMAT.md, "mailbox").
constexpr std::uint32_t kFormat = 1;
constexpr std::size_t kMapSize = std::size_t{1} << 36;  // 64 GiB of address space; the file grows as used

Error store_error(const std::string& what, int rc) {
  ErrorCode code = ErrorCode::kIo;
  std::string hint;
  switch (rc) {
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
      code = ErrorCode::kCorrupt;
      hint = "DATA/mailbox is damaged; restore it from a backup (the archive itself is not affected)";
      break;
    case MDB_NOTFOUND:
      code = ErrorCode::kNotFound;
      break;
    case MDB_MAP_FULL:
      code = ErrorCode::kLimit;
      break;
    default:
      break;
  }
  return make_error(code, "mailbox store: " + what + ": " + mdb_strerror(rc), hint);
}

std::string encode_folder(const Folder& f) {
  Writer w;
  w.u8(1);
  w.varint(f.id);
  w.varint(f.uidvalidity);
  w.varint(f.uidnext);
  w.varint(f.highest_modseq);
  w.str(f.special_use);
  w.varint(f.first_recent_uid);
  return std::move(w.out());
}

Result<Folder> decode_folder(std::uint32_t user_id, std::string_view name, std::string_view value) {
  Reader r(value);
  Folder f;
  f.user_id = user_id;
  f.name = std::string(name);
  std::uint8_t version = 0;
  std::uint64_t id = 0, uv = 0, next = 0, recent = 1;
  if (!r.u8(version) || version != 1 || !r.varint(id) || !r.varint(uv) || !r.varint(next) ||
      !r.varint(f.highest_modseq) || !r.str(f.special_use) || !r.varint(recent))
    return make_error(ErrorCode::kCorrupt, "mailbox store: folder " + f.name + " does not decode");
  f.id = static_cast<std::uint32_t>(id);
  f.uidvalidity = static_cast<std::uint32_t>(uv);
  f.uidnext = static_cast<std::uint32_t>(next);
  f.first_recent_uid = static_cast<std::uint32_t>(recent);
  return f;
}

std::string encode_entry(const MailEntry& e) {
  Writer w;
  w.u8(1);
  w.varint(e.seq);
  w.varint(e.modseq);
  w.varint(e.flags);
  w.varint(e.keywords.size());
  for (const auto& k : e.keywords) w.str(k);
  return std::move(w.out());
}

Result<MailEntry> decode_entry(std::uint32_t uid, std::string_view value) {
  Reader r(value);
  MailEntry e;
  e.uid = uid;
  std::uint8_t version = 0;
  std::uint64_t flags = 0, n = 0;
  if (!r.u8(version) || version != 1 || !r.varint(e.seq) || !r.varint(e.modseq) || !r.varint(flags) || !r.varint(n) ||
      n > kMaxKeywordsPerMessage)
    return make_error(ErrorCode::kCorrupt, "mailbox store: message entry " + std::to_string(uid) + " does not decode");
  e.flags = static_cast<std::uint32_t>(flags);
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string k;
    if (!r.str(k)) return make_error(ErrorCode::kCorrupt, "mailbox store: message entry keywords do not decode");
    e.keywords.push_back(std::move(k));
  }
  return e;
}

std::string folder_key(std::uint32_t user_id, std::string_view name) {
  return be32(user_id) + std::string(name);
}
std::string message_key(std::uint32_t folder_id, std::uint32_t uid) {
  return be32(folder_id) + be32(uid);
}
// The last byte tells a Sent placement (1) from an INBOX or named-folder one (0): a user who wrote
// a message and got a copy (Cc to self) has it in both.
std::string member_key(std::uint32_t user_id, std::uint64_t seq, bool sent) {
  return be32(user_id) + be64(seq) + std::string(1, sent ? '\1' : '\0');
}

bool is_inbox(std::string_view name) {
  return ascii_iequals(name, "INBOX");
}

}  // namespace

Result<std::string> normalize_folder_name(std::string_view name) {
  if (name.empty()) return make_error(ErrorCode::kInvalidArgument, "a folder name cannot be empty");
  if (name.size() > kMaxFolderNameBytes)
    return make_error(ErrorCode::kInvalidArgument, "a folder name is at most 255 bytes");
  if (is_inbox(name)) return std::string("INBOX");
  std::size_t levels = 0;
  std::size_t start = 0;
  while (true) {
    std::size_t slash = name.find('/', start);
    std::string_view level = name.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (level.empty()) return make_error(ErrorCode::kInvalidArgument, "a folder name has an empty level (\"//\" or a '/' at an end)");
    if (level == "." || level == "..") return make_error(ErrorCode::kInvalidArgument, "a folder level cannot be \".\" or \"..\"");
    if (++levels > kMaxFolderDepth) return make_error(ErrorCode::kInvalidArgument, "a folder name has more than 16 levels");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '*' || c == '%')
      return make_error(ErrorCode::kInvalidArgument, "a folder name cannot hold control characters, '*' or '%'");
  }
  std::string out(name);
  // "inbox/x" is a child of INBOX.
  if (out.size() > 6 && ascii_iequals(out.substr(0, 6), "INBOX/")) out.replace(0, 5, "INBOX");
  return out;
}

// ---- transactions ----

struct MailboxStore::Tx {
  const MailboxStore& s;
  MDB_txn* txn = nullptr;
  std::set<std::uint32_t> changed;  // users whose folders changed (for the observer)
  std::map<std::uint32_t, Folder> folder_cache;  // follow: folder records changed in this transaction

  Result<std::optional<std::string>> get(unsigned dbi, std::string_view key) const {
    MDB_val k = val(key), v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) return std::optional<std::string>();
    if (rc) return store_error("read", rc);
    return std::optional<std::string>(std::string(view(v)));
  }
  Status put(unsigned dbi, std::string_view key, std::string_view value) {
    MDB_val k = val(key), v = val(value);
    int rc = mdb_put(txn, dbi, &k, &v, 0);
    if (rc) return store_error("write", rc);
    return ok_status();
  }
  Status del(unsigned dbi, std::string_view key) {
    MDB_val k = val(key);
    int rc = mdb_del(txn, dbi, &k, nullptr);
    if (rc && rc != MDB_NOTFOUND) return store_error("delete", rc);
    return ok_status();
  }
  // Calls fn(key, value) for keys starting with prefix, in order (reverse: from the last); fn
  // returns false to stop.
  Status scan(unsigned dbi, std::string_view prefix,
              const std::function<bool(std::string_view, std::string_view)>& fn, bool reverse = false) const {
    MDB_cursor* c = nullptr;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) return store_error("cursor", rc);
    MDB_val k = val(prefix), v;
    if (!reverse) {
      rc = mdb_cursor_get(c, &k, &v, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
    } else {
      // Position after the prefix range: the prefix with its last byte incremented (carrying).
      std::string upper(prefix);
      while (!upper.empty() && static_cast<unsigned char>(upper.back()) == 0xff) upper.pop_back();
      if (upper.empty()) {
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
      } else {
        upper.back() = static_cast<char>(static_cast<unsigned char>(upper.back()) + 1);
        MDB_val uk = val(upper);
        rc = mdb_cursor_get(c, &uk, &v, MDB_SET_RANGE);
        if (rc == 0) {
          k = uk;
          rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
        } else if (rc == MDB_NOTFOUND) {
          rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
        }
      }
    }
    while (rc == 0) {
      std::string_view key = view(k);
      if (key.substr(0, prefix.size()) != prefix) break;
      if (!fn(key, view(v))) break;
      rc = mdb_cursor_get(c, &k, &v, reverse ? MDB_PREV : MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND) return store_error("scan", rc);
    return ok_status();
  }
  // The entries of a folder in UID order (reverse: from the last), decoded; fn returns false to
  // stop. An entry that does not decode stops the walk with its error.
  Status scan_entries(std::uint32_t folder_id, const std::function<bool(MailEntry&)>& fn, bool reverse = false) const {
    Status bad = ok_status();
    MAILARK_TRY(scan(
        s.messages_, be32(folder_id),
        [&](std::string_view key, std::string_view value) {
          auto e = decode_entry(from_be32(key.substr(4)), value);
          if (!e) {
            bad = e.error();
            return false;
          }
          return fn(*e);
        },
        reverse));
    return bad;
  }
  Result<std::uint64_t> meta_u64(std::string_view key) const {
    MAILARK_ASSIGN_OR_RETURN(auto v, get(s.meta_, key));
    if (!v) return std::uint64_t{0};
    if (v->size() == 8) return from_be64(*v);
    if (v->size() == 4) return std::uint64_t{from_be32(*v)};
    return make_error(ErrorCode::kCorrupt, "mailbox store: meta " + std::string(key) + " has a bad size");
  }

  // ---- users ----
  // The id of the enabled user an address belongs to, as the follower places mail (nothing for an
  // unknown or disabled user, or one that cannot be read).
  std::optional<std::uint32_t> placing_user(std::string_view address) const {
    if (auto u = user_by_address(ascii_lower(address)); u && *u && !(*u)->disabled) return (*u)->id;
    return std::nullopt;
  }
  Result<std::optional<User>> user_by_address(std::string_view address) const {
    MAILARK_ASSIGN_OR_RETURN(auto name, get(s.addresses_, ascii_lower(address)));
    if (!name && s.other_form_) {
      if (const std::string other = s.other_form_(address); !other.empty() && other != address) {
        MAILARK_ASSIGN_OR_RETURN(name, get(s.addresses_, ascii_lower(other)));
      }
    }
    if (!name) return std::optional<User>();
    MAILARK_ASSIGN_OR_RETURN(auto value, get(s.users_, *name));
    if (!value) return make_error(ErrorCode::kCorrupt, "mailbox store: address of a missing user " + *name);
    MAILARK_ASSIGN_OR_RETURN(User u, decode_user(*value));
    return std::optional<User>(std::move(u));
  }

  // ---- folders ----
  Result<std::optional<Folder>> folder(std::uint32_t user_id, std::string_view name) const {
    for (const auto& [id, f] : folder_cache)
      if (f.user_id == user_id && f.name == name) return std::optional<Folder>(f);
    MAILARK_ASSIGN_OR_RETURN(auto v, get(s.folders_, folder_key(user_id, name)));
    if (!v) return std::optional<Folder>();
    MAILARK_ASSIGN_OR_RETURN(Folder f, decode_folder(user_id, name, *v));
    return std::optional<Folder>(std::move(f));
  }
  // The folder with this id, only if it is this user's (isolation: every message operation).
  Result<Folder> owned_folder(std::uint32_t user_id, std::uint32_t folder_id) {
    if (auto it = folder_cache.find(folder_id); it != folder_cache.end()) {
      if (it->second.user_id != user_id) return make_error(ErrorCode::kNotFound, "no such folder");
      return it->second;
    }
    MAILARK_ASSIGN_OR_RETURN(auto owner, get(s.folder_ids_, be32(folder_id)));
    if (!owner || owner->size() < 4 || from_be32(*owner) != user_id) return make_error(ErrorCode::kNotFound, "no such folder");
    MAILARK_ASSIGN_OR_RETURN(auto f, folder(user_id, std::string_view(*owner).substr(4)));
    if (!f) return make_error(ErrorCode::kCorrupt, "mailbox store: folder id " + std::to_string(folder_id) + " has no folder");
    return *f;
  }
  Status save_folder(const Folder& f) {
    changed.insert(f.user_id);
    return put(s.folders_, folder_key(f.user_id, f.name), encode_folder(f));
  }
  Result<Folder> create_folder(std::uint32_t user_id, const std::string& name, std::string_view special_use) {
    MAILARK_ASSIGN_OR_RETURN(auto existing, folder(user_id, name));
    if (existing) return make_error(ErrorCode::kInvalidArgument, "folder " + name + " already exists");
    std::size_t count = 0;
    MAILARK_TRY(scan(s.folders_, be32(user_id), [&](std::string_view, std::string_view) { return ++count <= kMaxFoldersPerUser; }));
    if (count >= kMaxFoldersPerUser)
      return make_error(ErrorCode::kInvalidArgument, "a user has at most " + std::to_string(kMaxFoldersPerUser) + " folders");
    MAILARK_ASSIGN_OR_RETURN(std::uint64_t next, meta_u64("next_folder"));
    MAILARK_ASSIGN_OR_RETURN(std::uint64_t last_uv, meta_u64("last_uidvalidity"));
    Folder f;
    f.id = static_cast<std::uint32_t>(std::max<std::uint64_t>(next, 1));
    f.user_id = user_id;
    f.name = name;
    // UIDVALIDITY: the creation time, and never the same twice (a folder deleted and created again
    // in the same second gets a new one, so clients drop their cached UIDs).
    f.uidvalidity = static_cast<std::uint32_t>(std::max<std::uint64_t>(static_cast<std::uint64_t>(unix_now()), last_uv + 1));
    f.special_use = std::string(special_use);
    MAILARK_TRY(put(s.meta_, "next_folder", be32(f.id + 1)));
    MAILARK_TRY(put(s.meta_, "last_uidvalidity", be32(f.uidvalidity)));
    MAILARK_TRY(put(s.folder_ids_, be32(f.id), be32(user_id) + name));
    MAILARK_TRY(save_folder(f));
    return f;
  }
  Result<Folder> folder_for_use(std::uint32_t user_id, std::string_view special_use, const char* fallback) {
    std::optional<Folder> found;
    for (auto& [id, f] : folder_cache)
      if (f.user_id == user_id && f.special_use == special_use) return f;
    MAILARK_TRY(scan(s.folders_, be32(user_id), [&](std::string_view key, std::string_view value) {
      auto f = decode_folder(user_id, key.substr(4), value);
      if (f && f->special_use == special_use) {
        found = *f;
        return false;
      }
      return true;
    }));
    if (found) return *found;
    MAILARK_ASSIGN_OR_RETURN(auto f, folder(user_id, fallback));
    if (f) return *f;
    return create_folder(user_id, fallback, special_use);
  }

  // Adds a message entry at the end of folder f (cached; written by flush_folders).
  Result<MailEntry> place(Folder& f, std::uint64_t seq, std::uint32_t flags, std::vector<std::string> keywords = {}) {
    MailEntry e;
    e.uid = f.uidnext++;
    e.seq = seq;
    e.modseq = ++f.highest_modseq;
    e.flags = flags;
    e.keywords = std::move(keywords);
    MAILARK_TRY(put(s.messages_, message_key(f.id, e.uid), encode_entry(e)));
    changed.insert(f.user_id);
    return e;
  }
  Status flush_folders() {
    for (auto& [id, f] : folder_cache) MAILARK_TRY(save_folder(f));
    folder_cache.clear();
    return ok_status();
  }
  Folder& cached(const Folder& f) {
    auto [it, inserted] = folder_cache.emplace(f.id, f);
    return it->second;
  }
};

Status MailboxStore::write(const std::function<Status(Tx&)>& fn) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "the mailbox store is open read-only");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return store_error("begin", rc);
  Tx tx{*this, t.txn};
  MAILARK_TRY(fn(tx));
  MAILARK_TRY(tx.flush_folders());
  rc = t.commit();
  if (rc) return store_error("commit", rc);
  if (observer_ && !tx.changed.empty()) observer_(std::vector<std::uint32_t>(tx.changed.begin(), tx.changed.end()));
  return ok_status();
}

Status MailboxStore::read(const std::function<Status(Tx&)>& fn) const {
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return store_error("begin", rc);
  Tx tx{*this, t.txn};
  return fn(tx);
}

// ---- opening ----

Result<std::unique_ptr<MailboxStore>> MailboxStore::open(const std::string& dir, bool read_only) {
  std::unique_ptr<MailboxStore> s(new MailboxStore());
  s->dir_ = dir;
  s->read_only_ = read_only;
  std::error_code ec;
  if (read_only) {
    if (!std::filesystem::exists(std::filesystem::path(dir) / "data.mdb", ec))
      return make_error(ErrorCode::kNotFound, "no mailbox store in " + dir, "add a user first (`mailark user add`)");
  } else {
    std::filesystem::create_directories(dir, ec);
    if (ec) return make_error(ErrorCode::kIo, "creating " + dir + ": " + ec.message());
  }
  int rc = mdb_env_create(&s->env_);
  if (rc) return store_error("mdb_env_create", rc);
  mdb_env_set_maxdbs(s->env_, 12);
  mdb_env_set_mapsize(s->env_, kMapSize);
  rc = mdb_env_open(s->env_, dir.c_str(), MDB_NOTLS | (read_only ? MDB_RDONLY : 0), 0640);
  if (rc) return store_error("opening " + dir, rc);
  Txn t;
  rc = mdb_txn_begin(s->env_, nullptr, read_only ? MDB_RDONLY : 0, &t.txn);
  if (rc) return store_error("begin", rc);
  struct Table {
    const char* name;
    unsigned* dbi;
  } tables[] = {{"meta", &s->meta_},           {"users", &s->users_},       {"addresses", &s->addresses_},
                {"folders", &s->folders_},     {"folder_ids", &s->folder_ids_}, {"messages", &s->messages_},
                {"member", &s->member_},       {"subscriptions", &s->subscriptions_}, {"tokens", &s->tokens_}};
  for (auto& table : tables) {
    MDB_dbi dbi = 0;
    rc = mdb_dbi_open(t.txn, table.name, read_only ? 0 : MDB_CREATE, &dbi);
    // `tokens` came later in format 1: a store written before it has none (and no tokens), and a
    // read-only open leaves it absent; a read-write open creates it.
    if (rc == MDB_NOTFOUND && read_only && std::string_view(table.name) == "tokens") {
      s->has_tokens_ = false;
      continue;
    }
    if (rc) return store_error(std::string("opening table ") + table.name, rc);
    *table.dbi = dbi;
  }
  MDB_val k = val("format"), v;
  rc = mdb_get(t.txn, s->meta_, &k, &v);
  if (rc == MDB_NOTFOUND) {
    if (read_only) return make_error(ErrorCode::kCorrupt, "the mailbox store in " + dir + " has no format marker");
    std::string f = be32(kFormat);
    MDB_val fv = val(f);
    rc = mdb_put(t.txn, s->meta_, &k, &fv, 0);
    if (rc) return store_error("writing the format marker", rc);
  } else if (rc) {
    return store_error("reading the format marker", rc);
  } else if (v.mv_size != 4 || from_be32(view(v)) != kFormat) {
    return make_error(ErrorCode::kUnsupported, "the mailbox store in " + dir + " has an unknown format version",
                      "a newer mailark wrote it");
  }
  rc = t.commit();
  if (rc) return store_error("commit", rc);
  return s;
}

MailboxStore::~MailboxStore() {
  if (env_) mdb_env_close(env_);
}

// ---- users ----

Result<User> MailboxStore::add_user(User user) {
  MAILARK_ASSIGN_OR_RETURN(user.name, normalize_address(user.name));
  std::vector<std::string> aliases;
  for (const auto& a : user.aliases) {
    MAILARK_ASSIGN_OR_RETURN(std::string n, normalize_address(a));
    if (n != user.name && std::find(aliases.begin(), aliases.end(), n) == aliases.end()) aliases.push_back(n);
  }
  user.aliases = aliases;
  Status s = write([&](Tx& tx) -> Status {
    for (const auto& a : user.addresses()) {
      MAILARK_ASSIGN_OR_RETURN(auto owner, tx.get(addresses_, a));
      if (owner) return make_error(ErrorCode::kInvalidArgument, "the address " + a + " already belongs to " + *owner);
    }
    MAILARK_ASSIGN_OR_RETURN(std::uint64_t next, tx.meta_u64("next_user"));
    user.id = static_cast<std::uint32_t>(std::max<std::uint64_t>(next, 1));
    if (!user.created_at) user.created_at = unix_now();
    MAILARK_TRY(tx.put(meta_, "next_user", be32(user.id + 1)));
    MAILARK_TRY(tx.put(users_, user.name, encode_user(user)));
    for (const auto& a : user.addresses()) MAILARK_TRY(tx.put(addresses_, a, user.name));
    for (const auto& d : kDefaultFolders) {
      MAILARK_TRY(tx.create_folder(user.id, d.name, d.special_use));
      MAILARK_TRY(tx.put(subscriptions_, folder_key(user.id, d.name), ""));
    }
    return ok_status();
  });
  if (!s) return s.error();
  return user;
}

Result<User> MailboxStore::find_user(std::string_view name_or_address) const {
  std::optional<User> found;
  MAILARK_TRY(read([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(found, tx.user_by_address(name_or_address));
    return ok_status();
  }));
  if (!found) return make_error(ErrorCode::kNotFound, "no user " + std::string(name_or_address));
  return *found;
}

Result<User> MailboxStore::find_user_by_token(std::string_view token_hash) const {
  std::optional<User> found;
  if (!has_tokens_) return make_error(ErrorCode::kNotFound, "no such API token");
  MAILARK_TRY(read([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(auto name, tx.get(tokens_, token_hash));
    if (!name) return ok_status();
    MAILARK_ASSIGN_OR_RETURN(found, tx.user_by_address(*name));
    return ok_status();
  }));
  if (!found) return make_error(ErrorCode::kNotFound, "no such API token");
  return *found;
}

Result<std::vector<User>> MailboxStore::users() const {
  std::vector<User> out;
  Status bad = ok_status();
  MAILARK_TRY(read([&](Tx& tx) {
    return tx.scan(users_, "", [&](std::string_view, std::string_view value) {
      auto u = decode_user(value);
      if (!u) {
        bad = u.error();
        return false;
      }
      out.push_back(std::move(*u));
      return true;
    });
  }));
  if (!bad) return bad.error();
  return out;
}

Result<User> MailboxStore::update_user(std::string_view name_or_address, const std::function<Status(User&)>& fn) {
  User result;
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(auto found, tx.user_by_address(name_or_address));
    if (!found) return make_error(ErrorCode::kNotFound, "no user " + std::string(name_or_address));
    User u = *found;
    const auto before = u.addresses();
    MAILARK_TRY(fn(u));
    if (u.id != found->id || u.name != found->name)
      return make_error(ErrorCode::kInvalidArgument, "a user's id and login name cannot change");
    std::vector<std::string> aliases;
    for (const auto& a : u.aliases) {
      MAILARK_ASSIGN_OR_RETURN(std::string n, normalize_address(a));
      if (n != u.name && std::find(aliases.begin(), aliases.end(), n) == aliases.end()) aliases.push_back(n);
    }
    u.aliases = aliases;
    for (const auto& a : before)
      if (!u.has_address(a)) MAILARK_TRY(tx.del(addresses_, a));
    for (const auto& t : found->api_tokens)
      if (std::none_of(u.api_tokens.begin(), u.api_tokens.end(), [&](const ApiToken& x) { return x.hash == t.hash; }))
        MAILARK_TRY(tx.del(tokens_, t.hash));
    for (const auto& t : u.api_tokens) MAILARK_TRY(tx.put(tokens_, t.hash, u.name));
    for (const auto& a : u.addresses()) {
      MAILARK_ASSIGN_OR_RETURN(auto owner, tx.get(addresses_, a));
      if (owner && *owner != u.name)
        return make_error(ErrorCode::kInvalidArgument, "the address " + a + " already belongs to " + *owner);
      if (!owner) MAILARK_TRY(tx.put(addresses_, a, u.name));
    }
    MAILARK_TRY(tx.put(users_, u.name, encode_user(u)));
    result = u;
    return ok_status();
  }));
  return result;
}

// ---- folders ----

Result<std::vector<Folder>> MailboxStore::folders(std::uint32_t user_id) const {
  std::vector<Folder> out;
  Status bad = ok_status();
  MAILARK_TRY(read([&](Tx& tx) {
    return tx.scan(folders_, be32(user_id), [&](std::string_view key, std::string_view value) {
      auto f = decode_folder(user_id, key.substr(4), value);
      if (!f) {
        bad = f.error();
        return false;
      }
      out.push_back(std::move(*f));
      return true;
    });
  }));
  if (!bad) return bad.error();
  return out;
}

Result<Folder> MailboxStore::folder(std::uint32_t user_id, std::string_view name) const {
  MAILARK_ASSIGN_OR_RETURN(std::string canonical, normalize_folder_name(name));
  std::optional<Folder> f;
  MAILARK_TRY(read([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(f, tx.folder(user_id, canonical));
    return ok_status();
  }));
  if (!f) return make_error(ErrorCode::kNotFound, "no folder " + canonical);
  return *f;
}

Result<Folder> MailboxStore::folder_by_id(std::uint32_t user_id, std::uint32_t folder_id) const {
  Folder f;
  MAILARK_TRY(read([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(f, tx.owned_folder(user_id, folder_id));
    return ok_status();
  }));
  return f;
}

Result<FolderCounts> MailboxStore::counts(std::uint32_t user_id, std::uint32_t folder_id) const {
  FolderCounts c;
  MAILARK_TRY(read([&](Tx& tx) -> Status {
    MAILARK_TRY(tx.owned_folder(user_id, folder_id));
    return tx.scan_entries(folder_id, [&](MailEntry& e) {
      ++c.messages;
      if (!(e.flags & kMsgSeen)) ++c.unseen;
      if (e.flags & kMsgDeleted) ++c.deleted;
      return true;
    });
  }));
  return c;
}

Result<Folder> MailboxStore::create_folder(std::uint32_t user_id, std::string_view name, std::string_view special_use) {
  MAILARK_ASSIGN_OR_RETURN(std::string canonical, normalize_folder_name(name));
  Folder out;
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(out, tx.create_folder(user_id, canonical, special_use));
    return ok_status();
  }));
  return out;
}

Status MailboxStore::delete_folder(std::uint32_t user_id, std::string_view name) {
  MAILARK_ASSIGN_OR_RETURN(std::string canonical, normalize_folder_name(name));
  if (canonical == "INBOX") return make_error(ErrorCode::kInvalidArgument, "INBOX cannot be deleted");
  return write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(auto f, tx.folder(user_id, canonical));
    if (!f) return make_error(ErrorCode::kNotFound, "no folder " + canonical);
    std::vector<std::string> keys;
    MAILARK_TRY(tx.scan(messages_, be32(f->id), [&](std::string_view key, std::string_view) {
      keys.emplace_back(key);
      return true;
    }));
    for (const auto& k : keys) MAILARK_TRY(tx.del(messages_, k));
    MAILARK_TRY(tx.del(folder_ids_, be32(f->id)));
    MAILARK_TRY(tx.del(folders_, folder_key(user_id, canonical)));
    tx.changed.insert(user_id);
    return ok_status();
  });
}

Status MailboxStore::rename_folder(std::uint32_t user_id, std::string_view from, std::string_view to) {
  MAILARK_ASSIGN_OR_RETURN(std::string src, normalize_folder_name(from));
  MAILARK_ASSIGN_OR_RETURN(std::string dst, normalize_folder_name(to));
  if (dst == "INBOX") return make_error(ErrorCode::kInvalidArgument, "a folder cannot be renamed to INBOX");
  if (dst.size() > src.size() && dst.compare(0, src.size() + 1, src + "/") == 0)
    return make_error(ErrorCode::kInvalidArgument, "a folder cannot be moved under itself");
  return write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(auto f, tx.folder(user_id, src));
    const std::string prefix = be32(user_id);
    auto is_moved = [&](std::string_view name) {
      return name == src || (name.size() > src.size() && name.substr(0, src.size() + 1) == src + "/");
    };
    if (!f) {
      // A name that only holds folders (LIST shows it \Noselect: "Projects" of a created
      // "Projects/2026", or a deleted folder's name with children left) is renamed with them, as
      // RFC 9051 6.3.6 has inferior names follow and Dovecot does; a client shows it as a folder.
      bool inferiors = false;
      MAILARK_TRY(tx.scan(folders_, prefix, [&](std::string_view key, std::string_view) {
        inferiors = is_moved(key.substr(4));
        return !inferiors;
      }));
      if (!inferiors) return make_error(ErrorCode::kNotFound, "no folder " + src);
    }
    MAILARK_ASSIGN_OR_RETURN(auto exists, tx.folder(user_id, dst));
    if (exists) return make_error(ErrorCode::kInvalidArgument, "folder " + dst + " already exists");
    if (src == "INBOX" && f) {
      // RFC 9051 6.3.6: INBOX's messages move to the new folder; INBOX stays, empty.
      MAILARK_ASSIGN_OR_RETURN(Folder nf, tx.create_folder(user_id, dst, ""));
      Folder& target = tx.cached(nf);
      std::vector<MailEntry> moved;
      MAILARK_TRY(tx.scan_entries(f->id, [&](MailEntry& e) {
        moved.push_back(std::move(e));
        return true;
      }));
      for (auto& e : moved) {
        MAILARK_TRY(tx.del(messages_, message_key(f->id, e.uid)));
        MAILARK_TRY(tx.place(target, e.seq, e.flags, e.keywords));
      }
      Folder& inbox = tx.cached(*f);
      if (!moved.empty()) ++inbox.highest_modseq;
      return ok_status();
    }
    // The folder and its children: names change, ids and UIDs stay.
    std::vector<std::pair<std::string, std::string>> renames;  // old key, value
    MAILARK_TRY(tx.scan(folders_, prefix, [&](std::string_view key, std::string_view value) {
      if (is_moved(key.substr(4))) renames.emplace_back(std::string(key), std::string(value));
      return true;
    }));
    for (const auto& [key, value] : renames) {
      std::string new_name = dst + key.substr(4 + src.size());
      if (new_name.size() > kMaxFolderNameBytes) return make_error(ErrorCode::kInvalidArgument, "the new name is too long");
      MAILARK_ASSIGN_OR_RETURN(auto clash, tx.folder(user_id, new_name));
      if (clash) return make_error(ErrorCode::kInvalidArgument, "folder " + new_name + " already exists");
      MAILARK_ASSIGN_OR_RETURN(Folder moved, decode_folder(user_id, key.substr(4), value));
      MAILARK_TRY(tx.del(folders_, key));
      MAILARK_ASSIGN_OR_RETURN(auto sub, tx.get(subscriptions_, key));
      if (sub) {
        MAILARK_TRY(tx.del(subscriptions_, key));
        MAILARK_TRY(tx.put(subscriptions_, folder_key(user_id, new_name), ""));
      }
      moved.name = new_name;
      MAILARK_TRY(tx.put(folder_ids_, be32(moved.id), be32(user_id) + new_name));
      MAILARK_TRY(tx.save_folder(moved));
    }
    return ok_status();
  });
}

Status MailboxStore::set_subscribed(std::uint32_t user_id, std::string_view name, bool subscribed) {
  MAILARK_ASSIGN_OR_RETURN(std::string canonical, normalize_folder_name(name));
  return write([&](Tx& tx) -> Status {
    if (!subscribed) return tx.del(subscriptions_, folder_key(user_id, canonical));
    MAILARK_ASSIGN_OR_RETURN(auto f, tx.folder(user_id, canonical));
    if (!f) return make_error(ErrorCode::kNotFound, "no folder " + canonical);
    std::size_t count = 0;
    MAILARK_TRY(tx.scan(subscriptions_, be32(user_id), [&](std::string_view, std::string_view) { return ++count <= 10 * kMaxFoldersPerUser; }));
    if (count >= 10 * kMaxFoldersPerUser) return make_error(ErrorCode::kInvalidArgument, "too many subscriptions");
    return tx.put(subscriptions_, folder_key(user_id, canonical), "");
  });
}

Result<std::vector<std::string>> MailboxStore::subscriptions(std::uint32_t user_id) const {
  std::vector<std::string> out;
  MAILARK_TRY(read([&](Tx& tx) {
    return tx.scan(subscriptions_, be32(user_id), [&](std::string_view key, std::string_view) {
      out.emplace_back(key.substr(4));
      return true;
    });
  }));
  return out;
}

// ---- messages ----

Result<std::vector<MailEntry>> MailboxStore::entries(std::uint32_t user_id, std::uint32_t folder_id) const {
  std::vector<MailEntry> out;
  MAILARK_TRY(read([&](Tx& tx) -> Status {
    MAILARK_TRY(tx.owned_folder(user_id, folder_id));
    return tx.scan_entries(folder_id, [&](MailEntry& e) {
      out.push_back(std::move(e));
      return true;
    });
  }));
  return out;
}

Result<std::vector<MailEntry>> MailboxStore::entries_page(std::uint32_t user_id, std::uint32_t folder_id,
                                                          std::size_t offset, std::size_t limit) const {
  std::vector<MailEntry> out;
  std::size_t skipped = 0;
  MAILARK_TRY(read([&](Tx& tx) -> Status {
    MAILARK_TRY(tx.owned_folder(user_id, folder_id));
    if (limit == 0) return ok_status();
    return tx.scan_entries(
        folder_id,
        [&](MailEntry& e) {
          if (skipped < offset) {
            ++skipped;
            return true;
          }
          out.push_back(std::move(e));
          return out.size() < limit;
        },
        /*reverse=*/true);
  }));
  return out;
}

Result<std::pair<std::uint32_t, std::uint32_t>> MailboxStore::claim_recent(std::uint32_t user_id, std::uint32_t folder_id) {
  std::pair<std::uint32_t, std::uint32_t> out;
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(Folder folder, tx.owned_folder(user_id, folder_id));
    out = {folder.first_recent_uid, folder.uidnext};
    if (folder.first_recent_uid == folder.uidnext) return ok_status();
    folder.first_recent_uid = folder.uidnext;
    return tx.put(folders_, folder_key(user_id, folder.name), encode_folder(folder));
  }));
  return out;
}

Result<std::optional<MailEntry>> MailboxStore::find_seq(std::uint32_t user_id, std::uint32_t folder_id,
                                                        std::uint64_t seq) const {
  std::optional<MailEntry> found;
  MAILARK_TRY(read([&](Tx& tx) -> Status {
    MAILARK_TRY(tx.owned_folder(user_id, folder_id));
    return tx.scan_entries(
        folder_id,
        [&](MailEntry& e) {
          if (e.seq != seq) return true;
          found = std::move(e);
          return false;
        },
        /*reverse=*/true);
  }));
  return found;
}

Result<FlagOutcome> MailboxStore::change_flags(std::uint32_t user_id, std::uint32_t folder_id,
                                               const std::vector<std::uint32_t>& uids, const FlagChange& change) {
  for (const auto& k : change.keywords)
    if (k.empty() || k.size() > kMaxKeywordBytes) return make_error(ErrorCode::kInvalidArgument, "a keyword of 1 to 100 bytes");
  FlagOutcome out;
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(Folder folder, tx.owned_folder(user_id, folder_id));
    Folder& f = tx.cached(folder);
    for (std::uint32_t uid : uids) {
      MAILARK_ASSIGN_OR_RETURN(auto value, tx.get(messages_, message_key(folder_id, uid)));
      if (!value) continue;  // expunged meanwhile
      MAILARK_ASSIGN_OR_RETURN(MailEntry e, decode_entry(uid, *value));
      if (change.unchanged_since && e.modseq > *change.unchanged_since) {
        out.failed_modified.push_back(uid);
        continue;
      }
      MailEntry n = e;
      auto has_kw = [&](const std::string& k) {
        return std::any_of(n.keywords.begin(), n.keywords.end(), [&](const std::string& x) { return ascii_iequals(x, k); });
      };
      switch (change.mode) {
        case FlagMode::kReplace:
          n.flags = change.flags;
          n.keywords.clear();
          for (const auto& k : change.keywords)
            if (!has_kw(k)) n.keywords.push_back(k);
          break;
        case FlagMode::kAdd:
          n.flags |= change.flags;
          for (const auto& k : change.keywords)
            if (!has_kw(k)) n.keywords.push_back(k);
          break;
        case FlagMode::kRemove:
          n.flags &= ~change.flags;
          n.keywords.erase(std::remove_if(n.keywords.begin(), n.keywords.end(),
                                          [&](const std::string& x) {
                                            return std::any_of(change.keywords.begin(), change.keywords.end(),
                                                               [&](const std::string& k) { return ascii_iequals(x, k); });
                                          }),
                           n.keywords.end());
          break;
      }
      if (n.keywords.size() > kMaxKeywordsPerMessage)
        return make_error(ErrorCode::kInvalidArgument, "a message has at most 50 keywords");
      if (n.flags == e.flags && n.keywords == e.keywords) {
        // Unchanged: still reported (the client asked), with its current modseq.
        out.changed.push_back(e);
        continue;
      }
      n.modseq = ++f.highest_modseq;
      MAILARK_TRY(tx.put(messages_, message_key(folder_id, uid), encode_entry(n)));
      tx.changed.insert(user_id);
      out.changed.push_back(std::move(n));
    }
    out.highest_modseq = f.highest_modseq;
    return ok_status();
  }));
  return out;
}

Result<ExpungeOutcome> MailboxStore::expunge(std::uint32_t user_id, std::uint32_t folder_id,
                                             const std::optional<std::vector<std::uint32_t>>& only) {
  ExpungeOutcome out;
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(Folder folder, tx.owned_folder(user_id, folder_id));
    Folder& f = tx.cached(folder);
    std::set<std::uint32_t> allowed;
    if (only) allowed.insert(only->begin(), only->end());
    std::vector<std::uint32_t> doomed;
    MAILARK_TRY(tx.scan_entries(folder_id, [&](MailEntry& e) {
      if ((e.flags & kMsgDeleted) && (!only || allowed.count(e.uid))) doomed.push_back(e.uid);
      return true;
    }));
    for (std::uint32_t uid : doomed) MAILARK_TRY(tx.del(messages_, message_key(folder_id, uid)));
    if (!doomed.empty()) {
      ++f.highest_modseq;
      tx.changed.insert(user_id);
    }
    out.uids = doomed;
    out.highest_modseq = f.highest_modseq;
    return ok_status();
  }));
  return out;
}

namespace {

// What tells a sent message's copies apart from other mail: its Message-ID (without blanks and
// angle brackets) and its Subject field as written; an empty id when it has none. Both, because a
// client that reuses Message-IDs must not have one message replace another.
struct SentIdentity {
  std::string id, subject;
  bool operator==(const SentIdentity&) const = default;
};

SentIdentity sent_identity(const ArchiveSnapshot& snap, const ArchiveRecord& r) {
  auto raw = snap.raw(r);
  if (!raw) return {};
  auto v = header_field(*raw, "Message-ID");
  if (!v) return {};
  std::string_view id = *v;
  while (!id.empty() && (id.front() == ' ' || id.front() == '\t' || id.front() == '<')) id.remove_prefix(1);
  while (!id.empty() && (id.back() == ' ' || id.back() == '\t' || id.back() == '\r' || id.back() == '\n' ||
                         id.back() == '>'))
    id.remove_suffix(1);
  return {std::string(id), header_field(*raw, "Subject").value_or("")};
}

}  // namespace

Result<std::vector<std::uint32_t>> MailboxStore::replace_sent_copies(std::uint32_t user_id, std::uint32_t folder_id,
                                                                     std::uint32_t kept_uid, const Archive& archive) {
  MAILARK_ASSIGN_OR_RETURN(auto newest, entries_page(user_id, folder_id, 0, kSentCopyWindow));
  auto kept = std::find_if(newest.begin(), newest.end(), [&](const MailEntry& e) { return e.uid == kept_uid; });
  if (kept == newest.end()) return std::vector<std::uint32_t>{};
  MAILARK_ASSIGN_OR_RETURN(auto snapshot, archive.snapshot());
  const ArchiveSnapshot& snap = *snapshot;
  MAILARK_ASSIGN_OR_RETURN(ArchiveRecord kept_record, snap.record(kept->seq));
  const SentIdentity id = sent_identity(snap, kept_record);
  if (id.id.empty()) return std::vector<std::uint32_t>{};
  std::vector<MailEntry> copies;
  for (const MailEntry& e : newest) {
    if (e.uid == kept_uid || e.seq == kept->seq) continue;
    auto r = snap.record(e.seq);
    if (!r || r->envelope.direction != Direction::kOutbound) continue;
    // The two copies differ by a few header fields (mailark's Received, a client's Bcc): a message
    // of another size is another message, and is not read (a Sent folder of large attachments
    // would cost an APPEND every one of them decompressed).
    const std::uint64_t lo = std::min(r->raw_size, kept_record.raw_size), hi = std::max(r->raw_size, kept_record.raw_size);
    if (hi - lo > kSentCopySizeSlack) continue;
    if (sent_identity(snap, *r) == id) copies.push_back(e);
  }
  if (copies.empty()) return std::vector<std::uint32_t>{};
  std::vector<std::uint32_t> removed;
  std::uint32_t flags = 0;  // the copies' flags and keywords, for the kept entry
  std::vector<std::string> keywords;
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(Folder folder, tx.owned_folder(user_id, folder_id));
    Folder& f = tx.cached(folder);
    MAILARK_ASSIGN_OR_RETURN(auto now_kept, tx.get(messages_, message_key(folder_id, kept_uid)));
    if (!now_kept) return ok_status();  // expunged meanwhile: nothing replaces the copies
    for (const MailEntry& c : copies) {
      MAILARK_ASSIGN_OR_RETURN(auto still, tx.get(messages_, message_key(folder_id, c.uid)));
      if (!still) continue;
      MAILARK_ASSIGN_OR_RETURN(MailEntry now, decode_entry(c.uid, *still));
      flags |= now.flags & ~kMsgDeleted;
      keywords.insert(keywords.end(), now.keywords.begin(), now.keywords.end());
      MAILARK_TRY(tx.del(messages_, message_key(folder_id, c.uid)));
      removed.push_back(c.uid);
    }
    if (removed.empty()) return ok_status();
    ++f.highest_modseq;
    tx.changed.insert(user_id);
    return ok_status();
  }));
  std::sort(removed.begin(), removed.end());
  // A \Flagged the user set on the filed copy stays, on the kept one.
  if (!removed.empty() && (flags || !keywords.empty()))
    MAILARK_TRY(change_flags(user_id, folder_id, {kept_uid}, {FlagMode::kAdd, flags, keywords, {}}));
  return removed;
}

Result<std::uint64_t> MailboxStore::forget_expired(const std::function<bool(std::uint64_t seq)>& expired) {
  std::uint64_t removed = 0;
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    // The keys first (a cursor over a table being changed is not to be trusted), then each removal.
    std::vector<std::pair<std::uint32_t, std::uint32_t>> doomed;  // folder id, uid
    Status bad = ok_status();
    MAILARK_TRY(tx.scan(messages_, {}, [&](std::string_view key, std::string_view value) {
      if (key.size() != 8) return true;
      auto e = decode_entry(from_be32(key.substr(4)), value);
      if (!e) {
        bad = e.error();
        return false;
      }
      if (expired(e->seq)) doomed.emplace_back(from_be32(key.substr(0, 4)), e->uid);
      return true;
    }));
    MAILARK_TRY(bad);
    std::set<std::uint32_t> folders;
    for (const auto& [folder_id, uid] : doomed) {
      MAILARK_TRY(tx.del(messages_, message_key(folder_id, uid)));
      folders.insert(folder_id);
    }
    for (std::uint32_t folder_id : folders) {
      MAILARK_ASSIGN_OR_RETURN(auto owner, tx.get(folder_ids_, be32(folder_id)));
      if (!owner || owner->size() < 4) continue;
      MAILARK_ASSIGN_OR_RETURN(Folder f, tx.owned_folder(from_be32(*owner), folder_id));
      ++tx.cached(f).highest_modseq;  // sessions see the expunges at their next poll
      tx.changed.insert(f.user_id);
    }
    removed = doomed.size();
    return ok_status();
  }));
  return removed;
}

Result<CopyOutcome> MailboxStore::copy(std::uint32_t user_id, std::uint32_t from_folder,
                                       const std::vector<std::uint32_t>& uids, std::uint32_t to_folder, bool move) {
  CopyOutcome out;
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(Folder src_folder, tx.owned_folder(user_id, from_folder));
    MAILARK_ASSIGN_OR_RETURN(Folder dst_folder, tx.owned_folder(user_id, to_folder));
    Folder& src = tx.cached(src_folder);
    Folder& dst = tx.cached(dst_folder);
    out.uidvalidity = dst.uidvalidity;
    std::vector<std::uint32_t> sorted(uids);
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    bool removed = false;
    for (std::uint32_t uid : sorted) {
      MAILARK_ASSIGN_OR_RETURN(auto value, tx.get(messages_, message_key(from_folder, uid)));
      if (!value) continue;
      MAILARK_ASSIGN_OR_RETURN(MailEntry e, decode_entry(uid, *value));
      // Moving within one folder gives the message a new UID (RFC 6851 allows it; clients see it
      // expunged and appended).
      MAILARK_ASSIGN_OR_RETURN(MailEntry placed, tx.place(dst, e.seq, e.flags, e.keywords));
      out.uids.emplace_back(uid, placed.uid);
      if (move) {
        MAILARK_TRY(tx.del(messages_, message_key(from_folder, uid)));
        removed = true;
      }
    }
    if (removed) ++src.highest_modseq;
    return ok_status();
  }));
  return out;
}

// ---- following the archive ----

struct MailboxStore::Target {
  std::uint32_t user_id = 0;
  enum Kind { kInbox, kSent, kNamed } kind = kInbox;
  std::string folder;  // kNamed
  // A mailbox import (another custodian's copy, or the owner's own import of mail that came through
  // mailark): the earlier records of the same bytes. A user who has one of them in a folder is not
  // given this one too (Mailbox.AnImportOfMailAUserAlreadyHasIsNotPlacedTwice).
  std::shared_ptr<const std::vector<std::uint64_t>> earlier_copies;
};

std::uint64_t MailboxStore::followed() const {
  std::uint64_t v = 0;
  (void)read([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(v, tx.meta_u64("followed"));
    return ok_status();
  });
  return v;
}

namespace {

// Which users' folders an archived message goes to (the membership rules of mailbox.h).
using Target = MailboxStore::Target;

template <typename LookupUser>
std::vector<MailboxStore::Target> targets_for_import(const ArchiveRecord& r, LookupUser&& user_of, const ArchiveSnapshot& snap);

// A quarantined record goes to no one's folders until an administrator releases it (its quarantine
// entry says released): then to the folders it would have gone to (Mailbox.AReleasedMessageReachesTheMailbox).
bool released_from_quarantine(const Archive& archive, const ArchiveRecord& r) {
  if (!(r.flags & kFlagQuarantined)) return false;
  auto q = archive.quarantine_entry(r.seq);
  return q && q->status == QuarantineStatus::kReleased;
}

template <typename LookupUser>
std::vector<MailboxStore::Target> targets_for(const ArchiveRecord& r, LookupUser&& user_of, const ArchiveSnapshot& snap,
                                              bool released) {
  std::vector<Target> out;
  if ((r.flags & kFlagQuarantined) && !released) return out;
  if (r.verdict.kind == scanner::VerdictKind::kInfected && !released) return out;
  const Envelope& env = r.envelope;
  auto add = [&](std::optional<std::uint32_t> user, Target::Kind kind, std::string folder = {}) {
    if (!user) return;
    for (const auto& t : out)
      if (t.user_id == *user && t.kind == kind && t.folder == folder) return;
    out.push_back({*user, kind, std::move(folder)});
  };
  switch (env.direction) {
    case Direction::kProbe:
      return out;
    case Direction::kInbound:
      for (const auto& rcpt : env.rcpt_to) add(user_of(rcpt), Target::kInbox);
      return out;
    case Direction::kOutbound:
      // A submission split in two (api/smtp/server.cc submit): the "+internal" half is not a
      // second Sent copy.
      if (!is_internal_copy(env)) add(user_of(env.mail_from), Target::kSent);
      for (const auto& rcpt : env.rcpt_to) add(user_of(rcpt), Target::kInbox);
      return out;
    case Direction::kImport:
      break;
  }
  if (env.connector == "imap") {
    // IMAP APPEND: the user in the envelope, the folder in the source ("imap:<folder>").
    if (env.rcpt_to.empty()) return out;
    std::string folder = env.source.substr(0, 5) == "imap:" ? env.source.substr(5) : std::string("INBOX");
    add(user_of(env.rcpt_to.front()), Target::kNamed, folder);
    return out;
  }
  // Mailbox imports: whoever has an earlier copy of the same bytes keeps that one.
  if (is_mailbox_import(env)) {
    if (auto ids = snap.copies(r.content_sha256); ids && ids->size() > 1) {
      auto earlier = std::make_shared<std::vector<std::uint64_t>>();
      for (std::uint64_t id : *ids)
        if (id < r.seq) earlier->push_back(id);
      if (!earlier->empty()) {
        out = targets_for_import(r, user_of, snap);
        for (auto& t : out) t.earlier_copies = earlier;
        return out;
      }
    }
  }
  return targets_for_import(r, user_of, snap);
}

// An import's users: the owner (import --owner), else the header fields, read from the stored bytes.
template <typename LookupUser>
std::vector<MailboxStore::Target> targets_for_import(const ArchiveRecord& r, LookupUser&& user_of, const ArchiveSnapshot& snap) {
  std::vector<Target> out;
  const Envelope& env = r.envelope;
  auto add = [&](std::optional<std::uint32_t> user, Target::Kind kind, std::string folder = {}) {
    if (!user) return;
    for (const auto& t : out)
      if (t.user_id == *user && t.kind == kind && t.folder == folder) return;
    out.push_back({*user, kind, std::move(folder), nullptr});
  };
  std::optional<std::string> raw;
  if (auto bytes = snap.raw(r)) raw = std::move(*bytes);
  std::vector<std::string> from;
  if (raw)
    if (auto v = mime_header_joined(*raw, "From"))
      for (const auto& a : parse_address_list(*v, 20)) from.push_back(a.addr);
  if (!env.rcpt_to.empty()) {
    // import --owner: the owner's Sent when the owner wrote it, else the owner's INBOX.
    for (const auto& owner : env.rcpt_to) {
      auto uid = user_of(owner);
      bool wrote = false;
      for (const auto& f : from) wrote = wrote || (user_of(f) == uid && uid);
      add(uid, wrote ? Target::kSent : Target::kInbox);
    }
    return out;
  }
  if (!raw) return out;
  for (const auto& f : from) add(user_of(f), Target::kSent);
  for (const char* field : {"To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To"}) {
    auto v = mime_header_joined(*raw, field);
    if (!v) continue;
    for (const auto& a : parse_address_list(*v, 1000)) add(user_of(a.addr), Target::kInbox);
  }
  return out;
}

}  // namespace

// Places record `seq` for one target unless it was placed for that user before. Returns whether it
// was placed now.
Result<bool> MailboxStore::place_target(Tx& tx, std::uint64_t seq, const Target& t) {
  MAILARK_ASSIGN_OR_RETURN(auto member, tx.get(member_, member_key(t.user_id, seq, t.kind == Target::kSent)));
  if (member) return false;
  if (t.earlier_copies) {
    for (std::uint64_t other : *t.earlier_copies) {
      for (bool sent : {false, true}) {
        MAILARK_ASSIGN_OR_RETURN(auto has, tx.get(member_, member_key(t.user_id, other, sent)));
        if (has) return false;
      }
    }
  }
  std::optional<Folder> folder;
  std::uint32_t flags = 0;
  if (t.kind == Target::kSent) {
    MAILARK_ASSIGN_OR_RETURN(folder, tx.folder_for_use(t.user_id, "\\Sent", "Sent"));
    flags = kMsgSeen;  // the user wrote it
  } else if (t.kind == Target::kNamed) {
    MAILARK_ASSIGN_OR_RETURN(folder, tx.folder(t.user_id, t.folder));
  }
  if (!folder) {
    MAILARK_ASSIGN_OR_RETURN(folder, tx.folder(t.user_id, "INBOX"));
    if (!folder) {
      MAILARK_ASSIGN_OR_RETURN(Folder made, tx.create_folder(t.user_id, "INBOX", ""));
      folder = made;
    }
  }
  Folder& f = tx.cached(*folder);
  MAILARK_TRY(tx.place(f, seq, flags));
  MAILARK_TRY(tx.put(member_, member_key(t.user_id, seq, t.kind == Target::kSent), ""));
  return true;
}

Result<FollowStats> MailboxStore::follow(const Archive& archive, std::size_t max_records) {
  std::lock_guard lock(follow_mu_);
  FollowStats stats;
  const std::uint64_t head = archive.head().seq;
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(std::uint64_t from, tx.meta_u64("followed"));
    stats.followed = from;
    if (from >= head) return ok_status();
    bool any_user = false;
    MAILARK_TRY(tx.scan(users_, "", [&](std::string_view, std::string_view) {
      any_user = true;
      return false;
    }));
    const std::uint64_t to = std::min<std::uint64_t>(head, from + max_records);
    if (any_user) {
      MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
      std::map<std::string, std::optional<std::uint32_t>> user_cache;
      auto user_of = [&](const std::string& address) -> std::optional<std::uint32_t> {
        std::string key = ascii_lower(address);
        if (auto it = user_cache.find(key); it != user_cache.end()) return it->second;
        const std::optional<std::uint32_t> id = tx.placing_user(key);
        user_cache.emplace(key, id);
        return id;
      };
      for (std::uint64_t seq = from + 1; seq <= to; ++seq) {
        auto rec = snap->record(seq);
        if (!rec) continue;  // an unreadable record has no place in anyone's folders (verify reports it)
        ++stats.records;
        for (const Target& t : targets_for(*rec, user_of, *snap, released_from_quarantine(archive, *rec))) {
          MAILARK_ASSIGN_OR_RETURN(bool added, place_target(tx, seq, t));
          if (added) ++stats.placed;
        }
      }
    } else {
      stats.records = to - from;
    }
    stats.followed = to;
    return tx.put(meta_, "followed", be64(to));
  }));
  return stats;
}

Result<std::optional<std::uint64_t>> MailboxStore::place_released(const Archive& archive, std::uint64_t seq) {
  std::lock_guard lock(follow_mu_);
  MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
  MAILARK_ASSIGN_OR_RETURN(auto rec, snap->record(seq));
  std::optional<std::uint64_t> placed = 0;
  // Where the follower stands is read inside this write transaction, which waits for any follower
  // pass (of this process or another) to commit: a pass that read the entry as still held has moved
  // "followed" past it by then, and one that begins after this transaction reads the release
  // (Mailbox.AReleaseRacingTheFollowerIsPlacedOnce).
  MAILARK_TRY(write([&](Tx& tx) -> Status {
    MAILARK_ASSIGN_OR_RETURN(std::uint64_t followed, tx.meta_u64("followed"));
    if (seq > followed) {
      placed = std::nullopt;  // the follower places it when it gets there
      return ok_status();
    }
    if (!released_from_quarantine(archive, rec)) return ok_status();
    auto user_of = [&](const std::string& address) { return tx.placing_user(address); };
    for (const Target& t : targets_for(rec, user_of, *snap, true)) {
      MAILARK_ASSIGN_OR_RETURN(bool added, place_target(tx, seq, t));
      if (added) ++*placed;
    }
    return ok_status();
  }));
  return placed;
}

Result<std::uint64_t> MailboxStore::backfill(const Archive& archive, std::uint32_t user_id,
                                             const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  std::lock_guard lock(follow_mu_);
  const std::uint64_t upto = followed();
  std::uint64_t placed = 0;
  MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
  std::vector<std::string> addresses;
  MAILARK_TRY(read([&](Tx& tx) -> Status {
    MAILARK_TRY(tx.scan(users_, "", [&](std::string_view, std::string_view value) {
      auto u = decode_user(value);
      if (u && u->id == user_id) {
        addresses = u->addresses();
        return false;
      }
      return true;
    }));
    return ok_status();
  }));
  if (addresses.empty()) return make_error(ErrorCode::kNotFound, "no user with id " + std::to_string(user_id));
  auto user_of = [&](const std::string& address) -> std::optional<std::uint32_t> {
    for (const auto& a : addresses)
      if (ascii_iequals(a, address)) return user_id;
    if (other_form_) {  // an IDN domain's other spelling (set_other_address_form)
      if (const std::string other = other_form_(address); !other.empty())
        for (const auto& a : addresses)
          if (ascii_iequals(a, other)) return user_id;
    }
    return std::nullopt;
  };
  constexpr std::uint64_t kBatch = 2000;
  for (std::uint64_t from = 1; from <= upto; from += kBatch) {
    const std::uint64_t to = std::min(upto, from + kBatch - 1);
    std::vector<std::pair<std::uint64_t, Target>> found;
    for (std::uint64_t seq = from; seq <= to; ++seq) {
      auto rec = snap->record(seq);
      if (!rec) continue;
      for (auto& t : targets_for(*rec, user_of, *snap, released_from_quarantine(archive, *rec)))
        found.emplace_back(seq, std::move(t));
    }
    if (!found.empty()) {
      MAILARK_TRY(write([&](Tx& tx) -> Status {
        for (const auto& [seq, t] : found) {
          MAILARK_ASSIGN_OR_RETURN(bool added, place_target(tx, seq, t));
          if (added) ++placed;
        }
        return ok_status();
      }));
    }
    if (progress) progress(to, upto);
  }
  return placed;
}

}  // namespace mailark
