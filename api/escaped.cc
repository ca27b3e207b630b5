#include "api/escaped.h"

#include <spdlog/spdlog.h>

#include "indexer/index.h"

namespace mailark::api {

std::string describe_escaped(std::exception_ptr e) {
  if (!e) return {};
  try {
    std::rethrow_exception(e);
  } catch (...) {
    return indexer::describe_current_exception();
  }
}

void log_escaped(const char* who, std::exception_ptr e) {
  if (e) spdlog::error("{}: {}", who, describe_escaped(e));
}

}  // namespace mailark::api
