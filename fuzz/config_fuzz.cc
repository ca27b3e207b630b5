// Fuzzes the configuration reader (api/config.cc): any text is a configuration or an error naming what
// is wrong, never a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536) return 0;
  auto c = mailark::api::parse_serve_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
  if (!c && c.error().code != mailark::ErrorCode::kInvalidArgument) std::abort();
  if (c && c->listeners.empty()) std::abort();
  for (const char* ip : {"192.0.2.1", "2001:db8::1", "::ffff:10.0.0.1"}) (void)mailark::api::client_group(ip);
  return 0;
}
