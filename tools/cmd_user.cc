// mailark user: the user directory (DATA/mailbox): add, list, passwd, alias, role, disable, enable,
// place, app-password, token. Works beside a running server (LMDB serialises the writes). Adding a user places the
// mail already archived for their addresses in their folders (the mailbox store's backfill).
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/ascii.h"
#include "common/dates.h"
#include "common/json_text.h"
#include "engine/mailbox.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct UserArgs {
  std::string action;
  std::string user;
  std::vector<std::string> rest;  // alias: add|remove ADDRESS; role: ROLE; app-password: add|remove|list LABEL
  std::vector<std::string> aliases;
  std::string role = "user";
  std::string display_name;
  bool password_stdin = false;
  bool no_password = false;
  bool json = false;
};

// A password is at most this long: a line read for one is read only this far (and one byte more, to
// tell), whatever standard input is (tests/e2e/test_cli.py
// test_a_password_from_stdin_is_one_bounded_line).
constexpr std::size_t kMaxPasswordBytes = 1024;

// One line of standard input without its end; false at once when none is there, or when it is longer
// than kMaxPasswordBytes (`too_long` says which; the rest of it is not read).
bool read_password_line(std::string& line, bool& too_long) {
  line.clear();
  too_long = false;
  int c;
  bool any = false;
  while ((c = std::cin.get()) != EOF) {
    any = true;
    if (c == '\n') break;
    if (line.size() > kMaxPasswordBytes) break;  // room for a CR before the line's end
    line.push_back(static_cast<char>(c));
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.size() > kMaxPasswordBytes) {
    too_long = true;
    return false;
  }
  return any;
}

std::string read_line_no_echo(const char* prompt, bool& too_long) {
  std::cerr << prompt << std::flush;
  termios old{};
  bool tty = tcgetattr(STDIN_FILENO, &old) == 0;
  if (tty) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string line;
  read_password_line(line, too_long);
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cerr << "\n";
  }
  return line;
}

// The new password: one line on stdin with --password-stdin, else asked twice on the terminal.
Result<std::string> read_password(const UserArgs& args) {
  if (args.password_stdin) {
    std::string line;
    bool too_long = false;
    if (!read_password_line(line, too_long) && too_long)
      return make_error(ErrorCode::kInvalidArgument,
                        "--password-stdin: the first line is longer than a password may be (" +
                            std::to_string(kMaxPasswordBytes) + " bytes)",
                        "pass the password alone, as one line");
    if (line.empty()) return make_error(ErrorCode::kInvalidArgument, "--password-stdin: no password on standard input");
    return line;
  }
  if (!isatty(STDIN_FILENO))
    return make_error(ErrorCode::kInvalidArgument, "no password given",
                      "pass --password-stdin and the password on standard input, or run on a terminal");
  bool too_long = false;
  std::string a = read_line_no_echo("new password: ", too_long);
  if (too_long)
    return make_error(ErrorCode::kInvalidArgument, "a password longer than " + std::to_string(kMaxPasswordBytes) + " bytes");
  std::string b = read_line_no_echo("again: ", too_long);
  if (a.empty()) return make_error(ErrorCode::kInvalidArgument, "an empty password");
  if (a != b) return make_error(ErrorCode::kInvalidArgument, "the two passwords differ");
  return a;
}

nlohmann::json user_json(const User& u) {
  nlohmann::json apps = nlohmann::json::array();
  for (const auto& a : u.app_passwords) apps.push_back({{"label", a.label}, {"created_at", iso8601(a.created_at)}});
  return {{"name", u.name},
          {"aliases", u.aliases},
          {"display_name", u.display_name},
          {"role", role_name(u.role)},
          {"disabled", u.disabled},
          {"password", !u.password_hash.empty()},
          {"app_passwords", apps},
          {"created_at", iso8601(u.created_at)}};
}

// Brings the user's folders up to date with the archive, when there is one. `say_placed`: the output
// names how many messages this placed, as well as how many the folders hold.
// Returns the exit code (a failure is reported).
int place_archived_mail(const GlobalOptions& g, MailboxStore& store, const User& u, bool say_placed = false) {
  auto engine = open_engine(g, /*read_only=*/true, /*catch_up=*/false, "");
  if (!engine) return kExitOk;  // no archive yet: nothing to place
  Archive& archive = (*engine)->archive();
  while (true) {
    auto f = store.follow(archive, 20000);
    if (!f) return report(f.error());
    if (f->followed >= archive.head().seq) break;
  }
  Progress progress("placing archived mail");
  auto placed = store.backfill(archive, u.id, [&](std::uint64_t done, std::uint64_t total) { progress.update(done, total); });
  progress.finish();
  if (!placed) return report(placed.error());
  auto folders = store.folders(u.id);
  std::uint64_t total = 0;
  if (folders)
    for (const auto& f : *folders)
      if (auto c = store.counts(u.id, f.id)) total += c->messages;
  std::cout << u.name << ": ";
  if (say_placed) std::cout << *placed << " message" << (*placed == 1 ? "" : "s") << " placed, ";
  std::cout << total << " archived message" << (total == 1 ? "" : "s") << " in their folders\n";
  return kExitOk;
}

// An address of an internationalised domain: UTF-8 in it, or a label in A-labels ("xn--").
bool idn_address(std::string_view address) {
  for (unsigned char c : address)
    if (c >= 0x80) return true;
  const std::string lower = ascii_lower(address);
  return lower.find("@xn--") != std::string::npos || lower.find(".xn--") != std::string::npos;
}

int run_user(const GlobalOptions& g, const UserArgs& args) {
  // A user or alias of an IDN domain gets the archived mail addressed in either spelling: the other
  // spelling comes from libidn2, which mailark-server links and `mailark` does not, so the command
  // runs there (tests/e2e/test_cli.py test_an_import_places_mail_for_an_idn_user_in_either_spelling).
  const bool places = args.action == "add" || args.action == "place" || (args.action == "alias" && !args.rest.empty() && args.rest[0] == "add");
  bool idn = idn_address(args.user);
  for (const auto& a : args.aliases) idn = idn || idn_address(a);
  if (args.action == "alias" && args.rest.size() == 2) idn = idn || idn_address(args.rest[1]);
  if (places && idn)
    if (auto handed = run_in_server(g)) return *handed;
  const bool writes = args.action != "list";
  auto store = MailboxStore::open(g.data_dir + "/mailbox", !writes);
  if (!store) {
    if (!writes && store.error().code == ErrorCode::kNotFound) {
      std::cout << (args.json ? "{\"users\":[]}\n" : "no users\n");
      return kExitOk;
    }
    return report(store.error());
  }
  MailboxStore& s = **store;
  if (auto other = address_other_form()) s.set_other_address_form(std::move(other));
  if (args.action == "list") {
    auto users = s.users();
    if (!users) return report(users.error());
    if (args.json) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& u : *users) list.push_back(user_json(u));
      std::cout << json_text(nlohmann::json({{"users", list}})) << "\n";
      return kExitOk;
    }
    for (const auto& u : *users) {
      std::cout << u.name << "  " << role_name(u.role) << (u.disabled ? "  DISABLED" : "")
                << (u.password_hash.empty() ? "  (no password)" : "");
      if (!u.display_name.empty()) std::cout << "  \"" << u.display_name << "\"";
      for (const auto& a : u.aliases) std::cout << "\n    alias " << a;
      for (const auto& a : u.app_passwords) std::cout << "\n    app password \"" << a.label << "\" since " << iso8601(a.created_at);
      std::cout << "\n";
    }
    std::cout << users->size() << " user" << (users->size() == 1 ? "" : "s") << "\n";
    return kExitOk;
  }
  if (args.user.empty()) return report(make_error(ErrorCode::kInvalidArgument, "name the user (an address)"));

  if (args.action == "add") {
    User u;
    u.name = args.user;
    u.aliases = args.aliases;
    u.display_name = args.display_name;
    auto role = parse_role(args.role);
    if (!role) return report(make_error(ErrorCode::kInvalidArgument, "unknown role " + args.role, "user, auditor or admin"));
    u.role = *role;
    if (!args.no_password) {
      auto pw = read_password(args);
      if (!pw) return report(pw.error());
      auto hash = hash_password(*pw);
      if (!hash) return report(hash.error());
      u.password_hash = *hash;
    }
    auto added = s.add_user(u);
    if (!added) return report(added.error());
    std::cout << "added " << added->name << " (" << role_name(added->role) << ")\n";
    place_archived_mail(g, s, *added);
    return kExitOk;
  }

  if (args.action == "place") {
    // The archived mail of the user's addresses that is not in their folders: what arrived while they
    // were disabled, or what an earlier release's rules did not place (docs/FORMAT.md, membership).
    // Never places a message twice; an expunged one stays expunged (the member table).
    // Test: tests/e2e/test_cli.py test_user_place_places_what_is_missing_once.
    auto u = s.find_user(args.user);
    if (!u) return report(u.error());
    return place_archived_mail(g, s, *u, /*say_placed=*/true);
  }

  auto modify = [&](const std::function<Status(User&)>& fn, const std::string& done) {
    auto u = s.update_user(args.user, fn);
    if (!u) return report(u.error());
    if (args.json)
      std::cout << json_text(user_json(*u)) << "\n";
    else
      std::cout << u->name << ": " << done << "\n";
    return static_cast<int>(kExitOk);
  };

  if (args.action == "passwd") {
    auto pw = read_password(args);
    if (!pw) return report(pw.error());
    auto hash = hash_password(*pw);
    if (!hash) return report(hash.error());
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
    return modify(
        [&](User& u) {
          u.password_hash = *hash;
          u.sessions_after_ms = now_ms;  // the user's web sessions end with the old password
          return ok_status();
        },
        "password changed (web sessions ended)");
  }
  if (args.action == "disable" || args.action == "enable") {
    const bool off = args.action == "disable";
    return modify([&](User& u) { u.disabled = off; return ok_status(); },
                  off ? "disabled: cannot log in, receives no new mail in mailark's folders"
                      : "enabled (`mailark user place " + args.user + "` places the mail archived meanwhile)");
  }
  if (args.action == "role") {
    if (args.rest.size() != 1) return report(make_error(ErrorCode::kInvalidArgument, "usage: user role ADDRESS user|auditor|admin"));
    auto role = parse_role(args.rest[0]);
    if (!role) return report(make_error(ErrorCode::kInvalidArgument, "unknown role " + args.rest[0], "user, auditor or admin"));
    return modify([&](User& u) { u.role = *role; return ok_status(); }, std::string("role ") + role_name(*role));
  }
  if (args.action == "alias") {
    if (args.rest.size() != 2 || (args.rest[0] != "add" && args.rest[0] != "remove"))
      return report(make_error(ErrorCode::kInvalidArgument, "usage: user alias ADDRESS add|remove ALIAS"));
    auto alias = normalize_address(args.rest[1]);
    if (!alias) return report(alias.error());
    const bool add = args.rest[0] == "add";
    int rc = modify(
        [&](User& u) -> Status {
          auto it = std::find(u.aliases.begin(), u.aliases.end(), *alias);
          if (add) {
            if (*alias == u.name) return make_error(ErrorCode::kInvalidArgument, *alias + " is the user's own name");
            if (it == u.aliases.end()) u.aliases.push_back(*alias);
          } else {
            if (it == u.aliases.end()) return make_error(ErrorCode::kNotFound, u.name + " has no alias " + *alias);
            u.aliases.erase(it);
          }
          return ok_status();
        },
        (add ? "alias added: " : "alias removed: ") + *alias);
    if (rc == kExitOk && add)
      if (auto u = s.find_user(args.user)) place_archived_mail(g, s, *u);
    return rc;
  }
  if (args.action == "app-password") {
    if (args.rest.empty() || (args.rest[0] != "list" && args.rest.size() != 2))
      return report(make_error(ErrorCode::kInvalidArgument, "usage: user app-password ADDRESS add|remove LABEL, or list"));
    if (args.rest[0] == "list") {
      auto u = s.find_user(args.user);
      if (!u) return report(u.error());
      for (const auto& a : u->app_passwords) std::cout << a.label << "  since " << iso8601(a.created_at) << "\n";
      return kExitOk;
    }
    const std::string& label = args.rest[1];
    if (args.rest[0] == "add") {
      std::string secret = generate_app_password();
      auto hash = hash_password(secret);
      if (!hash) return report(hash.error());
      auto u = s.update_user(args.user, [&](User& u) -> Status {
        for (const auto& a : u.app_passwords)
          if (a.label == label) return make_error(ErrorCode::kInvalidArgument, "an app password \"" + label + "\" exists");
        if (u.app_passwords.size() >= 20) return make_error(ErrorCode::kLimit, "a user has at most 20 app passwords");
        u.app_passwords.push_back({label, *hash, unix_now()});
        return ok_status();
      });
      if (!u) return report(u.error());
      std::cout << secret << "\n";
      std::cerr << "app password \"" << label << "\" for " << u->name << ": shown once, store it in the client now\n";
      return kExitOk;
    }
    if (args.rest[0] == "remove") {
      return modify(
          [&](User& u) -> Status {
            auto before = u.app_passwords.size();
            std::erase_if(u.app_passwords, [&](const AppPassword& a) { return a.label == label; });
            if (u.app_passwords.size() == before) return make_error(ErrorCode::kNotFound, "no app password \"" + label + "\"");
            return ok_status();
          },
          "app password \"" + label + "\" removed");
    }
    return report(make_error(ErrorCode::kInvalidArgument, "app-password: add, remove or list"));
  }
  if (args.action == "token") {
    // API tokens for scripts (the web API's Authorization: Bearer). Same shape as app-password.
    if (args.rest.empty() || (args.rest[0] != "list" && args.rest.size() != 2))
      return report(make_error(ErrorCode::kInvalidArgument, "usage: user token ADDRESS add|remove LABEL, or list"));
    if (args.rest[0] == "list") {
      auto u = s.find_user(args.user);
      if (!u) return report(u.error());
      for (const auto& t : u->api_tokens) std::cout << t.label << "  since " << iso8601(t.created_at) << "\n";
      return kExitOk;
    }
    const std::string& label = args.rest[1];
    if (args.rest[0] == "add") {
      std::string token = generate_api_token();
      auto u = s.update_user(args.user, [&](User& u) -> Status {
        for (const auto& t : u.api_tokens)
          if (t.label == label) return make_error(ErrorCode::kInvalidArgument, "an API token \"" + label + "\" exists");
        if (u.api_tokens.size() >= 20) return make_error(ErrorCode::kLimit, "a user has at most 20 API tokens");
        u.api_tokens.push_back({label, api_token_hash(token), unix_now()});
        return ok_status();
      });
      if (!u) return report(u.error());
      std::cout << token << "\n";
      std::cerr << "API token \"" << label << "\" for " << u->name << ": shown once (Authorization: Bearer TOKEN)\n";
      return kExitOk;
    }
    if (args.rest[0] == "remove") {
      return modify(
          [&](User& u) -> Status {
            auto before = u.api_tokens.size();
            std::erase_if(u.api_tokens, [&](const ApiToken& t) { return t.label == label; });
            if (u.api_tokens.size() == before) return make_error(ErrorCode::kNotFound, "no API token \"" + label + "\"");
            return ok_status();
          },
          "API token \"" + label + "\" removed");
    }
    return report(make_error(ErrorCode::kInvalidArgument, "token: add, remove or list"));
  }
  return report(make_error(ErrorCode::kInvalidArgument, "unknown action " + args.action));
}

// A change to the user directory (a configuration change) is an audit entry, written once the change
// is made (no secret is in it: passwords come from the terminal or stdin, tokens are shown once).
int run_user_audited(const GlobalOptions& g, const UserArgs& args) {
  int rc = run_user(g, args);
  const bool lists = args.action == "list" || (!args.rest.empty() && args.rest[0] == "list");
  if (rc != kExitOk || lists) return rc;
  nlohmann::json detail = {{"args", args.rest}};
  if (args.action == "add") detail = {{"role", args.role}, {"aliases", args.aliases}};
  if (Status a = audit(g, "user." + args.action, args.user, json_text(detail)); !a) {
    std::cerr << "mailark: the change to " << args.user << " was made, but its audit entry was not written\n";
    return report(a.error());
  }
  return rc;
}

}  // namespace

void register_user(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<UserArgs>();
  auto* cmd = app.add_subcommand("user", "the user directory: add, list, passwd, alias, role, disable, enable, place, app-password, token");
  cmd->add_option("action", args->action, "add, list, passwd, alias, role, disable, enable, place, app-password, token")
      ->required()
      ->check(CLI::IsMember({"add", "list", "passwd", "alias", "role", "disable", "enable", "place", "app-password", "token"}));
  cmd->add_option("user", args->user, "the user's login name (primary address) or any of their addresses");
  cmd->add_option("rest", args->rest, "alias: add|remove ADDRESS; role: ROLE; app-password, token: add|remove LABEL or list");
  cmd->add_option("--alias", args->aliases, "add: a further address of the user (repeatable)");
  cmd->add_option("--role", args->role, "add: user (default), auditor or admin");
  cmd->add_option("--name", args->display_name, "add: the display name");
  cmd->add_flag("--password-stdin", args->password_stdin, "read the password as one line from standard input");
  cmd->add_flag("--no-password", args->no_password, "add: no local password (directory login only)");
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->footer(
      "Passwords are stored as scrypt hashes only. Without --password-stdin the password is asked twice\n"
      "on the terminal. `app-password add LABEL` prints a generated password once.\n"
      "Examples:\n"
      "  mailark user add alice@example.com --alias sales@example.com --password-stdin <<< 'secret'\n"
      "  mailark user role alice@example.com auditor\n"
      "  mailark user place alice@example.com   (archived mail of hers not in her folders: after enable, upgrades)\n"
      "  mailark user app-password alice@example.com add phone\n"
      "  mailark user token alice@example.com add backup-script   (a bearer token for the web API)");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_user_audited(g, *args); }; });
}

}  // namespace mailark::cli
