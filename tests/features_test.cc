#include "pipeline/features.h"

#include <H5Cpp.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "pipeline/error.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using pipeline::CacheLayout;
using pipeline::FeatureDtype;
using pipeline::FeatureReader;
using pipeline::FeatureWriter;

namespace {

// The full contents a test writes: labels and features per split, made up front so
// that any write order can be checked against them.
struct Contents {
  torch::Tensor train_labels, test_labels;
  std::map<std::string, torch::Tensor> train, test;

  const torch::Tensor& labels(const std::string& split) const { return split == "train" ? train_labels : test_labels; }
  const std::map<std::string, torch::Tensor>& taps(const std::string& split) const {
    return split == "train" ? train : test;
  }
  std::map<std::string, torch::Tensor> slice(const std::string& split, int64_t row, int64_t n) const {
    std::map<std::string, torch::Tensor> out;
    for (const auto& [name, t] : taps(split)) out[name] = t.narrow(0, row, n);
    return out;
  }
};

CacheLayout small_layout(FeatureDtype dtype = FeatureDtype::Float32, int64_t train = 10, int64_t test = 6) {
  CacheLayout layout;
  layout.train_rows = train;
  layout.test_rows = test;
  layout.taps = {{"fc7", 8}, {"fc6", 5}};  // deliberately not alphabetical
  layout.dtype = dtype;
  return layout;
}

Contents make_contents(const CacheLayout& layout) {
  torch::manual_seed(7);
  Contents c;
  c.train_labels = torch::randint(0, 10, {layout.train_rows}, torch::kLong);
  c.test_labels = torch::randint(0, 10, {layout.test_rows}, torch::kLong);
  for (const auto& [name, width] : layout.taps) {
    c.train[name] = torch::randn({layout.train_rows, width}) * 10;
    c.test[name] = torch::randn({layout.test_rows, width}) * 10;
  }
  return c;
}

json settings(int image_size = 224) {
  return {{"weights_sha256", "7be5be79abc"}, {"image_size", image_size}, {"taps", {"fc7", "fc6"}},
          {"dtype", "float32"}};
}

json provenance(const json& s = settings(), const std::string& created = "today") {
  return {{"settings", s}, {"created", created}};
}

void write_rows(FeatureWriter& w, const Contents& c, const std::string& split, int64_t row, int64_t n) {
  w.write(split, row, c.labels(split).narrow(0, row, n), c.slice(split, row, n));
}

// Writes every row in blocks of `block` rows.
void write_all(FeatureWriter& w, const Contents& c, int64_t block) {
  for (const std::string split : {"train", "test"}) {
    for (int64_t row = w.rows_done(split); row < w.rows(split); row += block) {
      write_rows(w, c, split, row, std::min(block, w.rows(split) - row));
    }
  }
}

// Expects the finished cache at `path` to hold exactly `c`: int64 labels, and float32
// features (rounded through half first when the cache stores float16).
void expect_holds(const fs::path& path, const Contents& c) {
  FeatureReader r(path);
  const bool half = r.dtype() == FeatureDtype::Float16;
  for (const std::string split : {"train", "test"}) {
    const torch::Tensor labels = r.labels(split);
    EXPECT_EQ(labels.scalar_type(), torch::kLong);
    EXPECT_TRUE(torch::equal(labels, c.labels(split))) << split;
    for (const auto& [name, expected] : c.taps(split)) {
      const torch::Tensor got = r.read(split, name);
      EXPECT_EQ(got.scalar_type(), torch::kFloat);
      EXPECT_TRUE(torch::equal(got, half ? expected.to(torch::kHalf).to(torch::kFloat) : expected)) << split << "/" << name;
    }
  }
}

// Expects fn to throw pipeline::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no pipeline::Error thrown";
  } catch (const pipeline::Error& e) {
    const std::string message = e.what();
    for (const auto& part : parts) {
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
    }
  }
}

class FeatureCache : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("transfer_features_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    path_ = dir_ / "sub" / "cache.h5";  // the writer creates "sub"
    partial_ = fs::path(path_.string() + ".partial");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A finished cache at path_ with made-up contents of `layout`, written in 10-row blocks.
  Contents write_complete(const CacheLayout& layout) {
    const Contents contents = make_contents(layout);
    FeatureWriter w(path_, provenance(), layout);
    write_all(w, contents, 10);
    w.finish();
    return contents;
  }

  fs::path dir_, path_, partial_;
};

}  // namespace

TEST(FeatureDtypeNames, ParseAndPrint) {
  EXPECT_EQ(pipeline::parse_feature_dtype("float32"), FeatureDtype::Float32);
  EXPECT_EQ(pipeline::parse_feature_dtype("float16"), FeatureDtype::Float16);
  EXPECT_EQ(pipeline::to_string(FeatureDtype::Float16), "float16");
  EXPECT_EQ(pipeline::to_string(FeatureDtype::Float32), "float32");
  EXPECT_THROW(pipeline::parse_feature_dtype("bf16"), pipeline::UsageError);
}

TEST_F(FeatureCache, RoundTripFloat32) {
  const CacheLayout layout = small_layout();
  const Contents c = make_contents(layout);
  {
    FeatureWriter w(path_, provenance(), layout);
    EXPECT_FALSE(w.resumed());
    write_all(w, c, 4);  // 4 + 4 + 2 train rows, 4 + 2 test rows
    w.finish();
  }
  EXPECT_TRUE(fs::exists(path_));
  EXPECT_FALSE(fs::exists(partial_));

  FeatureReader r(path_);
  EXPECT_EQ(r.taps(), (std::vector<std::string>{"fc7", "fc6"}));
  EXPECT_EQ(r.dtype(), FeatureDtype::Float32);
  EXPECT_EQ(r.layout(), layout);
  EXPECT_EQ(r.width("fc6"), 5);
  EXPECT_EQ(r.rows("train"), 10);
  EXPECT_EQ(r.rows("test"), 6);
  EXPECT_EQ(r.provenance().at("settings"), settings());
  EXPECT_EQ(r.provenance().at("created"), "today");
  EXPECT_EQ(r.provenance().at("schema_version"), pipeline::kCacheSchemaVersion);
  expect_holds(path_, c);
  EXPECT_TRUE(pipeline::cache_matches(path_, settings()));
}

TEST_F(FeatureCache, RoundTripFloat16) {
  const CacheLayout layout = small_layout(FeatureDtype::Float16);
  const Contents c = make_contents(layout);
  {
    FeatureWriter w(path_, provenance(), layout);
    write_all(w, c, 3);
    w.finish();
  }
  FeatureReader r(path_);
  EXPECT_EQ(r.dtype(), FeatureDtype::Float16);
  expect_holds(path_, c);  // exactly what rounding to half gives,
  for (const std::string split : {"train", "test"}) {
    for (const auto& [name, expected] : c.taps(split)) {  // i.e. within half precision of the input
      EXPECT_TRUE(torch::allclose(r.read(split, name), expected, /*rtol=*/1e-3, /*atol=*/1e-4));
    }
  }
}

TEST_F(FeatureCache, AcceptsAnyIntegerLabelDtype) {
  const CacheLayout layout = small_layout(FeatureDtype::Float32, 3, 2);
  const Contents c = make_contents(layout);
  FeatureWriter w(path_, provenance(), layout);
  w.write("train", 0, torch::tensor({0, 255, 9}, torch::kInt), c.slice("train", 0, 3));
  w.write("test", 0, torch::tensor({1, 2}, torch::kByte), c.slice("test", 0, 2));
  w.finish();
  FeatureReader r(path_);
  EXPECT_TRUE(torch::equal(r.labels("train"), torch::tensor({0, 255, 9}, torch::kLong)));
  EXPECT_TRUE(torch::equal(r.labels("test"), torch::tensor({1, 2}, torch::kLong)));
}

TEST_F(FeatureCache, EmptySplit) {
  const CacheLayout layout = small_layout(FeatureDtype::Float32, 4, 0);
  const Contents c = make_contents(layout);
  {
    FeatureWriter w(path_, provenance(), layout);
    write_all(w, c, 4);
    w.finish();
  }
  FeatureReader r(path_);
  EXPECT_EQ(r.rows("test"), 0);
  EXPECT_EQ(r.read("test", "fc7").sizes(), (std::vector<int64_t>{0, 8}));
  EXPECT_EQ(r.labels("test").numel(), 0);
  EXPECT_TRUE(torch::equal(r.read("train", "fc7"), c.train.at("fc7")));
}

TEST_F(FeatureCache, ResumesAfterInterruption) {
  const CacheLayout layout = small_layout(FeatureDtype::Float16);
  const Contents c = make_contents(layout);
  {
    FeatureWriter w(path_, provenance(), layout);
    write_rows(w, c, "train", 0, 4);
    write_rows(w, c, "train", 4, 3);
    write_rows(w, c, "test", 0, 2);
    // Destroyed without finish(): a crash between blocks.
  }
  EXPECT_TRUE(fs::exists(partial_));
  EXPECT_FALSE(fs::exists(path_));
  {
    FeatureWriter w(path_, provenance(settings(), "tomorrow"), layout);
    EXPECT_TRUE(w.resumed());
    EXPECT_EQ(w.rows_done("train"), 7);
    EXPECT_EQ(w.rows_done("test"), 2);
    write_all(w, c, 2);
    w.finish(json{{"precision_max_abs_error", 0.25}});
  }
  EXPECT_FALSE(fs::exists(partial_));
  FeatureReader r(path_);
  EXPECT_EQ(r.provenance().at("created"), "tomorrow");  // the resuming run's provenance
  EXPECT_EQ(r.provenance().at("precision_max_abs_error"), 0.25);
  expect_holds(path_, c);
}

TEST_F(FeatureCache, RowsWrittenButNotCountedAreRewritten) {
  // A crash after a block's data but before its row count: the count is what counts.
  const CacheLayout layout = small_layout();
  const Contents c = make_contents(layout);
  {
    FeatureWriter w(path_, provenance(), layout);
    write_rows(w, c, "train", 0, 6);
  }
  {
    H5::H5File file(partial_.string(), H5F_ACC_RDWR);
    int64_t two = 2;
    file.openGroup("train").openAttribute("rows_written").write(H5::PredType::NATIVE_INT64, &two);
  }
  FeatureWriter w(path_, provenance(), layout);
  ASSERT_TRUE(w.resumed());
  EXPECT_EQ(w.rows_done("train"), 2);
  write_all(w, c, 5);
  w.finish();
  expect_holds(path_, c);
}

TEST_F(FeatureCache, OtherSettingsOrLayoutStartOver) {
  const CacheLayout layout = small_layout();
  const Contents c = make_contents(layout);
  {
    FeatureWriter w(path_, provenance(), layout);
    write_rows(w, c, "train", 0, 5);
  }
  {
    FeatureWriter w(path_, provenance(settings(64)), layout);
    EXPECT_FALSE(w.resumed());
    EXPECT_EQ(w.rows_done("train"), 0);
    write_rows(w, c, "train", 0, 5);
  }
  {
    CacheLayout other = layout;
    other.taps = {{"fc7", 8}};
    FeatureWriter w(path_, provenance(settings(64)), other);
    EXPECT_FALSE(w.resumed());
    EXPECT_EQ(w.rows_done("train"), 0);
  }
  {
    CacheLayout other = layout;
    other.dtype = FeatureDtype::Float16;
    FeatureWriter w(path_, provenance(settings(64)), other);
    EXPECT_FALSE(w.resumed());
  }
}

TEST_F(FeatureCache, CorruptPartialStartsOver) {
  fs::create_directories(partial_.parent_path());
  { std::ofstream(partial_) << "not an hdf5 file"; }
  const CacheLayout layout = small_layout();
  const Contents c = make_contents(layout);
  FeatureWriter w(path_, provenance(), layout);
  EXPECT_FALSE(w.resumed());
  write_all(w, c, 10);
  w.finish();
  EXPECT_TRUE(pipeline::cache_matches(path_, settings()));
}

TEST_F(FeatureCache, BadWritesThrowAndCommitNothing) {
  const CacheLayout layout = small_layout();
  const Contents c = make_contents(layout);
  FeatureWriter w(path_, provenance(), layout);
  write_rows(w, c, "train", 0, 3);
  expect_error([&] { write_rows(w, c, "train", 4, 2); }, {"out of order", "3 rows written"});
  expect_error([&] { write_rows(w, c, "train", 0, 2); }, {"out of order"});
  expect_error([&] { w.write("train", 3, torch::zeros({8}, torch::kLong), c.slice("train", 0, 8)); },
               {"exceed", "10 rows"});
  expect_error([&] { w.write("valid", 0, c.train_labels.narrow(0, 0, 1), c.slice("train", 0, 1)); },
               {"unknown split 'valid'"});
  auto missing = c.slice("train", 3, 2);
  missing.erase("fc6");
  expect_error([&] { w.write("train", 3, c.train_labels.narrow(0, 3, 2), missing); }, {"lacks tap 'fc6'"});
  auto extra = c.slice("train", 3, 2);
  extra["pool5"] = torch::zeros({2, 3});
  expect_error([&] { w.write("train", 3, c.train_labels.narrow(0, 3, 2), extra); }, {"'pool5'", "fc7, fc6"});
  auto wrong_width = c.slice("train", 3, 2);
  wrong_width["fc7"] = torch::zeros({2, 7});
  expect_error([&] { w.write("train", 3, c.train_labels.narrow(0, 3, 2), wrong_width); }, {"fc7", "[2, 8]"});
  expect_error([&] { w.write("train", 3, torch::tensor({3, 256}), c.slice("train", 3, 2)); }, {"0..255"});
  expect_error([&] { w.write("train", 3, torch::tensor({0.5, 1.0}), c.slice("train", 3, 2)); }, {"integer"});
  EXPECT_EQ(w.rows_done("train"), 3);

  write_all(w, c, 7);  // the failed calls left nothing behind
  w.finish();
  expect_holds(path_, c);
}

TEST_F(FeatureCache, FinishWithMissingRowsThrows) {
  const CacheLayout layout = small_layout();
  const Contents c = make_contents(layout);
  FeatureWriter w(path_, provenance(), layout);
  write_rows(w, c, "train", 0, 10);
  write_rows(w, c, "test", 0, 5);
  expect_error([&] { w.finish(); }, {"test has 5 of 6 rows"});
  EXPECT_FALSE(fs::exists(path_));
  EXPECT_TRUE(fs::exists(partial_));
  write_rows(w, c, "test", 5, 1);
  expect_error([&] { w.finish(json{{"settings", json::object()}}); }, {"settings"});
  w.finish();
  EXPECT_TRUE(fs::exists(path_));
  expect_error([&] { w.finish(); }, {"finished"});
}

TEST_F(FeatureCache, FinishReplacesAnOldCache) {
  const CacheLayout layout = small_layout();
  const Contents c = make_contents(layout);
  for (int image_size : {224, 64}) {
    FeatureWriter w(path_, provenance(settings(image_size)), layout);
    write_all(w, c, 10);
    w.finish();
  }
  EXPECT_TRUE(pipeline::cache_matches(path_, settings(64)));
  EXPECT_FALSE(pipeline::cache_matches(path_, settings(224)));
}

// Only a file this program can read, of the kind the stage writes, is replaced.
TEST_F(FeatureCache, OnlyACacheOfTheKindIsReplaced) {
  write_complete(small_layout());
  EXPECT_NO_THROW(pipeline::check_cache_output(path_, "--out", /*image_store=*/false));
  const std::string kind = testutil::error_of([&] { pipeline::check_cache_output(path_, "--image-store", true); });
  EXPECT_NE(kind.find("it is a feature cache"), std::string::npos) << kind;

  const fs::path mine = dir_ / "mine.h5";
  testutil::write_bytes(mine, "\x89HDF\r\n\x1a\nnot a cache at all");
  const std::string message = testutil::error_of([&] { pipeline::check_cache_output(mine, "--out", false); });
  EXPECT_NE(message.find("mine.h5"), std::string::npos) << message;
  EXPECT_EQ(testutil::read_text(mine), "\x89HDF\r\n\x1a\nnot a cache at all");

  // An interrupted write's name holding something else is the user's too.
  testutil::write_bytes(dir_ / "new.h5.partial", "my notes");
  EXPECT_THROW(pipeline::check_cache_output(dir_ / "new.h5", "--out", false), pipeline::Error);
  testutil::write_bytes(dir_ / "empty.h5.partial", "");  // killed as it was created
  EXPECT_NO_THROW(pipeline::check_cache_output(dir_ / "empty.h5", "--out", false));
  // A file of the user's in the cache's place is never replaced; a link to a cache neither.
  testutil::write_bytes(dir_ / "thesis.h5", "my thesis");
  const std::string thesis = testutil::error_of([&] { pipeline::check_cache_output(dir_ / "thesis.h5", "--out", false); });
  EXPECT_NE(thesis.find("thesis.h5"), std::string::npos) << thesis;
  fs::create_symlink(path_, dir_ / "link.h5");  // replacing it would drop the user's link
  EXPECT_THROW(pipeline::check_cache_output(dir_ / "link.h5", "--out", false), pipeline::Error);
  fs::create_symlink(path_, dir_ / "linked.h5.partial");  // would be resumed through the link
  EXPECT_THROW(pipeline::check_cache_output(dir_ / "linked.h5", "--out", false), pipeline::Error);
}

TEST_F(FeatureCache, ReaderRefusesIncompleteCache) {
  const CacheLayout layout = small_layout();
  const Contents c = make_contents(layout);
  {
    FeatureWriter w(path_, provenance(), layout);
    write_rows(w, c, "train", 0, 4);
  }
  expect_error([&] { FeatureReader r(partial_); }, {partial_.string(), "incomplete", "rerun transfer-extract"});
  expect_error([&] { FeatureReader r(path_); }, {"no feature cache at", ".partial", "resume"});
  EXPECT_FALSE(pipeline::cache_matches(partial_, settings()));
  EXPECT_FALSE(pipeline::cache_matches(path_, settings()));
}

TEST_F(FeatureCache, ReaderOnMissingFileSaysRunExtract) {
  expect_error([&] { FeatureReader r(path_); }, {"no feature cache at", path_.string(), "transfer-extract"});
}

TEST_F(FeatureCache, ReaderOnNonHdf5FileSaysSo) {
  fs::create_directories(path_.parent_path());
  { std::ofstream(path_) << "label,f0\n1,0.5\n"; }
  expect_error([&] { FeatureReader r(path_); }, {path_.string(), "not an HDF5 file"});
  EXPECT_FALSE(pipeline::cache_matches(path_, settings()));
}

TEST_F(FeatureCache, ReaderChecksSchemaVersion) {
  const CacheLayout layout = small_layout();
  const Contents c = write_complete(layout);
  {
    // Rewrite the provenance as a future version would.
    H5::H5File file(path_.string(), H5F_ACC_RDWR);
    H5::Attribute attr = file.openAttribute("provenance");
    std::string text;
    attr.read(attr.getStrType(), text);
    json p = json::parse(text);
    p["schema_version"] = 99;
    attr.close();
    file.removeAttr("provenance");
    H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
    file.createAttribute("provenance", type, H5::DataSpace(H5S_SCALAR)).write(type, p.dump());
  }
  expect_error([&] { FeatureReader r(path_); }, {path_.string(), "schema version 99", "--force"});
  EXPECT_FALSE(pipeline::cache_matches(path_, settings()));
}

TEST_F(FeatureCache, ReaderAcceptsUint8CompleteFlag) {
  const CacheLayout layout = small_layout();
  const Contents c = write_complete(layout);
  {
    H5::H5File file(path_.string(), H5F_ACC_RDWR);
    file.removeAttr("complete");
    uint8_t one = 1;
    file.createAttribute("complete", H5::PredType::STD_U8LE, H5::DataSpace(H5S_SCALAR))
        .write(H5::PredType::NATIVE_UINT8, &one);
  }
  FeatureReader r(path_);
  EXPECT_TRUE(torch::equal(r.read("test", "fc7"), c.test.at("fc7")));
}

TEST_F(FeatureCache, UnknownTapNamesTheTapsThere) {
  const CacheLayout layout = small_layout();
  const Contents c = write_complete(layout);
  FeatureReader r(path_);
  expect_error([&] { r.read("train", "pool5"); }, {path_.string(), "'pool5'", "fc7, fc6"});
  expect_error([&] { r.read("val", "fc7"); }, {"unknown split 'val'"});
}

TEST_F(FeatureCache, RequireSettingsNamesEachDifference) {
  const CacheLayout layout = small_layout();
  const Contents c = write_complete(layout);
  FeatureReader r(path_);
  EXPECT_NO_THROW(r.require_settings(settings()));
  json expected = settings(64);
  expected.erase("dtype");
  expected["limit_train"] = 1000;
  expect_error([&] { r.require_settings(expected); },
               {path_.string(), "image_size: expected 64, found 224", "dtype: expected (absent), found \"float32\"",
                "limit_train: expected 1000, found (absent)", "--force"});
  try {
    r.require_settings(expected);
  } catch (const pipeline::Error& e) {
    EXPECT_EQ(std::string(e.what()).find("weights_sha256"), std::string::npos) << "equal keys are not listed";
  }
}

TEST_F(FeatureCache, CacheMatches) {
  EXPECT_FALSE(pipeline::cache_matches(path_, settings()));  // missing
  EXPECT_FALSE(pipeline::cache_matches(dir_, settings()));   // a directory (or nothing)
  const CacheLayout layout = small_layout();
  const Contents c = write_complete(layout);
  EXPECT_TRUE(pipeline::cache_matches(path_, settings()));
  EXPECT_FALSE(pipeline::cache_matches(path_, settings(64)));
  EXPECT_FALSE(pipeline::cache_matches(path_, json::object()));
}


TEST_F(FeatureCache, OneWriterPerFileInAProcess) {
  const CacheLayout layout = small_layout();
  FeatureWriter w(path_, provenance(), layout);
  expect_error([&] { FeatureWriter second(path_, provenance(), layout); }, {partial_.string(), "already being written"});
}

TEST_F(FeatureCache, TruncatedFileIsAnErrorNamingIt) {
  // As a full disk or an interrupted copy would leave it: the HDF5 error becomes a
  // pipeline::Error with the file and HDF5's own cause.
  const CacheLayout layout = small_layout(FeatureDtype::Float32, 200, 10);
  torch::manual_seed(1);
  const Contents c = make_contents(layout);
  {
    FeatureWriter w(path_, provenance(), layout);
    write_all(w, c, 100);
    w.finish();
  }
  fs::resize_file(path_, fs::file_size(path_) / 2);
  expect_error([&] { FeatureReader r(path_); }, {"HDF5 error in " + path_.string(), "truncated"});
  EXPECT_FALSE(pipeline::cache_matches(path_, settings()));

  fs::rename(path_, partial_);  // a damaged partial file is started over
  FeatureWriter w(path_, provenance(), layout);
  EXPECT_FALSE(w.resumed());
  EXPECT_EQ(w.rows_done("train"), 0);
}


// A cache is complete by its numbers, not its flag: "complete" true with rows_written
// lowered or raised is refused, as is a partial file whose rows_written claims rows
// that were never written (resuming it would turn fill values into features).
class FeatureCacheLies : public FeatureCache {};

TEST_F(FeatureCacheLies, CompleteFlagWithWrongRowCountIsRefused) {
  const CacheLayout layout = small_layout();
  write_complete(layout);
  for (int64_t lie : {int64_t{0}, int64_t{11}}) {
    {
      H5::H5File file(path_.string(), H5F_ACC_RDWR);
      H5::Group train = file.openGroup("train");
      train.openAttribute("rows_written").write(H5::PredType::NATIVE_INT64, &lie);
    }
    expect_error([&] { FeatureReader r(path_); }, {path_.string(), "rows_written"});
  }
}

TEST_F(FeatureCacheLies, RaisedRowsWrittenInAPartialFileStartsOver) {
  CacheLayout layout = small_layout(FeatureDtype::Float32, 2000, 6);
  layout.taps = {{"fc7", 4096}};  // 512 rows per 2 MiB chunk: 10 rows leave most chunks unwritten
  const Contents c = make_contents(layout);
  {
    FeatureWriter w(path_, provenance(), layout);
    write_rows(w, c, "train", 0, 10);
    EXPECT_EQ(w.rows_done("train"), 10);
  }
  {
    H5::H5File file(partial_.string(), H5F_ACC_RDWR);
    const int64_t lie = 2000;
    file.openGroup("train").openAttribute("rows_written").write(H5::PredType::NATIVE_INT64, &lie);
  }
  FeatureWriter again(path_, provenance(), layout);
  EXPECT_FALSE(again.resumed());
  EXPECT_EQ(again.rows_done("train"), 0);
}

