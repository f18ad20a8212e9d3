#include "pipeline/weights.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <charconv>
#include <cmath>
#include <map>

#include "pipeline/models/backbone_net.h"
#include "pipeline/models/backbone.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/pickle.h"

namespace pipeline {
namespace {

constexpr const char* kRandomPrefix = "random:";
constexpr int64_t kImageNetClasses = 1000;
constexpr const char* kBatchesTracked = ".num_batches_tracked";

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string shape_of(const at::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ",")); }

// "a, b, c" -- at most 10 names, then "and N more".
std::string name_list(const std::vector<std::string>& names) {
  constexpr size_t kShown = 10;
  std::vector<std::string> shown(names.begin(), names.begin() + static_cast<ptrdiff_t>(std::min(names.size(), kShown)));
  std::string out = fmt::format("{}", fmt::join(shown, ", "));
  if (names.size() > kShown) out += fmt::format(" and {} more", names.size() - kShown);
  return out;
}

}  // namespace

StateDict read_state_dict(const std::filesystem::path& file) { return read_torch_save_dict(file); }

void load_state_dict(torch::nn::Module& module, const StateDict& state, const std::string& source,
                     bool strict) {
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) targets.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/true)) targets.emplace_back(item.key(), item.value());

  std::map<std::string, const at::Tensor*> given;
  for (const auto& [key, tensor] : state) given[key] = &tensor;

  std::vector<std::string> missing, unexpected, wrong_shape;
  std::vector<std::pair<torch::Tensor*, const at::Tensor*>> copies;
  std::map<std::string, bool> known;
  for (auto& [name, target] : targets) {
    known[name] = true;
    auto it = given.find(name);
    if (it == given.end()) {
      // As PyTorch's BatchNorm does for state dicts saved before 0.4.1 (e.g. torchvision's
      // resnet18-5c106cde.pth): a missing batch counter keeps its value.
      if (!ends_with(name, kBatchesTracked)) missing.push_back(name);
    } else if (it->second->sizes() != target.sizes()) {
      wrong_shape.push_back(fmt::format("{} ({} in {}, {} in the model)", name, shape_of(*it->second),
                                        source, shape_of(target)));
    } else {
      copies.emplace_back(&target, it->second);
    }
  }
  for (const auto& [key, tensor] : state) {
    if (!known.count(key)) unexpected.push_back(key);
  }

  if (strict && (!missing.empty() || !unexpected.empty() || !wrong_shape.empty())) {
    std::vector<std::string> parts;
    if (!missing.empty()) parts.push_back(fmt::format("missing keys: {}", name_list(missing)));
    if (!unexpected.empty()) parts.push_back(fmt::format("unexpected keys: {}", name_list(unexpected)));
    if (!wrong_shape.empty()) parts.push_back(fmt::format("wrong shapes: {}", name_list(wrong_shape)));
    fail("{}: the state dict does not fit the model ({}); nothing was loaded", source,
         fmt::join(parts, "; "));
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, value] : copies) target->copy_(*value);
}

StateDict state_dict_of(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value().detach());
  for (const auto& item : module.named_buffers(/*recurse=*/true)) out.emplace_back(item.key(), item.value().detach());
  return out;
}

WeightsSource parse_weights_source(const std::string& spec) {
  if (spec.empty()) usage_fail("no weights given: pass a torch.save file or random:SEED");
  WeightsSource source;
  if (spec == "random") usage_fail("weights 'random' need a seed: random:SEED, e.g. random:0");
  if (spec.rfind(kRandomPrefix, 0) == 0) {
    const std::string digits = spec.substr(std::string(kRandomPrefix).size());
    uint64_t seed = 0;
    const char* end = digits.data() + digits.size();
    const auto [ptr, ec] = std::from_chars(digits.data(), end, seed);
    if (digits.empty() || ec != std::errc() || ptr != end) {
      usage_fail("bad weights '{}': the seed after random: must be a non-negative integer "
                 "below 2^64, e.g. random:0",
                 spec);
    }
    source.random = true;
    source.seed = seed;
    return source;
  }
  source.file = spec;
  return source;
}

std::string WeightsInfo::describe() const {
  if (!pretrained) {
    const std::string seed = sha256.rfind(kRandomPrefix, 0) == 0 ? sha256.substr(7) : sha256;
    return fmt::format("random init, seed {} (NOT pretrained)", seed);
  }
  return fmt::format("{} (sha256 {}…)", std::filesystem::path(spec).filename().string(), sha256.substr(0, 8));
}

WeightsInfo load_weights(BackboneNet& model, const WeightsSource& source) {
  const Backbone& spec = model.backbone();
  if (model.num_classes() != kImageNetClasses) {
    fail("ImageNet weights need {}'s 1000-class last layer, but this model has {} classes; "
         "load the weights first, then call replace_classifier",
         spec.title(), model.num_classes());
  }
  WeightsInfo info;
  if (source.random) {
    info.spec = fmt::format("{}{}", kRandomPrefix, source.seed);
    info.sha256 = info.spec;
    info.pretrained = false;
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(source.seed);
    model.init_like_torchvision(generator);
    return info;
  }
  info.spec = source.file.string();
  const StateDict state = read_state_dict(source.file);
  load_state_dict(model, state, fmt::format("{} (as {} weights)", info.spec, spec.name()), /*strict=*/true);
  info.sha256 = file_digest(source.file, DigestAlgorithm::Sha256);
  info.pretrained = true;
  return info;
}

std::string resolve_weights(const std::string& spec, const Backbone& backbone) {
  const std::string file = backbone.weights().file;
  if (spec.empty()) return "data/" + file;
  if (spec.rfind(kRandomPrefix, 0) == 0) return spec;
  std::error_code ec;
  if (spec.back() == '/' || std::filesystem::is_directory(spec, ec)) return (std::filesystem::path(spec) / file).string();
  return spec;
}

}  // namespace pipeline
