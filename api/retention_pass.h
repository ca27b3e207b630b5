// The server's retention pass: every `retention.every` seconds (docs/CONFIG.md) the archive's retention
// policy (engine/retention.h) is applied to the closed segments beside the running server: appends,
// the index writer and every reader go on meanwhile (run_retention writes only closed segments; a
// store still being read is swapped at the next pass). Holds come from the case store, tombstones are
// signed with the archive's key, users' mailbox views forget what expired, and each pass that expires
// anything is an audit entry (actor "server"). Runs on a thread of its own, never on the event loop
// (tests/e2e/test_retention.py test_the_server_expires_while_it_serves). Each pass first reads again
// the sealed index segments an older release indexed (reread_older_segments, with or without a policy:
// tests/e2e/test_upgrade.py test_format_four_segments_stay_in_place_and_the_next_one_gets_a_store).
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "api/config.h"
#include "common/limits.h"
#include "engine/archive.h"
#include "engine/cases.h"
#include "engine/mailbox.h"
#include "engine/retention.h"
#include "indexer/index.h"

namespace mailark::api {

class RetentionPass {
 public:
  // mailboxes may be null (a server without users). Starts the thread when config.every > 0.
  RetentionPass(Archive& archive, const indexer::IndexWriter& writer, std::string data_dir, Limits limits,
                CaseStore& cases, MailboxStore* mailboxes, RetentionConfig config);
  ~RetentionPass();  // stops the thread (a pass under way finishes first)
  RetentionPass(const RetentionPass&) = delete;
  RetentionPass& operator=(const RetentionPass&) = delete;

 private:
  void loop();
  void turn();
  void reread();
  RetentionContext context() const;
  Archive& archive_;
  const indexer::IndexWriter& writer_;
  const std::string data_dir_;
  const Limits limits_;
  CaseStore& cases_;
  MailboxStore* mailboxes_;
  const RetentionConfig config_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace mailark::api
