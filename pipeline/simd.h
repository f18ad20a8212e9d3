#pragma once
// Function multiversioning for the hot loops that are written for the auto-vectorizer
// (image resizing, the fused Adam step). The build targets baseline x86-64 (SSE2), so
// GCC compiles such a function once per listed instruction set plus the baseline and
// picks the best the CPU has when the program loads. Elsewhere it is a no-op.
//   TRANSFER_CLONES("avx512f", "avx2", "default") void kernel(...);

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TRANSFER_CLONES(...) __attribute__((target_clones(__VA_ARGS__)))
#else
#define TRANSFER_CLONES(...)
#endif
