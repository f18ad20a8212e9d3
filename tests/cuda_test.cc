// The CUDA paths against the CPU: extraction (fp32 and fp16) gives the CPU's features
// within the GPU's arithmetic, fine-tuning trains (fp32, and fp16 with its loss scaling)
// and resumes from a checkpoint written on the GPU. Without a CUDA device (a CPU-only
// LibTorch or no GPU) every test here is reported as skipped, never as passed.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>

#include "pipeline/extract.h"
#include "pipeline/features.h"
#include "pipeline/finetune.h"
#include "pipeline/synth.h"
#include "test_util.h"

namespace fs = std::filesystem;
using testutil::TempDir;

namespace {

#define SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the CUDA paths are not run here"

pipeline::ExtractOptions extract_options(const TempDir& dir, const std::string& device, const std::string& precision) {
  if (!fs::exists(dir / "data")) pipeline::write_synthetic_cifar({dir / "data", 40, 12, 3});
  pipeline::ExtractOptions o;
  o.data = dir / "data";
  o.weights = "random:1";
  o.out = dir / (device + "-" + precision + ".h5");
  o.taps = "pool5,fc7";
  o.image_size = 64;
  o.batch_size = 16;
  o.compute.device = device;
  o.compute.precision = precision;
  return o;
}

// ||a - b|| / ||b||.
double relative_error(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

pipeline::FinetuneOptions finetune_options(const TempDir& dir, const std::string& precision) {
  if (!fs::exists(dir / "data")) pipeline::write_synthetic_cifar({dir / "data", 400, 100, 5});
  pipeline::FinetuneOptions o;
  o.data = dir / "data";
  o.weights = "random:2";
  o.out = dir / ("run-" + precision);
  o.epochs = 3;
  o.lr = 1e-4;
  o.batch_size = 16;
  o.image_size = 64;
  o.compute.device = "cuda";
  o.compute.precision = precision;
  return o;
}

}  // namespace

TEST(Cuda, ExtractionEqualsTheCpusFeatures) {
  SKIP_WITHOUT_CUDA();
  TempDir dir;
  const auto cpu = extract_options(dir, "cpu", "fp32"), gpu = extract_options(dir, "cuda", "fp32");
  pipeline::run_extract(cpu);
  const auto summary = pipeline::run_extract(gpu);
  EXPECT_NE(summary.device.find("cuda"), std::string::npos) << summary.device;
  pipeline::FeatureReader a(cpu.out), b(gpu.out);
  EXPECT_NE(b.provenance()["device"].get<std::string>().find("cuda"), std::string::npos);
  for (const char* split : {"train", "test"}) {
    EXPECT_TRUE(torch::equal(a.labels(split), b.labels(split))) << split;
    for (const char* tap : {"pool5", "fc7"}) {
      // cuDNN may run convolutions in TF32 (10-bit mantissa) on Ampere and later.
      EXPECT_LT(relative_error(b.read(split, tap), a.read(split, tap)), 1e-2) << split << " " << tap;
    }
  }
}

TEST(Cuda, Fp16ExtractionRecordsItsErrorAndStaysClose) {
  SKIP_WITHOUT_CUDA();
  TempDir dir;
  const auto cpu = extract_options(dir, "cpu", "fp32"), gpu = extract_options(dir, "cuda", "fp16");
  pipeline::run_extract(cpu);
  pipeline::run_extract(gpu);
  pipeline::FeatureReader a(cpu.out), b(gpu.out);
  EXPECT_EQ(b.provenance()["settings"]["precision"], "fp16");
  const double recorded = b.provenance()["precision_error"]["fc7"];
  EXPECT_GT(recorded, 0.0);
  EXPECT_LT(recorded, 0.02);
  const auto f = b.read("train", "fc7");
  EXPECT_EQ(f.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::isfinite(f).all().item<bool>());
  EXPECT_LT(relative_error(f, a.read("train", "fc7")), 0.02);
}

TEST(Cuda, FinetuningLearnsInFp32AndFp16) {
  SKIP_WITHOUT_CUDA();
  TempDir dir;
  for (const char* precision : {"fp32", "fp16"}) {
    const auto summary = pipeline::run_finetune(finetune_options(dir, precision));
    ASSERT_TRUE(summary.finished) << precision;
    EXPECT_NE(summary.metrics.device.find("cuda"), std::string::npos) << summary.metrics.device;
    EXPECT_TRUE(std::isfinite(summary.metrics.test_loss)) << precision;
    EXPECT_GT(summary.metrics.test_acc, 0.3) << precision << ": chance is 0.1";
  }
}

TEST(Cuda, AnInterruptedRunResumesFromItsCheckpoint) {
  SKIP_WITHOUT_CUDA();
  TempDir dir;
  auto options = finetune_options(dir, "fp32");
  options.epochs = 2;
  options.stop_after_epochs = 1;
  EXPECT_FALSE(pipeline::run_finetune(options).finished);
  options.stop_after_epochs = 0;
  options.resume = true;
  const auto resumed = pipeline::run_finetune(options);
  ASSERT_TRUE(resumed.finished);
  EXPECT_EQ(resumed.metrics.epochs.size(), 2u);  // the first from the checkpoint, the second trained now
  EXPECT_TRUE(std::isfinite(resumed.metrics.test_loss));
}
