// The GMime half of the message model (engine/message.h, the functions message.cc defines) as a table
// of function pointers: what the module mailark-mime.so (message.cc and engine/mime_module.cc) hands to
// the `mailark` CLI's loader (engine/message_loader.cc). The module is built with the binary and
// installed beside it; `layout` catches a module from another build, whose structures could differ.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/message.h"

namespace mailark {

struct MimeApi {
  std::uint64_t layout;  // mime_api_layout() of the build that made the table
  Result<ParsedMessage> (*parse_message)(std::string_view, const Limits&, bool, bool);
  void (*set_text_by_second_decode_for_test)(bool);
  std::string (*decode_part)(std::string_view, bool, std::size_t, bool*);
  std::string (*compose_message)(const Draft&);
  std::string (*write_converted_message)(const ConvertedMessage&);
  std::vector<Address> (*parse_address_list)(std::string_view, unsigned, bool, std::string_view);
  std::optional<MediaType> (*parse_content_type)(std::string_view, std::string_view);
  std::optional<Disposition> (*parse_content_disposition)(std::string_view, std::string_view);
  std::optional<std::int64_t> (*parse_date_value)(std::string_view);
  std::optional<std::int64_t> (*date_value_day)(std::string_view);
  std::string (*decode_header_text)(std::string_view, std::string_view);
  std::string (*encode_phrase)(std::string_view);
  std::optional<std::string> (*seven_bit_message)(std::string_view);
};

// Bump kMimeApiVersion when a function's meaning changes with the same types; sizes catch the rest.
inline constexpr std::uint64_t kMimeApiVersion = 2;
constexpr std::uint64_t mime_api_layout() {
  std::uint64_t h = kMimeApiVersion;
  for (std::uint64_t v : {sizeof(MimeApi), sizeof(ParsedMessage), sizeof(MimePart), sizeof(Address), sizeof(Limits),
                          sizeof(Draft), sizeof(ComposeAttachment), sizeof(ConvertedMessage),
                          sizeof(ConvertedAttachment), sizeof(MediaType), sizeof(Disposition),
                          sizeof(Result<ParsedMessage>)}) {
    h = h * 1000003 + v;
  }
  return h;
}

}  // namespace mailark

// The module's one exported symbol.
extern "C" const mailark::MimeApi* mailark_mime_api();
