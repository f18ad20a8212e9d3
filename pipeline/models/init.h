#pragma once
// torchvision's and PyTorch's initialisations, drawing from a given generator, so that
// "random:SEED" reproduces torch.manual_seed(SEED); torchvision.models.<name>() exactly:
// the same operations (uniform_, normal_) on tensors of the same shapes, in the same
// order, with bounds computed in the same double arithmetic as torch.nn.init.

#include <torch/torch.h>

namespace pipeline {

// What Conv2d's and Linear's reset_parameters() do: weight kaiming_uniform_(a=sqrt(5)),
// i.e. U(-b, b) with b = sqrt(3) * sqrt(2 / (1 + 5)) / sqrt(fan_in); bias (when present)
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Any other module: nothing drawn.
void default_init(torch::nn::Module& layer, at::Generator& generator);

// nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu"):
// N(0, sqrt(2) / sqrt(out_channels * kernel area)).
void kaiming_normal_fan_out(const at::Tensor& weight, at::Generator& generator);

// nn.init.normal_(tensor, 0, std).
void normal_init(const at::Tensor& tensor, double std, at::Generator& generator);

// A fresh BatchNorm2d: weight 1, bias 0, running mean 0, running variance 1, no
// batches tracked.
void reset_batch_norm(torch::nn::BatchNorm2dImpl& bn);

}  // namespace pipeline
