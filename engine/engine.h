// The engine: one data folder (archive + index + scanner), as the CLI and the servers use it.
//
// Data folder layout (docs/FORMAT.md): DATA/archive (LMDB), DATA/index (Xapian glass).
// Opening for writing takes the data folder's writer lock (one writer at a time) and catches the index
// up with the archive, so a crash between an archive commit and the matching index commit loses
// nothing. Opening read-only never writes; search() on a lagging index catches up first when no
// writer holds the data folder.
//
// Thread safety: an Engine is used by one thread, except archive(), which is thread safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/limits.h"
#include "common/result.h"
#include "engine/archive.h"
#include "engine/data_lock.h"
#include "engine/message.h"
#include "indexer/index.h"
#include "scanner/scanner.h"

namespace mailark {

struct EngineOptions {
  std::string data_dir = "./mailark-data";
  Limits limits;
  bool read_only = false;
  // A read-write engine takes the data folder's writer lock (data_lock.h) as `writer`, unless it is
  // empty: the queue and quarantine commands write only what LMDB serialises, beside a server.
  std::string writer = "a writer";
  // Read-write engines catch the index up on open; reindex turns that off (it rebuilds anyway, and a
  // damaged index must not stop it).
  bool catch_up_on_open = true;
  // Signature directories for the scanner. Empty: the defaults (MAILARK_SIGNATURES, a colon-separated
  // list, if set; else the project's signatures/ and /var/lib/clamav).
  std::vector<std::string> signature_dirs;
  // libclamav's temporary folder. Empty: /dev/shm when it exists (tmpfs), else the system's.
  std::string scanner_temp_dir;
  // The scan host (mailark-scan) that runs libclamav in processes of its own (scanner/scan_host.h).
  // Empty: scans run in this process.
  std::string scanner_host;
};

std::vector<std::string> default_signature_dirs();

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> open(EngineOptions options);
  ~Engine();

  Archive& archive() { return *archive_; }
  // What the open did to the archive's main environment, for the log: its free pages given back
  // (Archive::compact_main_environment), or why not; empty when there was nothing to give back.
  const std::string& compaction_note() const { return compaction_note_; }
  const EngineOptions& options() const { return options_; }
  std::string archive_dir() const { return options_.data_dir + "/archive"; }
  std::string index_dir() const { return options_.data_dir + "/index"; }

  // The index writer, opened on first use (read-write engines only).
  Result<indexer::IndexWriter*> index_writer();
  // Loads the scanner (the signature engine) on first use.
  Result<const scanner::Scanner*> scanner();
  // Builds a new signature engine beside the one in use and swaps it in (SIGHUP).
  Status reload_scanner();

  // Indexes archive records newer than the index watermark. progress(done, total) may be null.
  Result<std::uint64_t> catch_up_index(const std::function<void(std::uint64_t, std::uint64_t)>& progress);
  // Deletes the index and rebuilds it from the archive: beside the old one, swapped in when done (a
  // failed reindex leaves the old index usable); or, when the index is a file system of its own (a
  // disk mounted on DATA/index, which rename(2) cannot move), in place: emptied, then caught up from
  // the archive as after a crash, its closed segments sealed where they are and its live one left
  // uncompacted (a reindex stopped part-way leaves an index behind the archive, which the next writer
  // catches up). Test: test_failures.py
  // test_reindex_and_compaction_of_an_index_on_a_disk_of_its_own.
  Result<std::uint64_t> reindex(const std::function<void(std::uint64_t, std::uint64_t)>& progress);
  // Is DATA/index a file system of its own (another device than the data folder)?
  bool index_on_own_file_system() const;

  // Trains a new compression dictionary from the newest `samples` archived messages and makes it the
  // one new messages are compressed with; older messages keep theirs. Returns the new dictionary id.
  Result<std::uint32_t> train_dictionary(std::size_t samples, std::size_t dictionary_bytes);

  // Rewrites the index compactly (after bulk imports) and swaps it in. Closes the index writer. Seals
  // the archive's closed segment stores first (Archive::seal_stores).
  Status compact_index();

  Result<indexer::SearchResults> search(const std::string& query, const indexer::SearchOptions& options);
  // The index as search() reads it (a lagging one caught up first, when no writer holds the folder).
  Result<std::unique_ptr<indexer::IndexReader>> open_reader();
  // The message model of an archived message, parsed from its stored bytes.
  Result<ParsedMessage> parse(const ArchiveRecord& record, std::string* raw_out = nullptr);

  std::uint64_t index_watermark();
  std::uint64_t index_bytes() const;
  // Records indexed as placeholders (is:unindexed): how many, and up to `limit` of them with why.
  Result<std::pair<std::uint64_t, std::vector<std::pair<std::uint64_t, std::string>>>> unindexed(std::size_t limit);
  // What `stats` says of the index, from one open of it: records indexed as placeholders
  // (is:unindexed), and documents whose subject and names a release before the RFC 2047 repairs read
  // (IndexReader::documents_read_before_repairs; `mailark reindex` reads them again).
  struct IndexHealth {
    std::uint64_t unindexed = 0;
    std::uint64_t read_before_repairs = 0;
  };
  Result<IndexHealth> index_health();

 private:
  Engine() = default;
  // Opens an index writer in dir that knows the archive's time segments.
  Result<std::unique_ptr<indexer::IndexWriter>> open_writer(const std::string& dir);
  Result<std::uint64_t> catch_up_into(indexer::IndexWriter& writer,
                                      const std::function<void(std::uint64_t, std::uint64_t)>& progress);
  Result<std::uint64_t> reindex_in_place(const std::function<void(std::uint64_t, std::uint64_t)>& progress);
  EngineOptions options_;
  std::unique_ptr<Archive> archive_;
  std::unique_ptr<indexer::IndexWriter> index_writer_;
  std::unique_ptr<scanner::Scanner> scanner_;
  std::unique_ptr<DataLock> lock_;
  std::string compaction_note_;
  // Before this process first reads the index beside a running server: asks the server to make what
  // it has archived searchable (engine/handoff.h, index.sock; its index otherwise commits every
  // archive.index_commit_interval_ms). Once per Engine; nothing when this process writes the index.
  void sync_with_server();
  bool synced_with_server_ = false;
};

}  // namespace mailark
