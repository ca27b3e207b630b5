#include "engine/users.h"

#include <dlfcn.h>
#include <nettle/memops.h>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "common/ascii.h"
#include "common/base64.h"
#include "common/json_text.h"
#include "common/numbers.h"
#include "common/random.h"
#include "common/sha256.h"

namespace mailark {
namespace {

constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kKeyBytes = 32;

// OpenSSL's scrypt (EVP_PBE_scrypt: Nettle has none), from libcrypto loaded when a password is first
// hashed or checked, not linked: every short command would otherwise pay libcrypto's loading
// (common/sha256.cc). In mailark-server, libssl has it loaded already. Null when it cannot be loaded.
using ScryptFn = int (*)(const char* pass, std::size_t passlen, const unsigned char* salt, std::size_t saltlen,
                         std::uint64_t n, std::uint64_t r, std::uint64_t p, std::uint64_t maxmem, unsigned char* key,
                         std::size_t keylen);
ScryptFn openssl_scrypt() {
  static ScryptFn fn = [] {
    void* lib = ::dlopen(MAILARK_LIBCRYPTO_SONAME, RTLD_NOW | RTLD_LOCAL);
    return lib ? reinterpret_cast<ScryptFn>(::dlsym(lib, "EVP_PBE_scrypt")) : nullptr;
  }();
  return fn;
}

std::optional<std::string> scrypt(std::string_view password, std::string_view salt, unsigned log_n, unsigned r,
                                  unsigned p) {
  if (log_n < 10 || log_n > 20 || r < 1 || r > 32 || p < 1 || p > 4) return std::nullopt;
  const std::uint64_t n = std::uint64_t{1} << log_n;
  const std::uint64_t maxmem = 128 * n * r * p + (std::uint64_t{1} << 20) * 2;
  const ScryptFn fn = openssl_scrypt();
  if (!fn) return std::nullopt;
  std::string key(kKeyBytes, '\0');
  if (fn(password.data(), password.size(), reinterpret_cast<const unsigned char*>(salt.data()), salt.size(), n, r, p,
         maxmem, reinterpret_cast<unsigned char*>(key.data()), key.size()) != 1)
    return std::nullopt;
  return key;
}

}  // namespace

const char* role_name(Role r) {
  switch (r) {
    case Role::kUser: return "user";
    case Role::kAuditor: return "auditor";
    case Role::kAdmin: return "admin";
  }
  return "user";
}

std::optional<Role> parse_role(std::string_view name) {
  for (Role r : {Role::kUser, Role::kAuditor, Role::kAdmin})
    if (ascii_iequals(name, role_name(r))) return r;
  return std::nullopt;
}

std::vector<std::string> User::addresses() const {
  std::vector<std::string> all{name};
  all.insert(all.end(), aliases.begin(), aliases.end());
  return all;
}

bool User::has_address(std::string_view address) const {
  if (ascii_iequals(address, name)) return true;
  for (const auto& a : aliases)
    if (ascii_iequals(address, a)) return true;
  return false;
}

std::string encode_user(const User& u) {
  nlohmann::json apps = nlohmann::json::array();
  for (const auto& a : u.app_passwords) apps.push_back({{"label", a.label}, {"hash", a.hash}, {"created_at", a.created_at}});
  nlohmann::json tokens = nlohmann::json::array();
  for (const auto& t : u.api_tokens) tokens.push_back({{"label", t.label}, {"hash", t.hash}, {"created_at", t.created_at}});
  nlohmann::json j = {{"v", 1},
                      {"id", u.id},
                      {"name", u.name},
                      {"aliases", u.aliases},
                      {"display_name", u.display_name},
                      {"role", role_name(u.role)},
                      {"password", u.password_hash},
                      {"app_passwords", apps},
                      {"api_tokens", tokens},
                      {"disabled", u.disabled},
                      {"sessions_after_ms", u.sessions_after_ms},
                      {"created_at", u.created_at}};
  return json_text(j);
}

Result<User> decode_user(std::string_view value) {
  try {
    auto j = nlohmann::json::parse(value);
    if (j.value("v", 0) != 1) return make_error(ErrorCode::kUnsupported, "a user record of an unknown version");
    User u;
    u.id = j.at("id").get<std::uint32_t>();
    u.name = j.at("name").get<std::string>();
    u.aliases = j.value("aliases", std::vector<std::string>{});
    u.display_name = j.value("display_name", std::string());
    auto role = parse_role(j.value("role", std::string("user")));
    if (!role) return make_error(ErrorCode::kCorrupt, "user " + u.name + " has an unknown role");
    u.role = *role;
    u.password_hash = j.value("password", std::string());
    for (const auto& a : j.value("app_passwords", nlohmann::json::array()))
      u.app_passwords.push_back({a.at("label").get<std::string>(), a.at("hash").get<std::string>(),
                                 a.value("created_at", std::int64_t{0})});
    for (const auto& t : j.value("api_tokens", nlohmann::json::array()))
      u.api_tokens.push_back({t.at("label").get<std::string>(), t.at("hash").get<std::string>(),
                              t.value("created_at", std::int64_t{0})});
    u.disabled = j.value("disabled", false);
    u.sessions_after_ms = j.value("sessions_after_ms", std::int64_t{0});
    u.created_at = j.value("created_at", std::int64_t{0});
    return u;
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kCorrupt, std::string("a user record does not decode: ") + e.what());
  }
}

Result<std::string> hash_password(std::string_view password, unsigned log_n) {
  if (password.empty()) return make_error(ErrorCode::kInvalidArgument, "an empty password");
  if (password.size() > 1024) return make_error(ErrorCode::kLimit, "a password longer than 1024 bytes");
  std::string salt(kSaltBytes, '\0');
  if (!random_bytes(salt.data(), salt.size()))
    return make_error(ErrorCode::kInternal, "the random number generator failed");
  auto key = scrypt(password, salt, log_n, 8, 1);
  if (!key) return make_error(ErrorCode::kInternal, std::string("scrypt failed (not enough memory, or no ") + MAILARK_LIBCRYPTO_SONAME + "?)");
  return "$scrypt$ln=" + std::to_string(log_n) + ",r=8,p=1$" + base64_encode(salt) + "$" + base64_encode(*key);
}

bool verify_password(std::string_view password, std::string_view hash) {
  // $scrypt$ln=15,r=8,p=1$salt$key
  constexpr std::string_view kPrefix = "$scrypt$";
  if (password.size() > 1024 || hash.substr(0, kPrefix.size()) != kPrefix) return false;
  std::string_view rest = hash.substr(kPrefix.size());
  auto d1 = rest.find('$');
  if (d1 == std::string_view::npos) return false;
  std::string_view params = rest.substr(0, d1);
  rest = rest.substr(d1 + 1);
  auto d2 = rest.find('$');
  if (d2 == std::string_view::npos) return false;
  auto salt = base64_decode(rest.substr(0, d2), 1024);
  auto expected = base64_decode(rest.substr(d2 + 1), 1024);
  if (!salt || !expected || expected->size() != kKeyBytes) return false;
  unsigned ln = 0, r = 0, p = 0;
  while (!params.empty()) {
    auto comma = params.find(',');
    std::string_view kv = params.substr(0, comma);
    params = comma == std::string_view::npos ? std::string_view() : params.substr(comma + 1);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) return false;
    auto v = parse_decimal(kv.substr(eq + 1), 64);
    if (!v) return false;
    std::string_view k = kv.substr(0, eq);
    if (k == "ln") ln = static_cast<unsigned>(*v);
    else if (k == "r") r = static_cast<unsigned>(*v);
    else if (k == "p") p = static_cast<unsigned>(*v);
    else return false;
  }
  auto key = scrypt(password, *salt, ln, r, p);
  return key && memeql_sec(key->data(), expected->data(), kKeyBytes) != 0;
}

std::string generate_app_password() {
  static constexpr char kAlphabet[] = "abcdefghijkmnpqrstuvwxyz23456789";  // no l, o, 0, 1
  unsigned char bytes[16];
  if (!random_bytes(bytes, sizeof bytes)) std::abort();  // never a predictable password
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i && i % 4 == 0) out += '-';
    out += kAlphabet[bytes[i] % 32];
  }
  return out;
}

std::string generate_api_token() { return "mkt_" + random_token(32); }

std::string api_token_hash(std::string_view token) { return to_hex(sha256(token)); }

Result<std::string> normalize_address(std::string_view address) {
  while (!address.empty() && (address.front() == ' ' || address.front() == '\t')) address.remove_prefix(1);
  while (!address.empty() && (address.back() == ' ' || address.back() == '\t')) address.remove_suffix(1);
  if (address.size() >= 2 && address.front() == '<' && address.back() == '>') address = address.substr(1, address.size() - 2);
  if (address.empty() || address.size() > 254)
    return make_error(ErrorCode::kInvalidArgument, "an address must have 1 to 254 bytes");
  auto at = address.rfind('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == address.size() || address.find('@') != at)
    return make_error(ErrorCode::kInvalidArgument, "\"" + std::string(address) + "\" is not an address (local@domain)");
  for (char c : address) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == '<' || c == '>' || c == '"' || c == '\\' || c == ',' || c == ';' || c == ':' ||
        c == '(' || c == ')' || c == '[' || c == ']')
      return make_error(ErrorCode::kInvalidArgument,
                        "\"" + std::string(address) + "\" holds a character the directory does not take in an address");
  }
  return ascii_lower(address);
}

}  // namespace mailark
