#pragma once
// Approach 1, step 1 (transfer-extract): run a frozen backbone (pipeline/models/) once
// over every image of a dataset (datasets/dataset.h) and keep the chosen layers' activations in the HDF5 feature cache
// (pipeline/features.h), so that heads can then be trained on them in seconds.
//
// Eval mode, no autograd, CUDA when present. On a CPU the model runs in channels-last
// memory format (oneDNN otherwise reorders weights and activations on every call) with
// preprocessing between forward calls (a producer thread beside LibTorch's would take
// cores the model needs), a group of batches at a time (about 160 MiB of model input,
// or one batch where a batch is larger); on a GPU the next batch is preprocessed into
// pinned memory while the GPU works on this one. An image folder is read from its image store
// (image_store.h), decoded once.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "pipeline/device.h"

namespace pipeline {

struct ExtractOptions {
  std::string dataset = "cifar10";                           // a registered dataset (datasets/dataset.h)
  std::filesystem::path data;                                // its folder ("": data/<its folder name>)
  std::string labels;                                        // CIFAR-100: fine (default) or coarse
  std::string transform;                                     // image folder: resize256-crop224 (default) or resize
  bool skip_bad = false;                                     // image folder: leave out images that cannot be decoded
  double test_fraction = -1;                                 // image folder of one tree: its test share (-1: 0.2)
  std::filesystem::path image_store;                         // image folder: decoded store ("": "<out>.images.h5" beside the cache)
  std::string backbone = "alexnet";                          // a registered backbone (models/backbone.h)
  std::string weights;                                       // file or random:SEED ("": data/<its torchvision file>)
  std::filesystem::path out;                                 // the cache file (.h5)
  bool force = false;                                        // rebuild even if up to date
  std::string taps;                                          // comma list of the backbone's taps ("": its default tap)
  int64_t image_size = 224;                                  // resize 32 -> this (>= the backbone's minimum)
  std::string normalize = "imagenet";                        // imagenet | half
  int64_t batch_size = 128;
  ComputeOptions compute;                                    // device, precision, threads
  int64_t limit_train = -1;                                  // first N training images (-1: all)
  int64_t limit_test = -1;                                   // first M test images (-1: all)
  std::string dtype = "float32";                             // storage: float32 | float16
  int64_t stop_after_batches = 0;                            // > 0: stop after N batches, as if killed (tests)
};

struct ExtractSummary {
  bool up_to_date = false;   // a complete cache with these settings was already there
  bool resumed = false;      // continued an interrupted extraction
  bool stopped = false;      // stopped early by stop_after_batches (the partial file stays)
  int64_t images = 0;        // images run through the model in this call
  double seconds = 0;        // wall-clock of the extraction (model + preprocessing + writing)
  double images_per_second = 0;
  // Where `seconds` went: reading and preprocessing the images (on a GPU, waiting for
  // the next batch), the model (forward pass and outputs to the CPU), the cache writes.
  double preprocess_seconds = 0, model_seconds = 0, write_seconds = 0;
  // Every batch of this call in order (train, then test), seconds: the three above for
  // that batch (a group's preprocessing falls on its first batch).
  std::vector<double> batch_seconds;
  int64_t file_bytes = 0;
  std::string device;        // Compute::describe()
  int64_t skipped = 0;       // images left out as unreadable (--skip-bad)
};

// Builds or resumes the cache; its settings record the backbone, so a cache of another
// backbone is never reused. Throws UsageError for bad settings (unknown backbone, image
// size below its minimum, unknown tap/dtype/precision, fp16 on a CPU) and Error for run-time failures
// (missing data or weights, I/O).
ExtractSummary run_extract(const ExtractOptions& options);

}  // namespace pipeline
