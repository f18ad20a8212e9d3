#pragma once
// The backbone seam: what a network is to the stages. Every stage, the report, the
// benchmarks and Makefile.runs ask backbone("name") for the network they work with;
// none names a concrete one. The networks are in this folder:
//
//   alexnet   AlexNet (torchvision)        taps pool5 9216, fc6 4096, fc7 4096, logits
//   resnet18  ResNet-18 (torchvision)      taps pool 512, logits
//   resnet50  ResNet-50 (IMAGENET1K_V1)    taps pool 2048, logits
//   vgg16     VGG-16 (no batch norm)       taps pool5 25088, fc6 4096, fc7 4096, logits
//
// A new backbone is one module here plus one line in registry.cc. The module provides
// a Backbone (below) and a BackboneNet (backbone_net.h), and must give:
//  - torchvision's state-dict names and shapes, so torchvision's weights file loads by
//    name (pipeline/weights.h), and its forward pass to float rounding;
//  - its taps (name -> width), shallow to deep, the last one "logits"; the default tap
//    (the layer before the classifier); the smallest input side it accepts;
//  - the torchvision weights file (name "<stem>-<sha256 prefix>.pth", and its URL);
//  - init_like_torchvision(generator): the parameters and buffers that
//    torch.manual_seed(SEED); torchvision.models.<name>() gives ("random:SEED");
//  - replace_classifier(N): a new N-class last layer for fine-tuning;
//  - tests: tests/backbones_test.cc against tests/fixtures/make_backbone_fixtures.py.
//
// Thread safety: descriptors are immutable singletons; use them from any thread.

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pipeline {

class BackboneNet;  // pipeline/models/backbone_net.h

struct TapInfo {
  std::string name;   // "fc7", "pool"
  int64_t width = 0;  // features per image (logits: 1000, the ImageNet classifier's)
};

struct PretrainedWeights {
  std::string file;  // "resnet18-f37072fd.pth": the hex part begins its SHA-256
  std::string url;   // where torchvision publishes it
};

class Backbone {
 public:
  virtual ~Backbone() = default;
  virtual std::string name() const = 0;   // the --backbone value: "resnet18"
  virtual std::string title() const = 0;  // for people: "ResNet-18"
  virtual std::vector<TapInfo> taps() const = 0;  // shallow to deep; the last is "logits"
  virtual std::string default_tap() const = 0;    // the layer before the classifier
  virtual int64_t min_input_side() const = 0;     // pixels
  virtual PretrainedWeights weights() const = 0;
  // The tap that transfer-head --head classifier trains the network's whole classifier
  // on ("pool5"), or "" when the classifier is one layer (a linear head is the same).
  virtual std::string classifier_tap() const { return ""; }
  // A 1000-class network, parameters default-initialised from the global torch
  // generator (load weights or call init_like_torchvision next).
  virtual std::shared_ptr<BackboneNet> build() const = 0;
};

// The registered backbone of that name. Throws pipeline::UsageError naming --backbone
// and listing the registered names for any other.
const Backbone& backbone(const std::string& name);

// The backbone a cache or run recorded (`value`, its settings' "backbone"): a
// registered name, or null for what was made before backbones were recorded (AlexNet).
// Throws pipeline::Error naming `where` for anything else.
const Backbone& recorded_backbone(const nlohmann::json& value, const std::string& where);

// Registered names, in registration order: "alexnet", "resnet18", "resnet50", "vgg16".
std::vector<std::string> backbone_names();

// "fc7" or "pool5,fc7" (spaces around names allowed) -> the names, in the order given.
// Throws pipeline::UsageError on a name the backbone lacks (listing its taps), an empty
// list or a repeated name.
std::vector<std::string> parse_taps(const Backbone& backbone, const std::string& comma_list);

// Position of `tap` in backbone.taps(); throws pipeline::UsageError for an unknown name.
size_t tap_index(const Backbone& backbone, const std::string& tap);

// Features per image at `tap`; logits have num_classes.
int64_t tap_width(const Backbone& backbone, const std::string& tap, int64_t num_classes = 1000);

// "pool5, fc6, fc7, logits"
std::string tap_list(const Backbone& backbone);

// The largest --image-size accepted (ImageNet's is 224; one batch of more would not fit).
constexpr int64_t kMaxInputSide = 1024;

// Throws pipeline::UsageError naming --image-size when `image_size` is outside
// [backbone.min_input_side(), kMaxInputSide].
void check_image_size(const Backbone& backbone, int64_t image_size);

}  // namespace pipeline
