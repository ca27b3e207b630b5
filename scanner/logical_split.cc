#include "scanner/logical_split.h"

#include <algorithm>
#include <cctype>

namespace mailark::scanner {
namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    std::size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
    if (at == std::string_view::npos) break;
    start = at + 1;
  }
  return out;
}

// The expression, evaluated with every subsignature matched zero times, and a set of subsignatures
// one of which must match for the expression to be true (for A&B the smaller of A's and B's sets;
// for A|B both; for a counted group every subsignature in it). Grammar (ClamAV's logical expressions):
// term := index | '(' expr ')' , each optionally followed by a count condition ('=' | '>' | '<') N
// [',' M]; expr := term (op term)* with one operator kind per level (mixing & and | without
// parentheses is refused: its reading would be a guess).
struct Node {
  bool truth = false;            // the value with every count zero
  std::vector<unsigned> needed;  // one of these must match (meaningful only when truth is false)
  std::vector<unsigned> all;     // every subsignature index inside
};

class ZeroEvaluator {
 public:
  explicit ZeroEvaluator(std::string_view s) : s_(s) {}

  std::optional<Node> run() {
    auto v = expr(0);
    if (!v || pos_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  std::optional<Node> expr(int depth) {
    if (depth > 64) return std::nullopt;
    auto v = term(depth);
    if (!v) return std::nullopt;
    char op = 0;
    while (pos_ < s_.size() && (s_[pos_] == '&' || s_[pos_] == '|')) {
      if (op && op != s_[pos_]) return std::nullopt;
      op = s_[pos_++];
      auto rhs = term(depth);
      if (!rhs) return std::nullopt;
      Node n;
      n.all = v->all;
      n.all.insert(n.all.end(), rhs->all.begin(), rhs->all.end());
      if (op == '&') {
        n.truth = v->truth && rhs->truth;
        // Either side's set is necessary for the conjunction: keep the smaller one that is sound.
        if (!v->truth && (rhs->truth || v->needed.size() <= rhs->needed.size())) n.needed = v->needed;
        else n.needed = rhs->needed;
      } else {
        n.truth = v->truth || rhs->truth;
        n.needed = v->needed;
        n.needed.insert(n.needed.end(), rhs->needed.begin(), rhs->needed.end());
      }
      v = std::move(n);
    }
    return v;
  }

  std::optional<Node> term(int depth) {
    Node node;
    if (pos_ < s_.size() && s_[pos_] == '(') {
      ++pos_;
      auto inner = expr(depth + 1);
      if (!inner || pos_ >= s_.size() || s_[pos_] != ')') return std::nullopt;
      ++pos_;
      node = std::move(*inner);
    } else if (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      auto i = number();
      if (!i || *i > 63) return std::nullopt;
      node.truth = false;  // a subsignature that matched zero times
      node.needed = node.all = {static_cast<unsigned>(*i)};
    } else {
      return std::nullopt;
    }
    bool truth = node.truth;
    if (pos_ < s_.size() && (s_[pos_] == '=' || s_[pos_] == '>' || s_[pos_] == '<')) {
      char cmp = s_[pos_++];
      auto n = number();
      if (!n) return std::nullopt;
      std::optional<std::uint64_t> m;
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        m = number();
        if (!m) return std::nullopt;
      }
      // The count of matches (and of distinct subsignatures matched) is zero.
      truth = cmp == '=' ? *n == 0 : cmp == '>' ? false : *n > 0;
      if (m && *m > 0) truth = false;
      node.needed = node.all;  // a count over the group: any of its subsignatures may make it
    }
    node.truth = truth;
    return node;
  }

  std::optional<std::uint64_t> number() {
    std::size_t start = pos_;
    std::uint64_t v = 0;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_])) && pos_ - start < 18) {
      v = v * 10 + static_cast<std::uint64_t>(s_[pos_++] - '0');
    }
    if (pos_ == start) return std::nullopt;
    return v;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

// A plain byte pattern as body signatures write it: hex digits and the wildcard and alternative
// syntax (?? * {n-m} [n-m] (aa|bb) !(..) (B) (L)).
bool plain_pattern(std::string_view hex) {
  if (hex.size() < 4) return false;
  for (char c : hex) {
    if (std::isxdigit(static_cast<unsigned char>(c))) continue;
    if (std::string_view("?*{}[]()|!-,BL").find(c) == std::string_view::npos) return false;
  }
  return true;
}

// An offset as body signatures write it: "*", a number, or an anchor (EP+n, EP-n, Sx+n, SEx, SL+n,
// EOF-n), optionally with ",maxshift".
bool plain_offset(std::string_view off) {
  if (off.empty()) return false;
  for (char c : off) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != ',' && c != '*') return false;
  }
  return true;
}

}  // namespace

std::optional<LogicalSignature> parse_logical_signature(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.empty() || line.front() == '#') return std::nullopt;
  auto fields = split(line, ';');
  if (fields.size() < 4) return std::nullopt;
  LogicalSignature sig;
  sig.name = std::string(fields[0]);
  for (auto kv : split(fields[1], ',')) {
    if (kv.substr(0, 7) == "Target:") {
      int t = 0;
      for (char c : kv.substr(7)) {
        if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
        t = t * 10 + (c - '0');
        if (t > 1000) return std::nullopt;
      }
      sig.target = t;
    }
  }
  for (std::size_t i = 3; i < fields.size(); ++i) sig.subsigs.emplace_back(fields[i]);
  return sig;
}

std::optional<bool> false_when_nothing_matched(std::string_view expression) {
  auto v = ZeroEvaluator(expression).run();
  if (!v) return std::nullopt;
  return !v->truth;
}

std::optional<std::vector<unsigned>> necessary_subsignatures(std::string_view expression) {
  auto v = ZeroEvaluator(expression).run();
  if (!v || v->truth || v->needed.empty()) return std::nullopt;
  std::vector<unsigned> out = v->needed;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::optional<std::vector<std::string>> prefilter_lines(std::string_view ldb_line, const std::string& prefix) {
  auto sig = parse_logical_signature(ldb_line);
  if (!sig || sig->target < 0 || sig->subsigs.empty() || sig->subsigs.size() > 64) return std::nullopt;
  auto fields = split(ldb_line, ';');
  for (auto kv : split(fields[1], ',')) {
    if (kv.substr(0, 12) == "HandlerType:" || kv.substr(0, 9) == "IconGroup") return std::nullopt;
  }
  auto needed = necessary_subsignatures(fields[2]);
  if (!needed) return std::nullopt;
  // Every subsignature must be plain (the logic engine evaluates them all), but only the necessary ones
  // become prefilter patterns.
  std::vector<std::string> lines;
  for (std::size_t i = 0; i < sig->subsigs.size(); ++i) {
    std::string_view sub = sig->subsigs[i];
    if (sub.find("::") != std::string_view::npos) return std::nullopt;  // modifiers: ldb only
    std::string_view offset = "*", hex = sub;
    if (std::size_t colon = sub.find(':'); colon != std::string_view::npos) {
      offset = sub.substr(0, colon);
      hex = sub.substr(colon + 1);
      if (!plain_offset(offset)) return std::nullopt;
    }
    if (!plain_pattern(hex)) return std::nullopt;
    if (!std::binary_search(needed->begin(), needed->end(), static_cast<unsigned>(i))) continue;
    lines.push_back(prefix + "." + std::to_string(i) + ":" + std::to_string(sig->target) + ":" + std::string(offset) +
                    ":" + std::string(hex));
  }
  return lines;
}

}  // namespace mailark::scanner
