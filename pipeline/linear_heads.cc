#include "pipeline/linear_heads.h"

#include <torch/torch.h>

#include <cmath>

#include "pipeline/error.h"
#include "pipeline/head_kernels.h"
#include "pipeline/random.h"
#include "pipeline/wide_head_kernels.h"

namespace pipeline {

LinearHeads::LinearHeads(int64_t inputs, int64_t classes, std::vector<HeadSetting> settings, c10::ScalarType matmul)
    : classes_(classes), matmul_(matmul), settings_(std::move(settings)) {
  if (matmul_ != c10::kFloat && matmul_ != c10::kBFloat16) {
    usage_fail("linear heads multiply in float32 or bfloat16, not {}", c10::toString(matmul_));
  }
  const int64_t k = members();
  weight_ = torch::empty({k * classes, inputs});
  bias_ = torch::empty({k * classes});
  output_lr_ = torch::empty({k * classes});
  output_wd_ = torch::empty({k * classes});
  // torch.nn.Linear's default init bound, 1/sqrt(fan_in), for weight and bias alike;
  // drawn from SplitMix64 so that a head's init depends on its seed alone.
  const double bound = 1.0 / std::sqrt(static_cast<double>(inputs));
  for (int64_t m = 0; m < k; ++m) {
    SplitMix64 rng(mix_seed(settings_[m].init_seed, 0x4EADu));
    float* w = weight_.data_ptr<float>() + m * classes * inputs;
    for (int64_t i = 0; i < classes * inputs; ++i) w[i] = static_cast<float>((2 * rng.uniform() - 1) * bound);
    float* b = bias_.data_ptr<float>() + m * classes;
    for (int64_t i = 0; i < classes; ++i) b[i] = static_cast<float>((2 * rng.uniform() - 1) * bound);
    output_lr_.slice(0, m * classes, (m + 1) * classes).fill_(settings_[m].lr);
    output_wd_.slice(0, m * classes, (m + 1) * classes).fill_(settings_[m].weight_decay);
  }
  if (wide_kernels()) weight_ = weight_.t().contiguous();  // [D, K*C]: wide_head_kernels.h's layout
  // Wide float32 heads hand Adam the gradient in strips; bf16 ones in bfloat16.
  if (own_kernels()) weight_grad_ = torch::empty_like(weight_);
  if (matmul_ != c10::kFloat) {
    weight_low_ = torch::empty_like(weight_, matmul_);
    bias_low_ = torch::empty_like(bias_, matmul_);
    weight_grad_low_ = torch::empty_like(weight_, matmul_);
    weight_low_.copy_(weight_);  // then kept in step by Adam (fused_adam_rows_low) and use_best
  }
  bias_grad_ = torch::empty_like(bias_);
  weight_m_ = torch::zeros_like(weight_);
  weight_v_ = torch::zeros_like(weight_);
  bias_m_ = torch::zeros_like(bias_);
  bias_v_ = torch::zeros_like(bias_);
  best_weight_ = weight_.clone();
  best_bias_ = bias_.clone();
}

int64_t LinearHeads::members() const { return static_cast<int64_t>(settings_.size()); }

bool LinearHeads::own_kernels() const { return matmul_ == c10::kFloat && members() * classes_ <= kFewOutputs; }

bool LinearHeads::wide_kernels() const { return matmul_ == c10::kFloat && !own_kernels(); }

int64_t LinearHeads::output_dim() const { return wide_kernels() ? 1 : 0; }

bool LinearHeads::reads_rows_in_place() const { return matmul_ == c10::kFloat; }

at::Tensor LinearHeads::logits(const at::Tensor& x, const at::Tensor& rows) const {
  if (rows.defined() && !reads_rows_in_place()) fail("linear heads: a batch of rows in place needs float32 products");
  if (own_kernels()) return few_outputs_linear(x.to(c10::kFloat).contiguous(), weight_, bias_, rows);
  if (wide_kernels()) return wide_outputs_linear(x.to(c10::kFloat).contiguous(), weight_, bias_, rows);
  // As autocast runs a Linear: every operand rounded to bfloat16, float32 accumulation
  // inside the product (oneDNN), the result rounded to bfloat16. The rounded weights are
  // kept by Adam, which writes them with the update (fused_adam_rows_low).
  bias_low_.copy_(bias_);
  return torch::addmm(bias_low_, x.to(matmul_), weight_low_.t()).to(c10::kFloat);
}

BatchScores LinearHeads::train_step(const Batch& batch) {
  torch::NoGradGuard no_grad;
  const bool in_place = !batch.inputs.defined();
  const int64_t k = members();
  // The rows the products read: the batch's inputs, or its rows of `source` where they are.
  const at::Tensor x = in_place ? batch.source : batch.inputs.to(matmul_);
  const at::Tensor rows = in_place ? batch.rows : at::Tensor();
  const at::Tensor z = logits(x, rows);  // [B, K*C]
  bias_grad_.zero_();
  const BatchScores scores{torch::zeros({k}, torch::kFloat64), torch::zeros({k}, torch::kInt64)};
  const at::Tensor flat = logits_grad(z, batch.labels, classes_, bias_grad_, scores);
  ++step_;
  // The weight gradient, then Adam on it. Few outputs and bf16 products write the
  // gradient into the same buffer every step (a fresh [K*C, D] tensor, 5 MB for 32 heads,
  // cost page faults on every step).
  if (own_kernels()) {
    few_outputs_weight_grad(weight_grad_, flat, x.contiguous(), rows);
    fused_adam_rows(weight_, weight_grad_, weight_m_, weight_v_, output_lr_, output_wd_, step_);
  } else if (wide_kernels()) {
    // Adam on each strip of the gradient as it is made, while it is in cache: written
    // whole and read back, the 32-head gradient (5 MB) cost ~0.3 ms of a 4.3 ms step.
    const AdamStep adam(weight_, weight_m_, weight_v_, output_lr_, output_wd_, step_, true);
    wide_outputs_weight_grad_strips(flat, x.contiguous(), rows,
                                    [&](int64_t c0, int64_t c1, const float* grad) { adam.apply(c0, c1, grad); });
  } else {
    at::mm_out(weight_grad_low_, flat.to(matmul_).t(), x);
    // Read as bfloat16 and the rounded weights written in the same pass: converting the
    // gradient to float32 and the weights to bfloat16 apart cost ~0.2 ms of a 2.6 ms step.
    fused_adam_rows_low(weight_, weight_grad_low_, weight_m_, weight_v_, output_lr_, output_wd_, step_, weight_low_);
  }
  at::Tensor bias_2d = bias_.view({k * classes_, 1}), bias_m = bias_m_.view({k * classes_, 1}),
             bias_v = bias_v_.view({k * classes_, 1});
  fused_adam_rows(bias_2d, bias_grad_.view({k * classes_, 1}), bias_m, bias_v, output_lr_, output_wd_, step_);
  return scores;
}

at::Tensor LinearHeads::predict(const at::Tensor& inputs) { return predict_batch(Batch{inputs, {}}); }

at::Tensor LinearHeads::predict_batch(const Batch& batch) {
  torch::NoGradGuard no_grad;
  const bool in_place = !batch.inputs.defined();
  const at::Tensor z = logits(in_place ? batch.source : batch.inputs, in_place ? batch.rows : at::Tensor());
  return z.view({z.size(0), members(), classes_}).permute({1, 0, 2});
}

void LinearHeads::keep_best(int64_t member) {
  const int64_t begin = member * classes_, end = begin + classes_;
  best_weight_.slice(output_dim(), begin, end).copy_(weight_.slice(output_dim(), begin, end));
  best_bias_.slice(0, begin, end).copy_(bias_.slice(0, begin, end));
}

void LinearHeads::use_best() {
  weight_.copy_(best_weight_);
  bias_.copy_(best_bias_);
  if (weight_low_.defined()) weight_low_.copy_(weight_);
}

at::Tensor LinearHeads::weight(int64_t member) const {
  const at::Tensor w = weight_.slice(output_dim(), member * classes_, (member + 1) * classes_);
  return (wide_kernels() ? w.t() : w).clone(at::MemoryFormat::Contiguous);
}

at::Tensor LinearHeads::bias(int64_t member) const { return bias_.slice(0, member * classes_, (member + 1) * classes_).clone(); }

}  // namespace pipeline
