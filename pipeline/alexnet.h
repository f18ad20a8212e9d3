#pragma once
// AlexNet exactly as torchvision.models.alexnet builds it (torchvision 0.14 and later):
// same layers, same parameter names (features.0.weight ... classifier.6.bias), same
// default initialization, so torchvision's state dicts load by name (pipeline/weights.h)
// and outputs match torchvision's to float rounding.
//
//   features    0 Conv2d(3,64,k11,s4,p2)  1 ReLU  2 MaxPool(3,2)
//               3 Conv2d(64,192,k5,p2)    4 ReLU  5 MaxPool(3,2)
//               6 Conv2d(192,384,k3,p1)   7 ReLU
//               8 Conv2d(384,256,k3,p1)   9 ReLU
//              10 Conv2d(256,256,k3,p1)  11 ReLU 12 MaxPool(3,2)
//   avgpool     AdaptiveAvgPool2d(6x6), then flatten          -> pool5 [B,9216]
//   classifier  0 Dropout(0.5) 1 Linear(9216,4096) 2 ReLU     -> fc6   [B,4096]
//               3 Dropout(0.5) 4 Linear(4096,4096) 5 ReLU     -> fc7   [B,4096]
//               6 Linear(4096,num_classes)                    -> logits [B,num_classes]
//
// The taps ("layers" of the feature cache) are read after the ReLUs, in whatever mode
// the module is in; extraction runs it in eval mode (dropout off), like torchvision.
// Thread safety: as any torch::nn::Module -- concurrent forward() calls under
// torch::NoGradGuard are fine; changing parameters while another thread runs is not.

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pipeline {

// A layer whose output can be read ("tapped"). Ordered from shallow to deep.
enum class Tap { Pool5, Fc6, Fc7, Logits };

// "pool5", "fc6", "fc7", "logits".
std::string tap_name(Tap tap);

// Inverse of tap_name. Throws pipeline::UsageError listing the valid names.
Tap parse_tap(const std::string& name);

// "fc7" or "pool5,fc7" (spaces around names allowed) -> taps in the order given.
// Throws pipeline::UsageError on an unknown name, an empty list or a repeated name.
std::vector<Tap> parse_taps(const std::string& comma_list);

// Features per image at a tap: 9216, 4096, 4096, num_classes.
int64_t tap_width(Tap tap, int64_t num_classes = 1000);

// Smallest input side AlexNet accepts (smaller sides pool away to nothing).
constexpr int64_t kMinInputSide = 63;
// The largest --image-size accepted (AlexNet's own ImageNet input is 224).
constexpr int64_t kMaxInputSide = 1024;

// Throws pipeline::UsageError naming --image-size when `image_size` is outside
// [kMinInputSide, kMaxInputSide].
void check_image_size(int64_t image_size);

// torchvision's AlexNet classifier (Dropout, Linear(9216,4096), ReLU, Dropout,
// Linear(4096,4096), ReLU, Linear(4096,num_classes)), default-initialized from the
// global torch generator in that order: AlexNet's own, and transfer-head's
// --head classifier on cached pool5 features.
torch::nn::Sequential alexnet_classifier(int64_t num_classes);

class AlexNetImpl : public torch::nn::Module {
 public:
  // Default-initialized like torchvision (PyTorch's default Conv2d/Linear init, drawing
  // from the global torch generator in torchvision's order).
  explicit AlexNetImpl(int64_t num_classes = 1000);

  // x: [B,3,H,W] float, H and W >= 63 (224 for ImageNet), on the module's device.
  // Returns logits [B,num_classes]. Throws pipeline::Error on a wrong shape.
  torch::Tensor forward(torch::Tensor x);

  // One pass that returns several taps, stopping after the deepest one asked for (only
  // pool5 asked: the classifier does not run). pool5 is flattened [B,9216]; fc6 and fc7
  // are after their ReLUs [B,4096] (fc7 = torchvision's classifier[5] output); logits
  // [B,num_classes]. Tensors are contiguous row-major [B,width]. `taps` must not be
  // empty (pipeline::Error). Same input checks as forward().
  std::map<Tap, torch::Tensor> forward_taps(torch::Tensor x, const std::vector<Tap>& taps);

  // Replaces classifier.6 with a fresh Linear(4096, num_classes): default init from the
  // global torch generator, on the device and dtype of the layer it replaces. Other
  // layers are kept as they are.
  void replace_last_layer(int64_t num_classes);

  // Output width of classifier.6.
  int64_t num_classes() const;

  torch::nn::Sequential features{nullptr}, classifier{nullptr};
  torch::nn::AdaptiveAvgPool2d avgpool{nullptr};
};
TORCH_MODULE(AlexNet);

// Converts the 4-D parameters (the conv weights) to channels-last memory format, in
// place and keeping the parameters the same objects (optimizers holding them keep
// working). Modules have no memory-format switch in LibTorch 1.13 or 2.x, hence this.
// For the speed it brings, also pass inputs as x.contiguous(torch::MemoryFormat::
// ChannelsLast); outputs equal the default layout's to float rounding.
void to_channels_last(AlexNet& model);

}  // namespace pipeline
