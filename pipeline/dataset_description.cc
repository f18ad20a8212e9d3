#include "pipeline/dataset_description.h"

#include <algorithm>

#include "pipeline/error.h"
#include "pipeline/metrics.h"

namespace pipeline {

nlohmann::json checked_dataset_description(const nlohmann::json& value, const std::string& where) {
  if (!value.is_object() || !value.value("name", nlohmann::json()).is_string()) {
    fail("{}: the recorded dataset is not a description: {}", where, value.dump());
  }
  const int64_t classes = integer_at(value, "classes", where, "dataset", 2, 255);  // labels are uint8
  const nlohmann::json names = value.value("class_names", nlohmann::json());
  if (!names.is_array() || static_cast<int64_t>(names.size()) != classes ||
      !std::all_of(names.begin(), names.end(), [](const nlohmann::json& n) { return n.is_string(); })) {
    fail("{}: the recorded dataset's class_names are not {} strings", where, classes);
  }
  nlohmann::json out = value;
  if (!out.value("title", nlohmann::json()).is_string()) out["title"] = out["name"];
  return out;
}

}  // namespace pipeline
