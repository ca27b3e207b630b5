// Fuzzes the IMAP server's command reader and grammar (api/imap/command.cc): a client's bytes in
// chunks whose sizes come from the input; every whole command is then read as FETCH attributes,
// SEARCH keys, sequence sets, flag lists and folder names, as the session would. Checks what must
// hold for any input: the reader's unconsumed buffer stays bounded, tags of errors are never empty,
// resolved sequence sets are ascending and within the folder, and mUTF-7 names round-trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/imap/command.h"
#include "fuzz/chunks.h"

using namespace mailark::api::imap;

namespace {
void exercise(const Command& c) {
  std::string error;
  for (const auto& v : c.args) {
    (void)parse_fetch_attrs(v, &error);
    std::uint32_t flags = 0;
    std::vector<std::string> kw;
    (void)parse_flag_list(v, &flags, &kw, &error);
    if (v.is_atom()) {
      if (auto set = parse_sequence_set(v.text)) {
        auto nums = set->resolve(1000);
        for (std::size_t i = 0; i < nums.size(); ++i)
          if (nums[i] < 1 || nums[i] > 1000 || (i && nums[i] <= nums[i - 1])) std::abort();
      }
    }
    if (v.is_astring()) {
      if (auto d = mutf7_decode(v.text)) {
        auto again = mutf7_decode(mutf7_encode(*d));
        if (!again || *again != *d) std::abort();
      }
      (void)parse_imap_date_time(v.text);
    }
  }
  (void)parse_search(c.args, 0, &error);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  CommandLimits limits;
  limits.max_line_bytes = 4096;
  limits.max_literal_bytes = 4096;
  limits.max_append_bytes = 16384;
  limits.max_skip_bytes = 8192;
  CommandReader reader(limits);
  // The server's upload room: refuses every third large literal.
  unsigned gate_calls = 0;
  reader.set_literal_gate([&](std::uint64_t) -> std::optional<std::string> {
    if (++gate_calls % 3 != 0) return std::nullopt;
    return gate_calls % 2 ? "[UNAVAILABLE] busy" : "[OVERQUOTA] Not enough disk space";
  });
  mailark::fuzz::feed_in_chunks(data, size, [&](std::string_view chunk, std::size_t pos) {
    reader.feed(chunk);
    bool closed = false;
    while (!closed) {
      auto e = reader.next();
      if (e == CommandReader::Event::kNone) break;
      if (e == CommandReader::Event::kCommand) {
        if (pos & 1) exercise(reader.command());
        else exercise(reader.take_command());
      }
      if ((e == CommandReader::Event::kBad || e == CommandReader::Event::kTooBig || e == CommandReader::Event::kBusy) &&
          reader.error_tag().empty())
        std::abort();
      if (e == CommandReader::Event::kClose) closed = true;
      if (e == CommandReader::Event::kCommand && (pos & 7) == 0) reader.expect_line();
    }
    if (closed) return false;
    if (reader.buffered() > limits.max_line_bytes * 2 + limits.max_append_bytes + 64) std::abort();
    return true;
  });
  return 0;
}
