// mailark retention: the retention policy (how long mail is kept, and the minimum that can never be
// shortened), its run (expiry of what is past it, legal holds kept), and the signed tombstones that
// stand for what was removed (engine/retention.h).
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/dates.h"
#include "common/json_text.h"
#include "engine/checkpoint.h"
#include "engine/mailbox.h"
#include "engine/retention.h"
#include "indexer/index.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct RetentionArgs {
  bool json = false;
  std::string minimum, default_days;
  std::vector<std::string> rules;
  bool clear_rules = false;
  bool dry_run = false;
  std::string as_of;
};

nlohmann::json policy_json(const RetentionPolicy& p) { return retention_policy_view(p); }

std::string days_text(std::int64_t days) {
  if (days == 0) return "forever";
  if (days % 365 == 0) return std::to_string(days / 365) + (days == 365 ? " year" : " years");
  return std::to_string(days) + (days == 1 ? " day" : " days");
}

void print_policy(const RetentionPolicy& p) {
  if (p.empty() && p.minimum_days == 0) {
    std::cout << "no retention policy: every message is kept forever\n";
    return;
  }
  std::cout << "minimum retention: " << (p.minimum_days ? days_text(p.minimum_days) : std::string("none"))
            << (p.minimum_days ? " (can never be shortened)" : "") << "\n";
  std::cout << "default: " << days_text(p.default_days) << "\n";
  for (const auto& r : p.rules) std::cout << "rule: " << retention_rule_text(r) << " (" << days_text(r.days) << ")\n";
  if (p.set_at) std::cout << "set " << iso8601(p.set_at) << " by " << p.set_by << "\n";
}

int run_retention_show(const GlobalOptions& g, const RetentionArgs& args) {
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  auto policy = retention_policy((*engine)->archive());
  if (!policy) return report(policy.error());
  auto snap = (*engine)->archive().snapshot();
  if (!snap) return report(snap.error());
  auto tombs = (*snap)->tombstones();
  if (!tombs) return report(tombs.error());
  if (args.json) {
    std::cout << json_text(nlohmann::json{{"policy", policy_json(*policy)}, {"tombstones", tombs->size()}})
              << "\n";
    return kExitOk;
  }
  print_policy(*policy);
  std::cout << "tombstones: " << tombs->size() << "\n";
  return kExitOk;
}

int run_set(const GlobalOptions& g, const RetentionArgs& args) {
  // Beside a running server: the policy is one value in the archive's meta table, written in one
  // LMDB transaction (no writer lock needed).
  auto engine = open_engine(g, /*read_only=*/false, /*catch_up=*/false, /*writer=*/"");
  if (!engine) return report(engine.error());
  auto current = retention_policy((*engine)->archive());
  if (!current) return report(current.error());
  RetentionChange change;
  if (!args.minimum.empty()) change.minimum = args.minimum;
  if (!args.default_days.empty()) change.default_days = args.default_days;
  change.clear_rules = args.clear_rules;
  change.rules = args.rules;  // each replaces the rule for the same direction and domain
  auto changed = apply_retention_change(*current, change);
  if (!changed) return report(changed.error());
  RetentionPolicy next = std::move(*changed);
  next.set_at = unix_now();
  next.set_by = "cli:" + os_account();
  auto before = set_retention_policy((*engine)->archive(), next);
  if (!before) return report(before.error());
  // A configuration change: in the audit log with what it replaced.
  if (Status a =
          audit(g, "retention.set", "policy",
                json_text(nlohmann::json{{"before", policy_json(*before)}, {"after", policy_json(next)}}));
      !a)
    return report(a.error());
  if (args.json) {
    std::cout << json_text(nlohmann::json{{"policy", policy_json(next)}}) << "\n";
  } else {
    print_policy(next);
  }
  return kExitOk;
}

int run_run(const GlobalOptions& g, const RetentionArgs& args) {
  std::int64_t now = unix_now();
  if (!args.as_of.empty()) {
    if (!args.dry_run)
      return report(make_error(ErrorCode::kInvalidArgument, "--as-of only forecasts: use it with --dry-run"));
    auto day = indexer::parse_date_period(args.as_of);
    if (!day) return report(make_error(ErrorCode::kInvalidArgument, "--as-of takes a date (YYYY-MM-DD)"));
    now = day->second;
  }
  auto engine = open_engine(g, /*read_only=*/false, /*catch_up=*/true, "retention run");
  if (!engine) return report(engine.error());
  Engine& e = **engine;
  auto policy = retention_policy(e.archive());
  if (!policy) return report(policy.error());
  // Legal holds come from the case store; without it nothing can be known to be free of a hold.
  auto cases = case_store(g);
  if (!cases) return report(cases.error());
  auto held = (*cases)->held_queries();
  if (!held) return report(held.error());
  RetentionOptions o;
  o.now = now;
  o.dry_run = args.dry_run;
  o.by = "cli:" + os_account();
  o.held_queries = *held;
  std::optional<SigningKey> key;
  if (!args.dry_run) {
    auto k = archive_signing_key(g.data_dir, /*create=*/true);
    if (!k) return report(k.error());
    key = std::move(*k);
    o.key = &*key;
  }
  std::unique_ptr<MailboxStore> mailboxes;
  if (!args.dry_run && std::filesystem::exists(g.data_dir + "/mailbox/data.mdb")) {
    auto m = MailboxStore::open(g.data_dir + "/mailbox", false);
    if (!m) return report(m.error());
    mailboxes = std::move(*m);
    o.mailboxes = mailboxes.get();
  }
  if (!args.json) o.progress = [](const std::string& line) { std::cerr << line << "\n"; };
  auto rep = run_retention(e, *policy, o);
  if (!rep) return report(rep.error());
  nlohmann::json segs = nlohmann::json::array();
  nlohmann::json tombstones = nlohmann::json::array();
  for (const auto& s : rep->segments) {
    nlohmann::json j = {{"first", s.first},   {"last", s.last},       {"period", s.period},
                        {"closed_at", s.closed_at ? iso8601(s.closed_at) : ""},
                        {"records", s.records}, {"due", s.due},       {"held", s.held},
                        {"pending", s.pending}, {"expired", s.expired}, {"expirable", s.expirable},
                        {"skipped", s.skipped}, {"moves_to_store", s.moves_to_store}};
    if (s.outcome) {
      j["tombstone"] = s.outcome->tombstone.id;
      j["messages_removed"] = s.outcome->blobs_removed;
      j["messages_carried_forward"] = s.outcome->blobs_carried;
      j["store_removed"] = s.outcome->store_removed;
      tombstones.push_back(s.outcome->tombstone.id);
    }
    segs.push_back(std::move(j));
  }
  if (!args.dry_run) {
    if (Status a = audit(g, "retention.run", "policy",
                         json_text(nlohmann::json{{"expired", rep->expired},
                                                  {"held", rep->held},
                                                  {"pending", rep->pending},
                                                  {"tombstones", tombstones},
                                                  {"policy", policy_json(*policy)}}));
        !a)
      return report(a.error());
  }
  nlohmann::json moved = nlohmann::json::array();
  for (const auto& m : rep->moved)
    moved.push_back({{"first", m.first}, {"last", m.last}, {"records", m.records}, {"store_bytes", m.store_bytes}});
  if (args.json) {
    std::cout << json_text(nlohmann::json{{"dry_run", rep->dry_run},
                                          {"due", rep->due},
                                          {"expired", rep->expired},
                                          {"expirable", rep->expirable},
                                          {"held", rep->held},
                                          {"pending", rep->pending},
                                          {"mailbox_entries_removed", rep->mailbox_entries_removed},
                                          {"index_documents_rebuilt", rep->index_documents_rebuilt},
                                          {"segments_moved_to_stores", moved},
                                          {"segments_read_again", rep->reread.segments},
                                          {"documents_read_again", rep->reread.documents},
                                          {"not_read_again", rep->reread.left},
                                          {"live_older_reading", rep->reread.live_older},
                                          {"segments", segs}})
              << "\n";
    return kExitOk;
  }
  if (rep->reread.segments)
    std::cout << "read " << rep->reread.segments << " index segments an older release indexed again ("
              << rep->reread.documents << " documents)\n";
  for (const auto& why : rep->reread.left) std::cout << "not read again: " << why << "\n";
  if (rep->reread.live_older)
    std::cout << "the live segment holds " << rep->reread.live_older
              << " documents an older release indexed: a running server closes it at its next message and\n"
                 "reads it again once it is sealed\n";
  if (policy->empty()) std::cout << "no retention policy: every message is kept forever\n";
  for (const auto& s : rep->segments) {
    std::cout << "segment " << s.first << "-" << s.last << " (" << (s.period.empty() ? "-" : s.period) << "): "
              << s.due << " due, " << s.held << " held, " << s.pending << " waiting for delivery or quarantine";
    if (args.dry_run) {
      std::cout << ", " << s.expirable << " would expire";
    } else {
      std::cout << ", " << s.expired << " expired";
      if (s.outcome) std::cout << " (tombstone " << s.outcome->tombstone.id << ")";
    }
    if (!s.skipped.empty()) std::cout << "; not expired: " << s.skipped;
    else if (s.moves_to_store && args.dry_run)
      std::cout << "; kept in the main environment by an older release, it moves into a store of its own first";
    std::cout << "\n";
  }
  for (const auto& m : rep->moved)
    std::cout << "segment " << m.first << "-" << m.last << " moved out of the main environment into a store of its own ("
              << m.records << " records, " << human_bytes(m.store_bytes) << ")\n";
  const std::uint64_t n = args.dry_run ? rep->expirable : rep->expired;
  std::cout << (args.dry_run ? "would expire " : "expired ") << n << " message" << (n == 1 ? "" : "s") << "; "
            << rep->held << " kept by legal holds";
  if (rep->index_documents_rebuilt) std::cout << "; " << rep->index_documents_rebuilt << " index documents written again";
  std::cout << "\n";
  return kExitOk;
}

int run_tombstones(const GlobalOptions& g, const RetentionArgs& args) {
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  auto snap = (*engine)->archive().snapshot();
  if (!snap) return report(snap.error());
  auto tombs = (*snap)->tombstones();
  if (!tombs) return report(tombs.error());
  for (const auto& t : *tombs) {
    auto body = nlohmann::json::parse(t.body, nullptr, false);
    if (args.json) {
      std::cout << json_text(nlohmann::json{
                       {"id", t.id},
                       {"body", t.body},
                       {"signature",
                        to_hex(std::span<const std::uint8_t>(
                            reinterpret_cast<const std::uint8_t*>(t.signature.data()), t.signature.size()))}})
                << "\n";
      continue;
    }
    if (!body.is_object()) {
      std::cout << t.id << ": (does not read)\n";
      continue;
    }
    std::cout << t.id << ": " << iso8601(body.value("at", std::int64_t{0})) << " by " << body.value("by", "") << ": "
              << body.value("expired", std::uint64_t{0}) << " records of segment "
              << body["segment"].value("first", std::uint64_t{0}) << "-" << body["segment"].value("last", std::uint64_t{0})
              << " expired, " << body.value("kept", std::uint64_t{0}) << " kept\n";
  }
  return kExitOk;
}

}  // namespace

void register_retention(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto a = std::make_shared<RetentionArgs>();
  auto* cmd = app.add_subcommand("retention", "how long mail is kept; expiry of what is past it (legal holds kept)");
  cmd->require_subcommand(1);
  auto bind = [&g, &run, a](CLI::App* sub, std::function<int(const GlobalOptions&, const RetentionArgs&)> f) {
    sub->add_flag("--json", a->json, "print JSON");
    sub->callback([&g, &run, a, f] { run = [&g, a, f] { return f(g, *a); }; });
  };
  bind(cmd->add_subcommand("show", "the policy and how many tombstones the archive has"), run_retention_show);
  auto* set = cmd->add_subcommand("set", "change the policy (recorded in the audit log)");
  set->add_option("--minimum", a->minimum,
                  "the minimum retention (days, or years: 7y): no rule may be shorter, and it can never be lowered");
  set->add_option("--default", a->default_days, "how long mail no rule matches is kept (days, 7y, or forever)");
  set->add_option("--rule", a->rules,
                  "DIRECTION:DAYS, domain=DOMAIN:DAYS or DIRECTION,domain=DOMAIN:DAYS (repeat; the longest matching "
                  "rule wins; one for the same direction and domain replaces it)");
  set->add_flag("--clear-rules", a->clear_rules, "drop the rules set before (then add those given)");
  bind(set, run_set);
  auto* r = cmd->add_subcommand("run", "expire what is past its retention, whole closed segments at a time");
  r->add_flag("--dry-run", a->dry_run, "say what would expire, remove nothing");
  r->add_option("--as-of", a->as_of, "with --dry-run: what would expire on that day (YYYY-MM-DD)");
  bind(r, run_run);
  bind(cmd->add_subcommand("tombstones", "the signed tombstones of every expiry, oldest first"), run_tombstones);
}

}  // namespace mailark::cli
