#include "pipeline/models/alexnet.h"

#include "pipeline/error.h"
#include "pipeline/models/init.h"

namespace pipeline {
namespace {

namespace nn = torch::nn;

constexpr int64_t kPool5 = 256 * 6 * 6;

class AlexNetBackbone : public Backbone {
 public:
  std::string name() const override { return "alexnet"; }
  std::string title() const override { return "AlexNet"; }
  std::vector<TapInfo> taps() const override {
    return {{"pool5", kPool5}, {"fc6", 4096}, {"fc7", 4096}, {"logits", 1000}};
  }
  std::string default_tap() const override { return "fc7"; }
  int64_t min_input_side() const override { return 63; }
  PretrainedWeights weights() const override {
    return {"alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"};
  }
  std::string classifier_tap() const override { return "pool5"; }
  std::shared_ptr<BackboneNet> build() const override { return std::make_shared<AlexNetImpl>(); }
};

nn::Conv2dOptions conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding) {
  return nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding);
}

nn::Sequential make_classifier(int64_t num_classes) {
  return nn::Sequential(nn::Dropout(nn::DropoutOptions(0.5)), nn::Linear(kPool5, 4096), nn::ReLU(nn::ReLUOptions(true)),
                        nn::Dropout(nn::DropoutOptions(0.5)), nn::Linear(4096, 4096), nn::ReLU(nn::ReLUOptions(true)),
                        nn::Linear(4096, num_classes));
}

}  // namespace

const Backbone& alexnet_backbone() {
  static const AlexNetBackbone spec;
  return spec;
}

// One past the classifier module that produces each tap: pool5, fc6 (Dropout, Linear,
// ReLU), fc7 (the same), logits.
AlexNetImpl::AlexNetImpl(int64_t num_classes) : SequentialBackboneNet(alexnet_backbone(), {0, 3, 6, 7}) {
  if (num_classes < 1) fail("AlexNet needs at least one class; got {}", num_classes);
  // Registration order is torchvision's, so default init draws from the generator in
  // the same order and named_parameters() lists torchvision's state-dict order.
  features = register_module(
      "features",
      nn::Sequential(nn::Conv2d(conv(3, 64, 11, 4, 2)), nn::ReLU(nn::ReLUOptions(true)),
                     nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2)),
                     nn::Conv2d(conv(64, 192, 5, 1, 2)), nn::ReLU(nn::ReLUOptions(true)),
                     nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2)),
                     nn::Conv2d(conv(192, 384, 3, 1, 1)), nn::ReLU(nn::ReLUOptions(true)),
                     nn::Conv2d(conv(384, 256, 3, 1, 1)), nn::ReLU(nn::ReLUOptions(true)),
                     nn::Conv2d(conv(256, 256, 3, 1, 1)), nn::ReLU(nn::ReLUOptions(true)),
                     nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2))));
  avgpool = register_module("avgpool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({6, 6})));
  classifier = register_module("classifier", make_classifier(num_classes));
}

void AlexNetImpl::init_like_torchvision(at::Generator& generator) {
  // torchvision's AlexNet keeps PyTorch's default init, drawn in construction order
  // (the same as registration order here).
  for (const auto& module : modules(/*include_self=*/false)) default_init(*module, generator);
}

}  // namespace pipeline
