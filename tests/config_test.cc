#include <gtest/gtest.h>
#include <sys/stat.h>

#include <thread>

#include "api/config.h"
#include "tests/test_util.h"

namespace mailark::api {
namespace {

TEST(Config, NetworksMatchTheirAddressesOnly) {
  auto v4 = parse_network("192.0.2.0/24").value();
  EXPECT_TRUE(v4.contains("192.0.2.77"));
  EXPECT_FALSE(v4.contains("192.0.3.1"));
  EXPECT_TRUE(v4.contains("::ffff:192.0.2.5")) << "an IPv4 client on a dual-stack socket";
  EXPECT_FALSE(v4.contains("2001:db8::1"));
  auto v6 = parse_network("2001:db8:42::/48").value();
  EXPECT_TRUE(v6.contains("2001:db8:42:1::9"));
  EXPECT_FALSE(v6.contains("2001:db8:43::1"));
  auto host = parse_network("10.1.2.3").value();
  EXPECT_TRUE(host.contains("10.1.2.3"));
  EXPECT_FALSE(host.contains("10.1.2.4"));
  EXPECT_TRUE(parse_network("0.0.0.0/0").value().contains("203.0.113.9"));
  for (const char* bad : {"10.0.0.0/33", "not-an-ip/8", "10.0.0.0/", "::/129"}) EXPECT_FALSE(parse_network(bad).ok()) << bad;
}

TEST(Config, SessionLimitGroupsIpv6ByItsSlash64) {
  EXPECT_EQ(client_group("192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(client_group("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  EXPECT_EQ(client_group("2001:db8:1:2:ffff:ffff:ffff:ffff"), client_group("2001:db8:1:2::9"))
      << "every address of one /64 counts as one client";
  EXPECT_NE(client_group("2001:db8:1:3::1"), client_group("2001:db8:1:2::1"));
  EXPECT_EQ(client_group("::ffff:192.0.2.7"), "192.0.2.7");
}

TEST(Config, HostAndPort) {
  EXPECT_EQ(parse_host_port("mx.example.com", 25)->port, 25);
  EXPECT_EQ(parse_host_port("mx.example.com:2525", 25)->port, 2525);
  EXPECT_EQ(parse_host_port("[2001:db8::1]:587", 25)->host, "2001:db8::1");
  EXPECT_EQ(parse_host_port("[2001:db8::1]:587", 25)->port, 587);
  EXPECT_FALSE(parse_host_port("mx:99999", 25).ok());
  EXPECT_FALSE(parse_host_port(":25", 25).ok());
  // Numbers from outside text never throw (fuzz/regressions/config/ holds the file that once did).
  for (const char* bad : {"mx:99999999999999999999999", "[2001:db8::1]:99999999999999999999999", "[2001:db8::1]:x",
                          "[2001:db8::1]:", "[2001:db8::1]:+25", "mx:-1", "mx: 25"}) {
    EXPECT_FALSE(parse_host_port(bad, 25).ok()) << bad;
  }
  EXPECT_FALSE(parse_network("10.0.0.0/99999999999999999999999").ok());
  EXPECT_FALSE(parse_network("10.0.0.0/+8").ok());
  EXPECT_EQ(parse_network("10.0.0.0/8")->prefix, 8u);
  auto c = parse_serve_config("[delivery]\nprimary = [\"mx:184467440737095516160\"]\n", "test.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().to_string().find("bad port"), std::string::npos) << c.error().to_string();
}

TEST(Config, DefaultsAreTheEmbeddedDefault) {
  auto c = load_serve_config("");
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->listeners.size(), 4u);
  for (const auto& l : c->listeners) EXPECT_EQ(l.address, "127.0.0.1") << l.name;
  EXPECT_EQ(c->listeners[2].role, "imap");
  EXPECT_EQ(c->listeners[2].tls, "starttls");
  EXPECT_EQ(c->listeners[3].role, "submission") << "users of the demo send as well as read";
  EXPECT_EQ(c->listeners[3].port, 1587);
  EXPECT_EQ(c->listeners[3].tls, "starttls");
  ASSERT_EQ(c->plaintext_login_networks.size(), 2u);  // loopback only
  EXPECT_TRUE(c->plaintext_login_networks[0].contains("127.0.0.1"));
  EXPECT_FALSE(c->plaintext_login_networks[0].contains("192.0.2.1"));
  EXPECT_TRUE(c->delivery.primary.empty()) << "no primary: mail is kept for the mailbox";
  EXPECT_EQ(c->inbound_scan.infected, "reject");
  EXPECT_EQ(c->inbound_scan.unscannable, "reject");
  EXPECT_EQ(c->outbound_scan.unscannable, "reject");
  EXPECT_EQ(c->verify_recipients, "auto");
}

TEST(Config, ImapSettings) {
  auto c = parse_serve_config(
      "[imap]\nsessions = 10\nsessions_per_ip = 5\nidle_timeout = 3600\n[auth]\nplaintext_login_networks = []\n"
      "[[listener]]\nrole = \"imap\"\nport = 993\ntls = \"implicit\"\n",
      "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->imap_max_sessions, 10u);
  EXPECT_EQ(c->imap_max_sessions_per_ip, 5u);
  EXPECT_EQ(c->imap_idle_timeout_s, 3600u);
  EXPECT_TRUE(c->plaintext_login_networks.empty());
  EXPECT_EQ(c->listeners[0].name, "imap");
  auto bad = parse_serve_config("[imap]\nidle_timeout = 10\n", "t.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().context.find("imap.idle_timeout"), std::string::npos);
  bad = parse_serve_config("[auth]\nplaintext_login_networks = [\"nonsense\"]\n", "t.toml");
  ASSERT_FALSE(bad.ok());
  bad = parse_serve_config("[[listener]]\nrole = \"pop3\"\nport = 110\n", "t.toml");
  ASSERT_FALSE(bad.ok());
}

TEST(Config, WebSettings) {
  auto c = parse_serve_config("[web]\nlisten = \"0.0.0.0:443\"\ntls = \"implicit\"\nsession_idle_minutes = 30\n"
                              "session_max_hours = 8\nconnections = 50\nconnections_per_ip = 5\nrequests_per_second = 7\n",
                              "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->web.listen, "0.0.0.0:443");
  EXPECT_EQ(c->web.tls, "implicit");
  EXPECT_EQ(c->web.session_idle_minutes, 30u);
  EXPECT_EQ(c->web.session_max_hours, 8u);
  EXPECT_EQ(c->web.connections_per_ip, 5u);
  EXPECT_EQ(c->web.requests_per_second, 7u);
  EXPECT_TRUE(parse_serve_config("", "t.toml")->web.listen.empty()) << "a file without [web] has no portal";
  EXPECT_EQ(load_serve_config("")->web.listen, "127.0.0.1:8080") << "the embedded default has one";
  for (const char* bad : {"[web]\ntls = \"starttls\"\n", "[web]\nlisten = \"nowhere:port\"\n",
                          "[web]\nrequests_per_second = 0\n", "[web]\nsession_max_hours = 0\n", "[web]\ncookie = 1\n"}) {
    auto r = parse_serve_config(bad, "t.toml");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().context.find("web"), std::string::npos) << r.error().to_string();
  }
}

TEST(Config, LdapSettingsAreChecked) {
  auto c = parse_serve_config("[ldap]\nurl = \"ldaps://dc.example.com\"\nbase_dn = \"ou=people,dc=example,dc=com\"\n"
                              "filter = \"(&(objectClass=person)(mail=%u))\"\ntimeout = 5\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->ldap.url, "ldaps://dc.example.com");
  EXPECT_EQ(c->ldap.timeout, 5u);
  for (const char* bad : {"[ldap]\nurl = \"http://x\"\nbase_dn = \"dc=x\"\n",        // not LDAP
                          "[ldap]\nurl = \"ldap://x\"\n",                               // no base
                          "[ldap]\nurl = \"ldap://x\"\nbase_dn = \"dc=x\"\nfilter = \"(mail=a)\"\n",  // no user
                          "[ldap]\nurl = \"ldap://x\"\nbase_dn = \"dc=x\"\nfilter = \"mail=%u\"\n",   // no parentheses
                          "[ldap]\nbind = 1\n"}) {                                        // unknown key
    auto r = parse_serve_config(bad, "t.toml");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().context.find("ldap"), std::string::npos) << r.error().context;
  }
}

TEST(Config, FileOverridesAndErrorsNameTheKey) {
  test::ScratchDir dir;
  test::write_file(dir / "ok.toml",
                   "[server]\nhostname = \"mx1.example.com\"\n[[listener]]\nrole = \"inbound\"\nport = 25\n"
                   "address = \"0.0.0.0\"\n[inbound]\ndomains = [\"example.com\"]\ninfected = \"quarantine\"\n"
                   "[delivery]\nprimary = [\"10.0.0.5:25\", \"10.0.0.6\"]\nretry_schedule = [10, 20]\n");
  auto c = load_serve_config(dir / "ok.toml");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->hostname, "mx1.example.com");
  ASSERT_EQ(c->listeners.size(), 1u);
  EXPECT_EQ(c->listeners[0].name, "inbound");
  EXPECT_EQ(c->inbound_scan.infected, "quarantine");
  ASSERT_EQ(c->delivery.primary.size(), 2u);
  EXPECT_EQ(c->delivery.primary[1].port, 25);
  EXPECT_EQ(c->delivery.retry_schedule, (std::vector<unsigned>{10, 20}));

  test::write_file(dir / "bad.toml", "[inbound]\ninfected = \"ignore\"\n");
  auto bad = load_serve_config(dir / "bad.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().context.find("inbound.infected"), std::string::npos);

  test::write_file(dir / "syntax.toml", "[server\nhostname = 1\n");
  auto syntax = load_serve_config(dir / "syntax.toml");
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.error().context.find("syntax.toml:1"), std::string::npos) << syntax.error().context;

  EXPECT_EQ(load_serve_config(dir / "missing.toml").error().code, ErrorCode::kNotFound);

  test::write_file(dir / "limits.toml", "[limits]\nrecipients = 7\nmessage_bytes = 1000\nline_bytes = 200\nhops = 30\n");
  auto lim = load_serve_config(dir / "limits.toml");
  ASSERT_TRUE(lim.ok());
  EXPECT_EQ(lim->limits.smtp_recipients, 7u);
  EXPECT_EQ(lim->limits.max_message_bytes, 1000u);
  EXPECT_EQ(lim->limits.smtp_line_bytes, 200u);
  EXPECT_EQ(lim->limits.smtp_hops, 30u);
  test::write_file(dir / "tiny.toml", "[limits]\ncommand_bytes = 100\n");
  EXPECT_NE(load_serve_config(dir / "tiny.toml").error().context.find("limits.command_bytes"), std::string::npos);
}

// A configuration file is read only up to kMaxConfigBytes, whatever it is; what is not a file
// gets an error that says so (a directory was an internal error, "basic_filebuf::underflow", and
// /dev/zero was read until memory ran out).
TEST(ConfigFile, ADirectoryIsRefusedAsNotAConfigurationFile) {
  test::ScratchDir dir;
  auto c = load_serve_config(dir.path());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(c.error().context.find("is a directory"), std::string::npos) << c.error().context;
}

TEST(ConfigFile, AFileWithoutEndIsReadOnlyToTheBound) {
  auto c = read_config_file("/dev/zero");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(c.error().context.find("larger than 1 MiB"), std::string::npos) << c.error().context;
}

TEST(ConfigFile, ALargeFileIsRefusedAndOneAtTheBoundRead) {
  test::ScratchDir dir;
  test::write_file(dir / "at.toml", "# " + std::string(kMaxConfigBytes - 3, 'x') + "\n");
  auto at = load_serve_config(dir / "at.toml");
  EXPECT_TRUE(at.ok()) << at.error().to_string();
  test::write_file(dir / "past.toml", "# " + std::string(kMaxConfigBytes - 2, 'x') + "\n");
  auto past = load_serve_config(dir / "past.toml");
  ASSERT_FALSE(past.ok());
  EXPECT_NE(past.error().context.find("larger than 1 MiB"), std::string::npos) << past.error().context;
}

TEST(ConfigFile, APipeIsReadToItsEnd) {
  // As `serve --config <(generate-config)` gives it: no size to ask, read until the writer closes.
  test::ScratchDir dir;
  const std::string fifo = dir / "config.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] { test::write_file(fifo, "[server]\nhostname = \"piped.example\"\n"); });
  auto c = load_serve_config(fifo);
  writer.join();
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->hostname, "piped.example");
}

TEST(Config, UnknownKeysAndWrongTypesAreErrorsNamingTheKey) {
  auto err = [](const std::string& text) {
    auto c = parse_serve_config(text, "t.toml");
    return c.ok() ? std::string("(accepted)") : c.error().context;
  };
  EXPECT_NE(err("[inbound]\ndomain = [\"example.com\"]\n").find("inbound.domain: unknown key"), std::string::npos);
  EXPECT_NE(err("[inbond]\ndomains = []\n").find("inbond: unknown table"), std::string::npos);
  EXPECT_NE(err("[limits]\nrecipients = \"ten\"\n").find("limits.recipients: must be a whole number"), std::string::npos);
  EXPECT_NE(err("[limits]\nrecipients = -5\n").find("limits.recipients: must be between"), std::string::npos);
  EXPECT_NE(err("[limits]\nmessage_bytes = 99999999999\n").find("limits.message_bytes"), std::string::npos);
  EXPECT_NE(err("[delivery]\nverify_certificates = \"yes\"\n").find("must be true or false"), std::string::npos);
  EXPECT_NE(err("[inbound]\ndomains = \"example.com\"\n").find("must be a list of strings"), std::string::npos);
  EXPECT_NE(err("[outbound]\nunscannable = \"ignore\"\n").find("outbound.unscannable"), std::string::npos);
  EXPECT_NE(err("[outbound]\ninfected = \"deliver\"\n").find("outbound.infected"), std::string::npos)
      << "an infected message is never delivered";
  EXPECT_NE(err("[[listener]]\nrole = \"inbound\"\nport = 25\nbare_newlines = \"reject\"\n").find("listener.bare_newlines"),
            std::string::npos);
  EXPECT_NE(err("[[listener]]\nrole = \"inbound\"\nport = 25\nbare_newline = \"allow\"\n").find("listener.bare_newline"),
            std::string::npos);
  EXPECT_NE(err("listener = 5\n").find("listener"), std::string::npos);
  EXPECT_NE(err("[scanner]\nisolation = \"fork\"\n").find("scanner.isolation: must be one of \"process\", \"thread\""),
            std::string::npos);
  EXPECT_EQ(err("[scanner]\nisolation = \"process\"\n"), "(accepted)");
  // A float is no whole number, however large (toml++ would convert it with undefined behaviour).
  for (const char* f : {"1048e76", "1e3", "2.5", "inf", "nan", "-1e300"}) {
    EXPECT_NE(err(std::string("[limits]\nscan_bytes = ") + f + "\n").find("limits.scan_bytes: must be a whole number"),
              std::string::npos) << f;
  }
  EXPECT_NE(err("[delivery]\nretry_schedule = [60, 1e99]\n").find("delivery.retry_schedule"), std::string::npos);
  EXPECT_NE(err("[inbound]\ndomains = [\"a.example\", 5]\n").find("must be a list of strings"), std::string::npos);
  EXPECT_NE(err("[delivery]\nverify_certificates = 1\n").find("must be true or false"), std::string::npos);
}

TEST(Config, ScanLimitsFollowTheMessageLimitUnlessSet) {
  auto c = parse_serve_config("[limits]\nmessage_bytes = 209715200\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_GE(c->limits.scan_max_file_bytes, 209715200u + Limits::kTraceHeaderBytes);
  EXPECT_GE(c->limits.scan_max_scan_bytes, c->limits.scan_max_file_bytes);
  auto set = parse_serve_config("[limits]\nmessage_bytes = 209715200\nscan_file_bytes = 1048576\n", "t.toml");
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->limits.scan_max_file_bytes, 1048576u) << "an explicit setting wins (and bigger mail is unscannable)";
  // A scan process's memory bound follows what the scanner may extract: 1 GiB plus four times it.
  EXPECT_EQ(c->limits.scan_max_memory_bytes, (std::uint64_t{1} << 30) + 4 * c->limits.scan_max_scan_bytes);
  EXPECT_EQ(Limits{}.scan_max_memory_bytes, (std::uint64_t{1} << 30) + 4 * Limits{}.scan_max_scan_bytes);
  auto mem = parse_serve_config("[limits]\nscan_memory_bytes = 536870912\n", "t.toml");
  ASSERT_TRUE(mem.ok()) << mem.error().to_string();
  EXPECT_EQ(mem->limits.scan_max_memory_bytes, 536870912u);
  auto tiny = parse_serve_config("[limits]\nscan_memory_bytes = 1000\n", "t.toml");
  ASSERT_FALSE(tiny.ok());
  EXPECT_NE(tiny.error().to_string().find("limits.scan_memory_bytes"), std::string::npos) << tiny.error().to_string();
}

TEST(Config, MemoryForMailInFlightFollowsTheMessageLimit) {
  auto c = parse_serve_config("[limits]\nmessage_bytes = 10000000\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->limits.store_bytes, 4 * (10000000u + Limits::kTraceHeaderBytes));
  EXPECT_EQ(c->limits.smtp_spill_bytes, 512u << 10);
  auto set = parse_serve_config("[limits]\nmessage_bytes = 10000000\nstore_bytes = 20000000\nspill_bytes = 65536\n", "t.toml");
  ASSERT_TRUE(set.ok()) << set.error().to_string();
  EXPECT_EQ(set->limits.store_bytes, 20000000u);
  EXPECT_EQ(set->limits.smtp_spill_bytes, 65536u);
  auto small = parse_serve_config("[limits]\nmessage_bytes = 10000000\nstore_bytes = 9000000\n", "t.toml");
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.error().context.find("limits.store_bytes: must hold one message"), std::string::npos)
      << small.error().context;
  EXPECT_FALSE(parse_serve_config("[limits]\nspill_bytes = 100\n", "t.toml").ok()) << "at least 4096";
}

TEST(Config, DiskReserveFollowsTheRoomForMailInFlight) {
  auto c = parse_serve_config("[limits]\nmessage_bytes = 10000000\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->limits.disk_reserve_bytes, c->limits.store_bytes + (64u << 20));
  auto store = parse_serve_config("[limits]\nstore_bytes = 300000000\n", "t.toml");
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  EXPECT_EQ(store->limits.disk_reserve_bytes, 300000000u + (64u << 20));
  auto set = parse_serve_config("[limits]\ndisk_reserve_bytes = 0\n", "t.toml");
  ASSERT_TRUE(set.ok()) << set.error().to_string();
  EXPECT_EQ(set->limits.disk_reserve_bytes, 0u);
  auto bad = parse_serve_config("[limits]\ndisk_reserve_bytes = -1\n", "t.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().context.find("limits.disk_reserve_bytes"), std::string::npos) << bad.error().context;
}

TEST(Config, TheIndexsFreeSpaceIsKeptUnlessSetToNone) {
  auto c = parse_serve_config("", "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->limits.index_min_free_bytes, 64u << 20);
  auto set = parse_serve_config("[limits]\nindex_min_free_bytes = 0\n", "t.toml");
  ASSERT_TRUE(set.ok()) << set.error().to_string();
  EXPECT_EQ(set->limits.index_min_free_bytes, 0u);
  auto bad = parse_serve_config("[limits]\nindex_min_free_bytes = \"lots\"\n", "t.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().context.find("limits.index_min_free_bytes"), std::string::npos) << bad.error().context;
}

}  // namespace
}  // namespace mailark::api

namespace mailark::api {
namespace {

const char* kBase = R"(
[[listener]]
role = "inbound"
port = 2525
[[listener]]
role = "outbound"
port = 2587
[inbound]
domains = ["northwind.example"]
[delivery]
primary = ["127.0.0.1:10025"]
)";

Result<ServeConfig> with(const std::string& extra) { return parse_serve_config(std::string(kBase) + extra, "t.toml"); }

TEST(Config, ContinuityKeysAndDefaults) {
  auto c = with(R"(
[continuity]
window = 20
auto_start = 2
auto_stop = 3
drain_rate = 500
probe_to = "probe@continuity.invalid"
probe_interval = 10
[alerts]
webhooks = ["http://127.0.0.1:9/hook"]
email = ["oncall@elsewhere.example"]
[admin]
listen = "127.0.0.1:8080"
)");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->continuity.window, 20u);
  EXPECT_EQ(c->continuity.auto_start, 2u);
  EXPECT_EQ(c->continuity.drain_rate, 500u);
  EXPECT_EQ(c->continuity.probe_to, "probe@continuity.invalid");
  EXPECT_EQ(c->alerts.email.size(), 1u);
  EXPECT_EQ(c->admin.listen, "127.0.0.1:8080");
  auto plain = with("");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->continuity.window, 120u) << "two-minute windows by default";
  EXPECT_EQ(plain->continuity.auto_start, 0u) << "manual by default";
  EXPECT_TRUE(plain->admin.listen.empty()) << "a file without [admin] has no admin listener";
  EXPECT_EQ(load_serve_config("")->admin.listen, "127.0.0.1:8025") << "the embedded default has one on loopback";
}

TEST(Config, ProbeRoutingLoopsAreRefused) {
  auto loop = with("[continuity]\nprobe_to = \"probe@northwind.example\"\n");
  ASSERT_FALSE(loop.ok());
  EXPECT_NE(loop.error().to_string().find("routing loop"), std::string::npos) << loop.error().to_string();
  auto self = with("[continuity]\nprobe_to = \"probe@continuity.invalid\"\nprobe_host = [\"localhost:2525\"]\n");
  ASSERT_FALSE(self.ok());
  EXPECT_NE(self.error().to_string().find("own inbound listener"), std::string::npos) << self.error().to_string();
  auto self_out = with("[continuity]\nprobe_to = \"probe@continuity.invalid\"\nprobe_host = [\"127.0.0.1:2587\"]\n");
  ASSERT_FALSE(self_out.ok());
  auto nowhere = parse_serve_config(R"(
[[listener]]
role = "inbound"
port = 2525
[continuity]
probe_to = "probe@continuity.invalid"
)", "t.toml");
  ASSERT_FALSE(nowhere.ok());
  EXPECT_NE(nowhere.error().to_string().find("probe_host or delivery.primary"), std::string::npos);
  auto auto_stop = with("[continuity]\nauto_stop = 2\n");
  ASSERT_FALSE(auto_stop.ok()) << "auto_stop with nothing that sees the primary work during an event";
  EXPECT_TRUE(with("[continuity]\nprobe_to = \"probe@continuity.invalid\"\nprobe_host = [\"127.0.0.1:10025\"]\n").ok());
}

TEST(Config, AlertAddressInTheCompanysDomainIsRefused) {
  auto c = with("[alerts]\nemail = [\"admin@NorthWind.example\"]\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().to_string().find("through the primary"), std::string::npos) << c.error().to_string();
  EXPECT_FALSE(with("[alerts]\nwebhooks = [\"ftp://x\"]\n").ok());
  EXPECT_FALSE(with("[alerts]\nwebhook_headers = [\"no colon\"]\n").ok());
  EXPECT_FALSE(with("[continuity]\nunknown_key = 1\n").ok());
  EXPECT_FALSE(with("[admin]\ntls = \"starttls\"\n").ok());
  EXPECT_FALSE(with("[continuity]\nprobe_user = \"x\"\n").ok()) << "a probe account needs its password";
}

}  // namespace
}  // namespace mailark::api

namespace mailark::api {
namespace {

TEST(Config, ListenersNeedPortsOfTheirOwn) {
  const std::string inbound = "[[listener]]\nrole = \"inbound\"\nport = 2600\ntls = \"none\"\n";
  auto twice = parse_serve_config(inbound + "[[listener]]\nname = \"mx2\"\nrole = \"inbound\"\nport = 2600\n", "t.toml");
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.error().context.find("listener mx2: port 2600 is listener inbound's too"), std::string::npos)
      << twice.error().context;
  auto wildcard = parse_serve_config(inbound + "[[listener]]\nrole = \"imap\"\naddress = \"0.0.0.0\"\nport = 2600\n", "t.toml");
  EXPECT_FALSE(wildcard.ok()) << "0.0.0.0 takes the port on every address";
  auto web = parse_serve_config(inbound + "[web]\nlisten = \"127.0.0.1:2600\"\n", "t.toml");
  ASSERT_FALSE(web.ok());
  EXPECT_NE(web.error().context.find("web.listen: port 2600"), std::string::npos) << web.error().context;
  EXPECT_TRUE(parse_serve_config(inbound + "[[listener]]\nrole = \"imap\"\naddress = \"127.0.0.2\"\nport = 2600\n",
                                 "t.toml")
                  .ok())
      << "another address: its own socket";
  EXPECT_TRUE(parse_serve_config(inbound + "[web]\nlisten = \"127.0.0.1:2601\"\n", "t.toml").ok());
}

}  // namespace
}  // namespace mailark::api
