// Secrets mailark keeps in the data folder (the admin listener's token, the probes' HMAC key): one
// line of hex in a file only its owner reads.
#pragma once

#include <string>

#include "common/result.h"

namespace mailark {

// Reads the first line of `path` (trailing spaces and CR dropped). When the file does not exist,
// makes a new secret (`bytes` random bytes, as hex), writes it with mode 0600 (O_EXCL: two processes
// never both write one) and returns it. A line shorter than min_length is an error (kInvalidArgument)
// naming the file. Errors: kIo.
Result<std::string> read_or_create_secret(const std::string& path, std::size_t bytes, std::size_t min_length);

}  // namespace mailark
