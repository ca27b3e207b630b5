// Fuzzes the HTTP request core (api/http/request.cc, Boost.Beast's parser with mailark's limits): the
// bytes of a connection, fed in chunks whose sizes come from the input. Checks what must hold for any
// input: the reader never holds more than its limits allow, a complete request's body is within the
// body limit, and the query and form decoders take whatever the request carries.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/http/request.h"

using namespace mailark::api::http;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t max_header = 256 + data[0] * 8, max_body = 512;
  RequestReader reader(max_header, max_body);
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::size_t pos = 0, step = 1 + data[0] % 97;
  for (int requests = 0; pos < in.size() && requests < 8;) {
    std::size_t n = std::min(step, in.size() - pos);
    auto state = reader.feed(in.substr(pos, n));
    pos += n;
    if (state == RequestReader::State::kError) {
      int s = reader.error_status();
      if (s != 400 && s != 413 && s != 431 && s != 505) std::abort();
      break;
    }
    if (state == RequestReader::State::kComplete) {
      const Request& r = reader.request();
      if (r.body.size() > max_body) std::abort();
      (void)parse_params(r.query);
      (void)parse_params(r.body);
      (void)r.header("authorization");
      (void)html_escape(r.path);
      (void)response(200, "text/plain", r.body);
      reader.reset();
      ++requests;
    }
  }
  return 0;
}
