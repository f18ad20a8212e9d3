#pragma once
// The comparison's parts, which write_report (report.cc) assembles; report.h is the
// stage's contract. Internal to these modules:
//   report_inputs.cc      the two runs read and checked, the probe's extraction cost
//   report_conclusion.cc  conclude() and the differences from the study
//   report_render.cc      report.md and report.json
//   report_plots.cc       the CSVs behind the plots, and the gnuplot script
// Units as in report.h: accuracies are fractions, seconds wall-clock.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "pipeline/metrics.h"
#include "pipeline/report.h"
#include "pipeline/sweep_csv.h"

namespace pipeline::report_parts {

inline constexpr size_t kSweepRowsShown = 10;       // the leaderboard's rows
inline constexpr size_t kClassesShownEachEnd = 10;  // report.md's per-class table beyond 20 classes

// The probe's one-time feature extraction.
struct Extraction {
  double seconds = std::numeric_limits<double>::quiet_NaN();  // NaN: unknown
  std::string source;  // where the number came from, or why it is unknown
  std::string device;  // the extraction's device, when the cache says
  std::vector<std::string> notes;  // caveats for report.md's differences
};

// What the report is made of, read from the run folders and checked.
struct ReportInputs {
  RunMetrics head;  // approach "linear-probe"
  RunMetrics tune;  // approach "fine-tune"; same dataset and backbone as `head`
  ApproachNumbers probe, finetune;  // probe.extract_seconds is extraction.seconds
  Extraction extraction;
  std::vector<SweepRow> sweep;  // the head's sweep.csv; empty without one
  // Per-class test accuracy (NaN: a class without test images); both empty unless both
  // runs have a classes x classes confusion matrix.
  std::vector<double> probe_classes, tune_classes;

  const nlohmann::json& dataset() const { return head.settings.dataset; }
  std::vector<std::string> class_names() const;
  bool per_class() const { return !probe_classes.empty(); }
  // The study's numbers are AlexNet's on CIFAR-10; other runs are not compared with them.
  bool has_study() const;
};

// Reads and checks both runs, the sweep and the extraction cost; throws as
// write_report says (report.h). Reads only: nothing is written.
ReportInputs read_inputs(const ReportOptions& options);

// One sentence per setting in which the runs differ from the study.
std::vector<std::string> differences(const ReportInputs& in);

// history.csv's columns plus elapsed_seconds (cumulative, from start_seconds).
std::string plot_csv(const std::vector<EpochRecord>& epochs, double start_seconds);
// class,linear_probe,fine_tune in percent; a class name is quoted when it needs it.
std::string per_class_csv(const std::vector<std::string>& names, const std::vector<double>& probe,
                          const std::vector<double>& finetune);
// plots.gp: loss, accuracy, time (with the extraction marked when known) and, when
// per_class, the per-class bars (wider beyond 20 classes).
std::string gnuplot_script(double extract_seconds, bool per_class, size_t classes);

// report.md and report.json (report.h says what each holds).
std::string markdown(const ReportOptions& options, const ReportInputs& in, const Conclusion& conclusion,
                     const std::vector<std::string>& diffs, const std::vector<std::string>& plots,
                     const std::string& plots_error);
nlohmann::json report_json(const ReportOptions& options, const ReportInputs& in, const Conclusion& conclusion,
                           const std::vector<std::string>& diffs, const std::vector<std::string>& plots,
                           const std::string& plots_error);

}  // namespace pipeline::report_parts
