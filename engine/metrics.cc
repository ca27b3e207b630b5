#include "engine/metrics.h"

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

namespace mailark::metrics {

namespace {

struct Family {
  std::string help;
  std::string type;  // counter, histogram, gauge
  std::map<std::string, std::unique_ptr<Counter>> counters;      // by rendered labels
  std::map<std::string, std::unique_ptr<Histogram>> histograms;  // by rendered labels
};

struct Registry {
  std::mutex mu;
  std::map<std::string, Family, std::less<>> families;
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: series outlive every static that counts
  return *r;
}

std::string escape_label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
  return out;
}

std::string render_labels(const Labels& labels) {
  std::string out;
  for (const auto& [k, v] : labels) out += (out.empty() ? "" : ",") + k + "=\"" + escape_label(v) + "\"";
  return out.empty() ? "" : "{" + out + "}";
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  std::ostringstream o;
  o.precision(10);
  o << v;
  return o.str();
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::observe(double seconds) {
  std::size_t i = 0;
  while (i < bounds_.size() && seconds > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  if (seconds > 0) sum_ns_.fetch_add(static_cast<std::uint64_t>(seconds * 1e9), std::memory_order_relaxed);
}

std::vector<std::uint64_t> Histogram::buckets() const {
  std::vector<std::uint64_t> out;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    out.push_back(total);
  }
  return out;
}

double Histogram::sum() const { return static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9; }

Counter& counter(std::string_view name, std::string_view help, const Labels& labels) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.families.find(name);
  if (it == r.families.end()) it = r.families.emplace(std::string(name), Family{std::string(help), "counter"}).first;
  auto& slot = it->second.counters[render_labels(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Histogram& histogram(std::string_view name, std::string_view help, const Labels& labels) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.families.find(name);
  if (it == r.families.end()) it = r.families.emplace(std::string(name), Family{std::string(help), "histogram"}).first;
  auto& slot = it->second.histograms[render_labels(labels)];
  if (!slot) slot = std::make_unique<Histogram>(std::vector<double>{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                                    0.25, 0.5, 1, 2.5, 5, 10});
  return *slot;
}

std::string render() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::string out;
  for (const auto& [name, f] : r.families) {
    if (f.counters.empty() && f.histograms.empty()) continue;
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
    for (const auto& [labels, c] : f.counters) out += name + labels + " " + std::to_string(c->value()) + "\n";
    for (const auto& [labels, h] : f.histograms) {
      // The bucket label goes inside the series' own labels.
      std::string inner = labels.empty() ? "" : labels.substr(1, labels.size() - 2) + ",";
      auto b = h->buckets();
      for (std::size_t i = 0; i < b.size(); ++i) {
        std::string le = i < h->bounds().size() ? number(h->bounds()[i]) : "+Inf";
        out += name + "_bucket{" + inner + "le=\"" + le + "\"} " + std::to_string(b[i]) + "\n";
      }
      out += name + "_sum" + labels + " " + number(h->sum()) + "\n";
      out += name + "_count" + labels + " " + std::to_string(h->count()) + "\n";
    }
  }
  return out;
}

}  // namespace mailark::metrics
