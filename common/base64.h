// Base64 (RFC 4648 section 4) through OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock: strict decoding
// (only the alphabet, padding at the end, length a multiple of 4). Used for SASL (RFC 4616) and the
// scrypt hashes of engine/users.cc.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mailark {

std::string base64_encode(std::string_view bytes);
// `bytes` random bytes (OpenSSL's RAND_bytes) as unpadded base64url: session ids, API tokens.
std::string random_token(std::size_t bytes = 32);
// Nothing for anything that is not canonical base64 (or longer than max_input bytes).
std::optional<std::string> base64_decode(std::string_view text, std::size_t max_input = 1u << 20);

}  // namespace mailark
