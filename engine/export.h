// eDiscovery exports that anyone can check without the archive and without trusting mailark.
//
// An export is one zip file (libarchive; entries stored, not compressed, so every message is its exact
// archived bytes), with its entries in this order:
//   checkpoint      the signed checkpoint of the archive's Merkle tree the export proves against
//   manifest.jsonl  line 1: the export's header (JSON: format "mailark-export-v3", container, origin,
//                   verifier key, tree size and root, query, case, when, how many); then one line per
//                   message, in the order of the messages below: archive id, the file (or the offset
//                   and length inside messages.mbox), SHA-256, size, Message-ID, envelope, verdict,
//                   custodians, the archive record exactly as stored (base64) and its RFC 9162
//                   inclusion proof (hex) in the checkpoint's tree
//   manifest.sig    a signed note (the archive's Ed25519 key) over "mailark.export/v1", the origin and
//                   the SHA-256 of manifest.jsonl: no byte of the manifest changes unseen
//   loadfile.csv    (v3) the load file review platforms read: one row per message, in the same order,
//                   of its header fields (date, from, to, cc, bcc, subject, attachments; mailark's
//                   reading, sealed but not proved) beside the manifest's (id, file, SHA-256, size,
//                   Message-ID, custodians, envelope, verdict, copies; the verifier checks these
//                   against the manifest). RFC 4180 CSV, UTF-8 with a byte-order mark, every cell
//                   quoted, one line a row (see csv_cell in export.cc for what a cell holds)
//   messages/<id>.eml  each message (container "eml"), or messages.mbox (container "mbox": mboxrd,
//                   every line matching ^>*From  quoted with one more '>', undone by the verifier)
// and the zip's comment is the seal: a signed note over the SHA-256 of every byte before it, so that
// not one byte of the file changes unseen, the zip's own directory included.
// verify_export checks all of it in one pass over the messages, the manifest read in step with them
// from a second reader, both through the zip's central directory (what unzip extracts); tests/e2e/tlog.py checks it again in Python from the
// published definitions (tests/e2e/test_export.py). Any changed byte is detected (same test; every
// byte of a 10-message export flipped in turn: docs/BENCHMARKS.md).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/result.h"
#include "engine/archive.h"

namespace mailark {
namespace indexer {
class IndexReader;
class FieldSource;
}  // namespace indexer

enum class ExportContainer { kEml, kMbox };

// The archive ids (from 1) an export holds: one bit for each record of the archive (125 KiB at a million
// records), so that an export's memory does not grow with how many messages it holds (BENCHMARKS
// "Exports": the same peak at 21,903 and 1,000,000 messages, mbox). Read in ascending order.
class ExportIds {
 public:
  void add(std::uint64_t id);
  void remove(std::uint64_t id);
  bool contains(std::uint64_t id) const;
  // The smallest id > after, or 0 when there is none.
  std::uint64_t next(std::uint64_t after) const;
  std::uint64_t count() const { return count_; }
  std::uint64_t largest() const;  // 0 when empty

 private:
  std::vector<std::uint64_t> words_;
  std::uint64_t count_ = 0;
};

struct ExportRequest {
  ExportIds ids;  // written in ascending order
  // The Message-IDs of these ids (in order; "" for none), asked for a batch at a time as the manifest
  // is written (from the index: IndexReader::message_ids). Null: no Message-IDs in the manifest.
  // An error stops the export (a manifest never lacks a Message-ID the index holds).
  std::function<Result<std::vector<std::string>>(const std::vector<std::uint64_t>& ids)> message_ids;
  ExportContainer container = ExportContainer::kEml;
  std::string path;               // the zip to write (replaced atomically when done)
  std::string query;              // what found them, recorded in the header
  std::string case_name;          // the eDiscovery case, when there is one
  std::string created_by;         // who asked (the user, or the operating-system account)
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
  // Asked as often as progress: true stops the export (nothing is left behind; kInternal "cancelled").
  std::function<bool()> cancelled;
};

// What the search behind an export could not judge, which the officer is told with the export (and the
// audit log records): records the index could not read (placeholders, is:unindexed: no search finds
// them, whatever it asks; `mailark verify` lists them) and documents an older release read (a word it
// wrote otherwise may not be found; a running server reads sealed segments again, `mailark reindex`
// all of them). Counts over the whole index,
// not only the case's mail. Test: tests/e2e/test_upgrade.py
// test_format_four_segments_stay_in_place_and_the_next_one_gets_a_store.
struct SearchExceptions {
  std::uint64_t unsearchable = 0;
  std::uint64_t older_reading = 0;
  bool any() const { return unsearchable || older_reading; }
  // One line each, for a person ("" when there is nothing to say). Inline: the short `mailark`
  // binary (search, case search) says it too without linking the export code.
  std::string text() const;
};
inline std::string SearchExceptions::text() const {
  std::string out;
  if (unsearchable)
    out += std::to_string(unsearchable) +
           " records of the archive are not in the index's words (is:unindexed): no search finds them, this "
           "one's included (`mailark verify` lists them)\n";
  if (older_reading)
    out += std::to_string(older_reading) +
           " documents of the index were read by an older release, which wrote some words otherwise (accents, "
           "Unicode forms, scripts without spaces): this search may not find all of them (a running server "
           "reads its sealed segments again by itself, `mailark segments` shows what is left; `mailark reindex` "
           "reads them all)\n";
  return out;
}

Result<SearchExceptions> search_exceptions(indexer::IndexReader& reader);

struct ExportReport {
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;  // of the messages
  Checkpoint checkpoint;
  std::string manifest_sha256;  // hex
  SearchExceptions exceptions;  // set by the caller from the index it searched (search_exceptions)
};


// Every message `query` finds, a page of the search at a time (every candidate of a phrase checked,
// so none is missed; one record a message when `one_per_message`): what an export of a query or a
// case holds. `fields` checks phrases (an ArchiveFieldSource). Errors: the search's.
Result<ExportIds> export_matches(indexer::IndexReader& reader, const std::string& query, bool one_per_message,
                                 indexer::FieldSource* fields);

// Writes the export from one snapshot of the archive (a server appending meanwhile changes nothing of
// it). Errors: kNotFound (an id not in the archive), kUnsupported (no Merkle tree: an older archive
// opened read-only), kIo.
Result<ExportReport> write_export(const Archive& archive, const SigningKey& key, const ExportRequest& request);

struct ExportCheck {
  bool ok = false;
  std::string problem;           // the first thing wrong, naming the message or entry
  std::uint64_t messages = 0;    // checked
  std::uint64_t bytes = 0;
  std::string origin;
  Checkpoint checkpoint;
  std::string query, case_name, created_at;
  bool key_from_export = false;  // no key was given: checked with the verifier key the export names
  bool load_file = false;        // it has a load file (v3), and its rows were checked against the manifest
};

// Checks an export without the archive: the checkpoint's and the manifest's signatures (with
// `verifier_key` when given, else the one the export names, said in the result), every message's
// SHA-256 and size, every record's own hash and fields against the manifest, every inclusion proof
// against the signed root, and that nothing is missing, added or out of order. Errors only when there
// is no such file (kNotFound); everything else, an unreadable zip included, is a problem in the
// ExportCheck.
Result<ExportCheck> verify_export(const std::string& path, const std::string& verifier_key,
                                  const std::function<void(std::uint64_t done, std::uint64_t total)>& progress);

// Fuzzing only (fuzz/export_fuzz.cc): the same checks with signatures, the seal and proofs not
// required to hold, so that hostile manifests, records and messages reach every parser.
Result<ExportCheck> verify_export_for_fuzzing(const std::string& path);

}  // namespace mailark
