// A folder of the user's own images as a dataset ("folder:PATH"), with torchvision
// ImageFolder's conventions: PATH/train/<class>/... and PATH/test/<class>/..., classes
// sorted by name, files found recursively (sorted as ImageFolder walks them), and only
// ImageFolder's extensions (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp, any case;
// others are ignored, as there). JPEG and PNG are decoded (pipeline/image_decode.h);
// an image of another of those types is an error naming it. Each image goes through
// torchvision's standard evaluation transform, Resize(256) then CenterCrop(224)
// (pipeline/preprocess.h), so records are [3,224,224]; decoding runs TBB-parallel.

#include <tbb/parallel_for.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <mutex>

#include "pipeline/datasets/dataset.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/image_decode.h"
#include "pipeline/preprocess.h"

namespace fs = std::filesystem;

namespace pipeline {
namespace {

constexpr int64_t kResizeShorter = 256, kCrop = 224;
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
    while (!pending.empty()) {
      const fs::path folder = pending.back();
      pending.pop_back();
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

class ImageFolder : public Dataset {
 public:
  explicit ImageFolder(fs::path root) : root_(std::move(root)) {
    for (const char* split : {"train", "test"}) {
      std::error_code ec;
      if (!fs::is_directory(root_ / split, ec)) {
        fail("image folder {} has no {}/ folder: the layout is {}/train/<class>/... and {}/test/<class>/...",
             root_.string(), split, root_.string(), root_.string());
      }
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
    if (classes_.size() > 255) fail("image folder {} has {} classes; at most 255 are supported", root_.string(), classes_.size());
    train_ = scan_split(root_ / "train", classes_);
    test_ = scan_split(root_ / "test", classes_);
  }

  std::string name() const override { return "folder:" + root_.string(); }
  std::string title() const override { return fmt::format("image folder {}", root_.string()); }
  std::vector<std::string> class_names() const override { return classes_; }
  fs::path folder() const override { return root_; }
  std::vector<fs::path> files() const override {
    std::vector<fs::path> out;
    for (const auto* split : {&train_, &test_}) {
      for (const Sample& s : *split) out.push_back(s.file);
    }
    return out;
  }

  DatasetImages load(Split split, int64_t limit) const override {
    const std::vector<Sample>& samples = split == Split::Train ? train_ : test_;
    const int64_t n = limit < 0 ? static_cast<int64_t>(samples.size()) : std::min<int64_t>(limit, samples.size());
    DatasetImages out{torch::empty({n, 3, kCrop, kCrop}, torch::kUInt8), torch::empty({n}, torch::kInt64)};
    uint8_t* images = out.images.data_ptr<uint8_t>();
    int64_t* labels = out.labels.data_ptr<int64_t>();
    std::mutex first_error_lock;
    std::string first_error;
    size_t first_index = SIZE_MAX;
    tbb::parallel_for(int64_t{0}, n, [&](int64_t i) {
      try {
        const RgbImage image = decode_image(samples[static_cast<size_t>(i)].file);
        const at::Tensor crop = resize_and_center_crop(image.pixels.data(), image.width, image.height, kResizeShorter, kCrop);
        std::copy(crop.data_ptr<uint8_t>(), crop.data_ptr<uint8_t>() + crop.numel(), images + i * crop.numel());
        labels[i] = samples[static_cast<size_t>(i)].label;
      } catch (const Error& e) {
        // The first failing file in order is reported, whichever thread met it first.
        const std::lock_guard<std::mutex> hold(first_error_lock);
        if (static_cast<size_t>(i) < first_index) {
          first_index = static_cast<size_t>(i);
          first_error = e.what();
        }
      }
    });
    if (!first_error.empty()) fail("{} (image folder {})", first_error, root_.string());
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
  fs::path root_;
  std::vector<std::string> classes_;
  std::vector<Sample> train_, test_;
};

class FolderKind : public DatasetKind {
 public:
  std::string name() const override { return "folder"; }
  std::string title() const override { return "image folder"; }
  std::string folder_name() const override { return ""; }
  DatasetArchive archive() const override {
    usage_fail("an image folder is yours: there is nothing to fetch (use --dataset cifar10 or cifar100 with transfer-fetch)");
  }
  std::string folder_problem(const fs::path&, const std::string&) const override { return ""; }
  std::unique_ptr<Dataset> open(const fs::path& dir, const std::string& labels) const override {
    if (!labels.empty()) usage_fail("--labels {}: an image folder's labels are its class folders", labels);
    return std::make_unique<ImageFolder>(dir);
  }
  void write_synthetic(const fs::path&, int64_t, int64_t, uint64_t) const override {
    usage_fail("transfer-synth writes CIFAR layouts (--dataset cifar10 or cifar100), not image folders");
  }
};

}  // namespace

const DatasetKind& folder_kind() {
  static const FolderKind kind;
  return kind;
}

}  // namespace pipeline
