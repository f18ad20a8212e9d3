// Tests of pipeline/weights: state dicts in and out of modules, --weights specs, and
// the seeded random init (against Python's, from tests/fixtures/alexnet_fixture.json).

#include "pipeline/weights.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "pipeline/models/alexnet.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "test_util.h"

namespace pipeline {
namespace {
using testutil::error_of;

namespace fs = std::filesystem;

using testutil::fixture;

// The module whose state_dict() tests/fixtures/tiny_state_dict.pth holds (see
// make_model_fixtures.py: class Tiny).
struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 2)));
    bn = register_module("bn", torch::nn::BatchNorm2d(3));
    fc = register_module("fc", torch::nn::Linear(4, 2));
    base = register_buffer("base", torch::zeros({3, 4}));
    view = register_buffer("view", torch::zeros({3, 3}));
    f16 = register_buffer("f16", torch::zeros({3}, torch::kHalf));
    b16 = register_buffer("b16", torch::zeros({2}, torch::kBFloat16));
    f64 = register_buffer("f64", torch::zeros({1, 2}, torch::kDouble));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Linear fc{nullptr};
  torch::Tensor base, view, f16, b16, f64;
};


bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(WeightsTest, LoadsPythonStateDictIntoModule) {
  TinyImpl tiny;
  const StateDict state = read_state_dict(fixture("tiny_state_dict.pth"));
  load_state_dict(tiny, state, "tiny_state_dict.pth");
  EXPECT_TRUE(torch::equal(tiny.view, tiny.base.t().slice(0, 1)));
  EXPECT_EQ(tiny.bn->num_batches_tracked.item<int64_t>(), 7);
  EXPECT_EQ(tiny.f16.scalar_type(), torch::kHalf);
  EXPECT_EQ(tiny.f16[2].item<float>(), 65504.0f);
  EXPECT_EQ(tiny.f64[0][0].item<double>(), 1.0 / 3.0);
  EXPECT_TRUE(torch::equal(tiny.fc->bias, torch::tensor({-5.0f, -4.75f})));
  // state_dict_of lists the same names (parameters first, then buffers).
  std::vector<std::string> ours, theirs;
  for (const auto& [k, t] : state_dict_of(tiny)) ours.push_back(k);
  for (const auto& [k, t] : state) theirs.push_back(k);
  std::sort(ours.begin(), ours.end());
  std::sort(theirs.begin(), theirs.end());
  EXPECT_EQ(ours, theirs);
}

TEST(WeightsTest, StrictLoadListsEveryProblemInOneError) {
  torch::nn::Linear linear(4, 2);
  const torch::Tensor before = linear->weight.clone();
  const StateDict state = {{"weight", torch::ones({2, 5})}, {"extra", torch::ones({1})}};
  const std::string message = error_of([&] { load_state_dict(*linear, state, "some.pth"); });
  EXPECT_TRUE(contains(message, "some.pth")) << message;
  EXPECT_TRUE(contains(message, "missing keys: bias")) << message;
  EXPECT_TRUE(contains(message, "unexpected keys: extra")) << message;
  EXPECT_TRUE(contains(message, "wrong shapes: weight ([2,5] in some.pth, [2,4] in the model)")) << message;
  EXPECT_TRUE(torch::equal(linear->weight, before));  // nothing copied
}

TEST(WeightsTest, NonStrictLoadsWhatMatches) {
  torch::nn::Linear linear(4, 2);
  const torch::Tensor bias_before = linear->bias.clone();
  const StateDict state = {{"weight", torch::full({2, 4}, 3.0, torch::kDouble)},
                           {"bias", torch::ones({7})},
                           {"extra", torch::ones({1})}};
  load_state_dict(*linear, state, "some.pth", /*strict=*/false);
  EXPECT_TRUE(torch::equal(linear->weight, torch::full({2, 4}, 3.0f)));
  EXPECT_EQ(linear->weight.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(linear->bias, bias_before));
}

TEST(WeightsTest, WrongFileForAlexNetNamesItsKeys) {
  AlexNet model;
  const std::string message =
      error_of([&] { load_weights(*model, parse_weights_source(fixture("tiny_state_dict.pth").string())); });
  EXPECT_TRUE(contains(message, "tiny_state_dict.pth")) << message;
  EXPECT_TRUE(contains(message, "missing keys: features.0.weight")) << message;
  EXPECT_TRUE(contains(message, "and 6 more")) << message;  // 16 missing, 10 shown
  EXPECT_TRUE(contains(message, "unexpected keys: base")) << message;

  EXPECT_TRUE(contains(error_of([&] { load_weights(*model, parse_weights_source("no/such.pth")); }),
                       "no such file"));
  EXPECT_TRUE(contains(
      error_of([&] { load_weights(*model, parse_weights_source(fixture("legacy_state_dict.pth").string())); }),
      "missing keys: features.0.weight"));  // read (legacy format), but not AlexNet's
  model->replace_classifier(10);
  EXPECT_TRUE(contains(error_of([&] { load_weights(*model, parse_weights_source("random:1")); }),
                       "1000-class"));
}

TEST(WeightsTest, ParsesWeightsSpecs) {
  WeightsSource random = parse_weights_source("random:3");
  EXPECT_TRUE(random.random);
  EXPECT_EQ(random.seed, 3u);
  EXPECT_EQ(parse_weights_source("random:18446744073709551615").seed, 18446744073709551615ull);
  WeightsSource file = parse_weights_source("data/alexnet-owt-7be5be79.pth");
  EXPECT_FALSE(file.random);
  EXPECT_EQ(file.file, fs::path("data/alexnet-owt-7be5be79.pth"));
  for (const char* bad : {"random:abc", "random:", "random", "", "random:-1", "random:3x", "random: 3",
                          "random:18446744073709551616"}) {
    EXPECT_THROW(parse_weights_source(bad), UsageError) << bad;
  }
}

TEST(WeightsTest, Describe) {
  WeightsInfo file{"data/alexnet-owt-7be5be79.pth", "7be5be79" + std::string(56, '0'), true};
  EXPECT_EQ(file.describe(), "alexnet-owt-7be5be79.pth (sha256 7be5be79…)");
  WeightsInfo random{"random:3", "random:3", false};
  EXPECT_EQ(random.describe(), "random init, seed 3 (NOT pretrained)");
}

TEST(WeightsTest, RandomInitIsSeededAndPrivate) {
  AlexNet a, b, c;
  torch::manual_seed(100);
  const WeightsInfo info = load_weights(*a, parse_weights_source("random:5"));
  const torch::Tensor next_global = torch::rand({4});
  EXPECT_EQ(info.spec, "random:5");
  EXPECT_EQ(info.sha256, "random:5");
  EXPECT_FALSE(info.pretrained);

  torch::manual_seed(100);
  const torch::Tensor untouched_global = torch::rand({4});
  EXPECT_TRUE(torch::equal(next_global, untouched_global));  // the global generator was not used

  torch::rand({1000});  // other random numbers drawn before: no effect
  load_weights(*b, parse_weights_source("random:5"));
  load_weights(*c, parse_weights_source("random:6"));
  const StateDict sa = state_dict_of(*a), sb = state_dict_of(*b), sc = state_dict_of(*c);
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
    EXPECT_FALSE(torch::equal(sa[i].second, sc[i].second)) << sa[i].first;
  }
}

TEST(WeightsTest, RandomInitEqualsPythonManualSeed) {
  std::ifstream in(fixture("alexnet_fixture.json"));
  const auto fixture_json = nlohmann::json::parse(in);
  AlexNet model;
  const uint64_t seed = fixture_json["random_seed"].get<uint64_t>();
  load_weights(*model, parse_weights_source("random:" + std::to_string(seed)));
  const auto& samples = fixture_json["random_samples"];
  for (const auto& [name, tensor] : state_dict_of(*model)) {
    const auto& sample = samples.at(name);
    const auto index = sample["index"].get<std::vector<int64_t>>();
    const auto value = sample["value"].get<std::vector<double>>();
    const torch::Tensor flat = tensor.flatten();
    for (size_t i = 0; i < index.size(); ++i) {
      EXPECT_EQ(static_cast<double>(flat[index[i]].item<float>()), value[i]) << name << "[" << index[i] << "]";
    }
  }
}

// The real torchvision weights, when transfer-fetch has put them in data/.
TEST(WeightsTest, LoadsTorchvisionWeightsWhenPresent) {
  const fs::path file = fs::path(TRANSFER_FIXTURES) / ".." / ".." / "data" / "alexnet-owt-7be5be79.pth";
  if (!fs::exists(file)) GTEST_SKIP() << file << " not downloaded";
  AlexNet model;
  const WeightsInfo info = load_weights(*model, parse_weights_source(file.string()));
  EXPECT_TRUE(info.pretrained);
  EXPECT_EQ(info.sha256.substr(0, 8), "7be5be79");
  EXPECT_EQ(info.sha256.size(), 64u);
  EXPECT_EQ(info.describe(), "alexnet-owt-7be5be79.pth (sha256 7be5be79…)");
}

}  // namespace
}  // namespace pipeline
