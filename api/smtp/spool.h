// Where an SMTP session keeps the part of a message past the spill threshold while DATA arrives
// (ProtocolConfig::spill_bytes, limits.spill_bytes): an unnamed file in the data folder's spool/
// (O_TMPFILE: nothing is left behind by a crash; on a file system without it, a named file removed
// as soon as it is open). A server thus holds about sessions x spill_bytes of incoming mail in memory,
// not sessions x message size: 40 sessions each 20 MiB into DATA held 1,108-1,187 MB of the server's memory
// before, 74 MB after (bench/smtp/held_data.py; tests/e2e/test_serve.py
// test_large_messages_in_flight_are_kept_on_disk_not_in_memory).
//
// A write that fails (a full disk) is remembered until the next message starts, and read_back() then
// reports it: the server refuses that message with 452 4.3.1, never 250 (SmtpSpool.* tests;
// tests/e2e/test_serve.py test_a_spool_that_cannot_be_written_refuses_the_message_with_452).
//
// A spill that would leave less than the data folder's reserve free (api/disk_reserve.h) fails the
// same way, and what was kept of the message is freed at once (SmtpSpool.ASpillPastTheDiskReserveFails
// AndFreesWhatWasKept; tests/e2e/test_failures.py test_a_disk_short_of_its_reserve_refuses_new_mail_and_keeps_what_it_took).
//
// Thread safety: one session's. append() and read_back() may run on a pool thread, one at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "api/disk_reserve.h"
#include "common/result.h"

namespace mailark::api {

class Spool {
 public:
  // reserve: asked before each write (nothing: no reserve).
  explicit Spool(std::string dir, DiskReserve* reserve = nullptr) : dir_(std::move(dir)), reserve_(reserve) {}
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Keeps `bytes` at offset `at` of the message (smtp::Session::Output::spill_at; 0 starts a new
  // message and forgets the last). The file is opened on first use. A failure is kept for read_back.
  void append(std::uint64_t at, std::string_view bytes);
  // The whole message: the `spilled` bytes kept here, then `tail`. Errors: kIo (the write or read
  // failed: a full disk), kInternal (`spilled` is not what was kept).
  Result<std::string> read_back(std::uint64_t spilled, std::string_view tail);
  // Lets go of what is kept (the file's blocks are freed; the file stays open for the next message).
  void clear();
  std::uint64_t size() const { return size_; }

 private:
  void free_blocks();  // gives the kept bytes back to the file system (failed_ stays)

  std::string dir_;
  DiskReserve* reserve_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::optional<Error> failed_;
};

// Makes the spool folder and removes what a server killed on a file system without O_TMPFILE left
// in it. Errors: kIo naming the folder.
Status prepare_spool_dir(const std::string& dir);

}  // namespace mailark::api
