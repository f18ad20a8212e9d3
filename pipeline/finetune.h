#pragma once
// Approach 2 (transfer-finetune): AlexNet with a new Linear(4096,10) last layer, every
// layer trained end to end with Adam on preprocessed CIFAR-10 batches, through the
// shared training loop (pipeline/train.h).
//
// Run folder: metrics.json, history.csv, config.json (written last: it marks the run
// finished), model.pt (best-validation weights, torch::save of the module) and, while
// the run is unfinished, checkpoint/ (after every epoch: model, optimizer, RNG, best
// weights, records) with checkpoint-config.json, from which --resume continues an
// interrupted run of the same settings (a checkpoint of other settings is discarded);
// on a CPU the resumed run's final metrics equal an uninterrupted run's.

#include <cstdint>
#include <filesystem>
#include <string>

#include "pipeline/device.h"
#include "pipeline/metrics.h"

namespace pipeline {

struct FinetuneOptions {
  std::filesystem::path data = "data/cifar-10-batches-bin";  // CIFAR-10 folder
  std::string weights = "data/alexnet-owt-7be5be79.pth";     // file or random:SEED
  std::filesystem::path out;                                 // run folder
  int64_t epochs = 10;
  double lr = 1e-3;                                          // Adam, every parameter
  int64_t batch_size = 128;
  int64_t image_size = 224;                                  // >= 63
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
};

// Throws UsageError for bad settings (epochs < 1, lr <= 0, image size < 63, fp16 on a
// CPU) and Error at run time.
FinetuneSummary run_finetune(const FinetuneOptions& options);

}  // namespace pipeline
