#include "pipeline/wide_head_kernels.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "pipeline/error.h"
#include "pipeline/head_kernels.h"
#include "pipeline/simd.h"

namespace {

// The contract's order, one output at a time: fused multiply-adds over the features in
// order from zero, then the bias (forward); over the rows in order (gradient).
at::Tensor chained_linear(const at::Tensor& x, const at::Tensor& wt, const at::Tensor& bias) {
  const int64_t b = x.size(0), d = x.size(1), n = wt.size(1);
  at::Tensor z = torch::empty({b, n});
  const auto xa = x.accessor<float, 2>(), wa = wt.accessor<float, 2>();
  const auto ba = bias.accessor<float, 1>();
  auto za = z.accessor<float, 2>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0;
      for (int64_t k = 0; k < d; ++k) acc = std::fma(xa[i][k], wa[k][j], acc);
      za[i][j] = acc + ba[j];
    }
  }
  return z;
}

at::Tensor chained_grad(const at::Tensor& x, const at::Tensor& g) {
  const int64_t b = x.size(0), d = x.size(1), n = g.size(1);
  at::Tensor out = torch::empty({d, n});
  const auto xa = x.accessor<float, 2>(), ga = g.accessor<float, 2>();
  auto oa = out.accessor<float, 2>();
  for (int64_t c = 0; c < d; ++c) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0;
      for (int64_t r = 0; r < b; ++r) acc = std::fma(xa[r][c], ga[r][j], acc);
      oa[c][j] = acc;
    }
  }
  return out;
}

// Restores LibTorch's thread count at the end of a test that changes it.
struct ThreadsRestored {
  int saved = at::get_num_threads();
  ~ThreadsRestored() { at::set_num_threads(saved); }
};

// Chooses a set of wide-outputs kernels for a scope, then the previous one again.
struct KernelsChosen {
  pipeline::WideKernels saved = pipeline::wide_outputs_kernels();
  explicit KernelsChosen(pipeline::WideKernels kernels) { pipeline::use_wide_outputs_kernels(kernels); }
  ~KernelsChosen() { pipeline::use_wide_outputs_kernels(saved); }
};

}  // namespace

// By default the best kernels the CPU has run (a build or dispatch that lost them would
// pass the rest on BLAS); a set it lacks cannot be chosen.
TEST(WideHeadKernels, TheBestKernelsTheCpuHasRunByDefault) {
  using pipeline::WideKernels;
  const WideKernels best = has_avx512bw()   ? WideKernels::avx512
                           : has_avx2_fma() ? WideKernels::avx2
                                            : WideKernels::blas;
  EXPECT_EQ(pipeline::wide_outputs_kernels(), best) << pipeline::wide_kernels_name(best);
  EXPECT_EQ(pipeline::wide_kernels_available(WideKernels::avx512), has_avx512bw());
  EXPECT_EQ(pipeline::wide_kernels_available(WideKernels::avx2), has_avx2_fma());
  EXPECT_TRUE(pipeline::wide_kernels_available(WideKernels::blas));
  for (const WideKernels kernels : {WideKernels::avx512, WideKernels::avx2}) {
    if (pipeline::wide_kernels_available(kernels)) continue;
    EXPECT_THROW(pipeline::use_wide_outputs_kernels(kernels), pipeline::Error);
    EXPECT_EQ(pipeline::wide_outputs_kernels(), best);
  }
}

// Every set of wide-outputs kernels the CPU has equals LibTorch's products up to float
// rounding, for shapes off every block size (rows by 4, outputs by 8, 16, 24 and 80,
// features by 4, 16 and 1,024) and empty ones. The own kernels (AVX-512, AVX2) give each
// output exactly the contract's chain of fused multiply-adds, whatever the thread count:
// so both sets give the same bits. Rows read in place give the same bits as a gathered
// batch.
TEST(WideHeadKernels, EqualLibTorchProductsAndTheirChainOfFmas) {
  ThreadsRestored restore;
  using pipeline::WideKernels;
  for (const WideKernels kernels : {WideKernels::avx512, WideKernels::avx2, WideKernels::blas}) {
    const char* name = pipeline::wide_kernels_name(kernels);
    if (!pipeline::wide_kernels_available(kernels)) {
      std::printf("[   NOTE   ] this CPU has no %s: its kernels are not checked here\n", name);
      continue;
    }
    const KernelsChosen chosen(kernels);
    const bool own = kernels != WideKernels::blas;
    torch::manual_seed(21);
    // Every block shape: rows and strip ends of 1 to 4 (the last strip of 14 features ends in
    // a block of 2), every count of vectors with and without a masked last one; and empty
    // operands.
    for (const auto& [b, n, d] :
         {std::tuple<int64_t, int64_t, int64_t>{128, 320, 1100}, {7, 33, 45}, {1, 1, 1}, {5, 81, 1025}, {9, 160, 17},
          {4, 95, 2049}, {13, 17, 64}, {3, 240, 7}, {6, 112, 14}, {10, 150, 30}, {2, 60, 18}, {0, 40, 20},
          {3, 0, 20}, {3, 40, 0}}) {
      const std::string shape = fmt::format("{} {}x{}x{}", name, b, n, d);
      const at::Tensor x = torch::randn({b, d}).relu(), wt = torch::randn({d, n}), bias = torch::randn({n});
      const at::Tensor g = torch::randn({b, n});
      const at::Tensor z = pipeline::wide_outputs_linear(x, wt, bias);
      EXPECT_TRUE(torch::allclose(z, torch::addmm(bias, x, wt), 1e-5, 1e-4)) << shape;
      at::Tensor grad = torch::full({d, n}, 7.0f);  // overwritten, not added to
      pipeline::wide_outputs_weight_grad(grad, g, x);
      EXPECT_TRUE(torch::allclose(grad, torch::mm(x.t(), g), 1e-5, 1e-4)) << shape;
      // In strips: every feature's row once, the same bits as the whole gradient.
      at::Tensor strips = torch::full({d, n}, 7.0f);
      std::vector<int> seen(static_cast<size_t>(d));
      std::mutex lock;
      pipeline::wide_outputs_weight_grad_strips(g, x, {}, [&](int64_t c0, int64_t c1, const float* rows_grad) {
        const std::lock_guard<std::mutex> hold(lock);
        for (int64_t c = c0; c < c1; ++c) ++seen[static_cast<size_t>(c)];
        std::copy(rows_grad, rows_grad + (c1 - c0) * n, strips.data_ptr<float>() + c0 * n);
      });
      EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), d);
      EXPECT_TRUE(torch::equal(strips, grad)) << shape;
      // Rows read in place: the same bits as the gathered batch (on the BLAS path too).
      const at::Tensor source = torch::randn({2 * b + 3, d}), rows = torch::randperm(2 * b + 3).slice(0, 0, b);
      const at::Tensor gathered = source.index_select(0, rows);
      EXPECT_TRUE(torch::equal(pipeline::wide_outputs_linear(source, wt, bias, rows),
                               pipeline::wide_outputs_linear(gathered, wt, bias)));
      at::Tensor in_place = torch::empty({d, n}), from_gathered = torch::empty({d, n});
      pipeline::wide_outputs_weight_grad(in_place, g, source, rows);
      pipeline::wide_outputs_weight_grad(from_gathered, g, gathered);
      EXPECT_TRUE(torch::equal(in_place, from_gathered));
      at::Tensor strips_in_place = torch::empty({d, n});
      pipeline::wide_outputs_weight_grad_strips(g, source, rows, [&](int64_t c0, int64_t c1, const float* rows_grad) {
        std::copy(rows_grad, rows_grad + (c1 - c0) * n, strips_in_place.data_ptr<float>() + c0 * n);
      });
      EXPECT_TRUE(torch::equal(strips_in_place, from_gathered));
      if (!own) continue;  // BLAS: its own order
      EXPECT_TRUE(torch::equal(z, chained_linear(x, wt, bias))) << shape;
      EXPECT_TRUE(torch::equal(grad, chained_grad(x, g))) << shape;
      at::set_num_threads(1);
      EXPECT_TRUE(torch::equal(z, pipeline::wide_outputs_linear(x, wt, bias))) << name << " one thread";
      at::Tensor one_thread = torch::empty({d, n});
      pipeline::wide_outputs_weight_grad(one_thread, g, x);
      EXPECT_TRUE(torch::equal(grad, one_thread)) << name << " one thread";
      at::set_num_threads(restore.saved);
    }
  }
}

// A row outside the source, or operands of the wrong shape or dtype: pipeline::Error.
TEST(WideHeadKernels, BadRowsAndShapesAreErrors) {
  const at::Tensor x = torch::randn({10, 20}), wt = torch::randn({20, 40}), bias = torch::randn({40});
  EXPECT_THROW(pipeline::wide_outputs_linear(x, wt, bias, torch::tensor({0, 10}, torch::kLong)), pipeline::Error);
  EXPECT_THROW(pipeline::wide_outputs_linear(x, wt, bias, torch::tensor({-1}, torch::kLong)), pipeline::Error);
  EXPECT_THROW(pipeline::wide_outputs_linear(x, wt.slice(0, 0, 19), bias), pipeline::Error);
  EXPECT_THROW(pipeline::wide_outputs_linear(x.to(torch::kDouble), wt, bias), pipeline::Error);
  at::Tensor grad = torch::empty({20, 40});
  EXPECT_THROW(pipeline::wide_outputs_weight_grad(grad, torch::randn({2, 40}), x, torch::tensor({3, 11}, torch::kLong)),
               pipeline::Error);
  at::Tensor wrong = torch::empty({40, 20});
  EXPECT_THROW(pipeline::wide_outputs_weight_grad(wrong, torch::randn({10, 40}), x), pipeline::Error);
  // g with a row too many for the batch, whole or in strips.
  EXPECT_THROW(pipeline::wide_outputs_weight_grad(grad, torch::randn({11, 40}), x), pipeline::Error);
  const auto ignore = [](int64_t, int64_t, const float*) {};
  EXPECT_THROW(pipeline::wide_outputs_weight_grad_strips(torch::randn({3, 40}), x, torch::tensor({1, 2}), ignore),
               pipeline::Error);
  EXPECT_THROW(pipeline::wide_outputs_weight_grad_strips(torch::randn({2, 40}), x, torch::tensor({1, 20}), ignore),
               pipeline::Error);
}

// Adam with a learning rate and weight decay per column, on transposed weights, gives
// each element the bits that the per-row update gives it in the untransposed layout.
TEST(WideHeadKernels, AdamPerColumnEqualsAdamPerRowTransposed) {
  torch::manual_seed(4);
  // 45 settings: the per-column loop runs vectorized (16 lanes) and its remainder.
  at::Tensor p = torch::randn({45, 37}), m = torch::zeros({45, 37}), v = torch::zeros({45, 37});
  const at::Tensor start = p.clone();
  at::Tensor pt = p.t().contiguous(), mt = torch::zeros({37, 45}), vt = torch::zeros({37, 45});
  const at::Tensor lr = torch::rand({45}) * 1e-2, wd = torch::rand({45}) * 1e-3;
  for (int64_t step = 1; step <= 5; ++step) {
    const at::Tensor grad = torch::randn({45, 37});
    pipeline::fused_adam_rows(p, grad, m, v, lr, wd, step);
    pipeline::fused_adam_columns(pt, grad.t().contiguous(), mt, vt, lr, wd, step);
  }
  EXPECT_TRUE(torch::equal(pt, p.t()));
  EXPECT_TRUE(torch::equal(mt, m.t()));
  EXPECT_TRUE(torch::equal(vt, v.t()));
  EXPECT_FALSE(torch::equal(p, start));
  // Operands that do not fit: one setting short, a gradient of another size.
  EXPECT_THROW(pipeline::fused_adam_columns(pt, mt, mt, vt, lr.slice(0, 0, 44), wd, 6), pipeline::Error);
  EXPECT_THROW(pipeline::fused_adam_rows(p, torch::randn({45, 36}), m, v, lr, wd, 6), pipeline::Error);
}

// Adam for bf16 products: reading the bfloat16 gradient and writing the rounded weights
// in its pass gives the bits of widening the gradient, updating, then Tensor::to(bf16).
TEST(WideHeadKernels, AdamOnABf16GradientEqualsAdamOnItsWideningThenRounding) {
  torch::manual_seed(5);
  at::Tensor p = torch::randn({6, 37}), m = torch::zeros({6, 37}), v = torch::zeros({6, 37});
  at::Tensor p_low_path = p.clone(), m2 = m.clone(), v2 = v.clone();
  at::Tensor low = torch::empty({6, 37}, torch::kBFloat16);
  const at::Tensor lr = torch::tensor({1e-3f, 3e-3f, 1e-2f, 1e-4f, 3e-2f, 1e-3f}), wd = torch::full({6}, 1e-3f);
  for (int64_t step = 1; step <= 5; ++step) {
    const at::Tensor grad = torch::randn({6, 37}).to(torch::kBFloat16);
    pipeline::fused_adam_rows(p, grad.to(torch::kFloat), m, v, lr, wd, step);
    pipeline::fused_adam_rows_low(p_low_path, grad, m2, v2, lr, wd, step, low);
    EXPECT_TRUE(torch::equal(low, p.to(torch::kBFloat16))) << "step " << step;
  }
  EXPECT_TRUE(torch::equal(p_low_path, p));
  EXPECT_TRUE(torch::equal(m2, m));
  EXPECT_TRUE(torch::equal(v2, v));
  at::Tensor wrong = torch::empty({6, 37});
  EXPECT_THROW(pipeline::fused_adam_rows_low(p, torch::randn({6, 37}), m, v, lr, wd, 6, low), pipeline::Error);
  EXPECT_THROW(pipeline::fused_adam_rows_low(p, low, m, v, lr, wd, 6, wrong), pipeline::Error);
}
