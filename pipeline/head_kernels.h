#pragma once
// The numeric kernels of the stacked linear heads (linear_heads.h), in a module of
// their own so that their compile flags (-O3, -fno-math-errno, -ffp-contract=off) and
// instruction-set clones touch nothing else. Both run on at::parallel_for's threads with
// subnormals flushed to zero there (simd.h FlushSubnormals). Thread safety: no shared
// state; the tensors passed must not be used elsewhere during a call.

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <vector>

#include "pipeline/train.h"  // BatchScores

namespace pipeline {

// torch.optim.Adam's step (beta 0.9/0.999, eps 1e-8, weight decay as an L2 term added
// to the gradient, bias corrections for step `step` >= 1) on every row of `param`,
// each row with its own learning rate and weight decay, in one pass over the memory.
//   param, m, v: [R, N] float32 contiguous, updated in place; grad: [R, N] float32
//   row_lr, row_wd: [R] float32 (operands that do not fit: pipeline::Error)
void fused_adam_rows(at::Tensor& param, const at::Tensor& grad, at::Tensor& m, at::Tensor& v,
                     const at::Tensor& row_lr, const at::Tensor& row_wd, int64_t step);
// The same for bf16 products: grad [R, N] bfloat16, and param_low [R, N] bfloat16 set to
// the updated param rounded to bfloat16 (to nearest even, as Tensor::copy_), in the same
// pass: the next step's product operand, with no separate conversion passes.
void fused_adam_rows_low(at::Tensor& param, const at::Tensor& grad, at::Tensor& m, at::Tensor& v,
                         const at::Tensor& row_lr, const at::Tensor& row_wd, int64_t step, at::Tensor& param_low);
// The same with a learning rate and weight decay per column (weights kept transposed,
// wide_head_kernels.h); an element gets the same bits as in fused_adam_rows.
//   column_lr, column_wd: [N] float32
void fused_adam_columns(at::Tensor& param, const at::Tensor& grad, at::Tensor& m, at::Tensor& v,
                        const at::Tensor& column_lr, const at::Tensor& column_wd, int64_t step);

// One such step prepared (bias corrections, each learning rate over the first), to be
// applied to the rows of `param` piece by piece, from any thread, each row once: for a
// gradient handed on in pieces while they are in cache (wide_head_kernels.h). The
// tensors must outlive it; the caller flushes subnormals (simd.h) as fused_adam_rows does.
//   param, m, v: [R, N] float32 contiguous; lr, wd: [N] float32 if per_column, else [R]
class AdamStep {
 public:
  AdamStep(at::Tensor& param, at::Tensor& m, at::Tensor& v, const at::Tensor& lr, const at::Tensor& wd, int64_t step,
           bool per_column);
  // Rows begin..end of param, m and v, with `grad` those rows' gradient ([end-begin, N]).
  void apply(int64_t begin, int64_t end, const float* grad) const;
  // The same from a bfloat16 gradient, also writing the rows rounded to bfloat16 into
  // param_low ([R, N], row 0 at param_low).
  void apply(int64_t begin, int64_t end, const c10::BFloat16* grad, c10::BFloat16* param_low) const;

 private:
  int64_t cols_;
  float *param_, *m_, *v_;
  const float* decay_;
  bool per_column_;
  float inv_bias2_sqrt_ = 0;
  std::vector<float> step_size_;
};

// d(mean cross-entropy)/d(logits) for K heads of C classes side by side, and their
// batch scores, in one pass.
//   logits [B, K*C] float32 contiguous -> returns the gradient [B, K*C] float32
//   labels [B] integer, each in 0..C-1 (else pipeline::Error naming the row)
//   bias_grad [K*C] float32, zeroed: the bias gradient is added into it
//   scores.loss_sum [K] float64 and scores.correct [K] int64, zeroed: summed over rows
// A logit that is not finite gives a NaN loss (which stops the run).
at::Tensor logits_grad(const at::Tensor& logits, const at::Tensor& labels, int64_t c, const at::Tensor& bias_grad,
                       const BatchScores& scores);

// The products of a head with few outputs (N = heads x classes <= kFewOutputs), where
// BLAS's packing and kernels are built for wide matrices: OpenBLAS spent more time
// packing and in sgemm on a lone 10-class head than the head's memory traffic needs.
// Written for the auto-vectorizer (16 independent lanes per forward sum, 32 columns per
// weight-gradient block), plus hand-written AVX-512 kernels (forward 4 rows x 5 outputs,
// weight gradient 5 outputs x 64 columns in registers), blocked over rows and outputs so
// that loads are shared, each sum in a fixed order: every clone, the AVX-512 kernel and
// every blocking give the same bits, within float rounding of BLAS (a different
// summation order).
inline constexpr int64_t kFewOutputs = 32;

// Each takes its B input rows either as x [B, D] or, with `rows` defined, as the rows
// [B] int64 of x [N, D] read in place (no gathered copy of the batch; an index outside
// 0..N-1 is a pipeline::Error). The same rows give the same bits either way.

// z = x . weight^T + bias, rows split over at::parallel_for's threads.
//   x float32 contiguous, weight [N_out, D], bias [N_out] float32 -> z [B, N_out] float32
at::Tensor few_outputs_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& rows = {});

// grad = g^T . x (the weight gradient), columns of D split over the threads.
//   g [B, N_out] float32 contiguous; grad [N_out, D] float32 contiguous, overwritten
void few_outputs_weight_grad(at::Tensor& grad, const at::Tensor& g, const at::Tensor& x, const at::Tensor& rows = {});

// The two products by the portable kernels alone, never the AVX-512 ones that the
// functions above take where the CPU has them: for tests that both give the same bits.
at::Tensor few_outputs_linear_portable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
void few_outputs_weight_grad_portable(at::Tensor& grad, const at::Tensor& g, const at::Tensor& x);

}  // namespace pipeline
