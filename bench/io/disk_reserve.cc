// What asking for room on disk costs (api/disk_reserve.h): DiskReserve::room_for over the three
// folders the server asks about (the data folder, its archive/, its spool/), as SMTP asks once at
// MAIL and once per spill of a large message. Beside it, one SMTP message costs about a millisecond
// of the server's time (docs/BENCHMARKS.md, "SMTP with real mail").
//
//   build/bench/disk_reserve [DIR]      (DIR: a data folder; default a scratch folder in /tmp)
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "api/disk_reserve.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const std::string dir = argc > 1 ? argv[1] : (fs::temp_directory_path() / "mailark-disk-reserve-bench").string();
  fs::create_directories(dir + "/archive");
  fs::create_directories(dir + "/spool");
  mailark::api::DiskReserve reserve({dir, dir + "/archive", dir + "/spool"}, 1u << 20);
  constexpr int kRounds = 200000;
  int yes = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kRounds; ++i) yes += reserve.room_for(4096, "bench");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("room_for over 3 folders: %.2f us a call (%d of %d with room)\n", s / kRounds * 1e6, yes, kRounds);
  return 0;
}
