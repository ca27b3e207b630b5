// Fuzzes what mailark's own code does around attachment text (engine/extract.h): the parent's reading
// of a worker's response header (the worker reads hostile documents, so what it says is untrusted),
// and the worker's Office/OpenDocument reader (libzip, then libxml2 over each part, then the walk that
// collects the words). PDF text (poppler) runs only in the worker process and is not fuzzed here: a
// document that crashes it costs that attachment its text (tests/extract_test.cc
// Extract.AWorkerThatDiesOrHangsCostsOnlyThatAttachment).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/extract.h"
#include "engine/extract_formats.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      (void)mailark::parse_response_header(in.substr(0, 5), 1u << 20);
      break;
    case 1:
      (void)mailark::extract::xml_text(in, 1u << 20);
      break;
    default:
      (void)mailark::extract::office_text(in, 1u << 20);
      break;
  }
  return 0;
}
