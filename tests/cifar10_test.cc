#include "pipeline/cifar10.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "pipeline/error.h"
#include "pipeline/synth.h"
#include "test_util.h"

using testutil::error_of;
using testutil::TempDir;

namespace {

std::vector<char> record(uint8_t label, uint8_t fill) {
  std::vector<char> bytes(pipeline::kCifarRecordBytes, static_cast<char>(fill));
  bytes[0] = static_cast<char>(label);
  return bytes;
}

void write_records(const std::filesystem::path& file, const std::vector<std::pair<uint8_t, uint8_t>>& records) {
  std::vector<char> bytes;
  for (auto [label, fill] : records) {
    auto r = record(label, fill);
    bytes.insert(bytes.end(), r.begin(), r.end());
  }
  testutil::write_bytes(file, bytes);
}


}  // namespace

TEST(Cifar10, DecodesRecordsInFileOrderAcrossFiles) {
  TempDir dir;
  write_records(dir / "a.bin", {{3, 10}, {7, 20}});
  write_records(dir / "b.bin", {{9, 30}});
  auto data = pipeline::decode_cifar_files({dir / "a.bin", dir / "b.bin"});
  ASSERT_EQ(data.size(), 3);
  EXPECT_EQ(data.images.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_EQ(data.labels[0].item<int64_t>(), 3);
  EXPECT_EQ(data.labels[2].item<int64_t>(), 9);
  EXPECT_EQ(data.images[1][2][31][31].item<uint8_t>(), 20);
  EXPECT_EQ(data.images[2][0][0][0].item<uint8_t>(), 30);
}

TEST(Cifar10, PlanesAreRedGreenBlueRowMajor) {
  TempDir dir;
  std::vector<char> bytes = record(1, 0);
  bytes[1 + 5] = 11;                // red, row 0, column 5
  bytes[1 + 1024 + 32 * 2] = 22;    // green, row 2, column 0
  bytes[1 + 2048 + 32 * 31 + 31] = 33;  // blue, last pixel
  testutil::write_bytes(dir / "x.bin", bytes);
  auto data = pipeline::decode_cifar_files({dir / "x.bin"});
  EXPECT_EQ(data.images[0][0][0][5].item<uint8_t>(), 11);
  EXPECT_EQ(data.images[0][1][2][0].item<uint8_t>(), 22);
  EXPECT_EQ(data.images[0][2][31][31].item<uint8_t>(), 33);
}

TEST(Cifar10, LimitKeepsTheFirstRecords) {
  TempDir dir;
  write_records(dir / "a.bin", {{1, 1}, {2, 2}});
  write_records(dir / "b.bin", {{3, 3}, {4, 4}});
  auto data = pipeline::decode_cifar_files({dir / "a.bin", dir / "b.bin"}, 3);
  ASSERT_EQ(data.size(), 3);
  EXPECT_EQ(data.labels[2].item<int64_t>(), 3);
}

TEST(Cifar10, MissingFileIsNamed) {
  TempDir dir;
  const std::string message = error_of([&] { pipeline::load_cifar(dir.path(), pipeline::Split::Test); });
  EXPECT_NE(message.find("test_batch.bin"), std::string::npos) << message;
}

TEST(Cifar10, TruncatedFileIsNamed) {
  TempDir dir;
  auto bytes = record(1, 1);
  bytes.resize(bytes.size() - 1);
  testutil::write_bytes(dir / "test_batch.bin", bytes);
  const std::string message = error_of([&] { pipeline::load_cifar(dir.path(), pipeline::Split::Test); });
  EXPECT_NE(message.find("test_batch.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("3073"), std::string::npos) << message;
}

TEST(Cifar10, LabelAboveNineNamesFileAndRecord) {
  TempDir dir;
  write_records(dir / "test_batch.bin", {{1, 1}, {4, 1}, {10, 1}});
  const std::string message = error_of([&] { pipeline::load_cifar(dir.path(), pipeline::Split::Test); });
  EXPECT_NE(message.find("test_batch.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("record 2"), std::string::npos) << message;
  EXPECT_NE(message.find("label 10"), std::string::npos) << message;
}

TEST(Synth, WritesABalancedDeterministicCifarFolder) {
  TempDir dir;
  pipeline::write_synthetic_cifar({dir / "a", 100, 20, 7});
  pipeline::write_synthetic_cifar({dir / "b", 100, 20, 7});
  auto train = pipeline::load_cifar(dir / "a", pipeline::Split::Train);
  auto test = pipeline::load_cifar(dir / "a", pipeline::Split::Test);
  ASSERT_EQ(train.size(), 100);
  ASSERT_EQ(test.size(), 20);
  EXPECT_TRUE(torch::equal(torch::bincount(train.labels), torch::full({10}, 10, torch::kLong)));
  EXPECT_EQ(pipeline::cifar_digest(dir / "a"), pipeline::cifar_digest(dir / "b"));
  pipeline::write_synthetic_cifar({dir / "c", 100, 20, 8});
  EXPECT_NE(pipeline::cifar_digest(dir / "a"), pipeline::cifar_digest(dir / "c"));
  EXPECT_FALSE(std::filesystem::exists(dir / ".a.tmp"));
}

TEST(Synth, ClassesDifferInTheirMeanColour) {
  TempDir dir;
  pipeline::write_synthetic_cifar({dir / "s", 200, 10, 1});
  auto train = pipeline::load_cifar(dir / "s", pipeline::Split::Train);
  auto means = torch::zeros({10, 3});
  for (int c = 0; c < 10; ++c) {
    means[c] = train.images.index({train.labels == c}).to(torch::kFloat).mean({0, 2, 3});
  }
  // Every pair of classes is apart in colour by well over the noise.
  auto distances = torch::cdist(means, means);
  distances.fill_diagonal_(1000);
  EXPECT_GT(distances.min().item<float>(), 20.0f);
}
