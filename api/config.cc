#include "api/config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <toml++/toml.h>

#include "common/ascii.h"
#include "common/file_util.h"
#include "common/sha256.h"
#include "common/numbers.h"

namespace mailark::api {

bool Network::contains(const std::string& ip) const {
  std::uint8_t addr[16];
  std::size_t len = 0;
  if (bytes.size() == 4 && ::inet_pton(AF_INET, ip.c_str(), addr) == 1) {
    len = 4;
  } else if (bytes.size() == 16 && ::inet_pton(AF_INET6, ip.c_str(), addr) == 1) {
    len = 16;
  } else if (bytes.size() == 4 && ip.rfind("::ffff:", 0) == 0 && ::inet_pton(AF_INET, ip.c_str() + 7, addr) == 1) {
    len = 4;  // an IPv4 client on a dual-stack socket
  } else {
    return false;
  }
  unsigned bits = prefix;
  for (std::size_t i = 0; i < len && bits > 0; ++i) {
    unsigned take = bits >= 8 ? 8 : bits;
    std::uint8_t mask = static_cast<std::uint8_t>(0xFF << (8 - take));
    if ((addr[i] & mask) != (bytes[i] & mask)) return false;
    bits -= take;
  }
  return true;
}

std::string client_group(const std::string& ip) {
  std::uint8_t a[16];
  if (::inet_pton(AF_INET6, ip.c_str(), a) != 1) return ip;
  if (std::all_of(a, a + 10, [](std::uint8_t b) { return b == 0; }) && a[10] == 0xFF && a[11] == 0xFF) {
    char v4[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, a + 12, v4, sizeof v4);  // an IPv4 client on a dual-stack socket
    return v4;
  }
  char buf[INET6_ADDRSTRLEN];
  std::fill(a + 8, a + 16, 0);
  ::inet_ntop(AF_INET6, a, buf, sizeof buf);
  return std::string(buf) + "/64";
}

Result<Network> parse_network(const std::string& cidr) {
  std::size_t slash = cidr.find('/');
  std::string ip = cidr.substr(0, slash);
  Network n;
  std::uint8_t buf[16];
  if (::inet_pton(AF_INET, ip.c_str(), buf) == 1) {
    n.bytes.assign(buf, buf + 4);
  } else if (::inet_pton(AF_INET6, ip.c_str(), buf) == 1) {
    n.bytes.assign(buf, buf + 16);
  } else {
    return make_error(ErrorCode::kInvalidArgument, "not a network: " + cidr, "write it as 192.0.2.0/24 or 2001:db8::/32");
  }
  n.prefix = static_cast<unsigned>(n.bytes.size() * 8);
  if (slash != std::string::npos) {
    std::string p = cidr.substr(slash + 1);
    auto prefix = parse_decimal(p, n.prefix);
    if (!prefix) return make_error(ErrorCode::kInvalidArgument, "bad prefix length in " + cidr);
    n.prefix = static_cast<unsigned>(*prefix);
  }
  return n;
}

Result<HostPort> parse_host_port(const std::string& text, std::uint16_t default_port) {
  HostPort hp;
  hp.port = default_port;
  std::string host = text;
  if (!host.empty() && host.front() == '[') {  // [2001:db8::1]:25
    std::size_t close = host.find(']');
    if (close == std::string::npos) return make_error(ErrorCode::kInvalidArgument, "bad address " + text);
    std::string rest = host.substr(close + 1);
    host = host.substr(1, close - 1);
    if (!rest.empty()) {
      auto port = rest[0] == ':' ? parse_decimal(rest.substr(1), 65535) : std::nullopt;
      if (!port) return make_error(ErrorCode::kInvalidArgument, "bad port in " + text);
      hp.port = static_cast<std::uint16_t>(*port);
    }
  } else if (std::size_t colon = host.rfind(':'); colon != std::string::npos && host.find(':') == colon) {
    auto port = parse_decimal(host.substr(colon + 1), 65535);
    if (!port) return make_error(ErrorCode::kInvalidArgument, "bad port in " + text);
    hp.port = static_cast<std::uint16_t>(*port);
    host = host.substr(0, colon);
  }
  if (host.empty()) return make_error(ErrorCode::kInvalidArgument, "no host in " + text);
  hp.host = host;
  return hp;
}

namespace {

ServeConfig defaults() {
  ServeConfig c;
  c.listeners = {{"inbound", "inbound", "127.0.0.1", 2525, "starttls"},
                 {"outbound", "outbound", "127.0.0.1", 2587, "starttls"},
                 {"imap", "imap", "127.0.0.1", 1143, "starttls"},
                 {"submission", "submission", "127.0.0.1", 1587, "starttls"}};
  // The demo company of demo/mailbox.mbox, and local mail.
  c.inbound_domains = {"northwind.example", "localhost"};
  for (const char* n : {"127.0.0.0/8", "::1/128"}) c.outbound_networks.push_back(parse_network(n).value());
  c.plaintext_login_networks = c.outbound_networks;
  return c;
}


bool local_address(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1" || host == "0.0.0.0" || host == "::";
}

}  // namespace

namespace {

// Every key this release understands, by table: a key not listed (a typo, a key of a newer release)
// is an error naming it, never silently ignored.
const std::map<std::string, std::set<std::string>>& known_keys() {
  static const std::map<std::string, std::set<std::string>> keys = {
      {"server", {"hostname"}},
      {"tls", {"cert", "key"}},
      {"inbound", {"domains", "recipients", "infected", "unscannable", "verify_recipients", "verify_positive_ttl",
                   "verify_negative_ttl", "verify_unreachable"}},
      {"outbound", {"networks", "infected", "unscannable"}},
      {"scanner", {"temp_dir", "isolation"}},
      {"limits", {"message_bytes", "recipients", "sessions", "sessions_per_ip", "command_timeout", "data_timeout",
                  "min_data_rate", "data_rate_grace", "session_timeout", "command_bytes", "line_bytes", "errors", "hops",
                  "scan_bytes", "scan_file_bytes", "scan_recursion", "scan_files", "scan_time_ms", "scan_memory_bytes",
                  "spill_bytes", "store_bytes", "disk_reserve_bytes", "index_min_free_bytes"}},
      {"archive", {"group_commit_linger_ms", "index_commit_interval_ms", "seal_interval_ms", "train_dictionary_after"}},
      {"delivery", {"primary", "smarthost", "tls", "verify_certificates", "retry_schedule", "queue_lifetime",
                    "connections_per_destination", "connect_timeout", "reply_timeout", "mx_port", "mx_address_limit"}},
      {"dns", {"servers"}},
      {"listener", {"name", "role", "address", "port", "tls", "bare_newline"}},
      {"continuity", {"window", "alert_after", "alert_repeat", "auto_start", "auto_stop", "drain_rate", "dedupe_window",
                      "history_days", "token_ttl", "probe_to", "probe_from", "probe_host", "probe_user", "probe_password", "probe_interval",
                      "probe_timeout", "imap_check", "imap_user", "imap_password", "imap_tls", "sent_copy_imap",
                      "sent_copy_user", "sent_copy_password", "sent_copy_folder", "sent_copy_tls"}},
      {"alerts", {"webhooks", "webhook_headers", "email", "command", "from", "timeout", "retry"}},
      {"checkpoints", {"publish", "every", "timeout"}},
      {"retention", {"every"}},
      {"admin", {"listen", "token_file", "public_url", "tls"}},
      {"imap", {"sessions", "sessions_per_ip", "idle_timeout", "login_timeout"}},
      {"web", {"listen", "tls", "session_idle_minutes", "session_max_hours", "connections", "connections_per_ip",
               "requests_per_second"}},
      {"auth", {"plaintext_login_networks"}},
      {"ldap", {"url", "starttls", "verify_certificates", "base_dn", "filter", "search_dn", "search_password", "timeout"}},
  };
  return keys;
}

}  // namespace

Result<ServeConfig> load_serve_config(const std::string& path) {
  if (path.empty()) {
    ServeConfig c = defaults();
    c.admin.listen = "127.0.0.1:8025";  // the embedded default: the admin listener on loopback
    c.web.listen = "127.0.0.1:8080";    // and the web portal
    return c;
  }
  auto text = read_config_file(path);
  if (!text) return text.error();
  auto c = parse_serve_config(*text, path);
  if (c) c->source_sha256 = to_hex(sha256(*text));
  return c;
}

Result<std::string> read_config_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return make_error(ErrorCode::kNotFound, "no configuration file " + path);
  auto text = read_file_head(path, kMaxConfigBytes);  // a directory: kInvalidArgument
  if (!text) return text.error();
  if (text->size() > kMaxConfigBytes) return make_error(ErrorCode::kInvalidArgument, path + ": larger than 1 MiB");
  return text;
}

Result<ServeConfig> parse_serve_config(std::string_view text, const std::string& path) {
  ServeConfig c = defaults();
  toml::table t;
  try {
    t = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return make_error(ErrorCode::kInvalidArgument,
                      path + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  auto bad = [&](const std::string& key, const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, path + ": " + key + ": " + why);
  };
  // Unknown tables and keys.
  for (const auto& [name, node] : t) {
    const std::string table(name.str());
    auto known = known_keys().find(table);
    if (known == known_keys().end()) return bad(table, "unknown table");
    auto check = [&](const toml::table& tab) -> std::optional<Error> {
      for (const auto& [key, value] : tab) {
        if (!known->second.count(std::string(key.str()))) return bad(table + "." + std::string(key.str()), "unknown key");
      }
      return std::nullopt;
    };
    if (table == "listener") {
      auto* arr = node.as_array();
      if (!arr) return bad("listener", "must be an array of tables ([[listener]])");
      for (const auto& item : *arr) {
        auto* lt = item.as_table();
        if (!lt) return bad("listener", "must be an array of tables ([[listener]])");
        if (auto e = check(*lt)) return *e;
      }
    } else {
      auto* tab = node.as_table();
      if (!tab) return bad(table, "must be a table");
      if (auto e = check(*tab)) return *e;
    }
  }
  // Typed reads: a key of the wrong type is an error, not its default. The type is checked before the
  // value is read: toml++ converts a float to an integer without a range check (undefined behaviour for
  // 1e76; found by fuzz/config_fuzz.cc, regression in fuzz/regressions/config/).
  std::optional<Error> type_error;
  auto str = [&](toml::node_view<toml::node> node, const std::string& key, std::string& out) {
    if (!node) return;
    if (node.is_string()) out = node.as_string()->get();
    else if (!type_error) type_error = bad(key, "must be a string");
  };
  auto num = [&](toml::node_view<toml::node> node, const std::string& key, auto& out, std::int64_t lo, std::int64_t hi) {
    if (!node) return;
    if (!node.is_integer()) {
      if (!type_error) type_error = bad(key, "must be a whole number");
      return;
    }
    const std::optional<std::int64_t> v = node.as_integer()->get();
    if (*v < lo || *v > hi) {
      if (!type_error) type_error = bad(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
      return;
    }
    out = static_cast<std::remove_reference_t<decltype(out)>>(*v);
  };
  auto boolean = [&](toml::node_view<toml::node> node, const std::string& key, bool& out) {
    if (!node) return;
    if (node.is_boolean()) out = node.as_boolean()->get();
    else if (!type_error) type_error = bad(key, "must be true or false");
  };
  auto strings = [&](toml::node_view<toml::node> node, const std::string& key, std::vector<std::string>& out) {
    if (!node) return;
    auto* arr = node.as_array();
    std::vector<std::string> list;
    bool ok = arr != nullptr;
    if (arr) {
      for (auto& v : *arr) {
        if (!v.is_string()) {
          ok = false;
          break;
        }
        list.push_back(v.as_string()->get());
      }
    }
    if (!ok) {
      if (!type_error) type_error = bad(key, "must be a list of strings");
      return;
    }
    out = std::move(list);
  };
  auto one_of = [&](const std::string& key, const std::string& value, std::initializer_list<const char*> allowed) {
    for (const char* a : allowed)
      if (value == a) return;
    std::string list;
    for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + "\"" + a + "\"";
    if (!type_error) type_error = bad(key, "must be one of " + list);
  };
  constexpr std::int64_t kMaxU32 = 4294967295;

  str(t["server"]["hostname"], "server.hostname", c.hostname);
  str(t["tls"]["cert"], "tls.cert", c.tls_cert);
  str(t["tls"]["key"], "tls.key", c.tls_key);
  strings(t["inbound"]["domains"], "inbound.domains", c.inbound_domains);
  strings(t["inbound"]["recipients"], "inbound.recipients", c.inbound_recipients);
  str(t["inbound"]["verify_recipients"], "inbound.verify_recipients", c.verify_recipients);
  one_of("inbound.verify_recipients", c.verify_recipients, {"auto", "primary", "list", "none"});
  num(t["inbound"]["verify_positive_ttl"], "inbound.verify_positive_ttl", c.verify_positive_ttl, 0, kMaxU32);
  num(t["inbound"]["verify_negative_ttl"], "inbound.verify_negative_ttl", c.verify_negative_ttl, 0, kMaxU32);
  str(t["inbound"]["verify_unreachable"], "inbound.verify_unreachable", c.verify_unreachable);
  one_of("inbound.verify_unreachable", c.verify_unreachable, {"defer", "accept"});
  for (auto [section, policy] : {std::pair<const char*, ServeConfig::ScanPolicy*>{"inbound", &c.inbound_scan},
                                 {"outbound", &c.outbound_scan}}) {
    const std::string s(section);
    str(t[section]["infected"], s + ".infected", policy->infected);
    one_of(s + ".infected", policy->infected, {"reject", "quarantine"});
    str(t[section]["unscannable"], s + ".unscannable", policy->unscannable);
    one_of(s + ".unscannable", policy->unscannable, {"reject", "quarantine", "deliver"});
  }
  std::vector<std::string> nets;
  if (t["outbound"]["networks"]) {
    strings(t["outbound"]["networks"], "outbound.networks", nets);
    if (!type_error) {
      c.outbound_networks.clear();
      for (const auto& n : nets) {
        auto net = parse_network(n);
        if (!net) return bad("outbound.networks", net.error().context);
        c.outbound_networks.push_back(*net);
      }
    }
  }
  str(t["scanner"]["temp_dir"], "scanner.temp_dir", c.scanner_temp_dir);
  str(t["scanner"]["isolation"], "scanner.isolation", c.scanner_isolation);
  one_of("scanner.isolation", c.scanner_isolation, {"process", "thread"});

  auto L = t["limits"];
  Limits& lim = c.limits;
  num(L["message_bytes"], "limits.message_bytes", lim.max_message_bytes, 100,
      static_cast<std::int64_t>(Limits::kMaxStoredMessageBytes - Limits::kTraceHeaderBytes));
  num(L["recipients"], "limits.recipients", lim.smtp_recipients, 1, 100000);
  num(L["sessions"], "limits.sessions", c.max_sessions, 1, 1000000);
  num(L["sessions_per_ip"], "limits.sessions_per_ip", c.max_sessions_per_ip, 1, 1000000);
  num(L["command_timeout"], "limits.command_timeout", lim.smtp_command_timeout_s, 1, 86400);
  num(L["data_timeout"], "limits.data_timeout", lim.smtp_data_timeout_s, 1, 86400);
  num(L["min_data_rate"], "limits.min_data_rate", lim.smtp_min_data_rate, 0, std::int64_t{1} << 40);
  num(L["data_rate_grace"], "limits.data_rate_grace", lim.smtp_data_rate_grace_s, 0, 86400);
  num(L["session_timeout"], "limits.session_timeout", lim.smtp_session_timeout_s, 1, 7 * 86400);
  num(L["command_bytes"], "limits.command_bytes", lim.smtp_command_bytes, 512, 1 << 20);
  num(L["line_bytes"], "limits.line_bytes", lim.smtp_line_bytes, 100, static_cast<std::int64_t>(Limits::kMaxStoredMessageBytes));
  num(L["errors"], "limits.errors", lim.smtp_errors, 1, 100000);
  num(L["hops"], "limits.hops", lim.smtp_hops, 10, 10000);
  num(L["spill_bytes"], "limits.spill_bytes", lim.smtp_spill_bytes, 4096, std::int64_t{1} << 30);
  if (!L["store_bytes"]) lim.store_bytes = 4 * (lim.max_message_bytes + Limits::kTraceHeaderBytes);
  num(L["store_bytes"], "limits.store_bytes", lim.store_bytes, 1 << 20, std::int64_t{1} << 40);
  if (lim.store_bytes < lim.max_message_bytes + Limits::kTraceHeaderBytes && !type_error)
    type_error = bad("limits.store_bytes", "must hold one message of limits.message_bytes (" +
                                         std::to_string(lim.max_message_bytes) + ") and its trace header (64 KiB)");
  // The archive's room for what is being archived, and 64 MiB for the index and the queue.
  if (!L["disk_reserve_bytes"]) lim.disk_reserve_bytes = lim.store_bytes + (std::uint64_t{64} << 20);
  num(L["disk_reserve_bytes"], "limits.disk_reserve_bytes", lim.disk_reserve_bytes, 0, std::int64_t{1} << 50);
  num(L["index_min_free_bytes"], "limits.index_min_free_bytes", lim.index_min_free_bytes, 0, std::int64_t{1} << 50);
  // The scanner looks at whole messages: unless set, its size limits grow with the message limit, so
  // that a message the server may accept is never unscannable only for its size.
  const std::uint64_t stored = lim.max_message_bytes + Limits::kTraceHeaderBytes;
  if (!L["scan_file_bytes"]) lim.scan_max_file_bytes = std::max<std::uint64_t>(lim.scan_max_file_bytes, stored);
  if (!L["scan_bytes"]) lim.scan_max_scan_bytes = std::max<std::uint64_t>(lim.scan_max_scan_bytes, 2 * stored);
  num(L["scan_file_bytes"], "limits.scan_file_bytes", lim.scan_max_file_bytes, 1024, std::int64_t{4} << 30);
  num(L["scan_bytes"], "limits.scan_bytes", lim.scan_max_scan_bytes, 1024, std::int64_t{1} << 40);
  num(L["scan_recursion"], "limits.scan_recursion", lim.scan_max_recursion, 1, 100);
  num(L["scan_files"], "limits.scan_files", lim.scan_max_files, 1, 1000000);
  num(L["scan_time_ms"], "limits.scan_time_ms", lim.scan_max_ms, 100, 3600000);
  if (!L["scan_memory_bytes"]) lim.scan_max_memory_bytes = Limits::scan_memory_for(lim.scan_max_scan_bytes);
  num(L["scan_memory_bytes"], "limits.scan_memory_bytes", lim.scan_max_memory_bytes, std::int64_t{64} << 20,
      std::int64_t{1} << 44);
  num(t["archive"]["group_commit_linger_ms"], "archive.group_commit_linger_ms", c.group_commit_linger_ms, 0, 10000);
  num(t["archive"]["index_commit_interval_ms"], "archive.index_commit_interval_ms", c.index_commit_interval_ms, 0, 3600000);
  num(t["archive"]["seal_interval_ms"], "archive.seal_interval_ms", c.seal_interval_ms, 0, 86400000);
  num(t["archive"]["train_dictionary_after"], "archive.train_dictionary_after", c.train_dictionary_after, 0, 1000000);

  auto D = t["delivery"];
  for (auto [key, list] : {std::pair<const char*, std::vector<HostPort>*>{"primary", &c.delivery.primary},
                           {"smarthost", &c.delivery.smarthost}}) {
    std::vector<std::string> hosts;
    strings(D[key], std::string("delivery.") + key, hosts);
    for (const auto& h : hosts) {
      auto hp = parse_host_port(h, 25);
      if (!hp) return bad(std::string("delivery.") + key, hp.error().context);
      list->push_back(*hp);
    }
  }
  str(D["tls"], "delivery.tls", c.delivery.tls);
  one_of("delivery.tls", c.delivery.tls, {"none", "opportunistic", "required"});
  boolean(D["verify_certificates"], "delivery.verify_certificates", c.delivery.verify_certificates);
  if (D["retry_schedule"]) {
    auto* arr = D["retry_schedule"].as_array();
    if (!arr || arr->empty()) return bad("delivery.retry_schedule", "must be a list of positive seconds");
    c.delivery.retry_schedule.clear();
    for (auto& v : *arr) {
      const std::int64_t n = v.is_integer() ? v.as_integer()->get() : 0;
      if (n <= 0 || n > 30 * 86400) return bad("delivery.retry_schedule", "must be a list of positive seconds");
      c.delivery.retry_schedule.push_back(static_cast<unsigned>(n));
    }
  }
  num(D["queue_lifetime"], "delivery.queue_lifetime", c.delivery.queue_lifetime, 1, 365 * 86400);
  num(D["connections_per_destination"], "delivery.connections_per_destination", c.delivery.connections_per_destination, 1, 1000);
  num(D["connect_timeout"], "delivery.connect_timeout", c.delivery.connect_timeout, 1, 3600);
  num(D["reply_timeout"], "delivery.reply_timeout", c.delivery.reply_timeout, 1, 3600);
  num(D["mx_port"], "delivery.mx_port", c.delivery.mx_port, 1, 65535);
  num(D["mx_address_limit"], "delivery.mx_address_limit", c.delivery.mx_address_limit, 0, 1000);
  strings(t["dns"]["servers"], "dns.servers", c.delivery.dns_servers);

  if (auto* arr = t["listener"].as_array()) {
    c.listeners.clear();
    for (auto& node : *arr) {
      auto* lt = node.as_table();
      ListenerConfig l;
      auto L2 = toml::node_view<toml::node>(node);
      str(L2["name"], "listener.name", l.name);
      str(L2["role"], "listener.role", l.role);
      str(L2["address"], "listener.address", l.address);
      num(L2["port"], "listener.port", l.port, 0, 65535);
      str(L2["tls"], "listener.tls", l.tls);
      str(L2["bare_newline"], "listener.bare_newline", l.bare_newline);
      if (type_error) return *type_error;
      if (l.role != "inbound" && l.role != "outbound" && l.role != "submission" && l.role != "imap")
        return bad("listener.role", "must be \"inbound\", \"outbound\", \"submission\" or \"imap\"");
      if (!(*lt)["port"]) return bad("listener.port", "is required");
      one_of("listener.tls", l.tls, {"none", "starttls", "implicit"});
      one_of("listener.bare_newline", l.bare_newline, {"reject", "normalize"});
      if (l.name.empty()) l.name = l.role;
      c.listeners.push_back(l);
    }
  }
  if (type_error) return *type_error;
  if (c.listeners.empty()) return bad("listener", "at least one listener is needed");
  num(t["imap"]["sessions"], "imap.sessions", c.imap_max_sessions, 1, 1000000);
  num(t["imap"]["sessions_per_ip"], "imap.sessions_per_ip", c.imap_max_sessions_per_ip, 1, 1000000);
  num(t["imap"]["idle_timeout"], "imap.idle_timeout", c.imap_idle_timeout_s, 60, 86400);
  num(t["imap"]["login_timeout"], "imap.login_timeout", c.imap_login_timeout_s, 1, 3600);
  // [web]: a file without the table has no web portal; the embedded default has one.
  str(t["web"]["listen"], "web.listen", c.web.listen);
  str(t["web"]["tls"], "web.tls", c.web.tls);
  num(t["web"]["session_idle_minutes"], "web.session_idle_minutes", c.web.session_idle_minutes, 1, 43200);
  num(t["web"]["session_max_hours"], "web.session_max_hours", c.web.session_max_hours, 1, 8760);
  num(t["web"]["connections"], "web.connections", c.web.connections, 1, 1000000);
  num(t["web"]["connections_per_ip"], "web.connections_per_ip", c.web.connections_per_ip, 1, 1000000);
  num(t["web"]["requests_per_second"], "web.requests_per_second", c.web.requests_per_second, 1, 100000);
  {
    auto LD = t["ldap"];
    LdapConfig& l = c.ldap;
    str(LD["url"], "ldap.url", l.url);
    boolean(LD["starttls"], "ldap.starttls", l.starttls);
    boolean(LD["verify_certificates"], "ldap.verify_certificates", l.verify_certificates);
    str(LD["base_dn"], "ldap.base_dn", l.base_dn);
    str(LD["filter"], "ldap.filter", l.filter);
    str(LD["search_dn"], "ldap.search_dn", l.search_dn);
    str(LD["search_password"], "ldap.search_password", l.search_password);
    num(LD["timeout"], "ldap.timeout", l.timeout, 1, 300);
    if (!l.url.empty()) {
      if (l.url.rfind("ldap://", 0) != 0 && l.url.rfind("ldaps://", 0) != 0)
        return bad("ldap.url", "must start with ldap:// or ldaps://");
      if (l.base_dn.empty()) return bad("ldap.base_dn", "is required with ldap.url");
      if (l.filter.find("%u") == std::string::npos && l.filter.find("%l") == std::string::npos)
        return bad("ldap.filter", "must name the user (%u or %l)");
      if (l.filter.empty() || l.filter.front() != '(' || l.filter.back() != ')')
        return bad("ldap.filter", "must be an LDAP filter in parentheses, such as (mail=%u)");
    }
  }
  if (t["auth"]["plaintext_login_networks"]) {
    std::vector<std::string> nets;
    strings(t["auth"]["plaintext_login_networks"], "auth.plaintext_login_networks", nets);
    c.plaintext_login_networks.clear();
    for (const auto& n : nets) {
      auto net = parse_network(n);
      if (!net) return bad("auth.plaintext_login_networks", net.error().context);
      c.plaintext_login_networks.push_back(*net);
    }
  }

  // [continuity]
  auto C = t["continuity"];
  ContinuityConfig& cc = c.continuity;
  num(C["window"], "continuity.window", cc.window, 5, 86400);
  num(C["alert_after"], "continuity.alert_after", cc.alert_after, 1, 10000);
  num(C["alert_repeat"], "continuity.alert_repeat", cc.alert_repeat, 60, 7 * 86400);
  num(C["auto_start"], "continuity.auto_start", cc.auto_start, 0, 10000);
  num(C["auto_stop"], "continuity.auto_stop", cc.auto_stop, 0, 10000);
  num(C["drain_rate"], "continuity.drain_rate", cc.drain_rate, 0, 1000000);
  num(C["dedupe_window"], "continuity.dedupe_window", cc.dedupe_window, 0, 365 * 86400);
  num(C["history_days"], "continuity.history_days", cc.history_days, 1, 3650);
  num(C["token_ttl"], "continuity.token_ttl", cc.token_ttl, 60, 30 * 86400);
  str(C["probe_to"], "continuity.probe_to", cc.probe_to);
  str(C["probe_from"], "continuity.probe_from", cc.probe_from);
  str(C["probe_user"], "continuity.probe_user", cc.probe_user);
  str(C["probe_password"], "continuity.probe_password", cc.probe_password);
  num(C["probe_interval"], "continuity.probe_interval", cc.probe_interval, 1, 86400);
  num(C["probe_timeout"], "continuity.probe_timeout", cc.probe_timeout, 1, 86400);
  str(C["imap_user"], "continuity.imap_user", cc.imap_user);
  str(C["imap_password"], "continuity.imap_password", cc.imap_password);
  str(C["imap_tls"], "continuity.imap_tls", cc.imap_tls);
  one_of("continuity.imap_tls", cc.imap_tls, {"none", "starttls", "implicit"});
  str(C["sent_copy_user"], "continuity.sent_copy_user", cc.sent_copy_user);
  str(C["sent_copy_password"], "continuity.sent_copy_password", cc.sent_copy_password);
  str(C["sent_copy_folder"], "continuity.sent_copy_folder", cc.sent_copy_folder);
  str(C["sent_copy_tls"], "continuity.sent_copy_tls", cc.sent_copy_tls);
  one_of("continuity.sent_copy_tls", cc.sent_copy_tls, {"none", "starttls", "implicit"});
  for (auto [key, list, port] : {std::tuple<const char*, std::vector<HostPort>*, std::uint16_t>{"probe_host", &cc.probe_host, 25},
                                 {"imap_check", &cc.imap_check, 143},
                                 {"sent_copy_imap", &cc.sent_copy_imap, 143}}) {
    std::vector<std::string> hosts;
    strings(C[key], std::string("continuity.") + key, hosts);
    for (const auto& h : hosts) {
      auto hp = parse_host_port(h, port);
      if (!hp) return bad(std::string("continuity.") + key, hp.error().context);
      list->push_back(*hp);
    }
  }
  // [alerts]
  auto A = t["alerts"];
  strings(A["webhooks"], "alerts.webhooks", c.alerts.webhooks);
  strings(A["webhook_headers"], "alerts.webhook_headers", c.alerts.webhook_headers);
  strings(A["email"], "alerts.email", c.alerts.email);
  str(A["command"], "alerts.command", c.alerts.command);
  str(A["from"], "alerts.from", c.alerts.from);
  num(A["timeout"], "alerts.timeout", c.alerts.timeout, 1, 600);
  if (A["retry"]) {
    auto* arr = A["retry"].as_array();
    if (!arr) return bad("alerts.retry", "must be a list of seconds");
    c.alerts.retry.clear();
    for (auto& v : *arr) {
      const std::int64_t n = v.is_integer() ? v.as_integer()->get() : -1;
      if (n < 0 || n > 86400) return bad("alerts.retry", "must be a list of seconds (0 to 86400)");
      c.alerts.retry.push_back(static_cast<unsigned>(n));
    }
  }
  // [checkpoints]
  auto K = t["checkpoints"];
  strings(K["publish"], "checkpoints.publish", c.checkpoints.publish);
  for (const auto& target : c.checkpoints.publish) {
    const bool file = target.rfind("file:/", 0) == 0, command = target.rfind("command:", 0) == 0 && target.size() > 8,
               web = target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0;
    if (!file && !command && !web)
      return bad("checkpoints.publish", "\"" + target + "\" is not file:/ABSOLUTE/DIR, command:CMD or an http(s) URL");
  }
  num(K["every"], "checkpoints.every", c.checkpoints.every, 1, 7 * 86400);
  num(K["timeout"], "checkpoints.timeout", c.checkpoints.timeout, 1, 600);
  // [retention]
  num(t["retention"]["every"], "retention.every", c.retention.every, 0, 30 * 86400);
  // [admin]: a file without the table has no admin listener; the embedded default has one.
  str(t["admin"]["listen"], "admin.listen", c.admin.listen);
  str(t["admin"]["token_file"], "admin.token_file", c.admin.token_file);
  str(t["admin"]["public_url"], "admin.public_url", c.admin.public_url);
  str(t["admin"]["tls"], "admin.tls", c.admin.tls);
  one_of("admin.tls", c.admin.tls, {"none", "implicit"});
  if (type_error) return *type_error;
  if (!c.admin.listen.empty()) {
    auto hp = parse_host_port(c.admin.listen, 8025);
    if (!hp) return bad("admin.listen", hp.error().context);
  }
  one_of("web.tls", c.web.tls, {"none", "implicit"});
  if (type_error) return *type_error;
  if (!c.web.listen.empty()) {
    auto hp = parse_host_port(c.web.listen, 8080);
    if (!hp) return bad("web.listen", hp.error().context);
  }
  // Two of mailark's own listeners on one port would fail at start-up as "Address already in use",
  // as if another program held it: named here instead (tests/config_test.cc Config.ListenersNeedPortsOfTheirOwn).
  {
    struct Socket {
      std::string what, host;
      std::uint16_t port;
    };
    std::vector<Socket> sockets;
    for (const auto& l : c.listeners) sockets.push_back({"listener " + l.name, l.address, l.port});
    if (!c.web.listen.empty()) {
      auto hp = parse_host_port(c.web.listen, 8080);
      sockets.push_back({"web.listen", hp->host, hp->port});
    }
    if (!c.admin.listen.empty()) {
      auto hp = parse_host_port(c.admin.listen, 8025);
      sockets.push_back({"admin.listen", hp->host, hp->port});
    }
    auto wildcard = [](const std::string& h) { return h.empty() || h == "0.0.0.0" || h == "::" || h == "*"; };
    for (std::size_t i = 0; i < sockets.size(); ++i)
      for (std::size_t j = i + 1; j < sockets.size(); ++j) {
        const Socket &a = sockets[i], &b = sockets[j];
        if (a.port != 0 && a.port == b.port && (a.host == b.host || wildcard(a.host) || wildcard(b.host)))
          return bad(b.what, "port " + std::to_string(b.port) + " is " + a.what + "'s too; give each listener a port of its own");
      }
  }
  for (const auto& url : c.alerts.webhooks) {
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) return bad("alerts.webhooks", url + " is not an http:// or https:// URL");
  }
  for (const auto& h : c.alerts.webhook_headers) {
    if (h.find(':') == std::string::npos || h.find_first_of("\r\n") != std::string::npos)
      return bad("alerts.webhook_headers", "\"" + h + "\" is not a \"Name: value\" header");
  }
  MAILARK_TRY(check_continuity(c, path));
  return c;
}

Status check_continuity(const ServeConfig& c, const std::string& path) {
  auto bad = [&](const std::string& key, const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, path + ": " + key + ": " + why);
  };
  const ContinuityConfig& cc = c.continuity;
  std::set<std::string> domains;
  for (const auto& d : c.inbound_domains) domains.insert(domain_of("@" + d));
  // Alerts about the primary must not depend on it: an alternate address in one of the company's
  // own domains would be delivered through the primary.
  for (const auto& a : c.alerts.email) {
    if (domain_of(a).empty()) return bad("alerts.email", "\"" + a + "\" is not an address");
    if (domains.count(domain_of(a)))
      return bad("alerts.email", a + " is in inbound.domains: it would be delivered through the primary server, "
                                     "which is what the alert is about; give an address outside the company's domains");
  }
  if (!cc.probe_to.empty()) {
    const std::string d = domain_of(cc.probe_to);
    if (d.empty()) return bad("continuity.probe_to", "\"" + cc.probe_to + "\" is not an address");
    // The probe must leave the primary through the outbound listener. To one of the company's own
    // domains it would come back in through the MX and go to the primary again: a loop.
    if (domains.count(d))
      return bad("continuity.probe_to", cc.probe_to + " is in inbound.domains: the primary would deliver the probe "
                                        "locally or send it back to the MX (a routing loop); use an address outside "
                                        "the company's domains that the primary relays through mailark's outbound listener");
    const auto& hosts = cc.probe_host.empty() ? c.delivery.primary : cc.probe_host;
    if (hosts.empty()) return bad("continuity.probe_to", "a probe needs continuity.probe_host or delivery.primary");
    // Sent to one of mailark's own listeners, the probe would loop through mailark itself.
    for (const auto& h : hosts) {
      for (const auto& l : c.listeners) {
        if (h.port == l.port && (h.host == l.address || (local_address(h.host) && local_address(l.address))))
          return bad("continuity.probe_host", h.host + ":" + std::to_string(h.port) + " is mailark's own " + l.role +
                                                  " listener: the probe would loop through mailark; name the primary server");
      }
    }
  }
  if (cc.auto_stop > 0 && cc.probe_to.empty() && cc.imap_check.empty())
    return bad("continuity.auto_stop", "needs a check that can see the primary work during an event "
                                       "(continuity.probe_to or continuity.imap_check): nothing is delivered to it then");
  if (cc.probe_user.empty() != cc.probe_password.empty())
    return bad("continuity.probe_user", "probe_user and probe_password go together");
  if (!cc.imap_check.empty() && (cc.imap_user.empty() || cc.imap_password.empty()))
    return bad("continuity.imap_check", "needs continuity.imap_user and continuity.imap_password");
  if (!cc.sent_copy_imap.empty() && (cc.sent_copy_user.empty() || cc.sent_copy_password.empty()))
    return bad("continuity.sent_copy_imap", "needs continuity.sent_copy_user and continuity.sent_copy_password");
  return ok_status();
}

}  // namespace mailark::api
