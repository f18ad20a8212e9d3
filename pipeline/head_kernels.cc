#include "pipeline/head_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "pipeline/batch_rows.h"
#include "pipeline/error.h"
#include "pipeline/simd.h"

// Hand-written AVX-512 kernels where GCC's vectorizer falls short, where simd.h builds
// them (TRANSFER_INTRINSIC_KERNELS); elsewhere only the portable ones, which give the
// same bits.

// This file alone is built with -O3 -fno-math-errno -ffp-contract=off (CMakeLists.txt):
// the flags the kernels need to vectorize and to give the same bits in every clone
// apply to nothing else.

namespace pipeline {
namespace {

constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;  // torch.optim.Adam's defaults

// One element of torch.optim.Adam's update (weight decay as an L2 term added to the
// gradient), with its learning rate already divided by the first bias correction.
[[gnu::always_inline]] inline void adam_element(float& p, float g, float& m, float& v, float step_size, float decay,
                                               float inv_bias2_sqrt) {
  const float b1 = kBeta1, b2 = kBeta2, one_b1 = 1.0f - b1, one_b2 = 1.0f - b2, eps = kEps;
  const float gc = g + decay * p;
  const float mc = b1 * m + one_b1 * gc;
  const float vc = b2 * v + one_b2 * gc * gc;
  m = mc;
  v = vc;
  p -= step_size * mc / (std::sqrt(vc) * inv_bias2_sqrt + eps);
}

// One pass over parameter, gradient and both moments of rows begin..end, each row's
// elements with their own step size and weight decay: the row's (step[r], decay[r]) or,
// per_column, the column's (step[c], decay[c]). LibTorch's Adam does ~10 separate passes
// over the same memory, which dominated a 32-head sweep's time; fused, it is one pass.
// The loops must vectorize: this file is built with -fno-math-errno (otherwise every sqrt
// keeps a scalar errno branch and the loop stays scalar: 3.3 ms per 32-head step here,
// against 0.5 ms) and the kernel is cloned for AVX-512 and AVX2 (simd.h). Built without
// FMA contraction (CMakeLists.txt) and without reassociation, every clone gives the same
// bits, and a column's element the same as a row's. The arrays are distinct (__restrict):
// without it the per-column loop, with six arrays to check for overlap, stayed scalar
// (3.5 ms a 32-head step against 0.6).
template <class Grad, bool kLowCopy>
[[gnu::always_inline]] inline void adam_rows(int64_t rows, int64_t cols, float* __restrict p, const Grad* __restrict g,
                                            float* __restrict m, float* __restrict v, const float* __restrict step,
                                            const float* __restrict decay, bool per_column, float inv_bias2_sqrt,
                                            c10::BFloat16* __restrict low) {
  for (int64_t r = 0; r < rows; ++r) {
    float* pr = p + r * cols;
    const Grad* gr = g + r * cols;
    float* mr = m + r * cols;
    float* vr = v + r * cols;
    c10::BFloat16* lr = kLowCopy ? low + r * cols : nullptr;
    if (per_column) {
      for (int64_t c = 0; c < cols; ++c) {
        adam_element(pr[c], static_cast<float>(gr[c]), mr[c], vr[c], step[c], decay[c], inv_bias2_sqrt);
        if (kLowCopy) lr[c] = c10::BFloat16(pr[c]);
      }
    } else {
      const float step_r = step[r], decay_r = decay[r];
      for (int64_t c = 0; c < cols; ++c) {
        adam_element(pr[c], static_cast<float>(gr[c]), mr[c], vr[c], step_r, decay_r, inv_bias2_sqrt);
        if (kLowCopy) lr[c] = c10::BFloat16(pr[c]);
      }
    }
  }
}

TRANSFER_CLONES("avx512f", "avx2", "default")
void adam_kernel(int64_t rows, int64_t cols, float* __restrict p, const float* __restrict g, float* __restrict m,
                 float* __restrict v, const float* __restrict step, const float* __restrict decay, bool per_column,
                 float inv_bias2_sqrt) {
  adam_rows<float, false>(rows, cols, p, g, m, v, step, decay, per_column, inv_bias2_sqrt, nullptr);
}

// The same for bf16 products: the gradient read as bfloat16 (widened exactly) and the
// updated parameter also written rounded to bfloat16 (as Tensor::copy_ rounds: to
// nearest even), the next step's product operand, in the same pass.
TRANSFER_CLONES("avx512f", "avx2", "default")
void adam_kernel_low(int64_t rows, int64_t cols, float* __restrict p, const c10::BFloat16* __restrict g,
                     float* __restrict m, float* __restrict v, const float* __restrict step,
                     const float* __restrict decay, bool per_column, float inv_bias2_sqrt,
                     c10::BFloat16* __restrict low) {
  adam_rows<c10::BFloat16, true>(rows, cols, p, g, m, v, step, decay, per_column, inv_bias2_sqrt, low);
}

// pipeline::Error unless every operand of an Adam step fits param [R, N] float32: each
// of `like_param` contiguous, of param's size and of its dtype; lr and wd float32, one
// per row (or per column).
void check_adam(const at::Tensor& param, const std::vector<std::pair<const at::Tensor*, at::ScalarType>>& like_param,
                const at::Tensor& lr, const at::Tensor& wd, bool per_column) {
  const int64_t rows = param.dim() == 2 ? param.size(0) : -1, settings = per_column ? param.size(-1) : rows;
  bool fits = rows >= 0 && param.is_contiguous() && param.scalar_type() == at::kFloat;
  for (const auto& [t, dtype] : like_param) {
    fits = fits && t->numel() == param.numel() && t->is_contiguous() && t->scalar_type() == dtype;
  }
  for (const at::Tensor* t : {&lr, &wd}) {
    fits = fits && t->numel() == settings && t->is_contiguous() && t->scalar_type() == at::kFloat;
  }
  if (!fits) {
    fail("Adam step: the gradient, moments and settings do not fit a [R, N] float32 parameter ({} settings)",
         per_column ? "N" : "R");
  }
}

// An AdamStep over every row of param [R, N]: apply(adam, begin, end) on row ranges split
// over the threads, subnormals flushed there.
template <class Apply>
void adam_over_rows(const at::Tensor& param, const AdamStep& adam, const Apply& apply) {
  const int64_t rows = param.size(0), cols = param.numel() / std::max<int64_t>(rows, 1);
  // At least 16,384 elements a thread (a lone head's 10 rows of 4,096 split in two): the
  // batch's rows evict the moments every step, and two cores fetch them back faster.
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
    const FlushSubnormals flush;  // the moments of always-zero features decay into subnormals
    apply(adam, begin, end, begin * cols);
  });
}

// fused_adam_rows and fused_adam_columns.
void fused_adam(at::Tensor& param, const at::Tensor& grad, at::Tensor& m, at::Tensor& v, const at::Tensor& lr,
                const at::Tensor& wd, int64_t step, bool per_column) {
  check_adam(param, {{&grad, at::kFloat}, {&m, at::kFloat}, {&v, at::kFloat}}, lr, wd, per_column);
  const float* g = grad.data_ptr<float>();
  adam_over_rows(param, AdamStep(param, m, v, lr, wd, step, per_column),
                 [&](const AdamStep& adam, int64_t begin, int64_t end, int64_t offset) {
                   adam.apply(begin, end, g + offset);
                 });
}

constexpr int64_t kLanes = 32;  // the weight gradient's columns per block: vectors in flight

// The forward product's sums: each of z's sums runs over kSumLanes lanes, lane l adding
// x[i + l] * w[i + l] (rounded product, then the add) for i = 0, kSumLanes, ... in order;
// then the lanes are added in order, then the last d % kSumLanes products, then the bias.
// One AVX-512 vector of lanes: the AVX-512 kernel below keeps a sum in one register and
// gives the same bits as this portable one.
constexpr int64_t kSumLanes = 16;

// The end of a sum, shared by both kernels: its lanes in order, the tail, the bias.
[[gnu::always_inline]] inline float finish_sum(const float* lanes, const float* xr, const float* wj, int64_t body,
                                               int64_t d, float bias) {
  float sum = 0;
  for (int64_t l = 0; l < kSumLanes; ++l) sum += lanes[l];
  for (int64_t i = body; i < d; ++i) sum += xr[i] * wj[i];
  return sum + bias;
}

// z[r0 + q, j0 + p] = bias[j0 + p] + sum_i x[r0 + q, i] weight[j0 + p, i] for q < R,
// p < J: R rows and J outputs at once share their loads (the weights stream from L2, the
// rows from wherever they are). Each sum runs in the same order whatever R and J.
template <int R, int J>
[[gnu::always_inline]] inline void few_linear_block(int64_t r0, int64_t j0, int64_t d, int64_t n,
                                                   const float* const* x, const float* w, const float* bias,
                                                   float* z) {
  const int64_t body = d - d % kSumLanes;
  float lanes[R][J][kSumLanes] = {};
  for (int64_t i = 0; i < body; i += kSumLanes) {
    for (int q = 0; q < R; ++q) {
      const float* xr = x[r0 + q] + i;
      for (int p = 0; p < J; ++p) {
        const float* wj = w + (j0 + p) * d + i;
        for (int64_t l = 0; l < kSumLanes; ++l) lanes[q][p][l] += xr[l] * wj[l];
      }
    }
  }
  for (int q = 0; q < R; ++q) {
    for (int p = 0; p < J; ++p) {
      z[(r0 + q) * n + j0 + p] = finish_sum(lanes[q][p], x[r0 + q], w + (j0 + p) * d, body, d, bias[j0 + p]);
    }
  }
}

template <int R>
[[gnu::always_inline]] inline void few_linear_outputs(int64_t r0, int64_t d, int64_t n, const float* const* x,
                                                     const float* w, const float* bias, float* z) {
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) few_linear_block<R, 2>(r0, j, d, n, x, w, bias, z);
  for (; j < n; ++j) few_linear_block<R, 1>(r0, j, d, n, x, w, bias, z);
}

TRANSFER_CLONES("avx512f", "avx2", "default")
void few_linear_rows(int64_t begin, int64_t end, int64_t d, int64_t n, const float* const* x, const float* w,
                     const float* bias, float* z) {
  int64_t r = begin;
  for (; r + 4 <= end; r += 4) few_linear_outputs<4>(r, d, n, x, w, bias, z);
  for (; r < end; ++r) few_linear_outputs<1>(r, d, n, x, w, bias, z);
}

#if TRANSFER_INTRINSIC_KERNELS
// few_linear_block in AVX-512 intrinsics, the same sums in the same order (a lane is a
// vector element; products and adds apart, as this file is built without contraction):
// the same bits. Written by hand because GCC's vectorizer spilled 4 rows x 5 outputs of
// accumulators; in registers (20 of the 32) each step loads 4 row vectors and 5 weight
// vectors for 20 products: a 10-class head's forward pass on rows in cache ran at
// ~180 GFLOP/s on two Zen 4 cores, against ~100 for the portable kernel.
template <int R, int J>
TRANSFER_AVX512BW [[gnu::always_inline]] inline void few_linear_block_avx512(int64_t r0, int64_t j0, int64_t d,
                                                                           int64_t n, const float* const* x,
                                                                           const float* w, const float* bias,
                                                                           float* z) {
  static_assert(kSumLanes == 16, "one vector of 16 floats a sum");
  const int64_t body = d - d % kSumLanes;
  __m512 acc[R][J];
  for (int q = 0; q < R; ++q) {
    for (int p = 0; p < J; ++p) acc[q][p] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < body; i += kSumLanes) {
    __m512 xv[R];
    for (int q = 0; q < R; ++q) xv[q] = _mm512_loadu_ps(x[r0 + q] + i);
    for (int p = 0; p < J; ++p) {
      const __m512 wv = _mm512_loadu_ps(w + (j0 + p) * d + i);
      for (int q = 0; q < R; ++q) acc[q][p] = _mm512_add_ps(acc[q][p], _mm512_mul_ps(xv[q], wv));
    }
  }
  for (int q = 0; q < R; ++q) {
    for (int p = 0; p < J; ++p) {
      float lanes[kSumLanes];
      _mm512_storeu_ps(lanes, acc[q][p]);
      z[(r0 + q) * n + j0 + p] = finish_sum(lanes, x[r0 + q], w + (j0 + p) * d, body, d, bias[j0 + p]);
    }
  }
}

template <int R>
TRANSFER_AVX512BW [[gnu::always_inline]] inline void few_linear_outputs_avx512(int64_t r0, int64_t d, int64_t n,
                                                                             const float* const* x, const float* w,
                                                                             const float* bias, float* z) {
  int64_t j = 0;
  for (; j + 5 <= n; j += 5) few_linear_block_avx512<R, 5>(r0, j, d, n, x, w, bias, z);
  for (; j < n; ++j) few_linear_block_avx512<R, 1>(r0, j, d, n, x, w, bias, z);
}

TRANSFER_AVX512BW void few_linear_rows_avx512(int64_t begin, int64_t end, int64_t d, int64_t n,
                                              const float* const* x, const float* w, const float* bias, float* z) {
  int64_t r = begin;
  for (; r + 4 <= end; r += 4) few_linear_outputs_avx512<4>(r, d, n, x, w, bias, z);
  for (; r < end; ++r) few_linear_outputs_avx512<1>(r, d, n, x, w, bias, z);
}
#endif

// grad[j0 + q, c..c+width) = sum_r g[r, j0 + q] x[r, c..c+width) for q < J, the sum over
// the rows in order: J outputs at once share every load of a row's block.
template <int J>
[[gnu::always_inline]] inline void few_weight_grad_block(int64_t j0, int64_t c, int64_t width, int64_t b, int64_t d,
                                                        int64_t n, const float* g, const float* const* x, float* grad) {
  float lanes[J][kLanes] = {};
  if (width == kLanes) {  // a full block: a constant trip count, which vectorizes; the last block may be short
    for (int64_t r = 0; r < b; ++r) {
      const float* xr = x[r] + c;
      for (int q = 0; q < J; ++q) {
        const float gq = g[r * n + j0 + q];
        for (int64_t l = 0; l < kLanes; ++l) lanes[q][l] += gq * xr[l];
      }
    }
  } else {
    for (int64_t r = 0; r < b; ++r) {
      const float* xr = x[r] + c;
      for (int q = 0; q < J; ++q) {
        const float gq = g[r * n + j0 + q];
        for (int64_t l = 0; l < width; ++l) lanes[q][l] += gq * xr[l];
      }
    }
  }
  for (int q = 0; q < J; ++q) {
    float* out = grad + (j0 + q) * d + c;
    for (int64_t l = 0; l < width; ++l) out[l] = lanes[q][l];
  }
}

// How many blocks of 5 the weight gradient takes of n outputs (then blocks of 4, then
// single outputs), in as few passes over each block of rows as those sizes allow. Five
// at once: a 10-class head reads each block twice instead of four times (4, 4, 1, 1),
// and its 10 accumulators fit the AVX-512 registers; 8 or 12 outputs stay 4 + 4 (+ 4).
// transfer-head, one 10-class head on a 50,000 x 4,096 extracted cache, the best three
// of five runs in one sitting (a noisy 2-core AMD EPYC Zen 4): 1.39-1.66 s against
// 1.85-2.44 s with blocks of 4.
int64_t blocks_of_five(int64_t n) {
  int64_t best = 0, fewest = n + 1;
  for (int64_t fives = 0; 5 * fives <= n; ++fives) {
    const int64_t rest = n - 5 * fives, passes = fives + rest / 4 + rest % 4;
    if (passes < fewest) fewest = passes, best = fives;
  }
  return best;
}

constexpr int64_t kPrefetch = 256;  // columns: each row's next 1 KB, in whole cache lines

// The batch's rows lie anywhere in the split (read in place): every kPrefetch columns,
// ask for each row's next stretch at once instead of two lines per row at a time.
[[gnu::always_inline]] inline void prefetch_rows(int64_t c, int64_t begin, int64_t end, int64_t b,
                                                 const float* const* x) {
  if ((c - begin) % kPrefetch != 0) return;
  const int64_t stop = std::min(end, c + kPrefetch);
  for (int64_t r = 0; r < b; ++r) {
    for (int64_t i = c; i < stop; i += 16) __builtin_prefetch(x[r] + i);
  }
}

// All n outputs' gradient for columns [c, c + width): blocks of 5, then 4, then 1.
[[gnu::always_inline]] inline void weight_grad_outputs(int64_t fives, int64_t c, int64_t width, int64_t b, int64_t d,
                                                       int64_t n, const float* g, const float* const* x,
                                                       float* grad) {
  int64_t j = 0;
  for (int64_t k = 0; k < fives; ++k, j += 5) few_weight_grad_block<5>(j, c, width, b, d, n, g, x, grad);
  for (; j + 4 <= n; j += 4) few_weight_grad_block<4>(j, c, width, b, d, n, g, x, grad);
  for (; j < n; ++j) few_weight_grad_block<1>(j, c, width, b, d, n, g, x, grad);
}

// The weight gradient for the columns [begin, end) (a multiple of kLanes but the
// last): a block of kLanes columns of every batch row (16 KB at B = 128) stays in L1.
TRANSFER_CLONES("avx512f", "avx2", "default")
void few_weight_grad_columns(int64_t begin, int64_t end, int64_t b, int64_t d, int64_t n, const float* g,
                             const float* const* x, float* grad) {
  const int64_t fives = blocks_of_five(n);
  for (int64_t c = begin; c < end; c += kLanes) {
    prefetch_rows(c, begin, end, b, x);
    weight_grad_outputs(fives, c, std::min(kLanes, end - c), b, d, n, g, x, grad);
  }
}

#if TRANSFER_INTRINSIC_KERNELS
// few_weight_grad_block in AVX-512 intrinsics for J outputs of V vectors of columns: the
// same sums (each column's over the rows in order, product then add): the same bits. At
// 5 outputs x 64 columns, 20 accumulators stay in registers and each row costs 4 loads and
// 5 broadcasts for 20 products (GCC's vectorizer spilled that shape).
template <int J, int V>
TRANSFER_AVX512BW [[gnu::always_inline]] inline void few_weight_grad_block_avx512(int64_t j0, int64_t c, int64_t b,
                                                                                int64_t d, int64_t n, const float* g,
                                                                                const float* const* x, float* grad) {
  __m512 acc[J][V];
  for (int q = 0; q < J; ++q) {
    for (int v = 0; v < V; ++v) acc[q][v] = _mm512_setzero_ps();
  }
  for (int64_t r = 0; r < b; ++r) {
    __m512 xv[V];
    for (int v = 0; v < V; ++v) xv[v] = _mm512_loadu_ps(x[r] + c + 16 * v);
    for (int q = 0; q < J; ++q) {
      const __m512 gq = _mm512_set1_ps(g[r * n + j0 + q]);
      for (int v = 0; v < V; ++v) acc[q][v] = _mm512_add_ps(acc[q][v], _mm512_mul_ps(gq, xv[v]));
    }
  }
  for (int q = 0; q < J; ++q) {
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(grad + (j0 + q) * d + c + 16 * v, acc[q][v]);
  }
}

template <int V>
TRANSFER_AVX512BW [[gnu::always_inline]] inline void weight_grad_outputs_avx512(int64_t fives, int64_t c, int64_t b,
                                                                              int64_t d, int64_t n, const float* g,
                                                                              const float* const* x, float* grad) {
  int64_t j = 0;
  for (int64_t k = 0; k < fives; ++k, j += 5) few_weight_grad_block_avx512<5, V>(j, c, b, d, n, g, x, grad);
  for (; j + 4 <= n; j += 4) few_weight_grad_block_avx512<4, V>(j, c, b, d, n, g, x, grad);
  for (; j < n; ++j) few_weight_grad_block_avx512<1, V>(j, c, b, d, n, g, x, grad);
}

// few_weight_grad_columns with the AVX-512 blocks: 64 columns at a time, then 32, then
// the portable block for a last stretch under 32.
TRANSFER_AVX512BW void few_weight_grad_columns_avx512(int64_t begin, int64_t end, int64_t b, int64_t d, int64_t n,
                                                      const float* g, const float* const* x, float* grad) {
  const int64_t fives = blocks_of_five(n);
  for (int64_t c = begin; c < end;) {
    prefetch_rows(c, begin, end, b, x);
    if (c + 64 <= end) {
      weight_grad_outputs_avx512<4>(fives, c, b, d, n, g, x, grad);
      c += 64;
    } else if (c + 32 <= end) {
      weight_grad_outputs_avx512<2>(fives, c, b, d, n, g, x, grad);
      c += 32;
    } else {
      weight_grad_outputs(fives, c, end - c, b, d, n, g, x, grad);
      c = end;
    }
  }
}
#endif

// Whether to take the AVX-512 kernels: the CPU has them and the caller did not ask for
// the portable ones.
bool use_avx512(bool portable) {
#if TRANSFER_INTRINSIC_KERNELS
  static const bool avx512 = has_avx512bw();
  return avx512 && !portable;
#else
  return false;
#endif
}

constexpr const char* kKernel = "few-outputs head kernel";

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& rows,
                  bool portable) {
  check_contiguous_float(weight, kKernel, "weight");
  check_contiguous_float(bias, kKernel, "bias");
  const std::vector<const float*> xs = batch_row_pointers(x, rows, kKernel);
  const int64_t b = static_cast<int64_t>(xs.size()), d = x.size(1), n = weight.size(0);
  at::Tensor z = at::empty({b, n}, x.options());
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* zp = z.data_ptr<float>();
  [[maybe_unused]] const bool intrinsics = use_avx512(portable);  // unused without the AVX-512 kernels
  at::parallel_for(0, b, 8, [&](int64_t begin, int64_t end) {
    const FlushSubnormals flush;
#if TRANSFER_INTRINSIC_KERNELS
    if (intrinsics) return few_linear_rows_avx512(begin, end, d, n, xs.data(), wp, bp, zp);
#endif
    few_linear_rows(begin, end, d, n, xs.data(), wp, bp, zp);
  });
  return z;
}

void weight_grad(at::Tensor& grad, const at::Tensor& g, const at::Tensor& x, const at::Tensor& rows, bool portable) {
  check_contiguous_float(grad, kKernel, "grad");
  check_contiguous_float(g, kKernel, "g");
  const std::vector<const float*> xs = batch_row_pointers(x, rows, kKernel);
  const int64_t b = static_cast<int64_t>(xs.size()), d = x.size(1), n = g.size(1);
  const float* gp = g.data_ptr<float>();
  float* out = grad.data_ptr<float>();
  [[maybe_unused]] const bool intrinsics = use_avx512(portable);  // unused without the AVX-512 kernels
  // Over blocks of kLanes columns, so that a thread's range starts on a block.
  const int64_t blocks = (d + kLanes - 1) / kLanes;
  at::parallel_for(0, blocks, 4, [&](int64_t begin, int64_t end) {
    const FlushSubnormals flush;
    const int64_t first = begin * kLanes, last = std::min(d, end * kLanes);
#if TRANSFER_INTRINSIC_KERNELS
    if (intrinsics) return few_weight_grad_columns_avx512(first, last, b, d, n, gp, xs.data(), out);
#endif
    few_weight_grad_columns(first, last, b, d, n, gp, xs.data(), out);
  });
}

}  // namespace

at::Tensor few_outputs_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& rows) {
  return linear(x, weight, bias, rows, false);
}

at::Tensor few_outputs_linear_portable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return linear(x, weight, bias, {}, true);
}

void few_outputs_weight_grad(at::Tensor& grad, const at::Tensor& g, const at::Tensor& x, const at::Tensor& rows) {
  weight_grad(grad, g, x, rows, false);
}

void few_outputs_weight_grad_portable(at::Tensor& grad, const at::Tensor& g, const at::Tensor& x) {
  weight_grad(grad, g, x, {}, true);
}

AdamStep::AdamStep(at::Tensor& param, at::Tensor& m, at::Tensor& v, const at::Tensor& lr, const at::Tensor& wd,
                   int64_t step, bool per_column)
    : cols_(param.numel() / std::max<int64_t>(param.size(0), 1)),
      param_(param.data_ptr<float>()),
      m_(m.data_ptr<float>()),
      v_(v.data_ptr<float>()),
      decay_(wd.data_ptr<float>()),
      per_column_(per_column) {
  const double bias1 = 1.0 - std::pow(kBeta1, static_cast<double>(step));
  inv_bias2_sqrt_ = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(kBeta2, static_cast<double>(step))));
  // Each learning rate over the first bias correction, once per step, not per element.
  const float* lr_p = lr.data_ptr<float>();
  step_size_.resize(static_cast<size_t>(lr.numel()));
  for (size_t i = 0; i < step_size_.size(); ++i) step_size_[i] = static_cast<float>(lr_p[i] / bias1);
}

void AdamStep::apply(int64_t begin, int64_t end, const float* grad) const {
  const int64_t offset = begin * cols_, settings = per_column_ ? 0 : begin;
  adam_kernel(end - begin, cols_, param_ + offset, grad, m_ + offset, v_ + offset, step_size_.data() + settings,
              decay_ + settings, per_column_, inv_bias2_sqrt_);
}

void AdamStep::apply(int64_t begin, int64_t end, const c10::BFloat16* grad, c10::BFloat16* param_low) const {
  const int64_t offset = begin * cols_, settings = per_column_ ? 0 : begin;
  adam_kernel_low(end - begin, cols_, param_ + offset, grad, m_ + offset, v_ + offset, step_size_.data() + settings,
                  decay_ + settings, per_column_, inv_bias2_sqrt_, param_low + offset);
}

void fused_adam_rows(at::Tensor& param, const at::Tensor& grad, at::Tensor& m, at::Tensor& v,
                     const at::Tensor& row_lr, const at::Tensor& row_wd, int64_t step) {
  fused_adam(param, grad, m, v, row_lr, row_wd, step, false);
}

void fused_adam_rows_low(at::Tensor& param, const at::Tensor& grad, at::Tensor& m, at::Tensor& v,
                         const at::Tensor& row_lr, const at::Tensor& row_wd, int64_t step, at::Tensor& param_low) {
  check_adam(param, {{&grad, at::kBFloat16}, {&m, at::kFloat}, {&v, at::kFloat}, {&param_low, at::kBFloat16}}, row_lr,
             row_wd, false);
  const c10::BFloat16* g = grad.data_ptr<c10::BFloat16>();
  c10::BFloat16* low = param_low.data_ptr<c10::BFloat16>();
  adam_over_rows(param, AdamStep(param, m, v, row_lr, row_wd, step, false),
                 [&](const AdamStep& adam, int64_t begin, int64_t end, int64_t offset) {
                   adam.apply(begin, end, g + offset, low);
                 });
}

void fused_adam_columns(at::Tensor& param, const at::Tensor& grad, at::Tensor& m, at::Tensor& v,
                        const at::Tensor& column_lr, const at::Tensor& column_wd, int64_t step) {
  fused_adam(param, grad, m, v, column_lr, column_wd, step, true);
}

// d(mean cross-entropy)/d(logits) = (softmax - one_hot) / B for every head's C logits
// of every row, in one pass that also sums the bias gradient and scores the batch (the
// softmax's normaliser gives the loss for free). Written by hand: as LibTorch ops
// (softmax, scatter, divide, sum, log_softmax, argmax) it cost more than the update.
// logits [B, K*C] (C = classes per head) -> gradient [B, K*C]; accumulates bias_grad
// [K*C] float32 and scores (loss_sum [K] float64, correct [K] int64), all zeroed.
at::Tensor logits_grad(const at::Tensor& logits, const at::Tensor& labels, int64_t c, const at::Tensor& bias_grad,
                       const BatchScores& scores) {
  const int64_t b = logits.size(0), width = logits.size(1);
  at::Tensor grad = at::empty_like(logits);
  const float* in = logits.data_ptr<float>();
  float* out = grad.data_ptr<float>();
  float* bias = bias_grad.data_ptr<float>();
  double* loss_sum = scores.loss_sum.data_ptr<double>();
  int64_t* correct = scores.correct.data_ptr<int64_t>();
  const at::Tensor labels64 = labels.to(at::kLong).contiguous();
  const int64_t* y = labels64.data_ptr<int64_t>();
  const float inv_b = 1.0f / static_cast<float>(b);
  for (int64_t row = 0; row < b; ++row) {
    if (y[row] < 0 || y[row] >= c) fail("label {} of batch row {} is outside 0..{}", y[row], row, c - 1);
  }
  // Heads are independent: split them over the threads (a sweep's 32 heads halve this
  // pass on two cores; one head stays on the calling thread).
  at::parallel_for(0, width / c, 1, [&](int64_t head_begin, int64_t head_end) {
    const FlushSubnormals flush;  // exp() of logits far below the top one
    for (int64_t k = head_begin; k < head_end; ++k) {
      const int64_t head = k * c;
      for (int64_t row = 0; row < b; ++row) {
        const float* l = in + row * width + head;
        float* g = out + row * width + head;
        int64_t best = 0;
        for (int64_t j = 1; j < c; ++j) best = l[j] > l[best] ? j : best;
        const float top = l[best];
        float total = 0;
        for (int64_t j = 0; j < c; ++j) total += (g[j] = std::exp(l[j] - top));
        // -log softmax(l)[y]; NaN when a logit is not finite, which stops the run.
        loss_sum[k] += std::log(static_cast<double>(total)) + top - l[y[row]];
        correct[k] += best == y[row];
        const float scale = inv_b / total;
        for (int64_t j = 0; j < c; ++j) g[j] *= scale;
        g[y[row]] -= inv_b;
        for (int64_t j = 0; j < c; ++j) bias[head + j] += g[j];
      }
    }
  });
  return grad;
}


}  // namespace pipeline
