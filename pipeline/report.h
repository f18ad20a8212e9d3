#pragma once
// The comparison (transfer-compare): a linear-probe run (transfer-head) beside a
// full fine-tuning run (transfer-finetune) and beside the study they reproduce.
//
// Reads   <head>/metrics.json (approach "linear-probe"), optionally <head>/sweep.csv,
//         <finetune>/metrics.json (approach "fine-tune"), each run's settings through the
//         one run schema (run_settings.h), and the one-time extraction cost of the probe:
//         --extract-seconds, or the "extract_seconds" key of a feature cache's provenance
//         (--features, else the cache the head's settings name when it is still
//         readable; otherwise the cost is reported as unknown).
// Writes  into options.out, each file through a temporary name and a rename:
//   report.md      for people: conclusion, the results table beside the study's numbers,
//                  every difference from the study, per-class accuracy, the sweep's
//                  leaderboard (top 10), the plots (or how to get them)
//   report.json    the same numbers as data (see write_report below)
//   linear-probe-history.csv, fine-tune-history.csv
//                  history.csv's columns (epoch,train_loss,train_acc,val_loss,val_acc,
//                  seconds) plus elapsed_seconds: cumulative wall-clock at the end of each
//                  epoch; the probe's starts from the extraction cost (0 when unknown)
//   per-class.csv  class,linear_probe,fine_tune: per-class test accuracy in percent
//                  (from the confusion matrices; rows = true class)
//   plots.gp       the gnuplot script that draws the SVGs from those CSVs; `gnuplot
//                  plots.gp` run inside the folder redraws them
//   loss.svg, accuracy.svg, time.svg, per_class.svg
//                  drawn by running options.gnuplot on plots.gp; when the program is
//                  missing or fails, the SVGs of any earlier report are removed (they
//                  would not match) and report.md says why and how to get them.
//
// Units: accuracies are fractions in [0,1] in the structs and report.json (percent only
// in report.md and per-class.csv); "pp" are percentage points; seconds are wall-clock.
// Not thread-safe with respect to a second write_report on the same out folder.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

namespace pipeline {

struct ReportOptions {
  std::filesystem::path head;       // transfer-head run folder (required)
  std::filesystem::path finetune;   // transfer-finetune run folder (required)
  std::filesystem::path features;   // optional: the cache whose provenance gives the extraction cost
  // The probe's one-time extraction cost in seconds; NaN: not given (then `features`,
  // then the head's own cache). Giving both this and `features` is a UsageError.
  double extract_seconds = std::numeric_limits<double>::quiet_NaN();
  std::filesystem::path out = "runs/compare";  // report folder (created)
  // Program that draws the plots (looked up on PATH unless it holds a '/');
  // empty: no plots (the report says so).
  std::string gnuplot = "gnuplot";
};

// One approach's numbers, as shown in the table and report.json.
struct ApproachNumbers {
  std::string approach;        // "linear-probe" | "fine-tune"
  std::string backbone = "alexnet";  // registered name (runs from before backbones were recorded: AlexNet's)
  double best_val_acc = 0;     // validation accuracy of the best epoch
  double best_val_loss = 0;    // validation loss of that same epoch
  int64_t best_epoch = 0;      // 1-based
  double test_acc = 0;         // best-validation weights, scored once
  double test_loss = 0;
  int64_t epochs = 0;          // epochs trained
  double train_seconds = 0;    // all epochs (training + validation)
  double seconds_per_epoch = 0;
  double images_per_second = 0;  // training images per second of training
  int64_t test_rows = 0;       // test images scored (confusion total, else config); 0: unknown
  std::string device;          // as the run recorded it
  // Probe only: the one-time feature extraction, NaN when unknown (and for fine-tune).
  double extract_seconds = std::numeric_limits<double>::quiet_NaN();
  // Cost of one run of the approach from scratch: extract + train (train when unknown).
  double total_seconds() const;
};

// The study's reported numbers (DESIGN.md): one T4 GPU, 224 px, full CIFAR-10,
// ImageNet-pretrained AlexNet, 10 epochs, Adam lr 1e-3, batch 128. The probe ran the
// frozen network's full forward pass every epoch (no cache). They are AlexNet's: a
// report on another backbone says there is no study number instead of comparing.
struct StudyNumbers {
  const char* approach;
  double test_acc;      // fraction
  double val_loss;
  double seconds_low;   // wall-clock for all 10 epochs (a range where the study gave one)
  double seconds_high;
  int64_t epochs;
};
inline constexpr StudyNumbers kStudyProbe{"linear-probe", 0.7969, 0.6005, 1423, 1423, 10};
inline constexpr StudyNumbers kStudyFinetune{"fine-tune", 0.8059, 0.5826, 1430, 1450, 10};
inline constexpr int64_t kStudyImageSize = 224;
inline constexpr int64_t kStudyTrainImages = 50000;
inline constexpr int64_t kStudyTestImages = 10000;

// What the numbers say, and the same in words.
struct Conclusion {
  std::string more_accurate;   // "linear-probe" | "fine-tune" | "tie" (gap under 0.005 pp)
  double gap_pp = 0;           // fine-tune test accuracy minus the probe's, percentage points
  // Standard error of that gap from the test-set sizes (binomial), pp; NaN when a test
  // size is unknown. within_noise: |gap| < 2 standard errors.
  double gap_standard_error_pp = std::numeric_limits<double>::quiet_NaN();
  bool within_noise = false;
  double probe_seconds = 0;     // extraction (when known) + head training
  double finetune_seconds = 0;  // fine-tune training
  bool extract_known = false;
  // N with extract + N * head_train_seconds == finetune_seconds: head runs that fit in
  // one fine-tuning run's time after one extraction. NaN when undefined (extraction cost
  // unknown, or head training took no time); may be <= 0 when the extraction alone costs
  // more than fine-tuning.
  double break_even_head_runs = std::numeric_limits<double>::quiet_NaN();
  // K experiments each way (extract + K*head vs K*finetune): smallest K from which the
  // probe is cheaper; 0 when it never is (a head run costs as much as a fine-tuning run)
  // or when the extraction cost is unknown.
  int64_t cheaper_from_experiments = 0;
  std::string text;             // a few sentences for report.md
};

// Pure: the conclusion from two approaches' numbers (probe.extract_seconds may be NaN).
Conclusion conclude(const ApproachNumbers& probe, const ApproachNumbers& finetune);

struct ReportResult {
  std::filesystem::path markdown;      // out/report.md
  std::filesystem::path json;          // out/report.json
  std::vector<std::string> plots;      // SVG file names written into out (empty on failure)
  std::string plots_error;             // why there are no plots; empty when they were drawn
  Conclusion conclusion;
};

// Reads both runs, writes the report folder (see the top of this file) and returns what
// it wrote. report.json holds: "inputs" (folders, extraction-cost source), "backbone"
// (the runs' backbone; both runs must share it), "approaches"
// {"linear-probe": {...}, "fine-tune": {...}} (the ApproachNumbers fields; unknown values
// as null), "study", "differences" (sentences), "notes", "conclusion" (the Conclusion
// fields), "per_class" (class names and both accuracies), "sweep" (leaderboard rows, or
// null), "plots" (file names) and "plots_error" (null when drawn); "study" is null
// unless the backbone is AlexNet.
// Throws pipeline::Error naming the file for a missing or malformed metrics.json,
// sweep.csv or feature cache (or a cache with no extract_seconds); UsageError when a
// folder holds the other approach's run or when extract_seconds and features are both
// given, or when the two runs are of different backbones. A missing or failing gnuplot
// is not an error (see plots_error).
ReportResult write_report(const ReportOptions& options);

}  // namespace pipeline
