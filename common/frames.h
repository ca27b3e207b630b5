// Frames: how two mailark processes hand each other messages over a pipe or a socket. A frame is a
// kind byte, a field count byte, then each field as an 8-byte little-endian length and its bytes.
// Used between `import` and its PST reader (engine/pst.h) and between `import` and a running `serve`
// (engine/handoff.h). The reader trusts nothing: a field longer than its bound, more fields than its
// bound, or a stream that ends inside a frame is said so, never read on (fuzzed through
// fuzz/pst_fuzz.cc and fuzz/handoff_fuzz.cc).
#pragma once

#include <cstddef>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace mailark {

// The bytes of one frame. At most 255 fields.
std::string encode_frame(char kind, std::initializer_list<std::string_view> fields);

struct Frame {
  char kind = 0;
  std::vector<std::string> fields;
};

enum class FrameRead {
  kFrame,      // `out` holds the next frame
  kEnd,        // the stream ended where a frame would begin
  kTruncated,  // the stream ended inside a frame
  kTooLarge,   // a field longer than max_field bytes (nothing of it was read)
  kBad,        // more fields than max_fields
};

// Reads the next frame from `in`. Memory: at most max_fields * max_field bytes, whatever the stream says.
FrameRead read_frame(std::FILE* in, std::size_t max_field, std::size_t max_fields, Frame& out);

}  // namespace mailark
