// The web portal's static files (api/web/ui/), compiled into the binary by cmake/embed_assets.cmake.
#pragma once

#include <cstddef>
#include <string_view>

namespace mailark::api {

struct WebAsset {
  const char* content_type;
  const char* data;  // followed by a NUL byte
  std::size_t size;
};

// By file name ("index.html", "app.js", "openapi.json"); nothing for an unknown name.
const WebAsset* web_asset(std::string_view name);

}  // namespace mailark::api
