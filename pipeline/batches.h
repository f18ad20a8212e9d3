#pragma once
// Seeded splits, per-epoch shuffles and a one-ahead prefetching batch source.
//
// Everything here is a pure function of (n, fraction, seed, epoch), computed with
// pipeline::SplitMix64, so the same seed gives the same split in every stage
// (transfer-head and transfer-finetune score the same validation images) and on every
// platform.

#include <cstdint>
#include <functional>
#include <string>
#include <future>
#include <vector>

namespace pipeline {

struct TrainValSplit {
  std::vector<int64_t> train;  // row indices, ascending
  std::vector<int64_t> val;    // row indices, ascending
};

// Throws pipeline::UsageError naming --val-fraction unless val_fraction is in [0, 1):
// stages call it among their settings' checks, before any file is touched.
void check_val_fraction(double val_fraction);

// Splits rows [0, n): round(n * val_fraction) rows, drawn by a seeded shuffle, go to
// validation. val_fraction in [0, 1); throws pipeline::UsageError otherwise.
TrainValSplit split_train_val(int64_t n, double val_fraction, uint64_t seed);

// A short fingerprint of the validation rows (first 16 hex digits of a SHA-256), saved
// in every run's config so that runs can be checked to have used the same split.
std::string split_fingerprint(const TrainValSplit& split);

// The order in which `rows` are visited in `epoch` (0-based): a seeded shuffle that
// differs per epoch and is identical for the same (seed, epoch).
std::vector<int64_t> epoch_order(const std::vector<int64_t>& rows, uint64_t seed, int64_t epoch);

// Consecutive slices of `rows` of at most batch_size (the last may be shorter).
std::vector<std::vector<int64_t>> make_batches(const std::vector<int64_t>& rows, int64_t batch_size);

// Hands out items 0..count-1 in order. With `ahead` set, item k+1 is produced on a
// background thread while the caller works on item k, so a consumer slower than the
// producer never waits (the producer may use TBB itself). Without it, each item is
// produced on the calling thread inside next() — used on CPU devices, where a
// producer beside LibTorch's threads would slow the model down more than it saves.
// produce() must be safe to call from another thread. Its exceptions surface from
// next(). Not thread-safe itself: one consumer.
template <typename T>
class Prefetcher {
 public:
  Prefetcher(int64_t count, std::function<T(int64_t)> produce, bool ahead)
      : count_(count), produce_(std::move(produce)), ahead_(ahead) {
    if (ahead_ && count_ > 0) pending_ = std::async(std::launch::async, produce_, int64_t{0});
  }
  ~Prefetcher() {
    if (pending_.valid()) pending_.wait();
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  bool has_next() const { return next_ < count_; }

  T next() {
    const int64_t k = next_++;
    if (!ahead_) return produce_(k);
    T item = pending_.get();
    if (next_ < count_) pending_ = std::async(std::launch::async, produce_, next_);
    return item;
  }

 private:
  int64_t count_;
  std::function<T(int64_t)> produce_;
  bool ahead_;
  int64_t next_ = 0;
  std::future<T> pending_;
};

}  // namespace pipeline
