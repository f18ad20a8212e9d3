// A folder of the user's own images as a dataset ("folder:PATH"), with torchvision
// ImageFolder's conventions: PATH/train/<class>/... and PATH/test/<class>/... (or one
// tree PATH/<class>/..., each class split into train and test by a seeded draw of
// --test-fraction, 0.2 by default, recorded in the description), classes sorted by
// name, files found recursively (sorted as ImageFolder walks them), and only
// ImageFolder's extensions (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp, any case;
// others are ignored, as there). JPEG and PNG are decoded (pipeline/image_decode.h);
// an image of another of those types is an error naming it. By default each image goes
// through torchvision's standard evaluation transform, Resize(256) then CenterCrop(224)
// (pipeline/preprocess.h), so records are [3,224,224]; with --transform resize the
// images are kept as they are (all square, of one size) and preprocessing does
// Resize((S,S)) as for CIFAR. Decoding runs TBB-parallel. With --skip-bad an image that
// cannot be decoded is left out (label -1, named in `skipped`) instead of an error.

#include <tbb/parallel_for.h>
#include <torch/types.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "pipeline/datasets/dataset.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/files.h"
#include "pipeline/image_decode.h"
#include "pipeline/synth.h"
#include "pipeline/preprocess.h"
#include "pipeline/random.h"

namespace fs = std::filesystem;

namespace pipeline {
namespace {

constexpr int64_t kResizeShorter = 256, kCrop = 224;
constexpr const char* kCropTransform = "resize256-crop224";
constexpr double kDefaultTestFraction = 0.2;
constexpr uint64_t kSplitSeed = 0;
constexpr const char* kExtensions[] = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"};

bool is_image_name(const fs::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::find(std::begin(kExtensions), std::end(kExtensions), ext) != std::end(kExtensions);
}

struct Sample {
  fs::path file;
  int64_t label;
};

// ImageFolder's make_dataset: for each class in name order, os.walk (links followed)
// sorted by folder path, each folder's file names sorted.
std::vector<Sample> scan_split(const fs::path& dir, const std::vector<std::string>& classes) {
  std::vector<Sample> samples;
  for (size_t label = 0; label < classes.size(); ++label) {
    std::vector<std::pair<std::string, std::vector<std::string>>> walk;
    std::vector<fs::path> pending = {dir / classes[label]};
    // Links are followed, as os.walk(followlinks=True) does, but each real folder is
    // walked once: a link to a folder above would otherwise be walked forever.
    std::set<fs::path> walked;
    while (!pending.empty()) {
      const fs::path folder = pending.back();
      pending.pop_back();
      std::error_code real_error;
      const fs::path real = fs::canonical(folder, real_error);
      if (real_error || !walked.insert(real).second) continue;
      std::vector<std::string> names;
      for (const auto& entry : fs::directory_iterator(folder)) {
        std::error_code ec;
        if (entry.is_directory(ec)) {
          pending.push_back(entry.path());
        } else if (is_image_name(entry.path())) {
          names.push_back(entry.path().filename().string());
        }
      }
      std::sort(names.begin(), names.end());
      walk.emplace_back(folder.string(), std::move(names));
    }
    std::sort(walk.begin(), walk.end());
    const size_t before = samples.size();
    for (const auto& [folder, names] : walk) {
      for (const std::string& name : names) samples.push_back({fs::path(folder) / name, static_cast<int64_t>(label)});
    }
    if (samples.size() == before) {
      fail("image folder {}: class '{}' has no image files ({}) -- remove the empty folder or add images",
           dir.string(), classes[label], "jpg, jpeg, png, ...");
    }
  }
  return samples;
}

std::vector<std::string> class_folders(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("image folder: {} is not a folder", dir.string());
  std::vector<std::string> classes;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::error_code e;
    if (entry.is_directory(e)) classes.push_back(entry.path().filename().string());
  }
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) fail("image folder {} has no class folders (expected {}/<class>/<images>)", dir.string(), dir.string());
  return classes;
}

// Splits each class's samples into train and test by a seeded draw: round(fraction *
// n) of a class's n images (at least one, never all) go to test; each split keeps the
// walk's order.
void split_by_fraction(const fs::path& root, const std::vector<std::string>& classes, const std::vector<Sample>& all,
                       double fraction, uint64_t seed, std::vector<Sample>& train, std::vector<Sample>& test) {
  std::vector<std::vector<size_t>> by_class(classes.size());
  for (size_t i = 0; i < all.size(); ++i) by_class[static_cast<size_t>(all[i].label)].push_back(i);
  std::vector<bool> to_test(all.size(), false);
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<size_t> members = by_class[c];
    if (members.size() < 2) {
      fail("image folder {}: class '{}' has {} image; a class needs at least 2 to be split into train and test "
           "(or use {}/train/<class>/ and {}/test/<class>/)",
           root.string(), classes[c], members.size(), root.string(), root.string());
    }
    const auto n = static_cast<int64_t>(members.size());
    const int64_t k = std::clamp<int64_t>(std::llround(fraction * static_cast<double>(n)), 1, n - 1);
    SplitMix64 rng(seed ^ (0x9E3779B97F4A7C15ull * (c + 1)));
    seeded_shuffle(members, rng);
    for (int64_t i = 0; i < k; ++i) to_test[members[static_cast<size_t>(i)]] = true;
  }
  for (size_t i = 0; i < all.size(); ++i) (to_test[i] ? test : train).push_back(all[i]);
}

class ImageFolder : public Dataset {
 public:
  ImageFolder(fs::path root, std::string transform, bool skip_bad, double test_fraction)
      : root_(std::move(root)), transform_(std::move(transform)), skip_bad_(skip_bad) {
    std::error_code ec;
    if (!fs::is_directory(root_, ec)) fail("image folder: {} is not a folder", root_.string());
    const bool has_train = fs::is_directory(root_ / "train", ec), has_test = fs::is_directory(root_ / "test", ec);
    if (has_train != has_test) {
      fail("image folder {} has a {}/ folder but no {}/ folder: the layout is {}/train/<class>/... and "
           "{}/test/<class>/..., or one tree {}/<class>/... split by --test-fraction",
           root_.string(), has_train ? "train" : "test", has_train ? "test" : "train", root_.string(), root_.string(),
           root_.string());
    }
    if (!has_train) {
      // One tree, ROOT/<class>/...: split into train and test by a seeded fraction.
      test_fraction_ = test_fraction == -1 ? kDefaultTestFraction : test_fraction;
      if (!(test_fraction_ > 0 && test_fraction_ < 1)) {
        usage_fail("--test-fraction must be in (0, 1), got {}", test_fraction_);
      }
      classes_ = class_folders(root_);
      check_class_count();
      split_by_fraction(root_, classes_, scan_split(root_, classes_), test_fraction_, kSplitSeed, train_, test_);
      set_side();
      return;
    }
    if (test_fraction != -1) {
      usage_fail("--test-fraction {}: image folder {} has its own train/ and test/ folders", test_fraction,
                 root_.string());
    }
    classes_ = class_folders(root_ / "train");
    const std::vector<std::string> test_classes = class_folders(root_ / "test");
    if (test_classes != classes_) {
      for (const std::string& c : classes_) {
        if (std::find(test_classes.begin(), test_classes.end(), c) == test_classes.end()) {
          fail("image folder {}: class '{}' is in train/ but not in test/ (both need the same class folders)",
               root_.string(), c);
        }
      }
      for (const std::string& c : test_classes) {
        if (std::find(classes_.begin(), classes_.end(), c) == classes_.end()) {
          fail("image folder {}: class '{}' is in test/ but not in train/", root_.string(), c);
        }
      }
    }
    check_class_count();
    train_ = scan_split(root_ / "train", classes_);
    test_ = scan_split(root_ / "test", classes_);
    set_side();
  }

  std::string name() const override { return "folder:" + root_.string(); }
  std::string title() const override { return fmt::format("image folder {}", root_.string()); }
  std::string transform() const override { return transform_; }
  std::vector<std::string> class_names() const override { return classes_; }
  fs::path folder() const override { return root_; }
  std::vector<fs::path> files() const override {
    std::vector<fs::path> out;
    for (const auto* split : {&train_, &test_}) {
      for (const Sample& s : *split) out.push_back(s.file);
    }
    return out;
  }
  const std::vector<Sample>& samples(Split split) const { return split == Split::Train ? train_ : test_; }

  int64_t size(Split split) const override { return static_cast<int64_t>(samples(split).size()); }
  bool decodes_files() const override { return true; }
  int64_t image_side() const override { return side_; }
  nlohmann::json reading() const override {
    nlohmann::json j = {{"skip_bad", skip_bad_}};
    if (test_fraction_ > 0) {
      j["split"] = {{"kind", "seeded"}, {"test_fraction", test_fraction_}, {"seed", kSplitSeed}};
    } else {
      j["split"] = {{"kind", "folders"}};
    }
    return j;
  }

  DatasetImages read(Split split, int64_t first, int64_t count) const override {
    const std::vector<Sample>& all = samples(split);
    const int64_t total = static_cast<int64_t>(all.size());
    first = std::clamp<int64_t>(first, 0, total);
    const int64_t n = std::clamp<int64_t>(count, 0, total - first);
    const bool crop = transform_ == kCropTransform;
    const int64_t side = side_;
    DatasetImages out{torch::zeros({n, 3, side, side}, torch::kUInt8), torch::empty({n}, torch::kInt64)};
    uint8_t* images = out.images.data_ptr<uint8_t>();
    int64_t* labels = out.labels.data_ptr<int64_t>();
    const int64_t image_bytes = 3 * side * side;
    std::vector<std::string> errors(static_cast<size_t>(n));
    tbb::parallel_for(int64_t{0}, n, [&](int64_t i) {
      const Sample& sample = all[static_cast<size_t>(first + i)];
      labels[i] = sample.label;
      try {
        decode_into(sample.file, crop, side, train_[0].file, images + i * image_bytes);
      } catch (const Error& e) {
        errors[static_cast<size_t>(i)] = e.what();
      }
    });
    for (int64_t i = 0; i < n; ++i) {
      const std::string& error = errors[static_cast<size_t>(i)];
      if (error.empty()) continue;
      // Without --skip-bad the first failing file in order is the error.
      if (!skip_bad_) {
        fail("{} (image folder {}; --skip-bad leaves out images that cannot be read)", error, root_.string());
      }
      labels[i] = -1;
      out.skipped.push_back(error);
    }
    return out;
  }

  std::string digest() const override {
    // Each file's path (relative to the root) and SHA-256, in order: renaming a class
    // or changing one image changes it.
    std::string all;
    for (const fs::path& file : files()) {
      all += fs::relative(file, root_).string() + '\0' + file_digest(file, DigestAlgorithm::Sha256) + '\n';
    }
    return bytes_digest(all, DigestAlgorithm::Sha256);
  }

 private:
  void check_class_count() const {
    if (classes_.size() > 254) fail("image folder {} has {} classes; at most 254 are supported", root_.string(), classes_.size());
  }

  // Decodes one image into dst ([3, side, side] uint8): Resize(256) + CenterCrop(224),
  // or (--transform resize) as it is, which must be side x side like `first`.
  static void decode_into(const fs::path& file, bool crop, int64_t side, const fs::path& first, uint8_t* dst) {
    const RgbImage image = decode_image(file);
    if (crop) {
      const at::Tensor c = resize_and_center_crop(image.pixels.data(), image.width, image.height, kResizeShorter, kCrop);
      std::copy(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel(), dst);
      return;
    }
    if (image.width != side || image.height != side) {
      fail("image {} is {}x{}, but --transform resize needs every image {}x{} (as the first, {}); use the "
           "default transform (Resize(256) + CenterCrop(224)) for images of several sizes",
           file.string(), image.width, image.height, side, side, first.string());
    }
    for (int64_t p = 0; p < side * side; ++p) {  // HWC -> CHW
      for (int64_t c = 0; c < 3; ++c) dst[c * side * side + p] = image.pixels[static_cast<size_t>(p * 3 + c)];
    }
  }

  // Without the crop every image keeps its size, which the first training image sets
  // for both splits (decoded once, here).
  void set_side() { side_ = transform_ == kCropTransform ? kCrop : square_side(train_[0].file); }

  static int64_t square_side(const fs::path& file) {
    const RgbImage first = decode_image(file);
    if (first.width != first.height) {
      fail("image {} is {}x{}: --transform resize needs square images of one size", file.string(), first.width,
           first.height);
    }
    return first.width;
  }

  fs::path root_;
  std::string transform_;
  bool skip_bad_ = false;
  double test_fraction_ = 0;  // > 0: one tree split by it (kSplitSeed)
  int64_t side_ = kCrop;
  std::vector<std::string> classes_;
  std::vector<Sample> train_, test_;
};

class FolderKind : public DatasetKind {
 public:
  std::string name() const override { return "folder"; }
  std::string title() const override { return "image folder"; }
  std::string folder_name() const override { return ""; }
  std::optional<DatasetArchive> archive() const override { return std::nullopt; }  // yours: nothing to fetch
  std::string folder_problem(const fs::path&, const std::string&) const override { return ""; }
  std::unique_ptr<Dataset> open(const fs::path& dir, const DatasetOptions& options) const override {
    if (!options.labels.empty()) usage_fail("--labels {}: an image folder's labels are its class folders", options.labels);
    const std::string& transform = options.transform;
    if (!transform.empty() && transform != kCropTransform && transform != "resize") {
      usage_fail("unknown --transform '{}': use {} (the default) or resize", transform, kCropTransform);
    }
    return std::make_unique<ImageFolder>(dir, transform.empty() ? kCropTransform : transform, options.skip_bad,
                                         options.test_fraction);
  }
  // Synthetic CIFAR-10 images (synth.h) as 32x32 PNGs: DIR/train/<class>/NNNNN.png
  // and DIR/test/<class>/NNNNN.png, NNNNN the record's index in its split.
  void write_synthetic(const fs::path& dir, int64_t train, int64_t test, uint64_t seed) const override {
    const fs::path target = output_path(dir, "--out");
    replace_folder_atomically(
        target,
        [&](const fs::path& temporary) {
          // The records are made inside the folder being built, and removed from it.
          const fs::path records = temporary / ".records";
          write_synthetic_cifar({records, train, test, seed});
          const auto cifar = dataset_kind("cifar10").open(records, DatasetOptions{});
          const std::vector<std::string> names = cifar->class_names();
          for (Split split : {Split::Train, Split::Test}) {
            const DatasetImages data = cifar->load(split, -1);
            const fs::path part = temporary / (split == Split::Train ? "train" : "test");
            for (const std::string& name : names) fs::create_directories(part / name);
            for (int64_t i = 0; i < data.size(); ++i) {
              RgbImage image{kCifarSide, kCifarSide, std::vector<uint8_t>(kCifarImageBytes)};
              const uint8_t* chw = data.images[i].data_ptr<uint8_t>();
              for (int64_t p = 0; p < kCifarSide * kCifarSide; ++p) {
                for (int64_t c = 0; c < 3; ++c) image.pixels[static_cast<size_t>(p * 3 + c)] = chw[c * kCifarSide * kCifarSide + p];
              }
              write_png(image, part / names[static_cast<size_t>(data.labels[i].item<int64_t>())] / fmt::format("{:05d}.png", i));
            }
          }
          fs::remove_all(records);
        },
        [](const fs::path& existing) { return only_entries(existing, {"train", "test"}); });
  }
};

}  // namespace

const DatasetKind& folder_kind() {
  static const FolderKind kind;
  return kind;
}

}  // namespace pipeline
