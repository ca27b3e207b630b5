// Bounded binary encoding for mailark's on-disk values (records, queue entries): LEB128 varints,
// zigzag for signed values, length-prefixed strings. The Reader never reads past its input; every
// method returns false instead.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace mailark {

// A 32-bit number in 4 big-endian bytes (LMDB keys that sort as numbers, key ids, frame lengths).
inline std::string be32(std::uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (24 - 8 * i));
  return s;
}

class Writer {
 public:
  void u8(std::uint8_t v) { s_.push_back(static_cast<char>(v)); }
  void varint(std::uint64_t v) {
    while (v >= 0x80) {
      s_.push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    s_.push_back(static_cast<char>(v));
  }
  void svarint(std::int64_t v) { varint((static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63)); }
  void str(std::string_view v) {
    varint(v.size());
    s_.append(v);
  }
  void raw(const void* p, std::size_t n) { s_.append(static_cast<const char*>(p), n); }
  std::string& out() { return s_; }

 private:
  std::string s_;
};

class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool u8(std::uint8_t& v) {
    if (pos_ >= s_.size()) return false;
    v = static_cast<std::uint8_t>(s_[pos_++]);
    return true;
  }
  bool varint(std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      std::uint8_t b;
      if (!u8(b)) return false;
      v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  bool svarint(std::int64_t& v) {
    std::uint64_t u;
    if (!varint(u)) return false;
    v = static_cast<std::int64_t>(u >> 1) ^ -static_cast<std::int64_t>(u & 1);
    return true;
  }
  bool str(std::string& v) {
    std::uint64_t n;
    if (!varint(n) || n > s_.size() - pos_) return false;
    v.assign(s_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  bool raw(void* p, std::size_t n) {
    if (n > s_.size() - pos_) return false;
    std::memcpy(p, s_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  std::size_t pos() const { return pos_; }

 private:
  std::string_view s_;
  std::size_t pos_ = 0;
};

}  // namespace mailark
