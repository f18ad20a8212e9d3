#include "pipeline/memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>

namespace pipeline {

void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);         // large blocks from the heap, not fresh mappings
  mallopt(M_TRIM_THRESHOLD, -1);  // never give the heap's top back
#endif
}

void prefer_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = uintptr_t{2} << 20, begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + huge - 1) / huge * huge, last = (begin + bytes) / huge * huge;
  // Advice only: where the kernel has no huge pages to give, the memory stays as it is.
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace pipeline
