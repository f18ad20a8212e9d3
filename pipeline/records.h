#pragma once
// What transfer-extract and transfer-finetune read: each split's records (pixels and
// label) by row. CIFAR splits are held in memory (150 MB at most); an image folder's are
// read from its image store (pipeline/image_store.h), decoded once. Records a dataset
// left out (--skip-bad) are not rows: rows are the kept records in source order.
//
// Thread safety: reads may run on one other thread at a time (a GPU run's prefetcher);
// HDF5 (Debian's is built thread-safe) serializes them.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "pipeline/datasets/dataset.h"

namespace pipeline {

class FeatureReader;

class SplitRecords {
 public:
  SplitRecords() = default;
  explicit SplitRecords(DatasetImages memory);
  // Rows of `split` ("train" | "test") of an image store whose label is not the
  // left-out mark.
  SplitRecords(std::shared_ptr<const FeatureReader> store, const std::string& split);

  int64_t size() const { return labels_.defined() ? labels_.size(0) : 0; }
  int64_t side() const { return side_; }          // images are [3, side, side]
  const at::Tensor& labels() const { return labels_; }  // [size] int64
  // The given rows (each in [0, size), distinct): images [n,3,side,side] uint8 and labels.
  DatasetImages rows(const std::vector<int64_t>& rows) const;

 private:
  DatasetImages memory_;
  std::shared_ptr<const FeatureReader> store_;
  std::string split_;
  std::vector<int64_t> store_rows_;  // row -> store row
  at::Tensor labels_;
  int64_t side_ = 0;
};

struct DataRecords {
  SplitRecords train, test;
  std::vector<std::string> skipped;  // "FILE: why" of the records left out that were met (train, then test)
  int64_t skipped_count = 0;         // every record left out (a resumed store's earlier ones included)
};

struct RecordsOptions {
  int64_t limit_train = -1;          // the first N records of each split (-1: all)
  int64_t limit_test = -1;
  std::filesystem::path store;       // the image store, for datasets that decode files (absolute)
  std::string dataset_sha256;        // dataset.digest(), computed once by the caller
};

// The records of both splits: from the image store at options.store (made, resumed or
// reused: a complete store of the same settings, digest included, is valid whatever a
// stage's --force says) when dataset.decodes_files(), else loaded into memory. Throws pipeline::Error
// naming the file for damaged data, and when a split has no records left.
DataRecords open_records(const Dataset& dataset, const RecordsOptions& options);

// The image store a stage uses for `dataset`: empty unless dataset.decodes_files();
// else `given` ("": default_image_store(out, out_is_folder)) made absolute, after
// refusing (pipeline::UsageError naming --image-store) a path over one of `inputs` or
// inside the dataset's folder, and checking that it can be written.
std::filesystem::path image_store_path(const Dataset& dataset, const std::filesystem::path& given,
                                       const std::filesystem::path& out, bool out_is_folder,
                                       const std::vector<std::filesystem::path>& inputs);

// Rows first, first + 1, ..., first + count - 1.
std::vector<int64_t> row_range(int64_t first, int64_t count);

// The image store's default path for a stage writing `out`: beside it, "<out>.images.h5"
// with a ".h5" ending replaced ("cache/fc7.h5" -> "cache/fc7.images.h5"), or inside a
// run folder ("runs/x" -> "runs/x/images.h5" when `out_is_folder`).
std::filesystem::path default_image_store(const std::filesystem::path& out, bool out_is_folder);

}  // namespace pipeline
