#include "pipeline/finetune.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "pipeline/batches.h"
#include "pipeline/error.h"
#include "pipeline/synth.h"
#include "test_util.h"

namespace fs = std::filesystem;
using testutil::TempDir;

namespace {

pipeline::FinetuneOptions small_options(const TempDir& dir, int64_t train = 160, int64_t test = 40) {
  if (!fs::exists(dir / "data")) pipeline::write_synthetic_cifar({dir / "data", train, test, 5});
  pipeline::FinetuneOptions o;
  o.data = dir / "data";
  o.weights = "random:2";
  o.out = dir / "run";
  o.epochs = 2;
  o.lr = 1e-4;
  o.batch_size = 16;
  o.image_size = 64;
  o.compute.device = "cpu";
  return o;
}

}  // namespace

TEST(Finetune, LearnsTheSyntheticClasses) {
  TempDir dir;
  auto options = small_options(dir, 400, 100);
  options.epochs = 3;
  const auto summary = pipeline::run_finetune(options);
  ASSERT_TRUE(summary.finished);
  EXPECT_GT(summary.metrics.test_acc, 0.3) << "chance is 0.1";
  // Every training step's seconds, in order: 3 epochs of ceil(training rows / 16) steps.
  const auto train_rows =
      static_cast<int64_t>(pipeline::split_train_val(400, options.val_fraction, options.seed).train.size());
  EXPECT_EQ(static_cast<int64_t>(summary.step_seconds.size()), 3 * ((train_rows + 15) / 16));
  for (const double s : summary.step_seconds) EXPECT_GT(s, 0.0);
  for (const char* file : {"metrics.json", "history.csv", "config.json", "model.pt"}) {
    EXPECT_TRUE(fs::exists(options.out / file)) << file;
  }
  EXPECT_EQ(pipeline::read_metrics(options.out).approach, "fine-tune");
  EXPECT_TRUE(pipeline::run_finetune(options).up_to_date);
}

// On a CPU, a run interrupted after an epoch and resumed ends exactly where an
// uninterrupted run ends.
TEST(Finetune, ResumedRunEqualsUninterruptedRun) {
  TempDir dir;
  auto whole = small_options(dir, 96, 32);
  whole.out = dir / "whole";
  const auto uninterrupted = pipeline::run_finetune(whole);

  auto part = small_options(dir, 96, 32);
  part.out = dir / "part";
  part.stop_after_epochs = 1;
  const auto first = pipeline::run_finetune(part);
  EXPECT_FALSE(first.finished);
  EXPECT_FALSE(fs::exists(part.out / "metrics.json"));
  part.stop_after_epochs = 0;
  part.resume = true;
  const auto resumed = pipeline::run_finetune(part);
  ASSERT_TRUE(resumed.finished);
  // Each call reports its own steps: one epoch each here.
  EXPECT_EQ(first.step_seconds.size() * 2, uninterrupted.step_seconds.size());
  EXPECT_EQ(resumed.step_seconds.size(), first.step_seconds.size());

  EXPECT_DOUBLE_EQ(resumed.metrics.test_acc, uninterrupted.metrics.test_acc);
  EXPECT_NEAR(resumed.metrics.test_loss, uninterrupted.metrics.test_loss, 1e-6);
  ASSERT_EQ(resumed.metrics.epochs.size(), uninterrupted.metrics.epochs.size());
  for (size_t e = 0; e < resumed.metrics.epochs.size(); ++e) {
    EXPECT_NEAR(resumed.metrics.epochs[e].train_loss, uninterrupted.metrics.epochs[e].train_loss, 1e-6) << e;
    EXPECT_NEAR(resumed.metrics.epochs[e].val_loss, uninterrupted.metrics.epochs[e].val_loss, 1e-6) << e;
  }
  EXPECT_EQ(resumed.metrics.confusion, uninterrupted.metrics.confusion);
}

TEST(Finetune, ResNetResumeEqualsUninterruptedRunWithBatchNorm) {
  // Batch norm's running statistics train with the network; they are in the checkpoint
  // and in the best weights, so a resumed run scores exactly as an uninterrupted one.
  TempDir dir;
  auto whole = small_options(dir, 64, 24);
  whole.backbone = "resnet18";
  whole.image_size = 32;
  whole.out = dir / "whole";
  const auto uninterrupted = pipeline::run_finetune(whole);
  EXPECT_EQ(uninterrupted.metrics.config["backbone"], "resnet18");

  auto part = whole;
  part.out = dir / "part";
  part.stop_after_epochs = 1;
  EXPECT_FALSE(pipeline::run_finetune(part).finished);
  part.stop_after_epochs = 0;
  part.resume = true;
  const auto resumed = pipeline::run_finetune(part);
  ASSERT_TRUE(resumed.finished);
  EXPECT_DOUBLE_EQ(resumed.metrics.test_acc, uninterrupted.metrics.test_acc);
  EXPECT_NEAR(resumed.metrics.test_loss, uninterrupted.metrics.test_loss, 1e-6);
  for (size_t e = 0; e < resumed.metrics.epochs.size(); ++e) {
    EXPECT_NEAR(resumed.metrics.epochs[e].val_loss, uninterrupted.metrics.epochs[e].val_loss, 1e-6) << e;
  }
  EXPECT_EQ(resumed.metrics.confusion, uninterrupted.metrics.confusion);
}

// A --out whose checkpoint/ holds a file of the user's: a fresh run would discard the
// checkpoint, but this one is not the stage's, so it stops and removes nothing.
TEST(Finetune, NeverDiscardsACheckpointFolderOfTheUsers) {
  TempDir dir;
  auto options = small_options(dir, 60, 20);
  fs::create_directories(options.out / "checkpoint");
  std::ofstream(options.out / "checkpoint" / "thesis.txt") << "years of work";
  // Not a run folder (no .lock): refused as a whole.
  try {
    pipeline::run_finetune(options);
    ADD_FAILURE() << "a folder of the user's holding checkpoint/ was taken as a run folder";
  } catch (const pipeline::Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint"), std::string::npos) << e.what();
  }
  // A run folder whose checkpoint/ holds a file of the user's.
  std::ofstream(options.out / ".lock").flush();
  try {
    pipeline::run_finetune(options);
    ADD_FAILURE() << "a checkpoint folder holding a foreign file was accepted";
  } catch (const pipeline::Error& e) {
    EXPECT_NE(std::string(e.what()).find("thesis.txt"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(options.out / "checkpoint" / "thesis.txt"));
  // The same folder with only a checkpoint's own files is discarded as before.
  fs::remove(options.out / "checkpoint" / "thesis.txt");
  std::ofstream(options.out / "checkpoint" / "model.pt") << "an old checkpoint";
  options.epochs = 1;
  EXPECT_TRUE(pipeline::run_finetune(options).finished);
  EXPECT_FALSE(fs::exists(options.out / "checkpoint"));
}

TEST(Finetune, UsesTheSameSplitAsTheHeadForOneSeed) {
  TempDir dir;
  auto options = small_options(dir, 60, 10);
  options.epochs = 1;
  const auto summary = pipeline::run_finetune(options);
  EXPECT_EQ(summary.metrics.config["split"], pipeline::split_fingerprint(pipeline::split_train_val(60, 0.2, 0)));
}

TEST(Finetune, BadSettingsAreUsageErrors) {
  TempDir dir;
  auto o = small_options(dir, 20, 5);
  o.backbone = "resnet101";
  EXPECT_THROW(pipeline::run_finetune(o), pipeline::UsageError);
  o = small_options(dir, 20, 5);
  o.backbone = "alexnet";
  o.image_size = 40;  // fine for ResNet and VGG, below AlexNet's 63
  EXPECT_THROW(pipeline::run_finetune(o), pipeline::UsageError);
  o = small_options(dir, 20, 5);
  o.compute.precision = "fp16";
  EXPECT_THROW(pipeline::run_finetune(o), pipeline::UsageError);
  o = small_options(dir);
  o.image_size = 62;
  EXPECT_THROW(pipeline::run_finetune(o), pipeline::UsageError);
  o = small_options(dir);
  o.epochs = 0;
  EXPECT_THROW(pipeline::run_finetune(o), pipeline::UsageError);
  o = small_options(dir);
  o.lr = -1;
  EXPECT_THROW(pipeline::run_finetune(o), pipeline::UsageError);
  o = small_options(dir);
  o.weights = dir / "missing.pth";
  EXPECT_THROW(pipeline::run_finetune(o), pipeline::Error);
  EXPECT_FALSE(fs::exists(o.out / "metrics.json"));
}
