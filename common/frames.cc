#include "common/frames.h"

#include <cstdint>

namespace mailark {

std::string encode_frame(char kind, std::initializer_list<std::string_view> fields) {
  std::size_t total = 2;
  for (std::string_view f : fields) total += 8 + f.size();
  std::string out;
  out.reserve(total);
  out.push_back(kind);
  out.push_back(static_cast<char>(fields.size()));
  for (std::string_view f : fields) {
    std::uint64_t n = f.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    out.append(f);
  }
  return out;
}

FrameRead read_frame(std::FILE* in, std::size_t max_field, std::size_t max_fields, Frame& out) {
  const int kind = std::fgetc(in);
  if (kind == EOF) return FrameRead::kEnd;
  const int count = std::fgetc(in);
  if (count == EOF) return FrameRead::kTruncated;
  if (static_cast<std::size_t>(count) > max_fields) return FrameRead::kBad;
  out.kind = static_cast<char>(kind);
  out.fields.assign(static_cast<std::size_t>(count), {});
  for (auto& f : out.fields) {
    unsigned char len[8];
    if (std::fread(len, 1, 8, in) != 8) return FrameRead::kTruncated;
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    if (n > max_field) return FrameRead::kTooLarge;
    f.resize(static_cast<std::size_t>(n));
    if (n > 0 && std::fread(f.data(), 1, f.size(), in) != f.size()) return FrameRead::kTruncated;
  }
  return FrameRead::kFrame;
}

}  // namespace mailark
