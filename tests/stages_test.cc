// The stages as a user runs them: real binaries, exit codes, files on disk.
#include <gtest/gtest.h>

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
