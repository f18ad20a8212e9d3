#pragma once
// The one training loop behind transfer-head and transfer-finetune.
//
// Epochs of seeded-shuffled batches, an optimizer step per batch, validation after
// every epoch, per-epoch records, the best-validation weights kept, and a final test
// evaluation with those weights (with its confusion matrix). The loop trains K
// "members" in lockstep on the same batches: K = 1 for one model, K > 1 for a head
// sweep (the heads are stacked into one wider layer by the Trainable).
//
// A run stops with pipeline::Error on a non-finite loss; the last checkpoint (if
// checkpoints are on) is kept, so nothing good is lost.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "pipeline/metrics.h"

namespace pipeline {

struct Batch {
  at::Tensor inputs;  // on the model's device, whatever the model takes
  at::Tensor labels;  // [B] int64, CPU
  // For a model that reads its rows in place (LinearHeads::reads_rows_in_place): inputs
  // left undefined, the batch is these rows [B] int64 of source [N, D], never copied.
  at::Tensor source{}, rows{};
};

// A batch's summed cross-entropy and number of right answers, per member.
struct BatchScores {
  at::Tensor loss_sum;  // [K] float64
  at::Tensor correct;   // [K] int64
};

// What the loop trains: K members (C classes each) stepped together on every batch.
class Trainable {
 public:
  virtual ~Trainable() = default;
  virtual int64_t members() const = 0;
  virtual void set_training(bool training) = 0;
  // One optimizer step of every member on the batch; returns the scores of the
  // forward pass that the step used (train mode: dropout included), e.g. by
  // score_logits on its logits.
  virtual BatchScores train_step(const Batch& batch) = 0;
  // Logits [K, B, C] float32 on the CPU, without gradients, in the current mode.
  virtual at::Tensor predict(const at::Tensor& inputs) = 0;
  // The same for a batch as the loop makes it: predict(batch.inputs), or for a model
  // that reads rows in place (Batch::source/rows), those rows where they are.
  // The default takes batch.inputs; a batch of rows in place is a pipeline::Error.
  virtual at::Tensor predict_batch(const Batch& batch);
  // Remembers member k's current weights as its best; use_best() loads them back.
  virtual void keep_best(int64_t member) = 0;
  virtual void use_best() = 0;
  // Everything needed to resume after the current epoch (weights, optimizer, RNG,
  // best snapshots). Only called when LoopOptions::checkpoint_dir is set.
  virtual void save_state(const std::filesystem::path& dir) const;
  virtual void load_state(const std::filesystem::path& dir);
  // The names of the files save_state() writes into `dir`.
  virtual std::vector<std::string> state_files() const { return {}; }
};

// Removes the checkpoint folder `dir` of a model whose save_state() writes
// `state_files`, if it exists. A folder that holds anything but those and the loop's
// own loop.json is the user's, not a checkpoint: pipeline::Error naming its first other
// entry, and nothing is removed. (save_checkpoint() replaces a folder on the same terms.)
void remove_checkpoint(const std::filesystem::path& dir, const std::vector<std::string>& state_files);

// A copy of a model's parameters: what Trainable::keep_best/use_best keep for a model
// trained through autograd. Holds the live parameter tensors (shared) and a copy.
class ParameterSnapshot {
 public:
  explicit ParameterSnapshot(std::vector<at::Tensor> parameters);  // copies them now
  void keep();                               // live -> copy
  void restore();                            // copy -> live
  std::vector<at::Tensor>& saved() { return saved_; }  // the copy, for checkpoints
  const std::vector<at::Tensor>& saved() const { return saved_; }

 private:
  std::vector<at::Tensor> live_, saved_;
};

enum class Part { Train, Val, Test };

struct TrainData {
  std::vector<int64_t> train_rows, val_rows, test_rows;  // ids passed to make_batch
  // Builds the batch for `rows` of `part`. Must be thread-safe when prefetching.
  std::function<Batch(Part part, const std::vector<int64_t>& rows)> make_batch;
};

struct LoopOptions {
  int64_t epochs = 10;
  int64_t batch_size = 128;
  int64_t eval_batch_size = 0;            // batches for validation/test scoring; 0: batch_size
  uint64_t seed = 0;                      // batch order: epoch_order(train_rows, seed, epoch)
  bool prefetch = false;                  // build batch k+1 on a background thread
  bool test_every_epoch = false;          // also score test each epoch (curves only; never for selection)
  std::filesystem::path checkpoint_dir;   // empty: no checkpoints
  bool resume = false;                    // continue from checkpoint_dir if it holds one
  int64_t stop_after_epochs = 0;          // > 0: return after this many epochs of this call (tests: an interruption)
  std::string label = "train";            // progress label
};

struct MemberResult {
  std::vector<EpochRecord> epochs;
  int64_t best_epoch = 0;
  double test_loss = 0, test_acc = 0;
  std::vector<std::vector<int64_t>> confusion;  // [C][C], rows = true class
};

struct LoopResult {
  std::vector<MemberResult> members;
  double train_seconds = 0;      // all epochs, training + validation
  double images_per_second = 0;  // training images / seconds of the training phases (batches built + steps)
  std::vector<double> step_seconds;  // this call's training steps in order, seconds each (batch built + step)
  bool finished = false;         // false when stopped by stop_after_epochs
};

LoopResult run_training(Trainable& model, const TrainData& data, const LoopOptions& options);

// Cross-entropy and right answers per member of logits [K,B,C] (CPU, any strides)
// against labels [B] in 0..C-1, summed over the batch. A non-finite logit makes its
// member's loss NaN; a label out of range throws pipeline::Error.
BatchScores score_logits(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace pipeline
