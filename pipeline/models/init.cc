#include "pipeline/models/init.h"

#include <cmath>

namespace pipeline {

void default_init(torch::nn::Module& layer, at::Generator& generator) {
  torch::NoGradGuard no_grad;
  torch::Tensor weight, bias;
  if (auto* conv = layer.as<torch::nn::Conv2dImpl>()) {
    weight = conv->weight;
    bias = conv->bias;
  } else if (auto* linear = layer.as<torch::nn::LinearImpl>()) {
    weight = linear->weight;
    bias = linear->bias;
  } else {
    return;
  }
  // Drawn into fresh contiguous tensors (the parameter may be channels-last), which is
  // what Python's in-place uniform_ on a fresh parameter sees.
  auto fill = [&](torch::Tensor& target, double bound) {
    at::Tensor values = at::empty(target.sizes(), at::kFloat);
    values.uniform_(-bound, bound, generator);
    target.copy_(values);
  };
  const double fan_in = static_cast<double>(weight.numel() / weight.size(0));
  const double a = std::sqrt(5.0);
  const double gain = std::sqrt(2.0 / (1 + a * a));
  fill(weight, std::sqrt(3.0) * (gain / std::sqrt(fan_in)));
  if (bias.defined()) fill(bias, 1 / std::sqrt(fan_in));
}

void normal_init(const at::Tensor& tensor, double std, at::Generator& generator) {
  torch::NoGradGuard no_grad;
  at::Tensor values = at::empty(tensor.sizes(), at::kFloat);
  values.normal_(0, std, generator);
  at::Tensor target = tensor;
  target.copy_(values);
}

void kaiming_normal_fan_out(const at::Tensor& weight, at::Generator& generator) {
  const double fan_out = static_cast<double>(weight.numel() / weight.size(1));
  normal_init(weight, std::sqrt(2.0) / std::sqrt(fan_out), generator);
}

void reset_batch_norm(torch::nn::BatchNorm2dImpl& bn) {
  torch::NoGradGuard no_grad;
  bn.weight.fill_(1);
  bn.bias.fill_(0);
  bn.running_mean.zero_();
  bn.running_var.fill_(1);
  bn.num_batches_tracked.zero_();
}

}  // namespace pipeline
