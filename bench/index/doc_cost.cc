// What one message costs the index, part by part, on one thread: the time to build its document
// (indexer::build_document, on the SMTP workers) and to add it to a shard and commit (IndexWriter's
// part, on the index threads), with and without pair words, and the terms a document holds. Messages
// are read in place from files given on the command line (one message per file, e.g. the Enron
// maildir); every variant indexes the same messages into a fresh shard in /tmp, committing every
// --commit-every documents (a server at 560 msg/s with two shards commits about 280 a second each).
//
//   python3 bench/smtp/mail.py --list-files --messages 6000 > /tmp/list   # the SMTP benchmark's mix
//   build/bench/doc_cost --commit-every 280 $(cat /tmp/list)
//   DOC_COST_PREFIXES=1 build/bench/doc_cost $(cat /tmp/list)   # the terms a document holds, by prefix
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/limits.h"
#include "engine/index_fields.h"
#include "engine/message.h"
#include "indexer/index.h"
#include "indexer/schema.h"

namespace {
using Clock = std::chrono::steady_clock;
double secs_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string read_file(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::map<std::string, std::uint64_t>& prefix_counts() {
  static std::map<std::string, std::uint64_t> m;
  return m;
}

struct Totals {
  double build = 0, add = 0, commit = 0;
  std::uint64_t terms = 0, pair_terms = 0, filter_bytes = 0, texts_bytes = 0, db_bytes = 0;
};

Totals run(const std::vector<mailark::indexer::IndexFields>& fields, const mailark::indexer::PairWords* pairs,
           std::size_t commit_every, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::remove_all(dir);
  Totals t;
  Xapian::WritableDatabase db(dir, Xapian::DB_CREATE | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_TERMLIST);
  std::size_t since = 0;
  for (const auto& f : fields) {
    auto t0 = Clock::now();
    Xapian::Document doc = mailark::indexer::build_document(f, pairs);
    t.build += secs_since(t0);
    for (auto it = doc.termlist_begin(); it != doc.termlist_end(); ++it) {
      ++t.terms;
      if ((*it).rfind(mailark::indexer::schema::kPrefixPair, 0) == 0) ++t.pair_terms;
      if (std::getenv("DOC_COST_PREFIXES")) {
        const std::string& term = *it;
        std::size_t p = 0;
        if (term.rfind("XP", 0) == 0) p = 2;
        std::size_t e = p;
        while (e < term.size() && e < p + 3 && std::isupper(static_cast<unsigned char>(term[e]))) ++e;
        prefix_counts()[term.substr(0, e)]++;
      }
    }
    t.filter_bytes += doc.get_value(mailark::indexer::schema::kSlotPairFilter).size();
    t.texts_bytes += doc.get_value(mailark::indexer::schema::kSlotTexts).size();
    t0 = Clock::now();
    doc.add_boolean_term("Q" + std::to_string(f.id));
    db.add_document(doc);
    t.add += secs_since(t0);
    if (++since >= commit_every) {
      t0 = Clock::now();
      db.commit();
      t.commit += secs_since(t0);
      since = 0;
    }
  }
  auto t0 = Clock::now();
  db.commit();
  t.commit += secs_since(t0);
  db.close();
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) t.db_bytes += e.file_size();
  fs::remove_all(dir);
  return t;
}

void report(const char* name, const Totals& t, std::size_t n) {
  const double us = 1e6 / static_cast<double>(n);
  std::printf("%-28s build %7.1f us  add %7.1f us  commit %7.1f us  total %7.1f us  terms %6.1f (pairs %5.1f)"
              "  filter %5.0f B  texts %5.0f B  shard %6.2f MB\n",
              name, t.build * us, t.add * us, t.commit * us, (t.build + t.add + t.commit) * us,
              static_cast<double>(t.terms) / n, static_cast<double>(t.pair_terms) / n,
              static_cast<double>(t.filter_bytes) / n, static_cast<double>(t.texts_bytes) / n, t.db_bytes / 1e6);
}
}  // namespace

int main(int argc, char** argv) {
  std::size_t commit_every = 280;
  int first = 1;
  if (argc >= 3 && std::strcmp(argv[1], "--commit-every") == 0) {
    commit_every = std::stoul(argv[2]);
    first = 3;
  }
  if (argc <= first) {
    std::fprintf(stderr, "usage: doc_cost [--commit-every N] MESSAGE_FILE...\n");
    return 2;
  }
  mailark::Limits limits;
  std::vector<mailark::indexer::IndexFields> fields;
  std::vector<std::string> bodies;
  for (int i = first; i < argc; ++i) {
    std::string raw = read_file(argv[i]);
    if (raw.empty()) continue;
    mailark::ParsedMessage m = mailark::parse_message_or_flag(raw, limits);
    mailark::ArchiveRecord r;
    r.seq = fields.size() + 1;
    r.raw_size = raw.size();
    fields.push_back(mailark::document_fields(m, r, raw, limits));
    if (bodies.size() < 2 * mailark::indexer::schema::kPairTrainDocs) bodies.push_back(raw.substr(0, 64 * 1024));
  }
  std::vector<std::string_view> texts(bodies.begin(), bodies.end());
  auto pairs = mailark::indexer::choose_pair_words(texts);
  std::printf("%zu messages, %zu pair words, commit every %zu\n", fields.size(),
              pairs ? pairs->words.size() : 0, commit_every);
  const std::string dir = "/tmp/doc_cost." + std::to_string(::getpid());
  auto no_texts = fields;
  for (auto& f : no_texts) f.keep_texts = false;
  if (std::getenv("DOC_COST_PREFIXES")) {
    run(fields, pairs.get(), commit_every, dir);
    for (const auto& [p, n] : prefix_counts())
      std::printf("%-6s %8.2f terms a document\n", p.empty() ? "(none)" : p.c_str(), static_cast<double>(n) / fields.size());
    return 0;
  }
  for (int round = 0; round < 2; ++round) {
    report("without pair words", run(fields, nullptr, commit_every, dir), fields.size());
    report("with pair words", run(fields, pairs.get(), commit_every, dir), fields.size());
    report("with pair words, no texts", run(no_texts, pairs.get(), commit_every, dir), fields.size());
  }
  return 0;
}
