// The fuzz input after its first byte, fed in chunks of 1 to 61 bytes (the first byte chooses the
// size), as a socket hands bytes over: each(chunk, fed) after each chunk, fed being the bytes fed so
// far; each returns false to stop.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mailark::fuzz {

template <typename Each>
void feed_in_chunks(const std::uint8_t* data, std::size_t size, Each&& each) {
  if (size < 1) return;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t step = 1 + data[0] % 61;
  for (std::size_t pos = 0; pos < in.size();) {
    const std::size_t n = std::min(step, in.size() - pos);
    const std::string_view chunk = in.substr(pos, n);
    pos += n;
    if (!each(chunk, pos)) return;
  }
}

}  // namespace mailark::fuzz
