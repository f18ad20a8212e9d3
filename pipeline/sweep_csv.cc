#include "pipeline/sweep_csv.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "pipeline/error.h"
#include "pipeline/files.h"

namespace pipeline {

std::string sweep_csv_text(const std::vector<SweepRow>& rows) {
  std::string csv = std::string(kSweepCsvHeader) + "\n";
  for (const SweepRow& r : rows) {
    csv += fmt::format("{},{},{},{},{},{:.6f},{:.6f},{:.6f},{:.6f}\n", r.rank, r.lr, r.weight_decay, r.init_seed,
                       r.best_epoch, r.best_val_acc, r.best_val_loss, r.test_acc, r.test_loss);
  }
  return csv;
}

std::vector<SweepRow> read_sweep(const std::filesystem::path& file) {
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
      if (values[k] != std::floor(values[k]) || values[k] < 0 || values[k] > 9e15) {
        fail("{}: line {}: field {} is {}, not a count", file.string(), line_number, k + 1, values[k]);
      }
    }
    SweepRow r;
    r.rank = static_cast<int64_t>(values[0]);
    r.lr = values[1];
    r.weight_decay = values[2];
    r.init_seed = static_cast<uint64_t>(values[3]);
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

}  // namespace pipeline
