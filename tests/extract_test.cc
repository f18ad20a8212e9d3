#include "pipeline/extract.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "pipeline/cifar10.h"
#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/synth.h"
#include "test_util.h"

namespace fs = std::filesystem;
using testutil::TempDir;

namespace {

pipeline::ExtractOptions small_options(const TempDir& dir) {
  if (!fs::exists(dir / "data")) pipeline::write_synthetic_cifar({dir / "data", 40, 12, 3});
  pipeline::ExtractOptions o;
  o.data = dir / "data";
  o.weights = "random:1";
  o.out = dir / "cache" / "features.h5";
  o.taps = "pool5,fc7";
  o.image_size = 64;
  o.batch_size = 8;
  o.compute.device = "cpu";
  return o;
}

}  // namespace

TEST(Extract, WritesEveryRowWithSourceLabelsInOrder) {
  TempDir dir;
  const auto options = small_options(dir);
  const auto summary = pipeline::run_extract(options);
  EXPECT_FALSE(summary.up_to_date);
  EXPECT_EQ(summary.images, 52);
  pipeline::FeatureReader cache(options.out);
  EXPECT_EQ(cache.taps(), (std::vector<std::string>{"pool5", "fc7"}));
  EXPECT_EQ(cache.read("train", "fc7").sizes(), (std::vector<int64_t>{40, 4096}));
  EXPECT_EQ(cache.read("test", "pool5").sizes(), (std::vector<int64_t>{12, 9216}));
  EXPECT_TRUE(torch::equal(cache.labels("train"), pipeline::load_cifar(options.data, pipeline::Split::Train).labels));
  EXPECT_TRUE(torch::equal(cache.labels("test"), pipeline::load_cifar(options.data, pipeline::Split::Test).labels));
  const auto& settings = cache.provenance()["settings"];
  EXPECT_EQ(settings["image_size"], 64);
  EXPECT_EQ(settings["weights_sha256"], "random:1");
  EXPECT_EQ(settings["pretrained"], false);
  EXPECT_GT(cache.provenance()["extract_seconds"].get<double>(), 0.0);
  // fc7 is after a ReLU.
  EXPECT_GE(cache.read("train", "fc7").min().item<float>(), 0.0f);
}

TEST(Extract, SecondRunIsUpToDateAndForceRebuilds) {
  TempDir dir;
  auto options = small_options(dir);
  pipeline::run_extract(options);
  EXPECT_TRUE(pipeline::run_extract(options).up_to_date);
  options.force = true;
  EXPECT_FALSE(pipeline::run_extract(options).up_to_date);
  options.force = false;
  options.image_size = 72;  // another setting: rebuilt, not reused
  EXPECT_FALSE(pipeline::run_extract(options).up_to_date);
}

TEST(Extract, CacheOfAnotherBackboneIsNeverReused) {
  TempDir dir;
  auto options = small_options(dir);
  options.taps = "";  // each backbone's default tap
  pipeline::run_extract(options);
  options.backbone = "resnet18";
  const auto summary = pipeline::run_extract(options);
  EXPECT_FALSE(summary.up_to_date);
  const pipeline::FeatureReader cache(options.out);
  EXPECT_EQ(cache.provenance()["settings"]["backbone"], "resnet18");
  EXPECT_EQ(cache.taps(), (std::vector<std::string>{"pool"}));
  EXPECT_EQ(cache.width("pool"), 512);
  options.taps = "fc7";  // AlexNet's layer, not ResNet's
  EXPECT_THROW(pipeline::run_extract(options), pipeline::UsageError);
}

TEST(Extract, InterruptedRunResumesToTheSameFeatures) {
  TempDir dir;
  auto options = small_options(dir);
  options.stop_after_batches = 2;
  const auto stopped = pipeline::run_extract(options);
  EXPECT_TRUE(stopped.stopped);
  EXPECT_FALSE(fs::exists(options.out)) << "an interrupted extraction must not look complete";
  EXPECT_TRUE(fs::exists(options.out.string() + ".partial"));
  EXPECT_THROW(pipeline::FeatureReader{options.out}, pipeline::Error);

  options.stop_after_batches = 0;
  const auto resumed = pipeline::run_extract(options);
  EXPECT_TRUE(resumed.resumed);
  EXPECT_EQ(resumed.images, 52 - 16);
  EXPECT_EQ(stopped.batch_seconds.size(), 2u);
  EXPECT_EQ(resumed.batch_seconds.size(), 5u) << "this call's batches only: 24 training rows, then 12 test rows";

  auto fresh = options;
  fresh.out = dir / "fresh.h5";
  pipeline::run_extract(fresh);
  pipeline::FeatureReader a(options.out), b(fresh.out);
  for (const char* split : {"train", "test"}) {
    EXPECT_TRUE(torch::allclose(a.read(split, "fc7"), b.read(split, "fc7"), 1e-5, 1e-6)) << split;
    EXPECT_TRUE(torch::equal(a.labels(split), b.labels(split)));
  }
}

// On a CPU a group of batches is preprocessed at once (up to 8): batches of 3 rows make
// two groups of the 40 training rows, the second one short and ending in a short batch.
// Each row must still be its own image's features, and the split of the seconds adds up.
TEST(Extract, RowsAreTheSameWhateverTheBatchesAndTheirGroups) {
  TempDir dir;
  auto grouped = small_options(dir);
  grouped.batch_size = 3;
  const auto summary = pipeline::run_extract(grouped);
  EXPECT_EQ(summary.images, 52);
  EXPECT_GT(summary.model_seconds, 0.0);
  EXPECT_LE(summary.preprocess_seconds + summary.model_seconds + summary.write_seconds, summary.seconds + 1e-6);
  // Every batch's seconds, in order: 14 batches of the 40 training rows, 4 of the 12 test rows.
  ASSERT_EQ(summary.batch_seconds.size(), 18u);
  double batches_total = 0;
  for (const double s : summary.batch_seconds) {
    EXPECT_GT(s, 0.0);
    batches_total += s;
  }
  EXPECT_NEAR(batches_total, summary.preprocess_seconds + summary.model_seconds + summary.write_seconds, 1e-6);
  auto whole = small_options(dir);
  whole.batch_size = 64;
  whole.out = dir / "whole.h5";
  pipeline::run_extract(whole);
  pipeline::FeatureReader a(grouped.out), b(whole.out);
  for (const char* split : {"train", "test"}) {
    for (const char* tap : {"pool5", "fc7"}) {
      EXPECT_TRUE(torch::allclose(a.read(split, tap), b.read(split, tap), 1e-4, 1e-5)) << split << " " << tap;
    }
    EXPECT_TRUE(torch::equal(a.labels(split), b.labels(split)));
  }
}

TEST(Extract, Float16StorageReadsBackAsFloat32) {
  TempDir dir;
  auto options = small_options(dir);
  options.taps = "fc7";
  options.dtype = "float16";
  pipeline::run_extract(options);
  auto reference = options;
  reference.dtype = "float32";
  reference.out = dir / "f32.h5";
  pipeline::run_extract(reference);
  pipeline::FeatureReader half(options.out), full(reference.out);
  EXPECT_EQ(half.dtype(), pipeline::FeatureDtype::Float16);
  const auto h = half.read("train", "fc7"), f = full.read("train", "fc7");
  EXPECT_EQ(h.scalar_type(), torch::kFloat);
  EXPECT_LT(((h - f).norm() / f.norm()).item<float>(), 1e-3);
}

TEST(Extract, Bf16RecordsItsMeasuredError) {
  TempDir dir;
  auto options = small_options(dir);
  options.taps = "fc7";
  options.compute.precision = "bf16";
  pipeline::run_extract(options);
  pipeline::FeatureReader cache(options.out);
  EXPECT_EQ(cache.provenance()["settings"]["precision"], "bf16");
  const double error = cache.provenance()["precision_error"]["fc7"];
  EXPECT_GT(error, 0.0);
  EXPECT_LT(error, 0.05);
}

TEST(Extract, BadSettingsAreUsageErrors) {
  TempDir dir;
  auto options = small_options(dir);
  options.image_size = 62;
  EXPECT_THROW(pipeline::run_extract(options), pipeline::UsageError);
  options = small_options(dir);
  options.compute.precision = "fp16";
  EXPECT_THROW(pipeline::run_extract(options), pipeline::UsageError);
  options = small_options(dir);
  options.taps = "fc9";
  EXPECT_THROW(pipeline::run_extract(options), pipeline::UsageError);
  options = small_options(dir);
  options.data = dir / "nowhere";
  EXPECT_THROW(pipeline::run_extract(options), pipeline::Error);
  EXPECT_FALSE(fs::exists(options.out));
}
