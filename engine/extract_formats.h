// The parsers behind attachment text (engine/extract.h), run only inside the mailark-extract worker
// process (tools/mailark_extract.cc) and the fuzzers: never in a process that holds the archive.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/result.h"

namespace mailark::extract {

// The text of a PDF's pages (poppler), a page a paragraph. Errors: kUnsupported (not a PDF poppler
// reads; encrypted).
Result<std::string> pdf_text(std::string_view bytes, std::size_t max_text);

// The text of an Office Open XML (docx: the body, headers, footers, footnotes; xlsx: the shared
// strings; pptx: the slides in order) or OpenDocument file (content.xml), read from the zip in memory
// (libzip) with each part at most kMaxPartBytes unpacked and all of them at most kMaxUnpackedBytes (a
// zip bomb stops there). Errors: kUnsupported (a zip of neither kind), kLimit.
inline constexpr std::size_t kMaxPartBytes = 64u << 20;
inline constexpr std::size_t kMaxUnpackedBytes = 128u << 20;
Result<std::string> office_text(std::string_view zip, std::size_t max_text);

// The text of one XML part (libxml2, no network, no external entities, no entity expansion): every
// text node, paragraphs, table cells, tabs and line breaks kept apart by white space.
// Fuzzed: fuzz/extract_fuzz.cc.
std::string xml_text(std::string_view xml, std::size_t max_text);

}  // namespace mailark::extract
