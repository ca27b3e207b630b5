// Free space kept for what the server has already taken in (as Postfix's queue_minfree): the
// messages being archived, the queue's and the mailboxes' changes. New mail from outside is refused
// while writing it would leave less than the reserve free (limits.disk_reserve_bytes) on the file
// system of the data folder, its archive/ or its spool/ (whichever has least: an administrator may
// mount them apart), so a disk filled by incoming mail never makes the archive fail to record what it
// already answered 250 for. The index's file system is not asked: a full index never stops mail (it
// catches up, issue 6).
//
//   SMTP    MAIL FROM, with the size its SIZE parameter declares:  452 4.3.1
//           a message that crosses the reserve while DATA arrives (its spill, api/smtp/spool.h):
//           452 4.3.1 at its end, what was kept of it freed at once
//   IMAP    APPEND, before the client sends its literal:  NO [OVERQUOTA] Not enough disk space
//   web     a send:  503 naming 452 4.3.1; a case export written to DATA/tmp:  507 (before it
//           starts, and every 256 messages)
//
// Mail mailark writes itself (alerts, bounces) and the queue's records do not ask: the reserve is
// there for them. The server sends an alert (alerts.*: kinds disk_short, disk_ok) when the free
// space falls under the reserve and when it is over it again. Tests: tests/e2e/test_failures.py
// test_a_disk_short_of_its_reserve_refuses_new_mail_and_keeps_what_it_took (a real small file
// system: MAIL FROM with and without SIZE, a message that fills it while it arrives, IMAP APPEND
// small and large, a web send, a case export; all accepted again once there is room, nothing refused archived),
// test_a_case_export_that_crosses_the_reserve_midway_stops_and_leaves_nothing,
// SmtpSpool.ASpillPastTheDiskReserveFailsAndFreesWhatWasKept, SmtpProtocol.MailAsksForRoomOnDiskWith
// TheDeclaredSize, Config.DiskReserveFollowsTheRoomForMailInFlight.
//
// Thread safety: everything (the io thread, IMAP sessions and the spool's pool ask at once).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace mailark::api {

class DiskReserve {
 public:
  // dirs: the folders whose file systems must keep the reserve (a missing one is passed over).
  DiskReserve(std::vector<std::string> dirs, std::uint64_t reserve_bytes) : dirs_(std::move(dirs)), reserve_(reserve_bytes) {}
  // True when `bytes` more would leave at least the reserve free. Always true with a reserve of 0, or
  // when the file system cannot be asked (logged). `door` ("smtp", "imap", "web", "spool") names who
  // asked in the log and in the metric mailark_disk_refusals_total{door}. The first refusal after a
  // time with room is logged as a warning, the return of room as a notice.
  bool room_for(std::uint64_t bytes, const char* door);
  std::uint64_t reserve() const { return reserve_; }
  // The least free space over the folders, and which folder has it (for /metrics); nothing when no
  // file system could be asked.
  std::optional<std::uint64_t> least_free(std::string* dir = nullptr) const;
  // Told when the free space falls under the reserve (short = true) and when it is over it again,
  // with the free bytes and the folder that has least; on the thread that asked. Set before use.
  using Change = std::function<void(bool short_now, std::uint64_t free, const std::string& dir)>;
  void on_change(Change f) { on_change_ = std::move(f); }

 private:
  std::vector<std::string> dirs_;
  std::uint64_t reserve_;
  std::atomic<bool> short_{false};   // the last answer found less than the reserve free
  std::atomic<bool> unknown_{false}; // the file system could not be asked (logged once)
  Change on_change_;
};

}  // namespace mailark::api
