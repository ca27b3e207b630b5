// A Merkle tree over the archive's records, as RFC 9162 (Certificate Transparency 2.0) section 2.1
// defines it with SHA-256: leaf hash SHA-256(0x00 || entry), interior node SHA-256(0x01 || left ||
// right), a tree of n leaves split at the largest power of two below n. Inclusion proofs (a record is
// in the tree a signed head names) and consistency proofs (a later tree extends an earlier one without
// changing it) have the RFC's exact shape, so any RFC 9162 verifier checks them; the tests check them
// with an independent Python implementation (tests/e2e/test_checkpoint.py).
//
// The hashes come from a NodeFn: the hash of the complete, aligned subtree of 2^level leaves beginning
// at leaf index << level (the archive stores every such subtree once: docs/FORMAT.md "The Merkle
// tree"). Every hash a proof or a root needs is one of those, or is made from O(log n) of them.
// Leaves are numbered from 0 here; the archive's record seq is leaf index + 1.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/sha256.h"

namespace mailark::merkle {

Digest leaf_hash(std::string_view entry);
Digest node_hash(const Digest& left, const Digest& right);
// The root of the empty tree: SHA-256 of nothing.
Digest empty_root();

using NodeFn = std::function<Result<Digest>(unsigned level, std::uint64_t index)>;

// MTH(D[0:size]).
Result<Digest> root(std::uint64_t size, const NodeFn& node);
// PATH(index, D[0:size]) (RFC 9162 2.1.3.1); kInvalidArgument unless index < size.
Result<std::vector<Digest>> inclusion_proof(std::uint64_t index, std::uint64_t size, const NodeFn& node);
// PROOF(old_size, D[0:new_size]) (RFC 9162 2.1.4.1); kInvalidArgument unless 0 < old_size <= new_size.
Result<std::vector<Digest>> consistency_proof(std::uint64_t old_size, std::uint64_t new_size, const NodeFn& node);

// RFC 9162 2.1.3.2 and 2.1.4.2.
bool verify_inclusion(std::uint64_t index, std::uint64_t size, const Digest& leaf, std::span<const Digest> proof,
                      const Digest& root);
bool verify_consistency(std::uint64_t old_size, std::uint64_t new_size, const Digest& old_root,
                        const Digest& new_root, std::span<const Digest> proof);

// The right edge of a growing tree (a "compact range"): one hash per set bit of its size. Appending a
// leaf completes the subtrees that leaf closes, which is what the archive stores for it.
class Frontier {
 public:
  Frontier() = default;
  // The frontier of a tree of `size` leaves, from its stored subtrees.
  static Result<Frontier> of(std::uint64_t size, const NodeFn& node);
  // Appends a leaf; `completed` receives the hashes of the subtrees it completes, level 0 (the leaf
  // itself) first, then levels 1, 2, ...
  void push(const Digest& leaf, std::vector<Digest>* completed = nullptr);
  std::uint64_t size() const { return size_; }
  Digest root() const;

 private:
  std::uint64_t size_ = 0;
  std::vector<Digest> by_level_;  // by_level_[l]: the subtree of 2^l leaves, valid when bit l of size_ is set
};

}  // namespace mailark::merkle
