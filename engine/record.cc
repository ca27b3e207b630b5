#include "engine/record.h"

#include "common/ascii.h"
#include "common/encoding.h"

#include <algorithm>
#include <cstring>

namespace mailark {
namespace {

constexpr std::uint8_t kRecordV1 = 1;
constexpr std::uint8_t kRecordV2 = 2;  // with custodian and folder
constexpr std::uint8_t kBlobVersion = 1;
constexpr std::string_view kHashDomain = "mailark-record-v1";

}  // namespace

const char* direction_name(Direction d) {
  switch (d) {
    case Direction::kImport:
      return "import";
    case Direction::kInbound:
      return "inbound";
    case Direction::kOutbound:
      return "outbound";
    case Direction::kProbe:
      return "probe";
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
  const bool v2 = !r.envelope.custodian.empty() || !r.envelope.folder.empty();
  w.u8(v2 ? kRecordV2 : kRecordV1);
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
  if (v2) {
    w.str(r.envelope.custodian);
    w.str(r.envelope.folder);
  }
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
  const auto version_byte = static_cast<std::uint8_t>(value[0]);
  if (version_byte != kRecordV1 && version_byte != kRecordV2) {
    return make_error(ErrorCode::kUnsupported,
                      "record " + std::to_string(seq) + " has format version " + std::to_string(version_byte),
                      "this mailark reads record formats 1 and 2; upgrade mailark");
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
       rd.str(r.envelope.connector) && rd.str(r.envelope.source) &&
       (version_byte == kRecordV1 || (rd.str(r.envelope.custodian) && rd.str(r.envelope.folder))) &&
       rd.svarint(r.envelope.received_at) &&
       rd.u8(kind) && rd.varint(n) && n <= value.size();
  if (!ok || dir > 3 || kind > 3) return corrupt("bad envelope or verdict");  // 4 (a temporary error) is never stored
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

Result<std::string> check_custodian(std::string c) {
  while (!c.empty() && (c.back() == ' ' || c.back() == '\t')) c.pop_back();
  std::size_t lead = c.find_first_not_of(" \t");
  c.erase(0, lead == std::string::npos ? c.size() : lead);
  if (c.empty()) return make_error(ErrorCode::kInvalidArgument, "a custodian is empty");
  if (c.size() > 200)
    return make_error(ErrorCode::kInvalidArgument, "a custodian is longer than 200 bytes", "use a shorter name or an address");
  for (unsigned char ch : c)
    if (ch < 0x20 || ch == 0x7f) return make_error(ErrorCode::kInvalidArgument, "a custodian holds a control character");
  return c;
}

std::vector<std::string> custodians_of(const ArchiveRecord& r) {
  const Envelope& e = r.envelope;
  if (!e.custodian.empty()) return {e.custodian};
  std::vector<std::string> out;
  auto add = [&](const std::string& a) {
    if (a.empty()) return;
    std::string low = ascii_lower(a);
    if (std::find(out.begin(), out.end(), low) == out.end()) out.push_back(std::move(low));
  };
  switch (e.direction) {
    case Direction::kInbound:
      for (const auto& a : e.rcpt_to) add(a);
      break;
    case Direction::kOutbound:
      add(e.mail_from);
      if (is_internal_copy(e))
        for (const auto& a : e.rcpt_to) add(a);
      break;
    case Direction::kImport:
    case Direction::kProbe:
      break;
  }
  return out;
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
