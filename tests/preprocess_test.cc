#include "pipeline/preprocess.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>

#include "pipeline/error.h"
#include "test_util.h"

namespace {

torch::Tensor load_fixture(const std::string& name, std::vector<int64_t> shape, torch::ScalarType type) {
  std::vector<char> bytes = testutil::read_bytes(testutil::fixture(name));
  auto tensor = torch::empty(shape, type);
  EXPECT_EQ(static_cast<size_t>(tensor.nbytes()), bytes.size()) << name;
  std::memcpy(tensor.data_ptr(), bytes.data(), std::min<size_t>(bytes.size(), tensor.nbytes()));
  return tensor;
}

torch::Tensor inputs() { return load_fixture("preprocess_input.u8", {5, 3, 32, 32}, torch::kUInt8); }

}  // namespace

// torchvision's Resize on a PIL image: our resize must be PIL's, bit for bit (the
// issue allows 1/255; the fixed-point mirror of PIL's resample gets it exact).
TEST(Preprocess, ResizeEqualsPilAt224) {
  auto expected = load_fixture("preprocess_resize224.u8", {2, 3, 224, 224}, torch::kUInt8);
  auto ours = pipeline::Preprocessor(224, pipeline::normalization_by_name("imagenet")).resize(inputs().slice(0, 0, 2));
  auto diff = (ours.to(torch::kInt) - expected.to(torch::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 1);
  EXPECT_EQ(diff.nonzero().size(0), 0) << "pixels differing from PIL";
}

TEST(Preprocess, ResizeEqualsPilAt64) {
  auto expected = load_fixture("preprocess_resize64.u8", {5, 3, 64, 64}, torch::kUInt8);
  auto ours = pipeline::Preprocessor(64, pipeline::normalization_by_name("imagenet")).resize(inputs());
  auto diff = (ours.to(torch::kInt) - expected.to(torch::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 1);
  EXPECT_EQ(diff.nonzero().size(0), 0) << "pixels differing from PIL";
}

TEST(Preprocess, NormalizedEqualsTorchvisionWithinOneLevel) {
  auto expected = load_fixture("preprocess_norm64.f32", {5, 3, 64, 64}, torch::kFloat32);
  auto ours = pipeline::Preprocessor(64, pipeline::normalization_by_name("imagenet"))(inputs());
  ASSERT_EQ(ours.sizes(), expected.sizes());
  // Compare on the [0,1] scale: undo the normalization with the ImageNet std.
  auto stddev = torch::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1});
  auto error = ((ours - expected) * stddev).abs().max().item<float>();
  EXPECT_LE(error, 1.0f / 255.0f);
  EXPECT_LE(error, 1e-5f) << "should be float rounding only";
}

TEST(Preprocess, HalfNormalizationMapsToMinusOneOne) {
  auto black = torch::zeros({1, 3, 32, 32}, torch::kUInt8);
  auto white = torch::full({1, 3, 32, 32}, 255, torch::kUInt8);
  pipeline::Preprocessor half(70, pipeline::normalization_by_name("half"));
  EXPECT_NEAR(half(black).min().item<float>(), -1.0f, 1e-6);
  EXPECT_NEAR(half(white).max().item<float>(), 1.0f, 1e-6);
  EXPECT_EQ(half(black).sizes(), (std::vector<int64_t>{1, 3, 70, 70}));
}

TEST(Preprocess, ParallelEqualsSerial) {
  auto images = torch::randint(0, 256, {33, 3, 32, 32}, torch::kUInt8);
  pipeline::Preprocessor parallel(96, pipeline::normalization_by_name("imagenet"));
  pipeline::Preprocessor serial = parallel;
  serial.set_parallel(false);
  EXPECT_TRUE(torch::equal(parallel(images), serial(images)));
}

TEST(Preprocess, RejectsWrongShapesAndNames) {
  pipeline::Preprocessor p(64, pipeline::normalization_by_name("imagenet"));
  EXPECT_THROW(p(torch::zeros({1, 3, 28, 28}, torch::kUInt8)), pipeline::Error);
  EXPECT_THROW(p(torch::zeros({1, 3, 32, 32}, torch::kFloat)), pipeline::Error);
  EXPECT_THROW(pipeline::normalization_by_name("cifar"), pipeline::UsageError);
}

TEST(Preprocess, ChannelsLastOutputHoldsTheSameValues) {
  auto images = torch::randint(0, 256, {4, 3, 32, 32}, torch::kUInt8);
  pipeline::Preprocessor p(80, pipeline::normalization_by_name("half"));
  const auto nchw = p(images);
  const auto nhwc = p(images, /*channels_last=*/true);
  EXPECT_TRUE(nhwc.is_contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(torch::equal(nchw, nhwc));
}

TEST(Preprocess, Bfloat16OutputIsTheFloatOutputRoundedAsTorchRoundsIt) {
  // What a bf16 model gets written directly must be what .to(kBFloat16) of the float
  // batch gives, bit for bit, in both layouts.
  auto images = torch::randint(0, 256, {3, 3, 32, 32}, torch::kUInt8);
  pipeline::Preprocessor p(70, pipeline::normalization_by_name("imagenet"));
  const auto reference = p(images).to(torch::kBFloat16);
  for (const auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
    at::Tensor out = torch::empty({3, 3, 70, 70}, torch::TensorOptions(torch::kBFloat16).memory_format(format));
    p.into(images, out);
    EXPECT_TRUE(out.is_contiguous(format));
    EXPECT_TRUE(torch::equal(out.view(torch::kShort), reference.contiguous(format).view(torch::kShort)));
  }
  at::Tensor half = torch::empty({3, 3, 70, 70}, torch::kHalf);
  EXPECT_THROW(p.into(images, half), pipeline::Error);
}
