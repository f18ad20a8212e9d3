// CIFAR-100 as a dataset (registered as "cifar100"): the official binary files
// (pipeline/cifar100.h) read with fine (100 classes) or coarse (20) labels, class
// names from the folder's names files, the official archive's layout for
// transfer-fetch and synthetic data in the same layout for transfer-synth.

#include "pipeline/cifar100.h"

#include "pipeline/datasets/dataset.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/synth.h"

namespace fs = std::filesystem;

namespace pipeline {
namespace {

class Cifar100 : public Dataset {
 public:
  Cifar100(fs::path dir, Cifar100Labels labels)
      : dir_(std::move(dir)), labels_(labels), names_(cifar100_class_names(dir_, labels)) {}
  std::string name() const override { return "cifar100"; }
  std::string labels() const override { return to_string(labels_); }
  std::string title() const override { return fmt::format("CIFAR-100 ({} labels)", to_string(labels_)); }
  std::vector<std::string> class_names() const override { return names_; }
  fs::path folder() const override { return dir_; }
  std::vector<fs::path> files() const override {
    return {cifar100_file(dir_, Split::Train), cifar100_file(dir_, Split::Test), cifar100_names_file(dir_, labels_)};
  }
  int64_t size(Split split) const override {
    const fs::path file = cifar100_file(dir_, split);
    const CifarFormat format = cifar100_format(labels_, split);
    const std::string problem = cifar_file_problem(file, format);
    if (!problem.empty()) fail("CIFAR-100 file {} {}; run transfer-fetch --dataset cifar100", file.string(), problem);
    return static_cast<int64_t>(fs::file_size(file)) / format.record_bytes();
  }
  DatasetImages read(Split split, int64_t first, int64_t count) const override {
    return slice_records(decode_cifar_files({cifar100_file(dir_, split)}, cifar100_format(labels_, split), first + count),
                         first);
  }
  int64_t image_side() const override { return kCifarSide; }
  std::string digest() const override {
    std::string digests;
    for (Split split : {Split::Train, Split::Test}) {
      const fs::path file = cifar100_file(dir_, split);
      // Checked before hashing: a link to /dev/zero or a huge file is refused, not read.
      const std::string problem = cifar_file_problem(file, cifar100_format(labels_, split));
      if (!problem.empty()) fail("CIFAR-100 file {} {}; run transfer-fetch --dataset cifar100", file.string(), problem);
      digests += file_digest(file, DigestAlgorithm::Sha256);
    }
    return bytes_digest(digests, DigestAlgorithm::Sha256);
  }

 private:
  fs::path dir_;
  Cifar100Labels labels_;
  std::vector<std::string> names_;
};

class Cifar100Kind : public DatasetKind {
 public:
  std::string name() const override { return "cifar100"; }
  std::string title() const override { return "CIFAR-100"; }
  std::string folder_name() const override { return kCifar100DirName; }
  std::optional<DatasetArchive> archive() const override {
    DatasetArchive a{kCifar100Url, kCifar100Md5, {}, {}};
    a.entries["train.bin"] = static_cast<uint64_t>(kCifar100TrainRecords * (2 + kCifarImageBytes));
    a.entries["test.bin"] = static_cast<uint64_t>(kCifar100TestRecords * (2 + kCifarImageBytes));
    a.entries["fine_label_names.txt"] = 1 << 16;
    a.entries["coarse_label_names.txt"] = 1 << 16;
    return a;
  }
  std::string folder_problem(const fs::path& dir, const std::string& shown_as) const override {
    return cifar100_problem(dir, shown_as);
  }
  std::vector<std::string> label_choices() const override { return {"fine", "coarse"}; }
  std::unique_ptr<Dataset> open(const fs::path& dir, const DatasetOptions& options) const override {
    check_cifar_transform(options.transform, "CIFAR-100");
    check_cifar_reading(options, "CIFAR-100");
    return std::make_unique<Cifar100>(dir, parse_cifar100_labels(options.labels.empty() ? "fine" : options.labels));
  }
  void write_synthetic(const fs::path& dir, int64_t train, int64_t test, uint64_t seed) const override {
    write_synthetic_cifar100({dir, train, test, seed});
  }
};

}  // namespace

const DatasetKind& cifar100_kind() {
  static const Cifar100Kind kind;
  return kind;
}

}  // namespace pipeline
