#pragma once
// Ranking backbones (transfer-compare --backbones): one probe run (transfer-head, a
// single head or a sweep) per backbone, on the same data, side by side with what each
// backbone's features cost. `make -f Makefile.runs backbones` makes the runs.
//
// Reads   <run>/metrics.json and config.json of each run, and the feature cache its
//         config names (extraction seconds and images/s from its provenance, its size;
//         when the cache is gone those are unknown and a note says so).
// Writes  into options.out, each file through a temporary name and a rename:
//   report.md        for people: the ranking table, which differences between the runs
//                    make the comparison unfair (data, image size, epochs...), the plot
//   report.json      {"rows": [...] (BackboneRow fields, unknown values null),
//                     "notes": [...], "plots": [...], "plots_error": null | why}
//   backbones.csv    rank,backbone,tap,width,test_acc_pct,test_se_pct,extract_seconds,
//                    extract_images_per_second,cache_mib,head_seconds,heads,run
//   plots.gp, accuracy_vs_cost.svg   test accuracy (with 2 standard errors) against
//                    extraction seconds, one labelled point per backbone (gnuplot; see
//                    plots.h for when it is missing)
// Units: accuracies are fractions in the struct and report.json, percent in the .md
// and .csv; seconds are wall-clock on the machine that ran each stage.

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

namespace pipeline {

struct BackbonesReportOptions {
  std::vector<std::filesystem::path> heads;    // transfer-head run folders (at least one)
  std::filesystem::path out = "runs/backbones";
  std::string gnuplot = "gnuplot";             // as ReportOptions::gnuplot
};

struct BackboneRow {
  std::string backbone, title, tap;  // "resnet18", "ResNet-18", "pool"
  int64_t width = 0;                  // features per image at the tap
  double test_acc = 0;                // best-validation head, scored once
  // Binomial standard error of test_acc from the test-set size; NaN when unknown.
  double test_se = std::numeric_limits<double>::quiet_NaN();
  int64_t test_rows = 0;
  bool within_noise_of_best = false;  // |best - this| < 2 standard errors of the difference
  double extract_seconds = std::numeric_limits<double>::quiet_NaN();
  double extract_images_per_second = std::numeric_limits<double>::quiet_NaN();
  int64_t cache_bytes = -1;           // -1: unknown
  double head_seconds = 0;            // training (the whole sweep for a sweep)
  int64_t heads = 1;                  // heads trained (a sweep's size)
  std::filesystem::path run, cache;
};

struct BackbonesReport {
  std::vector<BackboneRow> rows;   // ranked: best test accuracy first
  std::vector<std::string> notes;  // differences between the runs (data included), unknown costs
  std::string data_title;          // the first run's dataset ("CIFAR-10" when not recorded)
  std::filesystem::path markdown, json;
  std::vector<std::string> plots;
  std::string plots_error;         // empty when drawn
};

// Throws pipeline::UsageError for no runs or a run of the other approach (a
// fine-tuning run), pipeline::Error naming the file for a missing or malformed run.
BackbonesReport write_backbones_report(const BackbonesReportOptions& options);

}  // namespace pipeline
