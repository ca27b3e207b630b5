#include "scanner/scanner.h"

#include <gtest/gtest.h>

#include <filesystem>

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
std::string stored_zip(const std::string& name, const std::string& data) {
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
  le16(z, 0);
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
  le16(z, 0);
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

TEST(Scanner, ExceedingAScanLimitIsUnscannedNeverClean) {
  ScannerConfig cfg;
  cfg.signature_dirs = {test::signature_dir()};
  cfg.max_file_bytes = 1000;
  cfg.max_scan_bytes = 1000;
  auto small = ScanEngine::load(cfg);
  ASSERT_TRUE(small.ok());
  auto v =
      (*small)->scan(test::make_message("big", std::string(20000, 'a'), "big.bin", std::string(50000, 'b')));
  EXPECT_EQ(v.kind, VerdictKind::kUnscanned);
  EXPECT_FALSE(v.reason.empty());
}

TEST(Scanner, ArchiveThatExpandsPastTheScanLimitIsUnscanned) {
  // A zip bomb in miniature: the archive is small next to what it expands to.
  ScannerConfig cfg;
  cfg.signature_dirs = {test::signature_dir()};
  cfg.max_scan_bytes = 1u << 20;
  auto small = ScanEngine::load(cfg);
  ASSERT_TRUE(small.ok());
  std::string zip = stored_zip("zeros.bin", std::string(3u << 20, '\0'));
  auto v = (*small)->scan(test::make_message("bomb", "see attached", "bomb.zip", zip));
  EXPECT_EQ(v.kind, VerdictKind::kUnscanned);
  EXPECT_NE(v.reason.find("limit"), std::string::npos) << v.reason;
}

TEST(Scanner, NoSignaturesIsAnErrorNotACleanScanner) {
  ScannerConfig cfg;
  cfg.signature_dirs = {"/nonexistent/signatures"};
  auto e = ScanEngine::load(cfg);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, ErrorCode::kNotFound);
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

}  // namespace
}  // namespace mailark::scanner
