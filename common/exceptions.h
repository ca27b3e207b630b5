// What an exception being handled is, for a log line, whatever its type. Call only inside a catch
// block. indexer/index.h has a variant that also reads Xapian's errors (not std::exceptions).
#pragma once

#include <string>

namespace mailark {

// "TYPE: what()" for a std::exception, "an exception of type TYPE" for anything else (the type's
// name demangled).
std::string describe_current_exception();

}  // namespace mailark
