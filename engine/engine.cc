#include "engine/engine.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include "common/threads.h"
#include "engine/handoff.h"
#include "engine/index_fields.h"
#include "indexer/schema.h"

namespace fs = std::filesystem;

namespace mailark {

std::vector<std::string> default_signature_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("MAILARK_SIGNATURES"); env && *env) {
    std::string s = env;
    std::size_t start = 0;
    while (start <= s.size()) {
      std::size_t colon = s.find(':', start);
      std::string d = s.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (!d.empty()) dirs.push_back(d);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    return dirs;
  }
  dirs.push_back(MAILARK_SIGNATURE_DIR);
  dirs.push_back("/var/lib/clamav");
  return dirs;
}

namespace {

// The index directory is replaced by renames (compaction, reindex): DATA/index -> DATA/index.old,
// DATA/index.new -> DATA/index. A crash between the two leaves index.old, which is put back.
void recover_index_swap(const std::string& data_dir) {
  std::error_code ec;
  fs::path index = fs::path(data_dir) / "index", old = fs::path(data_dir) / "index.old";
  if (!fs::exists(index, ec) && fs::exists(old, ec)) fs::rename(old, index, ec);
}

Status swap_in(const std::string& data_dir, const std::string& fresh) {
  std::error_code ec;
  fs::path index = fs::path(data_dir) / "index", old = fs::path(data_dir) / "index.old";
  fs::remove_all(old, ec);
  if (fs::exists(index, ec)) fs::rename(index, old, ec);
  if (ec) return make_error(ErrorCode::kIo, "moving the old index aside: " + ec.message());
  fs::rename(fresh, index, ec);
  if (ec) return make_error(ErrorCode::kIo, "putting the new index in place: " + ec.message());
  fs::remove_all(old, ec);
  return ok_status();
}

}  // namespace

namespace {

// Free pages in the main environment worth a compacting copy at a writer's open (and at least half
// the file): what a move of an older archive's segments into stores leaves.
constexpr std::uint64_t kCompactMainAtFreeBytes = std::uint64_t{64} << 20;

// Removes the store files of segments that never were: a cut whose store was written but whose batch
// failed to commit in the main environment leaves segment-N.mdb (and its lock file) with N past the
// head, which a later batch that does not cut at that record never uses. Only a process holding the
// data lock does this: a writer beside a running server (`segments policy`, `retention set`) could
// otherwise remove the store of a cut the server is making. Stores the table names, files at or
// below the head, and any name store_path would not give are left alone
// (test: Engine.AStoreOfACutThatNeverCommittedIsRemovedByTheNextLockedWriter).
void remove_stray_stores(const Archive& archive, const std::string& dir) {
  const std::uint64_t head = archive.head().seq;
  const auto segments = archive.segments();
  constexpr std::string_view kPrefix = "segment-", kSuffix = ".mdb";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= kPrefix.size() + kSuffix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0 ||
        name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
      continue;
    const std::string digits = name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
    if (digits.empty() || digits.size() > 19 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    const std::uint64_t first = std::stoull(digits);
    if (first <= head || fs::path(archive.store_path(first)) != e.path() ||
        std::any_of(segments.begin(), segments.end(), [&](const SegmentInfo& s) { return s.first == first; }))
      continue;
    fs::remove(e.path(), ec);
    fs::remove(e.path().string() + "-lock", ec);
  }
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::open(EngineOptions options) {
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = std::move(options);
  if (!e->options_.read_only && !e->options_.writer.empty()) {
    auto lock = DataLock::acquire(e->options_.data_dir, e->options_.writer);
    if (!lock) return lock.error();
    e->lock_ = std::move(lock).value();
    recover_index_swap(e->options_.data_dir);
    // Free pages of the main environment (a move of an older archive's segments into stores leaves
    // them) go back to the file system before the archive opens, when nothing else has it open. An
    // error leaves the file as it was: the open goes on.
    auto c = Archive::compact_main_environment(e->archive_dir(), kCompactMainAtFreeBytes);
    if (!c) {
      e->compaction_note_ = "the archive's main environment was not compacted: " + c.error().to_string();
    } else if (c->after_bytes) {
      e->compaction_note_ = "the archive's main environment was compacted: " + std::to_string(c->file_bytes) +
                            " bytes -> " + std::to_string(c->after_bytes);
    }  // busy (another process reads the folder): the next writer's open tries again
  }
  if (e->options_.signature_dirs.empty()) e->options_.signature_dirs = default_signature_dirs();
  auto archive = Archive::open(e->archive_dir(), e->options_.limits, e->options_.read_only);
  if (!archive) return archive.error();
  if (e->lock_) remove_stray_stores(**archive, e->archive_dir());
  e->archive_ = std::move(archive).value();
  if (!e->options_.read_only && e->options_.catch_up_on_open) {
    auto caught = e->catch_up_index(nullptr);
    if (!caught) return caught.error();
  }
  return e;
}

Engine::~Engine() = default;

Result<std::unique_ptr<indexer::IndexWriter>> Engine::open_writer(const std::string& dir) {
  auto w = indexer::IndexWriter::open(dir);
  if (!w) return w.error();
  (*w)->set_min_free_bytes(options_.limits.index_min_free_bytes);
  // The archive's segments, so that every record goes to its own segment's shards.
  for (const auto& seg : archive_->segments()) (*w)->add_segment(seg.first);
  return w;
}

Result<indexer::IndexWriter*> Engine::index_writer() {
  if (options_.read_only) return make_error(ErrorCode::kInvalidArgument, "engine opened read-only");
  if (!index_writer_) {
    auto w = open_writer(index_dir());
    if (!w) return w.error();
    index_writer_ = std::move(w).value();
  }
  return index_writer_.get();
}

Result<const scanner::Scanner*> Engine::scanner() {
  if (!scanner_) {
    scanner::ScannerConfig cfg;
    cfg.signature_dirs = options_.signature_dirs;
    cfg.tmp_dir = options_.scanner_temp_dir;
    if (cfg.tmp_dir.empty()) {
      std::error_code ec;
      cfg.tmp_dir = fs::is_directory("/dev/shm", ec) ? std::string("/dev/shm") : fs::temp_directory_path(ec).string();
    }
    const Limits& l = options_.limits;
    cfg.max_scan_bytes = l.scan_max_scan_bytes;
    cfg.max_file_bytes = l.scan_max_file_bytes;
    cfg.max_recursion = l.scan_max_recursion;
    cfg.max_files = l.scan_max_files;
    cfg.max_scan_ms = l.scan_max_ms;
    cfg.max_memory_bytes = l.scan_max_memory_bytes;
    cfg.host = options_.scanner_host;
    // As many scan processes as the pipeline has workers scanning at once (ingest.cc), and room for
    // a few more (a handed import, submission, the web).
    cfg.max_processes = std::max(4u, std::thread::hardware_concurrency() + 2);
    auto s = scanner::Scanner::open(cfg);
    if (!s) return s.error();
    scanner_ = std::move(s).value();
  }
  return static_cast<const scanner::Scanner*>(scanner_.get());
}

Status Engine::reload_scanner() {
  if (!scanner_) return scanner().ok() ? ok_status() : scanner().error();
  return scanner_->reload();
}

Result<ParsedMessage> Engine::parse(const ArchiveRecord& record, std::string* raw_out) {
  auto raw = archive_->raw(record);
  if (!raw) return raw.error();
  ParsedMessage msg = parse_message_or_flag(*raw, options_.limits);
  if (raw_out) *raw_out = std::move(raw).value();
  return msg;
}

Result<std::uint64_t> Engine::catch_up_index(
    const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  auto w = index_writer();
  if (!w) return w.error();
  return catch_up_into(**w, progress);
}

Result<std::uint64_t> Engine::catch_up_into(indexer::IndexWriter& index,
                                            const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  indexer::IndexWriter* writer = &index;
  std::uint64_t from = writer->watermark() + 1;
  std::uint64_t head = archive_->head().seq;
  if (from > head) return std::uint64_t{0};
  const std::uint64_t total = head - from + 1;

  // Records are read in order, parsed in parallel (the expensive part) and added in order.
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t chunk = 1024;
  std::vector<ArchiveRecord> records;
  std::map<std::uint64_t, std::string> broken;  // records that do not decode: why
  std::uint64_t done = 0;
  Status walk_error;
  auto flush = [&]() -> Status {
    std::vector<Xapian::Document> docs(records.size());
    const auto pairs = writer->pair_words();  // chosen at a commit once the index is big enough
    std::atomic<std::size_t> next{0};
    run_side_by_side(threads - 1, [&] {  // fewer threads, if they cannot be had
      auto snap = archive_->snapshot();  // one read view per thread: LMDB transactions are not shared
      for (std::size_t i; (i = next.fetch_add(1)) < records.size();) {
        // A record that cannot be read still gets a document: a placeholder under is:unindexed.
        if (auto b = broken.find(records[i].seq); b != broken.end())
          docs[i] =
              indexer::build_unindexed_document(records[i].seq, "the record does not decode: " + b->second);
        else if (!snap)
          docs[i] = indexer::build_unindexed_document(records[i].seq, snap.error().context);
        else
          docs[i] = document_for_record(**snap, records[i], options_.limits, pairs.get());
      }
    });
    for (std::size_t i = 0; i < records.size(); ++i) MAILARK_TRY(writer->add(records[i].seq, docs[i]));
    done += records.size();
    if (progress) progress(done, total);
    std::uint64_t last = records.back().seq;
    records.clear();
    broken.clear();
    // Until the index has its pair words, every chunk is committed: the index chooses them at a commit
    // once it is big enough, and the documents built before that get no pair terms.
    if (done % (chunk * 16) == 0 || last == head || !writer->pair_words()) {
      MAILARK_TRY(writer->commit(last));
      // After the commit that chose the pair words, the documents built before them get their terms.
      for (unsigned s = 0; s < writer->shard_count(); ++s)
        MAILARK_TRY(pair_unpaired_documents(*archive_, *writer, s, options_.limits));
    }
    return ok_status();
  };
  auto s = archive_->scan(
      from,
      [&](const ArchiveRecord& r, std::string_view) {
        if (r.seq > head) return false;
        records.push_back(r);
        if (records.size() >= chunk) {
          walk_error = flush();
          if (!walk_error) return false;
        }
        return true;
      },
      [&](std::uint64_t seq, const Error& e) {
        // A record that does not decode: a placeholder keeps its id and says why (verify names it).
        if (seq == 0 || seq > head) return true;
        ArchiveRecord placeholder;
        placeholder.seq = seq;
        records.push_back(placeholder);
        broken[seq] = e.context;
        if (records.size() >= chunk) {
          walk_error = flush();
          if (!walk_error) return false;
        }
        return true;
      });
  if (!s) return s.error();
  if (!walk_error) return walk_error.error();
  if (!records.empty()) MAILARK_TRY(flush());
  if (writer->watermark() < head) MAILARK_TRY(writer->commit(head));
  return total;
}

bool Engine::index_on_own_file_system() const {
  struct stat index_st {}, data_st {};
  return ::stat(index_dir().c_str(), &index_st) == 0 && ::stat(options_.data_dir.c_str(), &data_st) == 0 &&
         index_st.st_dev != data_st.st_dev;
}

Result<std::uint64_t> Engine::reindex(const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  index_writer_.reset();
  if (index_on_own_file_system()) return reindex_in_place(progress);
  std::error_code ec;
  // Build beside the old index and swap, so a failed reindex leaves the old one usable.
  std::string fresh = options_.data_dir + "/index.new";
  fs::remove_all(fresh, ec);
  // The old index's pair words, so that the new one has pair terms from its first document. An old
  // index that cannot be read (often why one reindexes) gives none, and that is no error: the new one
  // then chooses its own after 2,000 documents, which only makes phrases over those slower.
  (void)indexer::seed_pair_words(index_dir(), fresh);
  Result<std::uint64_t> n = std::uint64_t{0};
  {
    auto w = open_writer(fresh);
    if (!w) return w.error();
    n = catch_up_into(**w, progress);
  }
  if (!n) return n.error();
  std::string compacted = options_.data_dir + "/index.compact";
  fs::remove_all(compacted, ec);
  if (indexer::compact_index(fresh, compacted)) {
    MAILARK_TRY(swap_in(options_.data_dir, compacted));
    fs::remove_all(fresh, ec);
  } else {  // compact_index removed its part-written copy
    MAILARK_TRY(swap_in(options_.data_dir, fresh));
  }
  return n;
}

// The index on a disk of its own: nothing can be renamed over DATA/index, and a copy beside it would
// be written to the data folder's disk (which an index is often moved off for want of room). Its
// entries are removed and it is written again where it is; only the pair words are kept (seeded into a
// folder inside it first, so that the new index has pair terms from its first document).
Result<std::uint64_t> Engine::reindex_in_place(const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  std::error_code ec;
  const fs::path dir = index_dir();
  const fs::path seed = dir / ".reindex-seed";
  fs::remove_all(seed, ec);
  // What an earlier reindex or compaction beside it left on the data folder's disk (a crash, or a
  // build before this one, which failed only at the swap).
  fs::remove_all(options_.data_dir + "/index.new", ec);
  fs::remove_all(options_.data_dir + "/index.compact", ec);
  (void)indexer::seed_pair_words(dir.string(), seed.string());  // none from an unreadable index: no error
  std::vector<fs::path> entries;  // listed first: a directory is not changed while it is read
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path() != seed) entries.push_back(entry.path());
  if (ec) return make_error(ErrorCode::kIo, "emptying the index to rebuild it in place: " + ec.message());
  for (const auto& path : entries) {
    fs::remove_all(path, ec);
    if (ec)
      return make_error(ErrorCode::kIo,
                        "emptying the index to rebuild it in place: " + path.string() + ": " + ec.message());
  }
  const fs::path words = seed / indexer::schema::kPairWordsFile;
  if (fs::exists(words, ec)) fs::rename(words, dir / indexer::schema::kPairWordsFile, ec);
  if (ec) return make_error(ErrorCode::kIo, "keeping the index's pair words: " + ec.message());
  fs::remove_all(seed, ec);
  Result<std::uint64_t> n = std::uint64_t{0};
  {
    auto w = open_writer(dir.string());
    if (!w) return w.error();
    n = catch_up_into(**w, progress);
  }
  if (!n) return n.error();
  // The closed segments' shards are compacted and sealed where they are, one shard at a time, as a
  // server seals them; the live segment is left as written. A seal that finds no room is no failure of
  // the reindex: the server seals it later.
  (void)indexer::seal_closed_segments(dir.string(), options_.limits.index_min_free_bytes);
  return n;
}

Result<std::uint32_t> Engine::train_dictionary(std::size_t samples, std::size_t dictionary_bytes) {
  if (options_.read_only) return make_error(ErrorCode::kInvalidArgument, "engine opened read-only");
  std::uint64_t head = archive_->head().seq;
  std::uint64_t from = head > samples ? head - samples + 1 : 1;
  std::vector<std::string> raws;
  Status failed;
  auto s = archive_->scan(
      from,
      [&](const ArchiveRecord& r, std::string_view) {
        auto raw = archive_->raw(r);
        if (!raw) {
          failed = raw.error();
          return false;
        }
        raws.push_back(raw->substr(0, 64 * 1024));  // a message's head carries what repeats
        return true;
      },
      [&](std::uint64_t, const Error& e) {
        failed = e;
        return false;
      });
  if (!s) return s.error();
  if (!failed) return failed.error();
  auto dict = mailark::train_dictionary(raws, dictionary_bytes);
  if (!dict) return dict.error();
  return archive_->add_dictionary(*dict);
}

Status Engine::compact_index() {
  if (!options_.read_only) {
    if (auto sealed = archive_->seal_stores(); !sealed) return sealed.error();
  }
  index_writer_.reset();
  std::error_code ec;
  // An index on a file system of its own (a disk mounted on the data folder's index/) cannot be
  // swapped with a copy beside it (rename(2) of a mount point: EBUSY): its shards are compacted in
  // place instead, one at a time, each beside itself on that disk.
  if (index_on_own_file_system()) {
    auto n = indexer::compact_shards_in_place(index_dir(), options_.limits.index_min_free_bytes);
    if (!n) return n.error();
    return ok_status();
  }
  std::string compacted = options_.data_dir + "/index.compact";
  fs::remove_all(compacted, ec);
  MAILARK_TRY(indexer::compact_index(index_dir(), compacted));  // removes a part-written copy itself
  if (auto s = swap_in(options_.data_dir, compacted); !s) {
    fs::remove_all(compacted, ec);
    return s;
  }
  return ok_status();
}

void Engine::sync_with_server() {
  if (synced_with_server_ || index_writer_ || lock_) return;
  synced_with_server_ = true;
  (void)ask_server_to_sync_index(options_.data_dir);
}

Result<std::unique_ptr<indexer::IndexReader>> Engine::open_reader() {
  sync_with_server();
  auto reader = indexer::IndexReader::open(index_dir());
  if (!reader) return reader.error();
  if ((*reader)->watermark() < archive_->head().seq && !index_writer_) {
    // A lagging index (a crash between the two commits): catch up, unless a writer holds the data
    // folder (a running server or import catches up itself).
    if (auto lock = DataLock::acquire(options_.data_dir, "search (catching the index up)")) {
      if (auto w = open_writer(index_dir())) (void)catch_up_into(**w, nullptr);
      reader = indexer::IndexReader::open(index_dir());
    }
  }
  return reader;
}

Result<indexer::SearchResults> Engine::search(const std::string& query,
                                              const indexer::SearchOptions& options) {
  MAILARK_ASSIGN_OR_RETURN(auto reader, open_reader());
  ArchiveFieldSource source(*archive_, options_.limits);
  indexer::SearchOptions opts = options;
  opts.one_per_message = archive_->counters().has_copies();
  return reader->search(query, opts, &source);
}

std::uint64_t Engine::index_watermark() {
  if (index_writer_) return index_writer_->watermark();
  sync_with_server();
  auto reader = indexer::IndexReader::open(index_dir());
  return reader ? (*reader)->watermark() : 0;
}

Result<std::pair<std::uint64_t, std::vector<std::pair<std::uint64_t, std::string>>>> Engine::unindexed(std::size_t limit) {
  sync_with_server();
  auto reader = indexer::IndexReader::open(index_dir());
  if (!reader) return reader.error();
  return (*reader)->unindexed(limit);
}

Result<Engine::IndexHealth> Engine::index_health() {
  sync_with_server();
  MAILARK_ASSIGN_OR_RETURN(auto reader, indexer::IndexReader::open(index_dir()));
  MAILARK_ASSIGN_OR_RETURN(auto unindexed, reader->unindexed(0));
  return IndexHealth{unindexed.first, reader->documents_read_before_repairs()};
}

std::uint64_t Engine::index_bytes() const {
  std::uint64_t total = 0;
  std::error_code ec;
  if (!fs::exists(index_dir(), ec)) return 0;
  for (auto& e : fs::recursive_directory_iterator(index_dir(), ec)) {
    struct stat st {};
    if (e.is_regular_file(ec) && ::stat(e.path().c_str(), &st) == 0)
      total += static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

}  // namespace mailark
