#include "engine/verify.h"

#include <map>
#include <unordered_set>

#include <nlohmann/json.hpp>

namespace mailark {

Result<VerifyReport> verify_archive(const Archive& live, const std::function<void(std::uint64_t, std::uint64_t)>& progress,
                                    const VerifyOptions& options) {
  // One read view for the whole walk: a server appending meanwhile changes nothing of what is checked.
  MAILARK_ASSIGN_OR_RETURN(auto snapshot, live.snapshot());
  const ArchiveSnapshot& archive = *snapshot;
  VerifyReport rep;
  const ChainHead stored_head = archive.head();
  std::uint64_t expected = 1;
  Digest prev{};
  std::unordered_set<std::string> checked_blobs;
  // The Merkle tree rebuilt from the records, its root taken at each checkpoint's size, and compared
  // with what the archive stores for every record.
  merkle::Frontier frontier;
  std::vector<Digest> completed;
  std::map<std::uint64_t, Digest> roots_at;
  for (const auto& c : options.checkpoints) roots_at[c.size];
  if (roots_at.count(0)) roots_at[0] = merkle::empty_root();
  rep.tree_stored = archive.has_tree();
  const merkle::NodeFn stored = archive.tree_nodes();

  auto bad = [&](std::uint64_t seq, std::string problem) {
    if (rep.intact) {
      rep.intact = false;
      rep.first_bad = seq;
      rep.problem = std::move(problem);
    }
    return false;  // stop at the first bad record: everything after it is unverifiable by the chain
  };

  // Pushes record seq's leaf into the rebuilt tree and compares the rows the archive stores.
  auto push_leaf = [&](std::uint64_t seq, const Digest& leaf) {
    frontier.push(leaf, &completed);
    if (rep.tree_stored) {
      for (unsigned level = 0; level < completed.size(); ++level) {
        auto node = stored(level, (seq >> level) - 1);
        if (!node || *node != completed[level]) {
          return bad(seq, "the archive's Merkle tree does not match record " + std::to_string(seq) +
                              (node ? " (its stored hashes differ from the record's)" : ": " + node.error().context));
        }
      }
    }
    if (auto it = roots_at.find(seq); it != roots_at.end()) it->second = frontier.root();
    return true;
  };

  // Retention: the tombstones (signed, chained) and the runs of records they removed.
  struct Run {
    std::uint64_t first = 0, last = 0, tombstone = 0;
    Digest prev_hash{}, last_hash{}, leaves{};
  };
  std::map<std::uint64_t, Run> runs;  // by first seq
  {
    auto tombs = archive.tombstones();
    if (!tombs) return tombs.error();
    auto table = archive.expired_runs();
    if (!table) return table.error();
    Digest tprev{};
    std::uint64_t tid = 0;
    for (const auto& t : *tombs) {
      rep.tombstones++;
      auto fail = [&](const std::string& why) {
        if (rep.intact) {
          rep.intact = false;
          rep.first_bad = 0;
          rep.problem = "tombstone " + std::to_string(t.id) + ": " + why;
        }
      };
      if (t.id != ++tid) fail("tombstones are missing before it (the one before is " + std::to_string(tid - 1) + ")");
      if (!options.tombstone_key) {
        fail("its signature cannot be checked without the archive's public key");
      } else if (!ed25519_verify(*options.tombstone_key, t.body, t.signature)) {
        fail("its signature does not match (changed, or signed by another key)");
      }
      nlohmann::json j = nlohmann::json::parse(t.body, nullptr, false);
      Digest p{};
      if (!j.is_object() || !j.contains("prev") || !j["prev"].is_string() || !from_hex(j["prev"].get<std::string>(), p) ||
          !j.contains("runs") || !j["runs"].is_array()) {
        fail("it does not read as a tombstone");
        continue;
      }
      if (p != tprev) fail("it does not name the tombstone before it");
      tprev = tombstone_hash(t.body);
      for (const auto& jr : j["runs"]) {
        Run run;
        run.tombstone = t.id;
        if (!jr.is_object() || !jr.value("first", nlohmann::json()).is_number_unsigned() ||
            !jr.value("last", nlohmann::json()).is_number_unsigned() ||
            !from_hex(jr.value("prev_hash", ""), run.prev_hash) || !from_hex(jr.value("last_hash", ""), run.last_hash) ||
            !from_hex(jr.value("leaves", ""), run.leaves)) {
          fail("a run of it does not read");
          continue;
        }
        run.first = jr["first"].get<std::uint64_t>();
        run.last = jr["last"].get<std::uint64_t>();
        runs[run.first] = run;
      }
    }
    // The table the archive reads by is the one the tombstones signed.
    std::size_t matched = 0;
    for (const auto& r : *table) {
      auto it = runs.find(r.first);
      if (it == runs.end() || it->second.last != r.last || it->second.tombstone != r.tombstone) {
        if (rep.intact) {
          rep.intact = false;
          rep.first_bad = r.first;
          rep.problem = "records " + std::to_string(r.first) + " to " + std::to_string(r.last) +
                        " are marked expired, but no tombstone says so";
        }
      } else {
        ++matched;
      }
    }
    if (matched != runs.size() && rep.intact) {
      rep.intact = false;
      rep.problem = "a tombstone names records the archive does not mark expired";
    }
  }
  // Walks the expired runs from `expected` up to (not including) `until`: each must link from the
  // chain so far and match the tree's stored leaves.
  auto cross_runs = [&](std::uint64_t until) {
    while (expected < until) {
      auto it = runs.find(expected);
      if (it == runs.end()) return true;  // a real gap: the caller reports it
      const Run& run = it->second;
      if (run.prev_hash != prev)
        return bad(expected, "the records expired by tombstone " + std::to_string(run.tombstone) + " (" +
                                 std::to_string(run.first) + " to " + std::to_string(run.last) +
                                 ") do not link to the record before them");
      if (!rep.tree_stored) return bad(expected, "expired records and no Merkle tree to prove them");
      Sha256 digest;
      for (std::uint64_t s = run.first; s <= run.last; ++s) {
        auto leaf = stored(0, s - 1);
        if (!leaf) return bad(s, leaf.error().context);
        digest.update(std::string_view(reinterpret_cast<const char*>(leaf->data()), 32));
        if (!push_leaf(s, *leaf)) return false;
      }
      if (digest.finish() != run.leaves)
        return bad(run.first, "the Merkle leaves of the records expired by tombstone " + std::to_string(run.tombstone) +
                                  " are not those it signed");
      prev = run.last_hash;
      rep.head.seq = run.last;
      rep.head.hash = run.last_hash;
      rep.records_expired += run.last - run.first + 1;
      expected = run.last + 1;
    }
    return true;
  };

  auto s = archive.scan(
      1,
      [&](const ArchiveRecord& r, std::string_view value) {
        if (r.seq > expected && !cross_runs(r.seq)) return false;
        if (r.seq != expected && r.seq > expected) {
          return bad(expected, "record " + std::to_string(expected) + " is missing (the next record is " +
                                   std::to_string(r.seq) + ")");
        }
        Digest recomputed = record_hash(prev, expected, value.substr(0, value.size() - 32));
        if (r.prev_hash != prev) {
          return bad(expected,
                     "record " + std::to_string(expected) +
                         " does not link to its predecessor (records removed, reordered or replaced)");
        }
        if (recomputed != r.hash) {
          return bad(expected,
                     "record " + std::to_string(expected) + " was changed: its hash does not match");
        }
        std::string key(reinterpret_cast<const char*>(r.content_sha256.data()), 32);
        if (!checked_blobs.count(key)) {
          auto raw = archive.raw(r);
          if (!raw) return bad(expected, raw.error().context);
          checked_blobs.insert(key);
          rep.messages_checked++;
        }
        if (!push_leaf(expected, merkle::leaf_hash(value))) return false;
        prev = r.hash;
        rep.head.seq = expected;
        rep.head.hash = r.hash;
        rep.records_checked++;
        if (progress && rep.records_checked % 1000 == 0) progress(rep.records_checked, stored_head.seq);
        ++expected;
        return true;
      },
      [&](std::uint64_t seq, const Error& e) { return bad(seq ? seq : expected, e.context); });
  if (!s) return s.error();
  if (rep.intact) cross_runs(stored_head.seq + 1);
  if (rep.intact) {
    if (rep.head.seq != stored_head.seq) {
      rep.intact = false;
      rep.first_bad = rep.head.seq + 1;
      rep.problem = "the chain ends at record " + std::to_string(rep.head.seq) +
                    " but the archive head says " + std::to_string(stored_head.seq) +
                    " (records removed from the end)";
    } else if (rep.head.hash != stored_head.hash) {
      rep.intact = false;
      rep.first_bad = rep.head.seq;
      rep.problem = "the last record's hash does not match the archive head";
    }
  }
  rep.tree_root = frontier.root();
  if (rep.intact && rep.tree_stored && archive.tree_size() != rep.head.seq) {
    rep.intact = false;
    rep.first_bad = rep.head.seq + 1;
    rep.problem = "the archive's Merkle tree covers " + std::to_string(archive.tree_size()) + " records, the chain " +
                  std::to_string(rep.head.seq);
  }
  for (const auto& c : options.checkpoints) {
    VerifyReport::CheckpointResult res;
    res.checkpoint = c;
    auto it = roots_at.find(c.size);
    if (c.size > rep.head.seq && rep.intact) {
      res.problem = "the checkpoint signed " + std::to_string(c.size) + " records and the archive has " +
                    std::to_string(rep.head.seq) +
                    ": records were removed from the end, or an older copy of the archive was put back";
    } else if (c.size > rep.head.seq || (c.size > 0 && it->second == Digest{})) {
      res.problem = "not checked: the chain is damaged before record " + std::to_string(c.size);
    } else if (it->second != c.root) {
      res.problem = "records 1 to " + std::to_string(c.size) +
                    " are not those the checkpoint signed: the archive was rewritten, or another copy put in its place";
    } else {
      res.holds = true;
    }
    if (!res.holds && rep.intact) {
      rep.intact = false;
      rep.first_bad = 0;
      rep.problem = res.problem;
    }
    rep.checkpoints.push_back(std::move(res));
  }
  if (progress) progress(rep.records_checked, stored_head.seq);
  return rep;
}

}  // namespace mailark
