// LMDB translation point of the archive: every mdb_* call on DATA/archive stays in this file
// (engine/mailbox.cc is the other, for DATA/mailbox; engine/lmdb_util.h holds what they share).
#include "engine/archive.h"

#include <lmdb.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <filesystem>
#include <algorithm>
#include <list>
#include <map>
#include <utility>

#include "common/ascii.h"
#include "common/dates.h"
#include "common/encoding.h"
#include "common/file_util.h"
#include "common/json_text.h"
#include "common/random.h"
#include "engine/lmdb_util.h"

#include <nlohmann/json.hpp>

namespace mailark {
namespace {

// Archive format (meta "format"): 1 = the first release; 2 = quarantine and rcpt_cache tables, queue
// entries v2, verdict "unscannable"; 3 = queue_due, continuity and delivered tables, queue entries v3,
// direction "probe"; 4 = time segments (meta "segments", written when a second segment begins); 5 = a
// store file per segment (segments table version 2; the segments an older archive has keep their
// records in the main environment, and the next segment it begins gets a store). This build reads 1
// to 6 and migrates older ones to 6 on a writable open (from 2, the due index is built from the queue
// in the migrating transaction; from 3 and 4, only the marker changes); 6 = the Merkle tree over the
// records (table `merkle`) and the archive's id (meta "archive_id"): the migration makes the id in
// the migrating transaction and builds the tree from the records right after (Archive::grow_tree);
// 7 = custody: the `holdings` table (which records hold each content, one import record per
// content and custodian) and meta "holdings" (the records it covers), built from the records after
// the migration (Archive::grow_holdings); records v2 (custodian, folder).
constexpr std::uint32_t kFormatVersion = kArchiveFormat;
constexpr std::uint32_t kOldestFormat = 1;
// Address space reserved for the map. LMDB grows the file only as pages are used; the reservation is
// virtual. Raising it later is allowed (mdb_env_set_mapsize on open).
constexpr std::size_t kMapSize = std::size_t{1} << 38;  // 256 GiB
// Target size of one pack of compressed messages (a larger message gets a pack of its own).
constexpr std::size_t kPackBytes = 1u << 20;
// Map reserved for a segment store that may still grow (the live segment's): 250,000 Enron messages
// take 323 MB (docs/BENCHMARKS.md "Segment stores"), so 64 GiB holds about 50 million such messages.
// A process keeps at most the live store and those snapshots still read mapped this large
// (Segments.StoresLeftBehindByACutAreClosedWhenUnused); a closed store is mapped at its file's size.
constexpr std::size_t kStoreMapSize = std::size_t{1} << 36;
// A live store this large is full: the next record begins a new segment, whatever the policy, so a
// store never reaches its map (at most one message, up to Limits::kMaxStoredMessageBytes, past it).
constexpr std::uint64_t kStoreFullBytes = kStoreMapSize - (std::uint64_t{8} << 30);
constexpr const char* kStorePrefix = "segment-";
constexpr const char* kStoreSuffix = ".mdb";

Error lmdb_error(const std::string& what, int rc) {
  ErrorCode code = ErrorCode::kIo;
  std::string hint;
  switch (rc) {
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
      code = ErrorCode::kCorrupt;
      hint = "the archive file is damaged; restore it from a backup and run `mailark verify`";
      break;
    case MDB_VERSION_MISMATCH:
      code = ErrorCode::kUnsupported;
      break;
    case MDB_MAP_FULL:
      code = ErrorCode::kLimit;
      hint = "the archive reached its 256 GiB map; move to a new time segment";
      break;
    case MDB_NOTFOUND:
      code = ErrorCode::kNotFound;
      break;
    case ENOSPC:
      hint = "the disk is full; nothing of this batch was stored";
      break;
    default:
      break;
  }
  return make_error(code, what + ": " + mdb_strerror(rc), hint);
}

// Bytes a file takes on disk (0 when it is missing).
std::uint64_t disk_bytes(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
}

using lmdb::Txn;
using lmdb::val;
using lmdb::view;
using lmdb::be64;
using lmdb::from_be64;
using lmdb::be32;
using lmdb::from_be32;

constexpr std::string_view kMetaFormat = "format";
constexpr std::string_view kMetaHead = "head";
constexpr std::string_view kMetaActiveDict = "active_dict";
constexpr std::string_view kMetaCounters = "counters";
constexpr std::string_view kMetaSegments = "segments";
constexpr std::string_view kMetaSegmentPolicy = "segment_policy";
constexpr std::string_view kMetaArchiveId = "archive_id";
constexpr std::string_view kMetaHoldings = "holdings";
// Records the tree grows by in one transaction when an older archive's tree is built.
constexpr std::uint64_t kTreeBuildChunk = 65536;
// Records an older archive's holdings are built from in one transaction: their keys fall all over the
// table, so each transaction copies most of its pages; one for a million records (~60 MB of rows,
// sorted) leaves the file little more than the table (docs/BENCHMARKS.md "Custodians").
constexpr std::uint64_t kHoldingsBuildChunk = std::uint64_t{1} << 20;

// The `holdings` key of a record (format 7): its content's SHA-256, then 16 bytes that say whose copy
// it is: a mailbox import's custodian (case folded; an import without one has the empty custodian),
// so that one custodian's copy of a message is recorded once; for anything else the record itself
// (every SMTP delivery and IMAP APPEND is its own event).
std::string holding_key(const Digest& content, const Envelope& e, std::uint64_t seq) {
  Sha256 h;
  if (is_mailbox_import(e)) {
    h.update("mailark-custody-v1\nimport\n");
    h.update(ascii_lower(e.custodian));
  } else {
    h.update("mailark-custody-v1\nrecord\n");
    h.update(std::to_string(seq));
  }
  const Digest tag = h.finish();
  std::string key(reinterpret_cast<const char*>(content.data()), 32);
  key.append(reinterpret_cast<const char*>(tag.data()), 16);
  return key;
}

std::uint64_t holdings_built_in(MDB_txn* txn, unsigned meta_dbi) {
  MDB_val k = val(kMetaHoldings), v;
  return mdb_get(txn, meta_dbi, &k, &v) == 0 && v.mv_size == 8 ? from_be64(view(v)) : 0;
}

// meta "segment_policy": version 1, period (u8), max_records (varint).
std::string encode_policy(const SegmentPolicy& p) {
  Writer w;
  w.u8(1);
  w.u8(static_cast<std::uint8_t>(p.period));
  w.varint(p.max_records);
  return std::move(w.out());
}
SegmentPolicy decode_policy(std::optional<std::string_view> stored) {
  SegmentPolicy p;
  if (!stored) return p;
  Reader in(*stored);
  std::uint8_t version = 0, period = 0;
  std::uint64_t max = 0;
  if (in.u8(version) && version == 1 && in.u8(period) && period <= 3 && in.varint(max)) {
    p.period = static_cast<SegmentPeriod>(period);
    p.max_records = max;
  }
  return p;
}

// meta "segments": version 2, then per segment its first seq (varint), opened_at (svarint), period
// label (str), flags (u8: 1 = own store) and first_pack (varint). Version 1 (format 4) lacks the last
// two: every segment in the main environment. `last` is not stored: it is the next segment's first -
// 1, or the head for the live one.
std::string encode_segments(const std::vector<SegmentInfo>& segs) {
  Writer w;
  w.u8(2);
  w.varint(segs.size());
  for (const auto& s : segs) {
    w.varint(s.first);
    w.svarint(s.opened_at);
    w.str(s.period);
    w.u8(s.own_store ? 1 : 0);
    w.varint(s.first_pack);
  }
  return std::move(w.out());
}

// The table as stored (without `last`); one segment from 1 when there is none (an archive that never
// cut one, or of format 3 and older). A table that does not decode whole is kept up to its first bad
// entry, and `damage` (when given) says where: Archive::open refuses such an archive rather than
// reading records from the wrong stores (test: Segments.ADamagedSegmentTableIsRefusedAtOpen).
std::vector<SegmentInfo> decode_segments(std::optional<std::string_view> stored, std::string* damage = nullptr) {
  std::vector<SegmentInfo> out;
  auto bad = [&](std::string what) {
    if (damage && damage->empty()) *damage = std::move(what);
  };
  if (stored) {
    Reader in(*stored);
    std::uint8_t version = 0;
    std::uint64_t n = 0;
    if (!in.u8(version) || (version != 1 && version != 2)) {
      bad("unknown version " + std::to_string(version));
    } else if (!in.varint(n) || n > 1000000) {
      bad("no count of entries");
    } else {
      for (std::uint64_t i = 0; i < n; ++i) {
        SegmentInfo s;
        const std::string entry = "entry " + std::to_string(i + 1) + " of " + std::to_string(n);
        bool whole = in.varint(s.first) && in.svarint(s.opened_at) && in.str(s.period);
        if (whole && version == 2) {
          std::uint8_t flags = 0;
          whole = in.u8(flags) && in.varint(s.first_pack);
          s.own_store = flags & 1;
        }
        if (!whole) {
          bad(entry + " is cut short");
          break;
        }
        if (!out.empty() && s.first <= out.back().first) {  // never: firsts only grow
          bad(entry + " starts at record " + std::to_string(s.first) + ", not after " + std::to_string(out.back().first));
          break;
        }
        // Never: stores are a suffix of the table and their packs only grow.
        if (!out.empty() && out.back().own_store && (!s.own_store || s.first_pack < out.back().first_pack)) {
          bad(entry + " has no store of its own after one that has");
          break;
        }
        out.push_back(std::move(s));
      }
      if (out.size() == n && in.pos() != stored->size())
        bad(std::to_string(stored->size() - in.pos()) + " bytes after the last entry");
    }
  }
  if (out.empty()) out.push_back(SegmentInfo{});
  return out;
}

// Fills in `last` from the next segment's first and the head.
void finish_segments(std::vector<SegmentInfo>& segs, std::uint64_t head) {
  for (std::size_t i = 0; i < segs.size(); ++i)
    segs[i].last = i + 1 < segs.size() ? segs[i + 1].first - 1 : (head >= segs[i].first ? head : 0);
}

std::string encode_counters(const ArchiveCounters& c) {
  std::string s;
  for (std::uint64_t v : {c.records, c.raw_bytes, c.blobs, c.unique_raw_bytes, c.stored_bytes, c.clean,
                          c.infected, c.unscanned, c.malformed, c.packs, c.unscannable})
    s += be64(v);
  return s;
}
ArchiveCounters decode_counters(std::string_view s) {
  ArchiveCounters c;
  std::uint64_t* fields[] = {&c.records, &c.raw_bytes, &c.blobs,     &c.unique_raw_bytes, &c.stored_bytes,
                             &c.clean,   &c.infected,  &c.unscanned, &c.malformed,        &c.packs,
                             &c.unscannable};
  // Counters written by an older format are shorter: the fields they lack start at zero.
  for (std::size_t i = 0; i < std::size(fields) && (i + 1) * 8 <= s.size(); ++i) *fields[i] = from_be64(s.substr(i * 8));
  return c;
}

std::string encode_cached_recipient(const CachedRecipient& c) {
  Writer w;
  w.u8(1);
  w.u8(c.exists ? 1 : 0);
  w.svarint(c.checked_at);
  w.str(c.reply);
  return std::move(w.out());
}

std::optional<CachedRecipient> decode_cached_recipient(std::string_view key, std::string_view value) {
  Reader in(value);
  CachedRecipient c;
  c.address = std::string(key);
  std::uint8_t version, exists;
  if (!in.u8(version) || version != 1 || !in.u8(exists) || !in.svarint(c.checked_at) || !in.str(c.reply)) {
    return std::nullopt;
  }
  c.exists = exists != 0;
  return c;
}

ChainHead decode_head(std::string_view s) {
  ChainHead h;
  if (s.size() == 40) {
    h.seq = from_be64(s);
    std::memcpy(h.hash.data(), s.data() + 8, 32);
  }
  return h;
}
std::string encode_head(const ChainHead& h) {
  return be64(h.seq) + std::string(reinterpret_cast<const char*>(h.hash.data()), 32);
}

// The chain's head, the counters and the segment table (as stored: finish_segments completes it) as
// a transaction sees them: what appends, expiries and snapshots read first. An empty archive has none.
ChainHead read_head(MDB_txn* txn, MDB_dbi meta) {
  MDB_val k = val(kMetaHead), v;
  return mdb_get(txn, meta, &k, &v) == 0 ? decode_head(view(v)) : ChainHead{};
}
ArchiveCounters read_counters(MDB_txn* txn, MDB_dbi meta) {
  MDB_val k = val(kMetaCounters), v;
  return mdb_get(txn, meta, &k, &v) == 0 ? decode_counters(view(v)) : ArchiveCounters{};
}
std::vector<SegmentInfo> read_segments(MDB_txn* txn, MDB_dbi meta) {
  MDB_val k = val(kMetaSegments), v;
  return decode_segments(mdb_get(txn, meta, &k, &v) == 0 ? std::optional<std::string_view>(view(v)) : std::nullopt);
}

// Key of the delivered table: SHA-256 over the Message-ID and the recipient, both in lower case.
// The Merkle tree's table: record seq (u64 BE) -> the hashes of the subtrees that record completes,
// level 0 (its leaf hash) first (docs/FORMAT.md "The Merkle tree"). The subtree of 2^level leaves
// with index i ends at leaf (i + 1) << level, i.e. record seq (i + 1) << level.
std::uint64_t tree_size_in(MDB_txn* txn, unsigned dbi) {
  MDB_cursor* cur = nullptr;
  if (mdb_cursor_open(txn, dbi, &cur)) return 0;
  MDB_val k, v;
  std::uint64_t size = 0;
  if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) size = from_be64(view(k));
  mdb_cursor_close(cur);
  return size;
}

Result<Digest> tree_node_in(MDB_txn* txn, unsigned dbi, unsigned level, std::uint64_t index) {
  if (level >= 64 || index >= (std::uint64_t{1} << (63 - level)))
    return make_error(ErrorCode::kInvalidArgument, "no such subtree");
  std::string key = be64((index + 1) << level);
  MDB_val k = val(key), v;
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND)
    return make_error(ErrorCode::kNotFound, "the Merkle tree has no subtree " + std::to_string(level) + "/" +
                                                std::to_string(index));
  if (rc) return lmdb_error("reading the Merkle tree", rc);
  if (v.mv_size < (level + 1) * 32u || v.mv_size % 32 != 0)
    return make_error(ErrorCode::kCorrupt, "the Merkle tree's entry for record " + std::to_string((index + 1) << level) +
                                               " is damaged");
  Digest d;
  std::memcpy(d.data(), static_cast<const char*>(v.mv_data) + level * 32, 32);
  return d;
}

std::string join_digests(const std::vector<Digest>& ds) {
  std::string out;
  out.reserve(ds.size() * 32);
  for (const auto& d : ds) out.append(reinterpret_cast<const char*>(d.data()), d.size());
  return out;
}

std::string delivered_key(std::string_view message_id, std::string_view rcpt) {
  Digest d = sha256("mailark-delivered-v1\n" + ascii_lower(message_id) + "\n" + ascii_lower(rcpt));
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

}  // namespace

// ---- opening ----

Result<std::unique_ptr<Archive>> Archive::open(const std::string& dir, const Limits& limits, bool read_only) {
  std::unique_ptr<Archive> a(new Archive());
  a->dir_ = dir;
  a->limits_ = limits;
  a->read_only_ = read_only;
  std::error_code ec;
  if (read_only) {
    if (!std::filesystem::exists(std::filesystem::path(dir) / "data.mdb", ec)) {
      return make_error(ErrorCode::kNotFound, "no archive in " + dir,
                        "import mail first (`mailark import PATH`) or pass --data");
    }
  } else {
    std::filesystem::create_directories(dir, ec);
    if (ec) return make_error(ErrorCode::kIo, "creating " + dir + ": " + ec.message());
  }
  int rc = mdb_env_create(&a->env_);
  if (rc) return lmdb_error("mdb_env_create", rc);
  mdb_env_set_maxdbs(a->env_, 16);
  mdb_env_set_mapsize(a->env_, kMapSize);
  // A read-only open never writes, not even LMDB's reader table, so `search`, `show` and `verify`
  // also work on a data folder they may not write (a backup, another user's copy).
  unsigned flags = MDB_NOTLS | (read_only ? MDB_RDONLY : 0);
  rc = mdb_env_open(a->env_, dir.c_str(), flags, 0640);
  if (rc) return lmdb_error("opening the archive in " + dir, rc);

  Txn t;
  rc = mdb_txn_begin(a->env_, nullptr, read_only ? MDB_RDONLY : 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  unsigned create = read_only ? 0 : MDB_CREATE;
  struct Table {
    const char* name;
    unsigned* dbi;
    bool* present;  // tables added after format 1: absent in a read-only open of an old archive
  };
  const Table tables[] = {{"records", &a->records_dbi_, nullptr},         {"blobs", &a->blobs_dbi_, nullptr},
                          {"dicts", &a->dicts_dbi_, nullptr},             {"meta", &a->meta_dbi_, nullptr},
                          {"blob_index", &a->blob_index_dbi_, nullptr},   {"queue", &a->queue_dbi_, &a->has_queue_},
                          {"quarantine", &a->quarantine_dbi_, &a->has_quarantine_},
                          {"rcpt_cache", &a->rcpt_cache_dbi_, &a->has_rcpt_cache_},
                          {"queue_due", &a->queue_due_dbi_, &a->has_queue_due_},
                          {"continuity", &a->continuity_dbi_, &a->has_continuity_},
                          {"delivered", &a->delivered_dbi_, &a->has_delivered_},
                          {"merkle", &a->merkle_dbi_, &a->has_merkle_},
                          {"holdings", &a->holdings_dbi_, &a->has_holdings_},
                          {"expired", &a->expired_dbi_, &a->has_expired_},
                          {"tombstones", &a->tombstones_dbi_, &a->has_expired_}};
  for (const auto& table : tables) {
    MDB_dbi dbi = 0;
    rc = mdb_dbi_open(t.txn, table.name, create, &dbi);
    if (rc == MDB_NOTFOUND && read_only && table.present) {
      *table.present = false;
      continue;
    }
    if (rc) return lmdb_error(std::string("opening table ") + table.name, rc);
    *table.dbi = dbi;
  }

  MDB_val k = val(kMetaFormat), v;
  rc = mdb_get(t.txn, a->meta_dbi_, &k, &v);
  std::uint32_t format = kFormatVersion;
  if (rc == MDB_NOTFOUND) {
    if (read_only) return make_error(ErrorCode::kCorrupt, "the archive in " + dir + " has no format marker");
  } else if (rc) {
    return lmdb_error("reading the format marker", rc);
  } else if (v.mv_size != 4 || from_be32(view(v)) < kOldestFormat || from_be32(view(v)) > kFormatVersion) {
    return make_error(ErrorCode::kUnsupported, "the archive in " + dir + " has an unknown format version",
                      "this mailark reads archive formats " + std::to_string(kOldestFormat) + " to " +
                          std::to_string(kFormatVersion) + "; a newer mailark wrote it");
  } else {
    format = from_be32(view(v));
  }
  if (!read_only && (rc == MDB_NOTFOUND || format < kFormatVersion)) {
    // A new archive, or the in-place migration of an older one: the new tables were created above;
    // nothing stored changes meaning, so only the marker is rewritten, and (from format 2) the due
    // index is built from the queue.
    if (format < 3) {
      MDB_cursor* cur = nullptr;
      if ((rc = mdb_cursor_open(t.txn, a->queue_dbi_, &cur))) return lmdb_error("mdb_cursor_open", rc);
      MDB_val qk, qv;
      int walk;
      for (walk = mdb_cursor_get(cur, &qk, &qv, MDB_FIRST); walk == 0; walk = mdb_cursor_get(cur, &qk, &qv, MDB_NEXT)) {
        if (qk.mv_size != 8) continue;
        auto e = decode_queue_entry(from_be64(view(qk)), view(qv));
        if (!e) {
          mdb_cursor_close(cur);
          return e.error();
        }
        for (const auto& dk : due_keys(*e)) {
          MDB_val dkv = val(dk), empty{0, nullptr};
          if ((rc = mdb_put(t.txn, a->queue_due_dbi_, &dkv, &empty, 0))) {
            mdb_cursor_close(cur);
            return lmdb_error("building the queue's due index", rc);
          }
        }
      }
      mdb_cursor_close(cur);
      if (walk != MDB_NOTFOUND) return lmdb_error("walking the queue", walk);
    }
    if (format < 6 || rc == MDB_NOTFOUND) {
      // The archive's id, made once (format 6): its checkpoints name it.
      unsigned char id[16];
      if (!random_bytes(id, sizeof id)) return make_error(ErrorCode::kInternal, "no random bytes for the archive id");
      MDB_val ik = val(kMetaArchiveId), iv{sizeof id, id};
      if (int irc = mdb_put(t.txn, a->meta_dbi_, &ik, &iv, MDB_NOOVERWRITE); irc && irc != MDB_KEYEXIST)
        return lmdb_error("writing the archive id", irc);
    }
    std::string fmt = be32(kFormatVersion);
    MDB_val fv = val(fmt);
    rc = mdb_put(t.txn, a->meta_dbi_, &k, &fv, 0);
    if (rc) return lmdb_error("writing the format marker", rc);
    format = kFormatVersion;
  }
  {
    k = val(kMetaSegments);
    std::string damage;
    if (mdb_get(t.txn, a->meta_dbi_, &k, &v) == 0) decode_segments(view(v), &damage);
    if (!damage.empty()) {
      return make_error(ErrorCode::kCorrupt, "the archive in " + dir + " has a damaged segment table (" + damage + ")",
                        "restore the data folder from a backup; nothing was changed");
    }
  }
  a->format_ = format;
  // Committing (even a read-only transaction) is what makes the table handles usable afterwards.
  rc = t.commit();
  if (rc) return lmdb_error("mdb_txn_commit", rc);
  a->live_first_.store(a->segments().back().first);
  MAILARK_TRY(a->load_codec());
  if (!read_only) {
    MAILARK_TRY(a->grow_tree());
    MAILARK_TRY(a->grow_holdings());
    MAILARK_TRY(a->finish_expiries());
    MAILARK_TRY(a->drop_moved_leftovers());
  }
  return a;
}

Archive::~Archive() {
  if (env_) mdb_env_close(env_);
}

Archive::Store::~Store() {
  if (env) mdb_env_close(env);
}

std::string Archive::store_path(std::uint64_t first) const {
  return dir_ + "/" + kStorePrefix + std::to_string(first) + kStoreSuffix;
}

std::uint64_t Archive::store_bytes(std::uint64_t first) const { return disk_bytes(store_path(first)); }

Result<std::uint64_t> Archive::seal_stores() {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  const auto segs = segments();
  std::uint64_t sealed = 0;
  for (std::size_t i = 0; i + 1 < segs.size(); ++i) {
    if (!segs[i].own_store || store_sealed(segs[i].first)) continue;
    const std::string path = store_path(segs[i].first);
    if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) continue;  // removed by an expiry (or missing: verify says)
    if (::chmod(path.c_str(), 0440) != 0) return make_error(ErrorCode::kIo, "sealing " + path + ": " + std::strerror(errno));
    ++sealed;
  }
  return sealed;
}

bool Archive::store_sealed(std::uint64_t first) const {
  struct stat st {};
  return ::stat(store_path(first).c_str(), &st) == 0 && (st.st_mode & 0222) == 0;
}

void Archive::release_store(std::uint64_t first) const {
  std::lock_guard lock(stores_mu_);
  auto it = stores_.find(first);
  if (it == stores_.end()) return;
  Store& st = *it->second;
  if (--st.users == 0 && st.writable && first < live_first_.load()) stores_.erase(it);
}

void Archive::retire_writable_stores() const {
  std::lock_guard lock(stores_mu_);
  for (auto it = stores_.begin(); it != stores_.end();) {
    if (it->second->writable && it->second->users == 0 && it->first < live_first_.load()) it = stores_.erase(it);
    else ++it;
  }
}

std::uint64_t Archive::store_map_bytes_for_test() const {
  std::lock_guard lock(stores_mu_);
  std::uint64_t total = 0;
  for (const auto& [first, st] : stores_) {
    MDB_envinfo info{};
    if (mdb_env_info(st->env, &info) == 0) total += info.me_mapsize;
  }
  return total;
}

Result<Archive::Store*> Archive::store(std::uint64_t first, bool closed) const {
  std::lock_guard lock(stores_mu_);
  if (auto it = stores_.find(first); it != stores_.end()) {
    it->second->users++;
    return it->second.get();
  }
  // A snapshot older than the last cut may still call it live: it is not, and is opened as closed.
  closed = closed || first < live_first_.load();
  const bool writable = !read_only_ && !closed;
  const std::string path = store_path(first);
  struct stat st {};
  const bool existed = ::stat(path.c_str(), &st) == 0;
  if (!existed && !writable) {
    return make_error(ErrorCode::kCorrupt, "the store of the segment from record " + std::to_string(first) + " (" + path +
                                               ") is missing",
                      "restore it from a backup; `mailark verify` names the first record it cannot read");
  }
  auto store = std::make_unique<Store>();
  store->writable = writable;
  int rc = mdb_env_create(&store->env);
  if (rc) return lmdb_error("mdb_env_create", rc);
  mdb_env_set_maxdbs(store->env, 4);
  // A closed store never grows: mapped at the size its data uses (LMDB raises a smaller map to it).
  mdb_env_set_mapsize(store->env, closed && !writable ? 1 : kStoreMapSize);
  unsigned flags = MDB_NOSUBDIR | MDB_NOTLS;
  if (!writable) flags |= MDB_RDONLY;
  if (closed && !writable) flags |= MDB_NOLOCK;  // nothing writes it again: no reader table needed
  rc = mdb_env_open(store->env, path.c_str(), flags, 0640);
  if (rc) return lmdb_error("opening the segment store " + path, rc);
  Txn t;
  if ((rc = mdb_txn_begin(store->env, nullptr, writable ? 0 : MDB_RDONLY, &t.txn))) return lmdb_error("mdb_txn_begin", rc);
  const unsigned create = writable ? MDB_CREATE : 0;
  for (auto [name, dbi] : {std::pair{"records", &store->records_dbi}, std::pair{"blobs", &store->blobs_dbi},
                           std::pair{"meta", &store->meta_dbi}}) {
    MDB_dbi d = 0;
    if ((rc = mdb_dbi_open(t.txn, name, create, &d))) return lmdb_error(std::string("opening ") + name + " in " + path, rc);
    *dbi = d;
  }
  // meta "segment": the first seq it was made for, so that a file renamed by hand is refused.
  MDB_val k = val("segment"), v;
  rc = mdb_get(t.txn, store->meta_dbi, &k, &v);
  if (rc == 0 && (v.mv_size != 8 || from_be64(view(v)) != first)) {
    return make_error(ErrorCode::kCorrupt, path + " is the store of another segment");
  }
  if (rc == MDB_NOTFOUND && writable) {
    std::string fv = be64(first);
    v = val(fv);
    if ((rc = mdb_put(t.txn, store->meta_dbi, &k, &v, 0))) return lmdb_error("writing " + path, rc);
  } else if (rc && rc != MDB_NOTFOUND) {
    return lmdb_error("reading " + path, rc);
  }
  if ((rc = t.commit())) return lmdb_error("opening " + path, rc);
  if (!existed) {
    // The new file's directory entry is durable before any record in it is answered for.
    MAILARK_TRY(sync_dir(dir_));
  }
  Store* out = store.get();
  out->users = 1;
  stores_.emplace(first, std::move(store));
  return out;
}

Status Archive::load_codec() {
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  std::map<std::uint32_t, std::string> dicts;
  rc = lmdb::walk(t.txn, dicts_dbi_, [&](std::string_view k, std::string_view v) {
    if (k.size() == 4) dicts.emplace(from_be32(k), std::string(v));
    return true;
  });
  if (rc) return lmdb_error("reading the compression dictionaries", rc);
  std::uint32_t active = 0;
  MDB_val ak = val(kMetaActiveDict), av;
  if (mdb_get(t.txn, meta_dbi_, &ak, &av) == 0 && av.mv_size == 4) active = from_be32(view(av));
  auto codec = Codec::create(std::move(dicts), active);
  if (!codec) return codec.error();
  std::lock_guard lock(codec_mu_);
  codec_ = std::move(codec).value();
  return ok_status();
}

std::shared_ptr<const Codec> Archive::codec() const {
  std::lock_guard lock(codec_mu_);
  return codec_;
}

Result<std::uint32_t> Archive::add_dictionary(const std::string& dictionary) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  MDB_cursor* cur = nullptr;
  rc = mdb_cursor_open(t.txn, dicts_dbi_, &cur);
  if (rc) return lmdb_error("mdb_cursor_open", rc);
  MDB_val k, v;
  std::uint32_t id = 1;
  if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 4) id = from_be32(view(k)) + 1;
  mdb_cursor_close(cur);
  std::string key = be32(id);
  k = val(key);
  v = val(dictionary);
  rc = mdb_put(t.txn, dicts_dbi_, &k, &v, MDB_NOOVERWRITE);
  if (rc) return lmdb_error("storing a dictionary", rc);
  k = val(kMetaActiveDict);
  v = val(key);
  rc = mdb_put(t.txn, meta_dbi_, &k, &v, 0);
  if (rc) return lmdb_error("activating a dictionary", rc);
  rc = t.commit();
  if (rc) return lmdb_error("committing a dictionary", rc);
  MAILARK_TRY(load_codec());
  return id;
}

// ---- appending ----

namespace {

// Reads, changes and writes one queue entry inside a write transaction. Returns MDB_NOTFOUND when
// there is no entry; fn returns false to leave it unchanged.
// Replaces an entry's due-index keys (old: as stored before, or nullptr for a new entry; now: as
// stored after, or nullptr when it was removed). Every queue write goes through here, so the index
// never disagrees with the queue (tests: Archive.DueIndexFollowsEveryQueueChange).
int reindex_due(MDB_txn* txn, unsigned due_dbi, const QueueEntry* old, const QueueEntry* now) {
  std::vector<std::string> before = old ? due_keys(*old) : std::vector<std::string>{};
  std::vector<std::string> after = now ? due_keys(*now) : std::vector<std::string>{};
  for (const auto& k : before) {
    if (std::find(after.begin(), after.end(), k) != after.end()) continue;
    MDB_val kv = val(k);
    int rc = mdb_del(txn, due_dbi, &kv, nullptr);
    if (rc && rc != MDB_NOTFOUND) return rc;
  }
  for (const auto& k : after) {
    if (std::find(before.begin(), before.end(), k) != before.end()) continue;
    MDB_val kv = val(k), empty{0, nullptr};
    int rc = mdb_put(txn, due_dbi, &kv, &empty, 0);
    if (rc) return rc;
  }
  return 0;
}

// Reads, changes and writes one queue entry (and its due-index keys) inside a write transaction.
int update_queue_entry(MDB_txn* txn, unsigned dbi, unsigned due_dbi, std::uint64_t seq,
                       const std::function<bool(QueueEntry&)>& fn, QueueEntry* written, Error* decode_error) {
  std::string key = be64(seq);
  MDB_val k = val(key), v;
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc) return rc;
  auto e = decode_queue_entry(seq, view(v));
  if (!e) {
    *decode_error = e.error();
    return MDB_CORRUPTED;
  }
  const QueueEntry old = *e;
  if (!fn(*e)) {
    if (written) *written = std::move(*e);
    return 0;
  }
  if (e->finished()) {
    rc = mdb_del(txn, dbi, &k, nullptr);
    if (!rc) rc = reindex_due(txn, due_dbi, &old, nullptr);
  } else {
    std::string value = encode_queue_entry(*e);
    MDB_val nv = val(value);
    rc = mdb_put(txn, dbi, &k, &nv, 0);
    if (!rc) rc = reindex_due(txn, due_dbi, &old, &*e);
  }
  if (written) *written = std::move(*e);
  return rc;
}

}  // namespace

namespace {

// Drops what a store's table holds past key `keep`: a batch that committed to the store and never to
// the main environment (a crash between the two commits). Returns an LMDB code (0: done).
int drop_uncommitted_tail(MDB_txn* txn, unsigned dbi, std::uint64_t keep) {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, dbi, &cur);
  if (rc) return rc;
  MDB_val k, v;
  while ((rc = mdb_cursor_get(cur, &k, &v, MDB_LAST)) == 0 && k.mv_size == 8 && from_be64(view(k)) > keep)
    if ((rc = mdb_cursor_del(cur, 0))) break;
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

// Writes `pack` (when not empty) as the next pack, counts it and empties it.
Status put_pack(MDB_txn* txn, unsigned dbi, ArchiveCounters& counters, std::string& pack, const char* what) {
  if (pack.empty()) return ok_status();
  std::string key = be64(counters.packs + 1);
  MDB_val pk = val(key), pv = val(pack);
  if (int rc = mdb_put(txn, dbi, &pk, &pv, MDB_APPEND)) return lmdb_error(what, rc);
  counters.packs++;
  pack.clear();
  return ok_status();
}

}  // namespace

Result<std::vector<AppendOutcome>> Archive::append(std::vector<PendingAppend>& batch) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);

  ChainHead head = read_head(t.txn, meta_dbi_);
  ArchiveCounters counters = read_counters(t.txn, meta_dbi_);
  MDB_val k, v;

  std::vector<AppendOutcome> outcomes;
  outcomes.reserve(batch.size());
  std::int64_t now = unix_now();

  // The Merkle tree grows with the records, in the same transaction (grow_tree built it to the head
  // when this archive was opened).
  const std::uint64_t tree_size = tree_size_in(t.txn, merkle_dbi_);
  if (tree_size != head.seq)
    return make_error(ErrorCode::kCorrupt,
                      "the archive's Merkle tree covers " + std::to_string(tree_size) + " records but the chain has " +
                          std::to_string(head.seq),
                      "run `mailark verify`; reopening the archive for writing rebuilds a tree that is behind");
  MAILARK_ASSIGN_OR_RETURN(merkle::Frontier frontier,
                           merkle::Frontier::of(tree_size, [&](unsigned level, std::uint64_t index) {
                             return tree_node_in(t.txn, merkle_dbi_, level, index);
                           }));
  std::vector<Digest> completed;
  // So does the holdings table (grow_holdings built it to the head when this archive was opened).
  if (const std::uint64_t held = holdings_built_in(t.txn, meta_dbi_); held != head.seq)
    return make_error(ErrorCode::kCorrupt,
                      "the archive's holdings cover " + std::to_string(held) + " records but the chain has " +
                          std::to_string(head.seq),
                      "reopening the archive for writing rebuilds holdings that are behind");

  k = val(kMetaSegmentPolicy);
  const SegmentPolicy policy =
      decode_policy(mdb_get(t.txn, meta_dbi_, &k, &v) == 0 ? std::optional<std::string_view>(view(v)) : std::nullopt);
  std::vector<SegmentInfo> segments = read_segments(t.txn, meta_dbi_);
  bool segments_changed = false;
  const std::string period_now = segment_period_label(policy.period, now);
  // Bytes in the live segment's store, as the file says and as this batch adds to it.
  std::uint64_t live_store_bytes = segments.back().own_store ? store_bytes(segments.back().first) : 0;
  const std::uint64_t store_full_bytes = store_full_bytes_for_test_ ? store_full_bytes_for_test_ : kStoreFullBytes;
  // Asked to close the live segment (close_live_segment_at_next_append): the batch's first record
  // begins a new one; the request is cleared once that commits (or at once when the live one is empty).
  bool close_asked = close_live_.load();
  bool closed_as_asked = false;
  if (segments.size() == 1 && segments[0].opened_at == 0 && head.seq == 0) {
    // An empty archive: its first segment opens with its first record, in a store of its own.
    segments[0].opened_at = now;
    segments[0].period = period_now;
    segments[0].own_store = true;
    segments[0].first_pack = counters.packs + 1;
    segments_changed = true;
  }

  // Where the live segment's records and packs go: its store (a write transaction begun when first
  // needed, committed before the main one), or the main environment for a segment of an older archive.
  struct Target {
    MDB_txn* txn = nullptr;
    unsigned records = 0, blobs = 0;
  };
  // The stores this batch writes, oldest first (their commit order; a batch only moves on to later
  // segments). Each is released once its transaction has ended.
  struct StoreWrite {
    StoreWrite(const Archive* a, std::uint64_t f, const Store* s) : archive(a), first(f), store(s) {}
    StoreWrite(const StoreWrite&) = delete;
    StoreWrite& operator=(const StoreWrite&) = delete;
    const Archive* archive;
    std::uint64_t first;
    const Store* store;
    Txn txn;
    ~StoreWrite() {
      if (txn.txn) mdb_txn_abort(std::exchange(txn.txn, nullptr));
      archive->release_store(first);
    }
  };
  std::list<StoreWrite> writes;  // a list: its elements never move (they own a transaction)
  auto target = [&]() -> Result<Target> {
    const SegmentInfo& live = segments.back();
    if (!live.own_store) return Target{t.txn, records_dbi_, blobs_dbi_};
    if (writes.empty() || writes.back().first != live.first) {
      MAILARK_ASSIGN_OR_RETURN(Store * opened, store(live.first, false));
      StoreWrite& w = writes.emplace_back(this, live.first, opened);
      Txn& st_txn = w.txn;
      int src = mdb_txn_begin(opened->env, nullptr, 0, &st_txn.txn);
      if (src) return lmdb_error("beginning a write to " + store_path(live.first), src);
      // What the store holds past the main head (records) or past the packs the main environment
      // counts is a batch that never committed (a crash between the two commits): dropped here, so
      // that this batch appends where the head says (Segments.AStoreTailPastTheHeadIsNeverReadAndIsOverwritten).
      for (auto [dbi, keep] : {std::pair{opened->records_dbi, head.seq}, std::pair{opened->blobs_dbi, counters.packs}}) {
        if ((src = drop_uncommitted_tail(st_txn.txn, dbi, keep)))
          return lmdb_error("dropping an uncommitted tail of " + store_path(live.first), src);
      }
    }
    const StoreWrite& w = writes.back();
    return Target{w.txn.txn, w.store->records_dbi, w.store->blobs_dbi};
  };

  // New blobs of this batch are packed together: one LMDB value of up to kPackBytes holding many
  // compressed messages wastes at most one page tail, where one value per message would waste the
  // tail of a page (or half a leaf page) per message. A pack belongs to one segment: it is written
  // before a new segment begins.
  std::string pack;
  auto write_pack = [&]() -> Status {
    if (pack.empty()) return ok_status();
    MAILARK_ASSIGN_OR_RETURN(Target to, target());
    return put_pack(to.txn, to.blobs, counters, pack, "storing messages");
  };

  for (auto& item : batch) {
    AppendOutcome out;
    if (item.dsn_for) {
      // A DSN is archived once: when none of the failures it reports is still waiting for it (another
      // DSN for them was committed first), this one is a duplicate and adds nothing.
      std::string qkey = be64(item.dsn_for->seq);
      MDB_val qk = val(qkey), qv;
      bool waiting = false;
      if (mdb_get(t.txn, queue_dbi_, &qk, &qv) == 0) {
        if (auto e = decode_queue_entry(item.dsn_for->seq, view(qv))) {
          for (const auto& r : e->recipients)
            for (const auto& a : item.dsn_for->recipients) waiting |= r.state == RecipientState::kFailed && r.address == a;
        }
      }
      if (!waiting) {
        out.duplicate = true;
        outcomes.push_back(std::move(out));
        continue;
      }
    }
    std::string_view sha(reinterpret_cast<const char*>(item.content_sha256.data()), 32);
    MDB_val ik = val(sha), iv;
    rc = mdb_get(t.txn, blob_index_dbi_, &ik, &iv);
    if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error("looking up a blob", rc);
    bool exists = rc == 0;
    const std::string hkey = holding_key(item.content_sha256, item.envelope, head.seq + 1);
    MDB_val hk = val(hkey), hv;
    if (exists && is_mailbox_import(item.envelope)) {
      // A mailbox import adds no record for a message its custodian already holds.
      rc = mdb_get(t.txn, holdings_dbi_, &hk, &hv);
      if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error("looking up who holds a message", rc);
      if (rc == 0) {
        out.duplicate = true;
        outcomes.push_back(std::move(out));
        continue;
      }
    }
    out.copy = exists;
    ArchiveRecord& r = out.record;
    r.seq = head.seq + 1;
    {
      // A new segment begins with the first record of a later period, or when the live one is full.
      // The first segment of an archive from before segments has no period: it closes at the first
      // append under a policy with periods, so the period of every later segment is its own.
      SegmentInfo& live = segments.back();
      const bool live_has_records = head.seq >= live.first;
      const bool later_period = live.period != period_now;
      const bool full = (policy.max_records > 0 && head.seq + 1 - live.first >= policy.max_records) ||
                        (live.own_store && live_store_bytes >= store_full_bytes) || close_asked;
      if (close_asked) {
        closed_as_asked = live_has_records;
        close_asked = false;
        if (!live_has_records) close_live_.store(false);
      }
      if (live_has_records && (later_period || full)) {
        MAILARK_TRY(write_pack());  // the old segment's last pack
        SegmentInfo next{r.seq, 0, period_now, now};
        next.own_store = true;
        next.first_pack = counters.packs + 1;
        segments.push_back(std::move(next));
        segments_changed = true;
        out.starts_segment = true;
        live_store_bytes = 0;
      } else if (!live_has_records && later_period) {
        live.period = period_now;
        live.opened_at = now;
        segments_changed = true;
      }
    }
    if (!exists) {
      std::string blob = encode_blob(item.dict_id, item.raw_size, item.frame);
      if (!pack.empty() && pack.size() + blob.size() > kPackBytes) MAILARK_TRY(write_pack());
      std::string loc = be64(counters.packs + 1) + be32(static_cast<std::uint32_t>(pack.size())) +
                        be32(static_cast<std::uint32_t>(blob.size()));
      pack += blob;
      live_store_bytes += blob.size();
      iv = val(loc);
      rc = mdb_put(t.txn, blob_index_dbi_, &ik, &iv, MDB_NOOVERWRITE);
      if (rc) return lmdb_error("indexing a stored message", rc);
      counters.blobs++;
      counters.unique_raw_bytes += item.raw_size;
      counters.stored_bytes += item.frame.size();
    }
    r.envelope = item.envelope;
    r.verdict = item.verdict;
    r.flags = item.flags;
    r.content_sha256 = item.content_sha256;
    r.raw_size = item.raw_size;
    r.archived_at = now;
    r.prev_hash = head.hash;
    std::string value = encode_record(r);
    std::string key = be64(r.seq);
    MDB_val rk = val(key), rv = val(value);
    MAILARK_ASSIGN_OR_RETURN(Target to, target());
    rc = mdb_put(to.txn, to.records, &rk, &rv, MDB_APPEND);
    live_store_bytes += key.size() + value.size();
    if (rc) return lmdb_error("appending record " + std::to_string(r.seq), rc);
    frontier.push(merkle::leaf_hash(value), &completed);
    std::string nodes = join_digests(completed);
    MDB_val nv = val(nodes);
    if ((rc = mdb_put(t.txn, merkle_dbi_, &rk, &nv, MDB_APPEND)))
      return lmdb_error("adding record " + std::to_string(r.seq) + " to the Merkle tree", rc);
    hv = val(key);
    if ((rc = mdb_put(t.txn, holdings_dbi_, &hk, &hv, MDB_NOOVERWRITE)))
      return lmdb_error("recording who holds record " + std::to_string(r.seq), rc);
    if (item.queue) {
      QueueEntry q = *item.queue;
      q.seq = r.seq;
      if (q.created_at == 0) q.created_at = now;
      std::string qv = encode_queue_entry(q);
      MDB_val qk = val(key), qval = val(qv);
      rc = mdb_put(t.txn, queue_dbi_, &qk, &qval, MDB_NOOVERWRITE);
      if (!rc) rc = reindex_due(t.txn, queue_due_dbi_, nullptr, &q);
      if (rc) return lmdb_error("queueing record " + std::to_string(r.seq), rc);
    }
    if (item.quarantine) {
      QuarantineEntry q = *item.quarantine;
      q.seq = r.seq;
      if (q.created_at == 0) q.created_at = now;
      std::string qv = encode_quarantine_entry(q);
      MDB_val qk = val(key), qval = val(qv);
      rc = mdb_put(t.txn, quarantine_dbi_, &qk, &qval, MDB_NOOVERWRITE);
      if (rc) return lmdb_error("quarantining record " + std::to_string(r.seq), rc);
    }
    if (item.dsn_for) {
      Error bad;
      rc = update_queue_entry(
          t.txn, queue_dbi_, queue_due_dbi_, item.dsn_for->seq,
          [&](QueueEntry& e) {
            bool changed = false;
            for (auto& qr : e.recipients) {
              if (qr.state != RecipientState::kFailed) continue;
              for (const auto& a : item.dsn_for->recipients) {
                if (a == qr.address) {
                  qr.state = RecipientState::kBounced;
                  changed = true;
                }
              }
            }
            return changed;
          },
          nullptr, &bad);
      if (rc == MDB_CORRUPTED && !bad.context.empty()) return bad;
      if (rc && rc != MDB_NOTFOUND) return lmdb_error("recording the DSN for " + std::to_string(item.dsn_for->seq), rc);
    }
    head.seq = r.seq;
    head.hash = r.hash;
    counters.records++;
    counters.raw_bytes += r.raw_size;
    switch (r.verdict.kind) {
      case scanner::VerdictKind::kClean:
        counters.clean++;
        break;
      case scanner::VerdictKind::kInfected:
        counters.infected++;
        break;
      case scanner::VerdictKind::kUnscanned:
      case scanner::VerdictKind::kTemporaryError:  // never given to append (Ingest maps it)
        counters.unscanned++;
        break;
      case scanner::VerdictKind::kUnscannable:
        counters.unscannable++;
        break;
    }
    if (r.flags & kFlagMalformed) counters.malformed++;
    outcomes.push_back(std::move(out));
  }
  MAILARK_TRY(write_pack());
  std::string hv = encode_head(head), cv = encode_counters(counters);
  k = val(kMetaHead);
  v = val(hv);
  if ((rc = mdb_put(t.txn, meta_dbi_, &k, &v, 0))) return lmdb_error("updating the chain head", rc);
  k = val(kMetaCounters);
  v = val(cv);
  if ((rc = mdb_put(t.txn, meta_dbi_, &k, &v, 0))) return lmdb_error("updating counters", rc);
  std::string held = be64(head.seq);
  k = val(kMetaHoldings);
  v = val(held);
  if ((rc = mdb_put(t.txn, meta_dbi_, &k, &v, 0))) return lmdb_error("updating the holdings' extent", rc);
  if (segments_changed) {
    std::string sv = encode_segments(segments);
    k = val(kMetaSegments);
    v = val(sv);
    if ((rc = mdb_put(t.txn, meta_dbi_, &k, &v, 0))) return lmdb_error("updating the time segments", rc);
  }
  // The stores first, then the main environment, whose head makes the batch part of the archive
  // (each commit is durable: LMDB fsyncs before returning).
  for (StoreWrite& w : writes) {
    if ((rc = w.txn.commit())) return lmdb_error("committing the batch to " + store_path(w.first), rc);
  }
  if (fail_main_commit_) {
    fail_main_commit_ = false;
    return make_error(ErrorCode::kIo, "committing the batch: failed for a test");
  }
  rc = t.commit();
  if (rc) return lmdb_error("committing the batch", rc);
  if (closed_as_asked) close_live_.store(false);
  if (segments.back().first > live_first_.load()) {
    live_first_.store(segments.back().first);
    retire_writable_stores();  // and those this batch wrote, once it releases them
  }
  const auto now_steady = std::chrono::steady_clock::now();
  if (now_steady - last_release_ >= kReleaseMappedEvery) {
    last_release_ = now_steady;
    release_mapped_pages();
  }
  return outcomes;
}

namespace {

// Drops an environment's map from the process's page tables; `key` in `dbi` is any value it holds.
std::uint64_t release_env_pages(MDB_env* env, MDB_dbi dbi, std::string_view key) {
  MDB_envinfo info{};
  MDB_stat st{};
  if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0) return 0;
  // LMDB says where its map is only under MDB_FIXEDMAP. A value read in a read transaction points
  // into the map, inside a page that starts with its own page number: the map starts that many
  // pages before.
  char* base = nullptr;
  {
    Txn t;
    if (mdb_txn_begin(env, nullptr, MDB_RDONLY, &t.txn) != 0) return 0;
    MDB_val k = val(key), v;
    if (mdb_get(t.txn, dbi, &k, &v) != 0) return 0;
    const auto page = reinterpret_cast<std::uintptr_t>(v.mv_data) & ~static_cast<std::uintptr_t>(st.ms_psize - 1);
    std::uint64_t pgno = 0;
    std::memcpy(&pgno, reinterpret_cast<const void*>(page), sizeof pgno);
    if (pgno > info.me_last_pgno) return 0;
    base = reinterpret_cast<char*>(page - pgno * st.ms_psize);
  }
  const std::uint64_t bytes = (static_cast<std::uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
  if (::madvise(base, bytes, MADV_DONTNEED) != 0) return 0;
  return bytes;
}

}  // namespace

std::uint64_t Archive::release_mapped_pages() const {
  // LMDB reads every page through its read-only shared map. Appends copy the B-tree pages they
  // change (blob_index's leaves at random places) to new pages, which the next transaction reads
  // through the map again, so over a long import the map comes to hold most of the file, and the
  // process's RSS with it (700 MB of a 1,049 MB peak at a million messages, docs/BENCHMARKS.md).
  // Those are clean page-cache pages: dropping them from this process's page tables loses nothing
  // (the next read faults them back from the page cache) and leaves the kernel free to reclaim them.
  // The same for every segment store this process has open (what reads of messages mapped).
  std::uint64_t bytes = release_env_pages(env_, meta_dbi_, kMetaFormat);
  std::lock_guard lock(stores_mu_);
  for (const auto& [first, st] : stores_) bytes += release_env_pages(st->env, st->meta_dbi, "segment");
  return bytes;
}

// ---- reading: snapshots ----

Result<std::unique_ptr<ArchiveSnapshot>> Archive::snapshot() const {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  return std::unique_ptr<ArchiveSnapshot>(new ArchiveSnapshot(*this, txn));
}

ArchiveSnapshot::~ArchiveSnapshot() {
  for (auto& [first, read] : store_reads_) {
    mdb_txn_abort(read.txn);
    archive_.release_store(first);
  }
  if (txn_) mdb_txn_abort(txn_);
}

const std::vector<SegmentInfo>& ArchiveSnapshot::table() const {
  if (!segments_) segments_ = segments();
  return *segments_;
}

// A read transaction on segment i's store, begun after the snapshot's main one: the store holds at
// least every record and pack the main environment's head covers (they commit first).
Result<ArchiveSnapshot::StoreRead> ArchiveSnapshot::store_read(std::size_t i) const {
  const SegmentInfo& seg = table()[i];
  if (auto it = store_reads_.find(seg.first); it != store_reads_.end()) return it->second;
  MAILARK_ASSIGN_OR_RETURN(Archive::Store * st, archive_.store(seg.first, i + 1 < table().size()));
  StoreRead read{nullptr, st->records_dbi, st->blobs_dbi};
  if (int rc = mdb_txn_begin(st->env, nullptr, MDB_RDONLY, &read.txn)) {
    archive_.release_store(seg.first);
    return lmdb_error("reading " + archive_.store_path(seg.first), rc);
  }
  store_reads_.emplace(seg.first, read);
  return read;
}

Result<ArchiveSnapshot::Place> ArchiveSnapshot::record_place(std::uint64_t seq) const {
  const auto& segs = table();
  std::size_t i = segs.size();
  while (i > 0 && segs[i - 1].first > seq) --i;
  if (i == 0 || !segs[i - 1].own_store) return Place{txn_, archive_.records_dbi_};
  const SegmentInfo& seg = segs[i - 1];
  if (seg.last < seq) return make_error(ErrorCode::kNotFound, "no message with id " + std::to_string(seq));
  MAILARK_ASSIGN_OR_RETURN(StoreRead read, store_read(i - 1));
  return Place{read.txn, read.records_dbi};
}

Result<ArchiveSnapshot::Place> ArchiveSnapshot::pack_place(std::uint64_t pack) const {
  // Packs of the segments in stores run from each one's first_pack to the next one's; every pack
  // before the first store's is in the main environment.
  const auto& segs = table();
  std::size_t i = segs.size();
  while (i > 0 && segs[i - 1].own_store && segs[i - 1].first_pack > pack) --i;
  if (i == 0 || !segs[i - 1].own_store) return Place{txn_, archive_.blobs_dbi_};
  MAILARK_ASSIGN_OR_RETURN(StoreRead read, store_read(i - 1));
  return Place{read.txn, read.blobs_dbi};
}

ChainHead ArchiveSnapshot::head() const { return read_head(txn_, archive_.meta_dbi_); }

std::vector<SegmentInfo> ArchiveSnapshot::segments() const {
  auto segs = read_segments(txn_, archive_.meta_dbi_);
  finish_segments(segs, head().seq);
  return segs;
}

std::vector<SegmentInfo> Archive::segments() const {
  auto snap = snapshot();
  if (!snap) {
    std::vector<SegmentInfo> one(1);
    finish_segments(one, 0);
    return one;
  }
  return (*snap)->segments();
}

SegmentPolicy Archive::segment_policy() const {
  Txn t;
  if (mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn)) return SegmentPolicy{};
  MDB_val k = val(kMetaSegmentPolicy), v;
  return decode_policy(mdb_get(t.txn, meta_dbi_, &k, &v) == 0 ? std::optional<std::string_view>(view(v)) : std::nullopt);
}

Status Archive::set_segment_policy(const SegmentPolicy& policy) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  std::string pv = encode_policy(policy);
  MDB_val k = val(kMetaSegmentPolicy), v = val(pv);
  if ((rc = mdb_put(t.txn, meta_dbi_, &k, &v, 0))) return lmdb_error("storing the segment policy", rc);
  if ((rc = t.commit())) return lmdb_error("storing the segment policy", rc);
  return ok_status();
}

std::string segment_period_label(SegmentPeriod period, std::int64_t unix_time) {
  if (period == SegmentPeriod::kNone) return "";
  std::time_t t = static_cast<std::time_t>(unix_time);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];  // a year of up to 11 characters, as the compiler counts an int
  switch (period) {
    case SegmentPeriod::kMonth: std::snprintf(buf, sizeof buf, "%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1); break;
    case SegmentPeriod::kQuarter: std::snprintf(buf, sizeof buf, "%04d-Q%d", tm.tm_year + 1900, tm.tm_mon / 3 + 1); break;
    default: std::snprintf(buf, sizeof buf, "%04d", tm.tm_year + 1900); break;
  }
  return buf;
}

std::optional<SegmentPeriod> parse_segment_period(std::string_view name) {
  if (name == "month") return SegmentPeriod::kMonth;
  if (name == "quarter") return SegmentPeriod::kQuarter;
  if (name == "year") return SegmentPeriod::kYear;
  if (name == "none") return SegmentPeriod::kNone;
  return std::nullopt;
}

ArchiveCounters ArchiveSnapshot::counters() const { return read_counters(txn_, archive_.meta_dbi_); }

namespace {

Error expired_error(std::uint64_t seq, const ExpiredRun& run) {
  return make_error(ErrorCode::kNotFound, "message " + std::to_string(seq) + " was removed by retention (tombstone " +
                                              std::to_string(run.tombstone) + ")",
                    "`mailark retention tombstones` shows what each expiry removed");
}

}  // namespace

Result<ArchiveRecord> ArchiveSnapshot::record(std::uint64_t seq) const {
  MAILARK_ASSIGN_OR_RETURN(auto run, expired_run(seq));
  if (run) return expired_error(seq, *run);
  MAILARK_ASSIGN_OR_RETURN(Place at, record_place(seq));
  std::string key = be64(seq);
  MDB_val k = val(key), v;
  int rc = mdb_get(at.txn, at.dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return make_error(ErrorCode::kNotFound, "no message with id " + std::to_string(seq));
  if (rc) return lmdb_error("reading record " + std::to_string(seq), rc);
  return decode_record(seq, view(v));
}

Result<std::string> ArchiveSnapshot::raw(const ArchiveRecord& record) const {
  MDB_val k = val(std::string_view(reinterpret_cast<const char*>(record.content_sha256.data()), 32)), v;
  int rc = mdb_get(txn_, archive_.blob_index_dbi_, &k, &v);
  std::uint32_t offset = 0, length = 0;
  if (rc == 0) {
    if (v.mv_size != 16) {
      return make_error(ErrorCode::kCorrupt, "record " + std::to_string(record.seq) + ": bad blob location");
    }
    std::string_view loc = view(v);
    std::string pack_key(loc.substr(0, 8));
    offset = from_be32(loc.substr(8, 4));
    length = from_be32(loc.substr(12, 4));
    auto at = pack_place(from_be64(pack_key));
    if (!at) {
      Error e = at.error();
      e.context = "record " + std::to_string(record.seq) + ": " + e.context;
      return e;
    }
    k = val(pack_key);
    rc = mdb_get(at->txn, at->dbi, &k, &v);
  }
  if (rc == MDB_NOTFOUND) {
    return make_error(ErrorCode::kCorrupt, "record " + std::to_string(record.seq) + ": its message blob " +
                                               to_hex(record.content_sha256) + " is missing");
  }
  if (rc) return lmdb_error("reading a blob", rc);
  if (static_cast<std::uint64_t>(offset) + length > v.mv_size) {
    return make_error(ErrorCode::kCorrupt, "record " + std::to_string(record.seq) + ": blob lies outside its pack");
  }
  auto h = decode_blob(view(v).substr(offset, length));
  if (!h) return make_error(ErrorCode::kCorrupt, "record " + std::to_string(record.seq) + ": " + h.error().context);
  // A stored message decompresses to exactly the size its (hash-chained) record states, whatever the
  // limits in force now: what was accepted can always be read back. Only a size no configuration can
  // produce is taken for damage (tests/e2e/test_failures.py test_message_at_the_configured_maximum_reads_back).
  if (record.raw_size > Limits::kMaxStoredMessageBytes) {
    return make_error(ErrorCode::kCorrupt, "record " + std::to_string(record.seq) + " claims " +
                                               std::to_string(record.raw_size) + " bytes, more than any message can have");
  }
  // Decompress inside the read transaction: the frame points into the memory map.
  auto raw = archive_.codec()->decompress(h->dict_id, h->frame, record.raw_size, record.raw_size);
  if (!raw) {
    Error e = raw.error();
    e.context = "record " + std::to_string(record.seq) + ": " + e.context;
    return e;
  }
  if (sha256(*raw) != record.content_sha256) {
    return make_error(ErrorCode::kCorrupt,
                      "record " + std::to_string(record.seq) + ": stored bytes do not match the record's SHA-256");
  }
  return raw;
}

namespace {

// Walks the records of one table from `lo` to `hi` in order. Returns false when fn or on_bad asked to
// stop (or on an LMDB error, in *error).
bool walk_records(MDB_txn* txn, unsigned dbi, std::uint64_t lo, std::uint64_t hi, const ArchiveSnapshot::RecordFn& fn,
                  const ArchiveSnapshot::BadRecordFn& on_bad, std::optional<Error>* error) {
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn, dbi, &cur)) {
    *error = lmdb_error("mdb_cursor_open", rc);
    return false;
  }
  std::string start = be64(lo);
  MDB_val k = val(start), v;
  bool go_on = true;
  int rc;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && go_on; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) {
      go_on = on_bad(0, make_error(ErrorCode::kCorrupt, "a record key is not 8 bytes"));
      continue;
    }
    const std::uint64_t seq = from_be64(view(k));
    if (seq > hi) break;
    auto r = decode_record(seq, view(v));
    go_on = r ? fn(*r, view(v)) : on_bad(seq, r.error());
  }
  mdb_cursor_close(cur);
  if (go_on && rc != 0 && rc != MDB_NOTFOUND) {
    *error = lmdb_error("walking records", rc);
    return false;
  }
  return go_on;
}

// walk_records, stopping at a record that does not decode: that one is the error.
Status walk_records_strict(MDB_txn* txn, unsigned dbi, std::uint64_t lo, std::uint64_t hi,
                           const ArchiveSnapshot::RecordFn& fn) {
  std::optional<Error> error, bad;
  walk_records(
      txn, dbi, lo, hi, fn,
      [&](std::uint64_t seq, const Error& e) {
        bad = e;
        bad->context = "record " + std::to_string(seq) + ": " + e.context;
        return false;
      },
      &error);
  if (error) return *error;
  if (bad) return *bad;
  return ok_status();
}

// Every seq from lo to hi lies in one of the runs (ascending, not overlapping).
bool all_expired(const std::vector<ExpiredRun>& runs, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t next = lo;
  for (const auto& r : runs) {
    if (r.last < next) continue;
    if (r.first > next) return false;
    next = r.last + 1;
    if (next > hi) return true;
  }
  return next > hi;
}

}  // namespace

Status ArchiveSnapshot::scan(std::uint64_t from, const RecordFn& fn, const BadRecordFn& on_bad) const {
  // Segment by segment: those in the main environment are walked there as one run (to its end, so
  // that a record added past the head by hand is seen), each store up to its segment's last record
  // (what a store holds past the head never committed).
  const auto& segs = table();
  std::optional<Error> error;
  // Expired records are passed over (a store whose swap an expiry did not reach still has them), and
  // a segment whose every record expired has no store to read.
  MAILARK_ASSIGN_OR_RETURN(const std::vector<ExpiredRun> runs, expired_runs());
  std::size_t ri = 0;
  const RecordFn live_only = [&](const ArchiveRecord& r, std::string_view value) {
    while (ri < runs.size() && runs[ri].last < r.seq) ++ri;
    if (ri < runs.size() && runs[ri].first <= r.seq) return true;
    return fn(r, value);
  };
  const RecordFn& walk_fn = runs.empty() ? fn : live_only;
  for (std::size_t i = 0; i < segs.size();) {
    const std::uint64_t lo = std::max(from, segs[i].first);
    if (!segs[i].own_store) {
      std::size_t next = i + 1;
      while (next < segs.size() && !segs[next].own_store) ++next;
      const std::uint64_t hi = next < segs.size() ? segs[next].first - 1 : UINT64_MAX;
      if (lo <= hi && !walk_records(txn_, archive_.records_dbi_, lo, hi, walk_fn, on_bad, &error)) break;
      i = next;
      continue;
    }
    const std::uint64_t hi = segs[i].last;  // 0 for an empty live segment
    if (hi >= segs[i].first && lo <= hi && !all_expired(runs, lo, hi)) {
      auto read = store_read(i);
      if (!read) {
        on_bad(lo, read.error());
        break;
      }
      if (!walk_records(read->txn, read->records_dbi, lo, hi, walk_fn, on_bad, &error)) break;
    }
    ++i;
  }
  if (error) return *error;
  return ok_status();
}

Result<std::string> ArchiveSnapshot::record_value(std::uint64_t seq) const {
  if (seq == 0 || seq > head().seq) return make_error(ErrorCode::kNotFound, "no message with id " + std::to_string(seq));
  MAILARK_ASSIGN_OR_RETURN(auto run, expired_run(seq));
  if (run) return expired_error(seq, *run);
  MAILARK_ASSIGN_OR_RETURN(Place place, record_place(seq));
  std::string key = be64(seq);
  MDB_val k = val(key), v;
  int rc = mdb_get(place.txn, place.dbi, &k, &v);
  if (rc == MDB_NOTFOUND)
    return make_error(ErrorCode::kCorrupt, "record " + std::to_string(seq) + " is missing from the archive",
                      "run `mailark verify`");
  if (rc) return lmdb_error("reading record " + std::to_string(seq), rc);
  return std::string(view(v));
}

bool ArchiveSnapshot::has_tree() const { return archive_.has_merkle_; }

std::uint64_t ArchiveSnapshot::tree_size() const {
  return archive_.has_merkle_ ? tree_size_in(txn_, archive_.merkle_dbi_) : 0;
}

Result<Digest> ArchiveSnapshot::tree_node(unsigned level, std::uint64_t index) const {
  if (!archive_.has_merkle_)
    return make_error(ErrorCode::kUnsupported, "this archive has no Merkle tree yet (archive format " +
                                                   std::to_string(archive_.format_) + ")",
                      "any writing command (`mailark import`, `serve`) builds it");
  return tree_node_in(txn_, archive_.merkle_dbi_, level, index);
}

merkle::NodeFn ArchiveSnapshot::tree_nodes() const {
  return [this](unsigned level, std::uint64_t index) { return tree_node(level, index); };
}

std::string ArchiveSnapshot::archive_id() const {
  MDB_val k = val(kMetaArchiveId), v;
  if (mdb_get(txn_, archive_.meta_dbi_, &k, &v) != 0) return {};
  return to_hex(std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(v.mv_data), v.mv_size));
}

Result<std::vector<std::uint64_t>> ArchiveSnapshot::copies(const Digest& content) const {
  std::vector<std::uint64_t> out;
  if (!archive_.has_holdings_) return out;
  const std::uint64_t built = holdings_built_in(txn_, archive_.meta_dbi_);
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn_, archive_.holdings_dbi_, &cur)) return lmdb_error("mdb_cursor_open", rc);
  const std::string_view prefix(reinterpret_cast<const char*>(content.data()), 32);
  MDB_val k = val(prefix), v;
  int rc;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size < 32 || view(k).substr(0, 32) != prefix) break;
    if (v.mv_size != 8) continue;
    const std::uint64_t seq = from_be64(view(v));
    if (seq <= built) out.push_back(seq);
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error("reading who holds a message", rc);
  std::sort(out.begin(), out.end());
  return out;
}

bool ArchiveSnapshot::has_copies_index() const {
  return archive_.has_holdings_ && holdings_built_in(txn_, archive_.meta_dbi_) == head().seq;
}

std::string Archive::archive_id() const {
  auto s = snapshot();
  return s ? (*s)->archive_id() : std::string();
}

Status Archive::grow_tree() {
  for (;;) {
    std::uint64_t size = 0;
    std::vector<std::pair<std::string, std::string>> rows;  // key, nodes
    {
      MAILARK_ASSIGN_OR_RETURN(auto snap, snapshot());
      const std::uint64_t head = snap->head().seq;
      size = snap->tree_size();
      if (size > head)
        return make_error(ErrorCode::kCorrupt, "the archive's Merkle tree covers " + std::to_string(size) +
                                                   " records but the chain has only " + std::to_string(head),
                          "run `mailark verify`");
      if (size == head) return ok_status();
      MAILARK_ASSIGN_OR_RETURN(merkle::Frontier frontier, merkle::Frontier::of(size, snap->tree_nodes()));
      std::vector<Digest> completed;
      const std::uint64_t end = std::min(head, size + kTreeBuildChunk);
      for (std::uint64_t seq = size + 1; seq <= end; ++seq) {
        MAILARK_ASSIGN_OR_RETURN(std::string value, snap->record_value(seq));
        frontier.push(merkle::leaf_hash(value), &completed);
        rows.emplace_back(be64(seq), join_digests(completed));
      }
    }
    Txn t;
    if (int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn)) return lmdb_error("mdb_txn_begin", rc);
    if (tree_size_in(t.txn, merkle_dbi_) != size) continue;  // another process grew it meanwhile
    for (auto& [key, nodes] : rows) {
      MDB_val k = val(key), v = val(nodes);
      if (int rc = mdb_put(t.txn, merkle_dbi_, &k, &v, MDB_APPEND)) return lmdb_error("building the Merkle tree", rc);
    }
    if (int rc = t.commit()) return lmdb_error("committing the Merkle tree", rc);
  }
}

Status Archive::grow_holdings() {
  for (;;) {
    std::uint64_t built = 0;
    std::vector<std::pair<std::string, std::string>> rows;  // key, seq
    {
      MAILARK_ASSIGN_OR_RETURN(auto snap, snapshot());
      const std::uint64_t head = snap->head().seq;
      built = holdings_built_in(snap->txn_, meta_dbi_);
      if (built >= head) return ok_status();
      const std::uint64_t end = std::min(head, built + kHoldingsBuildChunk);
      std::optional<Error> bad;
      MAILARK_TRY(snap->scan(
          built + 1,
          [&](const ArchiveRecord& r, std::string_view) {
            rows.emplace_back(holding_key(r.content_sha256, r.envelope, r.seq), be64(r.seq));
            return r.seq < end;
          },
          [&](std::uint64_t, const Error& e) {
            bad = e;
            return false;
          }));
      if (bad) return Error{bad->code, bad->context, "run `mailark verify`"};
      if (rows.size() != end - built)
        return make_error(ErrorCode::kCorrupt, "records are missing below the head", "run `mailark verify`");
      // In key order, and the same key's records in id order (the first keeps it, as below).
      std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    }
    Txn t;
    if (int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn)) return lmdb_error("mdb_txn_begin", rc);
    if (holdings_built_in(t.txn, meta_dbi_) != built) continue;  // another process built them meanwhile
    for (auto& [key, seq] : rows) {
      MDB_val k = val(key), v = val(seq);
      // A key met twice: the same custodian's second import record of one content (an import of
      // an older release, deduplicated by content alone, never made one): the first keeps it.
      int rc = mdb_put(t.txn, holdings_dbi_, &k, &v, MDB_NOOVERWRITE);
      if (rc && rc != MDB_KEYEXIST) return lmdb_error("building the holdings", rc);
    }
    std::string end = be64(built + rows.size());
    MDB_val k = val(kMetaHoldings), v = val(end);
    if (int rc = mdb_put(t.txn, meta_dbi_, &k, &v, 0)) return lmdb_error("building the holdings", rc);
    if (int rc = t.commit()) return lmdb_error("committing the holdings", rc);
  }
}

bool Archive::has_copy(const Digest& content, const Envelope& envelope) const {
  Txn t;
  if (mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn)) return false;
  const std::string key = holding_key(content, envelope, 0);
  MDB_val k = val(key), v;
  return has_holdings_ && mdb_get(t.txn, holdings_dbi_, &k, &v) == 0;
}

Result<std::vector<ArchiveRecord>> Archive::copies_of(const ArchiveRecord& record) const {
  MAILARK_ASSIGN_OR_RETURN(auto snap, snapshot());
  MAILARK_ASSIGN_OR_RETURN(std::vector<std::uint64_t> ids, snap->copies(record.content_sha256));
  if (!std::binary_search(ids.begin(), ids.end(), record.seq)) ids.insert(std::lower_bound(ids.begin(), ids.end(), record.seq), record.seq);
  std::vector<ArchiveRecord> out;
  out.reserve(ids.size());
  for (std::uint64_t id : ids) {
    if (id == record.seq) {
      out.push_back(record);
      continue;
    }
    MAILARK_ASSIGN_OR_RETURN(ArchiveRecord r, snap->record(id));
    out.push_back(std::move(r));
  }
  return out;
}

ChainHead Archive::head() const {
  auto s = snapshot();
  return s ? (*s)->head() : ChainHead{};
}

ArchiveCounters Archive::counters() const {
  auto s = snapshot();
  return s ? (*s)->counters() : ArchiveCounters{};
}

Result<ArchiveRecord> Archive::record(std::uint64_t seq) const {
  MAILARK_ASSIGN_OR_RETURN(auto s, snapshot());
  return s->record(seq);
}

Result<std::string> Archive::raw(const ArchiveRecord& record) const {
  MAILARK_ASSIGN_OR_RETURN(auto s, snapshot());
  return s->raw(record);
}

Status Archive::scan(std::uint64_t from, const ArchiveSnapshot::RecordFn& fn,
                     const ArchiveSnapshot::BadRecordFn& on_bad) const {
  MAILARK_ASSIGN_OR_RETURN(auto s, snapshot());
  return s->scan(from, fn, on_bad);
}

// ---- the queue ----

Result<std::vector<QueueEntry>> Archive::queue_entries() const {
  if (!has_queue_) return std::vector<QueueEntry>{};
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  std::vector<QueueEntry> out;
  std::optional<Error> bad;
  rc = lmdb::walk(t.txn, queue_dbi_, [&](std::string_view k, std::string_view v) {
    if (k.size() != 8) return true;
    auto e = decode_queue_entry(from_be64(k), v);
    if (!e) bad = e.error();
    else out.push_back(std::move(e).value());
    return !bad;
  });
  if (bad) return *bad;
  if (rc) return lmdb_error("walking the queue", rc);
  return out;
}

Result<QueueEntry> Archive::queue_entry(std::uint64_t seq) const {
  if (!has_queue_) return make_error(ErrorCode::kNotFound, "no queue entry for message " + std::to_string(seq));
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  std::string key = be64(seq);
  MDB_val k = val(key), v;
  rc = mdb_get(t.txn, queue_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) return make_error(ErrorCode::kNotFound, "no queue entry for message " + std::to_string(seq));
  if (rc) return lmdb_error("reading queue entry " + std::to_string(seq), rc);
  return decode_queue_entry(seq, view(v));
}

Result<QueueEntry> Archive::queue_modify(std::uint64_t seq, const std::function<Status(QueueEntry&)>& fn) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  Status fn_status;
  Error bad;
  QueueEntry written;
  rc = update_queue_entry(
      t.txn, queue_dbi_, queue_due_dbi_, seq,
      [&](QueueEntry& e) {
        fn_status = fn(e);
        return fn_status.ok();
      },
      &written, &bad);
  if (rc == MDB_NOTFOUND) return make_error(ErrorCode::kNotFound, "no queue entry for message " + std::to_string(seq));
  if (rc == MDB_CORRUPTED && !bad.context.empty()) return bad;
  if (rc) return lmdb_error("updating queue entry " + std::to_string(seq), rc);
  if (!fn_status) return fn_status.error();
  if ((rc = t.commit())) return lmdb_error("committing a queue change", rc);
  return written;
}

Status Archive::queue_remove(std::uint64_t seq) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  std::string key = be64(seq);
  MDB_val k = val(key), v;
  rc = mdb_get(t.txn, queue_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) return make_error(ErrorCode::kNotFound, "no queue entry for message " + std::to_string(seq));
  if (rc) return lmdb_error("reading queue entry " + std::to_string(seq), rc);
  auto old = decode_queue_entry(seq, view(v));
  rc = mdb_del(t.txn, queue_dbi_, &k, nullptr);
  // A damaged entry has no keys we could compute; its stale keys are skipped by the readers.
  if (!rc && old) rc = reindex_due(t.txn, queue_due_dbi_, &*old, nullptr);
  if (rc) return lmdb_error("removing queue entry", rc);
  if ((rc = t.commit())) return lmdb_error("committing a queue removal", rc);
  return ok_status();
}

Result<std::vector<QueueEntry>> Archive::queue_apply(const std::vector<DeliveryResult>& results) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  std::vector<QueueEntry> written;
  if (results.empty()) return written;
  // Group by entry so each is read and written once.
  std::map<std::uint64_t, std::vector<const DeliveryResult*>> by_seq;
  for (const auto& r : results) by_seq[r.seq].push_back(&r);
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  const std::int64_t now = unix_now();
  for (const auto& group : by_seq) {
    const std::uint64_t seq = group.first;
    const auto& list = group.second;  // (not a structured binding: clang 14 cannot capture those)
    Error bad;
    QueueEntry e;
    std::vector<std::string> delivered;
    rc = update_queue_entry(
        t.txn, queue_dbi_, queue_due_dbi_, seq,
        [&](QueueEntry& entry) {
          bool changed = false;
          for (const auto* r : list) {
            bool applied = apply_result(entry, *r);
            if (applied && r->state == RecipientState::kDelivered) delivered.push_back(r->address);
            changed |= applied;
          }
          return changed;
        },
        &e, &bad);
    if (rc == MDB_NOTFOUND) continue;  // an administrator deleted it meanwhile
    if (rc == MDB_CORRUPTED && !bad.context.empty()) return bad;
    if (rc) return lmdb_error("writing delivery results", rc);
    // What reached the primary, by Message-ID and recipient: the continuity drain does not send it
    // again (delivered_lookup).
    if (e.route == Route::kPrimary && !e.message_id.empty() && has_delivered_) {
      for (const auto& a : delivered) {
        std::string key = delivered_key(e.message_id, a);
        std::string value = be64(static_cast<std::uint64_t>(now)) + be64(seq);
        MDB_val dk = val(key), dv = val(value);
        if ((rc = mdb_put(t.txn, delivered_dbi_, &dk, &dv, 0))) return lmdb_error("recording a delivery", rc);
      }
    }
    written.push_back(std::move(e));
  }
  if ((rc = t.commit())) return lmdb_error("committing queue changes", rc);
  return written;
}

// ---- quarantine ----

Result<std::vector<QuarantineEntry>> Archive::quarantine_entries(bool include_decided) const {
  std::vector<QuarantineEntry> out;
  if (!has_quarantine_) return out;
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  std::optional<Error> bad;
  rc = lmdb::walk(t.txn, quarantine_dbi_, [&](std::string_view k, std::string_view v) {
    if (k.size() != 8) return true;
    auto e = decode_quarantine_entry(from_be64(k), v);
    if (!e) bad = e.error();
    else if (include_decided || e->status == QuarantineStatus::kHeld) out.push_back(std::move(e).value());
    return !bad;
  });
  if (bad) return *bad;
  if (rc) return lmdb_error("walking the quarantine", rc);
  return out;
}

Result<QuarantineEntry> Archive::quarantine_entry(std::uint64_t seq) const {
  if (!has_quarantine_) return make_error(ErrorCode::kNotFound, "message " + std::to_string(seq) + " is not in quarantine");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  std::string key = be64(seq);
  MDB_val k = val(key), v;
  rc = mdb_get(t.txn, quarantine_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) return make_error(ErrorCode::kNotFound, "message " + std::to_string(seq) + " is not in quarantine");
  if (rc) return lmdb_error("reading quarantine entry " + std::to_string(seq), rc);
  return decode_quarantine_entry(seq, view(v));
}

Result<QuarantineEntry> Archive::quarantine_decide(std::uint64_t seq, QuarantineStatus decision, const std::string& by) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  if (decision == QuarantineStatus::kHeld) return make_error(ErrorCode::kInvalidArgument, "a decision is release or delete");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  std::string key = be64(seq);
  MDB_val k = val(key), v;
  rc = mdb_get(t.txn, quarantine_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) return make_error(ErrorCode::kNotFound, "message " + std::to_string(seq) + " is not in quarantine");
  if (rc) return lmdb_error("reading quarantine entry " + std::to_string(seq), rc);
  auto e = decode_quarantine_entry(seq, view(v));
  if (!e) return e.error();
  if (e->status != QuarantineStatus::kHeld) {
    return make_error(ErrorCode::kInvalidArgument, "message " + std::to_string(seq) + " was already " +
                                                       quarantine_status_name(e->status) + " by " + e->decided_by);
  }
  e->status = decision;
  e->decided_at = unix_now();
  e->decided_by = by;
  std::string value = encode_quarantine_entry(*e);
  MDB_val nv = val(value);
  if ((rc = mdb_put(t.txn, quarantine_dbi_, &k, &nv, 0))) return lmdb_error("recording the decision", rc);
  // Released mail without a route (a server without a primary) is queued for no one: it goes to the
  // mailbox views (MailboxStore::place_released).
  if (decision == QuarantineStatus::kReleased && !e->recipients.empty() && e->route != Route::kNone) {
    QueueEntry q;
    q.seq = seq;
    q.route = e->route;
    q.created_at = e->decided_at;
    for (const auto& r : e->recipients) q.recipients.push_back({r});
    std::string qv = encode_queue_entry(q);
    MDB_val qval = val(qv);
    rc = mdb_put(t.txn, queue_dbi_, &k, &qval, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) return make_error(ErrorCode::kInvalidArgument, "message " + std::to_string(seq) + " is already queued");
    if (!rc) rc = reindex_due(t.txn, queue_due_dbi_, nullptr, &q);
    if (rc) return lmdb_error("queueing the released message", rc);
  }
  if ((rc = t.commit())) return lmdb_error("committing the decision", rc);
  return e;
}

// ---- recipient verification cache ----

Result<std::vector<CachedRecipient>> Archive::recipient_cache() const {
  std::vector<CachedRecipient> out;
  if (!has_rcpt_cache_) return out;
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  rc = lmdb::walk(t.txn, rcpt_cache_dbi_, [&](std::string_view k, std::string_view v) {
    if (auto c = decode_cached_recipient(k, v)) out.push_back(std::move(*c));
    return true;
  });
  if (rc) return lmdb_error("walking the recipient cache", rc);
  return out;
}

Status Archive::store_recipients(const std::vector<CachedRecipient>& entries) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  if (entries.empty()) return ok_status();
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  for (const auto& c : entries) {
    if (c.address.empty() || c.address.size() > 400) continue;  // LMDB's key limit is 511 bytes
    std::string value = encode_cached_recipient(c);
    MDB_val k = val(c.address), v = val(value);
    if ((rc = mdb_put(t.txn, rcpt_cache_dbi_, &k, &v, 0))) return lmdb_error("caching a recipient", rc);
  }
  if ((rc = t.commit())) return lmdb_error("committing the recipient cache", rc);
  return ok_status();
}

// ---- the due index ----

Result<std::vector<QueueEntry>> Archive::queue_due(std::uint8_t lane, std::int64_t until, std::size_t limit,
                                                   const std::function<bool(std::uint64_t)>& skip) const {
  std::vector<QueueEntry> out;
  if (!has_queue_) return out;
  if (!has_queue_due_) {
    // A read-only open of an archive older than format 3: the whole queue, filtered.
    auto all = queue_entries();
    if (!all) return all.error();
    for (auto& e : *all) {
      if (out.size() >= limit) break;
      if (skip && skip(e.seq)) continue;
      for (const auto& k : due_keys(e)) {
        std::uint8_t l;
        std::int64_t due;
        std::uint64_t seq;
        if (parse_due_key(k, l, due, seq) && l == lane && due <= until) {
          out.push_back(e);
          break;
        }
      }
    }
    return out;
  }
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  auto take = [&](std::uint64_t seq) -> Status {
    std::string key = be64(seq);
    MDB_val k = val(key), v;
    int grc = mdb_get(t.txn, queue_dbi_, &k, &v);
    if (grc == MDB_NOTFOUND) return ok_status();  // a stale key (a damaged entry was removed)
    if (grc) return lmdb_error("reading queue entry " + std::to_string(seq), grc);
    auto e = decode_queue_entry(seq, view(v));
    if (!e) return e.error();
    out.push_back(std::move(e).value());
    return ok_status();
  };
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(t.txn, queue_due_dbi_, &cur))) return lmdb_error("mdb_cursor_open", rc);
  std::string start = due_key_prefix(lane);
  MDB_val k = val(start), v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && out.size() < limit;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    std::uint8_t l;
    std::int64_t due;
    std::uint64_t seq;
    if (!parse_due_key(view(k), l, due, seq) || l != lane || due > until) break;
    if (skip && skip(seq)) continue;
    if (Status st = take(seq); !st) {
      mdb_cursor_close(cur);
      return st.error();
    }
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error("walking the due index", rc);
  return out;
}

Result<std::uint64_t> Archive::queue_retry_now(Route route, std::uint64_t from_seq, std::uint64_t to_seq) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  // The keys first (a cursor over a table being changed is not to be trusted), then each entry.
  std::vector<std::uint64_t> seqs;
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(t.txn, queue_due_dbi_, &cur))) return lmdb_error("mdb_cursor_open", rc);
  std::string start = due_key_prefix(lane_of(route)) + be64(1);  // due time > 0: waiting for a retry
  MDB_val k = val(start), v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    std::uint8_t l;
    std::int64_t due;
    std::uint64_t seq;
    if (!parse_due_key(view(k), l, due, seq) || l != lane_of(route)) break;
    if (seq >= from_seq && seq <= to_seq) seqs.push_back(seq);
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error("walking the due index", rc);
  std::uint64_t changed = 0;
  for (std::uint64_t seq : seqs) {
    Error bad;
    rc = update_queue_entry(
        t.txn, queue_dbi_, queue_due_dbi_, seq,
        [&](QueueEntry& e) {
          bool any = false;
          for (auto& r : e.recipients) {
            if (r.state == RecipientState::kPending && r.next_attempt_at != 0) {
              r.next_attempt_at = 0;
              any = true;
            }
          }
          return any;
        },
        nullptr, &bad);
    if (rc == MDB_NOTFOUND) continue;
    if (rc == MDB_CORRUPTED && !bad.context.empty()) return bad;
    if (rc) return lmdb_error("rescheduling queue entry " + std::to_string(seq), rc);
    ++changed;
  }
  if ((rc = t.commit())) return lmdb_error("committing the reschedule", rc);
  return changed;
}

Result<QueueRangeFigures> Archive::queue_range(Route route, std::uint64_t from_seq, std::uint64_t to_seq,
                                               bool stop_at_first_pending) const {
  QueueRangeFigures f;
  if (!has_queue_ || from_seq > to_seq) return f;
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(t.txn, queue_dbi_, &cur))) return lmdb_error("mdb_cursor_open", rc);
  std::string start = be64(from_seq);
  MDB_val k = val(start), v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) continue;
    std::uint64_t seq = from_be64(view(k));
    if (seq > to_seq) break;
    auto e = decode_queue_entry(seq, view(v));
    if (!e || e->route != route) continue;
    bool pending_here = false;
    for (const auto& r : e->recipients) {
      if (r.state == RecipientState::kPending) {
        ++f.pending_recipients;
        pending_here = true;
      } else if (r.state == RecipientState::kKept) {
        ++f.kept_recipients;
      }
    }
    if (pending_here && e->held) {
      ++f.held_by_admin;  // waits for the administrator, not for the drain
    } else if (pending_here) {
      ++f.pending_messages;
      if (stop_at_first_pending) break;
    }
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error("walking the queue", rc);
  return f;
}

// ---- delivered log ----

Result<std::optional<DeliveredAt>> Archive::delivered_lookup(std::string_view message_id, std::string_view rcpt) const {
  if (!has_delivered_ || message_id.empty()) return std::optional<DeliveredAt>{};
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  std::string key = delivered_key(message_id, rcpt);
  MDB_val k = val(key), v;
  rc = mdb_get(t.txn, delivered_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<DeliveredAt>{};
  if (rc) return lmdb_error("reading the delivered log", rc);
  if (v.mv_size != 16) return std::optional<DeliveredAt>{};
  DeliveredAt d;
  d.at = static_cast<std::int64_t>(from_be64(view(v)));
  d.seq = from_be64(view(v).substr(8));
  return std::optional<DeliveredAt>(d);
}

Result<std::uint64_t> Archive::delivered_prune(std::int64_t older_than, std::uint64_t max_removed) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  if (!has_delivered_) return std::uint64_t{0};
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(t.txn, delivered_dbi_, &cur))) return lmdb_error("mdb_cursor_open", rc);
  std::uint64_t removed = 0;
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (v.mv_size == 16 && static_cast<std::int64_t>(from_be64(view(v))) >= older_than) continue;
    if (removed >= max_removed) break;
    if ((rc = mdb_cursor_del(cur, 0))) break;
    ++removed;
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error("pruning the delivered log", rc);
  if ((rc = t.commit())) return lmdb_error("committing the delivered log", rc);
  return removed;
}

// ---- continuity state ----

namespace {

class LmdbStateView : public StateWriter {
 public:
  LmdbStateView(MDB_txn* txn, unsigned dbi, bool present) : txn_(txn), dbi_(dbi), present_(present) {}
  std::optional<std::string> get(std::string_view key) const override {
    if (!present_) return std::nullopt;
    MDB_val k = val(key), v;
    if (mdb_get(txn_, dbi_, &k, &v) != 0) return std::nullopt;
    return std::string(view(v));
  }
  void scan(std::string_view prefix, const std::function<bool(std::string_view, std::string_view)>& fn,
            bool reverse) const override {
    if (!present_) return;
    MDB_cursor* cur = nullptr;
    if (mdb_cursor_open(txn_, dbi_, &cur)) return;
    MDB_val k, v;
    int rc;
    if (!reverse) {
      k = val(prefix);
      rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
      // The last key with the prefix: position after the prefix's range, then step back.
      std::string after(prefix);
      after.push_back('\xff');
      k = val(after);
      rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
      rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV) : mdb_cursor_get(cur, &k, &v, MDB_LAST);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, reverse ? MDB_PREV : MDB_NEXT)) {
      std::string_view key = view(k);
      if (key.substr(0, prefix.size()) != prefix) {
        if (reverse && key > prefix) continue;
        break;
      }
      if (!fn(key, view(v))) break;
    }
    mdb_cursor_close(cur);
  }
  Status put(std::string_view key, std::string_view value) override {
    if (key.empty() || key.size() > 400) return make_error(ErrorCode::kInvalidArgument, "bad state key");
    MDB_val k = val(key), v = val(value);
    int rc = mdb_put(txn_, dbi_, &k, &v, 0);
    if (rc) return lmdb_error("writing continuity state", rc);
    return ok_status();
  }
  Status del(std::string_view key) override {
    MDB_val k = val(key);
    int rc = mdb_del(txn_, dbi_, &k, nullptr);
    if (rc && rc != MDB_NOTFOUND) return lmdb_error("removing continuity state", rc);
    return ok_status();
  }

 private:
  MDB_txn* txn_;
  unsigned dbi_;
  bool present_;
};

}  // namespace

Status Archive::state_read(const std::function<Status(const StateView&)>& fn) const {
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  LmdbStateView sv(t.txn, continuity_dbi_, has_continuity_);
  return fn(sv);
}

Status Archive::state_write(const std::function<Status(StateWriter&)>& fn) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  LmdbStateView sv(t.txn, continuity_dbi_, true);
  MAILARK_TRY(fn(sv));
  if ((rc = t.commit())) return lmdb_error("committing continuity state", rc);
  return ok_status();
}

std::uint64_t Archive::file_bytes() const {
  std::uint64_t total = disk_bytes(dir_ + "/data.mdb");
  for (const auto& seg : segments())
    if (seg.own_store) total += store_bytes(seg.first);
  return total;
}

// ---- retention: expiry and tombstones (format 8) ----

Digest tombstone_hash(std::string_view body) {
  Sha256 h;
  h.update("mailark-tombstone-v1\n");
  h.update(body);
  return h.finish();
}

namespace {

bool decode_run(std::string_view k, std::string_view v, ExpiredRun& out) {
  if (k.size() != 8 || v.size() != 16) return false;
  out.last = from_be64(k);
  out.first = from_be64(v.substr(0, 8));
  out.tombstone = from_be64(v.substr(8, 8));
  return out.first <= out.last;
}

// Whether a table has no rows: what every record read asks of `expired` first (no cursor for an
// archive nothing expired from yet).
bool table_empty(MDB_txn* txn, unsigned dbi) {
  MDB_stat st;
  return mdb_stat(txn, dbi, &st) == 0 && st.ms_entries == 0;
}

Result<std::vector<ExpiredRun>> runs_in(MDB_txn* txn, unsigned dbi) {
  if (table_empty(txn, dbi)) return std::vector<ExpiredRun>{};
  std::vector<ExpiredRun> out;
  bool damaged = false;
  const int rc = lmdb::walk(txn, dbi, [&](std::string_view k, std::string_view v) {
    ExpiredRun run;
    if (!decode_run(k, v, run)) damaged = true;
    else out.push_back(run);
    return !damaged;
  });
  if (damaged) return make_error(ErrorCode::kCorrupt, "a damaged entry in the archive's table of expired records");
  if (rc) return lmdb_error("reading the expired records", rc);
  return out;
}

Result<std::optional<ExpiredRun>> run_holding(MDB_txn* txn, unsigned dbi, std::uint64_t seq) {
  if (table_empty(txn, dbi)) return std::optional<ExpiredRun>{};
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn, dbi, &cur)) return lmdb_error("mdb_cursor_open", rc);
  std::string key = be64(seq);
  MDB_val k = val(key), v;
  const int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  std::optional<ExpiredRun> out;
  ExpiredRun run;
  if (rc == 0 && decode_run(view(k), view(v), run) && run.first <= seq) out = run;
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error("reading the expired records", rc);
  return out;
}

Result<std::vector<Tombstone>> tombstones_in(MDB_txn* txn, unsigned dbi) {
  std::vector<Tombstone> out;
  bool damaged = false;
  const int rc = lmdb::walk(txn, dbi, [&](std::string_view k, std::string_view v) {
    if (k.size() != 8 || v.size() < 64) {
      damaged = true;
      return false;
    }
    Tombstone t;
    t.id = from_be64(k);
    t.signature = std::string(v.substr(0, 64));
    t.body = std::string(v.substr(64));
    out.push_back(std::move(t));
    return true;
  });
  if (damaged) return make_error(ErrorCode::kCorrupt, "a damaged tombstone in the archive");
  if (rc) return lmdb_error("reading the tombstones", rc);
  return out;
}

std::string hex_of(const Digest& d) { return to_hex(d); }

}  // namespace

Result<std::optional<ExpiredRun>> ArchiveSnapshot::expired_run(std::uint64_t seq) const {
  if (!archive_.has_expired_) return std::optional<ExpiredRun>{};
  return run_holding(txn_, archive_.expired_dbi_, seq);
}

Result<std::vector<ExpiredRun>> ArchiveSnapshot::expired_runs() const {
  if (!archive_.has_expired_) return std::vector<ExpiredRun>{};
  return runs_in(txn_, archive_.expired_dbi_);
}

Result<std::vector<Tombstone>> ArchiveSnapshot::tombstones() const {
  if (!archive_.has_expired_) return std::vector<Tombstone>{};
  return tombstones_in(txn_, archive_.tombstones_dbi_);
}

Result<std::optional<std::string>> Archive::setting(std::string_view key) const {
  Txn t;
  if (int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t.txn)) return lmdb_error("mdb_txn_begin", rc);
  const std::string mkey = "setting:" + std::string(key);
  MDB_val k = val(mkey), v;
  const int rc = mdb_get(t.txn, meta_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::string>{};
  if (rc) return lmdb_error("reading the setting " + std::string(key), rc);
  return std::optional<std::string>(std::string(view(v)));
}

Status Archive::update_setting(std::string_view key, const std::function<Status(std::optional<std::string>&)>& fn) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  Txn t;
  if (int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn)) return lmdb_error("mdb_txn_begin", rc);
  const std::string mkey = "setting:" + std::string(key);
  MDB_val k = val(mkey), v;
  int rc = mdb_get(t.txn, meta_dbi_, &k, &v);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error("reading the setting " + std::string(key), rc);
  std::optional<std::string> value;
  if (rc == 0) value = std::string(view(v));
  MAILARK_TRY(fn(value));
  if (value) {
    v = val(*value);
    rc = mdb_put(t.txn, meta_dbi_, &k, &v, 0);
  } else {
    rc = mdb_del(t.txn, meta_dbi_, &k, nullptr);
    if (rc == MDB_NOTFOUND) rc = 0;
  }
  if (rc) return lmdb_error("writing the setting " + std::string(key), rc);
  if ((rc = t.commit())) return lmdb_error("committing the setting " + std::string(key), rc);
  return ok_status();
}

Result<ExpiryOutcome> Archive::expire(const ExpiryRequest& req) {
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  if (!req.sign) return make_error(ErrorCode::kInvalidArgument, "an expiry needs the archive's signing key");
  if (req.seqs.empty()) return make_error(ErrorCode::kInvalidArgument, "nothing to expire");
  Txn t;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn);
  if (rc) return lmdb_error("mdb_txn_begin", rc);
  const ChainHead head = read_head(t.txn, meta_dbi_);
  ArchiveCounters counters = read_counters(t.txn, meta_dbi_);
  std::vector<SegmentInfo> segments = read_segments(t.txn, meta_dbi_);
  MDB_val k, v;
  finish_segments(segments, head.seq);
  std::size_t si = 0;
  while (si < segments.size() && segments[si].first != req.segment) ++si;
  if (si == segments.size())
    return make_error(ErrorCode::kInvalidArgument, "no time segment begins at record " + std::to_string(req.segment));
  if (si + 1 == segments.size())
    return make_error(ErrorCode::kInvalidArgument, "the live segment cannot expire: only closed segments do");
  const SegmentInfo seg = segments[si];
  const SegmentInfo& live = segments.back();
  if (!seg.own_store)
    return make_error(ErrorCode::kUnsupported,
                      "the segment from record " + std::to_string(seg.first) +
                          " was written before archive format 5 and keeps its records in the main environment; "
                          "retention expires segments that have a store of their own");
  for (std::size_t i = 0; i < req.seqs.size(); ++i) {
    const std::uint64_t s = req.seqs[i];
    if (s < seg.first || s > seg.last || (i > 0 && s <= req.seqs[i - 1]))
      return make_error(ErrorCode::kInvalidArgument,
                        "record " + std::to_string(s) + " is not one of segment " + std::to_string(seg.first) + "'s (" +
                            std::to_string(seg.first) + " to " + std::to_string(seg.last) + "), or is named twice");
    MAILARK_ASSIGN_OR_RETURN(auto run, run_holding(t.txn, expired_dbi_, s));
    if (run) return make_error(ErrorCode::kInvalidArgument, "record " + std::to_string(s) + " has already expired");
    std::string key = be64(s);
    MDB_val qk = val(key), qv;
    if (mdb_get(t.txn, queue_dbi_, &qk, &qv) == 0)
      return make_error(ErrorCode::kInvalidArgument, "record " + std::to_string(s) + " still has mail to deliver");
    if (mdb_get(t.txn, quarantine_dbi_, &qk, &qv) == 0) {
      auto q = decode_quarantine_entry(s, view(qv));
      if (q && q->status == QuarantineStatus::kHeld)
        return make_error(ErrorCode::kInvalidArgument,
                          "record " + std::to_string(s) + " is held in quarantine, undecided");
      if ((rc = mdb_del(t.txn, quarantine_dbi_, &qk, nullptr))) return lmdb_error("removing a quarantine entry", rc);
    }
  }

  // The segment's records, as its store holds them (a read transaction on it).
  MAILARK_ASSIGN_OR_RETURN(Store * seg_store, store(seg.first, true));
  struct Released {
    const Archive* a;
    std::uint64_t first;
    bool held = true;
    ~Released() {
      if (held) a->release_store(first);
    }
  } released{this, seg.first};
  Txn sr;
  if ((rc = mdb_txn_begin(seg_store->env, nullptr, MDB_RDONLY, &sr.txn))) return lmdb_error("reading " + store_path(seg.first), rc);
  MAILARK_ASSIGN_OR_RETURN(const std::vector<ExpiredRun> old_runs, runs_in(t.txn, expired_dbi_));
  std::map<std::uint64_t, ArchiveRecord> records;  // the segment's records not expired before
  std::map<std::uint64_t, Digest> leaves;          // of those expiring now
  {
    std::size_t ri = 0;
    MAILARK_TRY(walk_records_strict(sr.txn, seg_store->records_dbi, seg.first, seg.last,
                                    [&](const ArchiveRecord& r, std::string_view value) {
                                      while (ri < old_runs.size() && old_runs[ri].last < r.seq) ++ri;
                                      if (ri < old_runs.size() && old_runs[ri].first <= r.seq) return true;
                                      if (std::binary_search(req.seqs.begin(), req.seqs.end(), r.seq))
                                        leaves[r.seq] = merkle::leaf_hash(value);
                                      records.emplace(r.seq, r);
                                      return true;
                                    }));
  }
  for (std::uint64_t s : req.seqs)
    if (!leaves.count(s))
      return make_error(ErrorCode::kCorrupt, "record " + std::to_string(s) + " is missing from its segment's store",
                        "run `mailark verify`");

  // Runs of consecutive seqs, each with the hash it links from, its last record's hash and a digest
  // of its Merkle leaves (checked against the tree the archive stores).
  nlohmann::json runs = nlohmann::json::array();
  std::vector<ExpiredRun> new_runs;
  for (std::size_t i = 0; i < req.seqs.size();) {
    std::size_t j = i;
    while (j + 1 < req.seqs.size() && req.seqs[j + 1] == req.seqs[j] + 1) ++j;
    const std::uint64_t first = req.seqs[i], last = req.seqs[j];
    Sha256 digest;
    for (std::uint64_t s = first; s <= last; ++s) {
      MAILARK_ASSIGN_OR_RETURN(Digest stored, tree_node_in(t.txn, merkle_dbi_, 0, s - 1));
      if (stored != leaves[s])
        return make_error(ErrorCode::kCorrupt, "record " + std::to_string(s) + " does not match the archive's Merkle tree",
                          "run `mailark verify` before any expiry");
      digest.update(std::string_view(reinterpret_cast<const char*>(stored.data()), 32));
    }
    runs.push_back({{"first", first},
                    {"last", last},
                    {"prev_hash", hex_of(records[first].prev_hash)},
                    {"last_hash", hex_of(records[last].hash)},
                    {"leaves", hex_of(digest.finish())}});
    new_runs.push_back({first, last, 0});
    i = j + 1;
  }

  ExpiryOutcome out;
  out.expired = req.seqs.size();
  out.kept = records.size() - req.seqs.size();
  // Holdings: the expired records hold nothing any more.
  std::map<std::string, std::uint64_t> contents;  // every content of the segment's records -> a raw size
  for (const auto& [seq, r] : records) {
    const std::string c(reinterpret_cast<const char*>(r.content_sha256.data()), 32);
    contents.emplace(c, r.raw_size);
    if (!std::binary_search(req.seqs.begin(), req.seqs.end(), seq)) continue;
    // The counters describe what the archive holds: the record goes from them.
    auto down = [](std::uint64_t& c, std::uint64_t by = 1) { c = c >= by ? c - by : 0; };
    down(counters.records);
    down(counters.raw_bytes, r.raw_size);
    switch (r.verdict.kind) {
      case scanner::VerdictKind::kClean: down(counters.clean); break;
      case scanner::VerdictKind::kInfected: down(counters.infected); break;
      case scanner::VerdictKind::kUnscannable: down(counters.unscannable); break;
      default: down(counters.unscanned); break;
    }
    if (r.flags & kFlagMalformed) down(counters.malformed);
    const std::string hkey = holding_key(r.content_sha256, r.envelope, seq);
    MDB_val hk = val(hkey), hv;
    // The row is this record's (an import's row names the first record of its custodian's copy).
    if (mdb_get(t.txn, holdings_dbi_, &hk, &hv) == 0 && hv.mv_size == 8 && from_be64(view(hv)) == seq) {
      if ((rc = mdb_del(t.txn, holdings_dbi_, &hk, nullptr))) return lmdb_error("removing who held a message", rc);
    }
  }

  // Every message stored in this segment's packs, whoever holds it: besides its own records' (stored
  // by them, or held by them from earlier segments), those carried into it by an earlier expiry, whose
  // holders are in other segments (Retention.CarriedMessagesAreCarriedAgain). One pass over blob_index.
  const std::uint64_t pack_end = segments[si + 1].first_pack;  // this segment's packs: [first_pack, pack_end)
  {
    MDB_cursor* cur = nullptr;
    if ((rc = mdb_cursor_open(t.txn, blob_index_dbi_, &cur))) return lmdb_error("mdb_cursor_open", rc);
    MDB_val bk, bv;
    int brc;
    for (brc = mdb_cursor_get(cur, &bk, &bv, MDB_FIRST); brc == 0; brc = mdb_cursor_get(cur, &bk, &bv, MDB_NEXT)) {
      if (bv.mv_size != 16 || bk.mv_size != 32) continue;
      const std::uint64_t pack_id = from_be64(view(bv).substr(0, 8));
      if (pack_id >= seg.first_pack && pack_id < pack_end) contents.emplace(std::string(view(bk)), 0);
    }
    mdb_cursor_close(cur);
    if (brc != MDB_NOTFOUND) return lmdb_error("walking the blob index", brc);
  }

  // The live segment's store, where messages still held are carried forward.
  Store* live_store = nullptr;
  Txn lw;
  struct LiveReleased {
    const Archive* a;
    std::uint64_t first;
    bool held = false;
    ~LiveReleased() {
      if (held) a->release_store(first);
    }
  } live_released{this, live.first};
  auto live_target = [&]() -> Result<std::pair<MDB_txn*, unsigned>> {
    if (!live.own_store) return std::pair<MDB_txn*, unsigned>{t.txn, blobs_dbi_};
    if (!live_store) {
      MAILARK_ASSIGN_OR_RETURN(live_store, store(live.first, false));
      live_released.held = true;
      if (int lrc = mdb_txn_begin(live_store->env, nullptr, 0, &lw.txn))
        return lmdb_error("beginning a write to " + store_path(live.first), lrc);
      // A tail of packs past what the main environment counts never committed (as in append).
      if (int lrc = drop_uncommitted_tail(lw.txn, live_store->blobs_dbi, counters.packs))
        return lmdb_error("dropping an uncommitted tail of " + store_path(live.first), lrc);
    }
    return std::pair<MDB_txn*, unsigned>{lw.txn, live_store->blobs_dbi};
  };
  std::string pack;
  auto write_pack = [&]() -> Status {
    if (pack.empty()) return ok_status();
    MAILARK_ASSIGN_OR_RETURN(auto to, live_target());
    return put_pack(to.first, to.second, counters, pack, "carrying messages forward");
  };
  for (auto [c, raw_size] : contents) {
    MDB_val ik = val(c), iv;
    rc = mdb_get(t.txn, blob_index_dbi_, &ik, &iv);
    if (rc == MDB_NOTFOUND) continue;
    if (rc) return lmdb_error("looking up a blob", rc);
    if (iv.mv_size != 16) return make_error(ErrorCode::kCorrupt, "a bad blob location in the archive");
    const std::string loc(view(iv));
    const std::uint64_t pack_id = from_be64(std::string_view(loc).substr(0, 8));
    const std::uint32_t offset = from_be32(std::string_view(loc).substr(8, 4)),
                        length = from_be32(std::string_view(loc).substr(12, 4));
    // Who still holds it (the rows of this expiry are gone).
    bool held = false;
    {
      MDB_cursor* cur = nullptr;
      if ((rc = mdb_cursor_open(t.txn, holdings_dbi_, &cur))) return lmdb_error("mdb_cursor_open", rc);
      MDB_val hk = val(c), hv;
      rc = mdb_cursor_get(cur, &hk, &hv, MDB_SET_RANGE);
      held = rc == 0 && hk.mv_size >= 32 && view(hk).substr(0, 32) == c;
      mdb_cursor_close(cur);
      if (rc && rc != MDB_NOTFOUND) return lmdb_error("reading who holds a message", rc);
    }
    const bool here = pack_id >= seg.first_pack && pack_id < pack_end;
    if (!held) {
      // Nobody holds it: it leaves the index of blobs (its bytes go with its segment's store).
      std::uint64_t frame_size = 0;
      if (here) {
        std::string pkey = be64(pack_id);
        MDB_val pk = val(pkey), pv;
        if (mdb_get(sr.txn, seg_store->blobs_dbi, &pk, &pv) == 0 && std::uint64_t{offset} + length <= pv.mv_size) {
          if (auto h = decode_blob(view(pv).substr(offset, length))) {
            frame_size = h->frame.size();
            raw_size = h->raw_size;
          }
        }
      }
      if ((rc = mdb_del(t.txn, blob_index_dbi_, &ik, nullptr))) return lmdb_error("removing a blob", rc);
      counters.blobs = counters.blobs > 0 ? counters.blobs - 1 : 0;
      counters.unique_raw_bytes = counters.unique_raw_bytes >= raw_size ? counters.unique_raw_bytes - raw_size : 0;
      counters.stored_bytes = counters.stored_bytes >= frame_size ? counters.stored_bytes - frame_size : 0;
      out.blobs_removed++;
      continue;
    }
    if (!here) continue;  // held, and stored in a later segment's pack (or an earlier one's, carried before)
    std::string pkey = be64(pack_id);
    MDB_val pk = val(pkey), pv;
    if ((rc = mdb_get(sr.txn, seg_store->blobs_dbi, &pk, &pv)))
      return lmdb_error("reading pack " + std::to_string(pack_id) + " of " + store_path(seg.first), rc);
    if (std::uint64_t{offset} + length > pv.mv_size)
      return make_error(ErrorCode::kCorrupt, "a blob lies outside its pack in " + store_path(seg.first));
    const std::string blob(view(pv).substr(offset, length));
    if (!pack.empty() && pack.size() + blob.size() > kPackBytes) MAILARK_TRY(write_pack());
    std::string nloc = be64(counters.packs + 1) + be32(static_cast<std::uint32_t>(pack.size())) +
                       be32(static_cast<std::uint32_t>(blob.size()));
    pack += blob;
    MDB_val nv = val(nloc);
    if ((rc = mdb_put(t.txn, blob_index_dbi_, &ik, &nv, 0))) return lmdb_error("moving a blob", rc);
    out.blobs_carried++;
    out.bytes_carried += blob.size();
  }
  MAILARK_TRY(write_pack());

  // The tombstone, chained to the one before, signed, and the runs that stand under it.
  MAILARK_ASSIGN_OR_RETURN(std::vector<Tombstone> earlier, tombstones_in(t.txn, tombstones_dbi_));
  Tombstone tomb;
  tomb.id = earlier.empty() ? 1 : earlier.back().id + 1;
  const Digest prev = earlier.empty() ? Digest{} : tombstone_hash(earlier.back().body);
  MDB_val ak = val(kMetaArchiveId), av;
  std::string archive;
  if (mdb_get(t.txn, meta_dbi_, &ak, &av) == 0)
    archive = to_hex(std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(av.mv_data), av.mv_size));
  nlohmann::json body = {{"v", 1},
                         {"format", "mailark-tombstone-v1"},
                         {"archive", archive},
                         {"id", tomb.id},
                         {"prev", hex_of(prev)},
                         {"at", req.now},
                         {"by", req.by},
                         {"reason", req.reason},
                         {"segment", {{"first", seg.first}, {"last", seg.last}, {"period", seg.period}}},
                         {"expired", out.expired},
                         {"kept", out.kept},
                         {"runs", runs},
                         {"tree_size", head.seq}};
  tomb.body = json_text(body);
  tomb.signature = req.sign(tomb.body);
  if (tomb.signature.size() != 64) return make_error(ErrorCode::kInternal, "the signature of a tombstone is not 64 bytes");
  {
    std::string key = be64(tomb.id), value = tomb.signature + tomb.body;
    MDB_val tk = val(key), tv = val(value);
    if ((rc = mdb_put(t.txn, tombstones_dbi_, &tk, &tv, MDB_NOOVERWRITE))) return lmdb_error("writing a tombstone", rc);
  }
  for (ExpiredRun& run : new_runs) {
    run.tombstone = tomb.id;
    std::string key = be64(run.last), value = be64(run.first) + be64(run.tombstone);
    MDB_val rk = val(key), rv = val(value);
    if ((rc = mdb_put(t.txn, expired_dbi_, &rk, &rv, MDB_NOOVERWRITE))) return lmdb_error("recording expired records", rc);
  }
  std::string cv = encode_counters(counters);
  k = val(kMetaCounters);
  v = val(cv);
  if ((rc = mdb_put(t.txn, meta_dbi_, &k, &v, 0))) return lmdb_error("updating counters", rc);
  mdb_txn_abort(std::exchange(sr.txn, nullptr));
  if (lw.txn && (rc = lw.commit())) return lmdb_error("committing carried messages to " + store_path(live.first), rc);
  if ((rc = t.commit())) return lmdb_error("committing the expiry", rc);
  out.tombstone = std::move(tomb);
  // The store without what expired (a crash before this leaves it to the next writable open).
  released.held = false;
  release_store(seg.first);
  // The expiry stands from here: a store still being read (a server's sessions) is written again by
  // the next pass (finish_expiries); until then its expired records are never read.
  MAILARK_ASSIGN_OR_RETURN(out.store_removed, rewrite_expired_store(seg.first, &out.store_deferred));
  return out;
}

namespace {

// A new store file at `path` with a store's tables (records, blobs, and meta naming segment `first`),
// its first write transaction begun: what an expiry's rewrite and a move write a store into.
struct FreshStore {
  struct Env {
    MDB_env* env = nullptr;
    ~Env() {
      if (env) mdb_env_close(env);
    }
  } env;
  Txn w;  // after env: ended before it is closed
  MDB_dbi records = 0, blobs = 0, meta = 0;
};

Status open_fresh_store(const std::string& path, std::uint64_t first, std::size_t map_size, FreshStore& out) {
  int rc = mdb_env_create(&out.env.env);
  if (rc) return lmdb_error("mdb_env_create", rc);
  mdb_env_set_maxdbs(out.env.env, 4);
  mdb_env_set_mapsize(out.env.env, map_size);
  if ((rc = mdb_env_open(out.env.env, path.c_str(), MDB_NOSUBDIR | MDB_NOTLS, 0640))) return lmdb_error("creating " + path, rc);
  if ((rc = mdb_txn_begin(out.env.env, nullptr, 0, &out.w.txn))) return lmdb_error("mdb_txn_begin", rc);
  for (auto [name, dbi] : {std::pair{"records", &out.records}, std::pair{"blobs", &out.blobs}, std::pair{"meta", &out.meta}})
    if ((rc = mdb_dbi_open(out.w.txn, name, MDB_CREATE, dbi))) return lmdb_error(std::string("creating ") + name + " in " + path, rc);
  std::string fv = be64(first);
  MDB_val mk = val("segment"), mv = val(fv);
  if ((rc = mdb_put(out.w.txn, out.meta, &mk, &mv, 0))) return lmdb_error("writing " + path, rc);
  return ok_status();
}

}  // namespace

Result<bool> Archive::rewrite_expired_store(std::uint64_t first, bool* busy) {
  namespace fs = std::filesystem;
  MAILARK_ASSIGN_OR_RETURN(auto snap, snapshot());
  const auto segs = snap->segments();
  std::size_t si = 0;
  while (si < segs.size() && segs[si].first != first) ++si;
  if (si + 1 >= segs.size() || !segs[si].own_store) return false;
  const SegmentInfo& seg = segs[si];
  MAILARK_ASSIGN_OR_RETURN(const std::vector<ExpiredRun> runs, snap->expired_runs());
  const std::string path = store_path(first);
  std::error_code ec;
  // This process's handle on the old file goes first (nothing may read through it afterwards).
  {
    std::lock_guard lock(stores_mu_);
    if (auto it = stores_.find(first); it != stores_.end()) {
      if (it->second->users > 0) {
        // Being read (a server's sessions): its expired records leave it at the next pass or open.
        if (busy) *busy = true;
        return false;
      }
      stores_.erase(it);
    }
  }
  if (all_expired(runs, seg.first, seg.last)) {
    if (fs::exists(path, ec)) {
      fs::remove(path, ec);
      if (ec) return make_error(ErrorCode::kIo, "removing " + path + ": " + ec.message());
      fs::remove(path + "-lock", ec);
    }
    return true;
  }
  // The kept records, read from the old file, go to a new one beside it, swapped in by rename.
  const std::string fresh = path + ".expiring";
  fs::remove(fresh, ec);
  fs::remove(fresh + "-lock", ec);
  {
    MAILARK_ASSIGN_OR_RETURN(Store * old, store(first, true));
    struct Released {
      const Archive* a;
      std::uint64_t first;
      ~Released() { a->release_store(first); }
    } released{this, first};
    FreshStore out;
    MAILARK_TRY(open_fresh_store(fresh, first, kStoreMapSize, out));
    Txn& w = out.w;
    Txn r;
    int rc = mdb_txn_begin(old->env, nullptr, MDB_RDONLY, &r.txn);
    if (rc) return lmdb_error("reading " + path, rc);
    std::optional<Error> error;
    std::size_t ri = 0;
    int put_rc = 0;
    walk_records(
        r.txn, old->records_dbi, seg.first, seg.last,
        [&](const ArchiveRecord& rec, std::string_view value) {
          while (ri < runs.size() && runs[ri].last < rec.seq) ++ri;
          if (ri < runs.size() && runs[ri].first <= rec.seq) return true;
          std::string key = be64(rec.seq);
          MDB_val k = val(key), v = val(value);
          put_rc = mdb_put(w.txn, out.records, &k, &v, MDB_APPEND);
          return put_rc == 0;
        },
        [&](std::uint64_t, const Error&) { return true; }, &error);
    if (error) return *error;
    if (put_rc) return lmdb_error("writing " + fresh, put_rc);
    if ((rc = w.commit())) return lmdb_error("committing " + fresh, rc);
    if ((rc = mdb_env_sync(out.env.env, 1))) return lmdb_error("syncing " + fresh, rc);
  }
  const bool sealed = store_sealed(first);
  if (sealed) ::chmod(fresh.c_str(), 0440);
  if (::rename(fresh.c_str(), path.c_str()) != 0)
    return make_error(ErrorCode::kIo, "swapping in " + fresh + ": " + std::strerror(errno));
  fs::remove(fresh + "-lock", ec);
  MAILARK_TRY(sync_dir(dir_));
  {
    std::lock_guard lock(stores_mu_);
    if (auto it = stores_.find(first); it != stores_.end() && it->second->users == 0) stores_.erase(it);
  }
  return false;
}

Result<std::uint64_t> Archive::finish_expiries() {
  if (read_only_ || !has_expired_) return std::uint64_t{0};
  MAILARK_ASSIGN_OR_RETURN(auto snap, snapshot());
  MAILARK_ASSIGN_OR_RETURN(const std::vector<ExpiredRun> runs, snap->expired_runs());
  if (runs.empty()) return std::uint64_t{0};
  const auto segs = snap->segments();
  snap.reset();
  std::uint64_t rewritten = 0;
  for (std::size_t i = 0; i + 1 < segs.size(); ++i) {
    const SegmentInfo& seg = segs[i];
    if (!seg.own_store) continue;
    bool touched = false;
    for (const auto& r : runs) touched = touched || (r.last >= seg.first && r.first <= seg.last);
    if (!touched) continue;
    const std::string path = store_path(seg.first);
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) continue;
    // Does the store still hold an expired record, or any pack (all were carried forward)?
    bool stale = all_expired(runs, seg.first, seg.last);
    if (!stale) {
      MAILARK_ASSIGN_OR_RETURN(Store * st, store(seg.first, true));
      Txn r;
      int rc = mdb_txn_begin(st->env, nullptr, MDB_RDONLY, &r.txn);
      if (rc == 0) {
        MDB_stat bs{};
        if (mdb_stat(r.txn, st->blobs_dbi, &bs) == 0 && bs.ms_entries > 0) stale = true;
        for (const auto& run : runs) {
          if (stale || run.last < seg.first || run.first > seg.last) continue;
          std::string key = be64(run.first);
          MDB_val k = val(key), v;
          MDB_cursor* cur = nullptr;
          if (mdb_cursor_open(r.txn, st->records_dbi, &cur) == 0) {
            if (mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) == 0 && k.mv_size == 8 && from_be64(view(k)) <= run.last)
              stale = true;
            mdb_cursor_close(cur);
          }
        }
      }
      if (r.txn) mdb_txn_abort(std::exchange(r.txn, nullptr));
      release_store(seg.first);
      if (rc) return lmdb_error("reading " + path, rc);
    }
    if (!stale) continue;
    bool busy = false;
    MAILARK_TRY(rewrite_expired_store(seg.first, &busy));
    if (!busy) ++rewritten;  // else being read: the next pass
  }
  return rewritten;
}

namespace {

// Deletes the keys from `lo` on (u64 BE) below `end` of one table, at most `limit` of them. Returns
// an LMDB code (0: done) and adds to *removed.
int delete_key_range(MDB_txn* txn, unsigned dbi, std::uint64_t lo, std::uint64_t end, std::uint64_t limit,
                     std::uint64_t* removed) {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, dbi, &cur);
  if (rc) return rc;
  std::string start = be64(lo);
  MDB_val k = val(start), v;
  std::uint64_t n = 0;
  // After mdb_cursor_del the cursor stands on the next key, which MDB_NEXT then returns.
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && n < limit;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8 || from_be64(view(k)) >= end) break;
    if ((rc = mdb_cursor_del(cur, 0))) break;
    ++n;
  }
  mdb_cursor_close(cur);
  *removed += n;
  return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}

}  // namespace

Result<std::uint64_t> Archive::drop_moved_leftovers() {
  if (read_only_) return std::uint64_t{0};
  // What a store holds is never read from the main environment: the records from the first segment
  // with a store on, and the packs from its first_pack on (segments with stores are a suffix of the
  // table, and packs of a segment in the main environment all come before them).
  std::uint64_t removed = 0;
  for (;;) {
    Txn t;
    if (int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn)) return lmdb_error("mdb_txn_begin", rc);
    const std::vector<SegmentInfo> segs = read_segments(t.txn, meta_dbi_);
    std::size_t k = 0;
    while (k < segs.size() && !segs[k].own_store) ++k;
    if (k == segs.size()) return removed;
    // 16,384 deletions a transaction: a large move's leftovers never make one huge transaction.
    constexpr std::uint64_t kBatch = 16384;
    std::uint64_t n = 0;
    if (int rc = delete_key_range(t.txn, records_dbi_, segs[k].first, UINT64_MAX, kBatch, &n))
      return lmdb_error("removing moved records from the main environment", rc);
    if (n < kBatch) {
      if (int rc = delete_key_range(t.txn, blobs_dbi_, segs[k].first_pack, UINT64_MAX, kBatch - n, &n))
        return lmdb_error("removing moved packs from the main environment", rc);
    }
    if (n == 0) return removed;
    if (int rc = t.commit()) return lmdb_error("removing moved records from the main environment", rc);
    removed += n;
  }
}

Result<std::vector<SegmentMove>> Archive::move_segments_to_stores(std::uint64_t down_to,
                                                                   const std::function<void(const SegmentMove&)>& progress) {
  namespace fs = std::filesystem;
  if (read_only_) return make_error(ErrorCode::kInvalidArgument, "archive opened read-only");
  MAILARK_TRY(drop_moved_leftovers());
  const std::vector<SegmentInfo> segs = segments();
  std::size_t k = 0;  // the first segment with a store
  while (k < segs.size() && !segs[k].own_store) ++k;
  std::size_t target = 0;
  if (down_to != 0) {
    while (target < segs.size() && segs[target].first != down_to) ++target;
    if (target == segs.size())
      return make_error(ErrorCode::kInvalidArgument, "no time segment begins at record " + std::to_string(down_to));
  }
  std::vector<SegmentMove> moved;
  if (k == 0 || target >= k) return moved;  // it has a store already
  if (k == segs.size())
    return make_error(ErrorCode::kUnsupported,
                      "every segment, the live one too, keeps its records in the main environment (written before "
                      "archive format 5)",
                      "they move into stores of their own once the live segment has closed and the next one, "
                      "begun by this release, has a store");

  // Each segment's first pack: one past the last pack any record before it points at (packs are
  // numbered in the order they were written, and a record only points at a pack written by then).
  std::vector<std::uint64_t> first_pack(k + 1, 1);
  first_pack[k] = segs[k].first_pack;
  {
    Txn r;
    if (int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &r.txn)) return lmdb_error("mdb_txn_begin", rc);
    std::uint64_t max_pack = 0;
    std::size_t next = 1;
    MAILARK_TRY(walk_records_strict(r.txn, records_dbi_, 1, segs[k].first - 1, [&](const ArchiveRecord& rec, std::string_view) {
      while (next < k && rec.seq >= segs[next].first) first_pack[next++] = max_pack + 1;
      MDB_val bk = val(std::string_view(reinterpret_cast<const char*>(rec.content_sha256.data()), 32)), bv;
      if (mdb_get(r.txn, blob_index_dbi_, &bk, &bv) == 0 && bv.mv_size == 16)
        max_pack = std::max(max_pack, from_be64(view(bv).substr(0, 8)));
      return true;
    }));
    while (next < k) first_pack[next++] = max_pack + 1;
    for (std::size_t i = 0; i < k; ++i) first_pack[i] = std::min(first_pack[i], first_pack[k]);
  }

  for (std::size_t i = k; i-- > target;) {
    const SegmentInfo& seg = segs[i];
    SegmentMove mv;
    mv.first = seg.first;
    mv.last = seg.last;
    mv.first_pack = first_pack[i];
    const std::uint64_t pack_end = first_pack[i + 1];
    const std::string path = store_path(seg.first), fresh = path + ".moving";
    std::error_code ec;
    fs::remove(fresh, ec);
    fs::remove(fresh + "-lock", ec);
    {
      FreshStore out;
      MAILARK_TRY(open_fresh_store(fresh, seg.first, kStoreMapSize, out));
      MDB_env* env = out.env.env;
      Txn& w = out.w;
      const MDB_dbi records = out.records, blobs = out.blobs;
      Txn r;
      int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &r.txn);
      if (rc) return lmdb_error("mdb_txn_begin", rc);
      // Committed every 64 MiB: a segment of gigabytes never holds that much in dirty pages.
      std::uint64_t pending = 0;
      auto put = [&](unsigned dbi, const MDB_val& key, const MDB_val& value) -> int {
        MDB_val kk = key, vv = value;
        if (int prc = mdb_put(w.txn, dbi, &kk, &vv, MDB_APPEND)) return prc;
        pending += key.mv_size + value.mv_size;
        if (pending < (std::uint64_t{64} << 20)) return 0;
        pending = 0;
        if (int crc = w.commit()) return crc;
        return mdb_txn_begin(env, nullptr, 0, &w.txn);
      };
      // The records first..last, every one of them.
      for (const auto& [dbi, lo, end, count] :
           {std::tuple{records_dbi_, seg.first, seg.last + 1, &mv.records}, std::tuple{blobs_dbi_, mv.first_pack, pack_end, &mv.packs}}) {
        MDB_cursor* cur = nullptr;
        if ((rc = mdb_cursor_open(r.txn, dbi, &cur))) return lmdb_error("mdb_cursor_open", rc);
        std::string start = be64(lo);
        MDB_val ck = val(start), cv;
        int crc;
        std::uint64_t expect = lo;
        for (crc = mdb_cursor_get(cur, &ck, &cv, MDB_SET_RANGE); crc == 0; crc = mdb_cursor_get(cur, &ck, &cv, MDB_NEXT)) {
          if (ck.mv_size != 8 || from_be64(view(ck)) >= end) break;
          if (dbi == records_dbi_ && from_be64(view(ck)) != expect) break;  // a gap: refused below
          ++expect;
          if ((rc = put(dbi == records_dbi_ ? records : blobs, ck, cv))) {
            mdb_cursor_close(cur);
            return lmdb_error("writing " + fresh, rc);
          }
          ++*count;
        }
        mdb_cursor_close(cur);
        if (crc != 0 && crc != MDB_NOTFOUND) return lmdb_error("reading the main environment", crc);
      }
      if (mv.records != seg.last - seg.first + 1)
        return make_error(ErrorCode::kCorrupt,
                          "record " + std::to_string(seg.first + mv.records) + " is missing from the main environment",
                          "run `mailark verify`; nothing was moved");
      if ((rc = w.commit())) return lmdb_error("committing " + fresh, rc);
      if ((rc = mdb_env_sync(env, 1))) return lmdb_error("syncing " + fresh, rc);
    }
    // Closed: sealed as every closed store is, then swapped in under its name (a store of an earlier
    // move that never committed is replaced).
    if (::chmod(fresh.c_str(), 0440) != 0) return make_error(ErrorCode::kIo, "sealing " + fresh + ": " + std::strerror(errno));
    {
      std::lock_guard lock(stores_mu_);
      if (auto it = stores_.find(seg.first); it != stores_.end() && it->second->users == 0) stores_.erase(it);
    }
    if (::rename(fresh.c_str(), path.c_str()) != 0)
      return make_error(ErrorCode::kIo, "moving " + fresh + " into place: " + std::strerror(errno));
    fs::remove(fresh + "-lock", ec);
    fs::remove(path + "-lock", ec);
    MAILARK_TRY(sync_dir(dir_));
    mv.store_bytes = store_bytes(seg.first);
    if (stop_move_stage_ == 1) {
      stop_move_stage_ = 0;
      return make_error(ErrorCode::kIo, "stopped before the commit (test)");
    }
    // The commit point: the table names the store (the table is read again here: a server's appends
    // may have cut segments since).
    {
      Txn t;
      if (int rc = mdb_txn_begin(env_, nullptr, 0, &t.txn)) return lmdb_error("mdb_txn_begin", rc);
      std::vector<SegmentInfo> table = read_segments(t.txn, meta_dbi_);
      std::size_t j = 0;
      while (j < table.size() && table[j].first != seg.first) ++j;
      if (j + 1 >= table.size() || table[j].own_store || !table[j + 1].own_store || table[j + 1].first != segs[i + 1].first)
        return make_error(ErrorCode::kInternal, "the segment table changed during the move of segment " + std::to_string(seg.first));
      table[j].own_store = true;
      table[j].first_pack = mv.first_pack;
      std::string value = encode_segments(table);
      MDB_val tk = val(kMetaSegments), tv = val(value);
      if (int rc = mdb_put(t.txn, meta_dbi_, &tk, &tv, 0)) return lmdb_error("writing the segment table", rc);
      if (int rc = t.commit()) return lmdb_error("committing the segment table", rc);
    }
    if (stop_move_stage_ == 2) {
      stop_move_stage_ = 0;
      return make_error(ErrorCode::kIo, "stopped after the commit (test)");
    }
    MAILARK_TRY(drop_moved_leftovers());
    if (progress) progress(mv);
    moved.push_back(mv);
  }
  return moved;
}

namespace {

// The first byte of LMDB's lock file, as mdb_env_open locks it: shared by every process that has the
// environment open, exclusive for the first while it sets the lock table up.
bool lock_first_byte(int fd, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 1;
  return ::fcntl(fd, F_SETLK, &fl) == 0;
}

struct EnvHandle {
  MDB_env* env = nullptr;
  ~EnvHandle() {
    if (env) mdb_env_close(env);
  }
};

}  // namespace

Result<Archive::MainCompaction> Archive::compact_main_environment(const std::string& dir, std::uint64_t min_free_bytes) {
  namespace fs = std::filesystem;
  MainCompaction out;
  const std::string data = dir + "/data.mdb", lock = dir + "/lock.mdb", fresh = dir + "/data.mdb.compact";
  std::error_code ec;
  if (!fs::exists(data, ec) || !fs::exists(lock, ec)) return out;
  fs::remove(fresh, ec);  // what an interrupted compaction left
  // Held exclusively from here to the end, but for the moment the open below shares it (LMDB then
  // downgrades this process's lock) and it is taken back. Closing this descriptor lets every lock of
  // this process on the file go, which is why it is closed last.
  struct Fd {
    int fd = -1;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  } lfd;
  lfd.fd = ::open(lock.c_str(), O_RDWR | O_CLOEXEC);
  if (lfd.fd < 0) return make_error(ErrorCode::kIo, "opening " + lock + ": " + std::strerror(errno));
  if (!lock_first_byte(lfd.fd, F_WRLCK)) {
    out.busy = true;
    return out;
  }
  auto open_env = [&](EnvHandle& h, unsigned flags) -> Status {
    int rc = mdb_env_create(&h.env);
    if (rc) return lmdb_error("mdb_env_create", rc);
    mdb_env_set_maxdbs(h.env, 16);
    mdb_env_set_mapsize(h.env, kMapSize);
    if ((rc = mdb_env_open(h.env, dir.c_str(), MDB_NOTLS | flags, 0640))) return lmdb_error("opening the archive in " + dir, rc);
    return ok_status();
  };
  EnvHandle old_env;
  MAILARK_TRY(open_env(old_env, 0));
  if (!lock_first_byte(lfd.fd, F_WRLCK)) {  // another process opened it in between
    out.busy = true;
    return out;
  }
  {
    MDB_envinfo info{};
    MDB_stat st{};
    mdb_env_info(old_env.env, &info);
    mdb_env_stat(old_env.env, &st);
    out.file_bytes = fs::file_size(data, ec);
    // The free pages: LMDB's own free list (what mdb_stat -f counts).
    Txn r;
    if (int rc = mdb_txn_begin(old_env.env, nullptr, MDB_RDONLY, &r.txn)) return lmdb_error("mdb_txn_begin", rc);
    MDB_cursor* cur = nullptr;
    if (int rc = mdb_cursor_open(r.txn, 0, &cur)) return lmdb_error("reading the free list", rc);
    MDB_val k, v;
    std::uint64_t pages = 0;
    while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0)
      if (v.mv_size >= sizeof(std::size_t)) pages += *static_cast<const std::size_t*>(v.mv_data);
    mdb_cursor_close(cur);
    // Pages past the last one used are free too (a file grown by a transaction that was aborted).
    const std::uint64_t used_end = (std::uint64_t{info.me_last_pgno} + 1) * st.ms_psize;
    out.free_bytes = pages * st.ms_psize + (out.file_bytes > used_end ? out.file_bytes - used_end : 0);
  }
  if (out.free_bytes < min_free_bytes || out.free_bytes * 2 < out.file_bytes) return out;
  {
    // The copy's data is in its meta page 1 (page 0 describes an empty database), and a process that
    // goes on with the old lock table reads the meta page its last transaction id's parity names:
    // made odd here, that is page 1, should this process die before the table is set up again below.
    MDB_envinfo info{};
    mdb_env_info(old_env.env, &info);
    if (info.me_last_txnid % 2 == 0) {
      Txn w;
      MDB_dbi meta = 0;
      MDB_val k = val(kMetaFormat), v;
      int rc = mdb_txn_begin(old_env.env, nullptr, 0, &w.txn);
      if (!rc) rc = mdb_dbi_open(w.txn, "meta", 0, &meta);
      if (!rc) rc = mdb_get(w.txn, meta, &k, &v);
      std::string same;
      if (!rc) same.assign(static_cast<const char*>(v.mv_data), v.mv_size);
      MDB_val sv = val(same);
      if (!rc) rc = mdb_put(w.txn, meta, &k, &sv, 0);  // the marker written again as it is
      if (!rc) rc = w.commit();
      if (rc) return lmdb_error("preparing the archive's main environment for its compaction", rc);
    }
  }
  if (compaction_hook_for_test) compaction_hook_for_test();
  {
    Fd ffd;
    ffd.fd = ::open(fresh.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (ffd.fd < 0) return make_error(ErrorCode::kIo, "creating " + fresh + ": " + std::strerror(errno));
    if (int rc = mdb_env_copyfd2(old_env.env, ffd.fd, MDB_CP_COMPACT)) {
      fs::remove(fresh, ec);
      return lmdb_error("copying the archive's main environment", rc);
    }
    if (::fsync(ffd.fd) != 0) {
      fs::remove(fresh, ec);
      return make_error(ErrorCode::kIo, "syncing " + fresh + ": " + std::strerror(errno));
    }
  }
  if (::rename(fresh.c_str(), data.c_str()) != 0)
    return make_error(ErrorCode::kIo, "moving " + fresh + " into place: " + std::strerror(errno));
  // Not synced, the rename may be undone by a crash: the old file, which holds the same archive.
  (void)sync_dir(dir);
  if (compaction_renamed_hook_for_test) compaction_renamed_hook_for_test();
  // The lock table still describes the old file (its last transaction id, which picks the meta
  // page a reader starts from). An environment opened now, while this process holds the byte
  // exclusively, is taken by LMDB for the first one and sets the table up from the new file; it then
  // shares the byte, and a process waiting to open the folder goes on with the new file.
  {
    EnvHandle fresh_env;
    MAILARK_TRY(open_env(fresh_env, MDB_RDONLY));
  }
  out.after_bytes = fs::file_size(data, ec);
  return out;
}

}  // namespace mailark
