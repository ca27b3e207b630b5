#include "engine/extract_formats.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <zip.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>
#include <string>
#include <utility>
#include <vector>

namespace mailark::extract {
namespace {

void append(std::string& out, std::string_view text, std::size_t max_text) {
  if (out.size() >= max_text) return;
  out.append(text.substr(0, max_text - out.size()));
}

void separate(std::string& out, char sep) {
  if (!out.empty() && out.back() != '\n' && out.back() != ' ') out.push_back(sep);
}

// Elements that end a run of words: paragraphs and headings, table cells and rows, line breaks and
// tabs (w:, a:, text:, table: and the spreadsheet's si/c).
bool breaks_words(std::string_view name) {
  static const char* const kNames[] = {"p",   "h",   "br",  "tab", "cr",        "tc",         "tr",   "si",
                                       "c",   "td",  "row", "s",   "line-break", "table-cell", "list-item",
                                       "txbxContent"};
  return std::any_of(std::begin(kNames), std::end(kNames), [&](const char* n) { return name == n; });
}

void walk(xmlNode* node, std::string& out, std::size_t max_text, int depth) {
  for (xmlNode* n = node; n && out.size() < max_text; n = n->next) {
    if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
      if (n->content) append(out, reinterpret_cast<const char*>(n->content), max_text);
    } else if (n->type == XML_ELEMENT_NODE) {
      const std::string_view name = n->name ? reinterpret_cast<const char*>(n->name) : "";
      // Instruction text of fields (w:instrText) and deleted runs (w:delText) are not the document's words.
      if (name == "instrText" || name == "delText") continue;
      if (depth < 256) walk(n->children, out, max_text, depth + 1);
      if (breaks_words(name)) separate(out, name == "tab" || name == "c" || name == "tc" || name == "td" ? ' ' : '\n');
    }
  }
}

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};

// One entry, unpacked, at most `cap` bytes (its stated size is not trusted: reading stops there).
Result<std::string> read_entry(zip_t* z, zip_int64_t index, std::size_t cap) {
  zip_file_t* f = zip_fopen_index(z, static_cast<zip_uint64_t>(index), 0);
  if (!f) return make_error(ErrorCode::kUnsupported, std::string("an unreadable zip entry: ") + zip_strerror(z));
  std::string out;
  char buf[65536];
  zip_int64_t n;
  while ((n = zip_fread(f, buf, sizeof buf)) > 0) {
    if (out.size() + static_cast<std::size_t>(n) > cap) {
      zip_fclose(f);
      return make_error(ErrorCode::kLimit, "a part unpacks to more than " + std::to_string(cap >> 20) + " MiB");
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  zip_fclose(f);
  if (n < 0) return make_error(ErrorCode::kUnsupported, "a damaged zip entry");
  return out;
}

// "ppt/slides/slide12.xml" sorts after "slide2.xml".
std::pair<std::string, long> numbered(const std::string& name) {
  std::size_t end = name.rfind('.');
  std::size_t start = end;
  while (start > 0 && std::isdigit(static_cast<unsigned char>(name[start - 1]))) --start;
  long n = start < end ? std::strtol(name.substr(start, end - start).c_str(), nullptr, 10) : 0;
  return {name.substr(0, start), n};
}

}  // namespace

std::string xml_text(std::string_view xml, std::size_t max_text) {
  std::string out;
  if (xml.size() > static_cast<std::size_t>(INT32_MAX)) return out;
  // No network, no DTD loading, no entity substitution (an entity stays a reference), no errors printed.
  xmlDoc* doc = xmlReadMemory(xml.data(), static_cast<int>(xml.size()), nullptr, nullptr,
                              XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (!doc) return out;
  walk(xmlDocGetRootElement(doc), out, max_text, 0);
  xmlFreeDoc(doc);
  return out;
}

Result<std::string> office_text(std::string_view bytes, std::size_t max_text) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (!src) return make_error(ErrorCode::kUnsupported, "not a zip");
  std::unique_ptr<zip_t, ZipCloser> z(zip_open_from_source(src, ZIP_RDONLY, &error));
  if (!z) {
    zip_source_free(src);
    zip_error_fini(&error);
    return make_error(ErrorCode::kUnsupported, "not a zip libzip reads");
  }
  zip_error_fini(&error);
  const zip_int64_t entries = zip_get_num_entries(z.get(), 0);
  std::vector<std::pair<std::string, zip_int64_t>> parts;
  bool ooxml = false, odf = false;
  for (zip_int64_t i = 0; i < entries && i < 100000; ++i) {
    const char* n = zip_get_name(z.get(), static_cast<zip_uint64_t>(i), 0);
    if (!n) continue;
    const std::string name(n);
    if (name == "[Content_Types].xml") ooxml = true;
    if (name == "content.xml") odf = true;
    const bool word = name == "word/document.xml" || name == "word/footnotes.xml" ||
                      ((name.rfind("word/header", 0) == 0 || name.rfind("word/footer", 0) == 0) && name.size() > 4 &&
                       name.compare(name.size() - 4, 4, ".xml") == 0);
    const bool sheet = name == "xl/sharedStrings.xml";
    const bool slide = name.rfind("ppt/slides/slide", 0) == 0 && name.find('/', 11) == std::string::npos &&
                       name.size() > 4 && name.compare(name.size() - 4, 4, ".xml") == 0;
    if (word || sheet || slide || name == "content.xml") parts.emplace_back(name, i);
  }
  if (!ooxml && !odf) return make_error(ErrorCode::kUnsupported, "a zip that is neither an Office nor an OpenDocument file");
  std::sort(parts.begin(), parts.end(), [](const auto& a, const auto& b) {
    // The document's body first, then headers, footers and notes; slides in their order.
    auto rank = [](const std::string& n) { return n == "word/document.xml" || n == "content.xml" ? 0 : 1; };
    if (rank(a.first) != rank(b.first)) return rank(a.first) < rank(b.first);
    return numbered(a.first) < numbered(b.first);
  });
  std::string out;
  std::size_t unpacked = 0;
  for (const auto& [name, index] : parts) {
    if (out.size() >= max_text) break;
    const std::size_t cap = std::min(kMaxPartBytes, kMaxUnpackedBytes - unpacked);
    MAILARK_ASSIGN_OR_RETURN(std::string xml, read_entry(z.get(), index, cap));
    unpacked += xml.size();
    separate(out, '\n');
    append(out, xml_text(xml, max_text), max_text);
  }
  return out;
}

Result<std::string> pdf_text(std::string_view bytes, std::size_t max_text) {
  poppler::set_debug_error_function([](const std::string&, void*) {}, nullptr);
  std::unique_ptr<poppler::document> doc(
      poppler::document::load_from_raw_data(bytes.data(), static_cast<int>(std::min<std::size_t>(bytes.size(), INT32_MAX))));
  if (!doc) return make_error(ErrorCode::kUnsupported, "not a PDF poppler reads");
  if (doc->is_locked()) return make_error(ErrorCode::kUnsupported, "an encrypted PDF");
  std::string out;
  const int pages = doc->pages();
  for (int i = 0; i < pages && out.size() < max_text; ++i) {
    std::unique_ptr<poppler::page> page(doc->create_page(i));
    if (!page) continue;
    const std::vector<char> utf8 = page->text().to_utf8();
    separate(out, '\n');
    append(out, std::string_view(utf8.data(), utf8.size()), max_text);
  }
  return out;
}

}  // namespace mailark::extract
