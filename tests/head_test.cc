#include "pipeline/head.h"

#include <gtest/gtest.h>

#include <tuple>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "pipeline/batches.h"
#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/files.h"
#include "pipeline/head_kernels.h"
#include "pipeline/sweep_csv.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using testutil::TempDir;

namespace {

// A cache of separable synthetic features: each class has its own mean direction,
// plus noise, as fc7 of a useful backbone would look to a linear head.
fs::path write_cache(const TempDir& dir, int64_t train = 600, int64_t test = 200, int64_t width = 64) {
  torch::manual_seed(11);
  const auto centres = torch::randn({10, width}) * 2;
  auto make = [&](int64_t n) {
    const auto labels = torch::arange(n) % 10;
    return std::make_pair(labels, (centres.index_select(0, labels) + torch::randn({n, width})).relu());
  };
  const auto [train_y, train_x] = make(train);
  const auto [test_y, test_x] = make(test);
  const fs::path path = dir / "cache.h5";
  pipeline::FeatureWriter writer(path, json{{"settings", {{"kind", "synthetic"}}}},
                                 {train, test, {{"fc7", width}}, pipeline::FeatureDtype::Float32});
  writer.write("train", 0, train_y, {{"fc7", train_x}});
  writer.write("test", 0, test_y, {{"fc7", test_x}});
  writer.finish();
  return path;
}

pipeline::HeadOptions options_for(const TempDir& dir, const fs::path& cache) {
  pipeline::HeadOptions o;
  o.features = cache;
  o.out = dir / "run";
  o.epochs = 5;
  o.batch_size = 32;
  return o;
}

}  // namespace

TEST(Head, LearnsSeparableFeaturesAndWritesTheRunFolder) {
  TempDir dir;
  const auto summary = pipeline::run_head(options_for(dir, write_cache(dir)));
  EXPECT_GT(summary.best.test_acc, 0.8) << "chance is 0.1";
  EXPECT_EQ(summary.best.epochs.size(), 5u);
  for (const char* file : {"metrics.json", "history.csv", "config.json", "head.pt"}) {
    EXPECT_TRUE(fs::exists(dir / "run" / file)) << file;
  }
  const auto metrics = pipeline::read_metrics(dir / "run");
  EXPECT_EQ(metrics.approach, "linear-probe");
  int64_t total = 0;
  for (const auto& row : metrics.confusion)
    for (int64_t count : row) total += count;
  EXPECT_EQ(total, 200);
  EXPECT_EQ(metrics.config["split"], pipeline::split_fingerprint(pipeline::split_train_val(600, 0.2, 0)));
}

TEST(Head, SecondRunIsUpToDate) {
  TempDir dir;
  auto options = options_for(dir, write_cache(dir));
  pipeline::run_head(options);
  EXPECT_TRUE(pipeline::run_head(options).up_to_date);
  options.lr = 3e-3;
  EXPECT_FALSE(pipeline::run_head(options).up_to_date);
}

// Each head of a stacked sweep equals that head trained alone with the same setting,
// init and batch order; in bfloat16 too (its products round to 3 significant digits, so
// a different blocking of the wider product may round a few values the other way).
void expect_stack_equals_lone_heads(c10::ScalarType matmul, double rtol, double atol) {
  const std::vector<pipeline::HeadSetting> grid = {{1e-3, 0.0, 0}, {3e-3, 0.0, 0}, {1e-3, 1e-2, 1}, {1e-2, 1e-3, 2}};
  torch::manual_seed(3);
  const auto x = torch::randn({256, 48}).relu();
  const auto y = torch::randint(0, 10, {256}, torch::kLong);
  pipeline::LinearHeads stacked(48, 10, grid, matmul);
  std::vector<std::unique_ptr<pipeline::LinearHeads>> alone;
  for (const auto& setting : grid) {
    alone.push_back(std::make_unique<pipeline::LinearHeads>(48, 10, std::vector{setting}, matmul));
  }
  for (int step = 0; step < 20; ++step) {
    const auto rows = torch::randint(0, 256, {32}, torch::kLong);
    const pipeline::Batch batch{x.index_select(0, rows), y.index_select(0, rows)};
    const auto scores = stacked.train_step(batch);
    for (size_t k = 0; k < grid.size(); ++k) {
      const auto lone = alone[k]->train_step(batch);
      EXPECT_NEAR(scores.loss_sum[k].item<double>(), lone.loss_sum[0].item<double>(), 1e-4 + rtol * 32)
          << "head " << k << " step " << step;
    }
  }
  const auto logits = stacked.predict(x);
  for (size_t k = 0; k < grid.size(); ++k) {
    EXPECT_TRUE(torch::allclose(logits[k], alone[k]->predict(x)[0], rtol, atol)) << "head " << k;
    EXPECT_TRUE(torch::allclose(stacked.weight(k), alone[k]->weight(0), rtol, atol)) << "head " << k;
    EXPECT_TRUE(torch::allclose(stacked.bias(k), alone[k]->bias(0), rtol, atol)) << "head " << k;
  }
}

// The few-outputs kernels (head_kernels.h) equal LibTorch's products up to float
// rounding, for shapes off every block size (rows, outputs and columns), and give the
// same bits run after run (a fixed summation order) and whichever kernels run them
// (AVX-512 where the CPU has it, or the portable ones).
TEST(Head, FewOutputsKernelsEqualLibTorchProducts) {
  torch::manual_seed(11);
  for (const auto& [b, n, d] : {std::tuple<int64_t, int64_t, int64_t>{128, 10, 4096}, {7, 3, 45}, {5, 32, 97}, {1, 1, 1},
                                {3, 8, 33}, {9, 12, 64}, {4, 13, 50}, {6, 20, 40}, {13, 11, 4111}, {2, 5, 15}}) {
    const at::Tensor x = torch::randn({b, d}).relu(), w = torch::randn({n, d}), bias = torch::randn({n});
    const at::Tensor g = torch::randn({b, n});
    const at::Tensor z = pipeline::few_outputs_linear(x, w, bias);
    EXPECT_TRUE(torch::allclose(z, torch::addmm(bias, x, w.t()), 1e-5, 1e-4)) << b << "x" << n << "x" << d;
    EXPECT_TRUE(torch::equal(z, pipeline::few_outputs_linear(x, w, bias)));
    // The AVX-512 kernel (where the CPU has it) and the portable one: the same bits.
    EXPECT_TRUE(torch::equal(z, pipeline::few_outputs_linear_portable(x, w, bias))) << b << "x" << n << "x" << d;
    at::Tensor grad = torch::full({n, d}, 7.0f);  // overwritten, not added to
    pipeline::few_outputs_weight_grad(grad, g, x);
    EXPECT_TRUE(torch::allclose(grad, torch::mm(g.t(), x), 1e-5, 1e-4)) << b << "x" << n << "x" << d;
    at::Tensor portable = torch::full({n, d}, 7.0f);
    pipeline::few_outputs_weight_grad_portable(portable, g, x);
    EXPECT_TRUE(torch::equal(grad, portable)) << b << "x" << n << "x" << d;
    // Outputs are taken 5, 4 or 1 at a time; each one's sum runs in the same order
    // whatever block it is in: the same bits as computed alone.
    for (int64_t j = 0; j < n; ++j) {
      at::Tensor alone = torch::empty({1, d});
      pipeline::few_outputs_weight_grad(alone, g.slice(1, j, j + 1).contiguous(), x);
      EXPECT_TRUE(torch::equal(alone[0], grad[j])) << "output " << j << " of " << n;
    }
  }
}

// Float32 heads read their training rows in place (no gathered copy), a lone head (the
// few-outputs kernels) and a stack of four (the wide-outputs kernels) alike: the same
// steps, bit for bit, as on the gathered batch; a row outside the split is an error.
// bf16 products take gathered batches only.
TEST(Head, RowsReadInPlaceTrainExactlyAsAGatheredBatch) {
  torch::manual_seed(12);
  const at::Tensor x = torch::randn({300, 70}).relu(), y = torch::randint(0, 10, {300}, torch::kLong);
  for (const size_t heads : {1, 4}) {
    std::vector<pipeline::HeadSetting> grid;
    for (size_t k = 0; k < heads; ++k) grid.push_back({1e-2 * (1.0 + k), 1e-4 * k, 3 + k});
    pipeline::LinearHeads gathered(70, 10, grid), in_place(70, 10, grid);
    ASSERT_TRUE(in_place.reads_rows_in_place()) << heads << " heads";
    for (int step = 0; step < 15; ++step) {
      const at::Tensor rows = torch::randint(0, 300, {33}, torch::kLong);
      const auto a = gathered.train_step({x.index_select(0, rows), y.index_select(0, rows)});
      const auto b = in_place.train_step({at::Tensor(), y.index_select(0, rows), x, rows});
      EXPECT_TRUE(torch::equal(a.loss_sum, b.loss_sum)) << heads << " heads, step " << step;
      EXPECT_TRUE(torch::equal(a.correct, b.correct)) << heads << " heads, step " << step;
    }
    for (size_t k = 0; k < heads; ++k) {
      EXPECT_TRUE(torch::equal(gathered.weight(k), in_place.weight(k))) << heads << " heads";
      EXPECT_TRUE(torch::equal(gathered.bias(k), in_place.bias(k))) << heads << " heads";
      EXPECT_EQ(in_place.weight(k).sizes(), (std::vector<int64_t>{10, 70}));
    }
    // Scoring reads rows in place too, with the same bits as on the gathered rows.
    const at::Tensor scored = torch::tensor({299, 0, 17, 17, 250, 3, 101}, torch::kLong);
    const at::Tensor logits = in_place.predict_batch({at::Tensor(), y.index_select(0, scored), x, scored});
    EXPECT_TRUE(torch::equal(logits, gathered.predict(x.index_select(0, scored)))) << heads << " heads";
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{static_cast<int64_t>(heads), 7, 10}));
    EXPECT_THROW(in_place.predict_batch({at::Tensor(), y.slice(0, 0, 1), x, torch::tensor({-1}, torch::kLong)}),
                 pipeline::Error);
    EXPECT_THROW(in_place.train_step({at::Tensor(), y.slice(0, 0, 1), x, torch::tensor({300}, torch::kLong)}),
                 pipeline::Error);
  }
  pipeline::LinearHeads bf16(70, 10, std::vector<pipeline::HeadSetting>(4, {1e-2, 0.0, 1}), c10::kBFloat16);
  EXPECT_FALSE(bf16.reads_rows_in_place());
  EXPECT_THROW(bf16.train_step({at::Tensor(), y.slice(0, 0, 2), x, torch::arange(2)}), pipeline::Error);
}

// keep_best then use_best restores a member's weights as they were kept, and its
// predictions with them, whatever the layout: a lone head, a wide float32 stack (weights
// held transposed) and a bf16 stack (whose rounded copy of the weights must follow).
TEST(Head, UseBestRestoresTheKeptMember) {
  torch::manual_seed(8);
  const at::Tensor x = torch::randn({200, 40}).relu(), y = torch::randint(0, 10, {200}, torch::kLong);
  for (const auto& [heads, matmul] : {std::pair<size_t, c10::ScalarType>{1, c10::kFloat}, {4, c10::kFloat},
                                      {4, c10::kBFloat16}}) {
    std::vector<pipeline::HeadSetting> grid;
    for (size_t k = 0; k < heads; ++k) grid.push_back({1e-2 * (1.0 + k), 0.0, 5 + k});
    pipeline::LinearHeads stack(40, 10, grid, matmul);
    const int64_t member = static_cast<int64_t>(heads) - 1;
    const auto train = [&](int steps) {
      for (int step = 0; step < steps; ++step) {
        const at::Tensor rows = torch::randint(0, 200, {32}, torch::kLong);
        stack.train_step({x.index_select(0, rows), y.index_select(0, rows)});
      }
    };
    train(5);
    stack.keep_best(member);
    const at::Tensor kept_weight = stack.weight(member), kept_logits = stack.predict(x)[member];
    train(5);
    ASSERT_FALSE(torch::equal(stack.weight(member), kept_weight)) << "training moved nothing";
    stack.use_best();
    EXPECT_TRUE(torch::equal(stack.weight(member), kept_weight)) << heads << " heads";
    EXPECT_TRUE(torch::equal(stack.predict(x)[member], kept_logits)) << heads << " heads";
  }
}

TEST(Head, SweepHeadsEqualHeadsTrainedAlone) { expect_stack_equals_lone_heads(c10::kFloat, 1e-4, 1e-5); }

TEST(Head, Bf16SweepHeadsEqualHeadsTrainedAlone) { expect_stack_equals_lone_heads(c10::kBFloat16, 1e-2, 1e-3); }

// bf16 products learn as well as float32 ones, and the run says which it used.
TEST(Head, Bf16HeadLearnsAndRecordsItsPrecision) {
  TempDir dir;
  auto options = options_for(dir, write_cache(dir));
  const auto fp32 = pipeline::run_head(options);
  options.out = dir / "bf16";
  options.precision = "bf16";
  const auto bf16 = pipeline::run_head(options);
  EXPECT_GT(bf16.best.test_acc, 0.8) << "chance is 0.1";
  EXPECT_NEAR(bf16.best.test_acc, fp32.best.test_acc, 0.03);
  EXPECT_EQ(bf16.best.config["precision"], "bf16");
  EXPECT_NE(bf16.best.device.find("bf16"), std::string::npos) << bf16.best.device;
}

// A step's scores are those of the logits it trained on (before the update).
TEST(Head, StepScoresAreTheBatchsCrossEntropyAndHits) {
  torch::manual_seed(5);
  const auto x = torch::randn({64, 48}).relu();
  const auto y = torch::randint(0, 10, {64}, torch::kLong);
  pipeline::LinearHeads heads(48, 10, {{1e-3, 0.0, 0}, {1e-2, 0.0, 1}});
  const auto before = heads.predict(x);
  const auto step = heads.train_step({x, y});
  const auto expected = pipeline::score_logits(before, y);
  EXPECT_TRUE(torch::allclose(step.loss_sum, expected.loss_sum, 1e-6, 1e-4));
  EXPECT_TRUE(torch::equal(step.correct, expected.correct));
  EXPECT_THROW(heads.train_step({x, torch::full({64}, 10, torch::kLong)}), pipeline::Error);
}

TEST(Head, SweepWritesALeaderboardAndItsBestEqualsALoneRun) {
  TempDir dir;
  const auto cache = write_cache(dir);
  auto options = options_for(dir, cache);
  options.sweep_lr = {1e-4, 1e-3};
  options.sweep_wd = {0.0, 1e-3};
  options.sweep_seeds = 2;
  const auto sweep = pipeline::run_head(options);
  EXPECT_EQ(sweep.heads, 8);
  const std::string csv = pipeline::read_file(dir / "run" / "sweep.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 9);
  // Read back through the one sweep.csv module: ranked, best first, and the best is
  // the head the run's settings name.
  const std::vector<pipeline::SweepRow> rows = pipeline::read_sweep(dir / "run" / "sweep.csv");
  ASSERT_EQ(rows.size(), 8u);
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].rank, static_cast<int64_t>(i + 1));
    if (i > 0) {
      EXPECT_LE(rows[i].best_val_acc, rows[i - 1].best_val_acc);
    }
  }
  EXPECT_EQ(rows[0].lr, sweep.best.settings.lr);
  EXPECT_EQ(rows[0].weight_decay, sweep.best.settings.weight_decay);
  EXPECT_NEAR(rows[0].test_acc, sweep.best.test_acc, 1e-6);
  EXPECT_EQ(sweep.best.settings.heads, 8);
  EXPECT_EQ(sweep.best.settings.sweep_lr, options.sweep_lr);

  const json& best = sweep.best.config["best_setting"];
  EXPECT_EQ(best["init_seed"].get<uint64_t>(), rows[0].init_seed);
  EXPECT_EQ(best["lr"].get<double>(), rows[0].lr);
  // A lone run repeats a head of the sweep when it shares the head's init seed and the
  // batch order, which follows the run's seed: the best-ranked head initialised from the
  // run's seed (the grid always has one).
  const auto same_seed = std::find_if(rows.begin(), rows.end(),
                                      [&](const pipeline::SweepRow& r) { return r.init_seed == options.seed; });
  ASSERT_NE(same_seed, rows.end());
  auto lone = options_for(dir, cache);
  lone.out = dir / "lone";
  lone.lr = same_seed->lr;
  lone.weight_decay = same_seed->weight_decay;
  const auto alone = pipeline::run_head(lone);
  EXPECT_NEAR(alone.best.test_acc, same_seed->test_acc, 1e-9);
  EXPECT_NEAR(alone.best.test_loss, same_seed->test_loss, 1e-4);
  EXPECT_EQ(alone.best.best_epoch, same_seed->best_epoch);
}

TEST(Head, BadSettingsAreUsageErrors) {
  TempDir dir;
  const auto cache = write_cache(dir, 50, 10, 8);
  auto o = options_for(dir, cache);
  o.epochs = 0;
  EXPECT_THROW(pipeline::run_head(o), pipeline::UsageError);
  o = options_for(dir, cache);
  o.lr = 0;
  EXPECT_THROW(pipeline::run_head(o), pipeline::UsageError);
  o = options_for(dir, cache);
  o.tap = "fc9";
  EXPECT_THROW(pipeline::run_head(o), pipeline::UsageError);
  o = options_for(dir, cache);
  o.sweep_lr = {1e-3, -1};
  EXPECT_THROW(pipeline::run_head(o), pipeline::UsageError);
  o = options_for(dir, cache);
  o.precision = "fp16";  // CUDA-only; heads train on the CPU
  EXPECT_THROW(pipeline::run_head(o), pipeline::UsageError);
}

TEST(Head, MissingTapMissingCacheAndIncompleteCacheAreErrors) {
  TempDir dir;
  const auto cache = write_cache(dir, 50, 10, 8);
  auto o = options_for(dir, cache);
  o.tap = "pool5";  // a valid layer, but not in this cache
  try {
    pipeline::run_head(o);
    FAIL() << "no error";
  } catch (const pipeline::UsageError&) {
    FAIL() << "a tap missing from the cache is a run-time error";
  } catch (const pipeline::Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc7"), std::string::npos) << e.what();
  }
  o = options_for(dir, dir / "none.h5");
  EXPECT_THROW(pipeline::run_head(o), pipeline::Error);
  {
    pipeline::FeatureWriter partial(dir / "partial.h5", json{{"settings", json::object()}},
                                    {10, 10, {{"fc7", 8}}, pipeline::FeatureDtype::Float32});
  }
  o = options_for(dir, dir / "partial.h5");
  EXPECT_THROW(pipeline::run_head(o), pipeline::Error);
  EXPECT_FALSE(fs::exists(dir / "run" / "metrics.json"));
}

// --head classifier: AlexNet's whole classifier on pool5 features, fc6/fc7 from the
// cache's weights file when the cache was made with one.
TEST(Head, ClassifierHeadTrainsOnPool5) {
  TempDir dir;
  torch::manual_seed(5);
  const int64_t n = 200, m = 50, width = 9216;
  const auto centres = torch::randn({10, width});
  const fs::path path = dir / "pool5.h5";
  {
    pipeline::FeatureWriter writer(path, json{{"settings", {{"kind", "synthetic"}}}, {"weights_file", ""}},
                                   {n, m, {{"pool5", width}}, pipeline::FeatureDtype::Float32});
    const auto train_y = torch::arange(n) % 10, test_y = torch::arange(m) % 10;
    writer.write("train", 0, train_y, {{"pool5", (centres.index_select(0, train_y) + torch::randn({n, width})).relu()}});
    writer.write("test", 0, test_y, {{"pool5", (centres.index_select(0, test_y) + torch::randn({m, width})).relu()}});
    writer.finish();
  }
  auto o = options_for(dir, path);
  o.head = "classifier";
  o.tap = "pool5";
  o.epochs = 2;
  o.lr = 1e-4;
  const auto summary = pipeline::run_head(o);
  EXPECT_EQ(summary.best.approach, "classifier-head");
  EXPECT_GT(summary.best.test_acc, 0.5) << "chance is 0.1";
  EXPECT_NE(summary.best.config["classifier_init"].get<std::string>().find("random"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "run" / "head.pt"));

  o.tap = "fc7";
  EXPECT_THROW(pipeline::run_head(o), pipeline::UsageError) << "the classifier needs pool5";
  o.tap = "pool5";
  o.sweep_lr = {1e-3, 1e-4};
  EXPECT_THROW(pipeline::run_head(o), pipeline::UsageError) << "sweeps are for linear heads";
}
