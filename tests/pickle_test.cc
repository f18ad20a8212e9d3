// Tests of pipeline/pickle: the torch.save reader, against files written by Python's
// torch.save (tests/fixtures/make_model_fixtures.py) and hand-made pickles.

#include "pipeline/pickle.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <unistd.h>

#include "archive_entries.h"
#include "pipeline/error.h"
#include "test_util.h"

namespace pipeline {
namespace {
using testutil::error_of;

namespace fs = std::filesystem;

using testutil::fixture;
using testutil::read_text;

// A scratch file removed when the test ends.
class TempFile {
 public:
  explicit TempFile(const std::string& bytes) {
    path_ = fs::temp_directory_path() /
            ("pickle_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++) + ".pth");
    std::ofstream(path_, std::ios::binary) << bytes;
  }
  ~TempFile() { fs::remove(path_); }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};


at::ScalarType dtype_named(const std::string& name) {
  static const std::map<std::string, at::ScalarType> types = {
      {"float32", at::kFloat}, {"float64", at::kDouble}, {"float16", at::kHalf},
      {"bfloat16", at::kBFloat16}, {"int64", at::kLong}};
  return types.at(name);
}

TEST(PickleTest, ReadsPythonStateDict) {
  const TensorDict dict = read_torch_save_dict(fixture("tiny_state_dict.pth"));
  const auto expected = nlohmann::json::parse(read_text(fixture("tiny_state_dict.json")))["entries"];
  ASSERT_EQ(dict.size(), expected.size());
  for (size_t i = 0; i < dict.size(); ++i) {
    const auto& e = expected[i];
    const auto& [key, tensor] = dict[i];
    SCOPED_TRACE(key);
    EXPECT_EQ(key, e["key"].get<std::string>());  // file order
    EXPECT_EQ(tensor.scalar_type(), dtype_named(e["dtype"]));
    EXPECT_EQ(tensor.sizes().vec(), e["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(tensor.is_contiguous(), e["contiguous"].get<bool>());
    EXPECT_EQ(tensor.device().type(), at::kCPU);
    const auto values = e["values"].get<std::vector<double>>();
    const at::Tensor flat = tensor.to(at::kDouble).flatten();
    ASSERT_EQ(flat.numel(), static_cast<int64_t>(values.size()));
    for (size_t j = 0; j < values.size(); ++j) EXPECT_EQ(flat[j].item<double>(), values[j]) << j;
  }
}

TEST(PickleTest, KeepsViewsOfOneStorage) {
  const TensorDict dict = read_torch_save_dict(fixture("tiny_state_dict.pth"));
  auto find = [&](const std::string& key) {
    for (const auto& [k, t] : dict) {
      if (k == key) return t;
    }
    ADD_FAILURE() << key << " missing";
    return at::Tensor();
  };
  const at::Tensor base = find("base"), view = find("view");
  EXPECT_TRUE(view.is_alias_of(base));
  EXPECT_EQ(view.storage_offset(), 1);
  EXPECT_EQ(view.strides().vec(), (std::vector<int64_t>{1, 4}));
  EXPECT_TRUE(torch::equal(view, base.t().slice(0, 1)));
}

TEST(PickleTest, ReadsArchivePrefixAndFloatOutputs) {
  // Saved to a buffer, so its entries are archive/data.pkl, archive/data/0, ...
  const TensorDict dict = read_torch_save_dict(fixture("alexnet_outputs.pth"));
  ASSERT_EQ(dict.size(), 12u);
  EXPECT_EQ(dict[0].first, "input0.pool5");
  EXPECT_EQ(dict[0].second.sizes().vec(), (std::vector<int64_t>{9216}));
  EXPECT_EQ(dict[11].first, "input2.logits");
  EXPECT_EQ(dict[11].second.sizes().vec(), (std::vector<int64_t>{1000}));
}

TEST(PickleTest, ReadsPyTorch2Layout) {
  // archive/ prefix, byteorder and other 2.x records, local headers with sizes.
  const TensorDict one = read_torch_save_dict(fixture("tiny_state_dict.pth"));
  const TensorDict two = read_torch_save_dict(fixture("torch2_state_dict.pth"));
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(one[i].first, two[i].first);
    EXPECT_TRUE(torch::equal(one[i].second, two[i].second)) << one[i].first;
  }
}

TEST(PickleTest, BigEndianFileIsRefused) {
  const std::string message = error_of([] { read_torch_save_dict(fixture("big_endian_state_dict.pth")); });
  EXPECT_NE(message.find("byteorder 'big'"), std::string::npos) << message;
}

TEST(PickleTest, TruncatedFileIsAnError) {
  const std::string bytes = read_text(fixture("tiny_state_dict.pth"));
  for (size_t keep : {bytes.size() / 2, bytes.size() - 1, size_t{30}, size_t{4}}) {
    TempFile half(bytes.substr(0, keep));
    const std::string message = error_of([&] { read_torch_save_dict(half.path()); });
    EXPECT_NE(message.find(half.path().string()), std::string::npos) << message;
    EXPECT_NE(message.find("truncated or corrupt"), std::string::npos) << keep << ": " << message;
  }
}

TEST(PickleTest, CorruptByteIsAnError) {
  std::string bytes = read_text(fixture("tiny_state_dict.pth"));
  bytes[100] ^= 0x20;  // inside data.pkl: its CRC no longer matches
  TempFile corrupt(bytes);
  const std::string message = error_of([&] { read_torch_save_dict(corrupt.path()); });
  EXPECT_NE(message.find("corrupt"), std::string::npos) << message;
}

TEST(PickleTest, OtherFilesAreErrors) {
  EXPECT_NE(error_of([] { read_torch_save_dict(fixture("no_such_file.pth")); }).find("no such file"),
            std::string::npos);
  TempFile empty("");
  EXPECT_NE(error_of([&] { read_torch_save_dict(empty.path()); }).find("not a torch.save file"),
            std::string::npos);
  TempFile text("hello, world\n");
  EXPECT_NE(error_of([&] { read_torch_save_dict(text.path()); }).find("neither a zip archive nor the legacy format"),
            std::string::npos);
}

// --- hand-made pickles ----------------------------------------------------------------

std::string binunicode(const std::string& s) {
  std::string out = "X";
  const uint32_t n = static_cast<uint32_t>(s.size());
  for (int i = 0; i < 4; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  return out + s;
}
std::string binint1(int v) { return std::string("K") + static_cast<char>(v); }

// data.pkl of {'w': tensor(size, stride, offset) on float storage '0' of `numel`}.
std::string tensor_pickle(int numel, int size, int stride, int offset) {
  return std::string("\x80\x02}") + binunicode("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" +
         binunicode("storage") + "ctorch\nFloatStorage\n" + binunicode("0") + binunicode("cpu") +
         binint1(numel) + "tQ" + binint1(offset) + binint1(size) + "\x85" + binint1(stride) +
         "\x85\x89}tRs.";
}

// Storage k of n elements: [0, 1, ..., n-1].
const StorageLoader arange_storages = [](const std::string& key, at::ScalarType dtype, int64_t numel) {
  if (key != "0") fail("no storage {}", key);
  if (numel > 1000) fail("storage of {} elements is not in this test", numel);
  return torch::arange(numel, torch::TensorOptions().dtype(dtype));
};

TEST(PickleTest, RebuildsStridedTensor) {
  const TensorDict dict = unpickle_tensor_dict(tensor_pickle(6, 3, 2, 1), arange_storages, "test");
  ASSERT_EQ(dict.size(), 1u);
  EXPECT_EQ(dict[0].first, "w");
  EXPECT_TRUE(torch::equal(dict[0].second, torch::tensor({1.0f, 3.0f, 5.0f})));
}

TEST(PickleTest, TensorOutsideItsStorageIsAnError) {
  const std::string message =
      error_of([] { unpickle_tensor_dict(tensor_pickle(6, 3, 2, 2), arange_storages, "test"); });
  EXPECT_NE(message.find("overruns its storage"), std::string::npos) << message;
}

// LONG1: a little-endian two's-complement integer of 8 bytes.
std::string long1(int64_t v) {
  std::string out = "\x8a\x08";
  for (int i = 0; i < 8; ++i) out += static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff);
  return out;
}

// Zero strides let a 6-element storage claim [2^40, 2^40]: every element reached lies
// inside the storage, but the count (2^80) overflows int64 inside LibTorch.
TEST(PickleTest, ElementCountOverflowIsAnError) {
  const std::string pickle = std::string("\x80\x02}") + binunicode("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" +
                             binunicode("storage") + "ctorch\nFloatStorage\n" + binunicode("0") + binunicode("cpu") +
                             binint1(6) + "tQ" + binint1(0) + long1(int64_t{1} << 40) + long1(int64_t{1} << 40) +
                             "\x86" + binint1(0) + binint1(0) + "\x86\x89}tRs.";
  const std::string message = error_of([&] { unpickle_tensor_dict(pickle, arange_storages, "f.pth"); });
  EXPECT_NE(message.find("more than"), std::string::npos) << message;
}

// A torch.save-like zip written with deflate: `storages` referenced float storages of
// `numel` zeros each, plus `unreferenced` further compressed entries and `padding`
// random bytes (an unreferenced entry that keeps the file large).
std::string deflated_zip(int storages, int numel, int unreferenced, size_t padding) {
  std::string pickle = std::string("\x80\x02}(");
  for (int k = 0; k < storages; ++k) {
    const std::string key = std::to_string(k);
    pickle += binunicode("w" + key) + "ctorch._utils\n_rebuild_tensor_v2\n((" + binunicode("storage") +
              "ctorch\nFloatStorage\n" + binunicode(key) + binunicode("cpu") + "J" +
              std::string(reinterpret_cast<const char*>(&numel), 4) + "tQ" + binint1(0) + "J" +
              std::string(reinterpret_cast<const char*>(&numel), 4) + "\x85" + binint1(1) + "\x85\x89}tR";
  }
  pickle += "u.";
  testutil::PlainEntries entries = {{"archive/data.pkl", pickle}};
  for (int k = 0; k < storages; ++k) entries.emplace_back("archive/data/" + std::to_string(k), std::string(4 * numel, '\0'));
  for (int k = 0; k < unreferenced; ++k) entries.emplace_back("archive/data/x" + std::to_string(k), std::string(4 * numel, '\0'));
  entries.emplace_back("archive/padding", testutil::random_bytes(padding, 3));
  std::string bytes;
  struct archive* a = archive_write_new();
  archive_write_set_format_zip(a);
  archive_write_set_options(a, "zip:compression=deflate");
  std::vector<char> buffer(64 << 20);
  size_t used = 0;
  archive_write_open_memory(a, buffer.data(), buffer.size(), &used);
  testutil::write_plain_entries(a, entries);
  archive_write_close(a);
  archive_write_free(a);
  return std::string(buffer.data(), used);
}

// Storages are bounded by the file: torch.save stores them uncompressed, so referenced
// storages that inflate to more bytes than the file holds are refused before they are
// allocated; unreferenced entries are never inflated at all.
TEST(PickleTest, StoragesBeyondTheFileSizeAreRefused) {
  const TempFile ok(deflated_zip(1, 100, 200, 20000));
  const TensorDict dict = read_torch_save_dict(ok.path());
  ASSERT_EQ(dict.size(), 1u);
  EXPECT_EQ(dict[0].second.numel(), 100);
  EXPECT_EQ(dict[0].second.abs().sum().item<float>(), 0.0f);

  const TempFile bomb(deflated_zip(8, 4000, 0, 20000));  // 8 x 16 KB of zeros in a ~21 KB file
  const std::string message = error_of([&] { read_torch_save_dict(bomb.path()); });
  EXPECT_NE(message.find("more than the file's"), std::string::npos) << message;
}

TEST(PickleTest, UnknownOpcodeAndGlobalAreNamed) {
  std::string message = error_of([] {
    unpickle_tensor_dict(std::string("\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00", 11), arange_storages,
                         "file.pth");
  });
  EXPECT_NE(message.find("file.pth"), std::string::npos) << message;
  EXPECT_NE(message.find("opcode 0x95"), std::string::npos) << message;
  EXPECT_NE(message.find("byte 2"), std::string::npos) << message;

  message = error_of([] { unpickle_tensor_dict("\x80\x02" "cos\nsystem\n", arange_storages, "file.pth"); });
  EXPECT_NE(message.find("unsupported global os.system"), std::string::npos) << message;
}

TEST(PickleTest, NotADictOfTensorsIsAnError) {
  std::string message = error_of([] { unpickle_tensor_dict("\x80\x02K\x05.", arange_storages, "f"); });
  EXPECT_NE(message.find("not a dict of tensors"), std::string::npos) << message;
  message = error_of(
      [] { unpickle_tensor_dict("\x80\x02}" + binunicode("a") + binint1(1) + "s.", arange_storages, "f"); });
  EXPECT_NE(message.find("entry 'a' is a int, not a tensor"), std::string::npos) << message;
}

TEST(PickleTest, DeepNestingIsRefused) {
  const std::string pickle = "\x80\x02" + std::string(100, ']') + std::string(99, 'a') + ".";
  EXPECT_NE(error_of([&] { unpickle_tensor_dict(pickle, arange_storages, "f"); }).find("nested too deeply"),
            std::string::npos);
}

TEST(PickleTest, DamagedPicklesThrowOnlyPipelineErrors) {
  const std::string good = tensor_pickle(6, 3, 2, 1);
  // Every prefix: truncated.
  for (size_t n = 0; n < good.size(); ++n) {
    error_of([&] { unpickle_tensor_dict(good.substr(0, n), arange_storages, "f"); });
  }
  // Random byte changes: either a valid result or a pipeline::Error, never a crash.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bad = good;
    for (int k = 0; k < 1 + trial % 3; ++k) bad[rng() % bad.size()] = static_cast<char>(rng());
    try {
      unpickle_tensor_dict(bad, arange_storages, "f");
    } catch (const Error&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << "non-pipeline exception: " << e.what();
    }
  }
}

}  // namespace
}  // namespace pipeline
