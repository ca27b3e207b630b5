// TLS material for the servers. The one translation point to OpenSSL's key and certificate API (the
// TLS sessions themselves go through Asio's OpenSSL wrapper in the servers).
#pragma once

#include <asio/ssl.hpp>
#include <string>
#include <utility>

#include "common/result.h"

namespace mailark::api {

// Makes sure `dir` holds cert.pem and key.pem: a self-signed certificate for `hostname` (ECDSA P-256,
// valid ten years) is generated the first time; an existing pair is left alone. Returns their paths.
// The key file is created with mode 0600.
Result<std::pair<std::string, std::string>> ensure_self_signed(const std::string& dir, const std::string& hostname);

// Loads a PEM certificate chain and its private key into a server's TLS context, and checks that the
// key is the certificate's (OpenSSL takes a key of another certificate and drops the certificate,
// so the first handshake would fail rather than the start). For `serve` and `serve --check`
// (tests/e2e/test_serve.py test_serve_check_reads_the_configuration_beside_a_running_server).
Status use_server_certificate(asio::ssl::context& ssl, const std::string& cert, const std::string& key);

}  // namespace mailark::api
