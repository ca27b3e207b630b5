// eDiscovery cases, legal holds and the audit trail: DATA/cases (an LMDB environment, written beside a
// running server as DATA/mailbox is; docs/FORMAT.md "Case store").
//
// A case has a name, a description, its custodians, saved searches (a query and an optional date
// range), notes, and a legal hold. A held case's saved searches say which messages the hold keeps: a
// message that arrives later and matches is held as well, because a hold is a query, evaluated when
// retention asks (held_queries), never a list taken once. Every change to a case, and every search,
// view, export, hold and login the product sees, is an entry of the audit log: append-only, each
// entry's hash chained to the one before (SHA-256 over "mailark-audit-v1\n", the previous hash and the
// entry's bytes), so an entry changed, removed or cut from the end is found (CaseStore::verify_audit;
// tests/cases_test.cc Audit.*; an export of it is checked by tests/e2e/tlog.py without mailark).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/sha256.h"

namespace mailark {

struct SavedSearch {
  std::string query;            // the archive's query syntax
  std::string from, to;         // YYYY-MM-DD, inclusive; empty: open
  std::int64_t saved_at = 0;
  std::string saved_by;
};

struct CaseNote {
  std::int64_t at = 0;
  std::string by;
  std::string text;
};

struct Case {
  std::uint32_t id = 0;
  std::string name;  // unique, compared without case
  std::string description;
  std::vector<std::string> custodians;  // empty: every custodian
  std::vector<SavedSearch> searches;
  std::vector<CaseNote> notes;
  bool hold = false;       // legal hold in force
  bool closed = false;
  std::int64_t created_at = 0, closed_at = 0;
  std::string created_by;
};

// The query a saved search runs for its case: the search, the case's custodians (any of them), the
// date range; what `case search` and exports run and what a hold keeps. Terms joined with AND, each
// part in parentheses, custodians quoted.
std::string case_query(const Case& c, const SavedSearch& s);
// What the case adds to the search typed in it: the custodians and the date range (case_query's
// parts after the search), empty when none. A search in a case runs the typed search within the
// query's bounds and this as indexer::SearchOptions::scope, outside them: a case of thousands of
// custodians is searched like any other (tests: IndexQueryBounds.AScopeIsOutsideTheBounds,
// tests/e2e/test_cases.py test_a_case_of_many_custodians_is_searched_counted_held_and_exported).
std::string case_scope(const Case& c, const SavedSearch& s);
// Every saved search of the case, ORed: what `case export` exports and what its hold keeps. Empty
// when the case has no saved search.
std::string case_all_query(const Case& c);

// A case as the CLI's --json and the REST API show it: dates as ISO 8601, each saved search with the
// query it runs (`runs`), status "open" or "closed".
nlohmann::json case_to_json(const Case& c);

struct AuditEntry {
  std::uint64_t seq = 0;  // 1, 2, ...
  std::int64_t at = 0;    // Unix seconds
  std::string actor;      // "cli:alice" (the operating-system account), "web:ann@example.com", ...
  std::string action;     // "search", "show", "export", "case.create", "case.hold", "login", ...
  std::string target;     // what it acted on: a query, a message id, a case name
  std::string detail;     // a JSON object text (results, reasons), "{}" when none
  std::string bytes;      // the entry as stored and hashed (a JSON object's text)
  Digest hash{};          // chained: SHA-256("mailark-audit-v1\n" || previous hash || bytes)
};

// An audit entry as `audit list --json` and GET /api/v1/audit show it.
nlohmann::json audit_to_json(const AuditEntry& e);

struct AuditCheck {
  bool ok = true;
  std::string problem;
  std::uint64_t entries = 0;
  Digest head{};
};

class CaseStore {
 public:
  // Opens or creates the store in `dir` (DATA/cases). read_only opens an existing one only (kNotFound
  // when there is none).
  static Result<std::unique_ptr<CaseStore>> open(const std::string& dir, bool read_only);
  ~CaseStore();
  CaseStore(const CaseStore&) = delete;
  CaseStore& operator=(const CaseStore&) = delete;

  // Each change writes the case and its audit entry in one transaction: no change without its entry.
  Result<Case> create(const std::string& name, const std::string& description,
                      const std::vector<std::string>& custodians, const std::string& actor);
  Result<Case> get(std::uint32_t id) const;
  // By id ("3"), by name (without case), or by the start of one name ("acme" for "Acme v. Northwind";
  // a start several names share is an error naming them).
  Result<Case> find(const std::string& id_or_name) const;
  Result<std::vector<Case>> list() const;
  Result<Case> add_search(std::uint32_t id, SavedSearch s, const std::string& actor);
  Result<Case> add_note(std::uint32_t id, const std::string& text, const std::string& actor);
  // A hold placed or lifted, with why. Errors: a closed case cannot be held.
  Result<Case> set_hold(std::uint32_t id, bool hold, const std::string& reason, const std::string& actor);
  // Errors: a case under hold cannot be closed (lift the hold first: closing must not drop one).
  Result<Case> close(std::uint32_t id, const std::string& actor);

  // The queries every hold in force keeps (one per held case with saved searches; a held case without
  // any saved search holds every message of its custodians, or the whole archive without them).
  Result<std::vector<std::string>> held_queries() const;

  Result<AuditEntry> audit(const std::string& actor, const std::string& action, const std::string& target,
                           const std::string& detail_json = "{}");
  // Entries with seq >= from, at most limit.
  Result<std::vector<AuditEntry>> audit_entries(std::uint64_t from, std::size_t limit) const;
  AuditCheck verify_audit() const;
  Result<std::pair<std::uint64_t, Digest>> audit_head() const;

 private:
  CaseStore() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The hash of an audit entry's bytes after `previous` (all zero before the first entry).
Digest audit_hash(const Digest& previous, std::string_view bytes);

}  // namespace mailark
