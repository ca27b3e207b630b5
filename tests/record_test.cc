#include "engine/record.h"

#include <gtest/gtest.h>

#include "common/sha256.h"
#include "common/unicode_form.h"
#include "common/utf8.h"

namespace mailark {
namespace {

ArchiveRecord sample() {
  ArchiveRecord r;
  r.seq = 42;
  r.envelope.direction = Direction::kInbound;
  r.envelope.mail_from = "alice@example.com";
  r.envelope.rcpt_to = {"bob@example.com", "carol@example.com"};
  r.envelope.client = "192.0.2.7";
  r.envelope.helo = "mx.example.com";
  r.envelope.tls = "TLSv1.3 TLS_AES_256_GCM_SHA384";
  r.envelope.connector = "inbound";
  r.envelope.received_at = 1700000000;
  r.verdict.kind = scanner::VerdictKind::kInfected;
  r.verdict.signatures = {"Eicar-Test-Signature"};
  r.flags = kFlagQuarantined;
  r.content_sha256 = sha256("message bytes");
  r.raw_size = 13;
  r.archived_at = 1700000001;
  r.prev_hash = sha256("previous");
  return r;
}

// SHA-256 (common/sha256.cc, OpenSSL's own implementation without its EVP start-up): the FIPS 180-2
// examples, and the same digest whether fed at once or in pieces of every size.
TEST(Utf8, InvalidBytesBecomeReplacementCharacters) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x93\xA7"), "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x93\xA7");
  EXPECT_EQ(valid_utf8("caf\xE9"), "caf" + r);                    // Latin-1
  EXPECT_EQ(valid_utf8("\xC0\xAF"), r + r);                       // overlong '/'
  EXPECT_EQ(valid_utf8("\xED\xA0\x80"), r + r + r);               // a surrogate
  EXPECT_EQ(valid_utf8("\xF4\x90\x80\x80"), r + r + r + r);       // past U+10FFFF
  EXPECT_EQ(valid_utf8("\xE2\x82"), r + r);                       // cut short at the end
  EXPECT_EQ(valid_utf8("\xE2\x82x"), r + r + "x");                // cut short before ASCII
  EXPECT_EQ(valid_utf8("\x80\xBF"), r + r);                       // continuation bytes alone
  EXPECT_EQ(valid_utf8(std::string("a\0b", 3)), std::string("a\0b", 3));
}

// IMAP SEARCH's substring match (common/unicode_form.h contains_folded): ASCII without case as before;
// any other letter in the case-folded compatibility form.
TEST(UnicodeForm, SubstringsWithoutCaseOrForm) {
  EXPECT_TRUE(contains_folded("Hello World", "WORLD"));
  EXPECT_FALSE(contains_folded("Hello World", "worlds"));
  EXPECT_TRUE(contains_folded("anything", ""));
  EXPECT_TRUE(contains_folded("Herr M\xC3\xBCller", "M\xC3\x9CLLER")) << "upper-case umlaut";
  EXPECT_TRUE(contains_folded("my Re\xCC\x81sume\xCC\x81", "r\xC3\xA9sum\xC3\xA9")) << "decomposed in the text";
  EXPECT_TRUE(contains_folded("my R\xC3\xA9sum\xC3\xA9", "re\xCC\x81sume\xCC\x81")) << "decomposed in the key";
  EXPECT_TRUE(contains_folded("Price \xEF\xBC\xB0\xEF\xBC\xA3\xEF\xBC\x91", "pc1")) << "full-width in the text";
  EXPECT_TRUE(contains_folded("Stra\xC3\x9F" "e", "STRASSE")) << "sharp s folds to ss";
  EXPECT_FALSE(contains_folded("M\xC3\xBCller", "muller")) << "accents are letters";
  EXPECT_FALSE(contains_folded("caf\xC3\xA9", "cafe\xCC\x81s"));
  EXPECT_EQ(compatibility_form("\xEF\xAC\x81"), "fi");
  EXPECT_EQ(compatibility_form("plain"), "plain");
}

TEST(Sha256, KnownAnswersAndPiecesGiveTheSameDigest) {
  EXPECT_EQ(to_hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(to_hex(sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(to_hex(sha256(million)), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  for (std::size_t piece : {1u, 63u, 64u, 65u, 4096u, 999999u}) {
    Sha256 h;
    for (std::size_t at = 0; at < million.size(); at += piece) h.update(std::string_view(million).substr(at, piece));
    EXPECT_EQ(h.finish(), sha256(million)) << piece;
  }
}

TEST(RecordFormat, EncodedRecordDecodesToTheSameFields) {
  ArchiveRecord r = sample();
  std::string value = encode_record(r);
  auto back = decode_record(42, value);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(back->envelope.rcpt_to, r.envelope.rcpt_to);
  EXPECT_EQ(back->envelope.tls, r.envelope.tls);
  EXPECT_EQ(back->envelope.received_at, 1700000000);
  EXPECT_EQ(back->verdict.kind, scanner::VerdictKind::kInfected);
  EXPECT_EQ(back->verdict.signatures, r.verdict.signatures);
  EXPECT_EQ(back->flags, kFlagQuarantined);
  EXPECT_EQ(back->content_sha256, r.content_sha256);
  EXPECT_EQ(back->prev_hash, r.prev_hash);
  EXPECT_EQ(back->hash, r.hash);
}

TEST(RecordFormat, HashCoversEveryByteOfTheBody) {
  ArchiveRecord r = sample();
  std::string value = encode_record(r);
  std::string_view body(value.data(), value.size() - 32);
  for (std::size_t i = 0; i < body.size(); ++i) {
    std::string changed(body);
    changed[i] ^= 0x01;
    EXPECT_NE(record_hash(r.prev_hash, 42, changed), r.hash) << "byte " << i;
  }
  EXPECT_NE(record_hash(r.prev_hash, 43, body), r.hash) << "the key is part of the hash";
  EXPECT_NE(record_hash(sha256("other"), 42, body), r.hash) << "the predecessor is part of the hash";
}

TEST(RecordFormat, ACustodiansRecordIsVersionTwoAndOthersStayVersionOne) {
  ArchiveRecord r = sample();
  std::string v1 = encode_record(r);
  EXPECT_EQ(v1[0], 1) << "no custodian, no folder: v1, as every earlier release wrote";
  r.envelope.custodian = "Jeff Skilling";
  r.envelope.folder = "Top of Personal Folders/Inbox";
  std::string v2 = encode_record(r);
  EXPECT_EQ(v2[0], 2);
  EXPECT_EQ(v2.size(), v1.size() + 2 + r.envelope.custodian.size() + r.envelope.folder.size());
  auto back = decode_record(42, v2);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(back->envelope.custodian, "Jeff Skilling");
  EXPECT_EQ(back->envelope.folder, "Top of Personal Folders/Inbox");
  EXPECT_EQ(back->envelope.source, r.envelope.source);
  EXPECT_EQ(back->archived_at, r.archived_at);
  EXPECT_EQ(back->hash, record_hash(r.prev_hash, 42, std::string_view(v2).substr(0, v2.size() - 32)));
  // Every truncation of a v2 record is refused.
  for (std::size_t n = 0; n < v2.size(); ++n) EXPECT_FALSE(decode_record(42, v2.substr(0, n)).ok()) << n;
}

TEST(RecordFormat, UnknownVersionIsUnsupportedNotCorrupt) {
  ArchiveRecord r = sample();
  std::string value = encode_record(r);
  value[0] = 9;
  auto back = decode_record(42, value);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.error().code, ErrorCode::kUnsupported);
}

TEST(RecordFormat, TruncatedValueIsCorrupt) {
  ArchiveRecord r = sample();
  std::string value = encode_record(r);
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{10}, value.size() - 33}) {
    auto back = decode_record(42, value.substr(0, n));
    ASSERT_FALSE(back.ok()) << n;
    EXPECT_EQ(back.error().code, ErrorCode::kCorrupt);
  }
}

TEST(BlobFormat, HeaderRoundTripsAndShortBlobIsCorrupt) {
  std::string v = encode_blob(7, 123456789012ull, "frame-bytes");
  auto h = decode_blob(v);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->dict_id, 7u);
  EXPECT_EQ(h->raw_size, 123456789012ull);
  EXPECT_EQ(h->frame, "frame-bytes");
  EXPECT_FALSE(decode_blob(v.substr(0, 5)).ok());
}

}  // namespace
}  // namespace mailark
