#include "pipeline/wide_head_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <vector>

#include "pipeline/batch_rows.h"
#include "pipeline/simd.h"

// The AVX-512 kernels where simd.h builds them (TRANSFER_AVX512_KERNELS); elsewhere BLAS.

namespace pipeline {
namespace {

constexpr const char* kKernel = "wide-outputs head kernel";

// The gradient's input features per strip: 16 floats, one cache line of every batch row,
// so that the four blocks of a strip take a row's line from L1.
constexpr int64_t kStrip = 16;

#if TRANSFER_AVX512_KERNELS
// A block: up to kRows rows (forward) or input features (gradient) by up to kVectors
// vectors of 16 outputs, 20 accumulators of the 32 registers; per step it loads kVectors
// weight (or g) vectors and broadcasts kRows scalars for 20 fused multiply-adds, so the
// loads keep up with the FMA units from L2. (On two Zen 4 cores 8 x 2 blocks ran as fast
// in the forward but up to 10 % slower in the gradient; 4 x 4 blocks 10-20 % slower.)
constexpr int64_t kRows = 4, kVectors = 5, kBlockOutputs = 16 * kVectors;
// The forward's features per pass over a thread's blocks: 1,024 keeps a block's rows and
// the weights' panel (1,024 x 80 floats, 320 KB) in L2. (256 to 4,096 were within 5 %.)
constexpr int64_t kDepth = 1024;
// The forward's rows per tile, each tile taken through every pass and output block before
// the next: 64 rows of a pass (256 KB) stay in L2 while every output block reads them (a
// training step's 128 rows are one tile a thread; a 1,024-row scoring batch is eight).
constexpr int64_t kTileRows = 64;

// Before each loop over a block's rows or vectors: unrolled completely, so that the
// accumulators live in registers (without it GCC kept them in memory, stored on every
// step: 37 GFLOP/s a core against ~100).
#define KEPT_IN_REGISTERS _Pragma("GCC unroll 16")

// The first `lanes` (1..16) lanes of a vector.
inline __mmask16 lane_mask(int64_t lanes) { return static_cast<__mmask16>((1u << lanes) - 1u); }

// z[q, 16v + l] for q < R rows (x[q], features k0..k1) and V vectors of outputs (the
// last masked by `tail`): one FMA chain per output, continued from z unless `first`,
// bias added after the last feature when `last`.
//   wt: the weights' row 0 at this block's first output (row stride n); z, bias likewise.
template <int R, int V>
TRANSFER_AVX512BW void linear_block(const float* const* x, int64_t k0, int64_t k1, const float* wt, int64_t n,
                                    const float* bias, float* z, __mmask16 tail, bool first, bool last) {
  const float* xq[R];
  KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) xq[q] = x[q];
  __m512 acc[R][V];
  if (first) {
    KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) {
      KEPT_IN_REGISTERS for (int v = 0; v < V; ++v) acc[q][v] = _mm512_setzero_ps();
    }
  } else {
    KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) {
      KEPT_IN_REGISTERS for (int v = 0; v < V - 1; ++v) acc[q][v] = _mm512_loadu_ps(z + q * n + 16 * v);
      acc[q][V - 1] = _mm512_maskz_loadu_ps(tail, z + q * n + 16 * (V - 1));
    }
  }
  for (int64_t k = k0; k < k1; ++k) {
    __m512 w[V];
    KEPT_IN_REGISTERS for (int v = 0; v < V - 1; ++v) w[v] = _mm512_loadu_ps(wt + k * n + 16 * v);
    w[V - 1] = _mm512_maskz_loadu_ps(tail, wt + k * n + 16 * (V - 1));
    KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) {
      const __m512 a = _mm512_set1_ps(xq[q][k]);
      KEPT_IN_REGISTERS for (int v = 0; v < V; ++v) acc[q][v] = _mm512_fmadd_ps(a, w[v], acc[q][v]);
    }
  }
  if (last) {
    KEPT_IN_REGISTERS for (int v = 0; v < V - 1; ++v) {
      const __m512 b = _mm512_loadu_ps(bias + 16 * v);
      KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) acc[q][v] = _mm512_add_ps(acc[q][v], b);
    }
    const __m512 b = _mm512_maskz_loadu_ps(tail, bias + 16 * (V - 1));
    KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) acc[q][V - 1] = _mm512_add_ps(acc[q][V - 1], b);
  }
  KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) {
    KEPT_IN_REGISTERS for (int v = 0; v < V - 1; ++v) _mm512_storeu_ps(z + q * n + 16 * v, acc[q][v]);
    _mm512_mask_storeu_ps(z + q * n + 16 * (V - 1), tail, acc[q][V - 1]);
  }
}

// out[q, 16v + l] = sum over the b rows r of x[r][c + q] g[r][16v + l], for q < R input
// features and V vectors of outputs (the last masked by `tail`): one FMA chain per output,
// rows in order.
//   g: row 0 at this block's first output (row stride n); out likewise.
template <int R, int V>
TRANSFER_AVX512BW void grad_block(const float* const* x, int64_t c, int64_t b, const float* g, int64_t n, float* out,
                                  __mmask16 tail) {
  __m512 acc[R][V];
  KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) {
    KEPT_IN_REGISTERS for (int v = 0; v < V; ++v) acc[q][v] = _mm512_setzero_ps();
  }
  for (int64_t r = 0; r < b; ++r) {
    __m512 w[V];
    KEPT_IN_REGISTERS for (int v = 0; v < V - 1; ++v) w[v] = _mm512_loadu_ps(g + r * n + 16 * v);
    w[V - 1] = _mm512_maskz_loadu_ps(tail, g + r * n + 16 * (V - 1));
    const float* xr = x[r] + c;
    KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) {
      const __m512 a = _mm512_set1_ps(xr[q]);
      KEPT_IN_REGISTERS for (int v = 0; v < V; ++v) acc[q][v] = _mm512_fmadd_ps(a, w[v], acc[q][v]);
    }
  }
  KEPT_IN_REGISTERS for (int q = 0; q < R; ++q) {
    KEPT_IN_REGISTERS for (int v = 0; v < V - 1; ++v) _mm512_storeu_ps(out + q * n + 16 * v, acc[q][v]);
    _mm512_mask_storeu_ps(out + q * n + 16 * (V - 1), tail, acc[q][V - 1]);
  }
}

// The block of R rows (or features) and V vectors, both chosen at run time: a table of
// the 4 x 5 instantiations.
template <template <int, int> class Kernel, int R, int... V>
constexpr auto block_row() {
  return std::array{&Kernel<R, V>::run...};
}

template <int R, int V>
struct LinearBlock {
  static void run(const float* const* x, int64_t k0, int64_t k1, const float* wt, int64_t n, const float* bias,
                  float* z, __mmask16 tail, bool first, bool last) {
    linear_block<R, V>(x, k0, k1, wt, n, bias, z, tail, first, last);
  }
};

template <int R, int V>
struct GradBlock {
  static void run(const float* const* x, int64_t c, int64_t b, const float* g, int64_t n, float* out, __mmask16 tail) {
    grad_block<R, V>(x, c, b, g, n, out, tail);
  }
};

template <template <int, int> class Kernel>
constexpr auto block_table() {
  return std::array{block_row<Kernel, 1, 1, 2, 3, 4, 5>(), block_row<Kernel, 2, 1, 2, 3, 4, 5>(),
                    block_row<Kernel, 3, 1, 2, 3, 4, 5>(), block_row<Kernel, 4, 1, 2, 3, 4, 5>()};
}
static_assert(kRows == 4 && kVectors == 5, "block_table lists the instantiations");

// The outputs j0.. of one block: its vectors and the last one's mask.
struct Outputs {
  int vectors;
  __mmask16 tail;
};
inline Outputs block_outputs(int64_t j0, int64_t n) {
  const int64_t count = std::min(kBlockOutputs, n - j0);
  const int64_t vectors = (count + 15) / 16;
  return {static_cast<int>(vectors), lane_mask(count - 16 * (vectors - 1))};
}

// z's rows begin..end: every output, features in passes of kDepth.
void linear_rows(int64_t begin, int64_t end, int64_t d, int64_t n, const float* const* x, const float* wt,
                 const float* bias, float* z) {
  static constexpr auto kTable = block_table<LinearBlock>();
  for (int64_t t0 = begin; t0 < end; t0 += kTileRows) {
    const int64_t t1 = std::min(end, t0 + kTileRows);
    for (int64_t k0 = 0; k0 == 0 || k0 < d; k0 += kDepth) {  // once with no features: z = bias
      const int64_t k1 = std::min(d, k0 + kDepth);
      for (int64_t j0 = 0; j0 < n; j0 += kBlockOutputs) {
        const Outputs o = block_outputs(j0, n);
        for (int64_t r = t0; r < t1; r += kRows) {
          const int64_t rows = std::min(kRows, t1 - r);
          kTable[rows - 1][o.vectors - 1](x + r, k0, k1, wt + j0, n, bias + j0, z + r * n + j0, o.tail, k0 == 0,
                                          k1 == d);
        }
      }
    }
  }
}

// The weight gradient's rows (input features) c0..c1, at most kStrip, into `out` (row c0
// there), every output.
void grad_strip(int64_t c0, int64_t c1, int64_t b, int64_t n, const float* const* x, const float* g, float* out) {
  static constexpr auto kTable = block_table<GradBlock>();
  for (int64_t j0 = 0; j0 < n; j0 += kBlockOutputs) {
    const Outputs o = block_outputs(j0, n);
    for (int64_t c = c0; c < c1; c += kRows) {
      const int64_t features = std::min(kRows, c1 - c);
      kTable[features - 1][o.vectors - 1](x, c, b, g + j0, n, out + (c - c0) * n + j0, o.tail);
    }
  }
}
#endif

// pipeline::Error unless g has a row for each of the batch's rows.
void check_batch_rows(const at::Tensor& g, const at::Tensor& x, const at::Tensor& rows) {
  const int64_t b = rows.defined() ? rows.numel() : x.size(0);
  if (g.dim() != 2 || g.size(0) != b) fail("{}: g must have a row for each of the batch's {} rows", kKernel, b);
}

// x's rows, or its chosen rows gathered (for BLAS), checked as the kernels check them.
at::Tensor gathered(const at::Tensor& x, const at::Tensor& rows) {
  batch_row_pointers(x, rows, kKernel);
  return rows.defined() ? x.index_select(0, rows.to(at::kLong)) : x;
}

// f(c0, c1, scratch) for every strip of kStrip features c0..c1 of d, the strips split
// over the threads (subnormals flushed there), each thread with `scratch_floats` floats of
// scratch of its own.
template <class F>
void for_each_strip(int64_t d, int64_t scratch_floats, const F& f) {
  at::parallel_for(0, (d + kStrip - 1) / kStrip, 1, [&](int64_t begin, int64_t end) {
    const FlushSubnormals flush;
    std::vector<float> scratch(static_cast<size_t>(scratch_floats));
    for (int64_t strip = begin; strip < end; ++strip) {
      const int64_t c0 = strip * kStrip;
      f(c0, std::min(d, c0 + kStrip), scratch.data());
    }
  });
}

}  // namespace

bool wide_outputs_own_kernels() {
#if TRANSFER_AVX512_KERNELS
  static const bool avx512 = has_avx512bw();
  return avx512;
#else
  return false;
#endif
}

at::Tensor wide_outputs_linear(const at::Tensor& x, const at::Tensor& weight_t, const at::Tensor& bias,
                               const at::Tensor& rows) {
  check_contiguous_float(weight_t, kKernel, "weight_t");
  check_contiguous_float(bias, kKernel, "bias");
  if (weight_t.size(0) != x.size(1) || bias.numel() != weight_t.size(1)) {
    fail("{}: weight_t [{}, {}] and bias [{}] do not fit rows of {} features", kKernel, weight_t.size(0),
         weight_t.size(1), bias.numel(), x.size(1));
  }
#if TRANSFER_AVX512_KERNELS
  if (wide_outputs_own_kernels()) {
    const std::vector<const float*> xs = batch_row_pointers(x, rows, kKernel);
    const int64_t b = static_cast<int64_t>(xs.size()), d = x.size(1), n = weight_t.size(1);
    at::Tensor z = at::empty({b, n}, x.options());
    const float* wt = weight_t.data_ptr<float>();
    const float* bp = bias.data_ptr<float>();
    float* zp = z.data_ptr<float>();
    // Over blocks of kRows rows, so that a thread's range starts on a block.
    at::parallel_for(0, (b + kRows - 1) / kRows, 1, [&](int64_t begin, int64_t end) {
      const FlushSubnormals flush;
      linear_rows(begin * kRows, std::min(b, end * kRows), d, n, xs.data(), wt, bp, zp);
    });
    return z;
  }
#endif
  return at::addmm(bias, gathered(x, rows), weight_t);
}

void wide_outputs_weight_grad(at::Tensor& grad_t, const at::Tensor& g, const at::Tensor& x, const at::Tensor& rows) {
  check_contiguous_float(grad_t, kKernel, "grad_t");
  check_contiguous_float(g, kKernel, "g");
  if (grad_t.size(0) != x.size(1) || grad_t.size(1) != g.size(1)) {
    fail("{}: grad_t [{}, {}] does not fit g's {} outputs and rows of {} features", kKernel, grad_t.size(0),
         grad_t.size(1), g.size(1), x.size(1));
  }
  check_batch_rows(g, x, rows);
#if TRANSFER_AVX512_KERNELS
  if (wide_outputs_own_kernels()) {
    const std::vector<const float*> xs = batch_row_pointers(x, rows, kKernel);
    const int64_t b = static_cast<int64_t>(xs.size()), d = x.size(1), n = g.size(1);
    const float* gp = g.data_ptr<float>();
    float* out = grad_t.data_ptr<float>();
    for_each_strip(d, 0, [&](int64_t c0, int64_t c1, float*) {
      grad_strip(c0, c1, b, n, xs.data(), gp, out + c0 * n);
    });
    return;
  }
#endif
  at::mm_out(grad_t, gathered(x, rows).t(), g);
}

void wide_outputs_weight_grad_strips(const at::Tensor& g, const at::Tensor& x, const at::Tensor& rows,
                                     const GradStrips& use) {
  check_contiguous_float(g, kKernel, "g");
  check_batch_rows(g, x, rows);
  const int64_t d = x.size(1), n = g.size(1);
#if TRANSFER_AVX512_KERNELS
  if (wide_outputs_own_kernels()) {
    const std::vector<const float*> xs = batch_row_pointers(x, rows, kKernel);
    const int64_t b = static_cast<int64_t>(xs.size());
    const float* gp = g.data_ptr<float>();
    // Each strip into the thread's scratch (20 KB for 320 outputs: L1), then to `use`.
    for_each_strip(d, kStrip * n, [&](int64_t c0, int64_t c1, float* strip_grad) {
      grad_strip(c0, c1, b, n, xs.data(), gp, strip_grad);
      use(c0, c1, strip_grad);
    });
    return;
  }
#endif
  at::Tensor grad_t = at::empty({d, n}, g.options());
  wide_outputs_weight_grad(grad_t, g, x, rows);
  const float* out = grad_t.data_ptr<float>();
  for_each_strip(d, 0, [&](int64_t c0, int64_t c1, float*) { use(c0, c1, out + c0 * n); });
}

}  // namespace pipeline
