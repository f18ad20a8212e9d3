// A folder of the user's own images as a dataset ("folder:PATH"), with torchvision
// ImageFolder's conventions: PATH/train/<class>/... and PATH/test/<class>/..., classes
// sorted by name, files found recursively (sorted as ImageFolder walks them), and only
// ImageFolder's extensions (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp, any case;
// others are ignored, as there). JPEG and PNG are decoded (pipeline/image_decode.h);
// an image of another of those types is an error naming it. By default each image goes
// through torchvision's standard evaluation transform, Resize(256) then CenterCrop(224)
// (pipeline/preprocess.h), so records are [3,224,224]; with --transform resize the
// images are kept as they are (all square, of one size) and preprocessing does
// Resize((S,S)) as for CIFAR. Decoding runs TBB-parallel.

#include <tbb/parallel_for.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <mutex>
#include <set>

#include "pipeline/datasets/dataset.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/files.h"
#include "pipeline/image_decode.h"
#include "pipeline/synth.h"
#include "pipeline/preprocess.h"

namespace fs = std::filesystem;

namespace pipeline {
namespace {

constexpr int64_t kResizeShorter = 256, kCrop = 224;
constexpr const char* kCropTransform = "resize256-crop224";
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

class ImageFolder : public Dataset {
 public:
  ImageFolder(fs::path root, std::string transform) : root_(std::move(root)), transform_(std::move(transform)) {
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

  DatasetImages load(Split split, int64_t limit) const override {
    const std::vector<Sample>& samples = split == Split::Train ? train_ : test_;
    const int64_t n = limit < 0 ? static_cast<int64_t>(samples.size()) : std::min<int64_t>(limit, samples.size());
    const bool crop = transform_ == kCropTransform;
    // Without the crop every image keeps its size, which the first one sets.
    int64_t side = kCrop;
    if (!crop && n > 0) side = square_side(samples[0].file);
    DatasetImages out{torch::empty({n, 3, side, side}, torch::kUInt8), torch::empty({n}, torch::kInt64)};
    uint8_t* images = out.images.data_ptr<uint8_t>();
    int64_t* labels = out.labels.data_ptr<int64_t>();
    const int64_t image_bytes = 3 * side * side;
    std::mutex first_error_lock;
    std::string first_error;
    size_t first_index = SIZE_MAX;
    tbb::parallel_for(int64_t{0}, n, [&](int64_t i) {
      const fs::path& file = samples[static_cast<size_t>(i)].file;
      try {
        const RgbImage image = decode_image(file);
        uint8_t* dst = images + i * image_bytes;
        if (crop) {
          const at::Tensor c = resize_and_center_crop(image.pixels.data(), image.width, image.height, kResizeShorter, kCrop);
          std::copy(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel(), dst);
        } else {
          if (image.width != side || image.height != side) {
            fail("image {} is {}x{}, but --transform resize needs every image {}x{} (as the first, {}); use the "
                 "default transform (Resize(256) + CenterCrop(224)) for images of several sizes",
                 file.string(), image.width, image.height, side, side, samples[0].file.string());
          }
          for (int64_t p = 0; p < side * side; ++p) {  // HWC -> CHW
            for (int64_t c = 0; c < 3; ++c) dst[c * side * side + p] = image.pixels[static_cast<size_t>(p * 3 + c)];
          }
        }
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
  std::unique_ptr<Dataset> open(const fs::path& dir, const std::string& labels,
                                const std::string& transform) const override {
    if (!labels.empty()) usage_fail("--labels {}: an image folder's labels are its class folders", labels);
    if (!transform.empty() && transform != kCropTransform && transform != "resize") {
      usage_fail("unknown --transform '{}': use {} (the default) or resize", transform, kCropTransform);
    }
    return std::make_unique<ImageFolder>(dir, transform.empty() ? kCropTransform : transform);
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
          const auto cifar = dataset_kind("cifar10").open(records, "", "");
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
