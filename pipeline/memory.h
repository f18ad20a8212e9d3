#pragma once
// How the process's memory is laid out for the stages' hot loops: freed memory kept for
// the next batch, and large tables in 2 MB pages. Advice to the C library and the
// kernel only: nothing here changes what a program computes. Linux/glibc; elsewhere
// no-ops.

#include <cstddef>

namespace pipeline {

// Keeps memory the process frees for its next use instead of returning it to the
// system (glibc: no mmap for large blocks, no trimming). A model's activations are
// freed after every batch; returned, the next batch pays page faults for them again
// (measured: the bf16 AlexNet forward pass ran 15 % slower inside transfer-extract than
// alone, and at its bare speed with this). The process then stays at its peak memory,
// which a stage that runs batch after batch reaches anyway. Process-wide; idempotent.
void keep_freed_memory();

// Asks the system to back [data, data + bytes) with 2 MB pages where it can (Linux
// transparent huge pages, "madvise" mode included), for a large table read at random
// rows: a feature cache's 16 KB rows each cross four 4 KB pages, and every page is a TLB
// miss (in a VM, a two-level page walk). Call it before the memory is first written;
// only the whole 2 MB pages inside the range are advised. Thread-safe.
void prefer_huge_pages(void* data, size_t bytes);

}  // namespace pipeline
