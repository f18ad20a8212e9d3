// Tests of pipeline/models/alexnet: the model against torchvision's outputs
// (tests/fixtures/make_model_fixtures.py), its names, taps and layouts.

#include "pipeline/models/alexnet.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "pipeline/error.h"
#include "pipeline/weights.h"
#include "test_util.h"

namespace pipeline {
namespace {

namespace fs = std::filesystem;

using testutil::fixture;

nlohmann::json alexnet_fixture() {
  std::ifstream in(fixture("alexnet_fixture.json"));
  return nlohmann::json::parse(in);
}

// The weights of make_model_fixtures.py, in the same integer and double operations:
// w = float32(((i*mul + k*k_mul) mod mod - half) / div / sqrt(fan_in)).
StateDict formula_weights(const AlexNet& model, const nlohmann::json& recipe) {
  StateDict state;
  const StateDict names = state_dict_of(*model);
  for (size_t k = 0; k < names.size(); ++k) {
    const auto& [name, like] = names[k];
    const std::string layer = name.substr(0, name.rfind('.'));
    const torch::Tensor* weight = nullptr;
    for (const auto& [n, t] : names) {
      if (n == layer + ".weight") weight = &t;
    }
    const double fan_in = static_cast<double>(weight->numel() / weight->size(0));
    torch::Tensor r = torch::arange(like.numel(), torch::kLong);
    r.mul_(recipe["mul"].get<int64_t>()).add_(static_cast<int64_t>(k) * recipe["k_mul"].get<int64_t>());
    r = r.remainder_(recipe["mod"].get<int64_t>()).sub_(recipe["half"].get<int64_t>()).to(torch::kDouble);
    r.div_(recipe["div"].get<double>()).div_(std::sqrt(fan_in));
    state.emplace_back(name, r.to(torch::kFloat).reshape(like.sizes()));
  }
  return state;
}

// Input b of make_model_fixtures.py: x = float32(((j*mul + b*b_mul + add) mod mod - half) / div).
torch::Tensor formula_input(const nlohmann::json& recipe, int64_t b, int64_t side) {
  torch::Tensor j = torch::arange(3 * side * side, torch::kLong);
  j.mul_(recipe["mul"].get<int64_t>()).add_(b * recipe["b_mul"].get<int64_t>() + recipe["add"].get<int64_t>());
  j = j.remainder_(recipe["mod"].get<int64_t>()).sub_(recipe["half"].get<int64_t>()).to(torch::kDouble);
  return j.div_(recipe["div"].get<double>()).to(torch::kFloat).reshape({1, 3, side, side});
}

double relative_l2(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kDouble) - want.to(torch::kDouble)).norm().item<double>() /
         want.to(torch::kDouble).norm().item<double>();
}

const std::vector<std::string> kAllTaps = {"pool5", "fc6", "fc7", "logits"};

TEST(AlexNetTest, TapNames) {
  // Bound to the registry's entry itself: GCC 14 warns of a dangling reference when a
  // reference is bound to backbone("alexnet") (a temporary string argument).
  const Backbone& alexnet = alexnet_backbone();
  EXPECT_EQ(&backbone("alexnet"), &alexnet);
  EXPECT_EQ(tap_list(alexnet), "pool5, fc6, fc7, logits");
  EXPECT_EQ(alexnet.default_tap(), "fc7");
  EXPECT_EQ(parse_taps(alexnet, "pool5, fc7"), (std::vector<std::string>{"pool5", "fc7"}));
  EXPECT_EQ(tap_width(alexnet, "pool5"), 9216);
  EXPECT_EQ(tap_width(alexnet, "fc6"), 4096);
  EXPECT_EQ(tap_width(alexnet, "fc7"), 4096);
  EXPECT_EQ(tap_width(alexnet, "logits"), 1000);
  EXPECT_EQ(tap_width(alexnet, "logits", 10), 10);
  try {
    parse_taps(alexnet, "fc8");
    FAIL() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("pool5, fc6, fc7, logits"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_taps(alexnet, ""), UsageError);
  EXPECT_THROW(parse_taps(alexnet, "fc7,fc7"), UsageError);
  EXPECT_THROW(parse_taps(alexnet, "fc7,,fc6"), UsageError);
  EXPECT_THROW(parse_taps(alexnet, "pool"), UsageError);  // ResNet's name, not AlexNet's
}

TEST(AlexNetTest, ParameterNamesAndShapesAreTorchvisions) {
  AlexNet model;
  const StateDict state = state_dict_of(*model);
  const auto keys = alexnet_fixture()["keys"];
  ASSERT_EQ(state.size(), keys.size());
  for (size_t i = 0; i < state.size(); ++i) {
    EXPECT_EQ(state[i].first, keys[i]["key"].get<std::string>());
    EXPECT_EQ(state[i].second.sizes().vec(), keys[i]["shape"].get<std::vector<int64_t>>()) << state[i].first;
  }
  EXPECT_EQ(state.front().first, "features.0.weight");
  EXPECT_EQ(state.back().first, "classifier.6.bias");
}

// Runs the fixture's inputs through `model` (in `format`) and compares every tap with
// torchvision's. Returns the largest relative L2 error.
double compare_with_torchvision(AlexNet& model, const nlohmann::json& recipes, torch::MemoryFormat format) {
  const auto outputs = read_state_dict(fixture("alexnet_outputs.pth"));
  auto expected = [&](int64_t b, const std::string& tap) {
    const std::string key = "input" + std::to_string(b) + "." + tap;
    for (const auto& [k, t] : outputs) {
      if (k == key) return t;
    }
    ADD_FAILURE() << key << " missing from the fixture";
    return torch::Tensor();
  };
  // The two 224 px images as one batch, the 64 px one alone.
  std::vector<std::vector<int64_t>> batches(2);
  for (const auto& image : recipes["inputs"]["images"]) {
    batches[image["side"].get<int64_t>() == 224 ? 0 : 1].push_back(image["b"].get<int64_t>());
  }
  torch::NoGradGuard no_grad;
  double worst = 0;
  for (const auto& batch : batches) {
    const int64_t side = batch.front() == 2 ? 64 : 224;
    std::vector<torch::Tensor> images;
    for (int64_t b : batch) images.push_back(formula_input(recipes["inputs"], b, side));
    const torch::Tensor x = torch::cat(images).contiguous(format);
    const auto taps = model->forward_taps(x, kAllTaps);
    EXPECT_EQ(taps.size(), 4u);
    for (size_t i = 0; i < batch.size(); ++i) {
      for (const std::string& tap : kAllTaps) {
        const torch::Tensor got = taps.at(tap)[static_cast<int64_t>(i)];
        const double error = relative_l2(got, expected(batch[i], tap));
        EXPECT_LE(error, 1e-5) << "input " << batch[i] << " " << tap;
        worst = std::max(worst, error);
      }
    }
    EXPECT_TRUE(torch::equal(model->forward(x), taps.at("logits")));
  }
  return worst;
}

TEST(AlexNetTest, MatchesTorchvisionInBothLayouts) {
  const auto recipes = alexnet_fixture();
  AlexNet model;
  load_state_dict(*model, formula_weights(model, recipes["weights"]), "formula weights");
  model->eval();
  const double contiguous = compare_with_torchvision(model, recipes, torch::MemoryFormat::Contiguous);
  to_channels_last(*model);
  EXPECT_TRUE(model->features[0]->as<torch::nn::Conv2d>()->weight.is_contiguous(torch::MemoryFormat::ChannelsLast));
  const double channels_last = compare_with_torchvision(model, recipes, torch::MemoryFormat::ChannelsLast);
  RecordProperty("max_relative_l2_contiguous", std::to_string(contiguous));
  RecordProperty("max_relative_l2_channels_last", std::to_string(channels_last));
  std::printf("max relative L2 error vs torchvision: contiguous %.3g, channels-last %.3g\n", contiguous,
              channels_last);
}

TEST(AlexNetTest, ToChannelsLastKeepsParameterObjects) {
  AlexNet model;
  const auto before = model->parameters();
  const torch::Tensor values = model->features[0]->as<torch::nn::Conv2d>()->weight.clone();
  to_channels_last(*model);
  const auto after = model->parameters();
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(before[i].is_same(after[i]));
    if (after[i].dim() == 4) {
      EXPECT_TRUE(after[i].is_contiguous(torch::MemoryFormat::ChannelsLast));
    }
  }
  EXPECT_TRUE(torch::equal(model->features[0]->as<torch::nn::Conv2d>()->weight, values));
}

// Gives a classifier Linear a weight of the wrong shape: running it would throw.
void break_linear(AlexNet& model, int index) {
  torch::NoGradGuard no_grad;
  model->classifier[index]->as<torch::nn::Linear>()->weight.set_data(torch::zeros({1, 1}));
}

TEST(AlexNetTest, ForwardTapsStopsAfterDeepestTap) {
  AlexNet model;
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::rand({2, 3, 64, 64});
  break_linear(model, 4);  // fc7's Linear
  const auto fc6 = model->forward_taps(x, {"fc6", "pool5"});
  ASSERT_EQ(fc6.size(), 2u);
  EXPECT_EQ(fc6.at("fc6").sizes().vec(), (std::vector<int64_t>{2, 4096}));
  EXPECT_ANY_THROW(model->forward_taps(x, {"fc7"}));
  break_linear(model, 1);  // fc6's Linear
  const auto pool5 = model->forward_taps(x, {"pool5"});
  ASSERT_EQ(pool5.size(), 1u);
  EXPECT_EQ(pool5.at("pool5").sizes().vec(), (std::vector<int64_t>{2, 9216}));
  EXPECT_TRUE(pool5.at("pool5").is_contiguous());
}

TEST(AlexNetTest, RejectsBadInputs) {
  AlexNet model;
  torch::NoGradGuard no_grad;
  EXPECT_THROW(model->forward(torch::rand({1, 3, 62, 224})), Error);
  EXPECT_THROW(model->forward(torch::rand({1, 1, 224, 224})), Error);
  EXPECT_THROW(model->forward(torch::rand({3, 224, 224})), Error);
  EXPECT_THROW(model->forward_taps(torch::rand({1, 3, 64, 64}), {}), Error);
  EXPECT_EQ(model->forward(torch::rand({1, 3, 63, 63})).sizes().vec(), (std::vector<int64_t>{1, 1000}));
}

TEST(AlexNetTest, ReplaceLastLayer) {
  AlexNet model;
  const torch::Tensor fc7_weight = model->classifier[4]->as<torch::nn::Linear>()->weight;
  torch::manual_seed(11);
  model->replace_classifier(10);
  torch::manual_seed(11);
  torch::nn::Linear reference(4096, 10);

  EXPECT_EQ(model->num_classes(), 10);
  const StateDict state = state_dict_of(*model);
  EXPECT_EQ(state.back().first, "classifier.6.bias");
  EXPECT_EQ(state.back().second.sizes().vec(), (std::vector<int64_t>{10}));
  EXPECT_TRUE(torch::equal(model->classifier[6]->as<torch::nn::Linear>()->weight, reference->weight));
  EXPECT_TRUE(torch::equal(model->classifier[6]->as<torch::nn::Linear>()->bias, reference->bias));
  EXPECT_TRUE(model->classifier[4]->as<torch::nn::Linear>()->weight.is_same(fc7_weight));
  EXPECT_EQ(model->parameters().size(), 16u);
  torch::NoGradGuard no_grad;
  model->eval();
  const auto taps = model->forward_taps(torch::rand({2, 3, 64, 64}), {"logits"});
  EXPECT_EQ(taps.at("logits").sizes().vec(), (std::vector<int64_t>{2, 10}));
}

}  // namespace
}  // namespace pipeline
