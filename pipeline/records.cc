#include "pipeline/records.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/files.h"
#include "pipeline/image_store.h"

namespace fs = std::filesystem;

namespace pipeline {

SplitRecords::SplitRecords(DatasetImages memory)
    : memory_(std::move(memory)), labels_(memory_.labels), side_(memory_.images.defined() ? memory_.images.size(2) : 0) {}

SplitRecords::SplitRecords(std::shared_ptr<const FeatureReader> store, const std::string& split)
    : store_(std::move(store)), split_(split) {
  const at::Tensor all = store_->labels(split_);
  const int64_t* label = all.data_ptr<int64_t>();
  std::vector<int64_t> kept;
  for (int64_t row = 0; row < all.size(0); ++row) {
    if (label[row] != kStoreSkippedLabel) {
      store_rows_.push_back(row);
      kept.push_back(label[row]);
    }
  }
  labels_ = at::tensor(kept, at::kLong);
  // The settings were checked equal to what open_image_store asked for, "side" included.
  side_ = store_->provenance().at("settings").at("side").get<int64_t>();
}

DatasetImages SplitRecords::rows(const std::vector<int64_t>& rows) const {
  for (const int64_t row : rows) {
    if (row < 0 || row >= size()) fail("record {} is outside the split's {} records", row, size());
  }
  const at::Tensor index = at::tensor(rows, at::kLong);
  if (!store_) return {memory_.images.index_select(0, index), memory_.labels.index_select(0, index)};
  std::vector<int64_t> stored(rows.size());
  for (size_t k = 0; k < rows.size(); ++k) stored[k] = store_rows_[static_cast<size_t>(rows[k])];
  const at::Tensor pixels = store_->read_rows(split_, kPixelsTap, stored);
  return {pixels.view({static_cast<int64_t>(rows.size()), 3, side_, side_}), labels_.index_select(0, index)};
}

DataRecords open_records(const Dataset& dataset, const RecordsOptions& options) {
  DataRecords out;
  if (dataset.decodes_files()) {
    ImageStoreOptions store;
    store.path = options.store;
    store.dataset_sha256 = options.dataset_sha256;
    store.limit_train = options.limit_train;
    store.limit_test = options.limit_test;
    auto reader = std::make_shared<const FeatureReader>(open_image_store(dataset, store));
    out.train = SplitRecords(reader, "train");
    out.test = SplitRecords(reader, "test");
    const nlohmann::json listed = reader->provenance().value("skipped", nlohmann::json::array());
    for (const auto& why : listed) {
      if (why.is_string()) out.skipped.push_back(why.get<std::string>());
    }
    out.skipped_count = reader->rows("train") - out.train.size() + reader->rows("test") - out.test.size();
  } else {
    DatasetImages train = dataset.load(Split::Train, options.limit_train);
    DatasetImages test = dataset.load(Split::Test, options.limit_test);
    out.skipped = train.skipped;
    out.skipped.insert(out.skipped.end(), test.skipped.begin(), test.skipped.end());
    out.skipped_count = static_cast<int64_t>(out.skipped.size());
    out.train = SplitRecords(std::move(train));
    out.test = SplitRecords(std::move(test));
  }
  for (const auto* split : {&out.train, &out.test}) {
    if (split->size() == 0 && out.skipped_count > 0) {
      fail("{}: every {} image was left out as unreadable ({} in all); nothing is left to use", dataset.title(),
           split == &out.train ? "training" : "test", out.skipped_count);
    }
  }
  return out;
}

fs::path image_store_path(const Dataset& dataset, const fs::path& given, const fs::path& out, bool out_is_folder,
                          const std::vector<fs::path>& inputs) {
  if (!dataset.decodes_files()) return {};
  const fs::path store = given.empty() ? default_image_store(out, out_is_folder) : output_path(given, "--image-store");
  std::vector<fs::path> refused = inputs;
  refused.push_back(dataset.folder());  // the user's images stay untouched: nothing is written among them
  refuse_output_over_inputs(store, refused, "--image-store");
  refuse_output_over_inputs(store.string() + ".partial", refused, "--image-store");
  // Not one of the stage's own outputs: --out, its partial file, or (in a run folder)
  // any file but images.h5.
  const bool clashes = out_is_folder ? (store != default_image_store(out, true) &&
                                        store.lexically_relative(out).string().rfind("..", 0) != 0)
                                     : (store == out || store.string() == out.string() + ".partial");
  if (clashes) usage_fail("--image-store {} is one of the files --out {} is made of", store.string(), out.string());
  check_cache_output(store, "--image-store", /*image_store=*/true);
  return store;
}

std::vector<int64_t> row_range(int64_t first, int64_t count) {
  std::vector<int64_t> rows(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (size_t k = 0; k < rows.size(); ++k) rows[k] = first + static_cast<int64_t>(k);
  return rows;
}

fs::path default_image_store(const fs::path& out, bool out_is_folder) {
  if (out_is_folder) return out / "images.h5";
  fs::path file = out;
  if (file.extension() == ".h5") file.replace_extension();
  return fs::path(file.string() + ".images.h5");
}

}  // namespace pipeline
