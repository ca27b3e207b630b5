#include "api/accept.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

namespace mailark::api {

asio::awaitable<void> AcceptBackoff::failed(const asio::error_code& ec) {
  const auto now = std::chrono::steady_clock::now();
  if (failures_++ == 0 || now - logged_ >= std::chrono::minutes(1)) {
    spdlog::warn("{}: accept: {} ({} failed in a row; trying again every {} ms, connections wait in the backlog)",
                 listener_, ec.message(), failures_, kAcceptPause.count());
    logged_ = now;
  }
  asio::steady_timer pause(co_await asio::this_coro::executor);
  pause.expires_after(kAcceptPause);
  asio::error_code ignored;
  co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
}

void AcceptBackoff::accepted() {
  if (failures_ == 0) return;
  spdlog::info("{}: accepting again after {} failed accepts", listener_, failures_);
  failures_ = 0;
}

std::uint64_t raise_open_file_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  return lim.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<std::uint64_t>(lim.rlim_cur);
}

}  // namespace mailark::api
