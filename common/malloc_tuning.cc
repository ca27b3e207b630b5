#include "common/malloc_tuning.h"

#include <malloc.h>

namespace mailark {

void tune_malloc() {
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
  mallopt(M_TOP_PAD, 1 << 20);
  mallopt(M_MMAP_THRESHOLD, 512 << 10);
}

}  // namespace mailark
