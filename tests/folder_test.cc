// Tests of the image-folder dataset (pipeline/datasets/folder.cc), the JPEG/PNG
// decoder (pipeline/image_decode.h) and Resize(256) + CenterCrop(224)
// (pipeline/preprocess.h) against torchvision's ImageFolder loader with Pillow
// (tests/fixtures/make_image_fixtures.py): PNG exactly, JPEG within 1/255 per pixel;
// and the folder's errors: empty classes, missing classes, other image types, damage.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "pipeline/datasets/dataset.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/extract.h"
#include "pipeline/head.h"
#include "pipeline/image_store.h"
#include "pipeline/records.h"
#include "pipeline/features.h"
#include "pipeline/image_decode.h"
#include "pipeline/synth.h"
#include "pipeline/preprocess.h"
#include "test_util.h"

namespace fs = std::filesystem;
using testutil::error_of;
using testutil::fixture;
using testutil::TempDir;

namespace {

const fs::path kTree = fixture("images/tree");

nlohmann::json expected() {
  std::ifstream in(fixture("images/expected.json"));
  return nlohmann::json::parse(in);
}

// A copy of the fixture tree to break.
fs::path copy_tree(const TempDir& dir) {
  fs::copy(kTree, dir / "tree", fs::copy_options::recursive);
  return dir / "tree";
}

}  // namespace

TEST(ImageFolder, MatchesTorchvisionImageFolder) {
  const auto dataset = pipeline::open_dataset({"folder:" + kTree.string(), "", "", ""});
  EXPECT_EQ(dataset->class_names(), (std::vector<std::string>{"cat", "dog"}));
  const nlohmann::json want = expected();
  // ImageFolder's order: classes by name, folders walked in sorted order, files sorted.
  const std::vector<fs::path> files = dataset->files();
  ASSERT_EQ(files.size(), want.size());
  for (size_t i = 0; i < files.size(); ++i) EXPECT_EQ(fs::relative(files[i], kTree).string(), want[i]["file"]) << i;

  const std::string jpeg_bytes = testutil::read_text(fixture("images/expected_jpeg.u8"));
  const size_t image_bytes = 224 * 224 * 3;
  const auto train = dataset->load(pipeline::Split::Train, -1), test = dataset->load(pipeline::Split::Test, -1);
  ASSERT_EQ(train.size() + test.size(), static_cast<int64_t>(want.size()));
  size_t jpeg = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const bool in_train = static_cast<int64_t>(i) < train.size();
    const auto& split = in_train ? train : test;
    const int64_t row = in_train ? static_cast<int64_t>(i) : static_cast<int64_t>(i) - train.size();
    SCOPED_TRACE(want[i]["file"].get<std::string>() + " (" + want[i]["mode"].get<std::string>() + ")");
    EXPECT_EQ(split.labels[row].item<int64_t>(), want[i]["class"].get<int64_t>());
    const at::Tensor hwc = split.images[row].permute({1, 2, 0}).contiguous();
    const std::string bytes(reinterpret_cast<const char*>(hwc.data_ptr<uint8_t>()), image_bytes);
    if (want[i]["format"] == "PNG") {
      EXPECT_EQ(pipeline::bytes_digest(bytes, pipeline::DigestAlgorithm::Sha256), want[i]["sha256"]);
    } else {
      const std::string ref = jpeg_bytes.substr(jpeg++ * image_bytes, image_bytes);
      int worst = 0;
      for (size_t k = 0; k < image_bytes; ++k) {
        worst = std::max(worst, std::abs(int(uint8_t(bytes[k])) - int(uint8_t(ref[k]))));
      }
      EXPECT_LE(worst, 1) << "JPEG may differ by 1/255 per pixel";
    }
  }
  EXPECT_EQ(jpeg * image_bytes, jpeg_bytes.size());
  EXPECT_EQ(dataset->describe()["classes"], 2);
  EXPECT_NE(dataset->digest(), "");
}

TEST(ImageFolder, ResizedSizeIsTorchvisions) {
  EXPECT_EQ(pipeline::resized_size(300, 200, 256), (std::pair<int64_t, int64_t>{384, 256}));
  EXPECT_EQ(pipeline::resized_size(180, 260, 256), (std::pair<int64_t, int64_t>{256, 369}));  // int(256*260/180)
  EXPECT_EQ(pipeline::resized_size(32, 32, 256), (std::pair<int64_t, int64_t>{256, 256}));
}

TEST(ImageFolder, BadFoldersAreNamed) {
  TempDir dir;
  const fs::path tree = copy_tree(dir);
  const std::string name = "folder:" + tree.string();

  fs::create_directories(tree / "train" / "emu");
  std::string message = error_of([&] { pipeline::open_dataset({name, "", "", ""}); });
  EXPECT_NE(message.find("'emu'"), std::string::npos) << message;  // empty, and not in test/
  fs::create_directories(tree / "test" / "emu");
  message = error_of([&] { pipeline::open_dataset({name, "", "", ""}); });
  EXPECT_NE(message.find("class 'emu' has no image files"), std::string::npos) << message;
  fs::remove_all(tree / "train" / "emu");
  message = error_of([&] { pipeline::open_dataset({name, "", "", ""}); });
  EXPECT_NE(message.find("'emu' is in test/ but not in train/"), std::string::npos) << message;
  fs::remove_all(tree / "test" / "emu");

  // An image type ImageFolder lists but this program does not decode.
  testutil::write_bytes(tree / "train" / "cat" / "x.bmp", std::string("BM") + std::string(60, '\0'));
  message = error_of([&] { pipeline::open_dataset({name, "", "", ""})->load(pipeline::Split::Train, -1); });
  EXPECT_NE(message.find("x.bmp is a BMP image"), std::string::npos) << message;
  fs::remove(tree / "train" / "cat" / "x.bmp");

  // Truncated JPEG and PNG: errors naming the file.
  for (const char* file : {"train/cat/a_rgb.jpg", "train/dog/d_rgba.png"}) {
    const std::string bytes = testutil::read_text(kTree / file);
    testutil::write_bytes(tree / file, bytes.substr(0, bytes.size() / 2));
    message = error_of([&] { pipeline::open_dataset({name, "", "", ""})->load(pipeline::Split::Train, -1); });
    EXPECT_NE(message.find(fs::path(file).filename().string()), std::string::npos) << message;
    EXPECT_NE(message.find("damaged"), std::string::npos) << message;
    testutil::write_bytes(tree / file, bytes);
  }
  EXPECT_NO_THROW(pipeline::open_dataset({name, "", "", ""})->load(pipeline::Split::Train, -1));

  // A link back up the tree is followed (as os.walk(followlinks=True) does) but each
  // real folder once, never forever: through it, cat/ also reaches dog/'s 3 images.
  fs::create_directory_symlink(tree / "train", tree / "train" / "cat" / "loop");
  EXPECT_EQ(pipeline::open_dataset({name, "", "", ""})->files().size(), expected().size() + 3);
  fs::remove(tree / "train" / "cat" / "loop");

  fs::remove_all(tree / "test");
  message = error_of([&] { pipeline::open_dataset({name, "", "", ""}); });
  EXPECT_NE(message.find("no test/ folder"), std::string::npos) << message;
  EXPECT_THROW(pipeline::open_dataset({"folder:", "", "", ""}), pipeline::UsageError);
  EXPECT_THROW(pipeline::open_dataset({name, "", "fine", ""}), pipeline::UsageError);
}

TEST(ImageDecode, HostileBytesGiveErrors) {
  // Every truncation and a byte flip at every 7th byte of a JPEG and a PNG: an error or an image, never a crash.
  for (const char* file : {"train/cat/b_gray.jpeg", "train/dog/f_small.PNG"}) {
    const std::string bytes = testutil::read_text(kTree / file);
    for (size_t keep = 0; keep < bytes.size(); keep += std::max<size_t>(1, bytes.size() / 200)) {
      EXPECT_THROW(pipeline::decode_image_bytes(bytes.substr(0, keep), "cut"), pipeline::Error) << file << " " << keep;
    }
    for (size_t at = 0; at < bytes.size(); at += 7) {
      std::string mutant = bytes;
      mutant[at] = static_cast<char>(mutant[at] ^ 0x55);
      try {
        const auto image = pipeline::decode_image_bytes(mutant, "flipped");
        EXPECT_EQ(image.pixels.size(), static_cast<size_t>(image.width * image.height * 3));
      } catch (const pipeline::Error&) {
      }
    }
  }
  EXPECT_NE(error_of([] { pipeline::decode_image_bytes("hello", "x.png"); }).find("neither JPEG nor PNG"),
            std::string::npos);
}

TEST(ImageFolder, CifarRecordsAsPngGiveTheSameCacheRowsBitForBit) {
  // The synthetic CIFAR-10 records, and the same records as 32x32 PNGs in an image
  // folder (lossless): with --transform resize both go through the same Resize((S,S)),
  // so their cached features are equal, bit for bit, row for row.
  TempDir dir;
  pipeline::write_synthetic_cifar({dir / "cifar", 40, 20, 4});
  pipeline::dataset_kind("folder").write_synthetic(dir / "png", 40, 20, 4);
  pipeline::ExtractOptions binary;
  binary.data = dir / "cifar";
  binary.weights = "random:0";
  binary.image_size = 64;
  binary.out = dir / "binary.h5";
  binary.compute.device = "cpu";
  // One image per forward pass: the folder lists records class by class, and a BLAS may
  // round a row differently by its place in a batch (seen with OpenBLAS on AVX2).
  binary.batch_size = 1;
  pipeline::ExtractOptions folder = binary;
  folder.dataset = "folder:" + (dir / "png").string();
  folder.transform = "resize";
  folder.out = dir / "folder.h5";
  pipeline::run_extract(binary);
  pipeline::run_extract(folder);
  const pipeline::FeatureReader a(binary.out), b(folder.out);
  const auto png = pipeline::open_dataset({folder.dataset, "", "", "resize"});
  for (const auto& [split, name] : {std::pair{pipeline::Split::Train, "train"}, {pipeline::Split::Test, "test"}}) {
    // The folder lists class by class; each file is named after its record's index.
    std::vector<int64_t> source;
    for (const fs::path& file : png->files()) {
      if (file.parent_path().parent_path().filename() == name) source.push_back(std::stoll(file.stem().string()));
    }
    const at::Tensor order = torch::tensor(source, torch::kLong);
    ASSERT_EQ(b.rows(name), static_cast<int64_t>(source.size()));
    EXPECT_TRUE(torch::equal(a.read(name, "fc7").index_select(0, order), b.read(name, "fc7"))) << name;
    EXPECT_TRUE(torch::equal(a.labels(name).index_select(0, order), b.labels(name))) << name;
  }
  EXPECT_EQ(b.provenance()["settings"]["dataset"]["transform"], "resize");
  // The default transform (Resize(256) + CenterCrop(224)) makes other rows.
  EXPECT_EQ(pipeline::open_dataset({folder.dataset, "", "", ""})->load(pipeline::Split::Test, 1).images.size(2), 224);
}

TEST(ImageFolder, OneTreeIsSplitByASeededFractionOfEachClass) {
  // ROOT/<class>/... without train/ and test/: each class split, round(0.2 n) to test.
  TempDir dir;
  pipeline::dataset_kind("folder").write_synthetic(dir / "png", 60, 1, 5);
  fs::rename(dir / "png" / "train", dir / "one");
  const std::string name = "folder:" + (dir / "one").string();
  const auto a = pipeline::open_dataset({name, "", "", ""});
  const auto b = pipeline::open_dataset({name, "", "", ""});
  EXPECT_EQ(a->files(), b->files());  // seeded: the same split every time
  EXPECT_EQ(a->size(pipeline::Split::Train) + a->size(pipeline::Split::Test), 60);
  const auto test = a->load(pipeline::Split::Test, -1);
  for (int64_t c = 0; c < a->classes(); ++c) {
    int64_t in_class = 0;
    for (const auto& entry : fs::directory_iterator(dir / "one" / a->class_names()[static_cast<size_t>(c)])) {
      in_class += entry.is_regular_file() ? 1 : 0;
    }
    const int64_t held = test.labels.eq(c).sum().item<int64_t>();
    EXPECT_EQ(held, std::clamp<int64_t>(std::llround(0.2 * static_cast<double>(in_class)), 1, in_class - 1)) << c;
  }
  EXPECT_EQ(a->describe()["split"]["kind"], "seeded");
  EXPECT_EQ(a->describe()["split"]["test_fraction"], 0.2);
  const auto half = pipeline::open_dataset({name, "", "", "", false, 0.5});
  EXPECT_GT(half->size(pipeline::Split::Test), a->size(pipeline::Split::Test));
  EXPECT_THROW(pipeline::open_dataset({name, "", "", "", false, 1.0}), pipeline::UsageError);
  // A folder with its own test set takes no fraction; CIFAR neither.
  EXPECT_THROW(pipeline::open_dataset({"folder:" + kTree.string(), "", "", "", false, 0.3}), pipeline::UsageError);
  EXPECT_THROW(pipeline::open_dataset({"cifar10", dir.path(), "", "", false, 0.3}), pipeline::UsageError);
  EXPECT_THROW(pipeline::open_dataset({"cifar10", dir.path(), "", "", true}), pipeline::UsageError);
  // A class of one image cannot be split.
  fs::create_directories(dir / "one" / "zebra");
  fs::copy_file(a->files()[0], dir / "one" / "zebra" / "z.png");
  const std::string message = error_of([&] { pipeline::open_dataset({name, "", "", ""}); });
  EXPECT_NE(message.find("class 'zebra' has 1 image"), std::string::npos) << message;
}

TEST(ImageFolder, SkipBadLeavesOutUnreadableImagesAndCountsThem) {
  TempDir dir;
  const fs::path tree = copy_tree(dir);
  const std::string bytes = testutil::read_text(kTree / "train/cat/a_rgb.jpg");
  testutil::write_bytes(tree / "train/cat/a_rgb.jpg", bytes.substr(0, bytes.size() / 2));
  pipeline::ExtractOptions options;
  options.dataset = "folder:" + tree.string();
  options.weights = "random:0";
  options.image_size = 64;
  options.compute.device = "cpu";
  options.out = dir / "out" / "cache.h5";
  // Without --skip-bad: an error naming the file, and nothing that looks complete.
  const std::string message = error_of([&] { pipeline::run_extract(options); });
  EXPECT_NE(message.find("a_rgb.jpg"), std::string::npos) << message;
  EXPECT_NE(message.find("--skip-bad"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(options.out));
  EXPECT_FALSE(fs::exists(dir / "out" / "cache.images.h5"));

  options.skip_bad = true;
  const pipeline::ExtractSummary summary = pipeline::run_extract(options);
  EXPECT_EQ(summary.skipped, 1);
  const auto all = pipeline::open_dataset({options.dataset, "", "", ""});
  const pipeline::FeatureReader cache(options.out);
  EXPECT_EQ(cache.rows("train"), all->size(pipeline::Split::Train) - 1);
  EXPECT_EQ(cache.rows("test"), all->size(pipeline::Split::Test));
  EXPECT_EQ(cache.provenance()["skipped_images"], 1);
  EXPECT_NE(cache.provenance()["skipped"][0].get<std::string>().find("a_rgb.jpg"), std::string::npos);
  EXPECT_EQ(cache.provenance()["settings"]["dataset"]["skip_bad"], true);
  // The image store beside the cache holds the decoded images, the left-out one marked.
  const pipeline::FeatureReader store(dir / "out" / "cache.images.h5");
  EXPECT_EQ(store.dtype(), pipeline::FeatureDtype::UInt8);
  EXPECT_EQ(store.rows("train"), all->size(pipeline::Split::Train));
  EXPECT_EQ(store.labels("train").eq(pipeline::kStoreSkippedLabel).sum().item<int64_t>(), 1);
  // The inputs are untouched: the truncated file is still there, still truncated.
  EXPECT_EQ(fs::file_size(tree / "train/cat/a_rgb.jpg"), bytes.size() / 2);
}

TEST(ImageFolder, TheImageStoreIsReusedAndItsRowsEqualDecoding) {
  TempDir dir;
  const fs::path tree = copy_tree(dir);
  pipeline::ExtractOptions options;
  options.dataset = "folder:" + tree.string();
  options.weights = "random:0";
  options.image_size = 64;
  options.compute.device = "cpu";
  options.out = dir / "a.h5";
  options.image_store = dir / "store.h5";
  pipeline::run_extract(options);
  const auto written = fs::last_write_time(dir / "store.h5");
  options.out = dir / "b.h5";  // another cache of the same images: the store is read, not rebuilt
  options.image_size = 96;
  pipeline::run_extract(options);
  EXPECT_EQ(fs::last_write_time(dir / "store.h5"), written);
  const auto dataset = pipeline::open_dataset({options.dataset, "", "", ""});
  const pipeline::DataRecords records = pipeline::open_records(*dataset, {-1, -1, dir / "store.h5", dataset->digest()});
  const auto test = dataset->load(pipeline::Split::Test, -1);
  const std::vector<int64_t> backwards = {2, 0, 1};
  ASSERT_EQ(records.test.size(), 3);
  const auto rows = records.test.rows(backwards);
  EXPECT_TRUE(torch::equal(rows.images, test.images.index_select(0, torch::tensor(backwards))));
  EXPECT_TRUE(torch::equal(rows.labels, test.labels.index_select(0, torch::tensor(backwards))));
  // The store never goes among the user's images.
  options.image_store = tree / "store.h5";
  EXPECT_THROW(pipeline::run_extract(options), pipeline::UsageError);
  // Nor over the cache's own partial file.
  options.image_store = options.out.string() + ".partial";
  EXPECT_THROW(pipeline::run_extract(options), pipeline::UsageError);
  EXPECT_FALSE(fs::exists(tree / "store.h5"));
  // An image store is not a feature cache.
  pipeline::HeadOptions head;
  head.features = dir / "store.h5";
  head.out = dir / "head";
  const std::string message = error_of([&] { pipeline::run_head(head); });
  EXPECT_NE(message.find("image store"), std::string::npos) << message;
}
