#include "pipeline/head.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "pipeline/datasets/dataset.h"
#include "pipeline/models/backbone.h"
#include "pipeline/batches.h"
#include "pipeline/cifar10.h"
#include "pipeline/classifier_head.h"
#include "pipeline/device.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/files.h"
#include "pipeline/random.h"
#include "pipeline/sweep_csv.h"
#include "pipeline/torch_files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline {

std::vector<HeadSetting> head_grid(const HeadOptions& options) {
  const std::vector<double> lrs = options.sweep_lr.empty() ? std::vector<double>{options.lr} : options.sweep_lr;
  const std::vector<double> wds = options.sweep_wd.empty() ? std::vector<double>{options.weight_decay} : options.sweep_wd;
  const int64_t seeds = std::max<int64_t>(1, options.sweep_seeds);
  std::vector<HeadSetting> grid;
  for (double lr : lrs)
    for (double wd : wds)
      for (int64_t s = 0; s < seeds; ++s) grid.push_back({lr, wd, options.seed + static_cast<uint64_t>(s)});
  return grid;
}

namespace {

void validate(const HeadOptions& o) {
  if (o.epochs < 1) usage_fail("--epochs must be at least 1, got {}", o.epochs);
  if (!(o.lr > 0) || !std::isfinite(o.lr)) usage_fail("--lr must be a finite number > 0, got {}", o.lr);
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay)) {
    usage_fail("--weight-decay must be a finite number >= 0, got {}", o.weight_decay);
  }
  for (double lr : o.sweep_lr)
    if (!(lr > 0) || !std::isfinite(lr)) usage_fail("--sweep-lr values must be finite and > 0, got {}", lr);
  for (double wd : o.sweep_wd)
    if (!(wd >= 0) || !std::isfinite(wd)) usage_fail("--sweep-wd values must be finite and >= 0, got {}", wd);
  if (o.sweep_seeds < 0 || o.sweep_seeds > kMaxHeads) {
    usage_fail("--sweep-seeds must be 0..{}, got {}", kMaxHeads, o.sweep_seeds);
  }
  const size_t heads = std::max<size_t>(1, o.sweep_lr.size()) * std::max<size_t>(1, o.sweep_wd.size()) *
                       static_cast<size_t>(std::max<int64_t>(1, o.sweep_seeds));
  if (heads > static_cast<size_t>(kMaxHeads)) {
    usage_fail("the sweep asks for {} heads (--sweep-lr x --sweep-wd x --sweep-seeds); at most {} train at once",
               heads, kMaxHeads);
  }
  check_val_fraction(o.val_fraction);
  if (head_grid(o).size() > 1 && !(o.val_fraction > 0)) {
    usage_fail("a sweep ranks its heads on validation: --val-fraction must be > 0");
  }
  if (o.batch_size < 1) usage_fail("--batch-size must be at least 1, got {}", o.batch_size);
  if (o.head != "linear" && o.head != "classifier") usage_fail("unknown --head '{}': use linear or classifier", o.head);
  if (o.head == "classifier" && (!o.sweep_lr.empty() || !o.sweep_wd.empty() || o.sweep_seeds > 0)) {
    usage_fail("sweeps train linear heads only; drop --sweep-* or use --head linear");
  }
  if (!o.backbone.empty()) backbone(o.backbone);
  if (!o.tap.empty()) {
    // Known before the cache is read: a layer no backbone has (the cache's backbone is
    // checked once it is read).
    if (!o.backbone.empty()) tap_index(backbone(o.backbone), o.tap);
    bool known = false;
    for (const std::string& name : backbone_names()) {
      for (const TapInfo& tap : backbone(name).taps()) known = known || tap.name == o.tap;
    }
    if (!known) usage_fail("unknown --tap '{}': no backbone has that layer (see transfer-extract --help)", o.tap);
  }
  if (o.features.empty()) usage_fail("--features is required");
  if (o.out.empty()) usage_fail("--out is required");
}

// The cache's settings, an object ({} when it has none).
json cache_settings(const FeatureReader& cache) {
  const json settings = cache.provenance().value("settings", json::object());
  return settings.is_object() ? settings : json::object();
}

// The backbone and dataset that made the cache (datasets/dataset.h, models/backbone.h).
const Backbone& backbone_of(const FeatureReader& cache) {
  return recorded_backbone(cache_settings(cache).value("backbone", json(nullptr)),
                           "feature cache " + cache.path().string());
}
json dataset_of(const FeatureReader& cache) {
  return recorded_dataset(cache_settings(cache).value("dataset", json(nullptr)), "feature cache " + cache.path().string());
}

// --tap, or the backbone's default tap when the cache has it, or the cache's only tap.
std::string resolve_tap(const HeadOptions& o, const FeatureReader& cache, const Backbone& spec) {
  const std::vector<std::string> taps = cache.taps();
  if (!o.tap.empty()) {
    cache.width(o.tap);  // a tap the cache lacks is an error naming its taps
    return o.tap;
  }
  if (std::find(taps.begin(), taps.end(), spec.default_tap()) != taps.end()) return spec.default_tap();
  if (taps.size() == 1) return taps.front();
  usage_fail("feature cache {} holds the taps {}: choose one with --tap", cache.path().string(), fmt::join(taps, ", "));
}

json config_json(const HeadOptions& o, const FeatureReader& cache) {
  const json& provenance = cache.provenance();
  return {{"stage", "transfer-head"},
          {"backbone", backbone_of(cache).name()},
          {"dataset", dataset_of(cache)},
          {"features", fs::absolute(o.features).lexically_normal().string()},
          {"cache_settings", provenance.value("settings", json::object())},
          {"tap", o.tap},
          {"head", o.head},
          {"precision", o.precision},
          {"epochs", o.epochs},
          {"lr", o.lr},
          {"weight_decay", o.weight_decay},
          {"batch_size", o.batch_size},
          {"val_fraction", o.val_fraction},
          {"seed", o.seed},
          {"sweep_lr", o.sweep_lr},
          {"sweep_wd", o.sweep_wd},
          {"sweep_seeds", o.sweep_seeds},
          {"test_every_epoch", o.test_every_epoch},
          {"optimizer", "Adam(beta1 0.9, beta2 0.999, eps 1e-8)"},
          {"train_rows", cache.rows("train")},
          {"test_rows", cache.rows("test")}};
}

// Where --head classifier's fc6/fc7 come from: the weights file named in the cache's
// provenance if it is still there and still the file the cache was made from (returned),
// else "" (random init). `how` says which, for the run's config.
std::string pretrained_classifier_file(const FeatureReader& cache, std::string& how) {
  const json& provenance = cache.provenance();
  const json file_value = provenance.contains("weights_file") ? provenance["weights_file"] : json("");
  const json settings = provenance.value("settings", json::object());
  const json sha_value = settings.is_object() ? settings.value("weights_sha256", json("")) : json("");
  if (!file_value.is_string() || !sha_value.is_string()) {
    fail("feature cache {}: its provenance's weights_file and settings.weights_sha256 must be strings",
         cache.path().string());
  }
  const std::string file = file_value.get<std::string>(), sha256 = sha_value.get<std::string>();
  if (file.empty()) {
    how = "random init (the cache was made with random weights)";
    return "";
  }
  if (!fs::exists(file) || file_digest(file, DigestAlgorithm::Sha256) != sha256) {
    how = fmt::format("random init ({} is missing or changed since the extraction)", file);
    spdlog::warn("--head classifier: {}", how);
    return "";
  }
  how = "pretrained fc6/fc7 from " + file;
  return file;
}

// What the run records for the reports (run_settings.h): the options, the chosen head
// and the cache's own settings. A key an older cache lacks is left unrecorded (its
// default); one of the wrong type is an error naming the cache.
RunSettings probe_run_settings(const HeadOptions& o, const FeatureReader& cache, const HeadSetting& chosen,
                               int64_t heads) {
  const json settings = cache_settings(cache);
  const std::string where = "feature cache " + cache.path().string();
  const auto text = [&](const json& object, const char* key) {
    const json value = object.value(key, json(""));
    if (!value.is_string()) fail("{}: \"{}\" is not a string", where, key);
    return value.get<std::string>();
  };
  // In the ranges run_settings_from_json accepts, so that the run reads back.
  const auto count = [&](const json& object, const char* key, int64_t min, int64_t absent) {
    return object.contains(key) ? integer_at(object, key, where, "provenance", min, int64_t{1} << 40) : absent;
  };
  RunSettings s;
  s.backbone = backbone_of(cache).name();
  s.dataset = dataset_of(cache);
  s.dataset_sha256 = text(settings, "dataset_sha256");
  s.image_size = count(settings, "image_size", 1, 0);
  const json pretrained = settings.value("pretrained", json(false));
  if (!pretrained.is_boolean()) fail("{}: \"pretrained\" is not true or false", where);
  s.pretrained = pretrained.get<bool>();
  s.normalization = text(settings, "normalization");
  s.limit_train = count(settings, "limit_train", -1, -1);
  s.limit_test = count(settings, "limit_test", -1, -1);
  s.train_rows = cache.rows("train");
  s.test_rows = cache.rows("test");
  s.skipped_images = count(cache.provenance(), "skipped_images", 0, 0);
  s.epochs = o.epochs;
  s.batch_size = o.batch_size;
  s.seed = o.seed;
  s.lr = chosen.lr;
  s.weight_decay = chosen.weight_decay;
  s.val_fraction = o.val_fraction;
  s.precision = o.precision;
  s.test_every_epoch = o.test_every_epoch;
  s.head = o.head;
  s.tap = o.tap;
  s.features = fs::absolute(o.features).lexically_normal().string();
  s.extract_precision = text(settings, "precision");
  s.feature_dtype = text(settings, "dtype");
  s.sweep_lr = o.sweep_lr;
  s.sweep_wd = o.sweep_wd;
  s.sweep_seeds = o.sweep_seeds;
  s.heads = heads;
  s.cache_settings = settings;
  return s;
}

void save_head(const fs::path& file, const at::Tensor& weight, const at::Tensor& bias) {
  torch::serialize::OutputArchive archive;
  archive.write("weight", weight);
  archive.write("bias", bias);
  save_torch_archive(archive, file);
}

// The sweep's leaderboard (sweep_csv.h), best first.
std::vector<SweepRow> sweep_rows(const std::vector<HeadSetting>& grid, const std::vector<MemberResult>& members,
                                 const std::vector<size_t>& ranking) {
  std::vector<SweepRow> rows;
  for (size_t r = 0; r < ranking.size(); ++r) {
    const size_t m = ranking[r];
    const EpochRecord& best = members[m].epochs[members[m].best_epoch - 1];
    SweepRow row;
    row.rank = static_cast<int64_t>(r + 1);
    row.lr = grid[m].lr;
    row.weight_decay = grid[m].weight_decay;
    row.init_seed = grid[m].init_seed;
    row.best_epoch = members[m].best_epoch;
    row.best_val_acc = best.val_acc;
    row.best_val_loss = best.val_loss;
    row.test_acc = members[m].test_acc;
    row.test_loss = members[m].test_loss;
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

HeadSummary run_head(const HeadOptions& given) {
  validate(given);
  HeadOptions options = given;
  options.out = output_path(given.out, "--out");
  refuse_output_over_inputs(options.out, {options.features}, "--out");
  // Before any work: writable, a run folder (never the user's files), and this run's alone.
  const FolderLock lock(options.out, "transfer-head run", {"config.json", "metrics.json", "history.csv", "head.pt", "sweep.csv"});
  // Heads train on the CPU; fp16 there is a usage error.
  const Compute compute = resolve_compute({"cpu", options.precision, options.threads});
  keep_freed_memory();  // batch after batch (16 MB per gathered scoring batch): page faults otherwise (device.h)
  const auto read_start = std::chrono::steady_clock::now();
  FeatureReader cache(options.features);
  if (cache.dtype() == FeatureDtype::UInt8) {
    fail("{} is an image store (decoded images), not a feature cache: pass the cache transfer-extract wrote",
         options.features.string());
  }
  const Backbone& spec = backbone_of(cache);
  if (!options.backbone.empty() && options.backbone != spec.name()) {
    usage_fail("--backbone {}: feature cache {} holds {} features", options.backbone, options.features.string(),
               spec.title());
  }
  if (!options.tap.empty()) tap_index(spec, options.tap);  // a layer the backbone lacks: usage error
  if (options.head == "classifier") {
    if (spec.classifier_tap().empty()) {
      usage_fail("--head classifier: {} has a one-layer classifier, which --head linear trains", spec.title());
    }
    if (options.tap.empty()) options.tap = spec.classifier_tap();
    if (options.tap != spec.classifier_tap()) {
      usage_fail("--head classifier is {}'s whole classifier and trains on {}: use --tap {} on a cache extracted with "
                 "--taps {}",
                 spec.title(), spec.classifier_tap(), spec.classifier_tap(), spec.classifier_tap());
    }
  }
  options.tap = resolve_tap(options, cache, spec);
  json config = config_json(options, cache);
  std::string classifier_weights;  // "": random init
  if (options.head == "classifier") {
    // In the config, so that a weights file that comes back (or changes) retrains.
    std::string how;
    classifier_weights = pretrained_classifier_file(cache, how);
    config["classifier_init"] = how;
  }
  HeadSummary summary;
  if (!options.force && run_is_up_to_date(options.out, config)) {
    spdlog::info("{} is up to date with these settings and this cache: nothing to do (--force retrains)",
                 options.out.string());
    summary.up_to_date = true;
    summary.heads = static_cast<int64_t>(head_grid(options).size());
    summary.best = read_metrics(options.out);
    return summary;
  }

  // Rounded once, here, to what the products take (halves the memory for bf16).
  const at::Tensor train_x = cache.read("train", options.tap).to(compute.dtype()), train_y = cache.labels("train");
  const at::Tensor test_x = cache.read("test", options.tap).to(compute.dtype()), test_y = cache.labels("test");
  const json dataset = dataset_of(cache);
  const int64_t classes = dataset["classes"].get<int64_t>();
  for (const at::Tensor& labels : {train_y, test_y}) {
    if (labels.numel() > 0 && labels.max().item<int64_t>() >= classes) {
      fail("{} holds label {}: {} labels are 0..{}", options.features.string(), labels.max().item<int64_t>(),
           dataset.value("title", "the dataset's"), classes - 1);
    }
  }
  summary.read_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - read_start).count();
  spdlog::info("read {} {} features ({} + {} rows x {}) in {:.2f} s", options.features.string(), options.tap,
               train_x.size(0), test_x.size(0), train_x.size(1), summary.read_seconds);

  const TrainValSplit split = split_train_val(train_x.size(0), options.val_fraction, options.seed);
  json run_config = config;
  run_config["split"] = split_fingerprint(split);
  TrainData data;
  data.train_rows = split.train;
  data.val_rows = split.val;
  data.test_rows.resize(static_cast<size_t>(test_x.size(0)));
  for (int64_t i = 0; i < test_x.size(0); ++i) data.test_rows[i] = i;
  const std::vector<HeadSetting> grid = head_grid(options);
  std::unique_ptr<LinearHeads> linear;
  std::unique_ptr<ClassifierHead> classifier;
  if (options.head == "classifier") {
    const auto pretrained =
        classifier_weights.empty() ? nullptr : std::make_unique<StateDict>(read_state_dict(classifier_weights));
    classifier = std::make_unique<ClassifierHead>(spec, classes, options.lr, options.weight_decay, options.seed,
                                                  pretrained.get(), compute);
  } else {
    linear = std::make_unique<LinearHeads>(train_x.size(1), classes, grid, compute.dtype());
  }
  data.make_batch = [&](Part part, const std::vector<int64_t>& rows) {
    const at::Tensor index = torch::tensor(rows, torch::kInt64);
    const bool test = part == Part::Test;
    const at::Tensor& x = test ? test_x : train_x;
    const at::Tensor labels = (test ? test_y : train_y).index_select(0, index);
    // A lone head is memory-bound: gathering a step's 128 rows (2 MB) cost ~20 % of its
    // time, and each epoch's validation rows (160 MB at 10,000 x 4,096) more.
    if (linear && linear->reads_rows_in_place()) return Batch{at::Tensor(), labels, x, index};
    return Batch{x.index_select(0, index), labels};
  };

  Trainable& heads = linear ? static_cast<Trainable&>(*linear) : *classifier;
  LoopOptions loop;
  loop.epochs = options.epochs;
  loop.batch_size = options.batch_size;
  loop.seed = options.seed;
  loop.test_every_epoch = options.test_every_epoch;
  loop.eval_batch_size = kHeadEvalBatchSize;
  loop.label = grid.size() > 1 ? fmt::format("head sweep ({} heads)", grid.size()) : "head";
  const LoopResult result = run_training(heads, data, loop);

  // Rank by best validation accuracy (ties: lower validation loss).
  std::vector<size_t> ranking(grid.size());
  for (size_t i = 0; i < ranking.size(); ++i) ranking[i] = i;
  auto best_record = [&](size_t m) { return result.members[m].epochs[result.members[m].best_epoch - 1]; };
  std::stable_sort(ranking.begin(), ranking.end(), [&](size_t a, size_t b) {
    const EpochRecord ra = best_record(a), rb = best_record(b);
    if (ra.val_acc != rb.val_acc) return ra.val_acc > rb.val_acc;
    return ra.val_loss < rb.val_loss;
  });
  const size_t best = ranking.front();

  RunMetrics metrics;
  metrics.approach = linear ? "linear-probe" : "classifier-head";
  metrics.settings = probe_run_settings(options, cache, grid[best], static_cast<int64_t>(grid.size()));
  metrics.config = run_config;
  metrics.config["best_setting"] = {{"lr", grid[best].lr}, {"weight_decay", grid[best].weight_decay},
                                    {"init_seed", grid[best].init_seed}};
  metrics.epochs = result.members[best].epochs;
  metrics.best_epoch = result.members[best].best_epoch;
  metrics.test_loss = result.members[best].test_loss;
  metrics.test_acc = result.members[best].test_acc;
  metrics.train_seconds = result.train_seconds;
  metrics.images_per_second = result.images_per_second;
  metrics.device = compute.describe();
  metrics.confusion = result.members[best].confusion;

  // config.json goes last: it is what marks the folder as finished and up to date.
  std::error_code ignored;
  fs::remove(options.out / "config.json", ignored);
  write_metrics(options.out, metrics);
  if (linear) {
    save_head(options.out / "head.pt", linear->weight(best), linear->bias(best));
  } else {
    classifier->save((options.out / "head.pt").string());
  }
  if (grid.size() > 1) {
    write_file_atomic(options.out / "sweep.csv", sweep_csv_text(sweep_rows(grid, result.members, ranking)));
  } else {
    fs::remove(options.out / "sweep.csv", ignored);
  }
  write_file_atomic(options.out / "config.json", json_file_text(config));
  summary.best = metrics;
  summary.heads = static_cast<int64_t>(grid.size());
  return summary;
}

}  // namespace pipeline
