#include "tests/test_util.h"

#include <gtest/gtest.h>

#include <sys/statvfs.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "engine/engine.h"

namespace mailark::test {

std::string corpus_dir() {
  const char* env = std::getenv("MAILARK_CORPUS");
  std::string dir = env && *env ? env : MAILARK_DEFAULT_CORPUS;
  std::error_code ec;
  if (!std::filesystem::is_directory(std::filesystem::path(dir) / "enron", ec)) return {};
  return dir;
}

ScratchDir::ScratchDir() {
  std::random_device rd;
  auto base = std::filesystem::temp_directory_path();
  path_ = (base / ("mailark-test-" + std::to_string(rd()) + std::to_string(rd()))).string();
  std::filesystem::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

SmallTmpfs::SmallTmpfs(const std::string& dir, std::size_t bytes) : dir_(dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::string cmd = "mount -t tmpfs -o size=" + std::to_string(bytes) + " tmpfs '" + dir + "' 2>/dev/null";
  mounted_ = std::system(cmd.c_str()) == 0;
}

SmallTmpfs::~SmallTmpfs() {
  if (mounted_) (void)std::system(("umount -l '" + dir_ + "' 2>/dev/null").c_str());
}

void SmallTmpfs::fill(std::size_t leave) {
  struct statvfs st {};
  if (::statvfs(dir_.c_str(), &st) != 0) return;
  std::uint64_t room = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
  if (room <= leave) return;
  FILE* f = std::fopen((dir_ + "/filler").c_str(), "ab");
  if (!f) return;
  std::string chunk(64 * 1024, 'f');
  std::uint64_t want = room - leave;
  while (want > 0) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(want, chunk.size()));
    if (std::fwrite(chunk.data(), 1, n, f) != n) break;
    want -= n;
  }
  std::fclose(f);
}

void SmallTmpfs::free() {
  std::error_code ec;
  std::filesystem::remove(dir_ + "/filler", ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string signature_dir() {
  return std::string(MAILARK_SOURCE_DIR) + "/signatures";
}

std::unique_ptr<Engine> open_engine(const std::string& dir) {
  EngineOptions o;
  o.data_dir = dir;
  o.signature_dirs = {signature_dir()};
  auto e = Engine::open(o);
  EXPECT_TRUE(e.ok()) << (e.ok() ? "" : e.error().to_string());
  return e.ok() ? std::move(e).value() : nullptr;
}

const std::string kEicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0, line = 0;
  while (i + 2 < in.size()) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
    i += 3;
    if ((line += 4) >= 76) {
      out += "\n";
      line = 0;
    }
  }
  if (i + 1 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16;
    out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8;
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out + "\n";
}

std::string make_message(const std::string& subject, const std::string& body,
                         const std::string& attachment_name, const std::string& attachment,
                         const std::string& message_id) {
  std::string id = message_id.empty() ? subject + "@test.example" : message_id;
  for (char& c : id)
    if (c == ' ') c = '-';
  std::string m =
      "From: Alice Example <alice@example.com>\n"
      "To: Bob Example <bob@example.com>\n"
      "Subject: " +
      subject +
      "\n"
      "Date: Tue, 15 May 2001 10:00:00 +0000\n"
      "Message-ID: <" +
      id +
      ">\n"
      "MIME-Version: 1.0\n";
  if (attachment_name.empty()) return m + "Content-Type: text/plain; charset=us-ascii\n\n" + body + "\n";
  m += "Content-Type: multipart/mixed; boundary=\"b1\"\n\n"
       "--b1\nContent-Type: text/plain; charset=us-ascii\n\n" +
       body +
       "\n"
       "--b1\nContent-Type: application/octet-stream; name=\"" +
       attachment_name +
       "\"\n"
       "Content-Disposition: attachment; filename=\"" +
       attachment_name +
       "\"\n"
       "Content-Transfer-Encoding: base64\n\n" +
       base64(attachment) + "--b1--\n";
  return m;
}

std::string pdf_from_objects(const std::vector<std::string>& objects, const std::string& trailer_extra) {
  std::string pdf = "%PDF-1.4\n";
  std::vector<std::size_t> offsets;
  for (std::size_t i = 0; i < objects.size(); ++i) {
    offsets.push_back(pdf.size());
    pdf += std::to_string(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
  }
  const std::size_t xref = pdf.size();
  pdf += "xref\n0 " + std::to_string(objects.size() + 1) + "\n0000000000 65535 f \n";
  for (std::size_t o : offsets) {
    char line[32];
    std::snprintf(line, sizeof line, "%010zu 00000 n \n", o);
    pdf += line;
  }
  pdf += "trailer\n<< /Size " + std::to_string(objects.size() + 1) + " /Root 1 0 R" +
         (trailer_extra.empty() ? "" : " " + trailer_extra) + " >>\nstartxref\n" + std::to_string(xref) + "\n%%EOF\n";
  return pdf;
}

CommandOutput run_command(const std::string& command) {
  CommandOutput r;
  std::FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p)) r.out += buf;
  const int status = ::pclose(p);
  r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return r;
}

}  // namespace mailark::test
