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

// A loop body for the auto-vectorizer, forced inline into each wrapper that names an
// instruction set (TRANSFER_CLONES, TRANSFER_AVX512BW), so that it is vectorized for it.
#define TRANSFER_INLINE inline __attribute__((always_inline))

// AVX-512 with byte and word instructions (BW, VL, DQ) in 512-bit vectors, for a function
// called only when has_avx512bw(): GCC's target_clones cannot name these, and without
// them its AVX-512 clones fall back to 256-bit vectors for any loop that widens bytes.
// TRANSFER_INTRINSIC_KERNELS: 1 where hand-written x86 intrinsic kernels are built (the
// same compilers as these attributes; AVX-512 ones run only when has_avx512bw(), AVX2
// ones only when has_avx2_fma()), else 0.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TRANSFER_INTRINSIC_KERNELS 1
#include <immintrin.h>
#define TRANSFER_AVX512BW \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
inline bool has_avx512bw() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
inline bool has_avx2_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#else
#define TRANSFER_INTRINSIC_KERNELS 0
#define TRANSFER_AVX512BW
inline bool has_avx512bw() { return false; }
inline bool has_avx2_fma() { return false; }
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace pipeline {

// For its lifetime, the calling thread flushes subnormal float results to zero and
// reads subnormal inputs as zero (x86 MXCSR FTZ and DAZ), then restores the previous
// mode. Arithmetic on subnormals (below 1.2e-38) is many times slower on x86: a head's
// Adam moments for features that are almost always zero decay into that range within
// a few epochs (0.9^700 of a 1e-6 moment), and every later step crawled (measured: a
// 32-head sweep's epochs 5-10 took 3-4x epoch 1 on a cache of real images). Values
// that small are far below float32's resolution of anything they are added to, so
// flushing them changes no result that matters. Elsewhere (not x86) a no-op.
class FlushSubnormals {
 public:
#if defined(__x86_64__) || defined(__i386__)
  FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtzDaz); }
  ~FlushSubnormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFtzDaz = 0x8040;  // bit 15 FTZ, bit 6 DAZ
  unsigned saved_;
#else
  FlushSubnormals() = default;
#endif
 public:
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;
};

}  // namespace pipeline
