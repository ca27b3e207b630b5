#include "api/config.h"

#include <arpa/inet.h>

#include <filesystem>
#include <toml++/toml.h>

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
    if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(p) > n.prefix) {
      return make_error(ErrorCode::kInvalidArgument, "bad prefix length in " + cidr);
    }
    n.prefix = static_cast<unsigned>(std::stoul(p));
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
      if (rest[0] != ':') return make_error(ErrorCode::kInvalidArgument, "bad address " + text);
      hp.port = static_cast<std::uint16_t>(std::stoul(rest.substr(1)));
    }
  } else if (std::size_t colon = host.rfind(':'); colon != std::string::npos && host.find(':') == colon) {
    std::string port = host.substr(colon + 1);
    if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
      return make_error(ErrorCode::kInvalidArgument, "bad port in " + text);
    }
    hp.port = static_cast<std::uint16_t>(std::stoul(port));
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
                 {"outbound", "outbound", "127.0.0.1", 2587, "starttls"}};
  // The demo company of demo/mailbox.mbox, and local mail.
  c.inbound_domains = {"northwind.example", "localhost"};
  for (const char* n : {"127.0.0.0/8", "::1/128"}) c.outbound_networks.push_back(parse_network(n).value());
  return c;
}

}  // namespace

Result<ServeConfig> load_serve_config(const std::string& path) {
  ServeConfig c = defaults();
  if (path.empty()) return c;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return make_error(ErrorCode::kNotFound, "no configuration file " + path);
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return make_error(ErrorCode::kInvalidArgument,
                      path + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  auto bad = [&](const std::string& key, const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, path + ": " + key + ": " + why);
  };
  auto strings = [&](toml::node_view<toml::node> node, std::vector<std::string>& out) -> bool {
    if (!node) return true;
    auto* arr = node.as_array();
    if (!arr) return false;
    out.clear();
    for (auto& v : *arr) {
      auto s = v.value<std::string>();
      if (!s) return false;
      out.push_back(*s);
    }
    return true;
  };

  c.hostname = t["server"]["hostname"].value_or(c.hostname);
  c.tls_cert = t["tls"]["cert"].value_or(c.tls_cert);
  c.tls_key = t["tls"]["key"].value_or(c.tls_key);
  if (!strings(t["inbound"]["domains"], c.inbound_domains)) return bad("inbound.domains", "must be a list of strings");
  if (!strings(t["inbound"]["recipients"], c.inbound_recipients)) return bad("inbound.recipients", "must be a list of strings");
  c.infected = t["inbound"]["infected"].value_or(c.infected);
  if (c.infected != "reject" && c.infected != "quarantine") return bad("inbound.infected", "must be \"reject\" or \"quarantine\"");
  std::vector<std::string> nets;
  if (t["outbound"]["networks"]) {
    if (!strings(t["outbound"]["networks"], nets)) return bad("outbound.networks", "must be a list of strings");
    c.outbound_networks.clear();
    for (const auto& n : nets) {
      auto net = parse_network(n);
      if (!net) return bad("outbound.networks", net.error().context);
      c.outbound_networks.push_back(*net);
    }
  }
  auto L = t["limits"];
  Limits& lim = c.limits;
  lim.max_message_bytes = L["message_bytes"].value_or(lim.max_message_bytes);
  lim.smtp_recipients = L["recipients"].value_or(lim.smtp_recipients);
  c.max_sessions = L["sessions"].value_or(c.max_sessions);
  c.max_sessions_per_ip = L["sessions_per_ip"].value_or(c.max_sessions_per_ip);
  lim.smtp_command_timeout_s = L["command_timeout"].value_or(lim.smtp_command_timeout_s);
  lim.smtp_data_timeout_s = L["data_timeout"].value_or(lim.smtp_data_timeout_s);
  lim.smtp_min_data_rate = L["min_data_rate"].value_or(lim.smtp_min_data_rate);
  lim.smtp_data_rate_grace_s = L["data_rate_grace"].value_or(lim.smtp_data_rate_grace_s);
  lim.smtp_command_bytes = L["command_bytes"].value_or(lim.smtp_command_bytes);
  lim.smtp_line_bytes = L["line_bytes"].value_or(lim.smtp_line_bytes);
  lim.smtp_errors = L["errors"].value_or(lim.smtp_errors);
  if (lim.smtp_command_bytes < 512) return bad("limits.command_bytes", "must be at least 512 (RFC 5321 4.5.3.1.4)");
  c.group_commit_linger_ms = t["archive"]["group_commit_linger_ms"].value_or(c.group_commit_linger_ms);
  c.index_commit_interval_ms = t["archive"]["index_commit_interval_ms"].value_or(c.index_commit_interval_ms);

  auto D = t["delivery"];
  for (auto [key, list] : {std::pair<const char*, std::vector<HostPort>*>{"primary", &c.delivery.primary},
                           {"smarthost", &c.delivery.smarthost}}) {
    std::vector<std::string> hosts;
    if (!strings(D[key], hosts)) return bad(std::string("delivery.") + key, "must be a list of \"host:port\"");
    for (const auto& h : hosts) {
      auto hp = parse_host_port(h, 25);
      if (!hp) return bad(std::string("delivery.") + key, hp.error().context);
      list->push_back(*hp);
    }
  }
  c.delivery.tls = D["tls"].value_or(c.delivery.tls);
  if (c.delivery.tls != "none" && c.delivery.tls != "opportunistic" && c.delivery.tls != "required") {
    return bad("delivery.tls", "must be \"none\", \"opportunistic\" or \"required\"");
  }
  c.delivery.verify_certificates = D["verify_certificates"].value_or(c.delivery.verify_certificates);
  if (auto* arr = D["retry_schedule"].as_array()) {
    c.delivery.retry_schedule.clear();
    for (auto& v : *arr) {
      auto n = v.value<std::int64_t>();
      if (!n || *n <= 0) return bad("delivery.retry_schedule", "must be a list of positive seconds");
      c.delivery.retry_schedule.push_back(static_cast<unsigned>(*n));
    }
    if (c.delivery.retry_schedule.empty()) return bad("delivery.retry_schedule", "must not be empty");
  }
  c.delivery.queue_lifetime = D["queue_lifetime"].value_or(c.delivery.queue_lifetime);
  c.delivery.connections_per_destination = D["connections_per_destination"].value_or(c.delivery.connections_per_destination);
  c.delivery.connect_timeout = D["connect_timeout"].value_or(c.delivery.connect_timeout);
  c.delivery.reply_timeout = D["reply_timeout"].value_or(c.delivery.reply_timeout);
  c.delivery.mx_port = static_cast<std::uint16_t>(D["mx_port"].value_or(25));
  if (!strings(t["dns"]["servers"], c.delivery.dns_servers)) return bad("dns.servers", "must be a list of \"ip\" or \"ip@port\"");

  if (auto* arr = t["listener"].as_array()) {
    c.listeners.clear();
    for (auto& node : *arr) {
      auto* lt = node.as_table();
      if (!lt) return bad("listener", "must be a table ([[listener]])");
      ListenerConfig l;
      l.name = (*lt)["name"].value_or(std::string());
      l.role = (*lt)["role"].value_or(std::string());
      l.address = (*lt)["address"].value_or(l.address);
      l.port = static_cast<std::uint16_t>((*lt)["port"].value_or(0));
      l.tls = (*lt)["tls"].value_or(l.tls);
      l.bare_newline = (*lt)["bare_newline"].value_or(l.bare_newline);
      if (l.bare_newline != "reject" && l.bare_newline != "normalize") {
        return bad("listener.bare_newline", "must be \"reject\" or \"normalize\"");
      }
      if (l.role != "inbound" && l.role != "outbound") return bad("listener.role", "must be \"inbound\" or \"outbound\"");
      if (l.port == 0) return bad("listener.port", "is required");
      if (l.tls != "none" && l.tls != "starttls" && l.tls != "implicit") {
        return bad("listener.tls", "must be \"none\", \"starttls\" or \"implicit\"");
      }
      if (l.name.empty()) l.name = l.role;
      c.listeners.push_back(l);
    }
  }
  if (c.listeners.empty()) return bad("listener", "at least one listener is needed");
  return c;
}

}  // namespace mailark::api
