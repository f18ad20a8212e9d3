#include "pipeline/models/backbone.h"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <sstream>

#include "pipeline/error.h"
#include "pipeline/models/registry.h"

namespace pipeline {
namespace {

std::string trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  const size_t end = s.find_last_not_of(" \t");
  return s.substr(begin, end - begin + 1);
}

}  // namespace

const Backbone& backbone(const std::string& name) {
  for (const Backbone* b : registered_backbones()) {
    if (b->name() == name) return *b;
  }
  usage_fail("unknown --backbone '{}': the backbones are {}", name, fmt::join(backbone_names(), ", "));
}

const Backbone& recorded_backbone(const nlohmann::json& value, const std::string& where) {
  if (value.is_null()) return backbone("alexnet");
  if (!value.is_string()) fail("{}: the recorded backbone is not a name: {}", where, value.dump());
  try {
    return backbone(value.get<std::string>());
  } catch (const UsageError& e) {
    fail("{} was made by a backbone this build does not have: {}", where, e.what());
  }
}

std::vector<std::string> backbone_names() {
  std::vector<std::string> names;
  for (const Backbone* b : registered_backbones()) names.push_back(b->name());
  return names;
}

std::string tap_list(const Backbone& backbone) {
  std::vector<std::string> names;
  for (const TapInfo& tap : backbone.taps()) names.push_back(tap.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

size_t tap_index(const Backbone& backbone, const std::string& tap) {
  const std::vector<TapInfo> taps = backbone.taps();
  for (size_t i = 0; i < taps.size(); ++i) {
    if (taps[i].name == tap) return i;
  }
  usage_fail("unknown layer '{}' for {}: valid layers are {}", tap, backbone.name(), tap_list(backbone));
}

int64_t tap_width(const Backbone& backbone, const std::string& tap, int64_t num_classes) {
  const size_t i = tap_index(backbone, tap);
  return tap == "logits" ? num_classes : backbone.taps()[i].width;
}

std::vector<std::string> parse_taps(const Backbone& backbone, const std::string& comma_list) {
  std::vector<std::string> taps;
  std::stringstream in(comma_list);
  std::string item;
  while (std::getline(in, item, ',')) {
    const std::string tap = trim(item);
    tap_index(backbone, tap);  // an unknown name is a usage error
    if (std::find(taps.begin(), taps.end(), tap) != taps.end()) {
      usage_fail("layer '{}' is listed twice in '{}'", tap, comma_list);
    }
    taps.push_back(tap);
  }
  if (taps.empty()) usage_fail("no layers given: name one or more of {}", tap_list(backbone));
  return taps;
}

void check_image_size(const Backbone& backbone, int64_t image_size) {
  if (image_size < backbone.min_input_side()) {
    usage_fail("--image-size {} is below {}, the smallest input {}'s layers accept", image_size,
               backbone.min_input_side(), backbone.title());
  }
  if (image_size > kMaxInputSide) {
    usage_fail("--image-size {} is above {}: a 32-pixel image gains nothing from more, and one batch would not fit "
               "in memory",
               image_size, kMaxInputSide);
  }
}

}  // namespace pipeline
