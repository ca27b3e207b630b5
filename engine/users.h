// The user directory's records: who may log in to the mailbox views (IMAP, submission, the web), with
// which addresses, in which role, and how their passwords are checked. Stored in DATA/mailbox
// (engine/mailbox.h, table `users`; docs/FORMAT.md "mailbox").
//
// Passwords are never stored: only scrypt hashes (OpenSSL's EVP_PBE_scrypt; memory-hard), as
//   $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt, base64>$<32-byte key, base64>
// with a random 16-byte salt per hash. Verification reads the parameters from the hash, so stronger
// parameters can be adopted later without invalidating old hashes (tests: Users.*).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace mailark {

enum class Role : std::uint8_t { kUser = 0, kAuditor = 1, kAdmin = 2 };
const char* role_name(Role r);  // "user", "auditor", "admin"
std::optional<Role> parse_role(std::string_view name);

// An application password: a second, generated secret for one client (a phone), revocable alone.
struct AppPassword {
  std::string label;
  std::string hash;  // scrypt, as above
  std::int64_t created_at = 0;
};

// An API token: a bearer credential for scripts (the web API's `Authorization: Bearer mkt_...`). High
// entropy (256 bits), so a SHA-256 of it is stored (no slow hash needed) and looked up directly.
struct ApiToken {
  std::string label;
  std::string hash;  // SHA-256 of the token, hex
  std::int64_t created_at = 0;
};

struct User {
  std::uint32_t id = 0;             // assigned by the store, never reused
  std::string name;                 // the login name: the user's primary address, lower case
  std::vector<std::string> aliases;  // further addresses that deliver to this user, lower case
  std::string display_name;
  Role role = Role::kUser;
  std::string password_hash;         // empty: no local password (LDAP, or none set yet)
  std::vector<AppPassword> app_passwords;
  std::vector<ApiToken> api_tokens;
  bool disabled = false;
  std::int64_t created_at = 0;
  // Web sessions begun before this moment (Unix milliseconds) are over: set by a password change,
  // so a stolen session does not outlive the password (tests/e2e/test_web.py test_login).
  std::int64_t sessions_after_ms = 0;

  // Every address of the user: name first, then the aliases.
  std::vector<std::string> addresses() const;
  bool has_address(std::string_view address) const;  // case-insensitive
};

// Encoding of a user in the `users` table: JSON (small, rarely written, readable in a dump).
std::string encode_user(const User& u);
Result<User> decode_user(std::string_view value);

// scrypt parameters: N = 2^15, r = 8, p = 1 (32 MiB, about 0.1 s on one core of these machines).
inline constexpr unsigned kScryptLogN = 15;
Result<std::string> hash_password(std::string_view password, unsigned log_n = kScryptLogN);
// Constant-time comparison of the derived key. A malformed hash never matches.
bool verify_password(std::string_view password, std::string_view hash);
// A random application password: 4 groups of 4 lower-case letters and digits ("abcd-efgh-...").
std::string generate_app_password();
// A new API token: "mkt_" and 43 base64url characters (32 random bytes).
std::string generate_api_token();
std::string api_token_hash(std::string_view token);  // SHA-256, hex

// An address as the directory keeps it: trimmed, lower case, one '@' with text on both sides, no
// spaces or control characters, at most 254 bytes. Errors: kInvalidArgument naming the problem.
Result<std::string> normalize_address(std::string_view address);

}  // namespace mailark
