// CIFAR-10 as a dataset (registered as "cifar10"): the official binary batches
// (pipeline/cifar10.h), the ten class names, the official archive's layout for
// transfer-fetch and synthetic data in the same layout for transfer-synth.

#include "pipeline/cifar10.h"

#include "pipeline/datasets/dataset.h"
#include "pipeline/error.h"
#include "pipeline/fetch.h"
#include "pipeline/synth.h"

namespace fs = std::filesystem;

namespace pipeline {
namespace {

class Cifar10 : public Dataset {
 public:
  explicit Cifar10(fs::path dir) : dir_(std::move(dir)) {}
  std::string name() const override { return "cifar10"; }
  std::string title() const override { return "CIFAR-10"; }
  std::vector<std::string> class_names() const override {
    return std::vector<std::string>(kCifarClassNames.begin(), kCifarClassNames.end());
  }
  fs::path folder() const override { return dir_; }
  std::vector<fs::path> files() const override { return cifar_all_files(dir_); }
  int64_t size(Split split) const override {
    int64_t records = 0;
    for (const fs::path& file : cifar_files(dir_, split)) {
      const std::string problem = cifar_file_problem(file);
      if (!problem.empty()) fail("CIFAR-10 batch file {} {}; run transfer-fetch", file.string(), problem);
      records += static_cast<int64_t>(fs::file_size(file)) / kCifarRecordBytes;
    }
    return records;
  }
  DatasetImages read(Split split, int64_t first, int64_t count) const override {
    return slice_records(load_cifar(dir_, split, first + count), first);
  }
  int64_t image_side() const override { return kCifarSide; }
  std::string digest() const override { return cifar_digest(dir_); }

 private:
  fs::path dir_;
};

class Cifar10Kind : public DatasetKind {
 public:
  std::string name() const override { return "cifar10"; }
  std::string title() const override { return "CIFAR-10"; }
  std::string folder_name() const override { return kCifar10DirName; }
  std::optional<DatasetArchive> archive() const override {
    // The official archive holds exactly these: batch files of 10,000 records and two
    // small text files, so nothing else, and nothing larger, is unpacked.
    DatasetArchive a{kCifar10Url, kCifar10Md5, {}, cifar10_official_md5s()};
    for (const auto& [name, md5] : cifar10_official_md5s()) {
      a.entries[name] = static_cast<uint64_t>(kCifarRecordsPerFile * kCifarRecordBytes);
    }
    for (const char* text : {"batches.meta.txt", "readme.html"}) a.entries[text] = 1 << 20;
    return a;
  }
  std::string folder_problem(const fs::path& dir, const std::string& shown_as) const override {
    for (const fs::path& file : cifar_all_files(dir)) {
      const std::string problem = cifar_file_problem(file);
      if (!problem.empty()) return fmt::format("{}/{} {}", shown_as, file.filename().string(), problem);
    }
    return "";
  }
  std::unique_ptr<Dataset> open(const fs::path& dir, const DatasetOptions& options) const override {
    check_cifar_transform(options.transform, "CIFAR-10");
    check_cifar_reading(options, "CIFAR-10");
    if (!options.labels.empty()) {
      usage_fail("--labels {}: CIFAR-10 has one set of labels (--labels is for cifar100)", options.labels);
    }
    return std::make_unique<Cifar10>(dir);
  }
  void write_synthetic(const fs::path& dir, int64_t train, int64_t test, uint64_t seed) const override {
    write_synthetic_cifar({dir, train, test, seed});
  }
};

}  // namespace

nlohmann::json unrecorded_dataset() { return Cifar10("").describe(); }

const DatasetKind& cifar10_kind() {
  static const Cifar10Kind kind;
  return kind;
}

}  // namespace pipeline
