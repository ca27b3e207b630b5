// TLS material for the servers. The one translation point to OpenSSL's key and certificate API (the
// TLS sessions themselves go through Asio's OpenSSL wrapper in the servers).
#pragma once

#include <string>
#include <utility>

#include "common/result.h"

namespace mailark::api {

// Makes sure `dir` holds cert.pem and key.pem: a self-signed certificate for `hostname` (ECDSA P-256,
// valid ten years) is generated the first time; an existing pair is left alone. Returns their paths.
// The key file is created with mode 0600.
Result<std::pair<std::string, std::string>> ensure_self_signed(const std::string& dir, const std::string& hostname);

}  // namespace mailark::api
