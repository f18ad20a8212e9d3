// Tests of pipeline/report (the comparison) and the transfer-compare stage, on small
// fake-but-valid run folders written with write_metrics.
#include "pipeline/report.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>

#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/files.h"
#include "pipeline/datasets/dataset.h"
#include "pipeline/metrics.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using pipeline::ApproachNumbers;
using pipeline::Conclusion;
using pipeline::ReportOptions;
using pipeline::RunMetrics;
using testutil::TempDir;

// A diagonal-heavy confusion matrix whose accuracy is about `accuracy`, 10 images per class.
std::vector<std::vector<int64_t>> confusion(int correct_per_class) {
  std::vector<std::vector<int64_t>> m(10, std::vector<int64_t>(10, 0));
  for (int k = 0; k < 10; ++k) {
    m[k][k] = correct_per_class;
    m[k][(k + 1) % 10] = 10 - correct_per_class;
  }
  return m;
}

RunMetrics fake_run(const std::string& approach, double test_acc, double seconds_per_epoch, int64_t epochs) {
  RunMetrics m;
  m.approach = approach;
  for (int64_t e = 1; e <= epochs; ++e) {
    pipeline::EpochRecord r;
    r.epoch = e;
    r.train_loss = 2.0 / static_cast<double>(e);
    r.train_acc = 0.5 + 0.04 * static_cast<double>(e);
    r.val_loss = 2.2 / static_cast<double>(e) + 0.1;
    r.val_acc = 0.45 + 0.04 * static_cast<double>(e);
    r.seconds = seconds_per_epoch;
    m.epochs.push_back(r);
  }
  m.best_epoch = epochs;
  m.test_acc = test_acc;
  m.test_loss = 0.9;
  m.train_seconds = seconds_per_epoch * static_cast<double>(epochs);
  m.images_per_second = 800.0 / seconds_per_epoch;
  m.confusion = confusion(static_cast<int>(std::lround(test_acc * 10)));
  return m;
}

// The settings both fake runs share: CIFAR-10, a 1,000/100 subset at 64 px, 3 epochs.
pipeline::RunSettings common_settings() {
  pipeline::RunSettings s;
  s.backbone = "alexnet";
  s.dataset = pipeline::unrecorded_dataset();  // CIFAR-10's description
  s.dataset_sha256 = "00";
  s.image_size = 64;
  s.limit_train = 1000;
  s.limit_test = 100;
  s.train_rows = 1000;
  s.test_rows = 100;
  s.epochs = 3;
  s.batch_size = 128;
  s.lr = 1e-3;
  s.val_fraction = 0.2;
  return s;
}

// A transfer-head run folder: random weights, a bf16 extraction into a float32 cache;
// `patch` changes its settings.
fs::path write_probe(const fs::path& dir, double test_acc = 0.7, double seconds_per_epoch = 0.5,
                     const std::function<void(pipeline::RunSettings&)>& patch = {}) {
  RunMetrics m = fake_run("linear-probe", test_acc, seconds_per_epoch, 3);
  m.device = "cpu (2 threads)";
  pipeline::RunSettings& s = m.settings = common_settings();
  s.pretrained = false;
  s.normalization = "imagenet";
  s.precision = "fp32";
  s.head = "linear";
  s.tap = "fc7";
  s.features = (dir / "no-such-cache.h5").string();
  s.extract_precision = "bf16";
  s.feature_dtype = "float32";
  s.cache_settings = {{"image_size", 64}, {"precision", "bf16"}, {"dtype", "float32"}};
  if (patch) patch(s);
  m.config = {{"stage", "transfer-head"}};
  pipeline::write_metrics(dir, m);
  pipeline::write_file_atomic(dir / "config.json", m.config.dump(2));
  return dir;
}

// A transfer-finetune run folder: same subset, 64 px, pretrained, fp32.
fs::path write_finetune(const fs::path& dir, double test_acc = 0.8, double seconds_per_epoch = 40) {
  RunMetrics m = fake_run("fine-tune", test_acc, seconds_per_epoch, 3);
  m.device = "cpu (2 threads), fp32";
  pipeline::RunSettings& s = m.settings = common_settings();
  s.pretrained = true;
  s.normalization = "half";
  s.precision = "fp32";
  m.config = {{"stage", "transfer-finetune"}};
  pipeline::write_metrics(dir, m);
  pipeline::write_file_atomic(dir / "config.json", m.config.dump(2));
  return dir;
}

ReportOptions options_in(const TempDir& tmp) {
  ReportOptions o;
  o.head = write_probe(tmp / "head");
  o.finetune = write_finetune(tmp / "finetune");
  o.out = tmp / "compare";
  o.extract_seconds = 30;
  o.gnuplot = "";  // plots are tested separately
  return o;
}

bool on_path(const std::string& program) {
  return std::system(("command -v " + program + " >/dev/null 2>&1").c_str()) == 0;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void expect_all_finite(const json& value, const std::string& where) {
  if (value.is_number()) {
    EXPECT_TRUE(std::isfinite(value.get<double>())) << where;
  } else if (value.is_object()) {
    for (const auto& [key, item] : value.items()) expect_all_finite(item, where + "." + key);
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) expect_all_finite(value[i], where + "[" + std::to_string(i) + "]");
  }
}

TEST(ReportTest, TableHoldsBothApproachesAndTheStudy) {
  TempDir tmp;
  const pipeline::ReportResult result = pipeline::write_report(options_in(tmp));
  const std::string md = testutil::read_text(result.markdown);
  // This run's numbers: test accuracy, val loss at the best epoch (2.2/3 + 0.1), seconds.
  EXPECT_TRUE(contains(md, "70.00 %")) << md;
  EXPECT_TRUE(contains(md, "80.00 %")) << md;
  EXPECT_TRUE(contains(md, "0.8333")) << md;
  EXPECT_TRUE(contains(md, "57.00 % (epoch 3)")) << md;  // best validation accuracy
  EXPECT_TRUE(contains(md, "| 120 s |")) << md;          // fine-tune training seconds
  EXPECT_TRUE(contains(md, "| 1.50 s |")) << md;         // head training seconds
  EXPECT_TRUE(contains(md, "31.5 s")) << md;             // extraction + head
  // The study's.
  EXPECT_TRUE(contains(md, "79.69 %")) << md;
  EXPECT_TRUE(contains(md, "80.59 %")) << md;
  EXPECT_TRUE(contains(md, "0.6005")) << md;
  EXPECT_TRUE(contains(md, "0.5826")) << md;
  EXPECT_TRUE(contains(md, "1423 s")) << md;
  EXPECT_TRUE(contains(md, "~1430–1450 s")) << md;
  // What differs.
  EXPECT_TRUE(contains(md, "Image size: 64 px in both approaches (study: 224 px)")) << md;
  EXPECT_TRUE(contains(md, "1,000 training and 100 test images")) << md;
  EXPECT_TRUE(contains(md, "NOT ImageNet-pretrained for the linear probe")) << md;
  EXPECT_TRUE(contains(md, "Epochs: 3 epochs in both")) << md;
  EXPECT_TRUE(contains(md, "Precision: bf16 for the linear probe")) << md;
  EXPECT_TRUE(contains(md, "test set is scored once")) << md;
  EXPECT_TRUE(contains(md, "cpu (2 threads)")) << md;
  // Per-class table from the confusion matrices.
  EXPECT_TRUE(contains(md, "| airplane | 70.00 % | 80.00 % | +10.00 |")) << md;
  EXPECT_TRUE(contains(md, "| truck |")) << md;
  EXPECT_FALSE(contains(md, "Head sweep")) << md;
}

TEST(ReportTest, NamesAHeadTrainedWithBf16ProductsOnAFloat32Cache) {
  TempDir tmp;
  ReportOptions options = options_in(tmp);
  write_probe(options.head, 0.7, 0.5, [](pipeline::RunSettings& s) {
    s.extract_precision = "fp32";
    s.precision = "bf16";
  });
  const std::string md = testutil::read_text(pipeline::write_report(options).markdown);
  EXPECT_TRUE(contains(md, "Precision: fp32 features with bf16 head products for the linear probe")) << md;
}

TEST(ReportTest, JsonHoldsTheSameNumbersAndTheConclusion) {
  TempDir tmp;
  const pipeline::ReportResult result = pipeline::write_report(options_in(tmp));
  const json report = json::parse(testutil::read_text(result.json));
  expect_all_finite(report, "report");
  const json& probe = report["approaches"]["linear-probe"];
  const json& tune = report["approaches"]["fine-tune"];
  EXPECT_DOUBLE_EQ(probe["test_acc"].get<double>(), 0.7);
  EXPECT_DOUBLE_EQ(tune["test_acc"].get<double>(), 0.8);
  EXPECT_DOUBLE_EQ(probe["extract_seconds"].get<double>(), 30);
  EXPECT_DOUBLE_EQ(probe["total_seconds"].get<double>(), 31.5);
  EXPECT_DOUBLE_EQ(tune["train_seconds"].get<double>(), 120);
  EXPECT_EQ(probe["epochs"], 3);
  EXPECT_EQ(tune["test_rows"], 100);
  EXPECT_DOUBLE_EQ(report["study"]["linear-probe"]["test_acc"].get<double>(), 0.7969);
  EXPECT_DOUBLE_EQ(report["study"]["fine-tune"]["val_loss"].get<double>(), 0.5826);
  EXPECT_FALSE(report["differences"].empty());
  EXPECT_EQ(report["per_class"]["classes"][9], "truck");
  const json& c = report["conclusion"];
  EXPECT_EQ(c["more_accurate"], "fine-tune");
  EXPECT_NEAR(c["gap_pp"].get<double>(), 10.0, 1e-9);
  // (120 - 30) / 1.5 head runs fit in one fine-tuning run after one extraction.
  EXPECT_NEAR(c["break_even_head_runs"].get<double>(), 60.0, 1e-9);
  EXPECT_TRUE(report["sweep"].is_null());
  EXPECT_TRUE(report["plots"].empty());
  EXPECT_TRUE(report["plots_error"].is_string());

  const std::string md = testutil::read_text(result.markdown);
  EXPECT_TRUE(contains(md, "Fine-tuning is more accurate: 80.00 % against 70.00 %")) << md;
  EXPECT_TRUE(contains(md, "10.00 percentage points")) << md;
  EXPECT_TRUE(contains(md, "at N = 60.0")) << md;
}

TEST(ReportTest, ConclusionNamesTheProbeWhenItIsMoreAccurateAndCheaper) {
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  write_probe(o.head, 0.9);
  const pipeline::ReportResult result = pipeline::write_report(o);
  EXPECT_EQ(result.conclusion.more_accurate, "linear-probe");
  const std::string md = testutil::read_text(result.markdown);
  EXPECT_TRUE(contains(md, "The linear probe is more accurate: 90.00 % against 80.00 %")) << md;
  EXPECT_TRUE(contains(md, "both more accurate and")) << md;
}

TEST(ReportTest, DrawsTheFourSvgsWithGnuplot) {
  if (!on_path("gnuplot")) GTEST_SKIP() << "gnuplot is not on PATH";
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  o.gnuplot = "gnuplot";
  const pipeline::ReportResult result = pipeline::write_report(o);
  EXPECT_TRUE(result.plots_error.empty()) << result.plots_error;
  ASSERT_EQ(result.plots.size(), 4u);
  for (const char* name : {"loss.svg", "accuracy.svg", "time.svg", "per_class.svg"}) {
    const std::string svg = testutil::read_text(o.out / name);
    EXPECT_TRUE(contains(svg, "<svg")) << name;
    EXPECT_FALSE(fs::exists(o.out / (std::string(name) + ".tmp"))) << name;
  }
  EXPECT_TRUE(contains(testutil::read_text(o.out / "per_class.svg"), "automobile"));
  const std::string md = testutil::read_text(result.markdown);
  EXPECT_TRUE(contains(md, "](loss.svg)")) << md;
  EXPECT_TRUE(contains(md, "](per_class.svg)")) << md;
  EXPECT_EQ(json::parse(testutil::read_text(result.json))["plots"].size(), 4u);
}

TEST(ReportTest, WithoutGnuplotTheReportSaysHowToGetThePlots) {
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  o.gnuplot = (tmp / "no-such-dir" / "gnuplot").string();
  fs::create_directories(o.out);
  pipeline::write_file_atomic(o.out / ".lock", "");  // an earlier report's folder
  pipeline::write_file_atomic(o.out / "loss.svg", "<svg>an old plot</svg>");
  const pipeline::ReportResult result = pipeline::write_report(o);
  EXPECT_TRUE(result.plots.empty());
  EXPECT_FALSE(result.plots_error.empty());
  const std::string md = testutil::read_text(result.markdown);
  EXPECT_TRUE(contains(md, "apt-get install gnuplot-nox")) << md;
  EXPECT_TRUE(contains(md, "gnuplot plots.gp")) << md;
  EXPECT_FALSE(fs::exists(o.out / "loss.svg")) << "a stale plot would not match the new report";
  EXPECT_TRUE(fs::exists(o.out / "plots.gp"));
  EXPECT_TRUE(fs::exists(o.out / "linear-probe-history.csv"));
  EXPECT_TRUE(json::parse(testutil::read_text(result.json))["plots"].empty());

  o.gnuplot = "transfer-no-such-program";
  EXPECT_TRUE(contains(pipeline::write_report(o).plots_error, "not found on PATH"));
}

TEST(ReportTest, AFailingGnuplotStillLeavesTheReport) {
  if (!on_path("false")) GTEST_SKIP() << "no `false` on PATH";
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  o.gnuplot = "false";
  const pipeline::ReportResult result = pipeline::write_report(o);
  EXPECT_TRUE(result.plots.empty());
  EXPECT_TRUE(contains(result.plots_error, "failed")) << result.plots_error;
  EXPECT_TRUE(contains(testutil::read_text(result.markdown), "apt-get install gnuplot-nox"));
}

TEST(ReportTest, MissingMetricsIsAnErrorNamingTheFile) {
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  fs::remove(o.finetune / "metrics.json");
  const std::string message = testutil::error_of([&] { pipeline::write_report(o); });
  EXPECT_TRUE(contains(message, (o.finetune / "metrics.json").string())) << message;
  EXPECT_FALSE(fs::exists(o.out / "report.md"));
}

TEST(ReportTest, MalformedMetricsIsAnErrorNamingTheFile) {
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  pipeline::write_file_atomic(o.head / "metrics.json", "{\"approach\": \"linear-probe\", \"epochs\": [");
  const std::string message = testutil::error_of([&] { pipeline::write_report(o); });
  EXPECT_TRUE(contains(message, (o.head / "metrics.json").string())) << message;
  pipeline::write_file_atomic(o.head / "metrics.json", "{\"approach\": \"linear-probe\", \"epochs\": []}");
  EXPECT_THROW(pipeline::write_report(o), pipeline::Error);
}

TEST(ReportTest, RunSettingsAreOneSchemaAndABadOneIsAnErrorNamingTheField) {
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  // What the stage wrote is what the reader returns, field for field.
  const RunMetrics head = pipeline::read_metrics(o.head);
  EXPECT_EQ(pipeline::to_json(head.settings), pipeline::to_json(pipeline::run_settings_from_json(
                                                  pipeline::to_json(head.settings), "x")));
  EXPECT_EQ(head.settings.tap, "fc7");
  EXPECT_EQ(head.settings.extract_precision, "bf16");
  // A renamed, missing or mistyped setting is an error naming the file and the field,
  // never a quietly degraded report.
  const fs::path file = o.head / "metrics.json";
  const json good = json::parse(testutil::read_text(file));
  const std::pair<const char*, json> bad[] = {
      {"image_size", "64"}, {"epochs", 1e300}, {"pretrained", 1}, {"lr", nullptr}, {"dataset", {{"name", "x"}}}};
  for (const auto& [key, value] : bad) {
    json j = good;
    j["settings"][key] = value;
    pipeline::write_file_atomic(file, j.dump());
    const std::string message = testutil::error_of([&] { pipeline::write_report(o); });
    EXPECT_TRUE(contains(message, file.string())) << key << ": " << message;
    EXPECT_TRUE(contains(message, key)) << key << ": " << message;
  }
  json j = good;
  j["settings"].erase("tap");
  pipeline::write_file_atomic(file, j.dump());
  EXPECT_TRUE(contains(testutil::error_of([&] { pipeline::write_report(o); }), "settings.tap is missing"));
  j.erase("settings");  // a run from before the schema: rerun its stage
  pipeline::write_file_atomic(file, j.dump());
  EXPECT_TRUE(contains(testutil::error_of([&] { pipeline::write_report(o); }), "rerun"));
  EXPECT_FALSE(fs::exists(o.out / "report.md"));
}

TEST(ReportTest, SwappedFoldersAreAUsageError) {
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  std::swap(o.head, o.finetune);
  EXPECT_THROW(pipeline::write_report(o), pipeline::UsageError);
  o = options_in(tmp);
  o.features = tmp / "cache.h5";  // with extract_seconds as well
  EXPECT_THROW(pipeline::write_report(o), pipeline::UsageError);
}

TEST(ReportTest, SweepLeaderboardShowsTheTopTen) {
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  std::string csv = "rank,lr,weight_decay,init_seed,best_epoch,best_val_acc,best_val_loss,test_acc,test_loss\n";
  for (int r = 1; r <= 12; ++r) {
    csv += fmt::format("{},{},0,{},3,{:.6f},0.5,{:.6f},0.6\n", r, 1e-3 * r, r, 0.9 - 0.01 * r, 0.88 - 0.01 * r);
  }
  pipeline::write_file_atomic(o.head / "sweep.csv", csv);
  const pipeline::ReportResult result = pipeline::write_report(o);
  const std::string md = testutil::read_text(result.markdown);
  EXPECT_TRUE(contains(md, "top 10 of 12 heads")) << md;
  EXPECT_TRUE(contains(md, "| 10 | 0.01 |")) << md;
  EXPECT_FALSE(contains(md, "| 11 | 0.011 |")) << md;
  EXPECT_TRUE(contains(md, "best of a sweep of 12 heads")) << md;
  const json report = json::parse(testutil::read_text(result.json));
  EXPECT_EQ(report["sweep"]["heads"], 12);
  EXPECT_EQ(report["sweep"]["top"].size(), 10u);

  pipeline::write_file_atomic(o.head / "sweep.csv", csv + "13,oops,0,13,3,0.1,0.5,0.1,0.6\n");
  const std::string message = testutil::error_of([&] { pipeline::write_report(o); });
  EXPECT_TRUE(contains(message, (o.head / "sweep.csv").string())) << message;
  EXPECT_TRUE(contains(message, "line 14")) << message;
}

// A tiny complete cache whose provenance records an extraction time.
void write_cache(const fs::path& file, const json& settings, double extract_seconds) {
  pipeline::CacheLayout layout;
  layout.train_rows = 2;
  layout.test_rows = 1;
  layout.taps = {{"fc7", 4}};
  pipeline::FeatureWriter writer(file, {{"settings", settings}, {"device", "cuda:0 (1 CUDA device(s)), fp32"}},
                                 layout);
  writer.write("train", 0, torch::zeros({2}, torch::kInt64), {{"fc7", torch::zeros({2, 4})}});
  writer.write("test", 0, torch::zeros({1}, torch::kInt64), {{"fc7", torch::zeros({1, 4})}});
  if (std::isnan(extract_seconds)) {
    writer.finish();
  } else {
    writer.finish({{"extract_seconds", extract_seconds}});
  }
}

TEST(ReportTest, ExtractionCostComesFromTheCacheProvenance) {
  TempDir tmp;
  ReportOptions o = options_in(tmp);
  o.extract_seconds = std::numeric_limits<double>::quiet_NaN();
  const json cache_settings = pipeline::read_metrics(o.head).settings.cache_settings;
  o.features = tmp / "cache.h5";
  write_cache(o.features, cache_settings, 42.5);
  pipeline::ReportResult result = pipeline::write_report(o);
  EXPECT_TRUE(result.conclusion.extract_known);
  EXPECT_DOUBLE_EQ(result.conclusion.probe_seconds, 42.5 + 1.5);
  std::string md = testutil::read_text(result.markdown);
  EXPECT_TRUE(contains(md, "provenance of " + o.features.string())) << md;
  EXPECT_TRUE(contains(md, "features extracted on cuda:0")) << md;

  // Without --features: the cache the head's run names, when it is still there.
  o.features.clear();
  write_cache(o.head / "no-such-cache.h5", cache_settings, 7);
  EXPECT_DOUBLE_EQ(pipeline::write_report(o).conclusion.probe_seconds, 7 + 1.5);
  // ... and an honest "unknown" when it is not.
  fs::remove(o.head / "no-such-cache.h5");
  result = pipeline::write_report(o);
  EXPECT_FALSE(result.conclusion.extract_known);
  md = testutil::read_text(result.markdown);
  EXPECT_TRUE(contains(md, "Extraction cost: unknown")) << md;
  EXPECT_TRUE(contains(md, "extraction cost is unknown")) << md;
  expect_all_finite(json::parse(testutil::read_text(result.json)), "report");

  // A cache without the timing, or no cache at all, is an error naming the file.
  o.features = tmp / "untimed.h5";
  write_cache(o.features, cache_settings, std::numeric_limits<double>::quiet_NaN());
  for (const fs::path& file : {o.features, tmp / "missing.h5"}) {
    o.features = file;
    const std::string message = testutil::error_of([&] { pipeline::write_report(o); });
    EXPECT_TRUE(contains(message, file.string())) << message;
  }
}

ApproachNumbers numbers(const std::string& approach, double test_acc, double train_seconds, double extract = NAN) {
  ApproachNumbers n;
  n.approach = approach;
  n.test_acc = test_acc;
  n.train_seconds = train_seconds;
  n.test_rows = 10000;
  n.extract_seconds = extract;
  n.device = "cpu (2 threads)";
  return n;
}

TEST(ReportConcludeTest, BreakEvenOfExtractionPlusHeadsAgainstFineTuning) {
  const Conclusion c = pipeline::conclude(numbers("linear-probe", 0.7969, 10, 100), numbers("fine-tune", 0.8059, 1000));
  EXPECT_EQ(c.more_accurate, "fine-tune");
  EXPECT_NEAR(c.gap_pp, 0.90, 1e-9);
  EXPECT_NEAR(c.break_even_head_runs, 90.0, 1e-9);  // 100 + 90 * 10 = 1000
  EXPECT_EQ(c.cheaper_from_experiments, 1);
  EXPECT_DOUBLE_EQ(c.probe_seconds, 110);
  EXPECT_TRUE(contains(c.text, "at N = 90.0")) << c.text;
  EXPECT_TRUE(contains(c.text, "0.90 percentage points")) << c.text;
  // 0.9 pp on 10,000 images each: standard error ~0.57 pp, so within two of them.
  EXPECT_TRUE(c.within_noise) << c.text;
  EXPECT_TRUE(contains(c.text, "may be noise")) << c.text;
}

TEST(ReportConcludeTest, EdgeCases) {
  // Extraction alone costs more than fine-tuning: no break-even in one run, but the
  // cache wins over repeated experiments: 500 + 10K < 100K from K = 6.
  Conclusion c = pipeline::conclude(numbers("linear-probe", 0.5, 10, 500), numbers("fine-tune", 0.9, 100));
  EXPECT_LE(c.break_even_head_runs, 0);
  EXPECT_EQ(c.cheaper_from_experiments, 6);
  EXPECT_TRUE(contains(c.text, "No break-even")) << c.text;
  EXPECT_TRUE(contains(c.text, "from 6 experiments")) << c.text;
  EXPECT_TRUE(contains(c.text, "both more accurate and no more expensive")) << c.text;
  EXPECT_FALSE(c.within_noise);

  // Head training slower than fine-tuning: the cache never pays off.
  c = pipeline::conclude(numbers("linear-probe", 0.5, 200, 10), numbers("fine-tune", 0.6, 100));
  EXPECT_EQ(c.cheaper_from_experiments, 0);
  EXPECT_TRUE(contains(c.text, "never pays off")) << c.text;

  // Equal accuracy.
  c = pipeline::conclude(numbers("linear-probe", 0.75, 10, 10), numbers("fine-tune", 0.75, 100));
  EXPECT_EQ(c.more_accurate, "tie");
  EXPECT_TRUE(contains(c.text, "same test accuracy")) << c.text;

  // Unknown extraction: said so, and no break-even claimed.
  c = pipeline::conclude(numbers("linear-probe", 0.7, 10), numbers("fine-tune", 0.8, 100));
  EXPECT_FALSE(c.extract_known);
  EXPECT_TRUE(contains(c.text, "unknown")) << c.text;
  EXPECT_TRUE(contains(c.text, "10.0 head runs")) << c.text;
  EXPECT_TRUE(contains(c.text, "extraction not counted")) << c.text;
  EXPECT_TRUE(std::isnan(c.break_even_head_runs));

  // No test sizes: no standard error claimed.
  ApproachNumbers p = numbers("linear-probe", 0.7, 10, 10), f = numbers("fine-tune", 0.8, 100);
  p.test_rows = 0;
  c = pipeline::conclude(p, f);
  EXPECT_TRUE(std::isnan(c.gap_standard_error_pp));
  EXPECT_FALSE(contains(c.text, "standard error")) << c.text;

  // Different hardware is pointed out.
  f.device = "cuda:0 (1 CUDA device(s)), bf16";
  EXPECT_TRUE(contains(pipeline::conclude(p, f).text, "different hardware"));
}

TEST(ReportStageTest, ExitCodes) {
  TempDir tmp;
  const ReportOptions o = options_in(tmp);
  const std::string runs = " --head " + o.head.string() + " --finetune " + o.finetune.string();
  const fs::path log = tmp / "log.txt";
  EXPECT_EQ(testutil::run_stage("transfer-compare" + runs + " --extract-seconds 30 --gnuplot '' --out " +
                                    (tmp / "out").string(),
                                log),
            0)
      << testutil::read_text(log);
  EXPECT_TRUE(fs::exists(tmp / "out" / "report.md"));
  EXPECT_TRUE(contains(testutil::read_text(log), "Fine-tuning is more accurate")) << testutil::read_text(log);

  EXPECT_EQ(testutil::run_stage("transfer-compare --head " + (tmp / "nope").string() + " --finetune " +
                                    o.finetune.string() + " --out " + (tmp / "out2").string(),
                                log),
            1);
  EXPECT_TRUE(contains(testutil::read_text(log), (tmp / "nope" / "metrics.json").string())) << testutil::read_text(log);
  EXPECT_EQ(testutil::run_stage("transfer-compare" + runs + " --no-such-flag", log), 2);
  EXPECT_EQ(testutil::run_stage("transfer-compare --head " + o.head.string(), log), 2);  // --finetune missing
  EXPECT_EQ(testutil::run_stage("transfer-compare" + runs + " --extract-seconds 3 --features x.h5", log), 2);
  EXPECT_EQ(testutil::run_stage("transfer-compare --help", log), 0);
}

}  // namespace
