#pragma once
// The settings a training run records, as one type: transfer-head and transfer-finetune
// fill it, metrics.json holds it under "settings", read_metrics returns it, and the
// reports (transfer-compare, the backbone ranking) read only it, so that a setting a
// stage renames is a compile error, not a quietly degraded report.
//
// The run's config.json stays what it was: every resolved option, the marker that the
// folder is finished and up to date. RunSettings is what a reader of results needs.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace pipeline {

struct RunSettings {
  // What was learned from.
  std::string backbone;          // registered name (models/backbone.h)
  nlohmann::json dataset;        // Dataset::describe(): name, title, classes, class_names, ...
  std::string dataset_sha256;    // the dataset's digest (datasets/dataset.h)
  int64_t image_size = 0;        // px, the network's input side; 0: not recorded (an old cache)
  bool pretrained = false;       // ImageNet weights (false: random:SEED)
  std::string normalization;     // "imagenet" | "half"
  int64_t limit_train = -1, limit_test = -1;  // --limit-*; -1: every image
  int64_t train_rows = 0;        // training images (validation included)
  int64_t test_rows = 0;         // test images scored
  int64_t skipped_images = 0;    // unreadable images left out (--skip-bad)

  // How it trained.
  int64_t epochs = 0, batch_size = 0;
  uint64_t seed = 0;
  // Adam's. For a head sweep, the chosen head's; the grid is sweep_* below.
  double lr = 0, weight_decay = 0;
  double val_fraction = 0;       // of the training images, held out (seeded)
  std::string precision;         // the training products': "fp32" | "bf16" | "fp16"
  bool test_every_epoch = false;

  // Linear probe and classifier head only ("" / empty for fine-tuning).
  std::string head;              // "linear" | "classifier"
  std::string tap;               // the layer whose features it reads
  std::string features;          // the feature cache, absolute
  std::string extract_precision; // the extraction's precision
  std::string feature_dtype;     // the cache's: "float32" | "bfloat16" | "float16"
  std::vector<double> sweep_lr, sweep_wd;  // --sweep-lr / --sweep-wd (empty: no sweep)
  int64_t sweep_seeds = 0;
  int64_t heads = 1;             // heads trained at once (1, or the sweep's size)
  // The cache's settings verbatim: what tells one extraction from another.
  nlohmann::json cache_settings = nlohmann::json::object();
};

nlohmann::json to_json(const RunSettings& settings);

// Validates every field (types, integer ranges, finite numbers, a known backbone, a
// dataset description); throws pipeline::Error naming `source` and the field.
RunSettings run_settings_from_json(const nlohmann::json& json, const std::string& source);

}  // namespace pipeline
