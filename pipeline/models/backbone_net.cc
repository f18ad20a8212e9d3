#include "pipeline/models/backbone_net.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "pipeline/error.h"

namespace pipeline {

BackboneNet::BackboneNet(const Backbone& spec) : spec_(spec) {}

std::map<std::string, at::Tensor> BackboneNet::forward_taps(const at::Tensor& x, const std::vector<std::string>& taps) {
  if (taps.empty()) fail("{}: forward_taps asked for no taps", spec_.title());
  const std::vector<TapInfo> all = spec_.taps();
  std::vector<bool> wanted(all.size(), false);
  size_t deepest = 0;
  for (const std::string& tap : taps) {
    const size_t i = tap_index(spec_, tap);
    wanted[i] = true;
    deepest = std::max(deepest, i);
  }
  if (x.dim() != 4 || x.size(1) != 3) {
    fail("{} takes images [B,3,H,W]; got a tensor of shape {}", spec_.title(), fmt::to_string(fmt::join(x.sizes(), "x")));
  }
  const int64_t side = spec_.min_input_side();
  if (x.size(2) < side || x.size(3) < side) {
    fail("{} needs images of at least {}x{} pixels; got {}x{} (use --image-size {} or more)", spec_.title(), side, side,
         x.size(2), x.size(3), side);
  }
  std::map<std::string, at::Tensor> out;
  bool reached = false;
  run(x, deepest, [&](size_t index, const at::Tensor& value) {
    if (wanted[index]) out[all[index].name] = value.contiguous();
    if (index == deepest) reached = true;
  });
  if (!reached) fail("{}: the network stopped before its tap {}", spec_.title(), all[deepest].name);
  return out;
}

at::Tensor BackboneNet::forward(const at::Tensor& x) { return forward_taps(x, {"logits"}).at("logits"); }

void SequentialBackboneNet::run(at::Tensor x, size_t deepest, const Emit& emit) {
  x = torch::flatten(avgpool(features->forward(x)), 1);
  emit(0, x);
  size_t next = 0;
  for (size_t tap = 1; tap <= deepest; ++tap) {
    for (; next < ends_[tap]; ++next) x = (classifier->begin() + static_cast<ptrdiff_t>(next))->forward(x);
    emit(tap, x);
  }
}

void SequentialBackboneNet::replace_classifier(int64_t num_classes) {
  if (num_classes < 1) fail("{} needs at least one class; got {}", backbone().title(), num_classes);
  const size_t last = classifier->size() - 1;
  const auto* old = classifier->ptr<torch::nn::LinearImpl>(last).get();
  torch::nn::Linear fresh(old->options.in_features(), num_classes);
  fresh->to(old->weight.device(), old->weight.scalar_type());
  torch::nn::Sequential rebuilt;
  for (size_t i = 0; i < last; ++i) rebuilt->push_back(*(classifier->begin() + static_cast<ptrdiff_t>(i)));
  rebuilt->push_back(fresh);
  classifier = replace_module("classifier", rebuilt);
}

int64_t SequentialBackboneNet::num_classes() const {
  return classifier->ptr<torch::nn::LinearImpl>(classifier->size() - 1)->options.out_features();
}

void to_channels_last(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (torch::Tensor& parameter : model.parameters()) {
    if (parameter.dim() == 4) parameter.set_data(parameter.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

}  // namespace pipeline
