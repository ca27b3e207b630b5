#include "api/retention_pass.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

#include "common/dates.h"
#include "common/json_text.h"
#include "engine/checkpoint.h"
#include "engine/index_fields.h"
#include "engine/retention.h"
#include "indexer/index.h"

namespace mailark::api {

RetentionPass::RetentionPass(Archive& archive, const indexer::IndexWriter& writer, std::string data_dir, Limits limits,
                             CaseStore& cases, MailboxStore* mailboxes, RetentionConfig config)
    : archive_(archive),
      writer_(writer),
      data_dir_(std::move(data_dir)),
      limits_(limits),
      cases_(cases),
      mailboxes_(mailboxes),
      config_(config) {
  if (config_.every > 0) thread_ = std::thread([this] { loop(); });
}

RetentionPass::~RetentionPass() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void RetentionPass::loop() {
  // Background work (expiry, segments read again: minutes for a segment of 250,000 messages) yields
  // the CPU to the SMTP door and the readers: this thread runs at nice 10 (Linux: per thread).
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
  std::unique_lock lock(mu_);
  // The first pass a minute after the start (sooner when passes are more frequent), then every
  // `every` seconds.
  auto wait = std::chrono::seconds(std::min(60u, config_.every));
  while (!cv_.wait_for(lock, wait, [this] { return stop_; })) {
    lock.unlock();
    try {
      turn();
    } catch (...) {  // nothing expired that the pass did not finish; the next goes on
      spdlog::error("retention: the pass stopped: {}", indexer::describe_current_exception());
    }
    lock.lock();
    wait = std::chrono::seconds(config_.every);
  }
}

// What a pass works with: the server's archive, its index and the writer's pair words (no search: the
// expiry adds its reader's).
RetentionContext RetentionPass::context() const {
  RetentionContext ctx;
  ctx.archive = &archive_;
  ctx.index_dir = data_dir_ + "/index";
  ctx.limits = limits_;
  ctx.pairs = writer_.pair_words();
  return ctx;
}

// Segments an older release indexed, read again (reread_older_segments): with or without a retention
// policy, since searches miss what holds miss.
void RetentionPass::reread() {
  auto rep = reread_older_segments(context(), [](const std::string& what) { spdlog::info("index: read again {}", what); });
  if (!rep) {
    spdlog::error("index: reading segments an older release indexed again: {}", rep.error().context);
    return;
  }
  for (const auto& why : rep->left) spdlog::warn("index: not read again yet: {}", why);
  if (rep->segments)
    spdlog::info("index: read {} segments an older release indexed again ({} documents)", rep->segments,
                 rep->documents);
  // The live segment's shards are the writer's: closed at the next message, it is sealed (the seal
  // loop) and read again by a later pass, rather than at the end of its period (a month by default).
  if (rep->live_older > 0 && !archive_.live_segment_closing()) {
    archive_.close_live_segment_at_next_append();
    spdlog::info("index: the live segment holds {} documents an older release indexed: it closes at the next "
                 "message, and a later pass reads it again once it is sealed",
                 rep->live_older);
  }
}

void RetentionPass::turn() {
  reread();  // before the reader that holds are searched with opens
  auto policy = retention_policy(archive_);
  if (!policy) {
    spdlog::error("retention: {}", policy.error().context);
    return;
  }
  if (policy->empty()) return;  // nothing expires
  auto held = cases_.held_queries();
  if (!held) {
    spdlog::error("retention: the legal holds cannot be read, nothing expires: {}", held.error().context);
    return;
  }
  auto key = archive_signing_key(data_dir_, /*create=*/true);
  if (!key) {
    spdlog::error("retention: {}", key.error().context);
    return;
  }
  auto reader = indexer::IndexReader::open(data_dir_ + "/index");
  if (!reader) {
    spdlog::error("retention: {}", reader.error().context);
    return;
  }
  ArchiveFieldSource source(archive_, limits_);
  RetentionContext ctx = context();
  ctx.search = [&](const std::string& q, const indexer::SearchOptions& o) { return (*reader)->search(q, o, &source); };
  ctx.index_watermark = (*reader)->watermark();  // what the index had committed when it was opened
  RetentionOptions o;
  o.now = unix_now();
  o.by = "server";
  o.held_queries = *held;
  o.key = &*key;
  o.mailboxes = mailboxes_;
  auto rep = run_retention(ctx, *policy, o);
  if (!rep) {
    spdlog::error("retention: {}", rep.error().context);
    return;
  }
  // A segment with mail past its rule that this pass left (a later run expires it once what stops
  // it is gone: an index behind, a remote index, documents an older release read while a hold
  // stands) is said, so that an administrator sees why the archive does not shrink.
  for (const auto& s : rep->segments)
    if (!s.skipped.empty() && s.due > 0)
      spdlog::warn("retention: segment {}-{} ({} messages due) not expired: {}", s.first, s.last, s.due, s.skipped);
  if (rep->expired == 0 && rep->mailbox_entries_removed == 0) return;
  nlohmann::json tombstones = nlohmann::json::array();
  for (const auto& s : rep->segments)
    if (s.outcome) tombstones.push_back(s.outcome->tombstone.id);
  spdlog::info("retention: expired {} messages of {} segments, {} kept by legal holds, {} waiting for delivery",
               rep->expired, tombstones.size(), rep->held, rep->pending);
  auto entry = cases_.audit("server", "retention.run", "policy",
                            json_text(nlohmann::json{{"expired", rep->expired},
                                                     {"held", rep->held},
                                                     {"pending", rep->pending},
                                                     {"tombstones", tombstones}}));
  if (!entry) spdlog::error("retention: the audit entry of this pass could not be written: {}", entry.error().context);
}

}  // namespace mailark::api
