// mailark show ID: headers, MIME structure and verdict of one archived message; --raw for its bytes.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/json_text.h"
#include "engine/record_json.h"
#include "tools/cli.h"

namespace mailark::cli {
namespace {

struct ShowArgs {
  std::uint64_t id = 0;
  bool raw = false;
  bool json = false;
};

nlohmann::json addresses(const std::vector<Address>& list) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& x : list) a.push_back({{"name", x.name}, {"address", x.addr}});
  return a;
}

int run_show(const GlobalOptions& g, const ShowArgs& args) {
  auto engine = open_engine(g, /*read_only=*/true);
  if (!engine) return report(engine.error());
  Engine& e = **engine;
  auto rec = e.archive().record(args.id);
  if (!rec) return report(rec.error());
  std::string raw;
  auto msg = e.parse(*rec, &raw);
  if (!msg) return report(msg.error());
  // Every view is in the audit log, before anything is shown (fail closed: cli.h audit).
  if (Status a = audit(g, args.raw ? "show.raw" : "show", std::to_string(args.id),
                       json_text(nlohmann::json{{"subject", msg->subject}, {"message_id", msg->message_id}}));
      !a)
    return report(a.error());
  if (args.raw) {
    std::fwrite(raw.data(), 1, raw.size(), stdout);
    return std::fflush(stdout) == 0 ? kExitOk : kExitIo;
  }
  const ArchiveRecord& r = *rec;
  const ParsedMessage& m = *msg;
  auto held = e.archive().quarantine_entry(r.seq);  // the administrator's decision, if it was held
  auto copies = e.archive().copies_of(r);             // everyone who held this message
  if (!copies) return report(copies.error());
  nlohmann::json jcopies = nlohmann::json::array();
  for (const auto& c : *copies) {
    nlohmann::json jc = {{"id", c.seq},
                         {"direction", direction_name(c.envelope.direction)},
                         {"custodians", custodians_of(c)},
                         {"received_at", iso8601(c.envelope.received_at)}};
    if (!c.envelope.source.empty()) jc["source"] = c.envelope.source;
    if (!c.envelope.folder.empty()) jc["folder"] = c.envelope.folder;
    jcopies.push_back(std::move(jc));
  }
  nlohmann::json parts = nlohmann::json::array();
  for (const auto& p : m.parts) {
    nlohmann::json jp = {{"depth", p.depth},
                         {"content_type", p.content_type},
                         {"size", p.size},
                         {"attachment", p.is_attachment}};
    if (!p.filename.empty()) jp["filename"] = p.filename;
    if (!p.disposition.empty()) jp["disposition"] = p.disposition;
    if (p.is_attachment) jp["sha256"] = to_hex(p.sha256);
    parts.push_back(jp);
  }
  nlohmann::json j = {{"id", r.seq},
                      {"message_id", m.message_id},
                      {"date", m.date ? iso8601(*m.date) : std::string()},
                      {"from", addresses(m.from)},
                      {"to", addresses(m.to)},
                      {"cc", addresses(m.cc)},
                      {"bcc", addresses(m.bcc)},
                      {"reply_to", addresses(m.reply_to)},
                      {"subject", m.subject},
                      {"in_reply_to", m.in_reply_to},
                      {"references", m.references},
                      {"size", r.raw_size},
                      {"sha256", to_hex(r.content_sha256)},
                      {"verdict", scanner::verdict_name(r.verdict.kind)},
                      {"signatures", r.verdict.signatures},
                      {"verdict_reason", r.verdict.reason},
                      {"malformed", (r.flags & kFlagMalformed) != 0},
                      {"quarantined", (r.flags & kFlagQuarantined) != 0},
                      {"problems", m.problems},
                      {"envelope", envelope_json(r.envelope)},
                      {"archived_at", iso8601(r.archived_at)},
                      {"record_hash", to_hex(r.hash)},
                      {"copies", jcopies},
                      {"parts", parts}};
  if (held) {
    j["quarantine"] = {{"status", quarantine_status_name(held->status)},
                       {"reason", held->reason},
                       {"refused_at_smtp", held->refused},
                       {"decided_by", held->decided_by},
                       {"decided_at", held->decided_at ? iso8601(held->decided_at) : std::string()}};
  }
  if (args.json) {
    std::cout << json_text(j) << "\n";
    return kExitOk;
  }
  std::cout << "Id:          " << r.seq << "\n"
            << "Message-ID:  " << m.message_id << "\n"
            << "Date:        " << (m.date ? iso8601(*m.date) : "(none)") << "\n"
            << "From:        " << join_addresses(m.from) << "\n"
            << "To:          " << join_addresses(m.to) << "\n";
  if (!m.cc.empty()) std::cout << "Cc:          " << join_addresses(m.cc) << "\n";
  if (!m.bcc.empty()) std::cout << "Bcc:         " << join_addresses(m.bcc) << "\n";
  std::cout << "Subject:     " << m.subject << "\n"
            << "Size:        " << r.raw_size << " bytes, SHA-256 " << to_hex(r.content_sha256) << "\n"
            << "Verdict:     " << scanner::verdict_name(r.verdict.kind);
  for (const auto& s : r.verdict.signatures) std::cout << " " << s;
  if (!r.verdict.reason.empty()) std::cout << " (" << r.verdict.reason << ")";
  std::cout << "\n";
  if (held) {
    std::cout << "Quarantine:  " << quarantine_status_name(held->status);
    if (held->status != QuarantineStatus::kHeld)
      std::cout << " by " << held->decided_by << " at " << iso8601(held->decided_at);
    if (held->refused) std::cout << " (the sender was refused at SMTP time)";
    std::cout << "\n";
  } else if (r.flags & kFlagQuarantined) {
    std::cout << "Quarantined: yes (kept out of mailbox views)\n";
  }
  if (r.flags & kFlagMalformed) {
    std::cout << "Malformed:   yes\n";
    for (const auto& p : m.problems) std::cout << "  - " << p << "\n";
  }
  std::cout << "Envelope:    " << direction_name(r.envelope.direction) << " from <" << r.envelope.mail_from
            << ">";
  if (!r.envelope.source.empty()) std::cout << " source " << r.envelope.source;
  std::cout << ", received " << iso8601(r.envelope.received_at) << "\n";
  if (!r.envelope.custodian.empty()) std::cout << "Custodian:   " << r.envelope.custodian << "\n";
  if (!r.envelope.folder.empty()) std::cout << "Folder:      " << r.envelope.folder << "\n";
  if (copies->size() > 1) {
    std::cout << "Held by:     " << copies->size() << " records of these bytes\n";
    for (const auto& c : *copies) {
      const auto who = custodians_of(c);
      std::string names;
      for (const auto& n : who) names += (names.empty() ? "" : ", ") + n;
      std::cout << "  " << (c.seq == r.seq ? "* " : "  ") << c.seq << " " << direction_name(c.envelope.direction) << " "
                << (names.empty() ? "(no custodian)" : names);
      if (!c.envelope.folder.empty()) std::cout << " in " << c.envelope.folder;
      std::cout << ", " << iso8601(c.envelope.received_at) << "\n";
    }
  }
  std::cout << "Structure:\n";
  for (const auto& p : m.parts) {
    std::cout << "  " << std::string(p.depth * 2, ' ') << p.content_type;
    if (!p.filename.empty()) std::cout << " \"" << p.filename << "\"";
    if (p.size) std::cout << " (" << p.size << " bytes)";
    if (p.is_attachment) std::cout << " [attachment]";
    std::cout << "\n";
  }
  return kExitOk;
}

}  // namespace

void register_show(CLI::App& app, GlobalOptions& g, Runner& run) {
  auto args = std::make_shared<ShowArgs>();
  auto* cmd = app.add_subcommand("show", "show one archived message");
  cmd->add_option("id", args->id, "message id (from search)")->required();
  cmd->add_flag("--raw", args->raw, "write the exact original bytes to stdout");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([&g, &run, args] { run = [&g, args] { return run_show(g, *args); }; });
}

}  // namespace mailark::cli
