// mailark search QUERY: free text and fields, newest first.
#include <chrono>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/export.h"
#include "common/json_text.h"
#include "tools/cli.h"
#include "tools/terminal_safe.h"

namespace mailark::cli {
namespace {

// A listing's subject column: the whole subject is in `show` and in --json.
constexpr std::size_t kSubjectColumn = 120;

struct SearchArgs {
  std::vector<std::string> words;
  std::size_t limit = 20;
  std::size_t offset = 0;
  bool json = false;
  bool exact = false;
};

int run_search(const GlobalOptions& g, const SearchArgs& args) {
  std::string query;
  for (const auto& w : args.words) query += (query.empty() ? "" : " ") + w;
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  indexer::SearchOptions opts;
  opts.limit = args.limit;
  opts.offset = args.offset;
  opts.exact_total = args.exact;
  const auto started = std::chrono::steady_clock::now();
  auto res = (*engine)->search(query, opts);
  if (!res) return report(res.error());
  // The search alone (parse, match, phrase checks), without the process's start and the open.
  const double search_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  // A lagging index misses the newest mail: say so, rather than let an incomplete answer pass for a
  // complete one.
  // Every search is in the audit log, before anything is shown (fail closed: cli.h audit).
  if (Status a = audit(g, "search", query,
                       json_text(nlohmann::json{
                           {"total", res->total}, {"shown", res->hits.size()}, {"offset", args.offset}}));
      !a)
    return report(a.error());
  const std::uint64_t head = (*engine)->archive().head().seq;
  const std::uint64_t watermark = res->watermark;
  const std::uint64_t lag = head > watermark ? head - watermark : 0;
  if (lag > 0) {
    std::cerr << "mailark: note: the index is " << lag << " message" << (lag == 1 ? "" : "s")
              << " behind the archive; the newest mail may be missing from these results\n";
  }
  if (res->older_reading > 0 && !args.json)
    std::cerr << "mailark: note: " << SearchExceptions{0, res->older_reading}.text();
  if (args.json) {
    nlohmann::json results = nlohmann::json::array();
    for (const auto& h : res->hits) {
      results.push_back({{"id", h.id},
                         {"message_id", h.message_id},
                         {"date", iso8601(h.date)},
                         {"from", h.from},
                         {"subject", h.subject},
                         {"verdict", h.verdict},
                         {"size", h.size}});
    }
    nlohmann::json j = {
        {"query", query}, {"total", res->total}, {"total_exact", res->total_exact}, {"offset", args.offset}, {"results", results}, {"index_lag", lag}, {"older_reading", res->older_reading},
        {"search_ms", search_ms}};
    std::cout << json_text(j) << "\n";
    return kExitOk;
  }
  for (const auto& h : res->hits) {
    // The sender's display name when there is one, else the address.
    std::string from = h.from.substr(0, h.from.find(','));
    if (std::size_t lt = from.find(" <"); lt != std::string::npos && lt > 0) from = from.substr(0, lt);
    std::cout << std::setw(6) << h.id << "  " << iso8601(h.date).substr(0, 10) << "  " << fit_column(from, 28, true)
              << "  " << fit_column(h.subject, kSubjectColumn);
    if (h.verdict != "clean") std::cout << "  [" << h.verdict << "]";
    std::cout << "\n";
  }
  std::size_t shown_to = args.offset + res->hits.size();
  std::cout << (res->total_exact ? "" : "about ") << res->total << " message" << (res->total == 1 ? "" : "s");
  if (res->total > 0)
    std::cout << " (showing " << (res->hits.empty() ? 0 : args.offset + 1) << "-" << shown_to << ")";
  std::cout << "\n";
  return kExitOk;
}

}  // namespace

void register_search(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<SearchArgs>();
  auto* cmd = app.add_subcommand("search", "search the archive, newest first");
  cmd->footer(
      "Query syntax: free words; \"a phrase\"; subject: attachment:; from: to: cc: bcc: rcpt: take a\n"
      "name word, a whole address, a local part or a domain (from:ana, from:ana@example.com,\n"
      "from:example.com); repeating one of them means either;\n"
      "id:<message-id> has:attachment is:malformed is:quarantined verdict:clean|infected|unscanned\n"
      "direction:import|inbound|outbound|probe type:application/pdf date:2001-01-01..2001-06-30 (also\n"
      "date:2001, date:2001-05, open ranges) size:10k..1m; AND, OR, NOT, parentheses, +word, -word\n"
      "(near and adj are words to find, not operators; a query with both quotes and one of them is read\n"
      "without AND, OR and NOT). The continuity monitor's probes are found only by a query that names\n"
      "a direction (direction:probe). Every page is exact; the total of a phrase with many candidates\n"
      "is estimated (\"about N\"; --exact counts them all). word* finds words that begin so. A run of\n"
      "Chinese, Japanese or Korean letters finds them in that order (each is a word). One query\n"
      "has at most 1,024 words and field terms (the words its wildcards stand for among them), its\n"
      "phrases at most 64 words together, a wildcard at most 1,000 words: past that it is refused,\n"
      "never cut short.");
  cmd->add_option("query", args->words, "the query")->required();
  cmd->add_option("--limit", args->limit, "results to show (default 20)");
  cmd->add_option("--offset", args->offset, "results to skip");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->add_flag("--exact", args->exact,
                "count exactly: check every candidate of a phrase (by default a phrase with many candidates is "
                "checked only as far as the page shown, and the total is estimated)");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_search(g, *args); }; });
}

}  // namespace mailark::cli
