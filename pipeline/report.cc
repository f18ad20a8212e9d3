#include "pipeline/report.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "pipeline/cifar10.h"
#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/files.h"
#include "pipeline/metrics.h"
#include "pipeline/datasets/dataset.h"
#include "pipeline/models/backbone.h"
#include "pipeline/plots.h"
#include "pipeline/report_text.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline {

double ApproachNumbers::total_seconds() const {
  return std::isfinite(extract_seconds) ? extract_seconds + train_seconds : train_seconds;
}

namespace {

constexpr const char* kPlotNames[] = {"loss.svg", "accuracy.svg", "time.svg", "per_class.svg"};
constexpr size_t kSweepRowsShown = 10;
constexpr size_t kClassesShownEachEnd = 10;  // report.md's per-class table beyond 20 classes

// ---- formatting -------------------------------------------------------------------

std::string capitalized(std::string text) {
  if (!text.empty()) text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[0])));
  return text;
}


// "cpu (2 threads), fp32" -> "cpu (2 threads)": the hardware without the precision.
std::string hardware(const std::string& device) {
  const size_t end = device.find("), ");
  return end == std::string::npos ? device : device.substr(0, end + 1);
}

// ---- reading the runs ---------------------------------------------------------------

// The value at a path of keys in a JSON object, or null when any step is missing.
json lookup(const json& object, std::initializer_list<const char*> keys) {
  const json* at = &object;
  for (const char* key : keys) {
    if (!at->is_object() || !at->contains(key)) return nullptr;
    at = &(*at)[key];
  }
  return *at;
}

// The settings of a run that the study fixed, gathered from either kind of config.
struct RunSettings {
  std::string backbone = "alexnet";
  json dataset;  // describe() of the run's dataset (datasets/dataset.h)
  json image_size, pretrained, train_rows, test_rows, limit_train, limit_test, epochs, lr, batch_size, precision,
      normalization, val_fraction, test_every_epoch, tap, weight_decay, dtype;
};

// The study's numbers are AlexNet's on CIFAR-10; other runs are not compared with them.
bool has_study(const std::string& backbone, const json& dataset) {
  return backbone == "alexnet" && dataset["name"] == "cifar10";
}

RunSettings probe_settings(const RunMetrics& m) {
  const json& c = m.config;
  RunSettings s;
  s.backbone = recorded_backbone(lookup(c, {"cache_settings", "backbone"}), "the linear probe's config").name();
  s.dataset = recorded_dataset(lookup(c, {"dataset"}), "the linear probe's config");
  s.image_size = lookup(c, {"cache_settings", "image_size"});
  s.pretrained = lookup(c, {"cache_settings", "pretrained"});
  s.train_rows = lookup(c, {"train_rows"});
  s.test_rows = lookup(c, {"test_rows"});
  s.limit_train = lookup(c, {"cache_settings", "limit_train"});
  s.limit_test = lookup(c, {"cache_settings", "limit_test"});
  s.epochs = lookup(c, {"epochs"});
  s.lr = lookup(c, {"best_setting", "lr"});
  if (s.lr.is_null()) s.lr = lookup(c, {"lr"});
  s.weight_decay = lookup(c, {"best_setting", "weight_decay"});
  if (s.weight_decay.is_null()) s.weight_decay = lookup(c, {"weight_decay"});
  s.batch_size = lookup(c, {"batch_size"});
  // The extraction's precision, and the head's own when its products ran in another.
  s.precision = lookup(c, {"cache_settings", "precision"});
  const json head_precision = lookup(c, {"precision"});
  if (head_precision.is_string() && head_precision != "fp32" && head_precision != s.precision) {
    s.precision = fmt::format("{} features with {} head products",
                              s.precision.is_string() ? s.precision.get<std::string>() : "fp32",
                              head_precision.get<std::string>());
  }
  s.normalization = lookup(c, {"cache_settings", "normalization"});
  s.val_fraction = lookup(c, {"val_fraction"});
  s.test_every_epoch = lookup(c, {"test_every_epoch"});
  s.tap = lookup(c, {"tap"});
  s.dtype = lookup(c, {"cache_settings", "dtype"});
  return s;
}

// floor(n) as a count for the text; "very many" when it is too large to be one.
std::string count_of(double n) {
  return std::isfinite(n) && n < 9e15 ? std::to_string(static_cast<int64_t>(std::floor(n))) : "very many";
}

// The settings that are counts must be integers in a sane range: the report prints
// them and casts them (a double such as 1e300 cast to int64 is undefined behaviour).
void check_counts(const RunSettings& s, const fs::path& file) {
  const std::pair<const char*, const json*> counts[] = {
      {"image_size", &s.image_size}, {"train_rows", &s.train_rows}, {"test_rows", &s.test_rows},
      {"limit_train", &s.limit_train}, {"limit_test", &s.limit_test}, {"epochs", &s.epochs},
      {"batch_size", &s.batch_size}};
  for (const auto& [name, value] : counts) {
    if (value->is_null()) continue;
    integer_at(json{{name, *value}}, name, file.string(), "config", -1, int64_t{1} << 40);
  }
}

RunSettings finetune_settings(const RunMetrics& m) {
  const json& c = m.config;
  RunSettings s;
  s.backbone = recorded_backbone(lookup(c, {"backbone"}), "the fine-tuning run's config").name();
  s.dataset = recorded_dataset(lookup(c, {"dataset"}), "the fine-tuning run's config");
  s.image_size = lookup(c, {"image_size"});
  s.pretrained = lookup(c, {"pretrained"});
  s.train_rows = lookup(c, {"train_rows"});
  s.test_rows = lookup(c, {"test_rows"});
  s.limit_train = lookup(c, {"limit_train"});
  s.limit_test = lookup(c, {"limit_test"});
  s.epochs = lookup(c, {"epochs"});
  s.lr = lookup(c, {"lr"});
  s.batch_size = lookup(c, {"batch_size"});
  s.precision = lookup(c, {"precision"});
  s.normalization = lookup(c, {"normalization"});
  s.val_fraction = lookup(c, {"val_fraction"});
  s.test_every_epoch = lookup(c, {"test_every_epoch"});
  return s;
}

json settings_json(const RunSettings& s) {
  json j = {{"backbone", s.backbone},          {"image_size", s.image_size},     {"pretrained", s.pretrained},   {"train_rows", s.train_rows},
            {"test_rows", s.test_rows},       {"limit_train", s.limit_train}, {"limit_test", s.limit_test},
            {"epochs", s.epochs},             {"lr", s.lr},                   {"batch_size", s.batch_size},
            {"precision", s.precision},       {"normalization", s.normalization},
            {"val_fraction", s.val_fraction}, {"test_every_epoch", s.test_every_epoch}};
  if (!s.tap.is_null()) j["tap"] = s.tap;
  if (!s.weight_decay.is_null()) j["weight_decay"] = s.weight_decay;
  if (!s.dtype.is_null()) j["feature_dtype"] = s.dtype;
  return j;
}

ApproachNumbers numbers_of(const RunMetrics& m, const RunSettings& settings) {
  ApproachNumbers n;
  n.approach = m.approach;
  n.backbone = settings.backbone;
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
  if (n.test_rows == 0 && settings.test_rows.is_number_integer()) n.test_rows = settings.test_rows.get<int64_t>();
  return n;
}

// Per-class test accuracy (fraction) from a classes x classes confusion matrix; empty
// when there is none; NaN for a class with no test images.
std::vector<double> per_class_accuracy(const RunMetrics& m, int64_t classes) {
  if (m.confusion.size() != static_cast<size_t>(classes)) return {};
  std::vector<double> accuracy;
  for (size_t k = 0; k < m.confusion.size(); ++k) {
    const auto& row = m.confusion[k];
    if (row.size() != static_cast<size_t>(classes)) return {};
    int64_t total = 0;
    for (int64_t count : row) total += count;
    accuracy.push_back(total > 0 ? static_cast<double>(row[k]) / static_cast<double>(total)
                                 : std::numeric_limits<double>::quiet_NaN());
  }
  return accuracy;
}

struct SweepRow {
  int64_t rank = 0, init_seed = 0, best_epoch = 0;
  double lr = 0, weight_decay = 0, best_val_acc = 0, best_val_loss = 0, test_acc = 0, test_loss = 0;
};

// sweep.csv as transfer-head writes it; throws Error naming the file and line.
std::vector<SweepRow> read_sweep(const fs::path& file) {
  std::istringstream lines(read_file(file));
  std::string line;
  if (!std::getline(lines, line) || line != kSweepCsvHeader) {
    fail("{}: the first line is not the sweep header \"{}\"; rerun transfer-head", file.string(), kSweepCsvHeader);
  }
  std::vector<SweepRow> rows;
  for (int line_number = 2; std::getline(lines, line); ++line_number) {
    if (line.empty()) continue;
    std::vector<double> values;
    std::istringstream fields(line);
    std::string field;
    while (std::getline(fields, field, ',')) {
      char* end = nullptr;
      const double value = std::strtod(field.c_str(), &end);
      if (field.empty() || *end != '\0' || !std::isfinite(value)) {
        fail("{}: line {}: \"{}\" is not a number", file.string(), line_number, field);
      }
      values.push_back(value);
    }
    if (values.size() != 9) fail("{}: line {} has {} fields, expected 9", file.string(), line_number, values.size());
    for (int k : {0, 3, 4}) {  // rank, init_seed, best_epoch: integers, never cast out of range
      if (values[k] != std::floor(values[k]) || std::fabs(values[k]) > 9e15) {
        fail("{}: line {}: field {} is {}, not an integer", file.string(), line_number, k + 1, values[k]);
      }
    }
    SweepRow r;
    r.rank = static_cast<int64_t>(values[0]);
    r.lr = values[1];
    r.weight_decay = values[2];
    r.init_seed = static_cast<int64_t>(values[3]);
    r.best_epoch = static_cast<int64_t>(values[4]);
    r.best_val_acc = values[5];
    r.best_val_loss = values[6];
    r.test_acc = values[7];
    r.test_loss = values[8];
    rows.push_back(r);
  }
  if (rows.empty()) fail("{}: no rows under the header; rerun transfer-head", file.string());
  return rows;
}

// ---- the extraction cost ------------------------------------------------------------

struct Extraction {
  double seconds = std::numeric_limits<double>::quiet_NaN();
  std::string source;  // where the number came from, or why it is unknown
  std::string device;  // extraction device, when the cache says
  std::vector<std::string> notes;
};

double provenance_seconds(const json& provenance, const fs::path& file) {
  const json value = lookup(provenance, {"extract_seconds"});
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
  e.device = lookup(provenance, {"device"}).is_string() ? provenance["device"].get<std::string>() : "";
  if (lookup(provenance, {"resumed"}) == json(true)) {
    e.notes.push_back(fmt::format("The extraction into {} was resumed after an interruption: its {} covers only "
                                  "the last part, so the probe's one-time cost is understated.",
                                  file.string(), secs(e.seconds)));
  }
  const json head_settings = lookup(head.config, {"cache_settings"});
  if (!head_settings.is_null() && head_settings != lookup(provenance, {"settings"})) {
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
  const json recorded = lookup(head.config, {"features"});
  if (!recorded.is_string()) {
    e.source = "unknown: the head's config names no cache; pass --features or --extract-seconds";
    return e;
  }
  const fs::path file = recorded.get<std::string>();
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

// ---- differences from the study -----------------------------------------------------

std::string json_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_float()) return fmt::format("{:g}", value.get<double>());
  return value.dump();
}

// One sentence for a setting that differs from the study in either approach; empty
// texts mean "as the study".
void differ(std::vector<std::string>& out, const std::string& what, const std::string& probe,
            const std::string& finetune, const std::string& study) {
  if (probe.empty() && finetune.empty()) return;
  if (probe == finetune) {
    out.push_back(fmt::format("{}: {} in both approaches (study: {}).", what, probe, study));
  } else if (finetune.empty()) {
    out.push_back(fmt::format("{}: {} for the linear probe (study: {}).", what, probe, study));
  } else if (probe.empty()) {
    out.push_back(fmt::format("{}: {} for fine-tuning (study: {}).", what, finetune, study));
  } else {
    out.push_back(fmt::format("{}: {} for the linear probe, {} for fine-tuning (study: {}).", what, probe, finetune,
                              study));
  }
}

std::string image_size_diff(const RunSettings& s) {
  if (!s.image_size.is_number()) return "not recorded";
  return s.image_size.get<int64_t>() == kStudyImageSize ? "" : fmt::format("{} px", s.image_size.get<int64_t>());
}

std::string rows_diff(const RunSettings& s) {
  if (!s.train_rows.is_number_integer() || !s.test_rows.is_number_integer()) return "row counts not recorded";
  const int64_t train = s.train_rows.get<int64_t>(), test = s.test_rows.get<int64_t>();
  if (train == kStudyTrainImages && test == kStudyTestImages) return "";
  std::string limits;
  if (s.limit_train.is_number_integer() && s.limit_train.get<int64_t>() >= 0) {
    limits += fmt::format(" --limit-train {}", s.limit_train.get<int64_t>());
  }
  if (s.limit_test.is_number_integer() && s.limit_test.get<int64_t>() >= 0) {
    limits += fmt::format(" --limit-test {}", s.limit_test.get<int64_t>());
  }
  return fmt::format("{} training and {} test images{}", count_text(train), count_text(test),
                     limits.empty() ? "" : fmt::format(" (subset:{})", limits));
}

std::string pretrained_diff(const RunSettings& s) {
  if (!s.pretrained.is_boolean()) return "not recorded";
  return s.pretrained.get<bool>() ? "" : "random initialisation, NOT ImageNet-pretrained";
}

std::string epochs_diff(const ApproachNumbers& n) {
  return n.epochs == kStudyProbe.epochs ? "" : fmt::format("{} epochs", n.epochs);
}

std::string number_diff(const json& value, double study, const char* unit = "") {
  if (!value.is_number()) return "";
  const double v = value.get<double>();
  return std::fabs(v - study) <= 1e-12 * std::max(1.0, std::fabs(study)) ? "" : fmt::format("{:g}{}", v, unit);
}

std::string precision_diff(const RunSettings& s) {
  if (!s.precision.is_string()) return "";
  return s.precision.get<std::string>() == "fp32" ? "" : s.precision.get<std::string>();
}

std::vector<std::string> differences(const RunSettings& p, const RunSettings& f, const ApproachNumbers& probe,
                                     const ApproachNumbers& finetune, const Extraction& extraction,
                                     size_t sweep_heads) {
  std::vector<std::string> out;
  if (p.backbone != "alexnet") {
    out.push_back(fmt::format("Network: {} in both approaches (study: AlexNet), so the study's numbers do not apply.",
                              backbone(p.backbone).title()));
  }
  if (p.dataset["name"] != "cifar10") {
    out.push_back(fmt::format("Data: {} ({} classes) in both approaches (study: CIFAR-10), so the study's numbers do "
                              "not apply.",
                              p.dataset["title"].get<std::string>(), p.dataset["classes"].get<int64_t>()));
  }
  differ(out, "Image size", image_size_diff(p), image_size_diff(f), "224 px");
  differ(out, "Data", rows_diff(p), rows_diff(f), "the full CIFAR-10, 50,000 training and 10,000 test images");
  differ(out, "Weights", pretrained_diff(p), pretrained_diff(f), "ImageNet-pretrained");
  differ(out, "Epochs", epochs_diff(probe), epochs_diff(finetune), "10");
  differ(out, "Adam learning rate", number_diff(p.lr, 1e-3), number_diff(f.lr, 1e-3), "1e-3");
  differ(out, "Batch size", number_diff(p.batch_size, 128), number_diff(f.batch_size, 128), "128");
  differ(out, "Adam weight decay", number_diff(p.weight_decay, 0), "", "none");
  differ(out, "Precision", precision_diff(p), precision_diff(f), "fp32, PyTorch's default");
  const auto normalization = [](const json& name) {
    return name == "imagenet" ? std::string("ImageNet mean/std")
                              : name == "half" ? std::string("0.5/0.5 (\"half\")") : json_text(name);
  };
  const std::string probe_norm =
      p.normalization.is_string() && p.normalization != "imagenet" ? normalization(p.normalization) : "";
  const std::string tune_norm = f.normalization.is_string() && f.normalization != "half" ? normalization(f.normalization) : "";
  differ(out, "Normalization", probe_norm, tune_norm,
         "ImageNet mean/std for the linear probe, 0.5/0.5 (\"half\") for fine-tuning");
  if (p.tap.is_string() && p.tap != "fc7") {
    out.push_back(fmt::format("The linear probe reads the {} layer (study: AlexNet's fc7).", json_text(p.tap)));
  }
  if (p.dtype.is_string() && p.dtype != "float32") {
    out.push_back(fmt::format("The cached features are stored as {} (the study kept float32 activations).",
                              json_text(p.dtype)));
  }
  if (sweep_heads > 1) {
    out.push_back(fmt::format("The linear probe shown is the best of a sweep of {} heads, chosen on validation "
                              "accuracy (the study trained one head).",
                              sweep_heads));
  }
  out.push_back(fmt::format(
      "The linear probe trains on {} features extracted once into a cache; the study ran the frozen network's full "
      "forward pass in every epoch, so its 1423 s include what here is the one-time extraction.",
      p.tap.is_string() ? p.tap.get<std::string>() : std::string("fc7")));
  const auto fraction = [](const json& v) { return v.is_number() ? fmt::format("{:g} %", 100 * v.get<double>()) : "?"; };
  const std::string split =
      p.val_fraction == f.val_fraction
          ? fraction(p.val_fraction)
          : fmt::format("{} (probe) / {} (fine-tuning)", fraction(p.val_fraction), fraction(f.val_fraction));
  std::string every;
  if (p.test_every_epoch == json(true) || f.test_every_epoch == json(true)) {
    every = " (the test set was also scored every epoch for the curves, but never used to choose)";
  }
  out.push_back(fmt::format("Model selection: {} of the training images are held out for validation (seeded split) "
                            "and the test set is scored once, with the best-validation weights{}; the study scored "
                            "the test set after every epoch.",
                            split, every));
  std::string probe_device = fmt::format("head trained on {}", probe.device.empty() ? "?" : probe.device);
  if (!extraction.device.empty()) probe_device = fmt::format("features extracted on {}, ", extraction.device) + probe_device;
  out.push_back(fmt::format("Hardware: linear probe: {}; fine-tuning on {} (study: one T4 GPU for both), so the "
                            "seconds measure these machines, not the study's.",
                            probe_device, finetune.device.empty() ? "?" : finetune.device));
  return out;
}

// ---- plots --------------------------------------------------------------------------

std::string plot_csv(const std::vector<EpochRecord>& epochs, double start_seconds) {
  std::string csv = "epoch,train_loss,train_acc,val_loss,val_acc,seconds,elapsed_seconds\n";
  double elapsed = start_seconds;
  for (const EpochRecord& e : epochs) {
    elapsed += e.seconds;
    csv += fmt::format("{},{},{},{},{},{},{}\n", e.epoch, csv_number(e.train_loss), csv_number(e.train_acc),
                       csv_number(e.val_loss), csv_number(e.val_acc), csv_number(e.seconds), csv_number(elapsed));
  }
  return csv;
}

// A class name as one CSV field (quoted when it holds a comma or a quote).
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c == '\n' ? ' ' : c);
  return quoted + "\"";
}

std::string per_class_csv(const std::vector<std::string>& names, const std::vector<double>& probe,
                          const std::vector<double>& finetune) {
  std::string csv = "class,linear_probe,fine_tune\n";
  const auto cell = [](double v) { return std::isfinite(v) ? fmt::format("{:.4f}", 100 * v) : std::string(); };
  for (size_t k = 0; k < probe.size(); ++k) {
    csv += fmt::format("{},{},{}\n", csv_field(names[k]), cell(probe[k]), cell(finetune[k]));
  }
  return csv;
}

std::string gnuplot_script(double extract_seconds, bool per_class, size_t classes) {
  std::string s = R"(# Draws the comparison's plots from the CSVs beside this file: run `gnuplot plots.gp`
# in this folder. (transfer-compare runs it with suffix='.tmp' and renames the results.)
if (!exists("suffix")) suffix = ''
set datafile separator ','
set datafile missing ''
set key autotitle columnhead
set terminal svg size 800,480 dynamic noenhanced font 'Helvetica,13' background rgb 'white'
set grid
set key top right
probe = 'linear-probe-history.csv'
tune = 'fine-tune-history.csv'
set style line 1 lc rgb '#1f77b4' lw 2 pt 7 ps 0.6
set style line 2 lc rgb '#1f77b4' lw 2 dt 2 pt 6 ps 0.6
set style line 3 lc rgb '#d62728' lw 2 pt 7 ps 0.6
set style line 4 lc rgb '#d62728' lw 2 dt 2 pt 6 ps 0.6

set output 'loss.svg'.suffix
set title 'Loss per epoch'
set xlabel 'epoch'
set ylabel 'mean cross-entropy'
set xtics 1
plot probe using 1:2 with linespoints ls 2 title 'linear probe, training', \
     probe using 1:4 with linespoints ls 1 title 'linear probe, validation', \
     tune using 1:2 with linespoints ls 4 title 'fine-tuning, training', \
     tune using 1:4 with linespoints ls 3 title 'fine-tuning, validation'

set output 'accuracy.svg'.suffix
set title 'Validation accuracy per epoch'
set ylabel 'validation accuracy (%)'
set key bottom right
plot probe using 1:($5*100) with linespoints ls 1 title 'linear probe', \
     tune using 1:($5*100) with linespoints ls 3 title 'fine-tuning'

set output 'time.svg'.suffix
set xtics autofreq
set xrange [0:*]
)";
  if (std::isfinite(extract_seconds)) {
    s += fmt::format(
        "set title 'Validation accuracy against wall-clock time'\n"
        "set arrow 1 from {0:.6g}, graph 0 to {0:.6g}, graph 1 nohead lc rgb '#1f77b4' dt 3\n"
        "set label 1 'feature extraction ({1})' at {0:.6g}, graph 0.05 offset 0.5,0 tc rgb '#1f77b4'\n",
        extract_seconds, secs(extract_seconds));
  } else {
    s += "set title 'Validation accuracy against wall-clock time (probe: extraction cost unknown)'\n";
  }
  s += R"(set xlabel 'cumulative wall-clock seconds (the probe''s include its feature extraction)'
plot probe using 7:($5*100) with linespoints ls 1 title 'linear probe', \
     tune using 7:($5*100) with linespoints ls 3 title 'fine-tuning'
unset arrow 1
unset label 1
)";
  if (per_class) {
    s += R"(
set output 'per_class.svg'.suffix
set title 'Per-class test accuracy (best-validation weights)'
set xrange [*:*]
set xlabel ''
set ylabel 'test accuracy (%)'
set yrange [0:100]
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -30 nomirror
set key top right
)";
    if (classes > 20) {
      // 100 classes: a wider plot, labels turned upright and small.
      s += fmt::format("set terminal svg size {},520 dynamic noenhanced font 'Helvetica,11' background rgb 'white'\n"
                       "set output 'per_class.svg'.suffix\n"
                       "set xtics rotate by -90 font ',8'\n",
                       std::max<size_t>(800, 24 * classes));
    }
    s += R"(plot 'per-class.csv' using 2:xtic(1) lc rgb '#1f77b4' title 'linear probe', \
     '' using 3 lc rgb '#d62728' title 'fine-tuning'
)";
  }
  s += "unset output\n";
  return s;
}

// ---- report.md / report.json --------------------------------------------------------

json approach_json(const ApproachNumbers& n, const RunSettings& settings, const fs::path& folder) {
  json j = {{"run", folder.string()},
            {"best_val_acc", number_or_null(n.best_val_acc)},
            {"best_val_loss", number_or_null(n.best_val_loss)},
            {"best_epoch", n.best_epoch},
            {"test_acc", number_or_null(n.test_acc)},
            {"test_loss", number_or_null(n.test_loss)},
            {"epochs", n.epochs},
            {"train_seconds", number_or_null(n.train_seconds)},
            {"seconds_per_epoch", number_or_null(n.seconds_per_epoch)},
            {"images_per_second", number_or_null(n.images_per_second)},
            {"test_rows", n.test_rows},
            {"device", n.device},
            {"total_seconds", number_or_null(n.total_seconds())},
            {"settings", settings_json(settings)}};
  if (n.approach == "linear-probe") j["extract_seconds"] = number_or_null(n.extract_seconds);
  return j;
}

json study_json(const StudyNumbers& s) {
  return {{"test_acc", s.test_acc},         {"val_loss", s.val_loss}, {"seconds_low", s.seconds_low},
          {"seconds_high", s.seconds_high}, {"epochs", s.epochs}};
}

std::string study_seconds(const StudyNumbers& s, double divide = 1) {
  if (s.seconds_low == s.seconds_high) return fmt::format("{:.{}f} s", s.seconds_low / divide, divide > 1 ? 1 : 0);
  return fmt::format("~{:.0f}–{:.0f} s", s.seconds_low / divide, s.seconds_high / divide);
}

std::string markdown(const ReportOptions& options, const ApproachNumbers& probe, const ApproachNumbers& tune,
                     const Extraction& extraction, const Conclusion& conclusion,
                     const std::vector<std::string>& diffs,
                     const std::vector<double>& probe_classes, const std::vector<double>& tune_classes,
                     const std::vector<SweepRow>& sweep, const std::vector<std::string>& plots,
                     const std::string& plots_error, const json& dataset) {
  const Backbone& net = backbone(probe.backbone);
  const bool study = has_study(probe.backbone, dataset);  // the study's numbers are AlexNet's on CIFAR-10
  const std::string data_title = dataset["title"].get<std::string>();
  const std::vector<std::string> names = dataset["class_names"].get<std::vector<std::string>>();
  std::string md = fmt::format("# Linear probe vs full fine-tuning: {} on {}\n\n", net.title(), data_title);
  md += fmt::format("Runs: linear probe `{}`, fine-tuning `{}`. Extraction cost: {}.\n\n", options.head.string(),
                    options.finetune.string(), extraction.source);
  md += "## Conclusion\n\n" + conclusion.text + "\n\n";

  md += "## Results\n\n";
  if (study) {
    md += "| | linear probe (this run) | linear probe (study) | fine-tuning (this run) | fine-tuning (study) |\n";
    md += "|---|---:|---:|---:|---:|\n";
  } else {
    md += fmt::format("| {} | linear probe | fine-tuning |\n|---|---:|---:|\n", net.title());
  }
  const auto row = [&](const std::string& name, const std::string& a, const std::string& b, const std::string& c,
                       const std::string& d) {
    md += study ? fmt::format("| {} | {} | {} | {} | {} |\n", name, a, b, c, d)
                : fmt::format("| {} | {} | {} |\n", name, a, c);
  };
  row("best validation accuracy", fmt::format("{} (epoch {})", pct(probe.best_val_acc), probe.best_epoch), "—",
      fmt::format("{} (epoch {})", pct(tune.best_val_acc), tune.best_epoch), "—");
  row("validation loss (best epoch)", loss_text(probe.best_val_loss), loss_text(kStudyProbe.val_loss),
      loss_text(tune.best_val_loss), loss_text(kStudyFinetune.val_loss));
  row("test accuracy", pct(probe.test_acc), pct(kStudyProbe.test_acc), pct(tune.test_acc), pct(kStudyFinetune.test_acc));
  row("test loss", loss_text(probe.test_loss), "—", loss_text(tune.test_loss), "—");
  row("epochs", std::to_string(probe.epochs), std::to_string(kStudyProbe.epochs), std::to_string(tune.epochs),
      std::to_string(kStudyFinetune.epochs));
  row("training seconds", secs(probe.train_seconds), study_seconds(kStudyProbe), secs(tune.train_seconds),
      study_seconds(kStudyFinetune));
  row("seconds per epoch", secs(probe.seconds_per_epoch), study_seconds(kStudyProbe, 10), secs(tune.seconds_per_epoch),
      study_seconds(kStudyFinetune, 10));
  row("training images/s", count_text(std::llround(probe.images_per_second)), "—",
      count_text(std::llround(tune.images_per_second)), "—");
  row("one-time feature extraction", std::isfinite(probe.extract_seconds) ? secs(probe.extract_seconds) : "unknown",
      "none (forward pass every epoch)", "—", "—");
  row("total (extraction + training)",
      std::isfinite(probe.extract_seconds) ? secs(probe.total_seconds()) : "unknown", study_seconds(kStudyProbe),
      secs(tune.train_seconds), study_seconds(kStudyFinetune));
  row("test images", count_text(probe.test_rows), count_text(kStudyTestImages), count_text(tune.test_rows),
      count_text(kStudyTestImages));
  row("device", probe.device.empty() ? "?" : probe.device, "T4 GPU", tune.device.empty() ? "?" : tune.device,
      "T4 GPU");
  if (study) {
    md += "\nStudy: one T4 GPU, 224 px, full CIFAR-10, ImageNet-pretrained weights, 10 epochs, Adam lr 1e-3, batch "
          "128. ";
  } else {
    md += fmt::format("\nThe study measured AlexNet on CIFAR-10 only: for {} on {} there is no study number to "
                      "compare with. ",
                      net.title(), data_title);
  }
  md += "Accuracies are on the test set with the best-validation weights; the validation loss is that of the best "
        "epoch.\n\n";

  md += "## Differences from the study\n\n";
  for (const std::string& d : diffs) md += "- " + d + "\n";
  for (const std::string& n : extraction.notes) md += "- " + n + "\n";
  md += "\n";

  md += "## Per-class test accuracy\n\n";
  if (probe_classes.empty() || tune_classes.empty()) {
    md += fmt::format("Not available: a run has no {0}×{0} confusion matrix in its metrics.json.\n\n", names.size());
  } else {
    // Up to 20 classes: all of them; more: the 10 best and 10 worst (mean of both
    // approaches), every class in per-class.csv.
    std::vector<size_t> order(probe_classes.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    const bool all = order.size() <= 2 * kClassesShownEachEnd;
    if (!all) {
      const auto mean = [&](size_t k) {
        const double m = (probe_classes[k] + tune_classes[k]) / 2;
        return std::isfinite(m) ? m : -1.0;
      };
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return mean(a) > mean(b); });
      order.erase(order.begin() + static_cast<ptrdiff_t>(kClassesShownEachEnd),
                  order.end() - static_cast<ptrdiff_t>(kClassesShownEachEnd));
      md += fmt::format("The {0} best and {0} worst of {1} classes (by the mean of both approaches); all {1} are in "
                        "per-class.csv.\n\n",
                        kClassesShownEachEnd, probe_classes.size());
    }
    md += "| class | linear probe | fine-tuning | difference (pp) |\n|---|---:|---:|---:|\n";
    for (size_t i = 0; i < order.size(); ++i) {
      const size_t k = order[i];
      if (!all && i == kClassesShownEachEnd) md += "| … | | | |\n";
      const double gap = 100 * (tune_classes[k] - probe_classes[k]);
      md += fmt::format("| {} | {} | {} | {} |\n", names[k], pct(probe_classes[k]), pct(tune_classes[k]),
                        std::isfinite(gap) ? fmt::format("{:+.2f}", gap) : "—");
    }
    md += "\n";
  }

  if (!sweep.empty()) {
    const size_t shown = std::min(sweep.size(), kSweepRowsShown);
    md += fmt::format("## Head sweep: top {} of {} heads (ranked on validation)\n\n", shown, sweep.size());
    md += "| rank | lr | weight decay | init seed | best epoch | best val acc | best val loss | test acc | test loss "
          "|\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (size_t i = 0; i < shown; ++i) {
      const SweepRow& r = sweep[i];
      md += fmt::format("| {} | {:g} | {:g} | {} | {} | {} | {} | {} | {} |\n", r.rank, r.lr, r.weight_decay,
                        r.init_seed, r.best_epoch, pct(r.best_val_acc), loss_text(r.best_val_loss), pct(r.test_acc),
                        loss_text(r.test_loss));
    }
    md += "\n";
  }

  md += "## Plots\n\n";
  if (plots.empty()) {
    md += plots_error + " " + kPlotHowTo + "\n";
  } else {
    const std::vector<std::pair<std::string, std::string>> captions = {
        {"loss.svg", "Training and validation loss per epoch"},
        {"accuracy.svg", "Validation accuracy per epoch"},
        {"time.svg", "Validation accuracy against cumulative wall-clock seconds (the probe starts after its "
                     "feature extraction)"},
        {"per_class.svg", "Per-class test accuracy"}};
    for (const auto& [file, caption] : captions) {
      if (std::find(plots.begin(), plots.end(), file) != plots.end()) {
        md += fmt::format("**{}**\n\n![{}]({})\n\n", caption, caption, file);
      }
    }
    md += "The data behind them: linear-probe-history.csv, fine-tune-history.csv, per-class.csv; the script: "
          "plots.gp.\n";
  }
  return md;
}

json conclusion_json(const Conclusion& c) {
  return {{"more_accurate", c.more_accurate},
          {"gap_pp", c.gap_pp},
          {"gap_standard_error_pp", number_or_null(c.gap_standard_error_pp)},
          {"within_noise", c.within_noise},
          {"probe_seconds", number_or_null(c.probe_seconds)},
          {"finetune_seconds", number_or_null(c.finetune_seconds)},
          {"extract_known", c.extract_known},
          {"break_even_head_runs", number_or_null(c.break_even_head_runs)},
          {"cheaper_from_experiments", c.cheaper_from_experiments},
          {"text", c.text}};
}

RunMetrics read_run(const fs::path& dir, const std::string& expected, const char* flag, const char* stage) {
  RunMetrics m = read_metrics(dir);
  if (m.approach != expected) {
    usage_fail("{} holds a \"{}\" run, but {} wants a {} run folder (approach \"{}\"); are --head and --finetune "
               "swapped?",
               (dir / "metrics.json").string(), m.approach, flag, stage, expected);
  }
  return m;
}

}  // namespace

Conclusion conclude(const ApproachNumbers& probe, const ApproachNumbers& finetune) {
  Conclusion c;
  c.gap_pp = 100 * (finetune.test_acc - probe.test_acc);
  c.more_accurate = std::fabs(c.gap_pp) < 0.005 ? "tie" : c.gap_pp > 0 ? "fine-tune" : "linear-probe";
  if (probe.test_rows > 0 && finetune.test_rows > 0) {
    const double p = probe.test_acc, q = finetune.test_acc;
    c.gap_standard_error_pp = 100 * std::sqrt(p * (1 - p) / static_cast<double>(probe.test_rows) +
                                              q * (1 - q) / static_cast<double>(finetune.test_rows));
    c.within_noise = std::fabs(c.gap_pp) < 2 * c.gap_standard_error_pp;
  }
  c.extract_known = std::isfinite(probe.extract_seconds);
  const double extract = c.extract_known ? probe.extract_seconds : 0;
  const double head = probe.train_seconds, tune = finetune.train_seconds;
  c.probe_seconds = probe.total_seconds();
  c.finetune_seconds = tune;
  if (c.extract_known && head > 0) c.break_even_head_runs = (tune - extract) / head;
  // Seconds come from run files: a ratio may be huge or not finite, and casting such a
  // double to int64 is undefined, so it is bounded first.
  const double experiments = c.extract_known && tune > head ? std::floor(extract / (tune - head)) : -1;
  if (experiments >= 0 && experiments < 9e15) c.cheaper_from_experiments = static_cast<int64_t>(experiments) + 1;

  std::vector<std::string> text;
  // Accuracy.
  if (c.more_accurate == "tie") {
    text.push_back(fmt::format("Both approaches reach the same test accuracy ({}).", pct(probe.test_acc)));
  } else {
    const bool tune_wins = c.more_accurate == "fine-tune";
    const ApproachNumbers& winner = tune_wins ? finetune : probe;
    const ApproachNumbers& loser = tune_wins ? probe : finetune;
    text.push_back(fmt::format("{} is more accurate: {} against {} test accuracy, {:.2f} percentage points ahead.",
                               capitalized(tune_wins ? "fine-tuning" : "the linear probe"), pct(winner.test_acc),
                               pct(loser.test_acc), std::fabs(c.gap_pp)));
    if (std::isfinite(c.gap_standard_error_pp)) {
      text.push_back(fmt::format(
          c.within_noise ? "That gap is within two standard errors (±{:.2f} pp on {} and {} test images), so it may "
                           "be noise."
                         : "That is more than two standard errors (±{:.2f} pp on {} and {} test images).",
          2 * c.gap_standard_error_pp, count_text(probe.test_rows), count_text(finetune.test_rows)));
    }
  }
  // Cost.
  if (c.extract_known) {
    text.push_back(fmt::format("In time, the linear probe cost {} of one-time feature extraction plus {} of head "
                               "training ({} in all); fine-tuning cost {}.",
                               secs(extract), secs(head), secs(c.probe_seconds), secs(tune)));
  } else {
    text.push_back(fmt::format("In time, the linear probe's head trained in {} (the one-time extraction cost is "
                               "unknown: pass --features or --extract-seconds); fine-tuning took {}.",
                               secs(head), secs(tune)));
  }
  const bool probe_cheaper = c.probe_seconds < tune;
  const double ratio = probe_cheaper ? tune / std::max(c.probe_seconds, 1e-9) : c.probe_seconds / std::max(tune, 1e-9);
  const std::string uncounted = c.extract_known ? "" : " (the probe's extraction not counted)";
  if (c.more_accurate == "linear-probe" && probe_cheaper) {
    text.push_back(fmt::format("The linear probe is both more accurate and {:.1f}× cheaper here{}: in these runs "
                               "fine-tuning does not pay for its cost.",
                               ratio, uncounted));
  } else if (c.more_accurate == "tie" && probe_cheaper) {
    text.push_back(fmt::format("Equal accuracy at {:.1f}× less time{}: the probe is the better choice in these runs.",
                               ratio, uncounted));
  } else if (c.more_accurate == "fine-tune" && !probe_cheaper) {
    text.push_back(fmt::format("Fine-tuning is both more accurate and no more expensive here: {} against the "
                               "probe's {}{}.",
                               secs(tune), secs(c.probe_seconds), c.extract_known ? " (extraction included)" : ""));
  } else if (c.more_accurate == "fine-tune") {
    text.push_back(fmt::format("Fine-tuning buys {:.2f} pp for {} more time ({:.1f}× the probe's){}.", c.gap_pp,
                               secs(tune - c.probe_seconds), ratio, uncounted));
  } else if (c.more_accurate == "linear-probe") {
    text.push_back(fmt::format("The linear probe is more accurate but costs more: {:.2f} pp for {} more time.",
                               -c.gap_pp, secs(c.probe_seconds - tune)));
  } else {
    text.push_back(fmt::format("Equal accuracy, and fine-tuning took {:.1f}× less time here.", ratio));
  }
  // Break-even.
  if (!(head > 0)) {
    text.push_back("The head's training took no measurable time, so only the extraction counts against "
                   "fine-tuning.");
  } else if (!c.extract_known) {
    text.push_back(fmt::format("Without the extraction cost, {:.1f} head runs ({} each) fit in the time of one "
                               "fine-tuning run; the break-even needs the extraction's seconds.",
                               tune / head, secs(head)));
  } else {
    const double n = c.break_even_head_runs;
    if (n >= 1) {
      text.push_back(fmt::format("Break-even: one extraction ({}) + N head runs ({} each) cost what one fine-tuning "
                                 "run costs at N = {:.1f}, so after one extraction {} head experiments fit in the "
                                 "time of one fine-tuning run.",
                                 secs(extract), secs(head), n, count_of(n)));
    } else if (n > 0) {
      text.push_back(fmt::format("Break-even: one extraction ({}) + N head runs ({} each) cost what one fine-tuning "
                                 "run costs at N = {:.2f}, less than one head run: a single probe, extraction "
                                 "included, already costs more than fine-tuning.",
                                 secs(extract), secs(head), n));
    } else {
      text.push_back(fmt::format("No break-even within one fine-tuning run: the extraction alone ({}) costs at least "
                                 "as much as fine-tuning ({}).",
                                 secs(extract), secs(tune)));
    }
    if (c.cheaper_from_experiments == 0) {
      text.push_back("A head run costs at least as much as a fine-tuning run here, so the cache never pays off in "
                     "time.");
    } else if (c.cheaper_from_experiments > 1) {
      text.push_back(fmt::format("Over repeated experiments (one extraction then a head per experiment, against a "
                                 "fine-tuning run per experiment) the probe is cheaper from {} experiments on.",
                                 c.cheaper_from_experiments));
    }
  }
  if (!probe.device.empty() && !finetune.device.empty() && hardware(probe.device) != hardware(finetune.device)) {
    text.push_back(fmt::format("The head and the fine-tuning ran on different hardware ({} / {}), so the times "
                               "compare the setups as much as the approaches.",
                               hardware(probe.device), hardware(finetune.device)));
  }
  for (size_t i = 0; i < text.size(); ++i) c.text += (i ? " " : "") + text[i];
  return c;
}

ReportResult write_report(const ReportOptions& options) {
  if (options.head.empty()) usage_fail("--head is required (a transfer-head run folder)");
  if (options.finetune.empty()) usage_fail("--finetune is required (a transfer-finetune run folder)");
  if (options.out.empty()) usage_fail("--out must not be empty");
  if (std::isfinite(options.extract_seconds) && !options.features.empty()) {
    usage_fail("give --extract-seconds or --features, not both");
  }
  if (options.extract_seconds < 0) usage_fail("--extract-seconds must be >= 0, got {}", options.extract_seconds);
  // Checked before any reading or writing: the report may not land inside a run it reads.
  refuse_output_over_inputs(output_path(options.out, "--out"), {options.head, options.finetune}, "--out");
  const RunMetrics head = read_run(options.head, "linear-probe", "--head", "transfer-head");
  const RunMetrics tune = read_run(options.finetune, "fine-tune", "--finetune", "transfer-finetune");
  const RunSettings probe_set = probe_settings(head), tune_set = finetune_settings(tune);
  check_counts(probe_set, options.head / "metrics.json");
  check_counts(tune_set, options.finetune / "metrics.json");
  const Extraction extraction = extraction_cost(options, head);
  ApproachNumbers probe = numbers_of(head, probe_set);
  probe.extract_seconds = extraction.seconds;
  const ApproachNumbers finetune = numbers_of(tune, tune_set);
  if (probe_set.dataset["name"] != tune_set.dataset["name"] || probe_set.dataset.value("labels", json()) !=
                                                                   tune_set.dataset.value("labels", json())) {
    usage_fail("the runs are of different datasets ({} in {}, {} in {}): compare runs of one dataset",
               probe_set.dataset["title"].get<std::string>(), options.head.string(),
               tune_set.dataset["title"].get<std::string>(), options.finetune.string());
  }
  const int64_t classes = probe_set.dataset["classes"].get<int64_t>();
  const std::vector<std::string> class_names = probe_set.dataset["class_names"].get<std::vector<std::string>>();
  if (probe.backbone != finetune.backbone) {
    usage_fail("the runs are of different backbones ({} in {}, {} in {}): compare runs of one backbone, or rank "
               "backbones with --backbones",
               probe.backbone, options.head.string(), finetune.backbone, options.finetune.string());
  }
  std::vector<SweepRow> sweep;
  if (fs::exists(options.head / "sweep.csv")) sweep = read_sweep(options.head / "sweep.csv");

  ReportResult result;
  result.conclusion = conclude(probe, finetune);
  const std::vector<std::string> diffs =
      differences(probe_set, tune_set, probe, finetune, extraction, sweep.size());
  const std::vector<double> probe_classes = per_class_accuracy(head, classes),
                            tune_classes = per_class_accuracy(tune, classes);
  const bool per_class = !probe_classes.empty() && !tune_classes.empty();

  fs::create_directories(options.out);
  write_file_atomic(options.out / "linear-probe-history.csv",
                    plot_csv(head.epochs, std::isfinite(probe.extract_seconds) ? probe.extract_seconds : 0));
  write_file_atomic(options.out / "fine-tune-history.csv", plot_csv(tune.epochs, 0));
  std::error_code ignored;
  if (per_class) {
    write_file_atomic(options.out / "per-class.csv", per_class_csv(class_names, probe_classes, tune_classes));
  } else {
    fs::remove(options.out / "per-class.csv", ignored);
  }
  write_file_atomic(options.out / "plots.gp", gnuplot_script(probe.extract_seconds, per_class, class_names.size()));
  std::vector<std::string> wanted;
  for (const char* name : kPlotNames) {
    if (per_class || std::string(name) != "per_class.svg") wanted.push_back(name);
  }
  result.plots = draw_plots(options.out, options.gnuplot, "plots.gp", wanted,
                            std::vector<std::string>(std::begin(kPlotNames), std::end(kPlotNames)), result.plots_error);

  json report;
  report["inputs"] = {{"head", options.head.string()},
                      {"finetune", options.finetune.string()},
                      {"extract_seconds_source", extraction.source}};
  report["approaches"] = {{"linear-probe", approach_json(probe, probe_set, options.head)},
                          {"fine-tune", approach_json(finetune, tune_set, options.finetune)}};
  report["approaches"]["linear-probe"]["extract_device"] = extraction.device;
  report["backbone"] = probe.backbone;
  report["dataset"] = probe_set.dataset;
  report["study"] = nullptr;
  if (has_study(probe.backbone, probe_set.dataset)) {
    report["study"] = {{"linear-probe", study_json(kStudyProbe)},
                       {"fine-tune", study_json(kStudyFinetune)},
                       {"setup", {{"gpu", "T4"}, {"image_size", kStudyImageSize}, {"train_images", kStudyTrainImages},
                                  {"test_images", kStudyTestImages}, {"pretrained", true}, {"epochs", 10},
                                  {"optimizer", "Adam"}, {"lr", 1e-3}, {"batch_size", 128}}}};
  }
  report["differences"] = diffs;
  report["notes"] = extraction.notes;
  report["conclusion"] = conclusion_json(result.conclusion);
  if (per_class) {
    json classes = json::array(), a = json::array(), b = json::array();
    for (size_t k = 0; k < probe_classes.size(); ++k) {
      classes.push_back(class_names[k]);
      a.push_back(number_or_null(probe_classes[k]));
      b.push_back(number_or_null(tune_classes[k]));
    }
    report["per_class"] = {{"classes", classes}, {"linear-probe", a}, {"fine-tune", b}};
  } else {
    report["per_class"] = nullptr;
  }
  if (sweep.empty()) {
    report["sweep"] = nullptr;
  } else {
    json rows = json::array();
    for (size_t i = 0; i < std::min(sweep.size(), kSweepRowsShown); ++i) {
      const SweepRow& r = sweep[i];
      rows.push_back({{"rank", r.rank}, {"lr", r.lr}, {"weight_decay", r.weight_decay}, {"init_seed", r.init_seed},
                      {"best_epoch", r.best_epoch}, {"best_val_acc", r.best_val_acc},
                      {"best_val_loss", r.best_val_loss}, {"test_acc", r.test_acc}, {"test_loss", r.test_loss}});
    }
    report["sweep"] = {{"heads", sweep.size()}, {"top", rows}};
  }
  report["plots"] = result.plots;
  report["plots_error"] = result.plots_error.empty() ? json(nullptr) : json(result.plots_error);

  result.markdown = options.out / "report.md";
  result.json = options.out / "report.json";
  write_file_atomic(result.json, json_file_text(report));
  write_file_atomic(result.markdown, markdown(options, probe, finetune, extraction, result.conclusion, diffs,
                                              probe_classes, tune_classes, sweep, result.plots,
                                              result.plots_error, probe_set.dataset));
  return result;
}

}  // namespace pipeline
