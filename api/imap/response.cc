#include "api/imap/response.h"

#include <algorithm>
#include <cctype>

#include "common/numbers.h"

namespace mailark::api::imap {

void ResponseReader::feed(std::string_view bytes) {
  if (!error_.empty()) return;
  buffer_.append(bytes);
}

std::optional<Response> ResponseReader::next() {
  if (!error_.empty()) return std::nullopt;
  // Walk lines from scan_: a line ending in {n} or {n+} is followed by n bytes of literal, and the
  // response goes on after them.
  while (true) {
    std::size_t eol = buffer_.find("\r\n", scan_);
    if (eol == std::string::npos) {
      if (buffer_.size() > kMaxResponseBytes) error_ = "a response longer than 1 MiB";
      return std::nullopt;
    }
    std::string_view line(buffer_.data() + scan_, eol - scan_);
    std::optional<std::uint64_t> literal;
    if (!line.empty() && line.back() == '}') {
      std::size_t open = line.rfind('{');
      if (open != std::string_view::npos) {
        std::string_view n = line.substr(open + 1, line.size() - open - 2);
        if (!n.empty() && n.back() == '+') n.remove_suffix(1);
        literal = parse_decimal(n, kMaxResponseBytes);
        if (!literal && !n.empty() && n.size() < 20 &&
            std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; })) {
          error_ = "a literal larger than 1 MiB";
          return std::nullopt;
        }
      }
    }
    if (!literal) {
      Response r = parse_response(std::string_view(buffer_).substr(0, eol));
      buffer_.erase(0, eol + 2);
      scan_ = 0;
      return r;
    }
    const std::size_t after = eol + 2 + *literal;
    if (after > kMaxResponseBytes) {
      error_ = "a response longer than 1 MiB";
      return std::nullopt;
    }
    if (buffer_.size() < after) return std::nullopt;  // the literal is not all here yet
    scan_ = after;
  }
}

Response parse_response(std::string_view whole) {
  Response r;
  auto word = [&](std::string_view& s) {
    std::size_t sp = s.find(' ');
    std::string_view w = s.substr(0, sp);
    s = sp == std::string_view::npos ? std::string_view() : s.substr(sp + 1);
    return std::string(w);
  };
  std::string_view s = whole;
  std::string first = word(s);
  if (first == "+") {
    r.kind = Response::Kind::kContinuation;
    r.text = std::string(s);
    return r;
  }
  // A line without a first word (an empty line, a leading space) is no tagged answer: it is kept as an
  // untagged response, which the client passes over.
  r.kind = first == "*" || first.empty() ? Response::Kind::kUntagged : Response::Kind::kTagged;
  if (r.kind == Response::Kind::kTagged) r.tag = first;
  r.status = word(s);
  for (char& c : r.status) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  r.text = std::string(s);
  return r;
}

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\r' || c == '\n') continue;  // a quoted string cannot hold them
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

}  // namespace mailark::api::imap
