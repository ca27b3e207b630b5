#pragma once

#include <cstddef>

namespace mailark {

// Fills `out` with `n` bytes from the kernel's random number generator (getrandom(2), which blocks
// only until the generator is first seeded at boot). False when the kernel cannot give them; the
// caller reports it and makes nothing from the bytes.
[[nodiscard]] bool random_bytes(void* out, std::size_t n);

}  // namespace mailark
