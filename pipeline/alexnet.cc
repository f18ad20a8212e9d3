#include "pipeline/alexnet.h"

#include <algorithm>
#include <sstream>

#include <fmt/ranges.h>

#include "pipeline/error.h"

namespace pipeline {
namespace {

namespace nn = torch::nn;

const std::vector<std::pair<Tap, const char*>>& tap_names() {
  static const std::vector<std::pair<Tap, const char*>> names = {
      {Tap::Pool5, "pool5"}, {Tap::Fc6, "fc6"}, {Tap::Fc7, "fc7"}, {Tap::Logits, "logits"}};
  return names;
}

std::string trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  const size_t end = s.find_last_not_of(" \t");
  return s.substr(begin, end - begin + 1);
}

// Index in `classifier` one past the module that produces each classifier tap.
size_t classifier_end(Tap tap) {
  switch (tap) {
    case Tap::Pool5: return 0;
    case Tap::Fc6: return 3;   // Dropout, Linear, ReLU
    case Tap::Fc7: return 6;   // Dropout, Linear, ReLU
    case Tap::Logits: return 7;
  }
  return 7;
}

void check_input(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != 3) {
    fail("AlexNet takes images [B,3,H,W]; got a tensor of shape {}", fmt::to_string(fmt::join(x.sizes(), "x")));
  }
  if (x.size(2) < kMinInputSide || x.size(3) < kMinInputSide) {
    fail("AlexNet needs images of at least {}x{} pixels; got {}x{} (use --image-size {} or more)",
         kMinInputSide, kMinInputSide, x.size(2), x.size(3), kMinInputSide);
  }
}

nn::Conv2dOptions conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding) {
  return nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding);
}

}  // namespace

std::string tap_name(Tap tap) {
  for (const auto& [t, name] : tap_names()) {
    if (t == tap) return name;
  }
  return "?";
}

Tap parse_tap(const std::string& name) {
  for (const auto& [t, n] : tap_names()) {
    if (name == n) return t;
  }
  usage_fail("unknown layer '{}': valid layers are pool5, fc6, fc7, logits", name);
}

std::vector<Tap> parse_taps(const std::string& comma_list) {
  std::vector<Tap> taps;
  std::stringstream in(comma_list);
  std::string item;
  while (std::getline(in, item, ',')) {
    const Tap tap = parse_tap(trim(item));
    if (std::find(taps.begin(), taps.end(), tap) != taps.end()) {
      usage_fail("layer '{}' is listed twice in '{}'", tap_name(tap), comma_list);
    }
    taps.push_back(tap);
  }
  if (taps.empty()) usage_fail("no layers given: name one or more of pool5, fc6, fc7, logits");
  return taps;
}

void check_image_size(int64_t image_size) {
  if (image_size < kMinInputSide) {
    usage_fail("--image-size {} is below {}, the smallest input AlexNet's layers accept", image_size, kMinInputSide);
  }
  if (image_size > kMaxInputSide) {
    usage_fail("--image-size {} is above {}: a 32-pixel image gains nothing from more, and one batch would not fit "
               "in memory",
               image_size, kMaxInputSide);
  }
}

int64_t tap_width(Tap tap, int64_t num_classes) {
  switch (tap) {
    case Tap::Pool5: return 256 * 6 * 6;
    case Tap::Fc6:
    case Tap::Fc7: return 4096;
    case Tap::Logits: return num_classes;
  }
  return 0;
}

nn::Sequential alexnet_classifier(int64_t num_classes) {
  return nn::Sequential(nn::Dropout(nn::DropoutOptions(0.5)), nn::Linear(tap_width(Tap::Pool5), 4096),
                        nn::ReLU(nn::ReLUOptions(true)), nn::Dropout(nn::DropoutOptions(0.5)),
                        nn::Linear(4096, 4096), nn::ReLU(nn::ReLUOptions(true)), nn::Linear(4096, num_classes));
}

AlexNetImpl::AlexNetImpl(int64_t num_classes) {
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
  classifier = register_module("classifier", alexnet_classifier(num_classes));
}

torch::Tensor AlexNetImpl::forward(torch::Tensor x) {
  return forward_taps(std::move(x), {Tap::Logits}).at(Tap::Logits);
}

std::map<Tap, torch::Tensor> AlexNetImpl::forward_taps(torch::Tensor x, const std::vector<Tap>& taps) {
  if (taps.empty()) fail("AlexNet::forward_taps: no taps asked for");
  check_input(x);
  const Tap deepest = *std::max_element(taps.begin(), taps.end());
  auto wanted = [&](Tap tap) { return std::find(taps.begin(), taps.end(), tap) != taps.end(); };

  std::map<Tap, torch::Tensor> out;
  x = torch::flatten(avgpool(features->forward(x)), 1).contiguous();
  if (wanted(Tap::Pool5)) out[Tap::Pool5] = x;
  size_t next = 0;
  for (Tap tap : {Tap::Fc6, Tap::Fc7, Tap::Logits}) {
    if (tap > deepest) break;
    for (const size_t end = classifier_end(tap); next < end; ++next) {
      x = (classifier->begin() + static_cast<ptrdiff_t>(next))->forward(x);
    }
    if (wanted(tap)) out[tap] = x;
  }
  return out;
}

void AlexNetImpl::replace_last_layer(int64_t num_classes) {
  if (num_classes < 1) fail("AlexNet needs at least one class; got {}", num_classes);
  const torch::Tensor old_weight = classifier->ptr<nn::LinearImpl>(6)->weight;
  nn::Linear last(4096, num_classes);
  last->to(old_weight.device(), old_weight.scalar_type());
  nn::Sequential rebuilt;
  for (size_t i = 0; i < 6; ++i) rebuilt->push_back(*(classifier->begin() + static_cast<ptrdiff_t>(i)));
  rebuilt->push_back(last);
  classifier = replace_module("classifier", rebuilt);
}

int64_t AlexNetImpl::num_classes() const {
  return classifier->ptr<nn::LinearImpl>(6)->options.out_features();
}

void to_channels_last(AlexNet& model) {
  torch::NoGradGuard no_grad;
  for (torch::Tensor& parameter : model->parameters()) {
    if (parameter.dim() == 4) parameter.set_data(parameter.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

}  // namespace pipeline
