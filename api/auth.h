// Logins against the user directory (engine/mailbox.h), shared by IMAP, submission and the web:
// password or app password checked against scrypt hashes, disabled accounts refused, and login
// floods throttled per user and per client (an IPv6 client by its /64): after kMaxFailuresPerUser
// failed logins for one user, or kMaxFailuresPerClient from one client, within kFailureWindow, every
// further attempt is refused at once, right password or not, until the window has passed
// (tests: Auth.* in tests/imap_core_test.cc). A successful check is remembered for kCacheSeconds
// (keyed by a hash of name, password and stored hash), so a phone reconnecting every minute does not
// pay scrypt each time; a password change invalidates it. A user without a local password is
// checked against the company directory when one is configured (api/ldap.h); an unreachable
// directory is a temporary failure (kUnavailable), never a wrong password that feeds the throttle.
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "api/ldap.h"
#include "common/result.h"
#include "engine/cases.h"
#include "engine/mailbox.h"

namespace mailark::api {

class Authenticator {
 public:
  static constexpr unsigned kMaxFailuresPerUser = 10;
  static constexpr unsigned kMaxFailuresPerClient = 30;
  static constexpr std::chrono::seconds kFailureWindow{900};
  static constexpr std::chrono::seconds kCacheSeconds{600};

  explicit Authenticator(MailboxStore& store, LdapConfig ldap = {}) : store_(store), ldap_(std::move(ldap)) {}

  enum class Outcome { kOk, kBadCredentials, kThrottled, kDisabled, kUnavailable };
  struct Answer {
    Outcome outcome = Outcome::kBadCredentials;
    User user;  // kOk
  };
  // name: any address of the user; via: the door ("web", "imap", "smtp"), for the audit log.
  // Blocking (scrypt): call it from a pool thread.
  Answer login(const std::string& name, const std::string& password, const std::string& client_ip,
               const std::string& via);

  // Logins go to this audit log (engine/cases.h): every login and refused login on every door; a
  // web login or an auditor's or admin's is refused when its entry cannot be written, an end user's
  // IMAP or submission login is not (continuity first). Not set: nothing is audited (tests).
  // A successful login whose entry cannot be written is answered kUnavailable (tests:
  // Auth.LoginsGoToTheAuditLog, test_web.py test_cases_over_rest_and_the_audit_log).
  void set_audit(CaseStore* cases) { audit_ = cases; }

 private:
  Answer check(const std::string& name, const std::string& password, const std::string& client_ip);
  bool throttled(const std::string& key, unsigned max, std::chrono::steady_clock::time_point now);
  void failed(const std::string& key, std::chrono::steady_clock::time_point now);

  MailboxStore& store_;
  LdapConfig ldap_;
  CaseStore* audit_ = nullptr;
  std::mutex mu_;
  std::map<std::string, std::deque<std::chrono::steady_clock::time_point>> failures_;  // "u:name", "c:group"
  std::map<std::string, std::chrono::steady_clock::time_point> cache_;  // hash -> expiry
};

}  // namespace mailark::api
