// The I/O-free core of mailark's HTTP listeners: requests are framed by Boost.Beast's parser (no
// hand-written HTTP framing), with limits on the header and body sizes, and responses are
// serialised by Beast. Sockets live in the servers (api/http/admin.cc); this part is tested and
// fuzzed without a network (fuzz/http_fuzz.cc).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailark::api::http {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: "/api/continuity?x=1"
  std::string path;    // the target up to '?', percent-decoded
  std::string query;   // after '?', raw
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  std::string body;
  bool keep_alive = false;
  // The first header with this (lower-case) name, or empty.
  std::string header(std::string_view name) const;
};

class RequestReader {
 public:
  RequestReader(std::size_t max_header_bytes = 16 * 1024, std::size_t max_body_bytes = 64 * 1024);
  ~RequestReader();
  enum class State { kNeedMore, kComplete, kError };
  // Consumes bytes. kComplete: request() holds the request (bytes after it are kept for the next
  // one, see reset()). kError: error_status() and error_text() say why (400, 413, 431, 501, 505).
  State feed(std::string_view bytes);
  const Request& request() const { return request_; }
  int error_status() const { return error_status_; }
  const std::string& error_text() const { return error_text_; }
  // Ready for the next request on the same connection (keeps bytes already received after it).
  void reset();
  // The header of the request being read is complete (request() has it, without the body).
  bool head_complete() const { return head_seen_; }
  // Called once the header is complete (request() holds method, target, path, query and headers; no
  // body yet): returns the body limit for this request, at most max_body_bytes. A larger
  // Content-Length, or a chunked body that grows past it, is refused with 413 before the body is read.
  // So a server lets a logged-in upload be large and everything else small.
  void set_body_limit(std::function<std::size_t(const Request& head)> fn) { body_limit_fn_ = std::move(fn); }
  // Once the header is complete: the most bytes the body may take (its Content-Length, or for a
  // chunked body the limit above).
  std::size_t body_bound() const { return body_bound_; }

 private:
  struct Impl;
  void take_head();
  std::unique_ptr<Impl> impl_;
  Request request_;
  std::function<std::size_t(const Request&)> body_limit_fn_;
  bool head_seen_ = false;
  std::size_t body_bound_ = 0;
  int error_status_ = 0;
  std::string error_text_;
};

// A complete HTTP/1.1 response (Content-Length set; Connection: close unless keep_alive).
std::string response(int status, std::string_view content_type, std::string_view body,
                     const std::vector<std::pair<std::string, std::string>>& headers = {}, bool keep_alive = false);
// The head of a response whose body (content_length bytes) is sent after it, from a file.
std::string response_head(int status, std::string_view content_type, std::uint64_t content_length,
                          const std::vector<std::pair<std::string, std::string>>& headers, bool keep_alive);

// Percent-decoding (and '+' as space in forms). Invalid escapes are kept as they are.
std::string url_decode(std::string_view s, bool plus_is_space);
// "a=1&b=two" (a query string or an application/x-www-form-urlencoded body) -> {a: 1, b: two};
// the first value of a repeated name wins.
std::map<std::string, std::string> parse_params(std::string_view s);
// Escapes text for HTML.
std::string html_escape(std::string_view s);
// The value of the cookie `name` in the request's Cookie header, or empty.
std::string cookie(const Request& request, std::string_view name);
// "/api/v1/messages/3/7" -> {"api", "v1", "messages", "3", "7"} (empty segments kept).
std::vector<std::string> split_path(std::string_view path);
// A Content-Disposition value for a download named `filename` (RFC 6266: an ASCII fallback and the
// UTF-8 name percent-encoded); never holds a control character, whatever the name.
std::string attachment_disposition(std::string_view filename);

}  // namespace mailark::api::http
