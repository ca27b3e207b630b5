// Fuzzes the HTTP request core (api/http/request.cc, Boost.Beast's parser with mailark's limits): the
// bytes of a connection, fed in chunks whose sizes come from the input. Checks what must hold for any
// input: the reader never holds more than its limits allow, a complete request's body is within the
// body limit, the query and form decoders take whatever the request carries, and so do the web
// portal's cookie, path and download-name helpers.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "api/http/request.h"

using namespace mailark::api::http;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t max_header = 256 + data[0] * 8, max_body = 512;
  RequestReader reader(max_header, max_body);
  // The web portal chooses each request's body limit from its header (api/web/portal.cc).
  reader.set_body_limit([&](const Request& head) -> std::size_t { return head.path.size() % 2 ? max_body : 16; });
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::size_t pos = 0, step = 1 + data[0] % 97;
  for (int requests = 0; pos < in.size() && requests < 8;) {
    std::size_t n = std::min(step, in.size() - pos);
    auto state = reader.feed(in.substr(pos, n));
    pos += n;
    if (state == RequestReader::State::kError) {
      int s = reader.error_status();
      if (s != 400 && s != 413 && s != 431 && s != 501 && s != 505) std::abort();
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
      // What the web portal reads from a request: the session cookie, the path's segments, and a
      // download's name (which must never carry a line break into the response header).
      (void)cookie(r, "mailark_session");
      if (split_path(r.path).size() > r.path.size() + 1) std::abort();
      std::string disposition = attachment_disposition(r.body);
      if (disposition.find_first_of("\r\n") != std::string::npos) std::abort();
      (void)response(200, "application/octet-stream", "", {{"Content-Disposition", disposition}});
      reader.reset();
      ++requests;
    }
  }
  return 0;
}
