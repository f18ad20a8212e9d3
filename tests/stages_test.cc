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
  // The settings in report.json are those the stages ran with, through the one run
  // schema (a key renamed by a stage would show here).
  const nlohmann::json report = nlohmann::json::parse(testutil::read_text(dir / "compare" / "report.json"));
  const nlohmann::json& probe = report["approaches"]["linear-probe"]["settings"];
  const nlohmann::json& tune = report["approaches"]["fine-tune"]["settings"];
  EXPECT_EQ(probe["backbone"], "alexnet");
  EXPECT_EQ(probe["dataset"]["name"], "cifar10");
  EXPECT_EQ(probe["image_size"], 64);
  EXPECT_EQ(probe["pretrained"], false);
  EXPECT_EQ(probe["normalization"], "imagenet");
  EXPECT_EQ(probe["train_rows"], 300);
  EXPECT_EQ(probe["test_rows"], 100);
  EXPECT_EQ(probe["epochs"], 5);
  EXPECT_EQ(probe["tap"], "pool5");
  EXPECT_EQ(probe["head"], "linear");
  EXPECT_EQ(probe["extract_precision"], "fp32");
  EXPECT_EQ(probe["feature_dtype"], "float32");
  EXPECT_EQ(probe["features"], fs::absolute(dir / "cache.h5").lexically_normal().string());
  EXPECT_EQ(tune["backbone"], "alexnet");
  EXPECT_EQ(tune["dataset"], probe["dataset"]);
  EXPECT_EQ(tune["image_size"], 64);
  EXPECT_EQ(tune["epochs"], 1);
  EXPECT_EQ(tune["batch_size"], 32);
  EXPECT_DOUBLE_EQ(tune["lr"].get<double>(), 1e-4);
  EXPECT_EQ(tune["normalization"], "imagenet");
  EXPECT_EQ(tune["precision"], "fp32");
  EXPECT_EQ(tune["train_rows"], 300);
  EXPECT_EQ(report["inputs"]["extract_seconds_source"], "provenance of " + d + "/cache.h5");
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

TEST(Stages, Cifar100FineAndCoarseEndToEnd) {
  // 100 fine classes through every stage, and the report copes with them; 20 coarse
  // classes through extraction and a head.
  TempDir dir;
  const std::string d = dir.path().string();
  ASSERT_EQ(run_stage("transfer-synth --dataset cifar100 --out " + d + "/c100 --train 600 --test 200 --seed 2"), 0);
  const std::string data = " --dataset cifar100 --data " + d + "/c100 --weights random:0 --device cpu ";
  ASSERT_EQ(run_stage("transfer-extract" + data + "--backbone resnet18 --image-size 32 --out " + d + "/fine.h5"), 0);
  ASSERT_EQ(run_stage("transfer-head --features " + d + "/fine.h5 --out " + d + "/head --epochs 3"), 0);
  ASSERT_EQ(run_stage("transfer-finetune" + data + "--backbone resnet18 --image-size 32 --epochs 1 --batch-size 32 " +
                      "--out " + d + "/tune"),
            0);
  const fs::path log = dir / "log.txt";
  ASSERT_EQ(run_stage("transfer-compare --head " + d + "/head --finetune " + d + "/tune --out " + d + "/compare", log), 0)
      << testutil::read_text(log);
  const auto report = nlohmann::json::parse(testutil::read_text(dir / "compare" / "report.json"));
  EXPECT_EQ(report["dataset"]["name"], "cifar100");
  EXPECT_EQ(report["dataset"]["classes"], 100);
  EXPECT_EQ(report["per_class"]["classes"].size(), 100u);
  EXPECT_EQ(report["per_class"]["classes"][42], "synthetic_42");
  EXPECT_TRUE(report["study"].is_null());
  const std::string md = testutil::read_text(dir / "compare" / "report.md");
  EXPECT_NE(md.find("ResNet-18 on CIFAR-100 (fine labels)"), std::string::npos) << md.substr(0, 200);
  EXPECT_NE(md.find("10 best and 10 worst of 100 classes"), std::string::npos);
  EXPECT_EQ(pipeline::read_metrics(dir / "tune").confusion.size(), 100u);

  ASSERT_EQ(run_stage("transfer-extract" + data + "--labels coarse --backbone resnet18 --image-size 32 --out " + d +
                      "/coarse.h5"),
            0);
  ASSERT_EQ(run_stage("transfer-head --features " + d + "/coarse.h5 --out " + d + "/coarse --epochs 3"), 0);
  const auto coarse = pipeline::read_metrics(dir / "coarse");
  ASSERT_EQ(coarse.confusion.size(), 20u);
  int64_t scored = 0;
  for (const auto& row : coarse.confusion) {
    EXPECT_EQ(row.size(), 20u);
    for (int64_t count : row) scored += count;
  }
  EXPECT_EQ(scored, 200);  // every test image, with a coarse label
  // A probe and a fine-tuning run of different datasets are not compared.
  EXPECT_EQ(run_stage("transfer-compare --head " + d + "/coarse --finetune " + d + "/tune --out " + d + "/x", log), 2);
  EXPECT_NE(testutil::read_text(log).find("different datasets"), std::string::npos) << testutil::read_text(log);
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
