#pragma once
// What a training run produced, as data (DESIGN.md "metrics.json"):
//   metrics.json  approach, settings (run_settings.h: what a reader of results needs,
//                 one type), config (every resolved option, as the stage's config.json),
//                 epochs, best_epoch, test_loss, test_acc (of the best-validation
//                 weights), train_seconds, images_per_second, device, confusion
//                 (classes x classes on test, rows = true class)
//   history.csv   epoch,train_loss,train_acc,val_loss,val_acc,seconds,test_loss,test_acc
// Accuracies are fractions in [0,1]; losses are mean cross-entropy (nats); seconds are
// wall-clock. test_* per epoch are NaN (empty in the CSV) unless scored every epoch.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <filesystem>
#include <string>
#include <vector>

#include "pipeline/run_settings.h"

namespace pipeline {

struct EpochRecord {
  int64_t epoch = 0;  // 1-based
  double train_loss = 0, train_acc = 0, val_loss = 0, val_acc = 0;
  double seconds = 0;  // wall-clock of this epoch (training + validation)
  double test_loss = std::numeric_limits<double>::quiet_NaN();
  double test_acc = std::numeric_limits<double>::quiet_NaN();
};

struct RunMetrics {
  std::string approach;  // "linear-probe" | "fine-tune" | "classifier-head"
  RunSettings settings;   // what the reports read
  nlohmann::json config = nlohmann::json::object();  // the stage's own record; reports never read it
  std::vector<EpochRecord> epochs;
  int64_t best_epoch = 0;  // 1-based epoch whose validation accuracy was best
  double test_loss = 0, test_acc = 0;
  double train_seconds = 0;      // all epochs, training and validation
  double images_per_second = 0;  // training images per second of training
  std::string device;
  std::vector<std::vector<int64_t>> confusion;  // [classes][classes]
};

// The most epochs a run file may name (a bound for validation, far above any real run).
inline constexpr int64_t kMaxEpochs = 1000000;

// object[key] as an integer in [min, max]. Throws pipeline::Error naming `source`,
// `where` and `key` when it is absent, not an integer (1.5, "3", 1e300: never cast
// out of range), or outside [min, max].
int64_t integer_at(const nlohmann::json& object, const char* key, const std::string& source,
                   const std::string& where, int64_t min, int64_t max);

// `value` as the text of a JSON file (indented, newline-terminated). Strings that are
// not UTF-8 (paths are bytes on Linux) have their bad bytes replaced by U+FFFD rather
// than throwing halfway through a stage's output. Never throws.
std::string json_file_text(const nlohmann::json& value);

// A number for JSON, which has no NaN or infinity: those become null.
nlohmann::json number_or_null(double value);
// A number for a CSV cell (6 significant digits); NaN or infinity become an empty cell.
std::string csv_number(double value);

// One epoch as JSON (NaN, e.g. an unscored test, becomes null) and back; the reader
// throws pipeline::Error naming `source` and `where` for a missing or non-number field.
nlohmann::json to_json(const EpochRecord& record);
EpochRecord epoch_from_json(const nlohmann::json& json, const std::string& source, const std::string& where);

nlohmann::json to_json(const RunMetrics& metrics);
// Validates every field (types, integer ranges, best_epoch among the epochs, a square
// confusion matrix of counts, the settings; a file without settings predates them and
// is refused, so a stage's up-to-date check retrains); throws pipeline::Error naming
// `source` and the field.
RunMetrics metrics_from_json(const nlohmann::json& json, const std::string& source);

std::string history_csv(const std::vector<EpochRecord>& epochs);

// Writes dir/metrics.json and dir/history.csv (each atomically).
void write_metrics(const std::filesystem::path& dir, const RunMetrics& metrics);
// Reads and validates dir/metrics.json of a finished run; a missing or malformed file,
// or a folder without config.json (the finished marker, written last), is a
// pipeline::Error naming it.
RunMetrics read_metrics(const std::filesystem::path& dir);

// True when `file` exists and holds JSON equal to `value`. Never throws (an unreadable
// or malformed file is simply not equal).
bool json_file_equals(const std::filesystem::path& file, const nlohmann::json& value);

// True when `dir` is a finished run of exactly these settings: it holds a valid
// metrics.json and a config.json (written last by the stages) equal to `config`.
// Never throws.
bool run_is_up_to_date(const std::filesystem::path& dir, const nlohmann::json& config);

}  // namespace pipeline
