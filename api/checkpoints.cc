#include "api/checkpoints.h"

#include <spdlog/spdlog.h>

#include <ctime>
#include <filesystem>

#include "api/outcall.h"
#include "common/dates.h"
#include "common/file_util.h"
#include "common/exceptions.h"

namespace mailark::api {

std::string publish_checkpoint(const std::string& target, const SignedCheckpoint& cp, const std::string& archive_id,
                               unsigned timeout_s) {
  const std::string size = std::to_string(cp.checkpoint.size);
  if (target.rfind("file:", 0) == 0) {
    const std::string dir = target.substr(5);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return "cannot create " + dir + ": " + ec.message();
    auto written = write_file_atomically(dir + "/mailark-" + archive_id + "-" + size + ".checkpoint", cp.note);
    return written ? "" : written.error().context;
  }
  if (target.rfind("command:", 0) == 0)
    return run_command(target.substr(8), cp.note,
                       {"MAILARK_CHECKPOINT_ORIGIN=" + cp.checkpoint.origin, "MAILARK_CHECKPOINT_SIZE=" + size},
                       timeout_s);
  return post(target, cp.note, "text/plain; charset=utf-8", {}, timeout_s, "mailark-checkpoints");
}

CheckpointPublisher::CheckpointPublisher(const Archive& archive, std::string data_dir, CheckpointsConfig config)
    : archive_(archive), data_dir_(std::move(data_dir)), config_(std::move(config)) {
  if (!config_.publish.empty()) thread_ = std::thread([this] { loop(); });
}

CheckpointPublisher::~CheckpointPublisher() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CheckpointPublisher::loop() {
  // A turn that throws is logged and the next one goes on: this thread must not end the server.
  auto guarded_turn = [this] {
    try {
      turn();
    } catch (...) {
      spdlog::error("checkpoints: the turn stopped: {}", describe_current_exception());
    }
  };
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    guarded_turn();
    lock.lock();
    cv_.wait_for(lock, std::chrono::seconds(config_.every), [this] { return stop_; });
  }
  lock.unlock();
  guarded_turn();  // what the server archived since the last turn, signed as it stops
}

void CheckpointPublisher::turn() {
  if (!key_) {  // read (or made) once
    auto key = archive_signing_key(data_dir_, /*create=*/true);
    if (!key) {
      spdlog::error("checkpoints: {}", key.error().context);
      return;
    }
    key_ = std::move(*key);
  }
  auto snap = archive_.snapshot();
  if (!snap) {
    spdlog::error("checkpoints: {}", snap.error().context);
    return;
  }
  const std::uint64_t size = (*snap)->tree_size();
  bool due = false;
  for (const auto& target : config_.publish) {
    auto it = published_.find(target);
    due |= it == published_.end() || it->second != size;
  }
  if (!due) return;
  auto cp = sign_checkpoint(**snap, *key_, unix_now());
  const std::string id = (*snap)->archive_id();
  snap->reset();  // the publication may take a while: no read transaction held meanwhile
  if (!cp) {
    spdlog::error("checkpoints: {}", cp.error().context);
    return;
  }
  for (const auto& target : config_.publish) {
    auto it = published_.find(target);
    if (it != published_.end() && it->second == size) continue;
    const std::string why = publish_checkpoint(target, *cp, id, config_.timeout);
    if (why.empty()) {
      published_[target] = size;
      spdlog::info("checkpoint of {} records published to {}", size, target);
    } else {
      spdlog::warn("checkpoint of {} records not published to {}: {} (tried again in {} s)", size, target, why,
                   config_.every);
    }
  }
}

}  // namespace mailark::api
