// The GMime half of engine/message.h for the `mailark` CLI: each function forwards to mailark-mime.so
// (message.cc built as a module, engine/mime_api.h), loaded beside the binary on the first call. GMime
// brings GLib, GObject, GIO, gpgme and eight more libraries whose loading and constructors cost a
// command that parses no mail (a search of terms, fields or dates, `segments`, `queue`...) 157 of its
// 524 start-up page faults and a fifth of its whole time at 306,642 messages (docs/BENCHMARKS.md
// "GMime loaded on first parse; plain messages checked without it"); those commands never load them
// (tests/e2e/test_cli.py test_commands_that_parse_no_mail_do_not_load_gmime). The server, the tests
// and the fuzzers link message.cc itself.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "engine/mime_api.h"

namespace mailark {
namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "mailark: %s (mailark-mime.so is built and installed beside the mailark binary)\n",
               what.c_str());
  std::exit(70);
}

const MimeApi* load() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) fail("cannot find the running binary: " + ec.message());
  const std::string path = (self.parent_path() / "mailark-mime.so").string();
  // RTLD_LOCAL: GMime's symbols stay the module's; the module exports one function.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) fail(std::string("cannot load ") + ::dlerror());
  auto entry = reinterpret_cast<const MimeApi* (*)()>(::dlsym(handle, "mailark_mime_api"));
  if (!entry) fail(path + " has no mailark_mime_api");
  const MimeApi* api = entry();
  if (!api || api->layout != mime_api_layout()) fail(path + " is from another build of mailark");
  return api;  // never unloaded: GLib cannot be unloaded
}

const MimeApi& mime() {
  static const MimeApi* api = load();
  return *api;
}

}  // namespace

Result<ParsedMessage> parse_message(std::string_view raw, const Limits& limits, bool headers_only,
                                    bool extract_documents) {
  // Not mail at all is refused without loading GMime (as message.cc refuses it before parsing).
  if (std::string reason = not_mail_reason(raw); !reason.empty()) return make_error(ErrorCode::kBadInput, reason);
  return mime().parse_message(raw, limits, headers_only, extract_documents);
}
void set_text_by_second_decode_for_test(bool on) { mime().set_text_by_second_decode_for_test(on); }
std::string decode_part(std::string_view part, bool as_text, std::size_t max_bytes, bool* truncated) {
  return mime().decode_part(part, as_text, max_bytes, truncated);
}
std::string compose_message(const Draft& draft) { return mime().compose_message(draft); }
std::string write_converted_message(const ConvertedMessage& m) { return mime().write_converted_message(m); }
std::vector<Address> parse_address_list(std::string_view value, unsigned max, bool keep_groups,
                                        std::string_view charset) {
  return mime().parse_address_list(value, max, keep_groups, charset);
}
std::optional<MediaType> parse_content_type(std::string_view value, std::string_view charset) {
  return mime().parse_content_type(value, charset);
}
std::optional<Disposition> parse_content_disposition(std::string_view value, std::string_view charset) {
  return mime().parse_content_disposition(value, charset);
}
std::optional<std::int64_t> parse_date_value(std::string_view value) { return mime().parse_date_value(value); }
std::optional<std::int64_t> date_value_day(std::string_view value) { return mime().date_value_day(value); }
std::string decode_header_text(std::string_view value, std::string_view charset) {
  return mime().decode_header_text(value, charset);
}
std::string encode_phrase(std::string_view utf8) { return mime().encode_phrase(utf8); }
std::optional<std::string> seven_bit_message(std::string_view raw) { return mime().seven_bit_message(raw); }

}  // namespace mailark
