#pragma once
// The dataset seam: what data is to the stages. transfer-extract and transfer-finetune
// open a dataset by name (--dataset) and read its records; the cache's provenance and
// every run's config record describe() (name, labels, class count and names), from
// which transfer-head, transfer-finetune and transfer-compare take the class count and
// names. No class count is a constant outside the dataset modules.
//
//   cifar10    CIFAR-10, binary version (cifar-10-batches-bin/), 10 classes
//   cifar100   CIFAR-100, binary version (cifar-100-binary/), --labels fine (100
//              classes) or coarse (20 superclasses)
//   folder:PATH  your own images, torchvision ImageFolder's layout PATH/train/<class>/
//              and PATH/test/<class>/ (JPEG, PNG), each Resize(256) + CenterCrop(224)
//
// A new dataset is one module here plus one line in registry.cc: a DatasetKind (what
// it is, where its data lives, how to fetch and check it) that opens a Dataset (the
// data of one folder). Records come in a stable order (the source's), labels in
// [0, classes()). Thread safety: kinds are immutable singletons; a Dataset is
// immutable after open, its methods may run concurrently.

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/cifar10.h"  // Split, CifarImages

namespace pipeline {

// A split's images, [N,3,H,W] uint8 and labels [N] int64 (CifarImages: H = W = 32).
using DatasetImages = CifarImages;

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::string name() const = 0;    // the --dataset value: "cifar100"
  virtual std::string labels() const { return ""; }  // "fine" | "coarse" where the dataset has a choice
  // How records are shaped before preprocessing: "resize" (as they are; preprocessing
  // then does torchvision's Resize((S,S)), CIFAR's transform) or "resize256-crop224"
  // (Resize(256) + CenterCrop(224), an image folder's default).
  virtual std::string transform() const { return "resize"; }
  virtual std::string title() const = 0;   // "CIFAR-100 (fine labels)"
  virtual std::vector<std::string> class_names() const = 0;  // in label order
  int64_t classes() const { return static_cast<int64_t>(class_names().size()); }
  virtual std::filesystem::path folder() const = 0;
  // Every file the records are read from (a stage's --out may not be one of them).
  virtual std::vector<std::filesystem::path> files() const = 0;
  // The records of a split.
  virtual int64_t size(Split split) const = 0;
  // Records [first, first + count) of a split (clipped to its size), in source order.
  // Throws pipeline::Error naming the file (and record) for missing or damaged data,
  // except that a dataset opened with skip_bad (image folders) gives a record it cannot
  // decode label -1 and zero pixels and names it in `skipped`.
  virtual DatasetImages read(Split split, int64_t first, int64_t count) const = 0;
  // A split's first `limit` records (limit < 0: all) that were not skipped.
  DatasetImages load(Split split, int64_t limit) const;
  // True when records are decoded from compressed image files (an image folder): slow
  // to read and large decoded, so the stages keep them in an image store
  // (pipeline/image_store.h) instead of decoding a split into memory.
  virtual bool decodes_files() const { return false; }
  // Records are [3, image_side(), image_side()] (CIFAR: 32; image folders: 224 after the
  // crop, else the side every image shares).
  virtual int64_t image_side() const = 0;
  // SHA-256 identifying the data read (the split files' digests, in order).
  virtual std::string digest() const = 0;

  // How the records were split and read, where the dataset has a choice (image folders:
  // {"split": "folders"} or {"split": "seeded", "test_fraction", "seed"}, "skip_bad");
  // part of describe().
  virtual nlohmann::json reading() const { return nlohmann::json::object(); }
  // {"name", "labels" (when there is a choice), "title", "classes", "class_names",
  // "transform"} and reading()'s keys.
  nlohmann::json describe() const;
};

// How a dataset's official archive is fetched and unpacked (transfer-fetch).
struct DatasetArchive {
  std::string url;                          // the official download
  std::string md5;                          // its published MD5
  std::map<std::string, uint64_t> entries;  // files of its top folder -> most bytes each (only these unpack)
  std::map<std::string, std::string> md5s;  // published MD5s of unpacked files (checked for the official archive)
};

struct DatasetOptions;

class DatasetKind {
 public:
  virtual ~DatasetKind() = default;
  virtual std::string name() const = 0;
  virtual std::string title() const = 0;
  // The folder under the data directory (and the archive's top folder).
  virtual std::string folder_name() const = 0;
  // The official archive, or nothing when the data is the user's own (an image folder):
  // transfer-fetch then fetches only the weights.
  virtual std::optional<DatasetArchive> archive() const = 0;
  // What is wrong with the files in `dir`, "" if nothing; names them as shown_as/NAME.
  virtual std::string folder_problem(const std::filesystem::path& dir, const std::string& shown_as) const = 0;
  // The label choices ({} when there is none; the first is the default).
  virtual std::vector<std::string> label_choices() const { return {}; }
  // Opens the data in `dir` with options' labels, transform, skip_bad and test_fraction
  // ("" and -1 mean the defaults). Throws pipeline::UsageError for an option the dataset
  // does not have, pipeline::Error for unreadable metadata.
  virtual std::unique_ptr<Dataset> open(const std::filesystem::path& dir, const DatasetOptions& options) const = 0;
  // Writes learnable synthetic data in this layout into `dir` (transfer-synth).
  virtual void write_synthetic(const std::filesystem::path& dir, int64_t train, int64_t test, uint64_t seed) const = 0;
};

// The registered kind of that name; pipeline::UsageError naming --dataset and listing
// the names for any other.
const DatasetKind& dataset_kind(const std::string& name);
std::vector<std::string> dataset_names();  // "cifar10", "cifar100", "folder" (as folder:PATH)

struct DatasetOptions {
  std::string name = "cifar10";  // --dataset
  std::filesystem::path data;    // its folder, or a root holding <its folder name>/ ("": "data")
  std::string labels;            // --labels ("" = the dataset's default)
  std::string transform;         // --transform ("" = the dataset's default)
  bool skip_bad = false;         // --skip-bad: image folders leave out images they cannot decode
  double test_fraction = -1;     // --test-fraction: an image folder of one tree (-1: 0.2)
};

// records from row `first` on (CIFAR kinds read a split's first N and keep the last ones).
DatasetImages slice_records(const DatasetImages& records, int64_t first);

// CIFAR kinds: refuse --skip-bad and --test-fraction (UsageError naming them).
void check_cifar_reading(const DatasetOptions& options, const std::string& title);

// For the CIFAR kinds: "" or "resize"; else pipeline::UsageError naming --transform.
void check_cifar_transform(const std::string& transform, const std::string& title);

// describe() of the data that caches and runs from before datasets were recorded were
// made from: CIFAR-10.
nlohmann::json unrecorded_dataset();

// The dataset a cache or run recorded (`value`, its settings' "dataset", describe()'s
// shape): checked ("name" a string, 2..255 "classes", as many "class_names"; "title"
// filled from the name when absent), or unrecorded_dataset() for null. Throws
// pipeline::Error naming `where` otherwise.
nlohmann::json recorded_dataset(const nlohmann::json& value, const std::string& where);

// PATH of a --dataset "folder:PATH" (the user's image folder), "" for a named dataset.
// Throws pipeline::UsageError for "folder:" without a path.
std::filesystem::path image_folder_of(const std::string& dataset);

// dataset_kind(name).open(DIR, labels), DIR being data/<folder name> when that folder
// exists (data a root such as transfer-fetch's --out), else data.
std::unique_ptr<Dataset> open_dataset(const DatasetOptions& options);

}  // namespace pipeline
