// Date formats mailark writes: RFC 5322 for message headers, ISO 8601 for people and JSON.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>

namespace mailark {

// The wall clock in Unix seconds: every timestamp mailark stores in seconds (received, started,
// decided, audited...) comes from here; the web sessions' and user records' millisecond stamps read
// the same clock through std::chrono. tests/e2e/test_retention.py moves it with libfaketime.
inline std::int64_t unix_now() { return static_cast<std::int64_t>(std::time(nullptr)); }

// "Fri, 27 Nov 2026 06:01:39 +0000"
inline std::string rfc5322_date(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  return buf;
}

// "2026-11-27T06:01:39Z"
inline std::string iso8601_date(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace mailark
