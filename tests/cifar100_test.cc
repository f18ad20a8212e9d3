// Tests of CIFAR-100 (pipeline/cifar100.h, pipeline/datasets/cifar100.cc) and of the
// dataset seam: records in source order with fine and coarse labels, names files,
// damaged files, synthetic data, the official archive's layout through transfer-fetch,
// and 100- and 20-class heads and fine-tuning.

#include "pipeline/cifar100.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <fstream>

#include "archive_util.h"
#include "pipeline/datasets/dataset.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/fetch.h"
#include "pipeline/synth.h"
#include "test_util.h"

namespace fs = std::filesystem;
using testutil::error_of;
using testutil::TempDir;

namespace {

// A hand-made CIFAR-100 folder: records (coarse, fine, pixel fill) and names files.
void write_folder(const fs::path& dir, const std::vector<std::array<int, 3>>& train, int fine_names = 100) {
  fs::create_directories(dir);
  auto records = [](const std::vector<std::array<int, 3>>& rows) {
    std::string bytes;
    for (const auto& [coarse, fine, fill] : rows) {
      bytes += static_cast<char>(coarse);
      bytes += static_cast<char>(fine);
      bytes += std::string(pipeline::kCifarImageBytes, static_cast<char>(fill));
    }
    return bytes;
  };
  testutil::write_bytes(dir / "train.bin", records(train));
  testutil::write_bytes(dir / "test.bin", records({{1, 7, 9}}));
  std::string fine, coarse;
  for (int i = 0; i < fine_names; ++i) fine += "fine" + std::to_string(i) + "\n";
  for (int i = 0; i < 20; ++i) coarse += "coarse" + std::to_string(i) + "\r\n";
  testutil::write_bytes(dir / "fine_label_names.txt", fine);
  testutil::write_bytes(dir / "coarse_label_names.txt", coarse);
}

}  // namespace

TEST(Cifar100, FineAndCoarseLabelsInSourceOrder) {
  TempDir dir;
  write_folder(dir / "c", {{3, 17, 1}, {19, 99, 2}, {0, 0, 3}});
  const auto fine = pipeline::open_dataset({"cifar100", dir / "c", "fine", ""});
  const auto coarse = pipeline::open_dataset({"cifar100", dir / "c", "coarse", ""});
  EXPECT_EQ(fine->classes(), 100);
  EXPECT_EQ(coarse->classes(), 20);
  EXPECT_EQ(fine->class_names()[99], "fine99");
  EXPECT_EQ(coarse->class_names()[3], "coarse3");  // CR stripped
  const auto f = fine->load(pipeline::Split::Train, -1), c = coarse->load(pipeline::Split::Train, -1);
  EXPECT_TRUE(torch::equal(f.labels, torch::tensor({17, 99, 0}, torch::kLong)));
  EXPECT_TRUE(torch::equal(c.labels, torch::tensor({3, 19, 0}, torch::kLong)));
  EXPECT_EQ(f.images.sizes().vec(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_EQ(f.images[1].max().item<int64_t>(), 2);  // the pixels after both label bytes
  EXPECT_TRUE(torch::equal(f.images, c.images));
  EXPECT_EQ(fine->load(pipeline::Split::Train, 2).size(), 2);
  EXPECT_EQ(fine->load(pipeline::Split::Test, -1).labels[0].item<int64_t>(), 7);
  EXPECT_EQ(fine->describe()["labels"], "fine");
  EXPECT_EQ(fine->describe()["classes"], 100);
  EXPECT_NE(fine->digest(), "");
}

TEST(Cifar100, DamagedDataIsNamed) {
  TempDir dir;
  write_folder(dir / "c", {{3, 100, 1}});  // fine label 100: out of range
  const auto fine = pipeline::open_dataset({"cifar100", dir / "c", "", ""});
  std::string message = error_of([&] { fine->load(pipeline::Split::Train, -1); });
  EXPECT_NE(message.find("train.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("label 100"), std::string::npos) << message;

  write_folder(dir / "d", {{3, 4, 1}}, 99);  // 99 names
  message = error_of([&] { pipeline::open_dataset({"cifar100", dir / "d", "fine", ""}); });
  EXPECT_NE(message.find("fine_label_names.txt"), std::string::npos) << message;
  EXPECT_NE(message.find("99 names"), std::string::npos) << message;

  write_folder(dir / "e", {{3, 4, 1}});
  testutil::write_bytes(dir / "e" / "train.bin", std::string(3073, '\0'));  // CIFAR-10's record size
  message = error_of([&] { pipeline::open_dataset({"cifar100", dir / "e", "", ""})->load(pipeline::Split::Train, -1); });
  EXPECT_NE(message.find("3074-byte record"), std::string::npos) << message;

  EXPECT_THROW(pipeline::open_dataset({"cifar100", dir / "c", "superfine", ""}), pipeline::UsageError);
  EXPECT_THROW(pipeline::open_dataset({"cifar10", dir / "c", "fine", ""}), pipeline::UsageError);
  message = error_of([&] { pipeline::open_dataset({"imagenet", dir / "c", "", ""}); });
  EXPECT_NE(message.find("cifar10, cifar100"), std::string::npos) << message;
}

TEST(Cifar100, SyntheticDataHasEveryClassAndCoarseGroups) {
  TempDir dir;
  pipeline::write_synthetic_cifar100({dir / "s", 400, 100, 3});
  EXPECT_EQ(pipeline::cifar100_problem(dir / "s", "s"), "");
  const auto fine = pipeline::open_dataset({"cifar100", dir / "s", "fine", ""});
  const auto coarse = pipeline::open_dataset({"cifar100", dir / "s", "coarse", ""});
  const auto f = fine->load(pipeline::Split::Train, -1), c = coarse->load(pipeline::Split::Train, -1);
  EXPECT_TRUE(torch::equal(torch::bincount(f.labels), torch::full({100}, 4, torch::kLong)));
  EXPECT_TRUE(torch::equal(torch::floor_divide(f.labels, 5), c.labels));
}

TEST(Cifar100, FetchUnpacksTheOfficialLayout) {
  TempDir dir;
  pipeline::write_synthetic_cifar100({dir / "s", 50, 10, 1});
  std::vector<testutil::Entry> entries = {{"cifar-100-binary", "", testutil::Entry::Dir}};
  for (const char* name : {"train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"}) {
    entries.push_back({std::string("cifar-100-binary/") + name, testutil::read_text(dir / "s" / name)});
  }
  testutil::write_tar_gz(dir / "c100.tar.gz", entries);
  pipeline::FetchOptions options;
  options.dataset = "cifar100";
  options.out_dir = dir / "data";
  options.archive = dir / "c100.tar.gz";
  options.md5 = pipeline::file_digest(options.archive, pipeline::DigestAlgorithm::Md5);
  options.skip_weights = true;
  const auto result = pipeline::fetch(options);
  EXPECT_EQ(result.cifar_dir, dir / "data" / "cifar-100-binary");
  EXPECT_TRUE(fs::exists(result.cifar_dir / ".verified"));
  EXPECT_TRUE(pipeline::fetch(options).cifar_already_present);

  // A CIFAR-10 archive is not CIFAR-100's.
  entries = {{"cifar-100-binary", "", testutil::Entry::Dir}, {"cifar-100-binary/data_batch_1.bin", "x"}};
  testutil::write_tar_gz(dir / "wrong.tar.gz", entries);
  options.archive = dir / "wrong.tar.gz";
  options.md5 = pipeline::file_digest(options.archive, pipeline::DigestAlgorithm::Md5);
  options.out_dir = dir / "other";
  const std::string message = error_of([&] { pipeline::fetch(options); });
  EXPECT_NE(message.find("data_batch_1.bin"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "other" / "cifar-100-binary"));
}
