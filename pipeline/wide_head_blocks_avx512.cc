// The wide-outputs kernels (wide_head_blocks.inc) built for AVX-512.
#include "pipeline/wide_head_blocks.h"

#include <algorithm>
#include <array>
#include <utility>

#include "pipeline/simd.h"

namespace pipeline::wide_blocks {

#if TRANSFER_INTRINSIC_KERNELS
namespace avx512 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")

// Blocks of 4 rows (or features) x 5 vectors of 16 outputs: 20 accumulators of the 32
// registers; per step 5 vector loads and 4 broadcasts for 20 fused multiply-adds, so the
// loads keep up with the FMA units from L2. (On two Zen 4 cores 8 x 2 blocks ran as fast
// in the forward but up to 10 % slower in the gradient; 4 x 4 blocks 10-20 % slower.)
namespace {
struct Isa {
  using Vec = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16, kRows = 4, kVectors = 5;
  // The gradient reads the batch rows in place: packing each strip first (as AVX2 must)
  // cost ~2 % of a 32-head step here (old/new alternating in one process, seven runs).
  static constexpr bool kPackStrips = false;
  static Mask mask(int64_t lanes) { return static_cast<Mask>((1u << lanes) - 1u); }
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec broadcast(float x) { return _mm512_set1_ps(x); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, Mask m, Vec v) { _mm512_mask_storeu_ps(p, m, v); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
};
}  // namespace

#include "pipeline/wide_head_blocks.inc"

#pragma GCC pop_options
}  // namespace avx512

const Kernels* avx512_kernels() { return &avx512::kKernels; }
#else
const Kernels* avx512_kernels() { return nullptr; }
#endif

}  // namespace pipeline::wide_blocks
