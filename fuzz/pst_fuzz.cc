// Fuzzes what mailark's own code does with a PST (engine/pst.h): the importer's reader of the PST
// child's frames (the child reads hostile files, so its output is untrusted), and the writer that
// rebuilds a message from a store's properties (write_converted_message). libpst itself runs in the
// child process and is not fuzzed here: a file that crashes it ends that file's import
// (tests/e2e/test_pst.py test_a_damaged_pst_ends_that_file_not_the_import).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "engine/message.h"
#include "engine/pst.h"

namespace {

std::vector<std::string> split(std::string_view v, char sep, std::size_t n) {
  std::vector<std::string> out;
  while (out.size() + 1 < n) {
    std::size_t p = v.find(sep);
    if (p == std::string_view::npos) break;
    out.emplace_back(v.substr(0, p));
    v.remove_prefix(p + 1);
  }
  out.emplace_back(v);
  out.resize(n);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string_view v(reinterpret_cast<const char*>(data) + 1, size - 1);
  mailark::Limits limits;
  limits.max_message_bytes = 1u << 16;
  if (data[0] % 2 == 0) {
    std::string copy(v);
    std::FILE* in = fmemopen(copy.empty() ? nullptr : copy.data(), copy.size(), "rb");
    if (!in) return 0;
    std::uint64_t seen = 0;
    mailark::SourceCallbacks cb;
    cb.on_message = [&](mailark::SourceMessage&& m) {
      ++seen;
      if (m.raw.size() > limits.max_message_bytes + (1u << 20)) std::abort();
    };
    cb.on_error = [](const std::string&, const std::string&) {};
    auto got = mailark::read_pst_frames(in, "fuzz.pst", limits, cb);
    std::fclose(in);
    if (got.messages != seen) std::abort();
    if (got.ended && !got.bad.empty()) std::abort();
    return 0;
  }
  auto f = split(v, '\0', 9);
  mailark::ConvertedMessage m;
  m.transport_headers = f[0];
  m.subject = f[1];
  m.from = mailark::Address{f[2], f[3]};
  m.to = {mailark::Address{f[2], f[3]}};
  m.message_id = f[4];
  m.text = f[5];
  m.html = f[6];
  if (!f[7].empty() || !f[8].empty()) m.attachments.push_back({f[7], f[2], f[4], f[8]});
  if (data[0] & 2) {
    mailark::ConvertedMessage inner = m;
    m.embedded.push_back(inner);
  }
  m.date = static_cast<std::int64_t>(data[0]) * 86400 * 400;
  std::string raw = mailark::write_converted_message(m);
  // The same properties give the same bytes (re-importing a store finds its duplicates).
  if (mailark::write_converted_message(m) != raw) std::abort();
  auto parsed = mailark::parse_message(raw, mailark::Limits{});
  if (!parsed) {  // what the writer wrote is mail
    std::fprintf(stderr, "not mail: %s\n---\n%s\n---\n", parsed.error().to_string().c_str(), raw.substr(0, 2000).c_str());
    std::abort();
  }
  return 0;
}
