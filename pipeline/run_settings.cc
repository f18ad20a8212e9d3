#include "pipeline/run_settings.h"

#include <cmath>

#include "pipeline/dataset_description.h"
#include "pipeline/error.h"
#include "pipeline/metrics.h"

using nlohmann::json;

namespace pipeline {

json to_json(const RunSettings& s) {
  return {{"backbone", s.backbone},
          {"dataset", s.dataset},
          {"dataset_sha256", s.dataset_sha256},
          {"image_size", s.image_size},
          {"pretrained", s.pretrained},
          {"normalization", s.normalization},
          {"limit_train", s.limit_train},
          {"limit_test", s.limit_test},
          {"train_rows", s.train_rows},
          {"test_rows", s.test_rows},
          {"skipped_images", s.skipped_images},
          {"epochs", s.epochs},
          {"batch_size", s.batch_size},
          {"seed", s.seed},
          {"lr", s.lr},
          {"weight_decay", s.weight_decay},
          {"val_fraction", s.val_fraction},
          {"precision", s.precision},
          {"test_every_epoch", s.test_every_epoch},
          {"head", s.head},
          {"tap", s.tap},
          {"features", s.features},
          {"extract_precision", s.extract_precision},
          {"feature_dtype", s.feature_dtype},
          {"sweep_lr", s.sweep_lr},
          {"sweep_wd", s.sweep_wd},
          {"sweep_seeds", s.sweep_seeds},
          {"heads", s.heads},
          {"cache_settings", s.cache_settings}};
}

namespace {

// One object's fields, each checked for its type; errors name the source and the key.
class Fields {
 public:
  Fields(const json& object, const std::string& source) : object_(object), source_(source) {
    if (!object_.is_object()) fail("{}: \"settings\" is not an object", source_);
  }
  const json& at(const char* key) const {
    if (!object_.contains(key)) fail("{}: settings.{} is missing", source_, key);
    return object_[key];
  }
  std::string text(const char* key) const {
    const json& v = at(key);
    if (!v.is_string()) fail("{}: settings.{} is not a string", source_, key);
    return v.get<std::string>();
  }
  bool flag(const char* key) const {
    const json& v = at(key);
    if (!v.is_boolean()) fail("{}: settings.{} is not true or false", source_, key);
    return v.get<bool>();
  }
  int64_t integer(const char* key, int64_t min, int64_t max) const {
    return integer_at(object_, key, source_, "settings", min, max);
  }
  double number(const char* key) const { return checked_number(at(key), key); }
  std::vector<double> numbers(const char* key) const {
    const json& v = at(key);
    if (!v.is_array()) fail("{}: settings.{} is not a list of numbers", source_, key);
    std::vector<double> out;
    for (const json& item : v) out.push_back(checked_number(item, key));
    return out;
  }

 private:
  double checked_number(const json& v, const char* key) const {
    if (!v.is_number() || !std::isfinite(v.get<double>())) fail("{}: settings.{} is not a finite number", source_, key);
    return v.get<double>();
  }
  const json& object_;
  const std::string& source_;
};

constexpr int64_t kMaxCount = int64_t{1} << 40;  // far above any real image count or size

}  // namespace

RunSettings run_settings_from_json(const json& j, const std::string& source) {
  const Fields f(j, source);
  RunSettings s;
  s.backbone = f.text("backbone");  // the reports look it up (models/backbone.h recorded_backbone)
  if (s.backbone.empty()) fail("{}: settings.backbone is empty", source);
  s.dataset = checked_dataset_description(f.at("dataset"), source + ": settings.dataset");
  s.dataset_sha256 = f.text("dataset_sha256");
  s.image_size = f.integer("image_size", 0, kMaxCount);
  s.pretrained = f.flag("pretrained");
  s.normalization = f.text("normalization");
  s.limit_train = f.integer("limit_train", -1, kMaxCount);
  s.limit_test = f.integer("limit_test", -1, kMaxCount);
  s.train_rows = f.integer("train_rows", 0, kMaxCount);
  s.test_rows = f.integer("test_rows", 0, kMaxCount);
  s.skipped_images = f.integer("skipped_images", 0, kMaxCount);
  s.epochs = f.integer("epochs", 1, kMaxEpochs);
  s.batch_size = f.integer("batch_size", 1, kMaxCount);
  const json& seed = f.at("seed");
  if (!seed.is_number_unsigned() && !(seed.is_number_integer() && seed.get<int64_t>() >= 0)) {
    fail("{}: settings.seed is not a non-negative integer", source);
  }
  s.seed = seed.get<uint64_t>();
  s.lr = f.number("lr");
  s.weight_decay = f.number("weight_decay");
  s.val_fraction = f.number("val_fraction");
  s.precision = f.text("precision");
  s.test_every_epoch = f.flag("test_every_epoch");
  s.head = f.text("head");
  s.tap = f.text("tap");
  s.features = f.text("features");
  s.extract_precision = f.text("extract_precision");
  s.feature_dtype = f.text("feature_dtype");
  s.sweep_lr = f.numbers("sweep_lr");
  s.sweep_wd = f.numbers("sweep_wd");
  s.sweep_seeds = f.integer("sweep_seeds", 0, kMaxCount);
  s.heads = f.integer("heads", 1, kMaxCount);
  s.cache_settings = f.at("cache_settings");
  if (!s.cache_settings.is_object()) fail("{}: settings.cache_settings is not an object", source);
  return s;
}

}  // namespace pipeline
