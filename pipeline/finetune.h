#pragma once
// Approach 2 (transfer-finetune): a backbone (pipeline/models/) with a new last layer of
// the dataset's classes, every layer trained end to end with Adam on preprocessed batches,
// through the shared training loop (pipeline/train.h). Batch norm trains as under
// torchvision's .train() (batch statistics, running statistics updated); its buffers
// are in the checkpoint and the best weights, so a resumed run equals an uninterrupted one.
//
// Run folder: metrics.json, history.csv, config.json (written last: it marks the run
// finished), model.pt (best-validation weights, torch::save of the module) and, while
// the run is unfinished, checkpoint/ (after every epoch: model, optimizer, RNG, best
// weights, records) with checkpoint-config.json, from which --resume continues an
// interrupted run of the same settings (a checkpoint of other settings is discarded);
// on a CPU the resumed run's final metrics equal an uninterrupted run's. An image
// folder's decoded images are in images.h5 (image_store.h; or --image-store), kept and
// reused by later runs on the same images.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "pipeline/device.h"
#include "pipeline/metrics.h"

namespace pipeline {

struct FinetuneOptions {
  std::string dataset = "cifar10";                           // a registered dataset (datasets/dataset.h)
  std::filesystem::path data;                                // its folder ("": data/<its folder name>)
  std::string labels;                                        // CIFAR-100: fine (default) or coarse
  std::string transform;                                     // image folder: resize256-crop224 (default) or resize
  bool skip_bad = false;                                     // image folder: leave out images that cannot be decoded
  double test_fraction = -1;                                 // image folder of one tree: its test share (-1: 0.2)
  std::filesystem::path image_store;                         // image folder: decoded store ("": "<out>/images.h5")
  std::string backbone = "alexnet";                          // a registered backbone (models/backbone.h)
  std::string weights;                                       // file or random:SEED ("": data/<its torchvision file>)
  std::filesystem::path out;                                 // run folder
  int64_t epochs = 10;
  double lr = 1e-3;                                          // Adam, every parameter
  int64_t batch_size = 128;
  int64_t image_size = 224;                                  // >= the backbone's minimum
  std::string normalize = "imagenet";                        // imagenet | half (the study's approach 2)
  double val_fraction = 0.2;
  uint64_t seed = 0;                                         // split, batch order, new layer's init, dropout
  ComputeOptions compute;                                    // device, precision (fp32|bf16|fp16), threads
  int64_t limit_train = -1;                                  // first N training images (-1: all)
  int64_t limit_test = -1;
  bool resume = false;                                       // continue from out/checkpoint
  bool force = false;                                        // retrain even if the run is up to date
  bool test_every_epoch = false;
  int64_t stop_after_epochs = 0;                             // > 0: stop after N epochs (simulates an interruption)
};

struct FinetuneSummary {
  bool up_to_date = false;
  bool finished = false;  // false when stopped early by stop_after_epochs
  RunMetrics metrics;
  std::vector<double> step_seconds;  // every training step of this call in order, seconds (batch built + step)
};

// Throws UsageError for bad settings (unknown backbone, epochs < 1, lr not finite and
// > 0, val_fraction outside [0, 1), image size below the backbone's minimum, fp16 on a
// CPU, an --out that is, lies in or holds an input or the data's folder) and Error at
// run time (e.g. a checkpoint/ in --out that is not a checkpoint of this program).
FinetuneSummary run_finetune(const FinetuneOptions& options);

}  // namespace pipeline
