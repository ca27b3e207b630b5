// The configuration of `mailark serve`: one TOML file (docs/CONFIG.md lists every key with its
// default). With no file, every key has its default: the embedded default, everything on loopback.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/limits.h"
#include "api/ldap.h"
#include "common/result.h"

namespace mailark::api {

struct ListenerConfig {
  std::string name;                  // appears in logs and in each record's envelope (connector)
  std::string role;                  // "inbound" (the MX), "outbound" (from the primary server),
                                     // "submission" (users, with AUTH), "imap"
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;
  std::string tls = "starttls";      // "none", "starttls" or "implicit"
  // A DATA line ending in a bare LF or holding a bare CR: "reject" refuses the message (550 5.5.2),
  // "normalize" turns it into CRLF lines of the same message. Either way only CRLF.CRLF ends DATA.
  std::string bare_newline = "reject";
};

// An IPv4 or IPv6 network in CIDR notation.
struct Network {
  std::vector<std::uint8_t> bytes;  // 4 or 16
  unsigned prefix = 0;
  bool contains(const std::string& ip) const;
};
Result<Network> parse_network(const std::string& cidr);

// The key per-client session limits count by: the address itself for IPv4, its /64 for IPv6 (one
// subscriber usually holds a whole /64, so counting single addresses would limit nothing).
// Test: Config.SessionLimitGroupsIpv6ByItsSlash64.
std::string client_group(const std::string& ip);

struct HostPort {
  std::string host;
  std::uint16_t port = 25;
};
Result<HostPort> parse_host_port(const std::string& text, std::uint16_t default_port);

struct DeliveryConfig {
  // The company's primary mail server(s), tried in order. Empty: inbound mail is archived and kept
  // for the mailbox views, not delivered.
  std::vector<HostPort> primary;
  // Outbound mail goes through this host when set (MX lookup comes with the DNS resolver).
  std::vector<HostPort> smarthost;
  std::string tls = "opportunistic";   // "none", "opportunistic" or "required"
  bool verify_certificates = false;    // check the server's certificate chain and name
  std::vector<unsigned> retry_schedule = {60, 300, 900, 1800, 3600, 7200, 14400};  // seconds; the last repeats
  unsigned queue_lifetime = 5 * 24 * 3600;  // seconds until an undeliverable recipient bounces
  unsigned connections_per_destination = 4;
  unsigned connect_timeout = 30;
  unsigned reply_timeout = 300;
  // The SMTP port of mail exchangers. Always 25 on the internet; tests point it at their own servers.
  std::uint16_t mx_port = 25;
  // At most this many mail exchanger addresses tried per delivery, best first (Postfix's
  // smtp_mx_address_limit); 0: every one.
  unsigned mx_address_limit = 5;
  // DNS servers for MX lookups ("ip" or "ip@port"); empty: the system's /etc/resolv.conf.
  std::vector<std::string> dns_servers;
};

// The continuity monitor and events (docs/CONFIG.md, [continuity]).
struct ContinuityConfig {
  unsigned window = 120;          // seconds per monitor window
  unsigned alert_after = 2;       // failure counter value that raises an alert
  unsigned alert_repeat = 1800;   // seconds between repeated alerts while the problem stands
  unsigned auto_start = 0;        // counter value that starts an event by itself (0: manual only)
  unsigned auto_stop = 0;         // good windows in a row that stop an event (0: manual only)
  unsigned drain_rate = 0;        // messages per second to the primary while draining (0: unlimited)
  unsigned dedupe_window = 172800;  // seconds the delivered log remembers (Message-ID, recipient)
  unsigned history_days = 30;     // monitor windows kept
  unsigned token_ttl = 86400;     // seconds a panic-button link is valid
  // Synthetic check: a probe sent into the primary every probe_interval seconds, addressed to
  // probe_to (outside every inbound domain) so that the primary relays it back out through the
  // outbound listener. Off while probe_to is empty.
  std::string probe_to;
  std::string probe_from;          // default mailark-probe@<hostname>
  std::vector<HostPort> probe_host;  // default: delivery.primary
  std::string probe_user, probe_password;  // SMTP AUTH PLAIN on the probe's connection (optional)
  unsigned probe_interval = 300;
  unsigned probe_timeout = 300;    // a probe not back after this long is lost (a failure)
  // Optional IMAP login check of the primary, once per window.
  std::vector<HostPort> imap_check;
  std::string imap_user, imap_password;
  std::string imap_tls = "none";   // "none", "starttls", "implicit"
  // Users' mail sent during an event, appended to their Sent folder on the primary (IMAP) when the
  // event stops. Off while sent_copy_imap is empty. Logs in with SASL PLAIN as sent_copy_user
  // (a master user) on behalf of each sender (authorisation identity).
  std::vector<HostPort> sent_copy_imap;
  std::string sent_copy_user, sent_copy_password;
  std::string sent_copy_folder = "Sent";
  std::string sent_copy_tls = "none";
};

// Where alerts go (docs/CONFIG.md, [alerts]).
struct AlertConfig {
  std::vector<std::string> webhooks;  // URLs that get a JSON POST
  std::vector<std::string> webhook_headers;  // extra "Name: value" headers (an SMS gateway's key)
  std::vector<std::string> email;     // alternate addresses, delivered by mailark itself, never via the primary
  std::string command;                // run with the alert as JSON on stdin (and MAILARK_ALERT_* variables)
  std::string from;                   // default mailark@<hostname>
  unsigned timeout = 10;              // seconds per webhook or command attempt
  std::vector<unsigned> retry = {10, 60, 300};  // seconds between attempts of a failing target
};

// Where signed checkpoints of the archive go (docs/CONFIG.md, [checkpoints]; api/checkpoints.h).
struct CheckpointsConfig {
  // "file:/dir" (a file per checkpoint), "command:CMD" (the checkpoint on its stdin), "http(s)://..."
  // (a POST of the checkpoint as text/plain). Empty: none published (`mailark checkpoint` still signs).
  std::vector<std::string> publish;
  unsigned every = 3600;  // seconds between checkpoints while the archive grows
  unsigned timeout = 10;  // seconds per target and attempt
};

// The server's retention pass (docs/CONFIG.md, [retention]; the policy itself is in the archive:
// `mailark retention set`).
struct RetentionConfig {
  unsigned every = 86400;  // seconds between passes; 0: none (then `mailark retention run` with the server stopped)
};

// The HTTP admin listener (docs/CONFIG.md, [admin]): continuity status, start, stop, the panic button.
struct AdminConfig {
  std::string listen;      // "127.0.0.1:8025"; empty: off (the embedded default turns it on)
  std::string token_file;  // default DATA/admin-token (made on first start, mode 0600)
  std::string public_url;  // the base of links in alerts; default http://<listen>
  std::string tls = "none";  // "none" or "implicit" (the server's certificate)
};

// The web portal and REST API ([web], docs/CONFIG.md; api/web/portal.h).
struct WebConfig {
  std::string listen;        // "127.0.0.1:8080"; empty: off (the embedded default turns it on)
  std::string tls = "none";  // "none" or "implicit" (the server's certificate); cookies are Secure with TLS
  unsigned session_idle_minutes = 60;  // a session unused this long ends
  unsigned session_max_hours = 12;     // and every session ends after this long
  unsigned connections = 1000, connections_per_ip = 100;
  unsigned requests_per_second = 20;   // per client (IPv6 by /64), with bursts of 10x
};

struct ServeConfig {
  std::string hostname = "localhost";  // greeting, EHLO reply, Received headers
  std::string tls_cert;                // PEM; empty: a self-signed certificate in DATA/tls, made on first start
  std::string tls_key;
  std::vector<ListenerConfig> listeners;

  // Inbound: mail is accepted only for these domains; with `inbound_recipients` non-empty, only for
  // those addresses (otherwise every address of a listed domain: a per-domain catch-all).
  std::vector<Network> outbound_networks;
  std::vector<std::string> inbound_domains;
  std::vector<std::string> inbound_recipients;
  // How recipients are checked at RCPT time: "primary" (a cached RCPT probe of delivery.primary),
  // "list" (inbound.recipients), "none" (every address of the domains), or "auto": primary when a
  // primary is configured and no list is given, list when one is, else none.
  std::string verify_recipients = "auto";
  unsigned verify_positive_ttl = 86400;  // seconds an accepted probe answer is trusted
  unsigned verify_negative_ttl = 3600;   // seconds a refusal is trusted
  // When the primary cannot be asked (down, 4xx): an address it accepted before is accepted; others
  // get "defer" (451 4.4.3, the sender retries) or "accept".
  std::string verify_unreachable = "defer";

  // What a scan that is not clean does, per direction: "reject" (554 5.7.1 at the end of DATA; the
  // message archived and quarantined), "quarantine" (250; archived, quarantined, never delivered
  // unless released), "deliver" (unscannable only: 250, delivered, the verdict recorded).
  struct ScanPolicy {
    std::string infected = "reject";
    std::string unscannable = "reject";
  };
  ScanPolicy inbound_scan, outbound_scan;
  std::string scanner_temp_dir;  // libclamav's temporary files; empty: /dev/shm (tmpfs), else the system's
  // Where libclamav runs: "thread" (in the server's workers) or "process" (scan processes of their
  // own, scanner/scan_host.h: a crash or a hang costs one message; it costs scanning CPU:
  // docs/BENCHMARKS.md, "Scanning in processes").
  std::string scanner_isolation = "thread";

  // Message size, SMTP line lengths, recipients and deadlines: the one settings struct of all parsers
  // ([limits] in the file).
  Limits limits;
  unsigned max_sessions = 200;
  unsigned max_sessions_per_ip = 20;
  // IMAP ([imap]): sessions in all and per client, and how long an idle (or IDLE) session lives.
  unsigned imap_max_sessions = 2000;
  unsigned imap_max_sessions_per_ip = 600;
  unsigned imap_idle_timeout_s = 1800;  // RFC 9051 5.4: at least 30 minutes
  unsigned imap_login_timeout_s = 180;  // from connection to login, in all
  // Clients in these networks may log in (IMAP, submission) without TLS, as Dovecot counts loopback
  // as secure ([auth] plaintext_login_networks).
  std::vector<Network> plaintext_login_networks;  // default 127.0.0.0/8 and ::1
  // A company directory for users without a local password ([ldap]; api/ldap.h).
  LdapConfig ldap;
  unsigned group_commit_linger_ms = 2;
  // [archive] commit the index at least this often while mail waits in it; a reader (search, IMAP
  // SEARCH, the portal, `mailark search` beside the server) has what is archived committed first
  // (Ingest::sync_index), so this bounds only what a reader that does not ask sees, and the disk
  // writes (docs/CONFIG.md).
  unsigned index_commit_interval_ms = 30000;
  unsigned seal_interval_ms = 60000;  // [archive] seal closed index segments this often (0: never)
  // [archive] an archive without a compression dictionary gets one, trained by the server from its
  // newest messages, once it holds this many (0: never; `mailark train-dictionary` with the server stopped)
  unsigned train_dictionary_after = 2000;

  DeliveryConfig delivery;
  ContinuityConfig continuity;
  AlertConfig alerts;
  CheckpointsConfig checkpoints;
  RetentionConfig retention;
  AdminConfig admin;
  WebConfig web;
  // Hex SHA-256 of the file's bytes as load_serve_config read them; empty without a file (the
  // built-in defaults). What the audit log's config.change records (api/smtp/server.cc).
  std::string source_sha256;
};

// Reads the file (read_config_file); an empty path gives the defaults. Errors: those of
// read_config_file, and kInvalidArgument (a TOML syntax error, an unknown key, or a bad value, each
// naming the key or line).
Result<ServeConfig> load_serve_config(const std::string& path);
// The bytes of a configuration file, at most kMaxConfigBytes read whatever the file (a pipe, a
// device): kNotFound (nothing there), kInvalidArgument (a directory, or larger than the bound), kIo
// (unreadable). Test: ConfigFile.* in tests/config_test.cc.
inline constexpr std::size_t kMaxConfigBytes = 1u << 20;
Result<std::string> read_config_file(const std::string& path);
// The same from text (`source` names it in errors). Fuzzed (fuzz/config_fuzz.cc).
Result<ServeConfig> parse_serve_config(std::string_view text, const std::string& source);
// The continuity rules that span sections (called by parse_serve_config): probes that would loop
// (to an inbound domain, or to mailark's own listener), alert addresses that would go through the
// primary, auto_stop without a check that can see the primary work. Errors name the key and why.
// Tests: Config.ProbeRoutingLoopsAreRefused, Config.AlertAddressInTheCompanysDomainIsRefused.
Status check_continuity(const ServeConfig& c, const std::string& source);

}  // namespace mailark::api
