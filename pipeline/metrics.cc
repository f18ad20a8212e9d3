#include "pipeline/metrics.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "pipeline/error.h"
#include "pipeline/files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline {
namespace {

double number_at(const json& object, const char* key, const std::string& source, const std::string& where) {
  if (!object.contains(key)) fail("{}: {} has no \"{}\"", source, where, key);
  const json& value = object.at(key);
  if (value.is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (!value.is_number()) fail("{}: {}.{} is not a number", source, where, key);
  return value.get<double>();
}

}  // namespace

RunMetrics metrics_fields(const json& j, const std::string& source);

int64_t integer_at(const json& object, const char* key, const std::string& source, const std::string& where,
                   int64_t min, int64_t max) {
  if (!object.is_object() || !object.contains(key)) fail("{}: {} has no \"{}\"", source, where, key);
  const json& value = object.at(key);
  // Compared as JSON numbers first: casting 1e300 (or 2^64-1) to int64 is undefined.
  bool ok = false;
  int64_t out = 0;
  if (value.is_number_unsigned()) {
    ok = value.get<uint64_t>() <= static_cast<uint64_t>(max);
    if (ok) out = static_cast<int64_t>(value.get<uint64_t>());
  } else if (value.is_number_integer()) {
    out = value.get<int64_t>();
    ok = true;
  }
  if (!ok || out < min || out > max) {
    fail("{}: {}.{} is {}, not an integer in [{}, {}]", source, where, key, value.dump(), min, max);
  }
  return out;
}

std::string json_file_text(const json& value) {
  return value.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string csv_number(double value) { return std::isfinite(value) ? fmt::format("{:.6g}", value) : ""; }

json number_or_null(double value) { return std::isfinite(value) ? json(value) : json(nullptr); }

json to_json(const EpochRecord& e) {
  return {{"epoch", e.epoch},
          {"train_loss", number_or_null(e.train_loss)},
          {"train_acc", number_or_null(e.train_acc)},
          {"val_loss", number_or_null(e.val_loss)},
          {"val_acc", number_or_null(e.val_acc)},
          {"seconds", e.seconds},
          {"test_loss", number_or_null(e.test_loss)},
          {"test_acc", number_or_null(e.test_acc)}};
}

EpochRecord epoch_from_json(const json& e, const std::string& source, const std::string& where) {
  if (!e.is_object()) fail("{}: {} is not an object", source, where);
  EpochRecord r;
  r.epoch = integer_at(e, "epoch", source, where, 1, kMaxEpochs);
  r.train_loss = number_at(e, "train_loss", source, where);
  r.train_acc = number_at(e, "train_acc", source, where);
  r.val_loss = number_at(e, "val_loss", source, where);
  r.val_acc = number_at(e, "val_acc", source, where);
  r.seconds = number_at(e, "seconds", source, where);
  if (e.contains("test_loss")) r.test_loss = number_at(e, "test_loss", source, where);
  if (e.contains("test_acc")) r.test_acc = number_at(e, "test_acc", source, where);
  return r;
}

json to_json(const RunMetrics& m) {
  json epochs = json::array();
  for (const EpochRecord& e : m.epochs) epochs.push_back(to_json(e));
  return {{"approach", m.approach}, {"settings", to_json(m.settings)}, {"config", m.config},
          {"epochs", epochs}, {"best_epoch", m.best_epoch}, {"test_loss", m.test_loss}, {"test_acc", m.test_acc}, {"train_seconds", m.train_seconds},
          {"images_per_second", m.images_per_second}, {"device", m.device}, {"confusion", m.confusion}};
}

RunMetrics metrics_from_json(const json& j, const std::string& source) {
  try {
    return metrics_fields(j, source);
  } catch (const json::exception& e) {
    // A field of the wrong JSON type: nlohmann's message names no file.
    fail("{}: a field has the wrong type ({}); the file was not written by this program", source, e.what());
  }
}

RunMetrics metrics_fields(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: not a JSON object", source);
  RunMetrics m;
  if (!j.contains("approach") || !j["approach"].is_string()) fail("{}: missing \"approach\"", source);
  m.approach = j["approach"];
  if (!j.contains("settings")) {
    fail("{}: no \"settings\" (written by an older transfer-head or transfer-finetune); rerun that stage", source);
  }
  m.settings = run_settings_from_json(j["settings"], source);
  m.config = j.value("config", json::object());
  if (!j.contains("epochs") || !j["epochs"].is_array() || j["epochs"].empty()) {
    fail("{}: \"epochs\" must be a non-empty list", source);
  }
  for (size_t i = 0; i < j["epochs"].size(); ++i) {
    m.epochs.push_back(epoch_from_json(j["epochs"][i], source, fmt::format("epochs[{}]", i)));
  }
  m.best_epoch = integer_at(j, "best_epoch", source, "metrics", 1, kMaxEpochs);
  if (m.best_epoch < 1 || m.best_epoch > static_cast<int64_t>(m.epochs.size())) {
    fail("{}: best_epoch {} is not one of its {} epochs", source, m.best_epoch, m.epochs.size());
  }
  m.test_loss = number_at(j, "test_loss", source, "metrics");
  m.test_acc = number_at(j, "test_acc", source, "metrics");
  m.train_seconds = number_at(j, "train_seconds", source, "metrics");
  m.images_per_second = number_at(j, "images_per_second", source, "metrics");
  m.device = j.contains("device") ? j.at("device").get<std::string>() : "";
  if (j.contains("confusion")) {
    const json& rows = j["confusion"];
    if (!rows.is_array()) fail("{}: \"confusion\" is not a matrix of counts", source);
    for (size_t r = 0; r < rows.size(); ++r) {
      if (!rows[r].is_array() || rows[r].size() != rows.size()) fail("{}: \"confusion\" is not a square matrix", source);
      std::vector<int64_t> counts;
      for (size_t c = 0; c < rows[r].size(); ++c) {
        counts.push_back(integer_at(json{{"count", rows[r][c]}}, "count", source, fmt::format("confusion[{}][{}]", r, c),
                                    0, std::numeric_limits<int32_t>::max()));
      }
      m.confusion.push_back(counts);
    }
  }
  if (!(m.test_acc >= 0 && m.test_acc <= 1)) fail("{}: test_acc {} is not a fraction in [0,1]", source, m.test_acc);
  // Seconds come from a clock: not negative and under ~30 years, so the report's sums
  // and ratios of them stay finite and meaningful.
  const auto check_seconds = [&source](double seconds, const std::string& what) {
    if (!(seconds >= 0 && seconds <= 1e9)) fail("{}: {} {} is not a duration in seconds (0 to 1e9)", source, what, seconds);
  };
  check_seconds(m.train_seconds, "train_seconds");
  for (size_t e = 0; e < m.epochs.size(); ++e) check_seconds(m.epochs[e].seconds, fmt::format("epochs[{}].seconds", e));
  if (!std::isnan(m.images_per_second) && !(m.images_per_second >= 0 && m.images_per_second <= 1e12)) {
    fail("{}: images_per_second {} is not a rate (0 to 1e12)", source, m.images_per_second);
  }
  return m;
}

std::string history_csv(const std::vector<EpochRecord>& epochs) {
  std::string csv = "epoch,train_loss,train_acc,val_loss,val_acc,seconds,test_loss,test_acc\n";
  for (const EpochRecord& e : epochs) {
    csv += fmt::format("{},{},{},{},{},{},{},{}\n", e.epoch, csv_number(e.train_loss), csv_number(e.train_acc),
                       csv_number(e.val_loss), csv_number(e.val_acc), csv_number(e.seconds), csv_number(e.test_loss),
                       csv_number(e.test_acc));
  }
  return csv;
}

void write_metrics(const fs::path& dir, const RunMetrics& metrics) {
  write_file_atomic(dir / "history.csv", history_csv(metrics.epochs));
  write_file_atomic(dir / "metrics.json", json_file_text(to_json(metrics)));
}

RunMetrics read_metrics(const fs::path& dir) {
  const fs::path file = dir / "metrics.json";
  if (!fs::exists(file)) fail("{} does not exist: is {} a finished run folder?", file.string(), dir.string());
  // config.json is written last: without it the run did not finish, whatever else is there.
  if (!fs::exists(dir / "config.json")) {
    fail("{} has no config.json: the run did not finish (rerun its stage to complete it)", dir.string());
  }
  json j;
  try {
    j = json::parse(read_file(file));
  } catch (const json::exception& e) {
    fail("{} is not valid JSON: {}", file.string(), e.what());
  }
  return metrics_from_json(j, file.string());
}

bool json_file_equals(const fs::path& file, const json& value) {
  if (!fs::exists(file)) return false;
  try {
    // Compared as written: json_file_text replaces bytes that are not UTF-8 (a path's).
    return json::parse(read_file(file)) == json::parse(json_file_text(value));
  } catch (const std::exception&) {
    return false;
  }
}

bool run_is_up_to_date(const fs::path& dir, const json& config) {
  if (!fs::exists(dir / "metrics.json") || !json_file_equals(dir / "config.json", config)) return false;
  try {
    read_metrics(dir);
    return true;
  } catch (const Error&) {
    return false;  // a damaged metrics.json is redone, not trusted
  }
}

}  // namespace pipeline
