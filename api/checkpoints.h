// Publishes signed checkpoints of the archive (engine/checkpoint.h) to the targets of
// [checkpoints] publish, so that tamper evidence leaves the machine: a file in a folder (another
// disk, a mounted share), a command (an upload, a ticket), a webhook (a transparency log, a
// timestamping service). A checkpoint is signed when the server starts, every `checkpoints.every`
// seconds while the archive grows, and as the server stops; a target that fails is tried again at the
// next turn with the newest checkpoint. Runs on a thread of its own, never on the event loop
// (tests/e2e/test_checkpoint.py test_the_server_publishes_checkpoints).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "api/config.h"
#include "engine/archive.h"
#include "engine/checkpoint.h"

namespace mailark::api {

// Hands one signed checkpoint to one target; returns an empty string on success, else why not.
std::string publish_checkpoint(const std::string& target, const SignedCheckpoint& cp, const std::string& archive_id,
                               unsigned timeout_s);

class CheckpointPublisher {
 public:
  CheckpointPublisher(const Archive& archive, std::string data_dir, CheckpointsConfig config);
  ~CheckpointPublisher();  // stops the thread (a publication under way finishes first)
  CheckpointPublisher(const CheckpointPublisher&) = delete;
  CheckpointPublisher& operator=(const CheckpointPublisher&) = delete;

 private:
  void loop();
  void turn();
  const Archive& archive_;
  const std::string data_dir_;
  const CheckpointsConfig config_;
  std::optional<SigningKey> key_;                   // the publisher thread's only
  std::map<std::string, std::uint64_t> published_;  // target -> tree size last handed to it
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace mailark::api
