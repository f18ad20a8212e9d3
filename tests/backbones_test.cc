// Tests of the backbone seam (pipeline/models/backbone.h) and of ResNet-18, ResNet-50
// and VGG-16 against torchvision 0.14 (tests/fixtures/make_backbone_fixtures.py):
// state-dict names and shapes, "random:SEED" equal to torch.manual_seed(SEED);
// torchvision.models.<name>(), every tap on real CIFAR-10 images in both memory layouts
// (with batch norm and biases set from a saved file), and batch norm in train mode.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <set>
#include <string>

#include "pipeline/error.h"
#include "pipeline/models/backbone_net.h"
#include "pipeline/weights.h"
#include "test_util.h"

namespace pipeline {
namespace {

using testutil::error_of;
using testutil::fixture;

nlohmann::json fixture_json(const std::string& name) {
  std::ifstream in(fixture("backbone_" + name + ".json"));
  return nlohmann::json::parse(in);
}

std::map<std::string, at::Tensor> as_map(const StateDict& dict) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, value] : dict) out[key] = value;
  return out;
}

double relative_l2(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble) - want.to(at::kDouble)).norm().item<double>() /
         want.to(at::kDouble).norm().item<double>();
}

// random:SEED, then the fixture's saved batch-norm statistics and biases over it.
std::shared_ptr<BackboneNet> fixture_net(const std::string& name) {
  const auto net = backbone(name).build();
  load_weights(*net, parse_weights_source("random:" + std::to_string(fixture_json(name)["seed"].get<int>())));
  const StateDict saved = read_state_dict(fixture("backbone_" + name + "_saved.pth"));
  load_state_dict(*net, saved, "saved fixture", /*strict=*/false);
  return net;
}

class BackboneTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BackboneTest, NamesAndShapesAreTorchvisions) {
  const auto net = backbone(GetParam()).build();
  std::map<std::string, std::vector<int64_t>> ours;
  for (const auto& [key, value] : state_dict_of(*net)) ours[key] = value.sizes().vec();
  std::set<std::string> theirs;
  const nlohmann::json info = fixture_json(GetParam());
  for (const auto& entry : info["keys"]) {
    const std::string key = entry[0].get<std::string>();
    theirs.insert(key);
    ASSERT_TRUE(ours.count(key)) << key << " missing";
    EXPECT_EQ(ours[key], entry[1].get<std::vector<int64_t>>()) << key;
  }
  for (const auto& [key, shape] : ours) EXPECT_TRUE(theirs.count(key)) << key << " is not torchvision's";
}

TEST_P(BackboneTest, RandomInitEqualsTorchvisions) {
  const nlohmann::json info = fixture_json(GetParam());
  const auto net = backbone(GetParam()).build();
  // Draws taken from the global generator before must not matter.
  torch::manual_seed(123);
  (void)torch::rand({7});
  const WeightsInfo weights = load_weights(*net, parse_weights_source("random:" + std::to_string(info["seed"].get<int>())));
  EXPECT_FALSE(weights.pretrained);
  const auto state = as_map(state_dict_of(*net));
  for (const auto& [key, samples] : info["init"].items()) {
    const at::Tensor flat = state.at(key).to(at::kDouble).contiguous().view(-1);
    for (const auto& sample : samples) {
      const int64_t i = sample[0].get<int64_t>();
      EXPECT_EQ(flat[i].item<double>(), sample[1].get<double>()) << key << "[" << i << "]";
    }
  }
}

TEST_P(BackboneTest, TapsEqualTorchvisionsInBothLayouts) {
  const Backbone& spec = backbone(GetParam());
  const nlohmann::json info = fixture_json(GetParam());
  const auto outputs = as_map(read_state_dict(fixture("backbone_" + GetParam() + "_outputs.pth")));
  const auto net = fixture_net(GetParam());
  net->eval();
  torch::NoGradGuard no_grad;
  std::vector<std::string> taps;
  for (const TapInfo& tap : spec.taps()) taps.push_back(tap.name);
  for (const bool channels_last : {false, true}) {
    SCOPED_TRACE(channels_last ? "channels-last" : "NCHW");
    at::Tensor x = outputs.at("input");
    if (channels_last) {
      to_channels_last(*net);
      x = x.contiguous(at::MemoryFormat::ChannelsLast);
    }
    const auto got = net->forward_taps(x, taps);
    ASSERT_EQ(got.size(), taps.size());
    for (const TapInfo& tap : spec.taps()) {
      const at::Tensor value = got.at(tap.name);
      EXPECT_EQ(value.size(1), tap.width) << tap.name;
      EXPECT_TRUE(value.is_contiguous()) << tap.name;
      const int64_t stride = info["taps"][tap.name].get<int64_t>();
      const at::Tensor columns = value.slice(1, 0, value.size(1), stride);
      EXPECT_LE(relative_l2(columns, outputs.at(tap.name)), 1e-4) << tap.name;
    }
    EXPECT_TRUE(torch::equal(net->forward(x), got.at("logits")));
  }
}

TEST_P(BackboneTest, NewClassifierAndMinimumSide) {
  const Backbone& spec = backbone(GetParam());
  const auto net = spec.build();
  net->replace_classifier(10);
  EXPECT_EQ(net->num_classes(), 10);
  net->eval();
  torch::NoGradGuard no_grad;
  const int64_t side = spec.min_input_side();
  const auto taps = net->forward_taps(torch::rand({2, 3, side, side}), {"logits", spec.default_tap()});
  EXPECT_EQ(taps.at("logits").sizes().vec(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(taps.at(spec.default_tap()).size(1), tap_width(spec, spec.default_tap()));
  EXPECT_THROW(net->forward(torch::rand({1, 3, side - 1, side})), Error);
  EXPECT_THROW(check_image_size(spec, side - 1), UsageError);
  EXPECT_NO_THROW(check_image_size(spec, side));
  // Weights are for the 1000-class network: loading after the swap is refused.
  EXPECT_NE(error_of([&] { load_weights(*net, parse_weights_source("random:0")); }).find("1000-class"),
            std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Torchvision, BackboneTest, ::testing::Values("resnet18", "resnet50", "vgg16"),
                         [](const auto& info) { return info.param; });

TEST(ResNet18Test, TrainModeBatchNormIsTorchvisions) {
  // One forward pass in train mode: batch statistics, running statistics updated
  // (momentum 0.1) and the batch counter advanced, as torchvision's .train() does.
  const auto outputs = as_map(read_state_dict(fixture("backbone_resnet18_outputs.pth")));
  const auto net = fixture_net("resnet18");
  net->train();
  torch::NoGradGuard no_grad;
  EXPECT_LE(relative_l2(net->forward(outputs.at("input")), outputs.at("train_logits")), 1e-4);
  const auto state = as_map(state_dict_of(*net));
  for (const auto& [key, want] : outputs) {
    if (key.rfind("train.", 0) != 0) continue;
    const at::Tensor got = state.at(key.substr(6));
    if (want.scalar_type() == at::kLong) {
      EXPECT_TRUE(torch::equal(got, want)) << key;
    } else {
      EXPECT_LE(relative_l2(got, want), 1e-5) << key;
    }
  }
}

TEST(BackboneSeamTest, RegistryAndTaps) {
  EXPECT_EQ(backbone_names(), (std::vector<std::string>{"alexnet", "resnet18", "resnet50", "vgg16"}));
  const std::string message = error_of([] { backbone("resnet101"); });
  EXPECT_NE(message.find("--backbone 'resnet101'"), std::string::npos) << message;
  EXPECT_NE(message.find("alexnet, resnet18, resnet50, vgg16"), std::string::npos) << message;
  EXPECT_EQ(tap_width(backbone("resnet18"), "pool"), 512);
  EXPECT_EQ(tap_width(backbone("resnet50"), "pool"), 2048);
  EXPECT_EQ(tap_width(backbone("vgg16"), "pool5"), 25088);
  EXPECT_EQ(backbone("vgg16").default_tap(), "fc7");
  EXPECT_EQ(backbone("resnet50").weights().file, "resnet50-0676ba61.pth");
  EXPECT_EQ(backbone("vgg16").weights().url, "https://download.pytorch.org/models/vgg16-397923af.pth");
  EXPECT_EQ(backbone("resnet18").classifier_tap(), "");
  EXPECT_THROW(parse_taps(backbone("resnet18"), "fc7"), UsageError);
  for (const std::string& name : backbone_names()) {
    const Backbone& spec = backbone(name);
    EXPECT_EQ(spec.taps().back().name, "logits") << name;
    // The weights file follows torchvision's naming: <name...>-<hex>.pth.
    EXPECT_EQ(spec.weights().file.rfind(name, 0), 0u) << name;
    EXPECT_EQ(spec.weights().url.substr(spec.weights().url.rfind('/') + 1), spec.weights().file) << name;
  }
}

TEST(BackboneSeamTest, AnotherBackbonesWeightsAreRefusedByName) {
  // ResNet-18's tensors (the legacy-format fixture) into AlexNet: nothing loaded, and
  // the error names the file, the backbone and the keys.
  const auto net = backbone("alexnet").build();
  const std::string file = fixture("backbone_resnet18_saved.pth").string();
  const std::string message = error_of([&] { load_weights(*net, parse_weights_source(file)); });
  EXPECT_NE(message.find(file), std::string::npos) << message;
  EXPECT_NE(message.find("alexnet"), std::string::npos) << message;
  EXPECT_NE(message.find("missing keys: features.0.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("unexpected keys: bn1.weight"), std::string::npos) << message;
}

TEST(BackboneSeamTest, OldStateDictsWithoutBatchCountersLoad) {
  // torchvision's resnet18-5c106cde.pth predates num_batches_tracked: those keys may be
  // missing (they keep their value), every other key may not.
  const auto net = backbone("resnet18").build();
  StateDict state;
  for (const auto& [key, value] : state_dict_of(*net)) {
    if (key.find("num_batches_tracked") == std::string::npos) state.emplace_back(key, value.clone());
  }
  EXPECT_NO_THROW(load_state_dict(*net, state, "old file"));
  state.pop_back();
  EXPECT_THROW(load_state_dict(*net, state, "old file"), Error);
}

TEST(BackboneSeamTest, ClassifierFromTapSharesTheNetworksLayers) {
  const auto net = backbone("vgg16").build();
  net->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::rand({1, 3, 32, 32});
  const auto taps = net->forward_taps(x, {"pool5", "logits"});
  EXPECT_TRUE(torch::allclose(net->classifier_from_tap()->forward(taps.at("pool5")), taps.at("logits")));
  EXPECT_FALSE(backbone("resnet18").build()->classifier_from_tap());
}

}  // namespace
}  // namespace pipeline
