#pragma once
// Approach 1 on the cache: train new heads on cached backbone features
// (transfer-head). The features are read once into memory; training one head for
// 10 epochs then takes seconds, so a grid of learning rates x weight decays x init
// seeds can be trained together in one pass (the heads stacked as one wider layer,
// each with its own Adam settings) and ranked on validation.
//
// Run folder (DESIGN.md): metrics.json, history.csv and config.json of the lone head
// (or of the best head of a sweep), head.pt (a linear head's weight [10,D] and bias
// [10], or the classifier module), and for a sweep sweep.csv, the leaderboard of every
// head, best validation accuracy first.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "pipeline/linear_heads.h"
#include "pipeline/train.h"

namespace pipeline {

// The most heads one run trains at once (a sweep's grid: --sweep-lr x --sweep-wd x
// --sweep-seeds); their weights alone are heads x classes x width floats.
inline constexpr int64_t kMaxHeads = 1024;

struct HeadOptions {
  std::filesystem::path features;           // the cache (transfer-extract's output)
  std::filesystem::path out;                // run folder
  std::string backbone;                     // "" or the backbone the cache must be of (a check)
  std::string tap;                          // which cached layer feeds the head ("": the cache's backbone's
                                            // default tap, or the cache's only tap)
  std::string head = "linear";              // linear: Linear(D,10); classifier: the backbone's whole classifier on
                                            // pool5 (AlexNet, VGG-16)
                                            // (fc6/fc7 from the cache's pretrained weights when at hand)
  int64_t epochs = 10;
  double lr = 1e-3;                         // Adam
  double weight_decay = 0.0;                // Adam's L2 term, as torch.optim.Adam
  int64_t batch_size = 128;
  double val_fraction = 0.2;                // of the cache's training rows
  uint64_t seed = 0;                        // split, batch order and the head's init
  std::vector<double> sweep_lr;             // non-empty: sweep these learning rates
  std::vector<double> sweep_wd;             // non-empty: sweep these weight decays
  int64_t sweep_seeds = 0;                  // > 0: that many init seeds per setting (seed, seed+1, ...)
  std::string precision = "fp32";           // fp32, or bf16: matrix products in bfloat16 (features and weights
                                            // rounded to it, float32 accumulation; loss, gradients' softmax and
                                            // Adam in float32), up to 2x faster sweeps on CPUs with AVX512-BF16 or AMX.
                                            // fp16 is a usage error: heads train on the CPU
  bool test_every_epoch = false;
  int threads = 0;                          // 0: every core
  bool force = false;                       // retrain even if the run folder is up to date
};

// Rows per batch when heads score validation and test: scoring needs no small
// batches, and big ones make better matrix products.
inline constexpr int64_t kHeadEvalBatchSize = 1024;

// The grid the options describe (a single setting without sweep flags).
std::vector<HeadSetting> head_grid(const HeadOptions& options);

struct HeadSummary {
  bool up_to_date = false;   // nothing was trained: the run folder already matched
  RunMetrics best;           // the lone head, or the best of the sweep
  int64_t heads = 1;
  double read_seconds = 0;   // reading the cache
};

// Trains the head(s) and writes the run folder. Throws UsageError for bad settings
// (epochs < 1, lr or weight decay not finite or out of range, val_fraction outside
// [0, 1), unknown tap), Error for a missing/incomplete cache.
HeadSummary run_head(const HeadOptions& options);

}  // namespace pipeline
