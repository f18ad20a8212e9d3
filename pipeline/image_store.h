#pragma once
// The image store: an image folder's records decoded once, so that fine-tuning epochs
// (and every later run on the same folder) do not pay for JPEG decoding again, and a
// split never has to fit in memory decoded.
//
// File: a feature cache (pipeline/features.h, same HDF5 schema, same resumable
// <file>.partial writing, same checks on open) whose one tap is
//   /train/pixels, /test/pixels   uint8 [N, 3*S*S]: each row a [3,S,S] image, RGB planes
//                                 (S = 224 after Resize(256) + CenterCrop(224), else
//                                 the images' own side)
//   /train/labels, /test/labels   uint8 [N]: the class, or 255 for a record that could
//                                 not be decoded and was left out (--skip-bad)
// with provenance "settings" = {"kind": "image-store", "dataset" (describe()),
// "dataset_sha256", "side", "limit_train", "limit_test"} and, when complete,
// "skipped": ["FILE: why", ...] (a resumed build lists those it met itself; the labels
// count them all). Rows are the dataset's records in source order (the
// first limit_train / limit_test of each split; -1: all).
//
// Errors: pipeline::Error naming the file or the image (see features.h and the
// dataset's read()); a store of other settings is rebuilt, never read.

#include <cstdint>
#include <filesystem>
#include <string>

namespace pipeline {

class Dataset;
class FeatureReader;

inline constexpr char kPixelsTap[] = "pixels";
inline constexpr int64_t kStoreSkippedLabel = 255;

struct ImageStoreOptions {
  std::filesystem::path path;  // the store file (absolute)
  std::string dataset_sha256;  // dataset.digest(), computed once by the caller
  int64_t limit_train = -1;    // first N records of each split (-1: all)
  int64_t limit_test = -1;
  int64_t batch = 256;         // records decoded (TBB-parallel) and written at a time
};

// Opens the complete store at options.path when its settings match, else decodes the
// records into it (resuming an interrupted build of the same settings), with progress
// on stderr, and opens it. The store's folder must exist or be creatable.
FeatureReader open_image_store(const Dataset& dataset, const ImageStoreOptions& options);

}  // namespace pipeline
