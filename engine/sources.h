// Import sources: Maildir folders, mbox files, Outlook PST files (engine/pst.h), single messages, and
// directories of them.
//
// walk_sources streams messages one at a time (an mbox is never read whole), so memory stays bounded
// by Limits::max_message_bytes whatever the input. Every input file ends up in exactly one callback:
// on_message for each message it holds, or on_error with a reason.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/limits.h"
#include "common/result.h"

namespace mailark {

struct SourceMessage {
  std::string origin;            // path, plus "#n" for the n-th message of an mbox
  std::string raw;               // the message bytes (an mbox "From " line is not included)
  std::int64_t received_at = 0;  // what the file says: mbox From_ date, Maildir file name, or mtime
  std::string mail_from;         // envelope sender from an mbox From_ line, if any
  std::string file;              // the file it came from (origin without "#n")
  std::string folder;            // the folder inside the file, for stores that have them (PST)
};

struct SourceCallbacks {
  std::function<void(SourceMessage&&)> on_message;
  std::function<void(const std::string& origin, const std::string& reason)> on_error;
  // What is part of a mail store but is no message (Maildir metadata files, a PST's contacts and
  // appointments): counted and said, not errors.
  std::function<void(const std::string& origin, const std::string& what)> on_skipped;
  // A command that reads PST files in a child process (engine/pst.h read_pst_in_child); empty: read
  // in this process.
  std::vector<std::string> pst_helper;
  // Asked before each file, each message of an mbox and each item of a PST (one read by a child is
  // stopped at once): true ends the walk there (an import that cannot go on: its disk is full).
  // Empty: never. Tests: Pst.AStopEndsTheReadingThere, Sources.* (mbox).
  std::function<bool()> stop;
};

// Errors only for a PATH that does not exist at all (then nothing was walked); per-file problems go to
// on_error and the walk goes on.
Status walk_sources(const std::vector<std::string>& paths, const Limits& limits, const SourceCallbacks& cb);

}  // namespace mailark
