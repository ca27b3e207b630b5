#include "common/exceptions.h"

#include <cxxabi.h>

#include <cstdlib>
#include <exception>
#include <typeinfo>

namespace mailark {
namespace {

std::string demangled(const std::type_info* t) {
  if (!t) return "unknown";
  int status = 0;
  char* name = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name ? name : t->name();
  std::free(name);
  return out;
}

}  // namespace

std::string describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& x) {
    return demangled(&typeid(x)) + ": " + x.what();
  } catch (...) {
    return "an exception of type " + demangled(abi::__cxa_current_exception_type());
  }
}

}  // namespace mailark
