// Fuzzes `mailark verify-export`, which reads an export handed over from outside (opposing counsel's
// copy, a court's): a zip read by libarchive, its manifest's JSON lines, base64 records, proofs and
// signed notes (engine/export.h). Hostile bytes must end in "does not check" or an error, never a
// crash, a leak or a read out of bounds; nothing but the seeds' own bytes can ever check.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/export.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/dev/shm/mailark-export-fuzz-" + std::to_string(::getpid()) + ".zip";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  // Every other input once with the signatures required (what users run), once without (so that the
  // manifest's lines, records, proofs and messages of hostile exports reach their parsers).
  auto rep = (size & 1) ? mailark::verify_export(path, "", nullptr) : mailark::verify_export_for_fuzzing(path);
  if (rep && rep->ok && (size & 1) && rep->messages > 0 && rep->origin.empty()) std::abort();
  std::remove(path.c_str());
  return 0;
}
