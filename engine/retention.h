// Retention: how long archived mail is kept, and the expiry that removes what is past it.
//
// A policy (kept in the archive, meta "setting:retention", docs/FORMAT.md "Retention policy") gives a
// number of days by direction and domain, a default, and a minimum that can only ever grow: no rule
// nor default may be shorter than it, and no later policy may lower it (set_retention_policy checks
// both in the transaction that writes it; test Retention.TheMinimumIsNeverShortened).
//
// Expiry works by time segment (engine/archive.h): a closed segment's records fall due together, when
// the segment is older than their rule (measured from the segment's end, the moment the next one
// opened). A record due is removed unless a legal hold keeps it (CaseStore::held_queries, evaluated
// now over the index, every copy of a matching message included), it still has mail to deliver, or it
// waits in quarantine. While any hold stands, what the index cannot answer for is kept: records it
// holds as placeholders (is:unindexed), and whole segments whose documents an older release read
// (IndexSegment::older_reading; `mailark reindex` first). Test Retention.WhatAHoldsSearchCannotJudgeIsKept. Archive::expire writes the signed tombstone that stands for what it removed;
// the index segment is written again without the expired documents, and the mailbox views forget
// them. Tests: Retention.* in tests/retention_test.cc, tests/e2e/test_cases.py test_retention_*.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/checkpoint.h"
#include "common/result.h"
#include "engine/archive.h"
#include "indexer/index.h"

namespace mailark {

class Engine;
class MailboxStore;

struct RetentionRule {
  std::string direction;  // "inbound", "outbound", "import", or empty: any
  std::string domain;     // lower case; matches an envelope address of that domain or a subdomain; empty: any
  std::int64_t days = 0;  // > 0
};

struct RetentionPolicy {
  std::int64_t minimum_days = 0;  // 0: none yet; once set, never lowered
  std::int64_t default_days = 0;  // records no rule matches; 0: kept forever
  std::vector<RetentionRule> rules;
  std::int64_t set_at = 0;
  std::string set_by;
  bool empty() const { return default_days == 0 && rules.empty(); }
};

// "DIRECTION:DAYS", "domain=DOMAIN:DAYS", "DIRECTION,domain=DOMAIN:DAYS"; days may end in d or y
// (365 days). Errors: kInvalidArgument naming what is wrong.
Result<RetentionRule> parse_retention_rule(std::string_view spec);
// "7y" = 2555, "90d" = 90, "90" = 90.
Result<std::int64_t> parse_retention_days(std::string_view text);
std::string retention_rule_text(const RetentionRule& rule);

Result<RetentionPolicy> parse_retention_policy(std::string_view json);
std::string retention_policy_json(const RetentionPolicy& policy);
// Every rule and the default (unless 0, forever) at least the minimum; days within 1..36500.
Status check_retention_policy(const RetentionPolicy& policy);

// A change to a policy as an administrator asks for it (`mailark retention set`, PUT
// /api/v1/admin/retention): what is absent stays as it was. `rules` are specs as parse_retention_rule
// reads them; each replaces the rule of the same direction and domain, after every rule is dropped
// when `clear_rules`. Errors: kInvalidArgument naming what does not read (the result's checks against
// the minimum are set_retention_policy's).
struct RetentionChange {
  std::optional<std::string> minimum;       // "1y", "90d", "90"
  std::optional<std::string> default_days;  // the same, or "forever"
  bool clear_rules = false;
  std::vector<std::string> rules;
};
Result<RetentionPolicy> apply_retention_change(RetentionPolicy policy, const RetentionChange& change);
// The policy as the CLI's --json and the REST API show it: days, each rule with its spec, when and by whom.
nlohmann::json retention_policy_view(const RetentionPolicy& policy);

// The archive's policy (an empty one when none was set).
Result<RetentionPolicy> retention_policy(const Archive& archive);
// Replaces the policy, in one transaction with the check that its minimum is not below the stored
// one. Returns the policy it replaced.
Result<RetentionPolicy> set_retention_policy(Archive& archive, const RetentionPolicy& next);

// The days this record is kept (the longest of the rules it matches, else the default; 0: forever).
std::int64_t retention_days(const RetentionPolicy& policy, const ArchiveRecord& record);

struct RetentionOptions {
  std::int64_t now = 0;
  bool dry_run = false;   // decide and report, remove nothing
  std::string by;         // the audit actor
  // Legal holds: saved searches of held cases (an empty query holds everything).
  std::vector<std::string> held_queries;
  const SigningKey* key = nullptr;  // the archive's (checkpoint.key): signs the tombstones
  MailboxStore* mailboxes = nullptr;  // when the data folder has one: its views forget expired mail
  std::function<void(const std::string&)> progress;  // a line per segment
};

struct RetentionSegment {
  std::uint64_t first = 0, last = 0;
  std::string period;
  std::int64_t closed_at = 0;
  std::uint64_t records = 0;   // not expired before this run
  std::uint64_t due = 0;       // past their retention
  std::uint64_t held = 0;      // due, kept by a legal hold
  std::uint64_t pending = 0;   // due, kept: queued for delivery or undecided in quarantine
  std::uint64_t expired = 0;   // removed now (0 in a dry run)
  std::uint64_t expirable = 0; // due, neither held nor pending, in a segment not skipped: what a run
                               // removes (= expired) or a dry run would
  bool moves_to_store = false; // kept in the main environment by an older release: moved into a store
                               // of its own first (a dry run says it would be)
  std::string skipped;         // why the segment was not expired, when it was not
  std::optional<ExpiryOutcome> outcome;
};

struct RereadReport {
  unsigned segments = 0;           // segments read again
  std::uint64_t documents = 0;     // documents built
  std::vector<std::string> left;   // "segment F: why" for each it could not (no room, ...)
  // Documents of the live segment (not sealed, so not read again) that an older release read: a
  // server then closes the live segment at its next message (Archive::close_live_segment_at_next_append),
  // so that it is sealed and read again by a later pass instead of at the end of its period.
  std::uint64_t live_older = 0;
};

struct RetentionReport {
  bool dry_run = false;
  std::vector<RetentionSegment> segments;  // closed segments with something due
  std::uint64_t expired = 0, held = 0, pending = 0, due = 0, expirable = 0;
  std::uint64_t mailbox_entries_removed = 0;
  std::uint64_t index_documents_rebuilt = 0;
  std::vector<SegmentMove> moved;  // segments moved out of the main environment into stores by this run
  RereadReport reread;  // segments an older release indexed, read again first (run_retention(Engine&...), not dry)
};

// What a retention run works with: the archive, its index (holds are searched in it; a segment is
// expired only when the index holds every record of it, and once its index segment is sealed), and
// how documents are built again.
struct RetentionContext {
  Archive* archive = nullptr;
  std::string index_dir;
  Limits limits;
  // Searches the index (the archive's one-hit-per-message rules need not apply: every copy of a
  // match is held anyway).
  std::function<Result<indexer::SearchResults>(const std::string& query, const indexer::SearchOptions&)> search;
  std::shared_ptr<const indexer::PairWords> pairs;  // the index's pair words (null: none yet)
  std::uint64_t index_watermark = 0;                // every record up to it is indexed
};

// Reads again, from the archive, every sealed and local index segment holding documents an older
// release read (indexer::IndexSegment::older_reading: a word it wrote otherwise, which a search, and
// a legal hold's, may miss): each shard is written again beside itself with every record of the
// segment (indexer::rewrite_sealed_segment), so that no `mailark reindex` of the whole archive, with
// the server stopped, is needed after an upgrade that changes the reading. The live segment's older
// documents are read again once it is sealed (RereadReport::live_older; a server closes it for that:
// tests/e2e/test_upgrade.py test_a_server_reads_older_segments_again_while_it_serves,
// Retention.TheLiveSegmentsOlderDocumentsAreReadOnceItIsClosed). A server does this in its daily
// pass (first a minute after it starts), and so does `mailark retention run`
// (run_retention(Engine&...)) before it expires anything; a caller of run_retention(context...) does
// it before it opens the reader its holds are searched with (a reader opened before keeps the older
// documents). Test: Retention.SegmentsAnOlderReleaseIndexedAreReadAgain. So is a sealed segment an
// earlier release's retention left with gaps in its shards' ids (indexer::IndexSegment::gaps), which
// Xapian cannot search whole: Retention.ASegmentAnEarlierReleaseExpiredIsWrittenWithoutGaps.
// `done` (may be null) is told of each segment read again, as "segment F-L: N documents".
Result<RereadReport> reread_older_segments(const RetentionContext& context,
                                           const std::function<void(const std::string&)>& done = {});

// Runs the policy over every closed segment. Safe beside a running server's appends, index writer
// and readers (a server's retention pass: api/retention.h): it writes only closed segments, and a
// store still being read is swapped at the next pass (Archive::finish_expiries).
Result<RetentionReport> run_retention(const RetentionContext& context, const RetentionPolicy& policy,
                                      const RetentionOptions& options);
// The same for an engine open read-write (the CLI's, holding the data folder's writer lock): the index
// is caught up and its closed segments sealed first (in a dry run too, so that it says what a run
// would do; neither removes anything).
Result<RetentionReport> run_retention(Engine& engine, const RetentionPolicy& policy, const RetentionOptions& options);

}  // namespace mailark
