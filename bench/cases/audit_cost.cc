// What the audit log adds to each audited CLI command (search, show, export): opening DATA/cases and
// one write transaction with its sync, as tools/cli_util.cc `audit` does, timed N times against a
// store that grows. Usage: audit_cost DIR [N] (DIR: a scratch folder on the disk the data folder is on).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/cases.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: audit_cost DIR [N]\n");
    return 2;
  }
  std::string dir = std::string(argv[1]) + "/cases";
  int n = argc > 2 ? std::atoi(argv[2]) : 500;
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto store = mailark::CaseStore::open(dir, false);
    if (!store) return 1;
    auto e = (*store)->audit("cli:bench", "search", "power crisis", R"({"total":686,"shown":20,"offset":0})");
    if (!e) return 1;
    store->reset();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("audited commands: %d, per command: median %.3f ms, p95 %.3f ms, max %.3f ms\n", n, ms[ms.size() / 2],
              ms[ms.size() * 95 / 100], ms.back());
  auto store = mailark::CaseStore::open(dir, true);
  auto check = (*store)->verify_audit();
  auto t0 = std::chrono::steady_clock::now();
  check = (*store)->verify_audit();
  std::printf("verify of %llu entries: %.1f ms\n", static_cast<unsigned long long>(check.entries),
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  return check.ok ? 0 : 1;
}
