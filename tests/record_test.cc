#include "engine/record.h"

#include <gtest/gtest.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <vector>

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

// The code points compatibility_form takes as already in the form without asking libunistring
// (scripts/unicode_stable.py) are: each alone, with canonical combining class 0, and in any sequence
// of them and ASCII (random texts); and the texts the index meets most often are skipped.
TEST(UnicodeForm, StableRangesAreStable) {
  auto form = [](const std::u32string& cps) {
    std::string utf8;
    for (char32_t c : cps) {
      std::uint8_t buf[6];
      const int n = u8_uctomb(buf, c, sizeof buf);
      utf8.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
    }
    std::size_t length = 0;
    std::uint8_t* r = u8_normalize(UNINORM_NFKC, reinterpret_cast<const std::uint8_t*>(utf8.data()), utf8.size(),
                                   nullptr, &length);
    std::string out(reinterpret_cast<const char*>(r), length);
    std::free(r);
    return std::make_pair(utf8, out);
  };
  std::vector<char32_t> stable;
  for (char32_t c = 0x80; c < 0x30000; ++c) {
    if (!stable_code_point(c) || c == 0x0E33 || c == 0x0EB3) continue;  // Thai and Lao AM: kept, though not stable
    stable.push_back(c);
    const auto [in, out] = form({c});
    ASSERT_EQ(in, out) << std::hex << "U+" << static_cast<unsigned>(c);
    ASSERT_EQ(uc_combining_class(c), 0) << std::hex << "U+" << static_cast<unsigned>(c);
  }
  EXPECT_GT(stable.size(), 40000u);
  std::mt19937 rng(7);
  for (int k = 0; k < 20000; ++k) {
    std::u32string text;
    for (int n = 1 + static_cast<int>(rng() % 6); n > 0; --n)
      text += rng() % 4 == 0 ? static_cast<char32_t>(0x20 + rng() % 0x5F) : stable[rng() % stable.size()];
    const auto [in, out] = form(text);
    ASSERT_EQ(in, out);
  }
  for (const char* t : {"Sehr geehrte Frau M\xC3\xBCller, Gr\xC3\xB6\xC3\x9F" "e", "caf\xC3\xA9 \xE2\x80\x9Cquoted\xE2\x80\x9D \xE2\x80\x94 it\xE2\x80\x99s",
                        "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82", "\xE5\x85\xA8\xE6\x96\xB0\xE3\x80\x82", "\xEC\x9A\x94\xEC\xA6\x98"}) {
    std::string out;
    EXPECT_FALSE(compatibility_form(t, out)) << t;
  }
  EXPECT_TRUE(stable_code_point(0x4E00));
  EXPECT_FALSE(stable_code_point(0xFF21)) << "full-width A";
  EXPECT_FALSE(stable_code_point(0x0301)) << "a combining mark";
  EXPECT_FALSE(stable_code_point(0x00A0)) << "no-break space";
  EXPECT_FALSE(stable_code_point(0x1161)) << "a Hangul vowel jamo (composes with the letter before)";
}

// compatibility_form works piece by piece (ASCII and stable code points left, full-width ASCII
// twins mapped, the rest to u8_normalize): the result is u8_normalize's of the whole text, for random
// texts of letters, marks that compose with the letter before, Hangul jamo, full-width and
// half-width forms, compatibility letters, any code point and bytes that are not UTF-8.
TEST(UnicodeForm, PiecesAreTheWholeTextsForm) {
  std::mt19937 rng(11);
  auto pick = [&](char32_t lo, char32_t hi) { return static_cast<char32_t>(lo + rng() % (hi - lo + 1)); };
  const std::vector<char32_t> special = {0x00A0, 0x00C5, 0x212B, 0x2126, 0x0344, 0x0F73, 0x1E9B, 0x00B5, 0x2460,
                                         0xFB01, 0x3099, 0x309A, 0x0323, 0x0301, 0x1100, 0x1161, 0x11A8, 0xAC00,
                                         0x304B, 0x30AB, 0xFF76, 0xFF9E, 0xFF21, 0xFF0C, 0x3000, 0x00E9, 0x0065,
                                         0x0E33, 0x0EB3, 0x0E49, 0x0E19, 0x0E4D, 0x0E32};
  auto whole_form = [](const std::string& t) {  // u8_normalize of the parts between Thai and Lao AM, kept
    std::string out;
    std::size_t from = 0;
    for (;;) {
      std::size_t am = std::min(t.find("\xE0\xB8\xB3", from), t.find("\xE0\xBA\xB3", from));
      const std::string part = t.substr(from, am == std::string::npos ? std::string::npos : am - from);
      std::size_t length = 0;
      std::uint8_t* r = u8_normalize(UNINORM_NFKC, reinterpret_cast<const std::uint8_t*>(part.data()), part.size(), nullptr, &length);
      out.append(reinterpret_cast<const char*>(r), length);
      std::free(r);
      if (am == std::string::npos) return out;
      out += t.substr(am, 3);
      from = am + 3;
    }
  };
  for (int k = 0; k < 200000; ++k) {
    std::string text;
    for (int n = 1 + static_cast<int>(rng() % 10); n > 0; --n) {
      char32_t c = 0;
      switch (rng() % 10) {
        case 0: c = pick(0x20, 0x7E); break;
        case 1: c = pick(0xFF01, 0xFF9F); break;
        case 2: c = pick(0x0300, 0x036F); break;
        case 3: c = pick(0x1100, 0x11FF); break;
        case 4: c = pick(0xAC00, 0xD7A3); break;
        case 5: c = pick(0x00A0, 0x024F); break;
        case 6: c = special[rng() % special.size()]; break;
        case 7: c = pick(0x3000, 0x30FF); break;
        case 8: do c = pick(0x80, 0x2FFFF); while (c >= 0xD800 && c <= 0xDFFF); break;
        default:
          if (rng() % 20 == 0) {
            text += static_cast<char>(0x80 + rng() % 0x80);  // a byte that is not UTF-8 here
            continue;
          }
          c = pick(0x4E00, 0x9FFF);
      }
      std::uint8_t buf[6];
      text.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(u8_uctomb(buf, c, sizeof buf)));
    }
    std::string out;
    const bool changed = compatibility_form(text, out);
    const std::string expected = whole_form(text);
    ASSERT_EQ(changed ? out : text, expected) << "text of " << text.size() << " bytes, case " << k;
    ASSERT_EQ(changed, expected != text);
  }
}

// The form the index reads words in: the compatibility form, soft hyphens dropped, the sharp s as ss.
TEST(UnicodeForm, SearchFormDropsSoftHyphensAndWritesSharpSAsSs) {
  EXPECT_EQ(search_form("Ver\xC2\xAD" "sicherungs\xC2\xAD" "gesellschaft"), "Versicherungsgesellschaft");
  EXPECT_EQ(search_form("Stra\xC3\x9F" "e"), "Strasse");
  EXPECT_EQ(search_form("GRO\xE1\xBA\x9E"), "GROSS");
  EXPECT_EQ(search_form("\xEF\xBC\xB3tra\xC3\x9F" "e\xC2\xAD"), "Strasse") << "with the compatibility form";
  // "οδός" (final sigma) and "ΟΔΌΣ", which the index lower-cases with the sigma: one word.
  EXPECT_EQ(search_form("\xCE\xBF\xCE\xB4\xCF\x8C\xCF\x82"), "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x83") << "the final sigma as the sigma (and without the tonos)";
  EXPECT_TRUE(contains_folded("\xCE\x9F\xCE\x94\xCE\x8C\xCE\xA3", "\xCE\xBF\xCE\xB4\xCF\x8C\xCF\x82")) << "IMAP SEARCH: ΟΔΌΣ holds οδός";
  std::string out;
  EXPECT_FALSE(search_form("plain text", out));
  EXPECT_FALSE(search_form("Muller", out));
  EXPECT_TRUE(contains_folded("Ver\xC2\xAD" "sicherung", "VERSICHERUNG")) << "IMAP SEARCH sets soft hyphens aside";
}

// Latin and Greek letters are read without their marks, so a word typed without its accents finds it
// written with them and the other way round (common/unicode_form.h search_form).
TEST(UnicodeForm, SearchFormSetsMarksAside) {
  EXPECT_EQ(search_form("Résumé"), "Resume");
  EXPECT_EQ(search_form("Re\xCC\x81sume\xCC\x81"), "Resume") << "decomposed";
  EXPECT_EQ(search_form("MÜLLER Müller"), "MULLER Muller");
  EXPECT_EQ(search_form("Ça va, señor? Ångström, Dvořák, Łódź"), "Ca va, senor? Angstrom, Dvorak, Lodz");
  EXPECT_EQ(search_form("Đồng Søren"), "Dong Soren") << "letters with a stroke, as written without marks";
  EXPECT_EQ(search_form("Tiếng Việt có dấu"), "Tieng Viet co dau") << "Vietnamese: two marks on a letter";
  EXPECT_EQ(search_form("Ελληνικά ΆΈΉ ΐ"), "Ελληνικα ΑΕΗ ι");
  EXPECT_EQ(search_form("ёлка Ёлка"), "елка Елка") << "Russian ё";
  EXPECT_EQ(search_form("q\xCC\x83"), "q") << "a combining mark without a precomposed letter";
  std::string out;
  EXPECT_EQ(search_form("עִבְרִית"), "עברית") << "Hebrew points";
  EXPECT_EQ(search_form("كِتَابٌ كـتاب"), "كتاب كتاب") << "Arabic harakat and tatweel";
  EXPECT_EQ(search_form("أحمد إسلام آمن مدرسة على"), "احمد اسلام امن مدرسه علي") << "alef forms, teh marbuta, alef maksura";
  EXPECT_EQ(search_form("ؤ ئ پ"), "ؤ ئ پ") << "waw and yeh with hamza, Persian letters: kept";
  for (const char* kept : {"йод Київ", "हिन्दी", "ภาษาไทย", "中文", "ø æ œ ı ß"}) {
    if (std::string_view(kept) == "ø æ œ ı ß") {
      EXPECT_EQ(search_form(kept), "o æ œ ı ss");
      continue;
    }
    EXPECT_FALSE(search_form(kept, out)) << kept << ": other scripts' marks, and Cyrillic й and ї, are kept";
  }
  // Every Latin and Greek letter of U+00C0..U+1FFF, alone, comes out with no letter that Unicode
  // writes as a letter and nonspacing marks, and no combining mark of U+0300..U+036F.
  for (char32_t cp = 0xC0; cp < 0x2000; ++cp) {
    const uc_script_t* script = uc_script(cp);
    if (script == nullptr || (std::string_view(script->name) != "Latin" && std::string_view(script->name) != "Greek")) continue;
    if (!uc_is_general_category(cp, UC_CATEGORY_L)) continue;
    std::uint8_t bytes[8];
    const int n = u8_uctomb(bytes, cp, sizeof bytes);
    ASSERT_GT(n, 0);
    const std::string form = search_form(std::string(reinterpret_cast<const char*>(bytes), n));
    const auto* p = reinterpret_cast<const std::uint8_t*>(form.data());
    const auto* end = p + form.size();
    while (p < end) {
      ucs4_t c = 0;
      const int len = u8_mbtoucr(&c, p, end - p);
      ASSERT_GT(len, 0);
      p += len;
      EXPECT_FALSE(c >= 0x300 && c <= 0x36F) << std::hex << "U+" << static_cast<std::uint32_t>(cp);
      ucs4_t d[UC_DECOMPOSITION_MAX_LENGTH];
      const int parts = uc_canonical_decomposition(c, d);
      bool marked = parts > 1;
      for (int i = 1; i < parts; ++i) marked = marked && uc_is_general_category(d[i], UC_CATEGORY_Mn);
      EXPECT_FALSE(marked) << std::hex << "U+" << static_cast<std::uint32_t>(cp) << " leaves U+" << c;
    }
  }
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
  EXPECT_TRUE(contains_folded("M\xC3\xBCller", "muller")) << "marks set aside, as the index sets them";
  EXPECT_TRUE(contains_folded("Muller", "M\xC3\x9CLLER"));
  EXPECT_TRUE(contains_folded("\xC4\xB0stanbul", "istanbul")) << "the Turkish dotted capital I folds to i and a dot, then i";
  EXPECT_TRUE(contains_folded("\xC5\x81\xC3\xB3" "d\xC5\xBA", "lodz")) << "Łódź, as Polish writes it without marks";
  EXPECT_FALSE(contains_folded("\xC3\xA6" "ble", "aeble")) << "æ is a letter";
  EXPECT_TRUE(contains_folded("الكِتَابُ في المدرسة", "كتاب")) << "Arabic without harakat";
  EXPECT_TRUE(contains_folded("אני לומד עברית", "עִבְרִית")) << "Hebrew typed with points";
  EXPECT_FALSE(contains_folded("caf\xC3\xA9", "cafe\xCC\x81s"));
  EXPECT_EQ(compatibility_form("\xEF\xAC\x81"), "fi");
  EXPECT_EQ(compatibility_form("\xE0\xB8\x99\xE0\xB9\x89\xE0\xB8\xB3"), "\xE0\xB8\x99\xE0\xB9\x89\xE0\xB8\xB3") << "Thai AM kept";
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
