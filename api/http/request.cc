#include "api/http/request.h"

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <optional>
#include <sstream>

namespace mailark::api::http {

namespace bhttp = boost::beast::http;

struct RequestReader::Impl {
  std::size_t max_header, max_body;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser;
  std::string buffer;  // received, not yet consumed by the parser

  void fresh() {
    parser.emplace();
    parser->header_limit(static_cast<std::uint32_t>(max_header));
    parser->body_limit(max_body);
    parser->eager(false);  // stop after the header, so the body limit can be chosen for it
  }
};

RequestReader::RequestReader(std::size_t max_header_bytes, std::size_t max_body_bytes) : impl_(std::make_unique<Impl>()) {
  impl_->max_header = max_header_bytes;
  impl_->max_body = max_body_bytes;
  impl_->fresh();
}

RequestReader::~RequestReader() = default;

void RequestReader::reset() {
  impl_->fresh();
  request_ = Request{};
  head_seen_ = false;
  error_status_ = 0;
  error_text_.clear();
}

std::string Request::header(std::string_view name) const {
  for (const auto& [n, v] : headers)
    if (n == name) return v;
  return "";
}

void RequestReader::take_head() {
  const auto& msg = impl_->parser->get();
  request_.method = std::string(msg.method_string());
  request_.target = std::string(msg.target());
  std::size_t q = request_.target.find('?');
  request_.path = url_decode(std::string_view(request_.target).substr(0, q), false);
  request_.query = q == std::string::npos ? "" : request_.target.substr(q + 1);
  request_.headers.clear();
  for (const auto& f : msg) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    request_.headers.emplace_back(std::move(name), std::string(f.value()));
  }
}

namespace {

// Does a request line Beast refused for its version name one (HTTP/d.d, then CR LF), which this
// server does not speak (505)? A line ended by a bare LF, or no version at all, is malformed (400).
bool names_a_version(std::string_view buffer) {
  const std::size_t end = buffer.find("\r\n");
  if (end == std::string_view::npos) return false;
  std::string_view line = buffer.substr(0, end);
  if (line.find('\n') != std::string_view::npos) return false;
  const std::size_t sp = line.rfind(' ');
  std::string_view v = sp == std::string_view::npos ? line : line.substr(sp + 1);
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  return v.size() == 8 && v.substr(0, 5) == "HTTP/" && digit(v[5]) && v[6] == '.' && digit(v[7]);
}

}  // namespace

RequestReader::State RequestReader::feed(std::string_view bytes) {
  if (error_status_) return State::kError;
  Impl& m = *impl_;
  // Nothing grows without bound: what the parser has not consumed is at most a header's worth.
  if (m.buffer.size() + bytes.size() > m.max_header + m.max_body + 4096) {
    error_status_ = 413;
    error_text_ = "request too large";
    return State::kError;
  }
  m.buffer.append(bytes);
  while (!m.parser->is_done()) {
    boost::beast::error_code ec;
    std::size_t used = m.parser->put(boost::asio::const_buffer(m.buffer.data(), m.buffer.size()), ec);
    m.buffer.erase(0, used);
    if (ec == bhttp::error::need_more) return State::kNeedMore;
    if (ec) {
      if (ec == bhttp::error::header_limit) error_status_ = 431;
      else if (ec == bhttp::error::body_limit) error_status_ = 413;
      else if (ec == bhttp::error::bad_version && names_a_version(m.buffer)) error_status_ = 505;
      else error_status_ = 400;
      error_text_ = ec.message();
      if (ec == bhttp::error::bad_version && error_status_ == 400)
        error_text_ = "a malformed request line (it ends with \"HTTP/1.1\" and CR LF)";
      return State::kError;
    }
    if (m.parser->is_header_done() && !head_seen_) {
      head_seen_ = true;
      take_head();
      // A body whose end the parser cannot know (a transfer coding other than chunked last: Beast
      // reads such a request as bodyless, and its body as the next request) is refused and the
      // connection closed (RFC 9112 6.3), as is an HTTP/1.1 request without exactly one Host (3.2):
      // behind a proxy that frames them otherwise, either could smuggle a request.
      const auto& head = m.parser->get();
      // A method Beast does not know (methods are case-sensitive: "get" is not GET) is answered 501,
      // before any handler reads it as a method it refuses (RFC 9110 9.1).
      if (head.method() == bhttp::verb::unknown) {
        error_status_ = 501;
        error_text_ = "method not implemented: " + request_.method.substr(0, 40);
        return State::kError;
      }
      if (head.find(bhttp::field::transfer_encoding) != head.end() && !m.parser->chunked()) {
        error_status_ = 400;
        error_text_ = "a Transfer-Encoding other than chunked";
        return State::kError;
      }
      if (head.version() >= 11 && head.count(bhttp::field::host) != 1) {
        error_status_ = 400;
        error_text_ = "an HTTP/1.1 request needs one Host field";
        return State::kError;
      }
      std::size_t limit = m.max_body;
      if (body_limit_fn_) limit = std::min(limit, body_limit_fn_(request_));
      auto length = m.parser->content_length();
      if (length && *length > limit) {
        error_status_ = 413;
        error_text_ = "body too large (at most " + std::to_string(limit) + " bytes here)";
        return State::kError;
      }
      body_bound_ = length ? static_cast<std::size_t>(*length) : limit;
      m.parser->body_limit(limit);
      m.parser->eager(true);
      continue;
    }
    if (used == 0 && !m.parser->is_done()) return State::kNeedMore;
  }
  if (!head_seen_) take_head();
  const auto& msg = m.parser->get();
  request_.body = msg.body();
  request_.keep_alive = msg.keep_alive();
  return State::kComplete;
}

namespace {

// The fields every answer carries, and the handler's own.
template <typename Message>
void set_fields(Message& res, std::string_view content_type,
                const std::vector<std::pair<std::string, std::string>>& headers, bool keep_alive) {
  res.set(bhttp::field::server, "mailark");
  res.set(bhttp::field::content_type, std::string(content_type));
  res.set(bhttp::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  for (const auto& [n, v] : headers) res.set(n, v);
  res.keep_alive(keep_alive);
}

}  // namespace

std::string response(int status, std::string_view content_type, std::string_view body,
                     const std::vector<std::pair<std::string, std::string>>& headers, bool keep_alive) {
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), 11};
  set_fields(res, content_type, headers, keep_alive);
  res.body() = std::string(body);
  res.prepare_payload();
  std::ostringstream out;
  out << res;
  return out.str();
}

std::string response_head(int status, std::string_view content_type, std::uint64_t content_length,
                          const std::vector<std::pair<std::string, std::string>>& headers, bool keep_alive) {
  bhttp::response<bhttp::empty_body> res{static_cast<bhttp::status>(status), 11};
  set_fields(res, content_type, headers, keep_alive);
  res.content_length(content_length);
  std::ostringstream out;
  out << res.base();  // the status line and the fields, through the blank line that ends them
  return out.str();
}

std::string url_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::map<std::string, std::string> parse_params(std::string_view s) {
  std::map<std::string, std::string> out;
  while (!s.empty()) {
    std::size_t amp = s.find('&');
    std::string_view pair = s.substr(0, amp);
    s = amp == std::string_view::npos ? std::string_view() : s.substr(amp + 1);
    if (pair.empty()) continue;
    std::size_t eq = pair.find('=');
    std::string name = url_decode(pair.substr(0, eq), true);
    std::string value = eq == std::string_view::npos ? "" : url_decode(pair.substr(eq + 1), true);
    out.emplace(std::move(name), std::move(value));
  }
  return out;
}

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string cookie(const Request& request, std::string_view name) {
  std::string all = request.header("cookie");
  std::string_view s = all;
  while (!s.empty()) {
    std::size_t semi = s.find(';');
    std::string_view part = s.substr(0, semi);
    s = semi == std::string_view::npos ? std::string_view() : s.substr(semi + 1);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=')
      return std::string(part.substr(name.size() + 1));
  }
  return "";
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  if (path.empty()) return out;
  std::size_t pos = path.front() == '/' ? 1 : 0;
  while (pos <= path.size()) {
    std::size_t slash = path.find('/', pos);
    out.emplace_back(path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return out;
}

std::string attachment_disposition(std::string_view filename) {
  std::string ascii, encoded;
  for (unsigned char c : filename) {
    ascii += (c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '/') ? static_cast<char>(c) : '_';
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' || c == '_') {
      encoded += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789ABCDEF";
      encoded += '%';
      encoded += hex[c >> 4];
      encoded += hex[c & 15];
    }
  }
  if (ascii.empty()) ascii = "attachment";
  if (encoded.empty()) encoded = "attachment";
  return "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" + encoded;
}

}  // namespace mailark::api::http
