// transfer-compare: a linear-probe run beside a fine-tuning run (and the study), or
// (--backbones) probe runs of several backbones ranked: report.md, report.json and SVG
// plots in --out.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>

#include "pipeline/backbones_report.h"
#include "pipeline/report.h"
#include "stages/cli.h"

int main(int argc, char** argv) {
  pipeline::ReportOptions options;
  std::vector<std::filesystem::path> backbone_runs;
  CLI::App app{"Compare a linear-probe run (transfer-head) with a fine-tuning run (transfer-finetune), or rank "
               "several backbones' probe runs (--backbones): report.md, report.json and SVG plots",
               "transfer-compare"};
  auto* head = app.add_option("--head", options.head, "transfer-head run folder (metrics.json, optional sweep.csv)");
  auto* finetune = app.add_option("--finetune", options.finetune, "transfer-finetune run folder (metrics.json)");
  auto* backbones = app.add_option("--backbones", backbone_runs,
                                   "rank these transfer-head runs (one per backbone, comma list) by test accuracy, "
                                   "with each one's extraction cost")
                        ->delimiter(',');
  auto* seconds = app.add_option("--extract-seconds", options.extract_seconds,
                                 "the probe's one-time feature extraction cost in seconds "
                                 "(default: from the cache's provenance)");
  auto* features = app.add_option("--features", options.features,
                                  "feature cache whose provenance gives the extraction cost "
                                  "(default: the cache the head was trained on, if still there)");
  seconds->excludes(features);
  backbones->excludes(head)->excludes(finetune)->excludes(seconds)->excludes(features);
  app.add_option("--out", options.out, "report folder")->capture_default_str();
  app.add_option("--gnuplot", options.gnuplot,
                 "gnuplot program that draws the plots (empty: no plots; stopped after 120 s, the report then has none)")
      ->capture_default_str();
  stages::add_config_flag(app);

  return stages::run(app, argc, argv, [&] {
    for (const std::filesystem::path& folder : backbone_runs) {
      const std::string run = folder.string();
      if (run.empty() || run.rfind("-", 0) == 0) {
        throw pipeline::UsageError(fmt::format("--backbones: '{}' is no run folder: give a comma list of transfer-head "
                                               "run folders, e.g. --backbones runs/a,runs/b",
                                               run));
      }
    }
    if (seconds->count() > 0 && !std::isfinite(options.extract_seconds)) {
      throw pipeline::UsageError(fmt::format("--extract-seconds must be a finite number of seconds, not {}",
                                             options.extract_seconds));
    }
    if (!backbone_runs.empty()) {
      const pipeline::BackbonesReport report =
          pipeline::write_backbones_report({backbone_runs, options.out, options.gnuplot});
      if (!report.plots_error.empty()) spdlog::warn("{}", report.plots_error);
      for (size_t i = 0; i < report.rows.size(); ++i) {
        const auto& r = report.rows[i];
        fmt::print("{}. {} ({}): test accuracy {:.2f}%, extraction {:.1f} s\n", i + 1, r.title, r.tap,
                   100 * r.test_acc, r.extract_seconds);
      }
      fmt::print("\nwrote {} and {} ({} plots)\n", report.markdown.string(), report.json.string(), report.plots.size());
      return 0;
    }
    if (options.head.empty() || options.finetune.empty()) {
      throw pipeline::UsageError("give --head and --finetune (one backbone's two approaches), or --backbones RUNS");
    }
    const pipeline::ReportResult result = pipeline::write_report(options);
    if (!result.plots_error.empty()) spdlog::warn("{}", result.plots_error);
    fmt::print("{}\n\nwrote {} and {} ({} plots)\n", result.conclusion.text, result.markdown.string(),
               result.json.string(), result.plots.size());
    return 0;
  });
}
