#include "scanner/scanner.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <random>

#include "scanner/logical_split.h"
#include "tests/test_util.h"

namespace mailark::scanner {
namespace {

// One engine for the whole suite: loading signatures is the expensive part, as in production.
const ScanEngine& engine() {
  static std::shared_ptr<const ScanEngine> e = [] {
    ScannerConfig cfg;
    cfg.signature_dirs = {test::signature_dir()};
    auto r = ScanEngine::load(cfg);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return std::move(r).value();
  }();
  return *e;
}

// A stored (uncompressed) zip holding one file, written by hand so the test needs no zip tool.
std::string stored_zip(const std::string& name, const std::string& data, unsigned flags = 0) {
  auto crc32 = [](const std::string& s) {
    std::uint32_t c = 0xFFFFFFFF;
    for (unsigned char b : s) {
      c ^= b;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320 & (0 - (c & 1)));
    }
    return ~c;
  };
  auto le16 = [](std::string& o, unsigned v) { o += {char(v & 255), char(v >> 8 & 255)}; };
  auto le32 = [](std::string& o, std::uint32_t v) {
    o += {char(v & 255), char(v >> 8 & 255), char(v >> 16 & 255), char(v >> 24 & 255)};
  };
  std::uint32_t crc = crc32(data);
  std::string z;
  le32(z, 0x04034b50);
  le16(z, 10);
  le16(z, flags);
  le16(z, 0);
  le16(z, 0);
  le16(z, 0);
  le32(z, crc);
  le32(z, data.size());
  le32(z, data.size());
  le16(z, name.size());
  le16(z, 0);
  z += name + data;
  std::uint32_t cd_offset = z.size();
  le32(z, 0x02014b50);
  le16(z, 20);
  le16(z, 10);
  le16(z, flags);
  le16(z, 0);
  le16(z, 0);
  le16(z, 0);
  le32(z, crc);
  le32(z, data.size());
  le32(z, data.size());
  le16(z, name.size());
  le16(z, 0);
  le16(z, 0);
  le16(z, 0);
  le16(z, 0);
  le32(z, 0);
  le32(z, 0);
  z += name;
  std::uint32_t cd_size = z.size() - cd_offset;
  le32(z, 0x06054b50);
  le16(z, 0);
  le16(z, 0);
  le16(z, 1);
  le16(z, 1);
  le32(z, cd_size);
  le32(z, cd_offset);
  le16(z, 0);
  return z;
}

TEST(Scanner, EicarInABase64AttachmentIsInfected) {
  auto v = engine().scan(test::make_message("eicar", "see attached", "eicar.com", test::kEicar));
  EXPECT_EQ(v.kind, VerdictKind::kInfected);
  ASSERT_EQ(v.signatures.size(), 1u);
  EXPECT_NE(v.signatures[0].find("EICAR"), std::string::npos) << v.signatures[0];
}

TEST(Scanner, EicarInAZipAttachmentIsInfected) {
  auto v = engine().scan(
      test::make_message("zip", "see attached", "eicar.zip", stored_zip("eicar.com", test::kEicar)));
  EXPECT_EQ(v.kind, VerdictKind::kInfected);
}

TEST(Scanner, EicarInAForwardedMessageIsInfected) {
  std::string inner = test::make_message("inner", "see attached", "eicar.com", test::kEicar);
  std::string outer =
      "From: a@example.com\nSubject: fwd\nMIME-Version: 1.0\n"
      "Content-Type: multipart/mixed; boundary=OUT\n\n--OUT\nContent-Type: text/plain\n\nfyi\n"
      "--OUT\nContent-Type: message/rfc822\n\n" +
      inner + "\n--OUT--\n";
  EXPECT_EQ(engine().scan(outer).kind, VerdictKind::kInfected);
}

TEST(Scanner, CleanMessageIsClean) {
  auto v = engine().scan(test::make_message("hello", "nothing to see here"));
  EXPECT_EQ(v.kind, VerdictKind::kClean);
  EXPECT_TRUE(v.signatures.empty());
}

TEST(Scanner, EveryClamavTestfilePayloadIsInfected) {
  const std::string dir = "/usr/share/clamav-testfiles";
  if (!std::filesystem::is_directory(dir)) GTEST_SKIP() << "Debian package clamav-testfiles is not installed";
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    std::string payload = test::read_file(e.path().string());
    std::string name = e.path().filename().string();
    auto v = engine().scan(test::make_message("testfile " + name, "payload attached", name, payload));
    EXPECT_EQ(v.kind, VerdictKind::kInfected) << name << ": " << v.reason;
    ++files;
  }
  EXPECT_GT(files, 30);
}

// A scan engine with some limits changed, for the limit tests.
std::shared_ptr<const ScanEngine> engine_with(const std::function<void(ScannerConfig&)>& change) {
  ScannerConfig cfg;
  cfg.signature_dirs = {test::signature_dir()};
  change(cfg);
  auto e = ScanEngine::load(cfg);
  EXPECT_TRUE(e.ok()) << (e.ok() ? "" : e.error().to_string());
  return std::move(e).value();
}

std::string zip_message(const std::string& zip) { return test::make_message("zip", "see attached", "a.zip", zip); }

void expect_unscannable(const ScanVerdict& v, Unscannable why) {
  EXPECT_EQ(v.kind, VerdictKind::kUnscannable) << verdict_name(v.kind) << " " << v.reason;
  EXPECT_EQ(v.why, why) << v.reason;
  EXPECT_EQ(v.reason.rfind(std::string(unscannable_name(why)) + ": ", 0), 0u) << v.reason;
}

TEST(Scanner, FileLargerThanTheFileLimitIsUnscannableNeverClean) {
  auto small = engine_with([](ScannerConfig& c) { c.max_file_bytes = 20000; });
  // An attachment over the limit inside a message under it.
  std::string msg = test::make_message("big", "x", "big.bin", std::string(40000, 'b'));
  ASSERT_GT(msg.size(), 20000u);
  expect_unscannable(small->scan(msg), Unscannable::kLimit);
  auto tiny = engine_with([](ScannerConfig& c) { c.max_file_bytes = 30000; });
  expect_unscannable(tiny->scan(test::make_message("att", "x", "big.bin", std::string(35000, 'c'))), Unscannable::kLimit);
}

TEST(Scanner, MoreThanTheScanSizeLimitIsUnscannableNeverClean) {
  auto small = engine_with([](ScannerConfig& c) { c.max_scan_bytes = 1u << 20; });
  std::string zip = stored_zip("zeros.bin", std::string(3u << 20, '\0'));
  expect_unscannable(small->scan(zip_message(zip)), Unscannable::kLimit);
}

TEST(Scanner, DecompressionBombIsUnscannableNeverClean) {
  // A deflated megabytes-of-zeros file: tiny on the wire, past the scan limits when expanded.
  const std::string dir = test::signature_dir();
  test::ScratchDir tmp;
  test::write_file(tmp / "zeros.bin", std::string(20u << 20, '\0'));
  ASSERT_EQ(std::system(("cd " + tmp.path() + " && zip -q -9 bomb.zip zeros.bin").c_str()), 0) << "needs the zip tool";
  std::string zip = test::read_file(tmp / "bomb.zip");
  ASSERT_LT(zip.size(), 100000u);
  auto small = engine_with([](ScannerConfig& c) {
    c.max_scan_bytes = 4u << 20;
    c.max_file_bytes = 4u << 20;
  });
  expect_unscannable(small->scan(zip_message(zip)), Unscannable::kLimit);
}

TEST(Scanner, NestingDeeperThanTheRecursionLimitIsUnscannableNeverClean) {
  std::string inner = "harmless text\n";
  for (int depth = 0; depth < 6; ++depth) inner = stored_zip("level" + std::to_string(depth) + ".zip", inner);
  auto shallow = engine_with([](ScannerConfig& c) { c.max_recursion = 3; });
  expect_unscannable(shallow->scan(zip_message(inner)), Unscannable::kLimit);
  EXPECT_EQ(engine().scan(zip_message(inner)).kind, VerdictKind::kClean) << "within the default limit it is clean";
}

TEST(Scanner, MoreFilesThanTheFileCountLimitIsUnscannableNeverClean) {
  const std::string dir = test::signature_dir();
  test::ScratchDir tmp;
  std::string files;
  for (int i = 0; i < 30; ++i) {
    test::write_file(tmp / ("f" + std::to_string(i) + ".txt"), "file " + std::to_string(i) + "\n");
    files += " f" + std::to_string(i) + ".txt";
  }
  ASSERT_EQ(std::system(("cd " + tmp.path() + " && zip -q many.zip" + files).c_str()), 0) << "needs the zip tool";
  auto few = engine_with([](ScannerConfig& c) { c.max_files = 10; });
  expect_unscannable(few->scan(zip_message(test::read_file(tmp / "many.zip"))), Unscannable::kLimit);
}

TEST(Scanner, EncryptedZipIsUnscannable) {
  test::ScratchDir tmp;
  test::write_file(tmp / "secret.txt", test::kEicar);
  ASSERT_EQ(std::system(("cd " + tmp.path() + " && zip -q -P password enc.zip secret.txt").c_str()), 0)
      << "needs the zip tool";
  expect_unscannable(engine().scan(zip_message(test::read_file(tmp / "enc.zip"))), Unscannable::kEncrypted);
  // The same, flagged encrypted by hand (no zip tool): what matters is the flag.
  expect_unscannable(engine().scan(zip_message(stored_zip("x.txt", std::string(12, '\x55') + "abc", 1))),
                     Unscannable::kEncrypted);
}

TEST(Scanner, EncryptedPdfIsUnscannable) {
  // A PDF whose standard security handler needs a user password nobody gave.
  const std::vector<std::string> objects = {
      "<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
      "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
      "<< /Length 12 >>\nstream\n0123456789ab\nendstream",
      "<< /Filter /Standard /V 1 /R 2 /Length 40 /P -3904 "
      "/O <1d3b5a2f8e6c4d7a9b0c1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b> "
      "/U <9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddccbbaa99887766554433221100> >>"};
  const std::string pdf = test::pdf_from_objects(
      objects, "/Encrypt 5 0 R /ID [<0123456789abcdef0123456789abcdef> <0123456789abcdef0123456789abcdef>]");
  expect_unscannable(engine().scan(test::make_message("pdf", "see attached", "locked.pdf", pdf)), Unscannable::kEncrypted);
}

TEST(Scanner, FullTemporaryFolderIsATemporaryErrorNeverClean) {
  // libclamav reports clean when it cannot write what it extracts; the scanner must not let it.
  test::ScratchDir tmp;
  const std::string mnt = tmp / "small";
  std::filesystem::create_directories(mnt);
  if (std::system(("mount -t tmpfs -o size=4m tmpfs " + mnt + " 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << "mounting a small tmpfs needs root";
  }
  struct Unmount {
    std::string dir;
    ~Unmount() { (void)std::system(("umount " + dir).c_str()); }
  } unmount{mnt};
  auto full = engine_with([&](ScannerConfig& c) {
    c.tmp_dir = mnt;
    c.max_scan_bytes = 64u << 10;
  });
  test::write_file(mnt + "/filler", std::string(3500u << 10, 'f'));
  std::string uuencoded = "From: a@example.com\r\nSubject: uu\r\n\r\nbegin 644 e.com\r\n";
  // EICAR, uuencoded: only the mail parser (writing a temporary file) finds it.
  uuencoded += "M6#5/(5`E0$%06S1<4%I8-30H4%XI-T-#*3=])$5)0T%2+5-404Y$05)$+4%.\r\n"
               "75$E625)54RU415-4+49)3$4A)$@K2\"H`\r\n`\r\nend\r\n";
  EXPECT_EQ(engine().scan(uuencoded).kind, VerdictKind::kInfected) << "the normal engine finds it";
  auto v = full->scan(uuencoded);
  EXPECT_EQ(v.kind, VerdictKind::kTemporaryError) << verdict_name(v.kind) << " " << v.reason;
  EXPECT_NE(v.reason.find("temporary folder"), std::string::npos) << v.reason;
  std::filesystem::remove(mnt + "/filler");
  EXPECT_EQ(full->scan(uuencoded).kind, VerdictKind::kInfected) << "with room again it scans";
}

// libclamav's mail parser decodes far more than MIME parts; the pipeline must never scan around it.
// Each of these is caught only by that parser (the raw bytes do not hold the signature).
TEST(Scanner, EveryEncodingTheMailParserDecodesIsCaught) {
  const std::string h = "From: a@example.com\r\nTo: b@example.com\r\nSubject: t\r\n";
  auto b64 = [](const std::string& s) {
    std::string out = test::base64(s), lines;
    for (std::size_t i = 0; i < out.size(); i += 76) lines += out.substr(i, 76) + "\r\n";
    return lines;
  };
  std::map<std::string, std::string> cases;
  cases["uuencode in a plain body"] =
      h + "\r\nsee below\r\n\r\nbegin 644 e.com\r\n"
          "M6#5/(5`E0$%06S1<4%I8-30H4%XI-T-#*3=])$5)0T%2+5-404Y$05)$+4%.\r\n"
          "75$E625)54RU415-4+49)3$4A)$@K2\"H`\r\n`\r\nend\r\n";
  cases["base64 body without MIME-Version"] = h + "Content-Transfer-Encoding: base64\r\n\r\n" + b64(test::kEicar);
  cases["part embedded in a bounce text"] =
      h + "\r\nThis is a bounce.\r\n\r\n------ Original message ------\r\n"
          "Content-Type: application/octet-stream; name=e.com\r\nContent-Transfer-Encoding: base64\r\n"
          "Content-Disposition: attachment; filename=e.com\r\n\r\n" + b64(test::kEicar);
  cases["MIME base64 attachment"] = test::make_message("m", "x", "e.com", test::kEicar);
  for (const char* f : {"clam.exe.binhex", "clam.exe.mbox.base64", "clam.exe.mbox.uu", "clam.mail"}) {
    const std::string path = std::string("/usr/share/clamav-testfiles/") + f;
    if (!std::filesystem::exists(path)) continue;
    std::string body = test::read_file(path);
    cases[f] = body.rfind("From", 0) == 0 ? body : h + "\r\n" + body;
  }
  EXPECT_GE(cases.size(), 8u) << "clamav-testfiles is missing (bash scripts/setup.sh)";
  for (const auto& [what, msg] : cases) {
    EXPECT_EQ(engine().scan(msg).kind, VerdictKind::kInfected) << what;
    EXPECT_EQ(msg.find(test::kEicar), std::string::npos) << what << ": the signature must not stand in the raw bytes";
  }
}

TEST(Scanner, NoSignaturesIsAnErrorNotACleanScanner) {
  ScannerConfig cfg;
  cfg.signature_dirs = {"/nonexistent/signatures"};
  auto e = ScanEngine::load(cfg);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, ErrorCode::kNotFound);
}

// Debian's clamav packages leave /var/lib/clamav empty until freshclam first runs: an empty folder
// (or one with other files) is passed over, and nothing but such folders is still an error.
TEST(Scanner, FolderWithoutDatabasesIsPassedOver) {
  test::ScratchDir dir;
  std::filesystem::create_directories(dir / "empty");
  test::write_file(dir / "other/README", "not a database\n");
  ScannerConfig cfg;
  cfg.signature_dirs = {dir / "empty", dir / "other"};
  auto none = ScanEngine::load(cfg);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kNotFound) << none.error().to_string();
  cfg.signature_dirs = {dir / "empty", test::signature_dir(), dir / "other"};
  auto e = ScanEngine::load(cfg);
  ASSERT_TRUE(e.ok()) << e.error().to_string();
  EXPECT_EQ((*e)->scan(test::make_message("eicar", test::kEicar)).kind, VerdictKind::kInfected);
}

TEST(Scanner, ReloadSwapsEnginesWhileOldOneStaysUsable) {
  ScannerConfig cfg;
  cfg.signature_dirs = {test::signature_dir()};
  auto s = Scanner::open(cfg);
  ASSERT_TRUE(s.ok());
  auto before = (*s)->engine();
  ASSERT_TRUE((*s)->reload().ok());
  auto after = (*s)->engine();
  EXPECT_NE(before.get(), after.get());
  // A scan that held the old engine still completes on it.
  EXPECT_EQ(before->scan(test::make_message("e", "x", "e.com", test::kEicar)).kind, VerdictKind::kInfected);
}

TEST(LogicalSplit, ExpressionsThatNeedAMatchAreRecognised) {
  for (const char* needs : {"0", "0&1", "0|1", "(0|1)&2", "0>2", "0&1=0", "(0&1)|(2&3)", "0=1", "(0|1)>1,2", "0=2,1"})
    EXPECT_EQ(false_when_nothing_matched(needs), true) << needs;
  for (const char* free : {"0=0", "0<2", "0=0|1", "(0|1)=0", "(0<1)&(1<1)"})
    EXPECT_EQ(false_when_nothing_matched(free), false) << free << ": matches with nothing matched, so it stays inline";
  for (const char* bad : {"", "0&1|2", "(0&1", "0&", "a", "0>>1", "0=", "((((0))))x"})
    EXPECT_FALSE(false_when_nothing_matched(bad).has_value()) << bad;
}

TEST(LogicalSplit, NecessarySubsignaturesAreSmallAndSound) {
  using V = std::vector<unsigned>;
  EXPECT_EQ(necessary_subsignatures("0"), V{0});
  EXPECT_EQ(necessary_subsignatures("0&1&2"), V{0});
  EXPECT_EQ(necessary_subsignatures("0|1"), (V{0, 1}));
  EXPECT_EQ(necessary_subsignatures("(0|1)&2"), V{2});
  EXPECT_EQ(necessary_subsignatures("(0|1)&(2|3|4)"), (V{0, 1}));
  EXPECT_EQ(necessary_subsignatures("0=0&1"), V{1}) << "subsignature 0 must be absent, 1 present";
  EXPECT_EQ(necessary_subsignatures("(0|1|2)>2"), (V{0, 1, 2}));
  EXPECT_EQ(necessary_subsignatures("(0&1)|(2&3)"), (V{0, 2}));
  EXPECT_FALSE(necessary_subsignatures("0=0|1").has_value());
}

TEST(LogicalSplit, OnlyPlainPatternsGoBehindThePrefilter) {
  auto lines = prefilter_lines("Win.Test-1;Engine:51-255,Target:1;0|1;0:4d5a9000;6a6b??6c{2-4}6d", "P.1");
  ASSERT_TRUE(lines.has_value());
  EXPECT_EQ(*lines, (std::vector<std::string>{"P.1.0:1:0:4d5a9000", "P.1.1:1:*:6a6b??6c{2-4}6d"}));
  auto one = prefilter_lines("Win.Test-2;Engine:51-255,Target:1;0&1;0:4d5a9000;6a6b??6c{2-4}6d", "P.2");
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(one->size(), 1u) << "one subsignature of a conjunction is necessary";
  EXPECT_TRUE(prefilter_lines("T;Engine:81-255,Target:0,FileSize:10-100;0|1;616263646566;EP+10:676869", "P"));
  for (const char* stays : {"T;Engine:81-255,Target:0;0&1;616263646566::i;676869",             // modifier
                            "T;Engine:81-255,Target:0;0&1;616263646566;0/ab[c-d]/",            // PCRE
                            "T;Engine:81-255,Target:0;0;${6-7}0$",                             // macro
                            "T;Engine:81-255,Target:0;0&1;616263646566;0(>>26#hb2#=0)",        // byte compare
                            "T;Engine:81-255,Target:0,HandlerType:CL_TYPE_ZIP;0;504b0304",     // retypes files
                            "T;Engine:81-255,Target:1,IconGroup1:X;0;4d5a9000",                // icon match
                            "T;Engine:81-255;0;61626364",                                      // no target
                            "T;Engine:81-255,Target:0;0=0;61626364",                           // matches anything
                            "T;Engine:81-255,Target:0;0&1|2;61626364;65666768;696a6b6c"})      // ambiguous
    EXPECT_FALSE(prefilter_lines(stays, "P").has_value()) << stays;
}

// The split engine answers exactly as one engine with the same signatures: random logical signatures of
// every shape (and, or, counts, negations, offsets, inline ones with modifiers), over many messages
// holding random subsets of their subsignatures, as text, as HTML and inside a base64 attachment.
TEST(LogicalSplit, SameVerdictsAsOneEngine) {
  test::ScratchDir dir;
  std::mt19937 rng(20261129);
  auto hex = [](const std::string& s) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) out += {digits[c >> 4], digits[c & 15]};
    return out;
  };
  std::vector<std::string> atoms;
  for (int i = 0; i < 24; ++i) atoms.push_back("atom" + std::to_string(i) + "-marker-" + std::to_string(rng() % 100000));
  const char* targets[] = {"0", "0", "0", "3", "4", "7", "1"};
  std::string ldb;
  for (int i = 0; i < 60; ++i) {
    int n = 1 + static_cast<int>(rng() % 3);
    std::vector<std::string> subs;
    for (int k = 0; k < n; ++k) subs.push_back(hex(atoms[rng() % atoms.size()]));
    std::string expr;
    switch (rng() % 6) {
      case 0: for (int k = 0; k < n; ++k) expr += (k ? "&" : "") + std::to_string(k); break;
      case 1: for (int k = 0; k < n; ++k) expr += (k ? "|" : "") + std::to_string(k); break;
      case 2: expr = "0>1"; subs.resize(1); break;
      case 3: expr = n > 1 ? "0&1=0" : "0"; if (n > 2) subs.resize(2); break;
      case 4: expr = n > 2 ? "(0|1)&2" : "0"; if (n <= 2) subs.resize(1); break;
      default: expr = "0"; subs[0] = hex(atoms[rng() % atoms.size()]) + "::i"; subs.resize(1); break;
    }
    ldb += "Mailark.Split.Test" + std::to_string(i) + ";Engine:51-255,Target:" + targets[rng() % 7] + ";" + expr;
    for (const auto& sub : subs) ldb += ";" + sub;
    ldb += "\n";
  }
  test::write_file(dir / "sigs/split.ldb", ldb);
  test::write_file(dir / "sigs/eicar.ndb", test::read_file(test::signature_dir() + "/mailark-test.ndb"));
  auto load = [&](bool split) {
    ScannerConfig cfg;
    cfg.signature_dirs = {dir / "sigs"};
    cfg.split_logical = split;
    auto e = ScanEngine::load(cfg);
    EXPECT_TRUE(e.ok()) << (e.ok() ? "" : e.error().to_string());
    return std::move(e).value();
  };
  auto one = load(false), split = load(true);
  EXPECT_NE(split->description().find("logical signatures behind"), std::string::npos) << split->description();
  int infected = 0, compared = 0;
  for (int m = 0; m < 400; ++m) {
    std::string text;
    int pieces = static_cast<int>(rng() % 4);
    for (int k = 0; k < pieces; ++k) {
      std::string a = atoms[rng() % atoms.size()];
      if (rng() % 4 == 0) for (char& c : a) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      text += "some words " + a + " more words\r\n";
      if (rng() % 3 == 0) text += a + "\r\n";  // a second occurrence, for the counts
    }
    if (rng() % 10 == 0) text += test::kEicar + std::string("\r\n");
    std::string msg;
    switch (m % 3) {
      case 0: msg = test::make_message("text " + std::to_string(m), text); break;
      case 1: msg = test::make_message("attached " + std::to_string(m), "see attached", "notes.txt", text); break;
      default:
        msg = "From: a@example.com\r\nSubject: html\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n<html><body><p>" +
              text + "</p></body></html>\r\n";
    }
    auto a = one->scan(msg), b = split->scan(msg);
    ++compared;
    EXPECT_EQ(a.kind, b.kind) << "message " << m << ": one engine says " << verdict_name(a.kind)
                              << (a.signatures.empty() ? "" : " " + a.signatures[0]) << ", split says "
                              << verdict_name(b.kind) << (b.signatures.empty() ? "" : " " + b.signatures[0]);
    infected += a.kind == VerdictKind::kInfected;
  }
  EXPECT_GT(infected, 60) << "the messages do exercise the signatures";
  EXPECT_LT(infected, compared - 60) << "and not all of them match";
}

// The ignore list applies to the signatures behind the prefilter as to every other, and a detection
// carries the signature's own name (the logic engine reads them from a scratch file of its own).
TEST(LogicalSplit, IgnoreListsAndNamesSurviveTheSplit) {
  test::ScratchDir dir;
  test::write_file(dir / "sigs/split.ldb",
                   "Mailark.Split.Kept;Engine:51-255,Target:0;0&1;6b6570742d6d61726b6572;7365636f6e642d6d61726b6572\n"
                   "Mailark.Split.Ignored;Engine:51-255,Target:0;0;69676e6f7265642d6d61726b6572\n");
  test::write_file(dir / "sigs/local.ign2", "Mailark.Split.Ignored\n");
  test::write_file(dir / "sigs/eicar.ndb", test::read_file(test::signature_dir() + "/mailark-test.ndb"));
  ScannerConfig cfg;
  cfg.signature_dirs = {dir / "sigs"};
  auto e = ScanEngine::load(cfg);
  ASSERT_TRUE(e.ok()) << e.error().to_string();
  ASSERT_NE((*e)->description().find("1 logical signatures behind"), std::string::npos) << (*e)->description();
  auto kept = (*e)->scan(test::make_message("kept", "a kept-marker and a second-marker\r\n"));
  ASSERT_EQ(kept.kind, VerdictKind::kInfected);
  ASSERT_EQ(kept.signatures.size(), 1u);
  EXPECT_EQ(kept.signatures[0], "Mailark.Split.Kept.UNOFFICIAL");
  EXPECT_EQ((*e)->scan(test::make_message("half", "only the kept-marker\r\n")).kind, VerdictKind::kClean);
  auto ignored = (*e)->scan(test::make_message("ignored", "an ignored-marker\r\n"));
  EXPECT_EQ(ignored.kind, VerdictKind::kClean)
      << "local.ign2 names it (the logic engine does not even load it), yet: " << (ignored.signatures.empty() ? "" : ignored.signatures[0]);
}

}  // namespace
}  // namespace mailark::scanner
