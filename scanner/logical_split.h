// Splitting ClamAV logical signatures (.ldb) behind a prefilter (scanner.cc uses it).
//
// libclamav evaluates every logical signature of the generic root and of the file's target root on
// every layer it scans (every part and decoded piece of a message), parsing each expression string each
// time, whether or not any of its subsignatures matched: with a database the size of the official one
// that is tens of milliseconds per message. Most logical signatures cannot match unless one of their
// subsignatures matched, so they can wait behind plain body signatures (one per subsignature, same
// target type and offset), which cost nothing per layer: when none of those matches, none of the
// logical signatures can; when one does, the logical signatures are evaluated in a second engine.
//
// A logical signature goes behind the prefilter only when that reasoning is sound for it:
//   - its expression parses and is false when every subsignature matched zero times (so a match needs
//     at least one subsignature to match);
//   - every subsignature is a plain byte pattern (hex with wildcards, optional offset): no modifiers
//     (::i ::w ::a ::f), PCRE, byte comparisons, macros or fuzzy image hashes;
//   - its target description names a Target and has no HandlerType or IconGroup (which change what
//     else is scanned, and must stay with the other signatures).
// Everything else stays inline, evaluated as libclamav always does.
// Tests: tests/scanner_test.cc, LogicalSplit.* (a differential test against one engine).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailark::scanner {

struct LogicalSignature {
  std::string name;
  int target = -1;                    // Target:n, -1 when absent
  std::vector<std::string> subsigs;   // as written
};

// Parses one .ldb line. Nothing when it is not a logical signature line.
std::optional<LogicalSignature> parse_logical_signature(std::string_view line);

// Whether the expression (third field) is false when every subsignature matched zero times. Nothing
// when it does not parse.
std::optional<bool> false_when_nothing_matched(std::string_view expression);

// Subsignatures one of which must match for the expression to be true (sorted), chosen small: for
// A&B the smaller of A's and B's sets, for A|B both, for a counted group all of it. Nothing when there
// is no such set (the expression can be true with nothing matched) or it does not parse.
std::optional<std::vector<unsigned>> necessary_subsignatures(std::string_view expression);

// The prefilter body signatures (.ndb lines) for a logical signature, one per necessary subsignature,
// or nothing when it must stay inline. `prefix` starts every prefilter signature's name.
std::optional<std::vector<std::string>> prefilter_lines(std::string_view ldb_line, const std::string& prefix);

}  // namespace mailark::scanner
