// Helpers shared by the tests: the corpus location, scratch folders, small fixtures.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/limits.h"

namespace mailark {
class Engine;
}

namespace mailark::test {

// The corpus folder (MAILARK_CORPUS overrides ../shared/corpus), or empty when absent.
std::string corpus_dir();

// Skips the current test with the reason when the corpus is absent. Use as: REQUIRE_CORPUS();
#define REQUIRE_CORPUS()                                                                   \
  do {                                                                                     \
    if (::mailark::test::corpus_dir().empty())                                             \
      GTEST_SKIP() << "corpus not found (set MAILARK_CORPUS or provide ../shared/corpus)"; \
  } while (0)

// A fresh temporary directory, removed when the object goes away.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A small tmpfs mounted on `dir` (created if needed) for disk-full tests: filling it is a real ENOSPC
// for whatever writes there. Needs root; mounted() is false otherwise (skip the test, saying why).
class SmallTmpfs {
 public:
  SmallTmpfs(const std::string& dir, std::size_t bytes);
  ~SmallTmpfs();
  bool mounted() const { return mounted_; }
  // Fills what is free (leaving `leave` bytes), or frees it again.
  void fill(std::size_t leave = 0);
  void free();

 private:
  std::string dir_;
  bool mounted_ = false;
};

#define REQUIRE_TMPFS(t) \
  do {                   \
    if (!(t).mounted()) GTEST_SKIP() << "mounting a small tmpfs for a disk-full test needs root"; \
  } while (0)

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);
std::string signature_dir();  // the project's own signatures/
// An engine on `dir` with the project's own signatures (a failure to open is a test failure).
std::unique_ptr<Engine> open_engine(const std::string& dir);

// Runs `command` in a shell; its standard output and error, and whether it exited with status 0.
struct CommandOutput {
  std::string out;
  bool ok = false;
};
CommandOutput run_command(const std::string& command);

extern const std::string kEicar;

// A MIME message with one text part and, optionally, one base64 attachment.
std::string make_message(const std::string& subject, const std::string& body,
                         const std::string& attachment_name = {}, const std::string& attachment = {},
                         const std::string& message_id = {});
std::string base64(const std::string& bytes);

// A PDF of these objects (numbered from 1; object 1 the catalog) with a correct cross-reference
// table; trailer_extra goes into the trailer dictionary after /Root.
std::string pdf_from_objects(const std::vector<std::string>& objects, const std::string& trailer_extra = {});

}  // namespace mailark::test
