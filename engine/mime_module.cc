// The entry point of mailark-mime.so: message.cc's GMime functions as a table (engine/mime_api.h).
// Built with hidden visibility: this function is all the module exports, so its copies of message.cc
// and the helpers it is built with never bind to the loading binary's symbols of the same names.
#include "engine/mime_api.h"

extern "C" __attribute__((visibility("default"))) const mailark::MimeApi* mailark_mime_api() {
  using namespace mailark;
  static const MimeApi api = {
      mime_api_layout(),
      &parse_message,
      &set_text_by_second_decode_for_test,
      &decode_part,
      &compose_message,
      &write_converted_message,
      &parse_address_list,
      &parse_content_type,
      &parse_content_disposition,
      &parse_date_value,
      &date_value_day,
      &decode_header_text,
      &encode_phrase,
      &seven_bit_message,
  };
  return &api;
}
