// VGG-16 (configuration "D", no batch norm) exactly as torchvision.models.vgg16 builds
// it (torchvision 0.14), with the same parameter names; registered as "vgg16".
//
//   features    13 Conv2d(k3,p1) each followed by ReLU, MaxPool(2,2) after convs 2, 4,
//               7, 10, 13: channels 64,64 | 128,128 | 256x3 | 512x3 | 512x3; conv
//               indices 0,2,5,7,10,12,14,17,19,21,24,26,28
//   avgpool     AdaptiveAvgPool2d(7x7), flatten                    -> pool5 [B,25088]
//   classifier  0 Linear(25088,4096) 1 ReLU 2 Dropout(0.5)          -> fc6 (after 1)
//               3 Linear(4096,4096)  4 ReLU 5 Dropout(0.5)          -> fc7 (after 4)
//               6 Linear(4096,num_classes)                          -> logits
// Inputs of at least 32x32 pixels (five 2x2 poolings).

#include "pipeline/error.h"
#include "pipeline/models/backbone_net.h"
#include "pipeline/models/init.h"

namespace pipeline {
namespace {

namespace nn = torch::nn;

constexpr int64_t kPool5 = 512 * 7 * 7;

class Vgg16Impl : public SequentialBackboneNet {
 public:
  // One past the classifier module that produces each tap: pool5, fc6 (Linear, ReLU),
  // fc7 (Dropout, Linear, ReLU), logits.
  explicit Vgg16Impl(const Backbone& spec) : SequentialBackboneNet(spec, {0, 2, 5, 7}) {
    nn::Sequential layers;
    int64_t in = 3;
    for (int64_t v : {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0}) {
      if (v == 0) {
        layers->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2).stride(2)));
        continue;
      }
      layers->push_back(nn::Conv2d(nn::Conv2dOptions(in, v, 3).padding(1)));
      layers->push_back(nn::ReLU(nn::ReLUOptions(true)));
      in = v;
    }
    features = register_module("features", layers);
    avgpool = register_module("avgpool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({7, 7})));
    classifier = register_module(
        "classifier", nn::Sequential(nn::Linear(kPool5, 4096), nn::ReLU(nn::ReLUOptions(true)),
                                     nn::Dropout(nn::DropoutOptions(0.5)), nn::Linear(4096, 4096),
                                     nn::ReLU(nn::ReLUOptions(true)), nn::Dropout(nn::DropoutOptions(0.5)),
                                     nn::Linear(4096, 1000)));
  }

  void init_like_torchvision(at::Generator& generator) override {
    // Default init in construction order (features, then classifier), then torchvision's
    // loop: kaiming normal (fan_out) and zero bias for convs, N(0, 0.01) and zero bias
    // for linears.
    const auto all = modules(/*include_self=*/false);
    for (const auto& module : all) default_init(*module, generator);
    torch::NoGradGuard no_grad;
    for (const auto& module : all) {
      if (auto* c = module->as<nn::Conv2dImpl>()) {
        kaiming_normal_fan_out(c->weight, generator);
        c->bias.zero_();
      } else if (auto* l = module->as<nn::LinearImpl>()) {
        normal_init(l->weight, 0.01, generator);
        l->bias.zero_();
      }
    }
  }
};

class Vgg16Backbone : public Backbone {
 public:
  std::string name() const override { return "vgg16"; }
  std::string title() const override { return "VGG-16"; }
  std::vector<TapInfo> taps() const override {
    return {{"pool5", kPool5}, {"fc6", 4096}, {"fc7", 4096}, {"logits", 1000}};
  }
  std::string default_tap() const override { return "fc7"; }
  int64_t min_input_side() const override { return 32; }
  PretrainedWeights weights() const override {
    return {"vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"};
  }
  std::string classifier_tap() const override { return "pool5"; }
  std::shared_ptr<BackboneNet> build() const override { return std::make_shared<Vgg16Impl>(*this); }
};

}  // namespace

const Backbone& vgg16_backbone() {
  static const Vgg16Backbone spec;
  return spec;
}

}  // namespace pipeline
