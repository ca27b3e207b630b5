// Helpers shared by the tests: the corpus location, scratch folders, small fixtures.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/limits.h"

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

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);
std::string signature_dir();  // the project's own signatures/

extern const std::string kEicar;

// A MIME message with one text part and, optionally, one base64 attachment.
std::string make_message(const std::string& subject, const std::string& body,
                         const std::string& attachment_name = {}, const std::string& attachment = {},
                         const std::string& message_id = {});
std::string base64(const std::string& bytes);

}  // namespace mailark::test
