// The wide-outputs kernels (wide_head_blocks.inc) built for AVX2 with FMA: CPUs without
// AVX-512 (most before 2017, many desktop ones since).
#include "pipeline/wide_head_blocks.h"

#include <algorithm>
#include <array>
#include <utility>

#include "pipeline/simd.h"

namespace pipeline::wide_blocks {

#if TRANSFER_INTRINSIC_KERNELS
namespace avx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma")

// Blocks of 4 rows (or features) x 3 vectors of 8 outputs: 12 accumulators, 3 weight
// vectors and a broadcast in the 16 registers.
namespace {
struct Isa {
  using Vec = __m256;
  using Mask = __m256i;
  static constexpr int kLanes = 8, kRows = 4, kVectors = 3;
  // The gradient packs each strip of the batch rows first (wide_head_blocks.inc
  // grad_strip): in place, 116-139 GFLOP/s on Zen 4; packed, 163-191.
  static constexpr bool kPackStrips = true;
  static Mask mask(int64_t lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(lanes)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec broadcast(float x) { return _mm256_set1_ps(x); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec load(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, Mask m, Vec v) { _mm256_maskstore_ps(p, m, v); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
};
}  // namespace

#include "pipeline/wide_head_blocks.inc"

#pragma GCC pop_options
}  // namespace avx2

const Kernels* avx2_kernels() { return &avx2::kKernels; }
#else
const Kernels* avx2_kernels() { return nullptr; }
#endif

}  // namespace pipeline::wide_blocks
