// The comparison's inputs: two finished runs, read through the one run schema
// (RunSettings, in metrics.json), the head's sweep, and the extraction's cost.
#include <fmt/format.h>

#include <cmath>

#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/metrics.h"
#include "pipeline/models/backbone.h"
#include "pipeline/report_parts.h"
#include "pipeline/report_text.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline::report_parts {

std::vector<std::string> ReportInputs::class_names() const {
  return dataset()["class_names"].get<std::vector<std::string>>();
}

bool ReportInputs::has_study() const { return probe.backbone == "alexnet" && dataset()["name"] == "cifar10"; }

namespace {

RunMetrics read_run(const fs::path& dir, const std::string& expected, const char* flag, const char* stage) {
  RunMetrics m = read_metrics(dir);
  if (m.approach != expected) {
    usage_fail("{} holds a \"{}\" run, but {} wants a {} run folder (approach \"{}\"); are --head and --finetune "
               "swapped?",
               (dir / "metrics.json").string(), m.approach, flag, stage, expected);
  }
  // The title for the text, and a name the registry knows (else an error naming the file).
  recorded_backbone(json(m.settings.backbone), (dir / "metrics.json").string());
  return m;
}

ApproachNumbers numbers_of(const RunMetrics& m) {
  ApproachNumbers n;
  n.approach = m.approach;
  n.backbone = m.settings.backbone;
  const auto best = static_cast<size_t>(m.best_epoch - 1);  // in range: metrics_from_json checks it
  n.best_epoch = m.epochs[best].epoch;
  n.best_val_acc = m.epochs[best].val_acc;
  n.best_val_loss = m.epochs[best].val_loss;
  n.test_acc = m.test_acc;
  n.test_loss = m.test_loss;
  n.epochs = static_cast<int64_t>(m.epochs.size());
  n.train_seconds = m.train_seconds;
  n.seconds_per_epoch = n.epochs > 0 ? m.train_seconds / static_cast<double>(n.epochs) : 0;
  n.images_per_second = m.images_per_second;
  n.device = m.device;
  for (const auto& row : m.confusion)
    for (int64_t count : row) n.test_rows += count;
  if (n.test_rows == 0) n.test_rows = m.settings.test_rows;
  return n;
}

// Per-class test accuracy from a classes x classes confusion matrix; empty when there
// is none; NaN for a class with no test images.
std::vector<double> per_class_accuracy(const RunMetrics& m, int64_t classes) {
  if (m.confusion.size() != static_cast<size_t>(classes)) return {};
  std::vector<double> accuracy;
  for (size_t k = 0; k < m.confusion.size(); ++k) {
    const auto& row = m.confusion[k];  // square: metrics_from_json checks it
    int64_t total = 0;
    for (int64_t count : row) total += count;
    accuracy.push_back(total > 0 ? static_cast<double>(row[k]) / static_cast<double>(total)
                                 : std::numeric_limits<double>::quiet_NaN());
  }
  return accuracy;
}

double provenance_seconds(const json& provenance, const fs::path& file) {
  const json value = provenance.value("extract_seconds", json(nullptr));
  if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 0) {
    fail("{}: the cache's provenance has no valid \"extract_seconds\" (it predates the timing or was not made "
         "by transfer-extract); pass --extract-seconds S instead",
         file.string());
  }
  return value.get<double>();
}

void read_cache_cost(const fs::path& file, const RunMetrics& head, Extraction& e) {
  const FeatureReader cache(file);
  const json& provenance = cache.provenance();
  e.seconds = provenance_seconds(provenance, file);
  const json device = provenance.value("device", json(nullptr));
  e.device = device.is_string() ? device.get<std::string>() : "";
  if (provenance.value("resumed", json(false)) == json(true)) {
    e.notes.push_back(fmt::format("The extraction into {} was resumed after an interruption: its {} covers only "
                                  "the last part, so the probe's one-time cost is understated.",
                                  file.string(), secs(e.seconds)));
  }
  if (head.settings.cache_settings != provenance.value("settings", json(nullptr))) {
    e.notes.push_back(fmt::format("The cache {} has other settings than the cache the head was trained on, so its "
                                  "extraction time may not be that head's.",
                                  file.string()));
  }
}

Extraction extraction_cost(const ReportOptions& options, const RunMetrics& head) {
  Extraction e;
  if (std::isfinite(options.extract_seconds)) {
    e.seconds = options.extract_seconds;
    e.source = "given with --extract-seconds";
    return e;
  }
  if (!options.features.empty()) {
    read_cache_cost(options.features, head, e);
    e.source = fmt::format("provenance of {}", options.features.string());
    return e;
  }
  if (head.settings.features.empty()) {
    e.source = "unknown: the head's run names no cache; pass --features or --extract-seconds";
    return e;
  }
  const fs::path file = head.settings.features;
  try {
    read_cache_cost(file, head, e);
    e.source = fmt::format("provenance of {} (the head's cache)", file.string());
  } catch (const Error& error) {
    e = Extraction{};
    e.source = fmt::format("unknown: the head's cache could not be read ({}); pass --features or --extract-seconds",
                           error.what());
  }
  return e;
}

}  // namespace

ReportInputs read_inputs(const ReportOptions& options) {
  ReportInputs in;
  in.head = read_run(options.head, "linear-probe", "--head", "transfer-head");
  in.tune = read_run(options.finetune, "fine-tune", "--finetune", "transfer-finetune");
  const RunSettings &p = in.head.settings, &f = in.tune.settings;
  if (p.dataset["name"] != f.dataset["name"] || p.dataset.value("labels", json()) != f.dataset.value("labels", json())) {
    usage_fail("the runs are of different datasets ({} in {}, {} in {}): compare runs of one dataset",
               p.dataset["title"].get<std::string>(), options.head.string(), f.dataset["title"].get<std::string>(),
               options.finetune.string());
  }
  if (p.backbone != f.backbone) {
    usage_fail("the runs are of different backbones ({} in {}, {} in {}): compare runs of one backbone, or rank "
               "backbones with --backbones",
               p.backbone, options.head.string(), f.backbone, options.finetune.string());
  }
  in.extraction = extraction_cost(options, in.head);
  in.probe = numbers_of(in.head);
  in.probe.extract_seconds = in.extraction.seconds;
  in.finetune = numbers_of(in.tune);
  if (fs::exists(options.head / "sweep.csv")) in.sweep = read_sweep(options.head / "sweep.csv");
  const int64_t classes = p.dataset["classes"].get<int64_t>();
  in.probe_classes = per_class_accuracy(in.head, classes);
  in.tune_classes = per_class_accuracy(in.tune, classes);
  if (in.probe_classes.empty() || in.tune_classes.empty()) {  // both or neither
    in.probe_classes.clear();
    in.tune_classes.clear();
  }
  return in;
}

}  // namespace pipeline::report_parts
