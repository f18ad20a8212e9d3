#pragma once
// A recorded dataset description (Dataset::describe()'s shape, datasets/dataset.h) as
// read back from a file: a cache's settings or a run's settings. Pure JSON, so that the
// readers of untrusted files check it without the dataset modules.

#include <nlohmann/json.hpp>

#include <string>

namespace pipeline {

// `value` checked: an object with "name" a string, "classes" in 2..255 (labels are
// uint8), as many "class_names" strings; returned with "title" filled from the name
// when absent. Throws pipeline::Error naming `where` otherwise.
nlohmann::json checked_dataset_description(const nlohmann::json& value, const std::string& where);

}  // namespace pipeline
