// Small pieces shared by the two LMDB translation points, engine/archive.cc (the append-only archive)
// and engine/mailbox.cc (the mutable mailbox state): a transaction guard, value views and big-endian
// keys (so LMDB's byte order is numeric order). Internal to engine/; include only from those files.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/encoding.h"

namespace mailark::lmdb {

struct Txn {
  MDB_txn* txn = nullptr;
  ~Txn() {
    if (txn) mdb_txn_abort(txn);
  }
  int commit() {
    int rc = mdb_txn_commit(txn);
    txn = nullptr;
    return rc;
  }
};

inline MDB_val val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}
inline std::string_view view(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

// Every entry of `dbi` in key order, in `txn`: each(key, value) returns true to go on, false to stop.
// Returns 0 when every entry was seen or `each` stopped the walk, else LMDB's error (opening the
// cursor or reading). The cursor is closed however the walk ends.
template <typename Each>
int walk(MDB_txn* txn, MDB_dbi dbi, Each&& each) {
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn, dbi, &cur)) return rc;
  MDB_val k, v;
  int rc;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (!each(view(k), view(v))) {
      rc = MDB_NOTFOUND;
      break;
    }
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

inline std::string be64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (56 - 8 * i));
  return s;
}
inline std::uint64_t from_be64(std::string_view s) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | static_cast<std::uint8_t>(s[i]);
  return v;
}
using mailark::be32;
inline std::uint32_t from_be32(std::string_view s) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | static_cast<std::uint8_t>(s[i]);
  return v;
}

}  // namespace mailark::lmdb
