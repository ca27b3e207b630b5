// mailark case create|list|show|search|note|hold|release|export|close: eDiscovery cases, their saved
// searches and legal holds (engine/cases.h). Every change is in the audit log with the case.
// mailark audit list|verify|export: the audit log itself.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "common/json_text.h"
#include "engine/cases.h"
#include "engine/export.h"
#include "engine/checkpoint.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct CaseArgs {
  std::string which;  // id or name
  std::string name, description, query, from, to, text, reason, out, format = "eml";
  std::vector<std::string> custodians;
  bool save = false, json = false;
  std::size_t limit = 20;
  std::uint64_t since = 1;
};

std::string actor() { return "cli:" + os_account(); }

void print_json(const nlohmann::json& j) {
  std::cout << json_text(j) << "\n";
}

// Every match of a case's saved searches (one, or all of them ORed), counted exactly: outside the
// query's bounds, as the case's export and hold (indexer::SearchOptions::bounded; each typed search
// ran within them when it was saved).
Result<std::uint64_t> count_saved(Engine& e, const std::string& query) {
  indexer::SearchOptions opts;
  opts.exact_total = true;
  opts.limit = 0;
  opts.bounded = false;
  auto res = e.search(query, opts);
  if (!res) return res.error();
  return res->total;
}

int run_create(const GlobalOptions& g, const CaseArgs& a) {
  auto s = case_store(g);
  if (!s) return report(s.error());
  auto c = (*s)->create(a.name, a.description, a.custodians, actor());
  if (!c) return report(c.error());
  if (a.json)
    print_json(case_to_json(*c));
  else
    std::cout << "case " << c->id << " \"" << c->name << "\" created\n";
  return kExitOk;
}

int run_list(const GlobalOptions& g, const CaseArgs& a) {
  auto s = case_store(g);
  std::vector<Case> cases;
  if (s) {
    auto l = (*s)->list();
    if (!l) return report(l.error());
    cases = std::move(*l);
  } else if (s.error().code != ErrorCode::kNotFound) {
    return report(s.error());
  }
  if (a.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& c : cases) out.push_back(case_to_json(c));
    print_json(out);
    return kExitOk;
  }
  for (const auto& c : cases)
    std::cout << std::to_string(c.id) << "  " << (c.closed ? "closed" : "open  ") << "  " << (c.hold ? "HOLD" : "    ")
              << "  " << c.name << "  (" << c.searches.size() << " saved search" << (c.searches.size() == 1 ? "" : "es")
              << ")\n";
  if (cases.empty()) std::cout << "no cases\n";
  return kExitOk;
}

int run_show(const GlobalOptions& g, const CaseArgs& a) {
  auto s = case_store(g);
  if (!s) return report(s.error());
  auto c = (*s)->find(a.which);
  if (!c) return report(c.error());
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  nlohmann::json j = case_to_json(*c);
  for (std::size_t i = 0; i < c->searches.size(); ++i) {
    auto n = count_saved(**engine, case_query(*c, c->searches[i]));
    if (!n) return report(n.error());
    j["searches"][i]["messages"] = *n;
  }
  std::string all = case_all_query(*c);
  if (!c->searches.empty()) {
    auto n = count_saved(**engine, all);
    if (!n) return report(n.error());
    j["messages"] = *n;
  }
  if (Status au = audit(g, "case.show", c->name); !au) return report(au.error());
  if (a.json) {
    print_json(j);
    return kExitOk;
  }
  std::cout << "Case:        " << c->id << " \"" << c->name << "\" (" << (c->closed ? "closed" : "open") << ")\n";
  if (!c->description.empty()) std::cout << "Description: " << c->description << "\n";
  std::cout << "Custodians:  ";
  for (std::size_t i = 0; i < c->custodians.size(); ++i) std::cout << (i ? ", " : "") << c->custodians[i];
  std::cout << (c->custodians.empty() ? "(every custodian)" : "") << "\n";
  std::cout << "Legal hold:  " << (c->hold ? "IN FORCE: the messages of its searches, now and arriving, are kept"
                                          : "none")
            << "\n";
  std::cout << "Created:     " << iso8601(c->created_at) << " by " << c->created_by << "\n";
  for (std::size_t i = 0; i < c->searches.size(); ++i) {
    const auto& sv = c->searches[i];
    std::cout << "Search " << i + 1 << ":    " << sv.query;
    if (!sv.from.empty() || !sv.to.empty()) std::cout << "  [" << sv.from << ".." << sv.to << "]";
    std::cout << "  -> " << j["searches"][i]["messages"].get<std::uint64_t>() << " messages\n";
  }
  if (j.contains("messages")) std::cout << "In all:      " << j["messages"].get<std::uint64_t>() << " messages\n";
  for (const auto& n : c->notes) std::cout << "Note:        " << iso8601(n.at) << " " << n.by << ": " << n.text << "\n";
  return kExitOk;
}

int run_search(const GlobalOptions& g, const CaseArgs& a) {
  auto s = case_store(g);
  if (!s) return report(s.error());
  auto c = (*s)->find(a.which);
  if (!c) return report(c.error());
  SavedSearch sv{a.query, a.from, a.to, 0, ""};
  std::string query = case_query(*c, sv);
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  indexer::SearchOptions opts;
  opts.limit = a.limit;
  opts.exact_total = true;
  opts.scope = case_scope(*c, sv);  // the typed search within the query's bounds, the case's scope outside
  auto res = (*engine)->search(sv.query, opts);
  if (!res) return report(res.error());
  if (a.save) {
    auto saved = (*s)->add_search(c->id, sv, actor());
    if (!saved) return report(saved.error());
  }
  if (Status au = audit(g, "case.search", c->name,
                        json_text(nlohmann::json{{"query", query}, {"total", res->total}}));
      !au)
    return report(au.error());
  if (a.json) {
    nlohmann::json hits = nlohmann::json::array();
    for (const auto& h : res->hits)
      hits.push_back({{"id", h.id}, {"date", iso8601(h.date)}, {"from", h.from}, {"subject", h.subject}});
    print_json({{"case", c->name}, {"query", query}, {"total", res->total}, {"saved", a.save}, {"results", hits},
                {"older_reading", res->older_reading}});
    return kExitOk;
  }
  if (res->older_reading > 0) std::cerr << "mailark: note: " << SearchExceptions{0, res->older_reading}.text();
  for (const auto& h : res->hits)
    std::cout << h.id << "  " << iso8601(h.date).substr(0, 10) << "  " << h.from << "  " << h.subject << "\n";
  std::cout << res->total << " message" << (res->total == 1 ? "" : "s") << " for case \"" << c->name << "\" ("
            << query << ")" << (a.save ? ", search saved" : "") << "\n";
  return kExitOk;
}

int run_change(const GlobalOptions& g, const CaseArgs& a, const std::string& what) {
  auto s = case_store(g);
  if (!s) return report(s.error());
  auto c = (*s)->find(a.which);
  if (!c) return report(c.error());
  Result<Case> done = what == "note"      ? (*s)->add_note(c->id, a.text, actor())
                      : what == "hold"    ? (*s)->set_hold(c->id, true, a.reason, actor())
                      : what == "release" ? (*s)->set_hold(c->id, false, a.reason, actor())
                                          : (*s)->close(c->id, actor());
  if (!done) return report(done.error());
  if (a.json) {
    print_json(case_to_json(*done));
  } else if (what == "hold") {
    std::cout << "legal hold placed on case \"" << done->name << "\": "
              << (done->searches.empty() ? "every message of its custodians" : "every message its saved searches find")
              << ", now and arriving, is kept from retention\n";
  } else if (what == "release") {
    std::cout << "legal hold on case \"" << done->name << "\" lifted\n";
  } else if (what == "close") {
    std::cout << "case \"" << done->name << "\" closed\n";
  } else {
    std::cout << "note added to case \"" << done->name << "\"\n";
  }
  return kExitOk;
}

// The case's searches, exported by `mailark export` (in mailark-server, which links libarchive).
int run_export(const GlobalOptions& g, const CaseArgs& a) {
  auto s = case_store(g);
  if (!s) return report(s.error());
  auto c = (*s)->find(a.which);
  if (!c) return report(c.error());
  std::string query = case_all_query(*c);
  if (c->searches.empty())
    return report(make_error(ErrorCode::kInvalidArgument, "case \"" + c->name + "\" has no saved search",
                             "save one: `mailark case search CASE QUERY --save`"));
  const std::string server = server_binary();
  std::vector<std::string> argv_s = {server, "--data", g.data_dir, "export", query, "--out", a.out,
                                     "--format", a.format, "--case", c->name};
  if (a.json) argv_s.push_back("--json");
  std::vector<char*> argv;
  for (auto& x : argv_s) argv.push_back(x.data());
  argv.push_back(nullptr);
  std::cout.flush();  // what the filter of tools/terminal_safe.h holds, before the process is replaced
  ::execv(server.c_str(), argv.data());
  return report(make_error(ErrorCode::kNotFound, "cannot start " + server + ": " + std::strerror(errno)));
}

int run_audit_list(const GlobalOptions& g, const CaseArgs& a) {
  auto s = case_store(g);
  if (!s) return report(s.error());
  auto entries = (*s)->audit_entries(a.since, a.limit);
  if (!entries) return report(entries.error());
  if (a.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : *entries) out.push_back(audit_to_json(e));
    print_json(out);
    return kExitOk;
  }
  for (const auto& e : *entries)
    std::cout << e.seq << "  " << iso8601(e.at) << "  " << e.actor << "  " << e.action << "  " << e.target << "  "
              << e.detail << "\n";
  return kExitOk;
}

int run_audit_verify(const GlobalOptions& g, const CaseArgs& a) {
  auto s = case_store(g);
  if (!s) return report(s.error());
  AuditCheck check = (*s)->verify_audit();
  if (a.json)
    print_json({{"ok", check.ok}, {"problem", check.problem}, {"entries", check.entries}, {"head", to_hex(check.head)}});
  else if (check.ok)
    std::cout << "audit log intact: " << check.entries << " entries, head " << to_hex(check.head) << "\n";
  else
    std::cout << "AUDIT LOG DAMAGED: " << check.problem << "\n";
  return check.ok ? kExitOk : kExitFailure;
}

// The audit log as JSON lines: a header, one line per entry (its seq, hash and exact bytes), and a
// signed note over the head (the archive's key; the same C2SP signed-note form as checkpoints), so
// that anyone holding the verifier key can check it without mailark (tests/e2e/tlog.py
// verify_audit_export).
int run_audit_export(const GlobalOptions& g, const CaseArgs& a) {
  auto s = case_store(g);
  if (!s) return report(s.error());
  AuditCheck check = (*s)->verify_audit();
  if (!check.ok) return report(make_error(ErrorCode::kCorrupt, "the audit log does not check: " + check.problem));
  auto key = archive_signing_key(g.data_dir, /*create=*/true);
  if (!key) return report(key.error());
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  NoteVerifier verifier = archive_verifier((*engine)->archive().archive_id(), *key);
  const std::string origin = verifier.name + "/audit";
  std::string tmp = a.out + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return report(make_error(ErrorCode::kIo, "cannot write " + tmp + ": " + std::strerror(errno)));
    std::string text = origin + "\n" + std::to_string(check.entries) + "\n" +
                       base64_encode(std::string_view(reinterpret_cast<const char*>(check.head.data()), 32)) + "\n";
    out << json_text(nlohmann::json{{"format", "mailark-audit-v1"},
                                    {"entries", check.entries},
                                    {"head", to_hex(check.head)},
                                    {"verifier_key", verifier.text()},
                                    {"signed_head", sign_note(text, verifier.name, *key)}})
        << "\n";
    for (std::uint64_t from = 1; from <= check.entries;) {
      auto batch = (*s)->audit_entries(from, 4096);
      if (!batch) return report(batch.error());
      if (batch->empty()) break;
      for (const auto& e : *batch) {
        if (e.seq > check.entries) break;
        out << nlohmann::json{{"seq", e.seq}, {"hash", to_hex(e.hash)}, {"entry", e.bytes}}.dump(
                   -1, ' ', false, nlohmann::json::error_handler_t::strict)
            << "\n";
      }
      from = batch->back().seq + 1;
    }
    out.flush();
    if (!out) return report(make_error(ErrorCode::kIo, "writing " + tmp + " failed"));
  }
  if (std::rename(tmp.c_str(), a.out.c_str()) != 0)
    return report(make_error(ErrorCode::kIo, "cannot rename " + tmp + ": " + std::strerror(errno)));
  if (Status au = audit(g, "audit.export", a.out, json_text(nlohmann::json{{"entries", check.entries}})); !au)
    return report(au.error());
  std::cout << "exported " << check.entries << " audit entries to " << a.out << " (head signed; verifier key "
            << verifier.text() << ")\n";
  return kExitOk;
}

}  // namespace

void register_case(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto a = std::make_shared<CaseArgs>();
  auto* cmd = app.add_subcommand("case", "eDiscovery cases: saved searches, legal holds, exports");
  cmd->require_subcommand(1);
  auto bind = [&g, &run, a](CLI::App* sub, std::function<int(const GlobalOptions&, const CaseArgs&)> f) {
    sub->add_flag("--json", a->json, "print JSON");
    sub->callback([&g, &run, a, f] { run = [&g, a, f] { return f(g, *a); }; });
  };
  auto* create = cmd->add_subcommand("create", "open a case");
  create->add_option("name", a->name, "the case's name (unique)")->required();
  create->add_option("--description", a->description, "what the case is about");
  create->add_option("--custodian", a->custodians, "a custodian whose mail the case covers (repeat; none: everyone)");
  bind(create, run_create);
  bind(cmd->add_subcommand("list", "every case, open and closed"), run_list);
  auto* show = cmd->add_subcommand("show", "a case: custodians, saved searches with their counts, hold, notes");
  show->add_option("case", a->which, "id or name")->required();
  bind(show, run_show);
  auto* search = cmd->add_subcommand("search", "search within a case's custodians (and save the search)");
  search->add_option("case", a->which, "id or name")->required();
  search->add_option("query", a->query, "the search (query syntax); \"\" for everything the custodians hold");
  search->add_option("--from", a->from, "first day (YYYY-MM-DD)");
  search->add_option("--to", a->to, "last day (YYYY-MM-DD)");
  search->add_flag("--save", a->save, "save it in the case (its hold then keeps what it finds)");
  search->add_option("--limit", a->limit, "results shown (default 20)");
  bind(search, run_search);
  auto* note = cmd->add_subcommand("note", "add a note to a case");
  note->add_option("case", a->which, "id or name")->required();
  note->add_option("text", a->text, "the note")->required();
  bind(note, [](const GlobalOptions& g, const CaseArgs& x) { return run_change(g, x, "note"); });
  auto* hold = cmd->add_subcommand("hold", "place a legal hold: what the case's searches find is kept from retention");
  hold->add_option("case", a->which, "id or name")->required();
  hold->add_option("--reason", a->reason, "why (recorded)");
  bind(hold, [](const GlobalOptions& g, const CaseArgs& x) { return run_change(g, x, "hold"); });
  auto* release = cmd->add_subcommand("release", "lift a case's legal hold");
  release->add_option("case", a->which, "id or name")->required();
  release->add_option("--reason", a->reason, "why (recorded)")->required();
  bind(release, [](const GlobalOptions& g, const CaseArgs& x) { return run_change(g, x, "release"); });
  auto* exp = cmd->add_subcommand("export", "export every message of the case's saved searches (as `mailark export`)");
  exp->add_option("case", a->which, "id or name")->required();
  exp->add_option("--out", a->out, "the zip to write")->required();
  exp->add_option("--format", a->format, "eml or mbox")->check(CLI::IsMember({"eml", "mbox"}));
  bind(exp, run_export);
  auto* close = cmd->add_subcommand("close", "close a case (refused while it holds)");
  close->add_option("case", a->which, "id or name")->required();
  bind(close, [](const GlobalOptions& g, const CaseArgs& x) { return run_change(g, x, "close"); });

  auto* au = app.add_subcommand("audit", "the audit log: every search, view, export, hold and case change");
  au->require_subcommand(1);
  auto* list = au->add_subcommand("list", "entries, oldest first");
  list->add_option("--since", a->since, "first entry (seq)");
  list->add_option("--limit", a->limit, "entries shown (default 20)");
  bind(list, run_audit_list);
  bind(au->add_subcommand("verify", "check the hash chain from the first entry to the head"), run_audit_verify);
  auto* aexp = au->add_subcommand("export", "write the log with its signed head, checkable without mailark");
  aexp->add_option("--out", a->out, "the file to write (JSON lines)")->required();
  bind(aexp, run_audit_export);
}

}  // namespace mailark::cli
