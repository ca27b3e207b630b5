#include "engine/verify.h"

#include <map>
#include <unordered_set>

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

  auto s = archive.scan(
      1,
      [&](const ArchiveRecord& r, std::string_view value) {
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
        frontier.push(merkle::leaf_hash(value), &completed);
        if (rep.tree_stored) {
          for (unsigned level = 0; level < completed.size(); ++level) {
            auto node = stored(level, (expected >> level) - 1);
            if (!node || *node != completed[level]) {
              return bad(expected, "the archive's Merkle tree does not match record " + std::to_string(expected) +
                                       (node ? " (its stored hashes differ from the record's)"
                                             : ": " + node.error().context));
            }
          }
        }
        if (auto it = roots_at.find(expected); it != roots_at.end()) it->second = frontier.root();
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
