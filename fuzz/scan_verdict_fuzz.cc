// Fuzzes the parent's reading of a scan process's answer (scanner/scan_host.h): the scan processes
// run libclamav over hostile attachments, so a process a message took over may say anything. A
// verdict that decodes encodes back to bytes that decode to the same verdict.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "scanner/scan_host.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto v = mailark::scanner::decode_verdict(in);
  if (!v) return 0;
  auto again = mailark::scanner::decode_verdict(mailark::scanner::encode_verdict(*v));
  if (!again || again->kind != v->kind || again->why != v->why || again->signatures != v->signatures ||
      again->reason != v->reason)
    std::abort();
  return 0;
}
