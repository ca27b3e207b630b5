#include "common/merkle.h"

#include <bit>

namespace mailark::merkle {
namespace {

// The largest power of two strictly below n (n >= 2).
std::uint64_t split_point(std::uint64_t n) { return std::bit_floor(n - 1); }

// MTH(D[begin:end]) for the subtrees RFC 9162's recursion meets: begin is a multiple of the smallest
// power of two at or above end - begin, so a power-of-two range is one stored subtree.
Result<Digest> subtree(std::uint64_t begin, std::uint64_t end, const NodeFn& node) {
  const std::uint64_t n = end - begin;
  if (std::has_single_bit(n) && begin % n == 0) return node(static_cast<unsigned>(std::countr_zero(n)), begin / n);
  const std::uint64_t k = split_point(n);
  MAILARK_ASSIGN_OR_RETURN(Digest left, subtree(begin, begin + k, node));
  MAILARK_ASSIGN_OR_RETURN(Digest right, subtree(begin + k, end, node));
  return node_hash(left, right);
}

Status path(std::uint64_t m, std::uint64_t begin, std::uint64_t end, const NodeFn& node, std::vector<Digest>& out) {
  const std::uint64_t n = end - begin;
  if (n <= 1) return ok_status();
  const std::uint64_t k = split_point(n);
  if (m < k) {
    MAILARK_TRY(path(m, begin, begin + k, node, out));
    MAILARK_ASSIGN_OR_RETURN(Digest sibling, subtree(begin + k, end, node));
    out.push_back(sibling);
  } else {
    MAILARK_TRY(path(m - k, begin + k, end, node, out));
    MAILARK_ASSIGN_OR_RETURN(Digest sibling, subtree(begin, begin + k, node));
    out.push_back(sibling);
  }
  return ok_status();
}

Status subproof(std::uint64_t m, std::uint64_t begin, std::uint64_t end, bool b, const NodeFn& node,
                std::vector<Digest>& out) {
  const std::uint64_t n = end - begin;
  if (m == n) {
    if (!b) {
      MAILARK_ASSIGN_OR_RETURN(Digest whole, subtree(begin, end, node));
      out.push_back(whole);
    }
    return ok_status();
  }
  const std::uint64_t k = split_point(n);
  if (m <= k) {
    MAILARK_TRY(subproof(m, begin, begin + k, b, node, out));
    MAILARK_ASSIGN_OR_RETURN(Digest right, subtree(begin + k, end, node));
    out.push_back(right);
  } else {
    MAILARK_TRY(subproof(m - k, begin + k, end, false, node, out));
    MAILARK_ASSIGN_OR_RETURN(Digest left, subtree(begin, begin + k, node));
    out.push_back(left);
  }
  return ok_status();
}

// RFC 9162's "right-shift both fn and sn equally until either LSB(fn) is set or fn is 0".
void shift_to_set_bit(std::uint64_t& fn, std::uint64_t& sn) {
  while (!(fn & 1) && fn != 0) {
    fn >>= 1;
    sn >>= 1;
  }
}

}  // namespace

Digest leaf_hash(std::string_view entry) {
  Sha256 h;
  const char prefix = 0x00;
  h.update(std::string_view(&prefix, 1));
  h.update(entry);
  return h.finish();
}

Digest node_hash(const Digest& left, const Digest& right) {
  std::array<char, 65> buf;
  buf[0] = 0x01;
  std::copy(left.begin(), left.end(), buf.begin() + 1);
  std::copy(right.begin(), right.end(), buf.begin() + 33);
  return sha256(std::string_view(buf.data(), buf.size()));
}

Digest empty_root() { return sha256(std::string_view()); }

Result<Digest> root(std::uint64_t size, const NodeFn& node) {
  if (size == 0) return empty_root();
  return subtree(0, size, node);
}

Result<std::vector<Digest>> inclusion_proof(std::uint64_t index, std::uint64_t size, const NodeFn& node) {
  if (index >= size)
    return make_error(ErrorCode::kInvalidArgument, "leaf " + std::to_string(index) + " is not in a tree of " +
                                                       std::to_string(size));
  std::vector<Digest> out;
  MAILARK_TRY(path(index, 0, size, node, out));
  return out;
}

Result<std::vector<Digest>> consistency_proof(std::uint64_t old_size, std::uint64_t new_size, const NodeFn& node) {
  if (old_size == 0 || old_size > new_size)
    return make_error(ErrorCode::kInvalidArgument, "no consistency proof from a tree of " + std::to_string(old_size) +
                                                       " to one of " + std::to_string(new_size));
  std::vector<Digest> out;
  MAILARK_TRY(subproof(old_size, 0, new_size, true, node, out));
  return out;
}

bool verify_inclusion(std::uint64_t index, std::uint64_t size, const Digest& leaf, std::span<const Digest> proof,
                      const Digest& root) {
  if (index >= size) return false;
  std::uint64_t fn = index, sn = size - 1;
  Digest r = leaf;
  for (const Digest& p : proof) {
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      r = node_hash(p, r);
      shift_to_set_bit(fn, sn);
    } else {
      r = node_hash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

bool verify_consistency(std::uint64_t old_size, std::uint64_t new_size, const Digest& old_root,
                        const Digest& new_root, std::span<const Digest> proof) {
  if (old_size == 0 || old_size > new_size) return false;
  if (old_size == new_size) return proof.empty() && old_root == new_root;
  if (proof.empty()) return false;
  std::vector<Digest> path;
  if (std::has_single_bit(old_size)) path.push_back(old_root);
  path.insert(path.end(), proof.begin(), proof.end());
  std::uint64_t fn = old_size - 1, sn = new_size - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  Digest fr = path[0], sr = path[0];
  for (std::size_t i = 1; i < path.size(); ++i) {
    const Digest& c = path[i];
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      fr = node_hash(c, fr);
      sr = node_hash(c, sr);
      shift_to_set_bit(fn, sn);
    } else {
      sr = node_hash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return fr == old_root && sr == new_root && sn == 0;
}

Result<Frontier> Frontier::of(std::uint64_t size, const NodeFn& node) {
  Frontier f;
  f.size_ = size;
  f.by_level_.resize(64);
  std::uint64_t begin = 0;
  for (int level = 63; level >= 0; --level) {
    const std::uint64_t width = std::uint64_t{1} << level;
    if (!(size & width)) continue;
    MAILARK_ASSIGN_OR_RETURN(f.by_level_[level], node(static_cast<unsigned>(level), begin >> level));
    begin += width;
  }
  return f;
}

void Frontier::push(const Digest& leaf, std::vector<Digest>* completed) {
  if (by_level_.size() < 64) by_level_.resize(64);
  if (completed) {
    completed->clear();
    completed->push_back(leaf);
  }
  Digest h = leaf;
  unsigned level = 0;
  while (size_ & (std::uint64_t{1} << level)) {
    h = node_hash(by_level_[level], h);
    if (completed) completed->push_back(h);
    ++level;
  }
  by_level_[level] = h;
  ++size_;
}

Digest Frontier::root() const {
  if (size_ == 0) return empty_root();
  bool have = false;
  Digest r{};
  for (unsigned level = 0; level < 64; ++level) {
    if (!(size_ & (std::uint64_t{1} << level))) continue;
    r = have ? node_hash(by_level_[level], r) : by_level_[level];
    have = true;
  }
  return r;
}

}  // namespace mailark::merkle
