// Process-wide counters and histograms for Prometheus (text exposition format 0.0.4), served at the
// web listener's /metrics (api/web/portal.cc). Counting is a relaxed atomic add on a reference the
// caller keeps (look a series up once, not per event). Gauges that mirror state elsewhere (queue
// depth, index lag, continuity state) are read by the server that serves /metrics when scraped
// (api/web/portal.cc) and written after render()'s families.
//
//   static auto& refused = metrics::counter("mailark_smtp_messages_total", "...", {{"result", "refused"}});
//   refused.inc();
//
// Thread safety: everything here. Tests: Metrics.* (tests/web_test.cc); tests/e2e/test_web.py
// `test_metrics` scrapes a running server after real SMTP traffic.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailark::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double seconds);
  // Cumulative counts per bound (the last is +Inf), the sum and the count.
  std::vector<std::uint64_t> buckets() const;
  double sum() const;
  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_ns_{0};
};

// The series with this name and labels, made on first use. The help text of the first call stays.
Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
// Latency histograms in seconds; default buckets from 0.5 ms to 10 s.
Histogram& histogram(std::string_view name, std::string_view help, const Labels& labels = {});

// Every family in the text exposition format, sorted by name.
std::string render();

}  // namespace mailark::metrics
