// Fuzzes the query parser and phrase resolution (indexer/index.cc) against a small real index built on
// first use (two segments, the first sealed and partly expired): every query either parses and runs,
// or is refused with kInvalidArgument.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "indexer/index.h"
#include "indexer/schema.h"

namespace {

using namespace mailark::indexer;

IndexFields sample(std::uint64_t id) {
  IndexFields f;
  f.id = id;
  f.message_id = "m" + std::to_string(id) + "@example.com";
  f.date = 1000000000 + static_cast<std::int64_t>(id) * 86400;
  f.received = f.date;
  f.size = 1000 * id;
  f.from = {{"Ana Ortega", "ana.ortega@northwind.example"}};
  f.to = {{"Ben", "ben@example.com"}};
  f.subject = id % 2 ? "Quarterly shipping forecast" : "power crisis in the west";
  // Some hold the phrases, some their words apart: enough of each that phrases are deferred to the
  // walk, filtered and estimated (more than 50 candidates), beside pair terms and without them.
  f.body = (id % 3 ? "the pipeline rupture near Rotterdam; power crisis talks; customs paperwork "
                   : "the rupture of a pipeline; the crisis of power; paperwork for customs ") +
           std::to_string(id) + (id % 4 ? " 全新原装进口，送货上门" : " 요즘 뜨는 직종 東京タワー") +
           (id % 5 ? " Re\xCC\x81sume\xCC\x81 \xEF\xBC\xB0\xEF\xBC\xA3\xEF\xBD\xB6\xEF\xBE\x80" : " r\xC3\xA9sum\xC3\xA9 pc") +
           (id % 6 ? " ผมกินน้ำทุกวันและทำงานที่กรุงเทพ" : " សួស្តីពិភពលោក မင်္ဂလာပါ") +
           (id % 7 ? " Ο νέος κατάλογος, Tiếng Việt, Łódź" : " ΝΕΟΣ ΚΑΤΑΛΟΓΟΣ Muller Stra\xC3\x9F" "e") +
           (id % 9 ? " الكِتَابُ في المدرسة" : " עִבְרִית كـتاب");
  if (id % 8 == 0) f.from = {{"Zo\xC3\xAB M\xC3\xBCller", "Zo\xC3\xAB@Ex\xC3\xA4mple.org"}};
  f.attachments = {{"report.pdf", "application/pdf", 1234}};
  f.direction = "inbound";
  f.verdict = id == 3 ? "infected" : "clean";
  return f;
}

// sample() is a pure function of the id: checks may read side by side, as with the archive.
class Fields : public FieldSource {
 public:
  std::optional<IndexFields> load(std::uint64_t id) override { return sample(id); }
  bool concurrent() const override { return true; }
};

const std::string& index_dir() {
  // Never destroyed: the exit handler below still needs it.
  static const std::string& dir = *new std::string([] {
    std::string d = std::filesystem::temp_directory_path().string() + "/mailark-query-fuzz-" + std::to_string(::getpid());
    std::filesystem::remove_all(d);
    auto w = IndexWriter::open(d);
    if (!w) std::abort();
    // Past kPairTrainDocs, so that the later documents have pair terms and the first ones do not;
    // every seventh without a pair filter, as an index from before filters.
    const std::uint64_t docs = mailark::indexer::schema::kPairTrainDocs + 200;
    for (std::uint64_t id = 1; id <= docs; ++id) {
      Xapian::Document doc = build_document(sample(id), (*w)->pair_words().get());
      if (id % 7 == 0) doc.remove_value(mailark::indexer::schema::kSlotPairFilter);
      if (!(*w)->add(id, doc)) std::abort();
      if (id % kPairTrainCommitEvery == 0 && !(*w)->commit(id)) std::abort();
    }
    // A second segment; the first sealed, and every eleventh of its records expired by retention,
    // so that queries run beside the placeholders of expired records (build_expired_document):
    // a shard with gaps would fail "verdict:clean" and the like as corrupt.
    (*w)->add_segment(docs + 1);
    for (std::uint64_t id = docs + 1; id <= docs + 2; ++id)
      if (!(*w)->add(id, build_document(sample(id), (*w)->pair_words().get()))) std::abort();
    if (!(*w)->commit(docs + 2)) std::abort();
    if (auto sealed = seal_closed_segments(d); !sealed || *sealed != 1) std::abort();
    std::vector<std::uint64_t> keep;
    for (std::uint64_t id = 1; id <= docs; ++id)
      if (id % 11) keep.push_back(id);
    const auto pairs = (*w)->pair_words();
    if (!expire_segment_documents(d, 1, keep, [&](std::uint64_t id) { return build_document(sample(id), pairs.get()); }))
      std::abort();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(index_dir(), ec);
    });
    return d;
  }());
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) return 0;
  static auto reader = IndexReader::open(index_dir());
  if (!reader) std::abort();
  std::string query(reinterpret_cast<const char*>(data), size);
  Fields fields;
  SearchOptions opts;
  opts.limit = 5;
  // After a unit separator (0x1f): a case's scope (SearchOptions::scope), parsed outside the bounds.
  if (auto sep = query.find('\x1f'); sep != std::string::npos) {
    opts.scope = query.substr(sep + 1);
    query.resize(sep);
  }
  auto res = (*reader)->search(query, opts, &fields);
  if (!res && res.error().code != mailark::ErrorCode::kInvalidArgument) std::abort();
  (void)parse_date_period(query);
  return 0;
}
