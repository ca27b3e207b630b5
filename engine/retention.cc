#include "engine/retention.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "common/ascii.h"
#include "common/dates.h"
#include "common/json_text.h"
#include "engine/engine.h"
#include "engine/index_fields.h"
#include "engine/mailbox.h"
#include "indexer/index.h"

namespace mailark {
namespace {

constexpr std::string_view kSetting = "retention";
constexpr std::int64_t kMaxDays = 36500;  // a hundred years
constexpr std::int64_t kDay = 86400;

Error bad(const std::string& what) { return make_error(ErrorCode::kInvalidArgument, what); }

bool domain_matches(std::string_view address, const std::string& domain) {
  const auto at = address.rfind('@');
  if (at == std::string_view::npos) return false;
  const std::string d = ascii_lower(address.substr(at + 1));
  return d == domain || (d.size() > domain.size() && d.compare(d.size() - domain.size(), domain.size(), domain) == 0 &&
                         d[d.size() - domain.size() - 1] == '.');
}

bool rule_matches(const RetentionRule& rule, const ArchiveRecord& r) {
  if (!rule.direction.empty() && rule.direction != direction_name(r.envelope.direction)) return false;
  if (rule.domain.empty()) return true;
  if (domain_matches(r.envelope.mail_from, rule.domain)) return true;
  for (const auto& a : r.envelope.rcpt_to)
    if (domain_matches(a, rule.domain)) return true;
  return domain_matches(r.envelope.custodian, rule.domain);
}

}  // namespace

Result<std::int64_t> parse_retention_days(std::string_view text) {
  std::int64_t unit = 1;
  if (!text.empty() && (text.back() == 'd' || text.back() == 'y')) {
    unit = text.back() == 'y' ? 365 : 1;
    text.remove_suffix(1);
  }
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || n < 0 || n > kMaxDays / unit)
    return bad("a retention is a number of days (90, 90d) or years (7y), at most " + std::to_string(kMaxDays) + " days");
  return n * unit;
}

Result<RetentionRule> parse_retention_rule(std::string_view spec) {
  RetentionRule rule;
  const auto colon = spec.rfind(':');
  if (colon == std::string_view::npos)
    return bad("a rule is [DIRECTION][,domain=DOMAIN]:DAYS (inbound:1y, domain=example.com:7y), not \"" +
               std::string(spec) + "\"");
  MAILARK_ASSIGN_OR_RETURN(rule.days, parse_retention_days(spec.substr(colon + 1)));
  if (rule.days == 0) return bad("a rule keeps mail at least one day (the default may be 0: forever)");
  std::string_view what = spec.substr(0, colon);
  while (!what.empty()) {
    const auto comma = what.find(',');
    std::string_view part = what.substr(0, comma);
    what = comma == std::string_view::npos ? std::string_view{} : what.substr(comma + 1);
    if (part.rfind("domain=", 0) == 0) {
      rule.domain = ascii_lower(part.substr(7));
      if (rule.domain.empty() || rule.domain.find_first_of("@ \t,:") != std::string::npos)
        return bad("\"" + std::string(part) + "\" is not a domain");
    } else if (part == "inbound" || part == "outbound" || part == "import") {
      rule.direction = std::string(part);
    } else {
      return bad("\"" + std::string(part) + "\" is neither a direction (inbound, outbound, import) nor domain=DOMAIN");
    }
  }
  if (rule.direction.empty() && rule.domain.empty())
    return bad("a rule names a direction or a domain (the default is --default)");
  return rule;
}

std::string retention_rule_text(const RetentionRule& rule) {
  std::string out = rule.direction;
  if (!rule.domain.empty()) out += (out.empty() ? "" : ",") + std::string("domain=") + rule.domain;
  return out + ":" + std::to_string(rule.days);
}

std::string retention_policy_json(const RetentionPolicy& p) {
  nlohmann::json rules = nlohmann::json::array();
  for (const auto& r : p.rules) rules.push_back({{"direction", r.direction}, {"domain", r.domain}, {"days", r.days}});
  return json_text(nlohmann::json{{"v", 1},
                                  {"minimum_days", p.minimum_days},
                                  {"default_days", p.default_days},
                                  {"rules", rules},
                                  {"set_at", p.set_at},
                                  {"set_by", p.set_by}});
}

Result<RetentionPolicy> parse_retention_policy(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object() || j.value("v", 0) != 1)
    return make_error(ErrorCode::kCorrupt, "the archive's retention policy does not read (policy v1 expected)");
  RetentionPolicy p;
  try {
    p.minimum_days = j.value("minimum_days", std::int64_t{0});
    p.default_days = j.value("default_days", std::int64_t{0});
    p.set_at = j.value("set_at", std::int64_t{0});
    p.set_by = j.value("set_by", "");
    for (const auto& r : j.value("rules", nlohmann::json::array()))
      p.rules.push_back({r.value("direction", ""), r.value("domain", ""), r.value("days", std::int64_t{0})});
  } catch (const nlohmann::json::exception& e) {
    return make_error(ErrorCode::kCorrupt, std::string("the archive's retention policy does not read: ") + e.what());
  }
  return p;
}

Status check_retention_policy(const RetentionPolicy& p) {
  if (p.minimum_days < 0 || p.minimum_days > kMaxDays) return bad("the minimum is 0 to " + std::to_string(kMaxDays) + " days");
  if (p.default_days < 0 || p.default_days > kMaxDays) return bad("the default is 0 (forever) to " + std::to_string(kMaxDays) + " days");
  if (p.default_days != 0 && p.default_days < p.minimum_days)
    return bad("the default (" + std::to_string(p.default_days) + " days) is shorter than the minimum retention (" +
               std::to_string(p.minimum_days) + " days)");
  for (const auto& r : p.rules) {
    if (r.days < 1 || r.days > kMaxDays) return bad("rule " + retention_rule_text(r) + ": 1 to " + std::to_string(kMaxDays) + " days");
    if (r.days < p.minimum_days)
      return bad("rule " + retention_rule_text(r) + " is shorter than the minimum retention (" +
                 std::to_string(p.minimum_days) + " days)");
  }
  return ok_status();
}

Result<RetentionPolicy> apply_retention_change(RetentionPolicy p, const RetentionChange& change) {
  if (change.minimum) {
    MAILARK_ASSIGN_OR_RETURN(p.minimum_days, parse_retention_days(*change.minimum));
  }
  if (change.default_days) {
    if (*change.default_days == "forever") {
      p.default_days = 0;
    } else {
      MAILARK_ASSIGN_OR_RETURN(p.default_days, parse_retention_days(*change.default_days));
    }
  }
  if (change.clear_rules) p.rules.clear();
  for (const auto& spec : change.rules) {
    MAILARK_ASSIGN_OR_RETURN(RetentionRule r, parse_retention_rule(spec));
    std::erase_if(p.rules, [&](const RetentionRule& x) { return x.direction == r.direction && x.domain == r.domain; });
    p.rules.push_back(std::move(r));
  }
  return p;
}

nlohmann::json retention_policy_view(const RetentionPolicy& p) {
  nlohmann::json rules = nlohmann::json::array();
  for (const auto& r : p.rules)
    rules.push_back({{"direction", r.direction}, {"domain", r.domain}, {"days", r.days}, {"text", retention_rule_text(r)}});
  return {{"minimum_days", p.minimum_days},
          {"default_days", p.default_days},
          {"rules", rules},
          {"set_at", p.set_at ? iso8601_date(p.set_at) : ""},
          {"set_by", p.set_by}};
}

Result<RetentionPolicy> retention_policy(const Archive& archive) {
  MAILARK_ASSIGN_OR_RETURN(auto stored, archive.setting(kSetting));
  if (!stored) return RetentionPolicy{};
  return parse_retention_policy(*stored);
}

Result<RetentionPolicy> set_retention_policy(Archive& archive, const RetentionPolicy& next) {
  MAILARK_TRY(check_retention_policy(next));
  RetentionPolicy before;
  MAILARK_TRY(archive.update_setting(kSetting, [&](std::optional<std::string>& value) -> Status {
    if (value) {
      MAILARK_ASSIGN_OR_RETURN(before, parse_retention_policy(*value));
    }
    if (next.minimum_days < before.minimum_days)
      return bad("the minimum retention is " + std::to_string(before.minimum_days) +
                 " days and can never be shortened (asked: " + std::to_string(next.minimum_days) + ")");
    value = retention_policy_json(next);
    return ok_status();
  }));
  return before;
}

std::int64_t retention_days(const RetentionPolicy& policy, const ArchiveRecord& record) {
  std::int64_t days = -1;
  for (const auto& rule : policy.rules)
    if (rule_matches(rule, record)) days = std::max(days, rule.days);
  return days < 0 ? policy.default_days : days;
}

namespace {

// Every archive id a legal hold keeps: the matches of each held query, and every copy of a matching
// message (the same bytes held by another custodian, or delivered again).
Result<std::set<std::uint64_t>> held_ids(const RetentionContext& ctx, const std::vector<std::string>& queries,
                                         bool& everything) {
  std::set<std::uint64_t> held;
  everything = false;
  for (const auto& q : queries) {
    if (q.empty()) {
      everything = true;
      return held;
    }
    // Every match, a part of the index at a time (as an export collects them: export_matches).
    indexer::SearchOptions o;
    o.exact_total = true;
    o.bounded = false;  // a case's searches OR'ed: each ran within the bounds when saved
    o.parts = indexer::parts_for(ctx.archive->head().seq);
    o.limit = std::numeric_limits<std::uint32_t>::max();
    for (o.part = 0; o.part < o.parts; ++o.part) {
      MAILARK_ASSIGN_OR_RETURN(auto res, ctx.search(q, o));
      for (const auto& h : res.hits) held.insert(h.id);
    }
  }
  MAILARK_ASSIGN_OR_RETURN(auto snap, ctx.archive->snapshot());
  std::set<std::uint64_t> copies;
  for (std::uint64_t id : held) {
    auto r = snap->record(id);
    if (!r) continue;
    if (auto c = snap->copies(r->content_sha256)) copies.insert(c->begin(), c->end());
  }
  held.insert(copies.begin(), copies.end());
  return held;
}

}  // namespace

Result<RereadReport> reread_older_segments(const RetentionContext& ctx, const std::function<void(const std::string&)>& done) {
  RereadReport rep;
  Archive& archive = *ctx.archive;
  MAILARK_ASSIGN_OR_RETURN(auto index_segs, indexer::index_segments(ctx.index_dir));
  const std::vector<SegmentInfo> segments = archive.segments();
  for (const auto& ix : index_segs) {
    if (!ix.sealed && ix.remote.empty() && ix.first == segments.back().first) rep.live_older = ix.older_reading;
    // A segment an earlier release's retention left with gaps is written whole, with placeholders
    // (indexer/index.h build_expired_document): Xapian cannot search it whole
    // (Retention.ASegmentAnEarlierReleaseExpiredIsWrittenWithoutGaps).
    if (!ix.sealed || !ix.remote.empty() || (ix.older_reading == 0 && ix.gaps == 0)) continue;
    auto seg = std::find_if(segments.begin(), segments.end(), [&](const SegmentInfo& s) { return s.first == ix.first; });
    if (seg == segments.end() || seg + 1 == segments.end()) continue;  // sealed index segments are closed ones
    MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
    std::vector<std::uint64_t> keep;
    std::string unread;
    MAILARK_TRY(snap->scan(
        seg->first,
        [&](const ArchiveRecord& r, std::string_view) {
          if (r.seq > seg->last) return false;
          keep.push_back(r.seq);
          return true;
        },
        [&](std::uint64_t seq, const Error& e) {
          unread = "record " + std::to_string(seq) + " does not read: " + e.context;
          return false;
        }));
    const std::string name = "segment " + std::to_string(seg->first) + "-" + std::to_string(seg->last);
    if (!unread.empty()) {  // its documents stay as they are: nothing is dropped from the index
      rep.left.push_back(name + ": " + unread);
      continue;
    }
    auto built = indexer::rewrite_sealed_segment(
        ctx.index_dir, seg->first, keep,
        [&](std::uint64_t id) { return document_for_id(*snap, id, ctx.limits, ctx.pairs.get()); },
        ctx.limits.index_min_free_bytes, "reading the index segment from record " + std::to_string(seg->first) + " again");
    if (!built) {
      rep.left.push_back(name + ": " + built.error().context);
      continue;
    }
    rep.segments++;
    rep.documents += *built;
    if (done) done(name + ": " + std::to_string(*built) + " documents");
  }
  return rep;
}

Result<RetentionReport> run_retention(Engine& engine, const RetentionPolicy& policy, const RetentionOptions& options) {
  MAILARK_ASSIGN_OR_RETURN(indexer::IndexWriter * writer, engine.index_writer());
  MAILARK_TRY(engine.catch_up_index(nullptr));
  MAILARK_TRY(indexer::seal_closed_segments(engine.index_dir(), engine.options().limits.index_min_free_bytes));
  RetentionContext ctx;
  ctx.archive = &engine.archive();
  ctx.index_dir = engine.index_dir();
  ctx.limits = engine.options().limits;
  ctx.search = [&engine](const std::string& q, const indexer::SearchOptions& o) { return engine.search(q, o); };
  ctx.pairs = writer->pair_words();
  ctx.index_watermark = writer->watermark();
  // Segments an older release indexed are read again first, so that a legal hold's search (a fresh
  // reader each time: Engine::search) judges them and their mail expires in this run.
  RereadReport reread;
  if (!options.dry_run) {
    MAILARK_ASSIGN_OR_RETURN(reread, reread_older_segments(ctx));
  }
  auto rep = run_retention(ctx, policy, options);
  if (rep) rep->reread = std::move(reread);
  return rep;
}

Result<RetentionReport> run_retention(const RetentionContext& ctx, const RetentionPolicy& policy,
                                      const RetentionOptions& options) {
  RetentionReport rep;
  rep.dry_run = options.dry_run;
  Archive& archive = *ctx.archive;
  if (!options.dry_run && !options.key) return bad("retention needs the archive's signing key for its tombstones");
  if (!options.dry_run) MAILARK_TRY(archive.finish_expiries());
  bool hold_everything = false;
  // While any hold stands, a record the index could not read (a placeholder, is:unindexed: its words,
  // custodian and date are not in the index) cannot be shown to be outside it: held too
  // (Retention.WhatAHoldsSearchCannotJudgeIsKept).
  std::vector<std::string> held_queries = options.held_queries;
  if (!held_queries.empty()) held_queries.push_back("is:unindexed");
  MAILARK_ASSIGN_OR_RETURN(const std::set<std::uint64_t> held, held_ids(ctx, held_queries, hold_everything));

  std::vector<SegmentInfo> segments = archive.segments();
  std::map<std::uint64_t, indexer::IndexSegment> index;
  MAILARK_ASSIGN_OR_RETURN(auto index_segs, indexer::index_segments(ctx.index_dir));
  for (const auto& s : index_segs) index[s.first] = s;
  // Newest first: a message a later segment holds in an earlier one's pack (a duplicate, a
  // custodian's copy, a pack an older release filled across a cut) is carried forward into the live
  // segment only when its holder outlives this run, never for a holder that expires after it
  // (Retention.ExpiryNewestFirstCarriesOnlyWhatOutlivesTheRun).
  for (std::size_t i = segments.empty() ? 0 : segments.size() - 1; i-- > 0;) {
    const SegmentInfo& seg = segments[i];
    if (seg.last < seg.first) continue;
    RetentionSegment out;
    out.first = seg.first;
    out.last = seg.last;
    out.period = seg.period;
    out.closed_at = segments[i + 1].opened_at;
    std::vector<std::uint64_t> due, remaining;
    {
      MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
      if (out.closed_at == 0) {
        // A segment of an archive from before segments kept no opening time: its last record's.
        if (auto last = snap->record(seg.last)) out.closed_at = last->archived_at;
      }
      Status walked = snap->scan(
          seg.first,
          [&](const ArchiveRecord& r, std::string_view) {
            if (r.seq > seg.last) return false;
            out.records++;
            remaining.push_back(r.seq);
            const std::int64_t days = retention_days(policy, r);
            if (days <= 0 || out.closed_at == 0 || out.closed_at + days * kDay > options.now) return true;
            out.due++;
            if (hold_everything || held.count(r.seq)) {
              out.held++;
              return true;
            }
            if (archive.queue_entry(r.seq)) {
              out.pending++;
              return true;
            }
            if (auto q = archive.quarantine_entry(r.seq); q && q->status == QuarantineStatus::kHeld) {
              out.pending++;
              return true;
            }
            due.push_back(r.seq);
            return true;
          },
          [&](std::uint64_t seq, const Error& e) {
            out.skipped = "record " + std::to_string(seq) + " does not read: " + e.context;
            return false;
          });
      MAILARK_TRY(walked);
    }
    // An index segment that still has documents of expired records (an expiry stopped before its
    // index was written again) is written now.
    const auto ix = index.find(seg.first);
    const bool index_stale = ix != index.end() && ix->second.documents > out.records;
    if (out.due == 0 && !index_stale) continue;
    // Holds are answered by the index: a segment it does not hold whole is left for a later run.
    if (out.skipped.empty() && ctx.index_watermark < seg.last)
      out.skipped = "the index does not hold all of it yet (a later run expires it)";
    if (out.skipped.empty() && ix != index.end() && !ix->second.remote.empty())
      out.skipped = "its index is served from another machine (`mailark segments local` first)";
    if (out.skipped.empty() && (ix == index.end() || !ix->second.sealed))
      out.skipped = "its index segment is not sealed yet (it is once every shard has indexed mail of the next segment)";
    // A hold's search may miss a message whose document an older release read (a word it wrote
    // otherwise: indexer/schema.h kReading): while a hold stands, such a segment waits for `mailark
    // reindex` (Retention.WhatAHoldsSearchCannotJudgeIsKept).
    if (out.skipped.empty() && !hold_everything && !options.held_queries.empty() && out.due > 0 &&
        ix != index.end() && ix->second.older_reading > 0)
      out.skipped = "its index holds " + std::to_string(ix->second.older_reading) +
                    " documents an older release read, which a legal hold's search may not find, and it "
                    "could not be read again now (see above; `mailark reindex` reads them all): expiry goes on "
                    "at the next run after it";
    // A segment an older release kept in the main environment moves into a store of its own first
    // (with every such segment after it), and then expires like any other
    // (tests/e2e/test_upgrade.py test_format_four_segments_move_into_stores_and_expire).
    if (out.skipped.empty() && !seg.own_store && !due.empty()) {
      out.moves_to_store = true;
      if (!options.dry_run) {
        auto moved = archive.move_segments_to_stores(seg.first);
        if (!moved && moved.error().code != ErrorCode::kUnsupported) return moved.error();
        if (!moved) {
          out.moves_to_store = false;
          out.skipped = moved.error().context + "; " + moved.error().hint;
        } else {
          for (const SegmentMove& m : *moved) {
            for (auto& s : segments)
              if (s.first == m.first) s.own_store = true;
            rep.moved.push_back(m);
          }
        }
      }
    }
    if (out.skipped.empty()) out.expirable = due.size();
    if (options.progress)
      options.progress("segment " + std::to_string(seg.first) + "-" + std::to_string(seg.last) + " (" + seg.period +
                       "): " + std::to_string(due.size()) + " to expire, " + std::to_string(out.held) + " held");
    if (!options.dry_run && out.skipped.empty() && (!due.empty() || index_stale)) {
      std::vector<std::uint64_t> kept = remaining;
      if (!due.empty()) {
        ExpiryRequest req;
        req.segment = seg.first;
        req.seqs = due;
        req.by = options.by;
        req.now = options.now;
        std::string rules;
        for (const auto& r : policy.rules) rules += (rules.empty() ? "" : ", ") + retention_rule_text(r);
        req.reason = "retention policy (default " + std::to_string(policy.default_days) + " days" +
                     (rules.empty() ? "" : "; rules " + rules) + "); segment closed " + std::to_string(out.closed_at);
        req.sign = [&](std::string_view body) { return options.key->sign(body); };
        MAILARK_ASSIGN_OR_RETURN(out.outcome, archive.expire(req));
        out.expired = out.outcome->expired;
        kept.clear();
        std::set_difference(remaining.begin(), remaining.end(), due.begin(), due.end(), std::back_inserter(kept));
      }
      MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
      MAILARK_ASSIGN_OR_RETURN(std::uint64_t built,
                               indexer::expire_segment_documents(
                                   ctx.index_dir, seg.first, kept,
                                   [&](std::uint64_t id) { return document_for_id(*snap, id, ctx.limits, ctx.pairs.get()); },
                                   ctx.limits.index_min_free_bytes));
      rep.index_documents_rebuilt += built;
    }
    rep.due += out.due;
    rep.held += out.held;
    rep.pending += out.pending;
    rep.expired += out.expired;
    rep.expirable += out.expirable;
    rep.segments.push_back(std::move(out));
  }
  std::reverse(rep.segments.begin(), rep.segments.end());  // reported oldest first, as listed
  if (!options.dry_run && options.mailboxes) {
    MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
    MAILARK_ASSIGN_OR_RETURN(const std::vector<ExpiredRun> runs, snap->expired_runs());
    if (!runs.empty()) {
      MAILARK_ASSIGN_OR_RETURN(rep.mailbox_entries_removed, options.mailboxes->forget_expired([&](std::uint64_t seq) {
        auto it = std::lower_bound(runs.begin(), runs.end(), seq,
                                   [](const ExpiredRun& r, std::uint64_t s) { return r.last < s; });
        return it != runs.end() && it->first <= seq;
      }));
    }
  }
  return rep;
}

}  // namespace mailark
