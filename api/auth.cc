#include "api/auth.h"

#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include "api/config.h"
#include "common/ascii.h"
#include "common/json_text.h"
#include "common/sha256.h"

namespace mailark::api {

bool Authenticator::throttled(const std::string& key, unsigned max, std::chrono::steady_clock::time_point now) {
  auto it = failures_.find(key);
  if (it == failures_.end()) return false;
  auto& q = it->second;
  while (!q.empty() && now - q.front() > kFailureWindow) q.pop_front();
  if (q.empty()) {
    failures_.erase(it);
    return false;
  }
  return q.size() >= max;
}

void Authenticator::failed(const std::string& key, std::chrono::steady_clock::time_point now) {
  auto& q = failures_[key];
  q.push_back(now);
  while (q.size() > 1000) q.pop_front();
  if (failures_.size() > 100000) failures_.clear();  // bounded: a flood of names forgets old entries
}

Authenticator::Answer Authenticator::login(const std::string& name, const std::string& password,
                                           const std::string& client_ip, const std::string& via) {
  Answer a = check(name, password, client_ip);
  // Into the audit log: every login and every refused one, on every door (a throttled one was
  // refused unread, and an unreachable directory decided nothing). A web login, or an auditor's or
  // admin's anywhere, whose entry cannot be written does not happen; an end user's IMAP or
  // submission login still does (mail keeps running through a continuity event whatever the audit
  // store's state), and the failure is in the server's log.
  if (!audit_ || a.outcome == Outcome::kThrottled || a.outcome == Outcome::kUnavailable) return a;
  const bool privileged = a.outcome == Outcome::kOk && a.user.role != Role::kUser;
  const bool fail_closed = via == "web" || privileged;
  const std::string who = name.substr(0, 320);
  nlohmann::json detail = {{"ip", client_ip}, {"via", via}};
  if (a.outcome != Outcome::kOk) detail["refused"] = a.outcome == Outcome::kDisabled ? "disabled" : "bad credentials";
  auto e = audit_->audit(via + ":" + who, a.outcome == Outcome::kOk ? "login" : "login.failed", who,
                         json_text(detail));
  if (!e) {
    spdlog::error("login of {} via {}: {}{}", who, via, e.error().to_string(), fail_closed ? "; refused" : "");
    if (a.outcome == Outcome::kOk && fail_closed) return Answer{Outcome::kUnavailable, {}};
  }
  return a;
}

Authenticator::Answer Authenticator::check(const std::string& name, const std::string& password,
                                           const std::string& client_ip) {
  Answer a;
  const auto now = std::chrono::steady_clock::now();
  const std::string user_key = "u:" + ascii_lower(name.substr(0, 256));
  const std::string client_key = "c:" + client_group(client_ip);
  {
    std::lock_guard lock(mu_);
    if (throttled(user_key, kMaxFailuresPerUser, now) || throttled(client_key, kMaxFailuresPerClient, now)) {
      a.outcome = Outcome::kThrottled;
      return a;
    }
  }
  auto user = store_.find_user(name);
  bool ok = false;
  if (user && user->password_hash.empty() && !ldap_.url.empty() && !password.empty()) {
    // The company directory decides for users without a local password (app passwords stay local).
    std::string why;
    LdapAnswer answer = ldap_check_password(ldap_, user->name, password, &why);
    if (answer == LdapAnswer::kUnavailable) {
      spdlog::warn("login of {}: the directory at {} is unavailable: {}", user->name, ldap_.url, why);
      a.outcome = Outcome::kUnavailable;
      return a;
    }
    ok = answer == LdapAnswer::kOk;
  }
  if (!ok && user && !password.empty() && password.size() <= 1024) {
    std::vector<const std::string*> hashes;
    if (!user->password_hash.empty()) hashes.push_back(&user->password_hash);
    for (const auto& app : user->app_passwords) hashes.push_back(&app.hash);
    for (const std::string* h : hashes) {
      const std::string key = to_hex(sha256(user->name + '\0' + password + '\0' + *h));
      {
        std::lock_guard lock(mu_);
        auto it = cache_.find(key);
        if (it != cache_.end() && it->second > now) {
          ok = true;
          break;
        }
      }
      if (verify_password(password, *h)) {
        std::lock_guard lock(mu_);
        if (cache_.size() > 10000) cache_.clear();
        cache_[key] = now + kCacheSeconds;
        ok = true;
        break;
      }
    }
  } else {
    // An unknown user costs the same as a wrong password, so names cannot be probed by timing.
    static const std::string dummy = hash_password("mailark-dummy", kScryptLogN).value();
    (void)verify_password(password, dummy);
  }
  std::lock_guard lock(mu_);
  if (!ok) {
    failed(user_key, now);
    failed(client_key, now);
    a.outcome = Outcome::kBadCredentials;
    return a;
  }
  if (user->disabled) {
    a.outcome = Outcome::kDisabled;
    return a;
  }
  failures_.erase(user_key);
  a.outcome = Outcome::kOk;
  a.user = *user;
  return a;
}

}  // namespace mailark::api
