#include "api/ldap.h"

#include <ldap.h>

#include <cstdio>
#include <memory>

namespace mailark::api {

std::string ldap_escape_filter_value(const std::string& value) {
  std::string out;
  for (unsigned char c : value) {
    if (c == '*' || c == '(' || c == ')' || c == '\\' || c == 0 || c >= 0x80) {
      char buf[4];
      std::snprintf(buf, sizeof buf, "\\%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string ldap_filter_for(const std::string& filter, const std::string& login) {
  const auto at = login.rfind('@');
  const std::string local = at == std::string::npos ? login : login.substr(0, at);
  const std::string domain = at == std::string::npos ? std::string() : login.substr(at + 1);
  std::string out;
  for (std::size_t i = 0; i < filter.size(); ++i) {
    if (filter[i] == '%' && i + 1 < filter.size()) {
      char k = filter[++i];
      if (k == 'u') out += ldap_escape_filter_value(login);
      else if (k == 'l') out += ldap_escape_filter_value(local);
      else if (k == 'd') out += ldap_escape_filter_value(domain);
      else if (k == '%') out += '%';
      else out += std::string("%") + k;
      continue;
    }
    out += filter[i];
  }
  return out;
}

namespace {

struct Conn {
  LDAP* ld = nullptr;
  ~Conn() {
    if (ld) ldap_unbind_ext_s(ld, nullptr, nullptr);
  }
};

int simple_bind(LDAP* ld, const std::string& dn, const std::string& password) {
  berval cred;
  cred.bv_val = const_cast<char*>(password.data());
  cred.bv_len = password.size();
  return ldap_sasl_bind_s(ld, dn.empty() ? nullptr : dn.c_str(), LDAP_SASL_SIMPLE, &cred, nullptr, nullptr, nullptr);
}

}  // namespace

LdapAnswer ldap_check_password(const LdapConfig& config, const std::string& login, const std::string& password,
                               std::string* why) {
  if (password.empty() || password.size() > 1024 || login.empty() || login.size() > 320) return LdapAnswer::kBadCredentials;
  Conn c;
  int rc = ldap_initialize(&c.ld, config.url.c_str());
  if (rc != LDAP_SUCCESS) {
    *why = std::string("ldap_initialize: ") + ldap_err2string(rc);
    return LdapAnswer::kUnavailable;
  }
  int version = LDAP_VERSION3;
  ldap_set_option(c.ld, LDAP_OPT_PROTOCOL_VERSION, &version);
  ldap_set_option(c.ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
  timeval tv{static_cast<long>(config.timeout), 0};
  ldap_set_option(c.ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
  ldap_set_option(c.ld, LDAP_OPT_TIMEOUT, &tv);
  int require = config.verify_certificates ? LDAP_OPT_X_TLS_DEMAND : LDAP_OPT_X_TLS_NEVER;
  ldap_set_option(c.ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &require);
  int newctx = 0;
  ldap_set_option(c.ld, LDAP_OPT_X_TLS_NEWCTX, &newctx);
  if (config.starttls) {
    rc = ldap_start_tls_s(c.ld, nullptr, nullptr);
    if (rc != LDAP_SUCCESS) {
      *why = std::string("StartTLS: ") + ldap_err2string(rc);
      return LdapAnswer::kUnavailable;
    }
  }
  if (!config.search_dn.empty()) {
    rc = simple_bind(c.ld, config.search_dn, config.search_password);
    if (rc != LDAP_SUCCESS) {
      *why = std::string("binding as the search account: ") + ldap_err2string(rc);
      return LdapAnswer::kUnavailable;
    }
  }
  const std::string filter = ldap_filter_for(config.filter, login);
  char* no_attrs[] = {const_cast<char*>(LDAP_NO_ATTRS), nullptr};
  LDAPMessage* res = nullptr;
  rc = ldap_search_ext_s(c.ld, config.base_dn.c_str(), LDAP_SCOPE_SUBTREE, filter.c_str(), no_attrs, 0, nullptr,
                         nullptr, &tv, 2, &res);
  std::unique_ptr<LDAPMessage, int (*)(LDAPMessage*)> hold(res, ldap_msgfree);
  if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED) {
    *why = std::string("searching: ") + ldap_err2string(rc);
    return LdapAnswer::kUnavailable;
  }
  // Exactly one entry, or no login: an ambiguous filter must not let a password match either entry.
  if (rc == LDAP_SIZELIMIT_EXCEEDED || ldap_count_entries(c.ld, res) != 1) return LdapAnswer::kBadCredentials;
  char* dn = ldap_get_dn(c.ld, ldap_first_entry(c.ld, res));
  if (!dn) return LdapAnswer::kBadCredentials;
  std::string user_dn = dn;
  ldap_memfree(dn);
  rc = simple_bind(c.ld, user_dn, password);
  if (rc == LDAP_SUCCESS) return LdapAnswer::kOk;
  if (rc == LDAP_INVALID_CREDENTIALS || rc == LDAP_INAPPROPRIATE_AUTH || rc == LDAP_UNWILLING_TO_PERFORM)
    return LdapAnswer::kBadCredentials;
  *why = std::string("binding as the user: ") + ldap_err2string(rc);
  return LdapAnswer::kUnavailable;
}

}  // namespace mailark::api
