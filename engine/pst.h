// Outlook PST files (personal folders, ANSI and Unicode), read through libpst.
//
// A PST keeps MAPI properties, not RFC 5322 bytes: each mail item is rebuilt as a message by
// write_converted_message (engine/message.h) from its internet headers when the store kept them
// (mail that came from outside), else from its properties, with its text and HTML bodies, its
// attachments and its embedded messages. What the archive stores is that rebuilt message; the record
// says where it came from (source "PATH#n", folder the item's folder path).
//
// libpst is a C library that trusts the file it reads. An import reads a PST in a child process
// (read_pst_in_child), so a damaged or hostile file that crashes libpst ends that file with an
// error naming what was read before, never the import (tests/e2e/test_pst.py
// test_a_damaged_pst_ends_that_file_not_the_import).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/limits.h"
#include "engine/sources.h"

namespace mailark {

// Whether the file starts with a PST's signature ("!BDN").
bool is_pst_file(const std::string& path);

// Every mail item of the PST at `path`, in folder order, goes to cb.on_message: origin "PATH#n" (the
// n-th mail item; what goes to on_error or on_skipped names "PATH#item 0x2044 (Inbox)" or
// "PATH#n = item 0x2044 (Inbox)"),
// folder its folder path below the store's top ("Inbox/Projects"; "%" and "/" inside a folder's
// name written "%25" and "%2F"), received_at its delivery time (else its sent time, else the file's
// mtime). Items that are not mail (contacts, appointments, tasks, journal entries, sticky notes) go
// to cb.on_skipped with what they are; an item libpst cannot read, or a rebuilt message larger than
// limits.max_message_bytes, to cb.on_error; a file libpst cannot open, to cb.on_error with why.
// Folders nest at most 64 deep and embedded messages 8 deep (deeper ones are left out and said so).
void read_pst(const std::string& path, const Limits& limits, const SourceCallbacks& cb);

// read_pst in a child process: `helper` is a command (argv) that runs write_pst_frames on the path
// appended to it (`mailark pst-read`); what it reports reaches cb as read_pst would have. A child
// that dies or writes what is not a frame ends the file with an error saying how far it got.
void read_pst_in_child(const std::vector<std::string>& helper, const std::string& path, const Limits& limits,
                       const SourceCallbacks& cb);

// The importer's side of the helper's output (untrusted: the child reads hostile files): each frame
// handed to cb until the end frame, EOF or what is not a frame. Fuzzed: fuzz/pst_fuzz.cc.
struct PstFrames {
  bool ended = false;       // the end frame was read
  std::uint64_t messages = 0;
  std::string bad;          // why the stream could not be read on, if so
};
PstFrames read_pst_frames(std::FILE* in, const std::string& path, const Limits& limits, const SourceCallbacks& cb);

// The helper's side: read_pst, each callback written to `fd` as a frame. Returns 0, or 1 when the
// frames could not be written.
int write_pst_frames(const std::string& path, const Limits& limits, int fd);

}  // namespace mailark
