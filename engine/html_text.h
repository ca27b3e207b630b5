// Reduces HTML to the text a reader sees, for indexing. Not a renderer: tags become spaces or line
// breaks, script/style/head content is dropped, common entities are decoded. Linear time, no recursion,
// output never longer than the input plus a small constant per entity.
#pragma once

#include <string>
#include <string_view>

namespace mailark {

std::string html_to_text(std::string_view html);

}  // namespace mailark
