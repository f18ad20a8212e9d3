// Tests of pipeline/pickle's legacy-format reader (torch.save before PyTorch 1.6, or
// _use_new_zipfile_serialization=False): files written by Python's torch.save
// (tests/fixtures/make_backbone_fixtures.py, make_model_fixtures.py) load to the same
// tensors as the zip file of the same dict; damaged files give errors naming them.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "pipeline/error.h"
#include "pipeline/pickle.h"
#include "test_util.h"

namespace pipeline {
namespace {

namespace fs = std::filesystem;
using testutil::error_of;
using testutil::fixture;
using testutil::read_text;

fs::path scratch_file(const std::string& bytes) {
  static int counter = 0;
  const fs::path path =
      fs::temp_directory_path() / ("legacy_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + ".pth");
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

void expect_same_dicts(const TensorDict& a, const TensorDict& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(a[i].first);
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.scalar_type(), b[i].second.scalar_type());
    EXPECT_EQ(a[i].second.sizes(), b[i].second.sizes());
    EXPECT_EQ(a[i].second.strides(), b[i].second.strides());
    EXPECT_EQ(a[i].second.storage_offset(), b[i].second.storage_offset());
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second));
  }
}

TEST(LegacyPickleTest, LoadsTheSameTensorsAsTheZipFile) {
  const TensorDict legacy = read_torch_save_dict(fixture("legacy_pair_legacy.pth"));
  const TensorDict zip = read_torch_save_dict(fixture("legacy_pair_zip.pth"));
  expect_same_dicts(legacy, zip);
  ASSERT_EQ(legacy.size(), 5u);
  EXPECT_EQ(legacy[1].first, "view");
  EXPECT_TRUE(legacy[1].second.is_alias_of(legacy[0].second));  // one storage, as saved
  EXPECT_EQ(legacy[1].second.storage_offset(), 8);
  EXPECT_EQ(legacy[2].second.scalar_type(), at::kLong);
  EXPECT_EQ(legacy[3].second.scalar_type(), at::kHalf);
  EXPECT_EQ(legacy[4].second.dim(), 0);
  EXPECT_EQ(legacy[4].second.item<double>(), 2.5);
}

TEST(LegacyPickleTest, ReadsTheTinyStateDictLikeItsZipFile) {
  // OrderedDict with _metadata, batch-norm buffers, bfloat16, a transposed view.
  expect_same_dicts(read_torch_save_dict(fixture("legacy_state_dict.pth")),
                    read_torch_save_dict(fixture("tiny_state_dict.pth")));
}

TEST(LegacyPickleTest, ReadsTorchvisionPartsSavedLegacy) {
  // torchvision resnet18's batch-norm and bias tensors, saved in the legacy format.
  const TensorDict dict = read_torch_save_dict(fixture("backbone_resnet18_saved.pth"));
  ASSERT_FALSE(dict.empty());
  EXPECT_EQ(dict[0].first, "bn1.weight");
  EXPECT_EQ(dict[0].second.sizes().vec(), (std::vector<int64_t>{64}));
}

TEST(LegacyPickleTest, EveryTruncationIsAClearError) {
  const std::string bytes = read_text(fixture("legacy_pair_legacy.pth"));
  for (size_t keep = 0; keep < bytes.size(); ++keep) {
    const fs::path file = scratch_file(bytes.substr(0, keep));
    const std::string message = error_of([&] { read_torch_save_dict(file); });
    fs::remove(file);
    EXPECT_NE(message.find(file.string()), std::string::npos) << keep << ": " << message;
  }
}

TEST(LegacyPickleTest, ByteFlipsNeverCrash) {
  // Every byte of the file flipped in turn: refused with pipeline::Error, or read (a flip
  // inside a storage's data only changes a value).
  const std::string bytes = read_text(fixture("legacy_pair_legacy.pth"));
  int refused = 0;
  for (size_t at = 0; at < bytes.size(); ++at) {
    std::string mutant = bytes;
    mutant[at] = static_cast<char>(mutant[at] ^ 0x5a);
    const fs::path file = scratch_file(mutant);
    try {
      for (const auto& [key, tensor] : read_torch_save_dict(file)) (void)tensor.sum().item<double>();
    } catch (const Error& e) {
      ++refused;
      EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << at << ": " << e.what();
    }
    fs::remove(file);
  }
  EXPECT_GT(refused, static_cast<int>(bytes.size()) / 2);
}

TEST(LegacyPickleTest, StorageSizeMismatchIsNamed) {
  // The last storage's numel header, 8 bytes before its data, made to disagree.
  std::string bytes = read_text(fixture("legacy_pair_legacy.pth"));
  const size_t header = bytes.size() - 24 * 4 - 8;  // 'weight' (24 floats) is listed last
  bytes[header] = static_cast<char>(bytes[header] + 1);
  const fs::path file = scratch_file(bytes);
  const std::string message = error_of([&] { read_torch_save_dict(file); });
  fs::remove(file);
  EXPECT_NE(message.find("elements, but the object says"), std::string::npos) << message;
}

TEST(LegacyPickleTest, TarFormatIsNamed) {
  std::string tar(1024, '\0');
  tar.replace(0, 8, "storages");
  tar.replace(257, 5, "ustar");
  const fs::path file = scratch_file(tar);
  const std::string message = error_of([&] { read_torch_save_dict(file); });
  fs::remove(file);
  EXPECT_NE(message.find("tar format"), std::string::npos) << message;
  EXPECT_NE(message.find(file.string()), std::string::npos) << message;
}

}  // namespace
}  // namespace pipeline

namespace pipeline {
namespace {

TEST(LegacyPickleTest, PicklesLongerThanTheFirstReadLoad) {
  // The reader reads the first MiB for the pickles and more only when they go on: a key
  // of 1.5 MB (the object pickle ends past 1 MiB) still loads, to the same tensors.
  std::string bytes = read_text(fixture("legacy_pair_legacy.pth"));
  const std::string key("X\x06\x00\x00\x00weight", 11);
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  const uint32_t length = 1500000;
  std::string long_key = "X";
  for (int i = 0; i < 4; ++i) long_key += static_cast<char>((length >> (8 * i)) & 0xff);
  long_key += std::string(length, 'w');
  bytes.replace(at, key.size(), long_key);
  const fs::path file = scratch_file(bytes);
  const TensorDict dict = read_torch_save_dict(file);
  fs::remove(file);
  ASSERT_EQ(dict.size(), 5u);
  EXPECT_EQ(dict[0].first, std::string(length, 'w'));
  EXPECT_TRUE(torch::equal(dict[0].second, read_torch_save_dict(fixture("legacy_pair_zip.pth"))[0].second));
}

}  // namespace
}  // namespace pipeline
