// Password checks against a company directory (LDAP), for users of mailark's directory who have no
// local password (`mailark user add ADDRESS --no-password`): search-then-bind, as Dovecot's and
// Postfix's LDAP lookups do. The user's entry is found under `base_dn` with `filter` (%u: the login
// name, %l: its local part, %d: its domain; each escaped as RFC 4515 requires, so a name cannot widen
// the filter), optionally after binding as a search account; then a simple bind as that entry with the
// password the user gave decides. An empty password is refused before anything is sent (a simple bind
// without a password is an anonymous bind, RFC 4513 5.1.2). The one translation point to libldap.
// Tests: tests/e2e/test_ldap.py (a private slapd), Ldap.FilterValuesAreEscaped.
//
// Thread safety: check() opens its own connection; call it from any thread.
#pragma once

#include <string>

#include "common/result.h"

namespace mailark::api {

struct LdapConfig {
  std::string url;          // "ldap://host:389" or "ldaps://host:636"; empty: no directory
  bool starttls = false;    // StartTLS on an ldap:// URL
  bool verify_certificates = true;
  std::string base_dn;      // where users are searched
  std::string filter = "(mail=%u)";
  std::string search_dn;    // the account that searches (empty: anonymous search)
  std::string search_password;
  unsigned timeout = 10;    // seconds per operation
};

// RFC 4515 escaping of a value inside a filter: * ( ) \ NUL and bytes >= 0x80 as \XX.
std::string ldap_escape_filter_value(const std::string& value);
// The filter with %u, %l, %d replaced (escaped).
std::string ldap_filter_for(const std::string& filter, const std::string& login);

enum class LdapAnswer { kOk, kBadCredentials, kUnavailable };
// Blocking. kUnavailable when the directory cannot be reached or searched (logged by the caller).
LdapAnswer ldap_check_password(const LdapConfig& config, const std::string& login, const std::string& password,
                               std::string* why);

}  // namespace mailark::api
