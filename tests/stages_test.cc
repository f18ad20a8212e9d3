// The stages as a user runs them: real binaries, exit codes, files on disk.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>

#include "pipeline/metrics.h"
#include "test_util.h"

namespace fs = std::filesystem;
using testutil::run_stage;
using testutil::TempDir;

TEST(Stages, SynthExtractHeadFinetuneCompareEndToEnd) {
  TempDir dir;
  const std::string d = dir.path().string();
  ASSERT_EQ(run_stage("transfer-synth --out " + d + "/data --train 300 --test 100 --seed 4"), 0);
  ASSERT_EQ(run_stage("transfer-extract --data " + d + "/data --weights random:0 --out " + d +
                      "/cache.h5 --image-size 64 --batch-size 50 --device cpu --taps pool5,fc7"),
            0);
  const fs::path log = dir / "log.txt";
  EXPECT_EQ(run_stage("transfer-extract --data " + d + "/data --weights random:0 --out " + d +
                          "/cache.h5 --image-size 64 --batch-size 50 --device cpu --taps pool5,fc7",
                      log),
            0);
  EXPECT_NE(testutil::read_text(log).find("nothing to do"), std::string::npos) << testutil::read_text(log);

  ASSERT_EQ(run_stage("transfer-head --features " + d + "/cache.h5 --tap pool5 --out " + d + "/head --epochs 5"), 0);
  EXPECT_GT(pipeline::read_metrics(dir / "head").test_acc, 0.3) << "chance is 0.1";
  ASSERT_EQ(run_stage("transfer-finetune --data " + d + "/data --weights random:0 --out " + d +
                      "/finetune --epochs 1 --image-size 64 --batch-size 32 --lr 1e-4 --device cpu"),
            0);
  ASSERT_EQ(run_stage("transfer-compare --head " + d + "/head --finetune " + d + "/finetune --features " + d +
                      "/cache.h5 --out " + d + "/compare"),
            0);
  EXPECT_TRUE(fs::exists(dir / "compare" / "report.md"));
  EXPECT_TRUE(fs::exists(dir / "compare" / "report.json"));
}

TEST(Stages, BackbonesAreRankedInOneReport) {
  // Two backbones' caches of the same images, a probe on each, one ranking.
  TempDir dir;
  const std::string d = dir.path().string();
  ASSERT_EQ(run_stage("transfer-synth --out " + d + "/data --train 120 --test 40 --seed 3"), 0);
  std::string runs;
  for (const std::string backbone : {"alexnet", "resnet18"}) {
    ASSERT_EQ(run_stage("transfer-extract --backbone " + backbone + " --data " + d + "/data --weights random:0 --out " +
                        d + "/" + backbone + ".h5 --image-size 64 --device cpu"),
              0);
    ASSERT_EQ(run_stage("transfer-head --features " + d + "/" + backbone + ".h5 --out " + d + "/head-" + backbone +
                        " --epochs 2"),
              0);
    runs += (runs.empty() ? "" : ",") + d + "/head-" + backbone;
  }
  const fs::path log = dir / "log.txt";
  ASSERT_EQ(run_stage("transfer-compare --backbones " + runs + " --out " + d + "/ranked", log), 0)
      << testutil::read_text(log);
  const auto report = nlohmann::json::parse(testutil::read_text(dir / "ranked" / "report.json"));
  ASSERT_EQ(report["rows"].size(), 2u);
  std::set<std::string> names;
  for (const auto& row : report["rows"]) {
    names.insert(row["backbone"].get<std::string>());
    EXPECT_GT(row["extract_seconds"].get<double>(), 0);
    EXPECT_EQ(row["tap"], row["backbone"] == "alexnet" ? "fc7" : "pool");
  }
  EXPECT_EQ(names, (std::set<std::string>{"alexnet", "resnet18"}));
  EXPECT_GE(report["rows"][0]["test_acc"].get<double>(), report["rows"][1]["test_acc"].get<double>());
  EXPECT_TRUE(fs::exists(dir / "ranked" / "backbones.csv"));
  EXPECT_NE(testutil::read_text(dir / "ranked" / "report.md").find("ResNet-18"), std::string::npos);

  // A head run of another backbone than --backbone says is refused; unknown names exit 2.
  EXPECT_EQ(run_stage("transfer-head --backbone vgg16 --features " + d + "/resnet18.h5 --out " + d + "/h", log), 2);
  EXPECT_NE(testutil::read_text(log).find("ResNet-18"), std::string::npos) << testutil::read_text(log);
  for (const std::string stage : {"transfer-extract --out x.h5", "transfer-finetune --out x", "transfer-fetch"}) {
    EXPECT_EQ(run_stage(stage + " --backbone resnet101", log), 2) << stage;
    EXPECT_NE(testutil::read_text(log).find("resnet18"), std::string::npos) << testutil::read_text(log);
  }
}

TEST(Stages, BadFlagsExitTwoWithAMessage) {
  TempDir dir;
  const std::string d = dir.path().string();
  ASSERT_EQ(run_stage("transfer-synth --out " + d + "/data --train 20 --test 5"), 0);
  const fs::path log = dir / "log.txt";
  EXPECT_EQ(run_stage("transfer-head --features x.h5 --out " + d + "/h --epochs 0", log), 2);
  EXPECT_NE(testutil::read_text(log).find("--epochs"), std::string::npos) << testutil::read_text(log);
  EXPECT_EQ(run_stage("transfer-head --features x.h5 --out " + d + "/h --lr 0", log), 2);
  EXPECT_EQ(run_stage("transfer-head --features x.h5 --out " + d + "/h --tap fc9", log), 2);
  EXPECT_EQ(run_stage("transfer-head --features x.h5 --out " + d + "/h --precision fp16", log), 2);
  EXPECT_NE(testutil::read_text(log).find("fp16"), std::string::npos) << testutil::read_text(log);
  EXPECT_EQ(run_stage("transfer-extract --data " + d + "/data --weights random:0 --out " + d +
                          "/c.h5 --image-size 32",
                      log),
            2);
  EXPECT_NE(testutil::read_text(log).find("63"), std::string::npos) << testutil::read_text(log);
  EXPECT_EQ(run_stage("transfer-finetune --data " + d + "/data --weights random:0 --out " + d +
                          "/f --precision fp16 --device cpu",
                      log),
            2);
  EXPECT_NE(testutil::read_text(log).find("fp16"), std::string::npos) << testutil::read_text(log);
  EXPECT_EQ(run_stage("transfer-finetune --data " + d + "/data --out " + d + "/f --no-such-flag", log), 2);
  EXPECT_EQ(run_stage("transfer-extract --help", log), 0);
  EXPECT_NE(testutil::read_text(log).find("--image-size"), std::string::npos);
}

TEST(Stages, MissingOrIncompleteCacheExitsOne) {
  TempDir dir;
  const std::string d = dir.path().string();
  const fs::path log = dir / "log.txt";
  EXPECT_EQ(run_stage("transfer-head --features " + d + "/none.h5 --out " + d + "/h", log), 1);
  EXPECT_NE(testutil::read_text(log).find("none.h5"), std::string::npos) << testutil::read_text(log);
  { std::ofstream(dir / "broken.h5") << "not hdf5"; }
  EXPECT_EQ(run_stage("transfer-head --features " + d + "/broken.h5 --out " + d + "/h", log), 1);
  EXPECT_FALSE(fs::exists(dir / "h" / "metrics.json"));
}
