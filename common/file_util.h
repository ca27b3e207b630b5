// Small files mailark writes whole (index stubs, the pair words, checkpoints): atomically and durably.
#pragma once

#include <string>

#include "common/result.h"

namespace mailark {

// Writes `text` to PATH.tmp, syncs it, renames it over `path` and syncs the folder: a reader sees the
// old file or the new one, never a part, and after a crash the new one if this returned ok.
// Errors: kIo naming the file.
Status write_file_atomically(const std::string& path, const std::string& text);

}  // namespace mailark
