// Small files mailark writes whole (index stubs, the pair words, checkpoints): atomically and durably.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

#include "common/result.h"

namespace mailark {

// Writes `text` to PATH.tmp, syncs it, renames it over `path` and syncs the folder: a reader sees the
// old file or the new one, never a part, and after a crash the new one if this returned ok.
// Errors: kIo naming the file.
Status write_file_atomically(const std::string& path, const std::string& text);

// Syncs a folder, so that the renames and new files in it survive a crash. Errors: kIo naming it.
Status sync_dir(const std::string& dir);

// Writes every byte to `fd`, again after EINTR and short writes. False on an error (errno says which)
// or a write of nothing.
bool write_all(int fd, std::string_view bytes);

// Reads exactly n bytes into p (blocking), again after EINTR and short reads. False at the end of
// the stream before n bytes, or on an error.
bool read_exact(int fd, char* p, std::size_t n);

// write_all for a socket: send(2) without SIGPIPE, so a peer that has gone is a false return, not a
// signal.
bool send_all(int fd, std::string_view bytes);

// The same against a deadline, for a socket to a worker process that may hang or die (engine/extract.h,
// scanner/scan_host.h): false when the deadline passes first, the peer has gone or an error occurs.
bool send_all_by(int fd, std::string_view bytes, std::chrono::steady_clock::time_point deadline);
// Reads exactly n bytes into `out` before the deadline; false as send_all_by (a peer that closed
// before n bytes included).
bool recv_all_by(int fd, std::string& out, std::size_t n, std::chrono::steady_clock::time_point deadline);

// The first max_bytes + 1 bytes of a file, or all of it when it is shorter (one byte past max_bytes
// tells the caller it is longer), whatever it is: a regular file, a pipe, a device without end
// (/dev/zero). Errors: kNotFound (nothing there), kInvalidArgument (a directory), kIo (it cannot be
// opened or read). Used for small files a user names: the server's configuration (api/config.cc), checkpoints
// and keys (tools/). Test: ConfigFile.* in tests/config_test.cc.
Result<std::string> read_file_head(const std::string& path, std::size_t max_bytes);

// A file's modification time in Unix seconds; 0 when it cannot be read (an import's last guess at
// when a message arrived).
std::int64_t file_mtime(const std::string& path);

// Bytes an unprivileged writer may still write on the file system holding `dir` (statvfs f_bavail);
// nothing when it cannot be asked.
std::optional<std::uint64_t> free_bytes(const std::string& dir);

// The least of free_bytes over `dirs` (folders that may sit on different file systems), and which
// folder has it in `where`; nothing when no file system could be asked. Used by api/disk_reserve.cc
// (the server's reserve) and tools/cmd_import.cc (an import's).
std::optional<std::uint64_t> least_free_bytes(const std::vector<std::string>& dirs, std::string* where = nullptr);

}  // namespace mailark
