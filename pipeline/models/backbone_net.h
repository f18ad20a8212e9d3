#pragma once
// A backbone's network (pipeline/models/backbone.h says what a backbone provides): a
// torch::nn::Module with torchvision's parameter names, read at its taps.
//
// Taps are read after their ReLU (or pooling), in whatever mode the module is in:
// extraction runs eval mode (dropout off, batch norm on its running statistics, like
// torchvision's .eval()); fine-tuning runs train mode (batch norm normalises with the
// batch's statistics and updates its running ones, like torchvision's .train()).
// Thread safety: as any torch::nn::Module -- concurrent forward calls under
// torch::NoGradGuard are fine; changing parameters while another thread runs is not.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "pipeline/models/backbone.h"

namespace pipeline {

class BackboneNet : public torch::nn::Module {
 public:
  const Backbone& backbone() const { return spec_; }

  // x: [B,3,H,W] float on the module's device, H and W >= the backbone's minimum side.
  // One pass that returns the taps asked for (names from backbone().taps(), any
  // order), stopping after the deepest one (only "pool" asked: the classifier does not
  // run). Each tap is contiguous row-major [B,width]. Throws pipeline::Error on a wrong
  // shape, an empty list or an unknown tap.
  std::map<std::string, at::Tensor> forward_taps(const at::Tensor& x, const std::vector<std::string>& taps);

  // Logits [B,num_classes()].
  at::Tensor forward(const at::Tensor& x);

  // Replaces the last Linear with a fresh one of `num_classes` outputs: default init
  // from the global torch generator, on the device and dtype of the layer it replaces.
  virtual void replace_classifier(int64_t num_classes) = 0;
  virtual int64_t num_classes() const = 0;

  // Every parameter and buffer as torch.manual_seed(S); torchvision.models.<name>()
  // leaves them, drawing from `generator` (seeded S) in torchvision's order: first each
  // layer's default init in construction order, then torchvision's own init loop.
  virtual void init_like_torchvision(at::Generator& generator) = 0;

  // The layers from backbone().classifier_tap() to the logits, as one module
  // ([B,width] -> [B,num_classes()]) sharing this network's parameters; an empty
  // Sequential (nullptr) when the backbone has no classifier tap.
  virtual torch::nn::Sequential classifier_from_tap() { return torch::nn::Sequential(nullptr); }

 protected:
  explicit BackboneNet(const Backbone& spec);

  // Computes the taps in order up to index `deepest` of backbone().taps(), calling
  // emit(index, value) for each as it is reached; must return after emitting `deepest`.
  using Emit = std::function<void(size_t index, const at::Tensor& value)>;
  virtual void run(at::Tensor x, size_t deepest, const Emit& emit) = 0;

 private:
  const Backbone& spec_;
};

// The shape AlexNet and VGG share: `features`, then `avgpool` flattened (tap 0, pool5),
// then a `classifier` Sequential whose last module is the Linear that gives the logits;
// tap t > 0 is read after classifier module ends[t] - 1. A subclass builds the three
// modules (registering them in torchvision's order) and gives `ends` and `last_inputs`.
class SequentialBackboneNet : public BackboneNet {
 public:
  void replace_classifier(int64_t num_classes) override;
  int64_t num_classes() const override;
  torch::nn::Sequential classifier_from_tap() override { return classifier; }  // from pool5

  torch::nn::Sequential features{nullptr}, classifier{nullptr};
  torch::nn::AdaptiveAvgPool2d avgpool{nullptr};

 protected:
  SequentialBackboneNet(const Backbone& spec, std::vector<size_t> ends) : BackboneNet(spec), ends_(std::move(ends)) {}
  void run(at::Tensor x, size_t deepest, const Emit& emit) override;

 private:
  std::vector<size_t> ends_;  // per tap: one past its classifier module (pool5: 0)
};

// Converts the 4-D parameters (conv weights) to channels-last memory format, in place,
// keeping the parameters the same objects (optimizers holding them keep working).
// Modules have no memory-format switch in LibTorch 1.13 or 2.x, hence this. For the
// speed it brings on a CPU, also pass inputs as x.contiguous(torch::MemoryFormat::
// ChannelsLast); outputs equal the default layout's to float rounding.
void to_channels_last(torch::nn::Module& model);

}  // namespace pipeline
