#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "pipeline/dataset_description.h"
#include "pipeline/datasets/dataset.h"
#include "pipeline/error.h"
#include "pipeline/metrics.h"

namespace pipeline {

// Each module defines its kind; a new dataset adds its line here.
const DatasetKind& cifar10_kind();   // datasets/cifar10.cc
const DatasetKind& cifar100_kind();  // datasets/cifar100.cc
const DatasetKind& folder_kind();    // datasets/folder.cc ("folder:PATH")

namespace {
const std::vector<const DatasetKind*>& registered() {
  static const std::vector<const DatasetKind*> all = {&cifar10_kind(), &cifar100_kind(), &folder_kind()};
  return all;
}
}  // namespace

std::vector<std::string> dataset_names() {
  std::vector<std::string> names;
  for (const DatasetKind* kind : registered()) names.push_back(kind->name());
  return names;
}

const DatasetKind& dataset_kind(const std::string& given) {
  const std::string name = given.rfind("folder:", 0) == 0 ? "folder" : given;
  for (const DatasetKind* kind : registered()) {
    if (kind->name() == name) return *kind;
  }
  usage_fail("unknown --dataset '{}': the datasets are cifar10, cifar100 and folder:PATH (your own images)", given);
}

void check_cifar_transform(const std::string& transform, const std::string& title) {
  if (!transform.empty() && transform != "resize") {
    usage_fail("--transform {}: {} images are 32x32 and take Resize((S,S)) only (--transform resize)", transform, title);
  }
}

void check_cifar_reading(const DatasetOptions& options, const std::string& title) {
  if (options.skip_bad) usage_fail("--skip-bad is for image folders: {} records are not decoded one by one", title);
  if (options.test_fraction != -1) {
    usage_fail("--test-fraction is for image folders of one tree: {} has its own test set", title);
  }
}

std::filesystem::path image_folder_of(const std::string& dataset) {
  if (dataset.rfind("folder:", 0) != 0) return {};
  const std::string path = dataset.substr(7);
  if (path.empty()) usage_fail("--dataset folder:PATH needs the folder's path, e.g. folder:photos");
  return path;
}

std::unique_ptr<Dataset> open_dataset(const DatasetOptions& options) {
  const std::filesystem::path images = image_folder_of(options.name);
  if (!images.empty()) return dataset_kind("folder").open(images, options);
  const DatasetKind& kind = dataset_kind(options.name);
  std::filesystem::path dir = options.data.empty() ? std::filesystem::path("data") : options.data;
  // A data root (what transfer-fetch --out was) holding the dataset's folder means that folder.
  std::error_code ec;
  if (std::filesystem::is_directory(dir / kind.folder_name(), ec)) dir /= kind.folder_name();
  return kind.open(dir, options);
}

nlohmann::json recorded_dataset(const nlohmann::json& value, const std::string& where) {
  return value.is_null() ? unrecorded_dataset() : checked_dataset_description(value, where);
}

nlohmann::json Dataset::describe() const {
  nlohmann::json j = {{"name", name()},       {"title", title()},         {"classes", classes()},
                      {"class_names", class_names()}, {"transform", transform()}};
  if (!labels().empty()) j["labels"] = labels();
  j.update(reading());
  return j;
}

DatasetImages slice_records(const DatasetImages& records, int64_t first) {
  if (first == 0) return records;
  const int64_t n = records.size();
  const int64_t from = std::min(first, n);
  return DatasetImages{records.images.slice(0, from, n).contiguous(), records.labels.slice(0, from, n).contiguous()};
}

DatasetImages Dataset::load(Split split, int64_t limit) const {
  const int64_t n = size(split);
  DatasetImages all = read(split, 0, limit < 0 ? n : std::min(limit, n));
  if (all.skipped.empty()) return all;
  const at::Tensor kept = all.labels.ge(0).nonzero().squeeze(1);
  return DatasetImages{all.images.index_select(0, kept), all.labels.index_select(0, kept), all.skipped};
}

}  // namespace pipeline
