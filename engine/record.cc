#include "engine/record.h"

#include <cstring>

namespace mailark {
namespace {

constexpr std::uint8_t kRecordVersion = 1;
constexpr std::uint8_t kBlobVersion = 1;
constexpr std::string_view kHashDomain = "mailark-record-v1";

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
  void svarint(std::int64_t v) {
    varint((static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63));
  }
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

}  // namespace

const char* direction_name(Direction d) {
  switch (d) {
    case Direction::kImport:
      return "import";
    case Direction::kInbound:
      return "inbound";
    case Direction::kOutbound:
      return "outbound";
  }
  return "import";
}

Digest record_hash(const Digest& prev_hash, std::uint64_t seq, std::string_view body) {
  Sha256 h;
  h.update(kHashDomain);
  h.update(std::string_view(reinterpret_cast<const char*>(prev_hash.data()), prev_hash.size()));
  char be[8];
  for (int i = 0; i < 8; ++i) be[i] = static_cast<char>(seq >> (56 - 8 * i));
  h.update(std::string_view(be, 8));
  h.update(body);
  return h.finish();
}

std::string encode_record(ArchiveRecord& r) {
  Writer w;
  w.u8(kRecordVersion);
  w.varint(r.seq);
  w.u8(static_cast<std::uint8_t>(r.envelope.direction));
  w.str(r.envelope.mail_from);
  w.varint(r.envelope.rcpt_to.size());
  for (const auto& rcpt : r.envelope.rcpt_to) w.str(rcpt);
  w.str(r.envelope.client);
  w.str(r.envelope.helo);
  w.str(r.envelope.tls);
  w.str(r.envelope.connector);
  w.str(r.envelope.source);
  w.svarint(r.envelope.received_at);
  w.u8(static_cast<std::uint8_t>(r.verdict.kind));
  w.varint(r.verdict.signatures.size());
  for (const auto& s : r.verdict.signatures) w.str(s);
  w.str(r.verdict.reason);
  w.varint(r.flags);
  w.raw(r.content_sha256.data(), 32);
  w.varint(r.raw_size);
  w.svarint(r.archived_at);
  w.raw(r.prev_hash.data(), 32);
  std::string& body = w.out();
  r.hash = record_hash(r.prev_hash, r.seq, body);
  body.append(reinterpret_cast<const char*>(r.hash.data()), 32);
  return std::move(body);
}

Result<ArchiveRecord> decode_record(std::uint64_t seq, std::string_view value) {
  auto corrupt = [&](const char* what) {
    return make_error(ErrorCode::kCorrupt, "record " + std::to_string(seq) + ": " + what);
  };
  if (value.empty()) return corrupt("empty value");
  if (static_cast<std::uint8_t>(value[0]) != kRecordVersion) {
    return make_error(ErrorCode::kUnsupported,
                      "record " + std::to_string(seq) + " has format version " +
                          std::to_string(static_cast<std::uint8_t>(value[0])),
                      "this mailark reads record format 1; upgrade mailark");
  }
  if (value.size() < 1 + 32) return corrupt("too short");
  Reader rd(value.substr(0, value.size() - 32));
  ArchiveRecord r;
  std::uint8_t version, dir, kind;
  std::uint64_t n, flags;
  bool ok = rd.u8(version) && rd.varint(r.seq) && rd.u8(dir) && rd.str(r.envelope.mail_from) &&
            rd.varint(n) && n <= value.size();
  if (!ok) return corrupt("truncated envelope");
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string rcpt;
    if (!rd.str(rcpt)) return corrupt("truncated recipient list");
    r.envelope.rcpt_to.push_back(std::move(rcpt));
  }
  ok = rd.str(r.envelope.client) && rd.str(r.envelope.helo) && rd.str(r.envelope.tls) &&
       rd.str(r.envelope.connector) && rd.str(r.envelope.source) && rd.svarint(r.envelope.received_at) &&
       rd.u8(kind) && rd.varint(n) && n <= value.size();
  if (!ok || dir > 2 || kind > 2) return corrupt("bad envelope or verdict");
  r.envelope.direction = static_cast<Direction>(dir);
  r.verdict.kind = static_cast<scanner::VerdictKind>(kind);
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string sig;
    if (!rd.str(sig)) return corrupt("truncated signature list");
    r.verdict.signatures.push_back(std::move(sig));
  }
  ok = rd.str(r.verdict.reason) && rd.varint(flags) && rd.raw(r.content_sha256.data(), 32) &&
       rd.varint(r.raw_size) && rd.svarint(r.archived_at) && rd.raw(r.prev_hash.data(), 32);
  if (!ok) return corrupt("truncated body");
  if (rd.pos() != value.size() - 32) return corrupt("trailing bytes");
  r.flags = static_cast<std::uint32_t>(flags);
  std::memcpy(r.hash.data(), value.data() + value.size() - 32, 32);
  return r;
}

std::string encode_blob(std::uint32_t dict_id, std::uint64_t raw_size, std::string_view frame) {
  std::string v;
  v.reserve(13 + frame.size());
  v.push_back(static_cast<char>(kBlobVersion));
  for (int i = 0; i < 4; ++i) v.push_back(static_cast<char>(dict_id >> (8 * i)));
  for (int i = 0; i < 8; ++i) v.push_back(static_cast<char>(raw_size >> (8 * i)));
  v.append(frame);
  return v;
}

Result<BlobHeader> decode_blob(std::string_view value) {
  if (value.size() < 13) return make_error(ErrorCode::kCorrupt, "blob shorter than its header");
  if (static_cast<std::uint8_t>(value[0]) != kBlobVersion) {
    return make_error(ErrorCode::kUnsupported,
                      "blob format version " + std::to_string(static_cast<std::uint8_t>(value[0])));
  }
  BlobHeader h;
  for (int i = 0; i < 4; ++i)
    h.dict_id |= static_cast<std::uint32_t>(static_cast<std::uint8_t>(value[1 + i])) << (8 * i);
  for (int i = 0; i < 8; ++i)
    h.raw_size |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(value[5 + i])) << (8 * i);
  h.frame = value.substr(13);
  return h;
}

}  // namespace mailark
