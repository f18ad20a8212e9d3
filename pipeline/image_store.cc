// Building the image store is the feature cache's writer fed with decoded records: the
// same resumable .partial file, row checks and rename, so a store is as safe to
// interrupt and as hard to fool as a cache.

#include "pipeline/image_store.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "pipeline/datasets/dataset.h"
#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/progress.h"

using nlohmann::json;

namespace pipeline {

FeatureReader open_image_store(const Dataset& dataset, const ImageStoreOptions& options) {
  if (options.batch < 1) fail("image store {}: batch must be at least 1", options.path.string());
  const int64_t rows[2] = {
      options.limit_train < 0 ? dataset.size(Split::Train) : std::min(options.limit_train, dataset.size(Split::Train)),
      options.limit_test < 0 ? dataset.size(Split::Test) : std::min(options.limit_test, dataset.size(Split::Test))};
  const int64_t side = dataset.image_side();
  const json settings = {{"kind", "image-store"},
                         {"dataset", dataset.describe()},
                         {"dataset_sha256", options.dataset_sha256},
                         {"side", side},
                         {"limit_train", options.limit_train},
                         {"limit_test", options.limit_test}};
  if (cache_matches(options.path, settings)) {
    spdlog::info("image store {} is complete and matches: not decoding again", options.path.string());
    return FeatureReader(options.path);
  }
  CacheLayout layout;
  layout.train_rows = rows[0];
  layout.test_rows = rows[1];
  layout.dtype = FeatureDtype::UInt8;
  layout.taps = {{kPixelsTap, 3 * side * side}};
  FeatureWriter writer(options.path, json{{"settings", settings}, {"data", dataset.folder().string()}}, layout);
  if (writer.resumed()) {
    spdlog::info("resuming image store {}: {} train and {} test images already decoded", writer.partial_path().string(),
                 writer.rows_done("train"), writer.rows_done("test"));
  }
  json skipped = json::array();
  for (const Split split : {Split::Train, Split::Test}) {
    const std::string name = split == Split::Train ? "train" : "test";
    const int64_t total = rows[split == Split::Train ? 0 : 1];
    int64_t row = writer.rows_done(name);
    Progress progress("decode " + name, total - row);
    while (row < total) {
      const int64_t count = std::min(options.batch, total - row);
      DatasetImages records = dataset.read(split, row, count);
      for (const std::string& why : records.skipped) {
        spdlog::warn("left out (--skip-bad): {}", why);
        skipped.push_back(why);
      }
      at::Tensor labels = records.labels.clone();
      labels.masked_fill_(labels.lt(0), kStoreSkippedLabel);
      writer.write(name, row, labels, {{kPixelsTap, records.images.reshape({count, -1})}});
      row += count;
      progress.advance(count);
    }
    progress.finish();
  }
  writer.finish(json{{"skipped", skipped}});
  return FeatureReader(options.path);
}

}  // namespace pipeline
