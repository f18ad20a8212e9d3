// ResNet-18 and ResNet-50 exactly as torchvision.models.resnet18/resnet50 build them
// (torchvision 0.14; ResNet-50 is "v1.5", its stride on the 3x3 convolution), with the
// same parameter and buffer names, registered as "resnet18" and "resnet50".
//
//   conv1 Conv2d(3,64,k7,s2,p3) bn1 relu maxpool(3,s2,p1)
//   layer1..layer4  blocks [2,2,2,2] (BasicBlock) or [3,4,6,3] (Bottleneck), planes
//                   64,128,256,512, stride 1,2,2,2 on each layer's first block, whose
//                   downsample (conv 1x1 + bn) matches the shortcut's shape
//   avgpool AdaptiveAvgPool2d(1), flatten                 -> pool   [B,512 | 2048]
//   fc Linear(512 | 2048, num_classes)                     -> logits [B,num_classes]
// BasicBlock:  conv1 3x3(stride) bn1 relu conv2 3x3 bn2, + shortcut, relu
// Bottleneck:  conv1 1x1 bn1 relu conv2 3x3(stride) bn2 relu conv3 1x1 (x4) bn3, + shortcut, relu
// Convolutions have no bias; batch norm has eps 1e-5, momentum 0.1 (torch.nn's).

#include "pipeline/error.h"
#include "pipeline/models/backbone_net.h"
#include "pipeline/models/init.h"

namespace pipeline {
namespace {

namespace nn = torch::nn;

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

class BlockImpl : public nn::Module {
 public:
  BlockImpl(bool bottleneck, int64_t inplanes, int64_t planes, int64_t stride) : bottleneck_(bottleneck) {
    const int64_t out = planes * (bottleneck ? 4 : 1);
    // torchvision creates the downsample before the block's own layers (their default
    // init draws come in that order) but registers it last.
    nn::Sequential shortcut(nullptr);
    if (stride != 1 || inplanes != out) shortcut = nn::Sequential(conv(inplanes, out, 1, stride), nn::BatchNorm2d(out));
    if (bottleneck) {
      conv1 = register_module("conv1", conv(inplanes, planes, 1, 1));
      bn1 = register_module("bn1", nn::BatchNorm2d(planes));
      conv2 = register_module("conv2", conv(planes, planes, 3, stride));
      bn2 = register_module("bn2", nn::BatchNorm2d(planes));
      conv3 = register_module("conv3", conv(planes, out, 1, 1));
      bn3 = register_module("bn3", nn::BatchNorm2d(out));
    } else {
      conv1 = register_module("conv1", conv(inplanes, planes, 3, stride));
      bn1 = register_module("bn1", nn::BatchNorm2d(planes));
      conv2 = register_module("conv2", conv(planes, planes, 3, 1));
      bn2 = register_module("bn2", nn::BatchNorm2d(planes));
    }
    if (shortcut) downsample = register_module("downsample", shortcut);
  }

  at::Tensor forward(const at::Tensor& x) {
    at::Tensor out = torch::relu(bn1(conv1(x)));
    out = bn2(conv2(out));
    if (bottleneck_) out = bn3(conv3(torch::relu(out)));
    out = out + (downsample ? downsample->forward(x) : x);
    return torch::relu(out);
  }

  // The convolutions and linears in the order torchvision constructs them.
  std::vector<nn::Module*> construction_order() {
    std::vector<nn::Module*> order;
    if (downsample) order.push_back(downsample->ptr(0).get());
    for (nn::Conv2d* c : {&conv1, &conv2, &conv3}) {
      if (*c) order.push_back(c->get());
    }
    return order;
  }

  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  nn::Sequential downsample{nullptr};

 private:
  bool bottleneck_;
};
TORCH_MODULE(Block);

class ResNetImpl : public BackboneNet {
 public:
  ResNetImpl(const Backbone& spec, bool bottleneck, std::vector<int64_t> blocks) : BackboneNet(spec) {
    conv1 = register_module("conv1", conv(3, 64, 7, 2));
    bn1 = register_module("bn1", nn::BatchNorm2d(64));
    maxpool_ = nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1));
    int64_t inplanes = 64;
    const int64_t expansion = bottleneck ? 4 : 1;
    for (size_t l = 0; l < 4; ++l) {
      const int64_t planes = int64_t{64} << l;
      nn::Sequential layer;
      for (int64_t b = 0; b < blocks[l]; ++b) {
        layer->push_back(Block(bottleneck, inplanes, planes, b == 0 && l > 0 ? 2 : 1));
        inplanes = planes * expansion;
      }
      layers_.push_back(register_module("layer" + std::to_string(l + 1), layer));
    }
    avgpool_ = nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1));
    fc = register_module("fc", nn::Linear(inplanes, 1000));
  }

  void replace_classifier(int64_t num_classes) override {
    if (num_classes < 1) fail("{} needs at least one class; got {}", backbone().title(), num_classes);
    const at::Tensor old = fc->weight;
    nn::Linear fresh(fc->options.in_features(), num_classes);
    fresh->to(old.device(), old.scalar_type());
    fc = replace_module("fc", fresh);
  }

  int64_t num_classes() const override { return fc->options.out_features(); }

  void init_like_torchvision(at::Generator& generator) override {
    // Default init as each layer is constructed: conv1, the blocks (downsample first),
    // then fc (which keeps it).
    default_init(*conv1, generator);
    for (auto& layer : layers_) {
      for (size_t b = 0; b < layer->size(); ++b) {
        for (nn::Module* m : layer->ptr<BlockImpl>(b)->construction_order()) default_init(*m, generator);
      }
    }
    default_init(*fc, generator);
    // torchvision's loop over self.modules(): kaiming normal (fan_out) for every conv,
    // weight 1 and bias 0 for every batch norm.
    for (const auto& module : modules(/*include_self=*/false)) {
      if (auto* c = module->as<nn::Conv2dImpl>()) kaiming_normal_fan_out(c->weight, generator);
      if (auto* bn = module->as<nn::BatchNorm2dImpl>()) reset_batch_norm(*bn);
    }
  }

  nn::Conv2d conv1{nullptr};
  nn::BatchNorm2d bn1{nullptr};
  nn::Linear fc{nullptr};

 protected:
  void run(at::Tensor x, size_t deepest, const Emit& emit) override {
    x = maxpool_(torch::relu(bn1(conv1(x))));
    for (auto& layer : layers_) x = layer->forward(x);
    x = torch::flatten(avgpool_(x), 1);
    emit(0, x);
    if (deepest >= 1) emit(1, fc(x));
  }

 private:
  std::vector<nn::Sequential> layers_;
  nn::MaxPool2d maxpool_{nullptr};
  nn::AdaptiveAvgPool2d avgpool_{nullptr};
};

class ResNetBackbone : public Backbone {
 public:
  ResNetBackbone(int depth, std::string weights_file) : depth_(depth), weights_file_(std::move(weights_file)) {}
  std::string name() const override { return "resnet" + std::to_string(depth_); }
  std::string title() const override { return "ResNet-" + std::to_string(depth_); }
  std::vector<TapInfo> taps() const override { return {{"pool", bottleneck() ? 2048 : 512}, {"logits", 1000}}; }
  std::string default_tap() const override { return "pool"; }
  // The network strides by 32; below 32 pixels layer4's maps would be empty-ish (1x1 at 32).
  int64_t min_input_side() const override { return 32; }
  PretrainedWeights weights() const override {
    return {weights_file_, "https://download.pytorch.org/models/" + weights_file_};
  }
  std::shared_ptr<BackboneNet> build() const override {
    return std::make_shared<ResNetImpl>(*this, bottleneck(),
                                        bottleneck() ? std::vector<int64_t>{3, 4, 6, 3} : std::vector<int64_t>{2, 2, 2, 2});
  }

 private:
  bool bottleneck() const { return depth_ >= 50; }
  int depth_;
  std::string weights_file_;
};

}  // namespace

const Backbone& resnet18_backbone() {
  static const ResNetBackbone spec(18, "resnet18-f37072fd.pth");
  return spec;
}

const Backbone& resnet50_backbone() {
  static const ResNetBackbone spec(50, "resnet50-0676ba61.pth");
  return spec;
}

}  // namespace pipeline
