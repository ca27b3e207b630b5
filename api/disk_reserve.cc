#include "api/disk_reserve.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "common/file_util.h"
#include "engine/metrics.h"

namespace mailark::api {

namespace {
std::string mib(std::uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }
}  // namespace

std::optional<std::uint64_t> DiskReserve::least_free(std::string* dir) const { return least_free_bytes(dirs_, dir); }

bool DiskReserve::room_for(std::uint64_t bytes, const char* door) {
  if (reserve_ == 0) return true;
  std::string where;
  const std::optional<std::uint64_t> free = least_free(&where);
  if (!free) {
    if (!unknown_.exchange(true))
      spdlog::warn("the free space of {} cannot be read ({}): limits.disk_reserve_bytes is not applied",
                   dirs_.empty() ? std::string("the data folder") : dirs_.front(), std::strerror(errno));
    return true;
  }
  unknown_ = false;
  const bool below = *free < reserve_;
  if (below != short_.exchange(below)) {
    if (below)
      spdlog::warn("{} free in {}, under the reserve of {} (limits.disk_reserve_bytes): new mail is refused "
                   "(SMTP 452 4.3.1, IMAP NO [OVERQUOTA]) until there is room again", mib(*free), where, mib(reserve_));
    else
      spdlog::info("{} free in {} again, over the reserve of {}: new mail is accepted", mib(*free), where, mib(reserve_));
    if (on_change_) on_change_(below, *free, where);
  }
  if (!below && *free - reserve_ >= bytes) return true;
  metrics::counter("mailark_disk_refusals_total",
                   "Mail refused because writing it would leave less than limits.disk_reserve_bytes free, by door",
                   {{"door", door}})
      .inc();
  return false;
}

}  // namespace mailark::api
