#pragma once
// K linear heads trained as one stacked layer (transfer-head's linear probe and its
// sweeps). The arithmetic is in head_kernels.h (Adam, softmax, few outputs) and
// wide_head_kernels.h (the products of many outputs).

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

#include "pipeline/train.h"

namespace pipeline {

// One member of a head sweep.
struct HeadSetting {
  double lr = 1e-3, weight_decay = 0.0;
  uint64_t init_seed = 0;
};

// K linear heads of width D -> C stacked as one [K*C, D] layer (held transposed when
// wide, see wide_kernels()), trained with a fused Adam step whose learning rate and
// weight decay are per head. Head k's gradient is exactly that of a lone head (per-head
// mean cross-entropy), so each head of a stack equals the same head trained alone, up
// to float rounding.
class LinearHeads : public Trainable {
 public:
  // Initialised like torch.nn.Linear (uniform in +-1/sqrt(D)), from each setting's seed.
  // matmul: the dtype of the two matrix products per step (Float, or BFloat16 as
  // autocast would run them); the weights, Adam's moments and the softmax stay float32.
  LinearHeads(int64_t inputs, int64_t classes, std::vector<HeadSetting> settings,
              c10::ScalarType matmul = c10::kFloat);
  int64_t members() const override;
  void set_training(bool) override {}
  // inputs [B,D] CPU, float32 or the matmul dtype; or rows in place (reads_rows_in_place)
  BatchScores train_step(const Batch& batch) override;
  at::Tensor predict(const at::Tensor& inputs) override;
  at::Tensor predict_batch(const Batch& batch) override;  // rows in place too (reads_rows_in_place)
  void keep_best(int64_t member) override;
  void use_best() override;
  // True when train_step and predict_batch take a Batch of rows in place (train.h
  // Batch::source/rows, inputs undefined): float32 products, whose kernels read rows
  // where they are (the BLAS fallback of wide_head_kernels.h, without AVX2 or AVX-512,
  // gathers them itself).
  bool reads_rows_in_place() const;
  at::Tensor weight(int64_t member) const;  // [C, D]
  at::Tensor bias(int64_t member) const;    // [C]

 private:
  // [B, K*C] float32 logits of x's rows: all of them, or with `rows` defined those rows of
  // x read in place (float32 products only, else pipeline::Error).
  at::Tensor logits(const at::Tensor& x, const at::Tensor& rows = {}) const;
  // Float32 products of K*C <= kFewOutputs: head_kernels.h's few-outputs kernels, not BLAS.
  bool own_kernels() const;
  // Float32 products of more outputs: wide_head_kernels.h's, the weights (their
  // gradient, moments and best copy too) kept transposed, [D, K*C].
  bool wide_kernels() const;
  int64_t output_dim() const;  // the weights' dimension of the K*C outputs: 0, or 1 if wide

  int64_t classes_;
  c10::ScalarType matmul_;
  std::vector<HeadSetting> settings_;
  // weight_ [K*C, D], or [D, K*C] if wide_kernels(); its gradient, moments, best copy alike
  at::Tensor weight_, bias_, weight_m_, weight_v_, bias_m_, bias_v_, best_weight_, best_bias_;
  at::Tensor weight_grad_, bias_grad_;  // reused every step (weight_grad_: few-outputs heads only)
  at::Tensor weight_low_, bias_low_, weight_grad_low_;     // bf16 products only: the same, rounded
  at::Tensor output_lr_, output_wd_;  // [K*C] float32: each output's head's settings
  int64_t step_ = 0;
};

}  // namespace pipeline
