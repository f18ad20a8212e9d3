#include "pipeline/backbones_report.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/files.h"
#include "pipeline/metrics.h"
#include "pipeline/models/backbone.h"
#include "pipeline/plots.h"
#include "pipeline/report_text.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline {
namespace {

constexpr const char* kPlot = "accuracy_vs_cost.svg";

// The settings (run_settings.h's keys) that must agree for a fair ranking: the data,
// the extraction and how the heads trained.
const char* const kMustAgree[] = {"dataset",     "dataset_sha256", "image_size",        "normalization",
                                  "limit_train", "limit_test",     "pretrained",        "extract_precision",
                                  "feature_dtype", "epochs",       "lr",                "weight_decay",
                                  "batch_size",  "val_fraction",   "seed",              "sweep_seeds",
                                  "head",        "precision"};

// The run's settings as compared: a sweep's grid stands for its lr and weight decay
// (its chosen head's differ by design).
json compared(const RunSettings& s) {
  json j = to_json(s);
  if (!s.sweep_lr.empty()) j["lr"] = s.sweep_lr;
  if (!s.sweep_wd.empty()) j["weight_decay"] = s.sweep_wd;
  return j;
}

BackboneRow read_row(const fs::path& run, RunSettings& settings, std::vector<std::string>& notes) {
  const RunMetrics m = read_metrics(run);
  if (m.approach == "fine-tune") {
    usage_fail("--backbones takes transfer-head runs; {} is a fine-tuning run", run.string());
  }
  settings = m.settings;
  BackboneRow row;
  row.run = run;
  row.backbone = recorded_backbone(json(settings.backbone), (run / "metrics.json").string()).name();
  row.title = backbone(row.backbone).title();
  row.tap = settings.tap;
  row.test_acc = m.test_acc;
  for (const auto& r : m.confusion)
    for (int64_t count : r) row.test_rows += count;
  if (row.test_rows > 0) row.test_se = std::sqrt(row.test_acc * (1 - row.test_acc) / static_cast<double>(row.test_rows));
  row.head_seconds = m.train_seconds;
  row.heads = settings.heads;
  row.cache = settings.features;
  try {
    const FeatureReader cache(row.cache);
    row.width = cache.width(row.tap);
    // What transfer-extract records when it finishes (a cache resumed or made before
    // may lack them: unknown).
    const json& provenance = cache.provenance();
    for (const auto& [key, target] : {std::pair<const char*, double*>{"extract_seconds", &row.extract_seconds},
                                      {"extract_images_per_second", &row.extract_images_per_second}}) {
      const json value = provenance.value(key, json(nullptr));
      if (value.is_number()) *target = value.get<double>();
    }
    std::error_code ec;
    const auto bytes = fs::file_size(row.cache, ec);
    if (!ec) row.cache_bytes = static_cast<int64_t>(bytes);
  } catch (const Error& e) {
    notes.push_back(fmt::format("{}: its feature cache cannot be read, so its extraction cost is unknown ({}).",
                                row.title, e.what()));
  }
  return row;
}

// A setting for a sentence: a dataset by its title, anything else as JSON.
std::string value_text(const json& v) {
  if (v.is_null()) return "not recorded";
  if (v.is_object() && v.contains("title") && v["title"].is_string()) return v["title"].get<std::string>();
  return v.dump();
}

// One note per setting that differs between the runs.
void compare_settings(const std::vector<BackboneRow>& rows, const std::vector<RunSettings>& settings,
                      std::vector<std::string>& notes) {
  std::vector<json> runs;
  for (const RunSettings& s : settings) runs.push_back(compared(s));
  for (const char* key : kMustAgree) {
    for (size_t i = 1; i < runs.size(); ++i) {
      if (runs[i][key] != runs[0][key]) {
        notes.push_back(fmt::format("The runs differ in {}: {} for {} ({}), {} for {} ({}); the ranking compares "
                                    "unlike runs.",
                                    key, value_text(runs[0][key]), rows[0].title, rows[0].run.string(),
                                    value_text(runs[i][key]), rows[i].title, rows[i].run.string()));
        break;
      }
    }
  }
}

std::string csv_number(double v, const char* format = "{:.6g}") {
  return std::isfinite(v) ? fmt::format(fmt::runtime(format), v) : std::string();
}

std::string csv_text(const std::vector<BackboneRow>& rows) {
  std::string csv =
      "rank,backbone,tap,width,test_acc_pct,test_se_pct,extract_seconds,extract_images_per_second,cache_mib,"
      "head_seconds,heads,run\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const BackboneRow& r = rows[i];
    csv += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{}\n", i + 1, r.backbone, r.tap, r.width,
                       csv_number(100 * r.test_acc), csv_number(100 * r.test_se), csv_number(r.extract_seconds),
                       csv_number(r.extract_images_per_second),
                       r.cache_bytes >= 0 ? csv_number(static_cast<double>(r.cache_bytes) / 1048576.0) : "",
                       csv_number(r.head_seconds), r.heads, r.run.filename().string());
  }
  return csv;
}

const char* kScript = R"(# Draws accuracy_vs_cost.svg from backbones.csv beside this file: run `gnuplot plots.gp`
# in this folder. (transfer-compare runs it with suffix='.tmp' and renames the result.)
if (!exists("suffix")) suffix = ''
set datafile separator ','
set datafile missing ''
set terminal svg size 800,480 dynamic noenhanced font 'Helvetica,13' background rgb 'white'
set output 'accuracy_vs_cost.svg'.suffix
set title 'Test accuracy of the linear probe against the cost of its features'
set xlabel 'feature extraction, wall-clock seconds (train + test images)'
set ylabel 'test accuracy (%), bars: 2 standard errors'
set grid
set key off
set xrange [0:*]
set offsets graph 0.05, graph 0.15, graph 0.1, graph 0.1
plot 'backbones.csv' every ::1 using 7:5:(2*$6) with yerrorbars lc rgb '#1f77b4' pt 7 ps 0.8, \
     'backbones.csv' every ::1 using 7:5:2 with labels offset 1,1 left tc rgb '#333333'
)";

std::string markdown(const BackbonesReport& r) {
  std::string md = fmt::format("# Which backbone's features? Linear probes on {}\n\n", r.data_title);
  md += fmt::format("{} runs, ranked by test accuracy (best-validation head, scored once). \"±\" is one binomial "
                    "standard error from the test-set size; rows marked ≈ are within two standard errors of the "
                    "best.\n\n",
                    r.rows.size());
  md += "| rank | backbone | tap (width) | test accuracy | extraction | images/s | cache | head training |\n";
  md += "|---:|---|---|---:|---:|---:|---:|---:|\n";
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const BackboneRow& row = r.rows[i];
    const std::string acc = std::isfinite(row.test_se) ? fmt::format("{} ± {:.2f}", pct(row.test_acc), 100 * row.test_se)
                                                       : pct(row.test_acc);
    md += fmt::format("| {}{} | {} | {} ({}) | {} | {} | {} | {} | {}{} |\n", i + 1,
                      i > 0 && row.within_noise_of_best ? " ≈" : "", row.title, row.tap, count_text(row.width), acc,
                      secs(row.extract_seconds),
                      std::isfinite(row.extract_images_per_second) ? fmt::format("{:.0f}", row.extract_images_per_second)
                                                                   : "—",
                      row.cache_bytes >= 0 ? fmt::format("{:.1f} MiB", row.cache_bytes / 1048576.0) : "—",
                      secs(row.head_seconds), row.heads > 1 ? fmt::format(" ({} heads)", row.heads) : "");
  }
  md += "\nRuns: ";
  for (size_t i = 0; i < r.rows.size(); ++i) md += fmt::format("{}`{}`", i ? ", " : "", r.rows[i].run.string());
  md += ".\n\n";
  if (!r.notes.empty()) {
    md += "## Notes\n\n";
    for (const std::string& n : r.notes) md += "- " + n + "\n";
    md += "\n";
  }
  md += "## Accuracy against cost\n\n";
  if (r.plots.empty()) {
    md += r.plots_error + " " + kPlotHowTo + "\n";
  } else {
    md += fmt::format("![test accuracy against extraction seconds]({})\n", kPlot);
  }
  return md;
}

}  // namespace

BackbonesReport write_backbones_report(const BackbonesReportOptions& options) {
  if (options.heads.empty()) usage_fail("--backbones needs at least one transfer-head run folder");
  if (options.out.empty()) usage_fail("--out must not be empty");
  const fs::path out = output_path(options.out, "--out");
  refuse_output_over_inputs(out, options.heads, "--out");
  // A report folder (never a folder of the user's files), this report's alone.
  const FolderLock lock(out, "transfer-compare --backbones report",
                        {"report.md", "report.json", "backbones.csv", "plots.gp", kPlot, kPlotLog});
  BackbonesReport report;
  std::vector<RunSettings> settings;
  for (const fs::path& run : options.heads) {
    settings.emplace_back();
    report.rows.push_back(read_row(run, settings.back(), report.notes));
  }
  compare_settings(report.rows, settings, report.notes);
  report.data_title = settings[0].dataset["title"].get<std::string>();  // checked_dataset_description fills it
  for (const BackboneRow& row : report.rows) {
    if (!std::isfinite(row.test_se)) {
      report.notes.push_back(fmt::format("{}: its run has no confusion matrix, so its standard error is unknown.",
                                         row.title));
    }
  }
  std::stable_sort(report.rows.begin(), report.rows.end(),
                   [](const BackboneRow& a, const BackboneRow& b) { return a.test_acc > b.test_acc; });
  const BackboneRow& best = report.rows.front();
  for (BackboneRow& row : report.rows) {
    const double se = std::sqrt(best.test_se * best.test_se + row.test_se * row.test_se);
    row.within_noise_of_best = std::isfinite(se) && best.test_acc - row.test_acc < 2 * se;
  }

  write_file_atomic(out / "backbones.csv", csv_text(report.rows));
  write_file_atomic(out / "plots.gp", kScript);
  report.plots = draw_plots(out, options.gnuplot, "plots.gp", {kPlot}, {kPlot}, report.plots_error);

  json rows = json::array();
  for (size_t i = 0; i < report.rows.size(); ++i) {
    const BackboneRow& r = report.rows[i];
    rows.push_back({{"rank", i + 1},
                    {"backbone", r.backbone},
                    {"title", r.title},
                    {"tap", r.tap},
                    {"width", r.width},
                    {"test_acc", r.test_acc},
                    {"test_se", number_or_null(r.test_se)},
                    {"test_rows", r.test_rows},
                    {"within_noise_of_best", r.within_noise_of_best},
                    {"extract_seconds", number_or_null(r.extract_seconds)},
                    {"extract_images_per_second", number_or_null(r.extract_images_per_second)},
                    {"cache_bytes", r.cache_bytes >= 0 ? json(r.cache_bytes) : json(nullptr)},
                    {"head_seconds", r.head_seconds},
                    {"heads", r.heads},
                    {"run", r.run.string()},
                    {"cache", r.cache.string()}});
  }
  const json j = {{"rows", rows},
                  {"notes", report.notes},
                  {"plots", report.plots},
                  {"plots_error", report.plots_error.empty() ? json(nullptr) : json(report.plots_error)}};
  report.json = out / "report.json";
  report.markdown = out / "report.md";
  write_file_atomic(report.json, json_file_text(j));
  write_file_atomic(report.markdown, markdown(report));
  return report;
}

}  // namespace pipeline
