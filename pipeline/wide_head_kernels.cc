#include "pipeline/wide_head_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "pipeline/batch_rows.h"
#include "pipeline/simd.h"
#include "pipeline/wide_head_blocks.h"

// The register-blocked kernels where this CPU and build have them (wide_head_blocks.h);
// elsewhere, or when asked, BLAS.

namespace pipeline {
namespace {

constexpr const char* kKernel = "wide-outputs head kernel";
using wide_blocks::kStrip;

// A set's kernels where the build has them and the CPU can run them, else nullptr.
const wide_blocks::Kernels* blocks_for(WideKernels kernels) {
  switch (kernels) {
    case WideKernels::avx512:
      return has_avx512bw() ? wide_blocks::avx512_kernels() : nullptr;
    case WideKernels::avx2:
      return has_avx2_fma() ? wide_blocks::avx2_kernels() : nullptr;
    case WideKernels::blas:
      break;
  }
  return nullptr;
}

std::atomic<WideKernels>& chosen() {
  static std::atomic<WideKernels> kernels{wide_kernels_available(WideKernels::avx512) ? WideKernels::avx512
                                          : wide_kernels_available(WideKernels::avx2) ? WideKernels::avx2
                                                                                      : WideKernels::blas};
  return kernels;
}

// The chosen set's kernels; nullptr: BLAS.
const wide_blocks::Kernels* blocks() { return blocks_for(chosen().load(std::memory_order_relaxed)); }

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

const char* wide_kernels_name(WideKernels kernels) {
  switch (kernels) {
    case WideKernels::avx512:
      return "avx512";
    case WideKernels::avx2:
      return "avx2";
    case WideKernels::blas:
      break;
  }
  return "blas";
}

bool wide_kernels_available(WideKernels kernels) {
  return kernels == WideKernels::blas || blocks_for(kernels) != nullptr;
}

WideKernels wide_outputs_kernels() { return chosen().load(std::memory_order_relaxed); }

void use_wide_outputs_kernels(WideKernels kernels) {
  if (!wide_kernels_available(kernels)) {
    fail("{}: this CPU or build has no {} kernels", kKernel, wide_kernels_name(kernels));
  }
  chosen().store(kernels, std::memory_order_relaxed);
}

at::Tensor wide_outputs_linear(const at::Tensor& x, const at::Tensor& weight_t, const at::Tensor& bias,
                               const at::Tensor& rows) {
  check_contiguous_float(weight_t, kKernel, "weight_t");
  check_contiguous_float(bias, kKernel, "bias");
  if (weight_t.size(0) != x.size(1) || bias.numel() != weight_t.size(1)) {
    fail("{}: weight_t [{}, {}] and bias [{}] do not fit rows of {} features", kKernel, weight_t.size(0),
         weight_t.size(1), bias.numel(), x.size(1));
  }
  if (const wide_blocks::Kernels* own = blocks()) {
    const std::vector<const float*> xs = batch_row_pointers(x, rows, kKernel);
    const int64_t b = static_cast<int64_t>(xs.size()), d = x.size(1), n = weight_t.size(1);
    at::Tensor z = at::empty({b, n}, x.options());
    const float* wt = weight_t.data_ptr<float>();
    const float* bp = bias.data_ptr<float>();
    float* zp = z.data_ptr<float>();
    // Over blocks of rows, so that a thread's range starts on a block.
    const int64_t block = own->rows_per_block;
    at::parallel_for(0, (b + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
      const FlushSubnormals flush;
      own->linear_rows(begin * block, std::min(b, end * block), d, n, xs.data(), wt, bp, zp);
    });
    return z;
  }
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
  if (const wide_blocks::Kernels* own = blocks()) {
    const std::vector<const float*> xs = batch_row_pointers(x, rows, kKernel);
    const int64_t b = static_cast<int64_t>(xs.size()), d = x.size(1), n = g.size(1);
    const float* gp = g.data_ptr<float>();
    float* out = grad_t.data_ptr<float>();
    for_each_strip(d, kStrip * b, [&](int64_t c0, int64_t c1, float* packed) {
      own->grad_strip(c0, c1, b, n, xs.data(), gp, out + c0 * n, packed);
    });
    return;
  }
  at::mm_out(grad_t, gathered(x, rows).t(), g);
}

void wide_outputs_weight_grad_strips(const at::Tensor& g, const at::Tensor& x, const at::Tensor& rows,
                                     const GradStrips& use) {
  check_contiguous_float(g, kKernel, "g");
  check_batch_rows(g, x, rows);
  const int64_t d = x.size(1), n = g.size(1);
  if (const wide_blocks::Kernels* own = blocks()) {
    const std::vector<const float*> xs = batch_row_pointers(x, rows, kKernel);
    const int64_t b = static_cast<int64_t>(xs.size());
    const float* gp = g.data_ptr<float>();
    // Each strip into the thread's scratch (20 KB for 320 outputs: L1), then to `use`; the
    // batch rows' part packed after it.
    for_each_strip(d, kStrip * (n + b), [&](int64_t c0, int64_t c1, float* scratch) {
      own->grad_strip(c0, c1, b, n, xs.data(), gp, scratch, scratch + kStrip * n);
      use(c0, c1, scratch);
    });
    return;
  }
  // BLAS: the whole gradient, then handed on by strips.
  const at::Tensor grad_t = at::mm(gathered(x, rows).t(), g);
  const float* out = grad_t.data_ptr<float>();
  for_each_strip(d, 0, [&](int64_t c0, int64_t c1, float*) { use(c0, c1, out + c0 * n); });
}

}  // namespace pipeline
