// transfer-compare's body: read the two runs, conclude, write the report folder. The
// parts live in report_inputs.cc, report_conclusion.cc, report_render.cc and
// report_plots.cc (report_parts.h).
#include "pipeline/report.h"

#include <cmath>
#include <iterator>

#include "pipeline/error.h"
#include "pipeline/files.h"
#include "pipeline/metrics.h"
#include "pipeline/plots.h"
#include "pipeline/report_parts.h"

namespace fs = std::filesystem;

namespace pipeline {

double ApproachNumbers::total_seconds() const {
  return std::isfinite(extract_seconds) ? extract_seconds + train_seconds : train_seconds;
}

namespace {
constexpr const char* kPlotNames[] = {"loss.svg", "accuracy.svg", "time.svg", "per_class.svg"};
}  // namespace

ReportResult write_report(const ReportOptions& options) {
  using namespace report_parts;
  if (options.head.empty()) usage_fail("--head is required (a transfer-head run folder)");
  if (options.finetune.empty()) usage_fail("--finetune is required (a transfer-finetune run folder)");
  if (options.out.empty()) usage_fail("--out must not be empty");
  if (std::isfinite(options.extract_seconds) && !options.features.empty()) {
    usage_fail("give --extract-seconds or --features, not both");
  }
  if (options.extract_seconds < 0) usage_fail("--extract-seconds must be >= 0, got {}", options.extract_seconds);
  // Checked before any reading or writing: the report may not land inside a run it reads.
  const fs::path out = output_path(options.out, "--out");
  refuse_output_over_inputs(out, {options.head, options.finetune, options.features}, "--out");
  // A report folder (never a folder of the user's files), this report's alone.
  std::vector<std::string> files(std::begin(kPlotNames), std::end(kPlotNames));
  files.insert(files.end(), {"report.md", "report.json", "plots.gp", "linear-probe-history.csv",
                             "fine-tune-history.csv", "per-class.csv", kPlotLog});
  const FolderLock lock(out, "transfer-compare report", files);
  const ReportInputs in = read_inputs(options);

  ReportResult result;
  result.conclusion = conclude(in.probe, in.finetune);
  const std::vector<std::string> diffs = differences(in);

  write_file_atomic(options.out / "linear-probe-history.csv",
                    plot_csv(in.head.epochs, std::isfinite(in.probe.extract_seconds) ? in.probe.extract_seconds : 0));
  write_file_atomic(options.out / "fine-tune-history.csv", plot_csv(in.tune.epochs, 0));
  std::error_code ignored;
  const std::vector<std::string> class_names = in.class_names();
  if (in.per_class()) {
    write_file_atomic(options.out / "per-class.csv", per_class_csv(class_names, in.probe_classes, in.tune_classes));
  } else {
    fs::remove(options.out / "per-class.csv", ignored);
  }
  write_file_atomic(options.out / "plots.gp",
                    gnuplot_script(in.probe.extract_seconds, in.per_class(), class_names.size()));
  std::vector<std::string> wanted;
  for (const char* name : kPlotNames) {
    if (in.per_class() || std::string(name) != "per_class.svg") wanted.push_back(name);
  }
  result.plots = draw_plots(options.out, options.gnuplot, "plots.gp", wanted,
                            std::vector<std::string>(std::begin(kPlotNames), std::end(kPlotNames)), result.plots_error);

  result.markdown = options.out / "report.md";
  result.json = options.out / "report.json";
  write_file_atomic(result.json,
                    json_file_text(report_json(options, in, result.conclusion, diffs, result.plots, result.plots_error)));
  write_file_atomic(result.markdown, markdown(options, in, result.conclusion, diffs, result.plots, result.plots_error));
  return result;
}

}  // namespace pipeline
