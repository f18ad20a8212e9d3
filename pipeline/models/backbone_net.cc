#include "pipeline/models/backbone_net.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "pipeline/error.h"

namespace pipeline {

BackboneNet::BackboneNet(const Backbone& spec) : spec_(spec) {}

std::map<std::string, at::Tensor> BackboneNet::forward_taps(const at::Tensor& x, const std::vector<std::string>& taps) {
  if (taps.empty()) fail("{}: forward_taps asked for no taps", spec_.title());
  std::vector<bool> wanted(spec_.taps().size(), false);
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
    if (wanted[index]) out[spec_.taps()[index].name] = value.contiguous();
    if (index == deepest) reached = true;
  });
  if (!reached) fail("{}: the network stopped before its tap {}", spec_.title(), spec_.taps()[deepest].name);
  return out;
}

at::Tensor BackboneNet::forward(const at::Tensor& x) { return forward_taps(x, {"logits"}).at("logits"); }

void to_channels_last(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (torch::Tensor& parameter : model.parameters()) {
    if (parameter.dim() == 4) parameter.set_data(parameter.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

}  // namespace pipeline
