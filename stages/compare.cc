// transfer-compare: a linear-probe run beside a fine-tuning run (and the study):
// report.md, report.json and SVG plots in --out.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "pipeline/report.h"
#include "stages/cli.h"

int main(int argc, char** argv) {
  pipeline::ReportOptions options;
  CLI::App app{"Compare a linear-probe run (transfer-head) with a fine-tuning run (transfer-finetune): "
               "report.md, report.json and SVG plots",
               "transfer-compare"};
  app.add_option("--head", options.head, "transfer-head run folder (metrics.json, optional sweep.csv)")->required();
  app.add_option("--finetune", options.finetune, "transfer-finetune run folder (metrics.json)")->required();
  auto* seconds = app.add_option("--extract-seconds", options.extract_seconds,
                                 "the probe's one-time feature extraction cost in seconds "
                                 "(default: from the cache's provenance)");
  auto* features = app.add_option("--features", options.features,
                                  "feature cache whose provenance gives the extraction cost "
                                  "(default: the cache the head was trained on, if still there)");
  seconds->excludes(features);
  app.add_option("--out", options.out, "report folder")->capture_default_str();
  app.add_option("--gnuplot", options.gnuplot, "gnuplot program that draws the plots (empty: no plots)")
      ->capture_default_str();
  stages::add_config_flag(app);

  return stages::run(app, argc, argv, [&] {
    const pipeline::ReportResult result = pipeline::write_report(options);
    if (!result.plots_error.empty()) spdlog::warn("{}", result.plots_error);
    fmt::print("{}\n\nwrote {} and {} ({} plots)\n", result.conclusion.text, result.markdown.string(),
               result.json.string(), result.plots.size());
    return 0;
  });
}
