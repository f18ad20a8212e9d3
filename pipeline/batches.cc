#include "pipeline/batches.h"

#include <algorithm>
#include <cmath>

#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/random.h"

namespace pipeline {

void check_val_fraction(double val_fraction) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0)) {
    usage_fail("--val-fraction (the validation fraction) must be in [0, 1), got {}", val_fraction);
  }
}

TrainValSplit split_train_val(int64_t n, double val_fraction, uint64_t seed) {
  check_val_fraction(val_fraction);
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows[i] = i;
  SplitMix64 rng(mix_seed(seed, 0x5911u));
  seeded_shuffle(rows, rng);
  const auto val_count = static_cast<int64_t>(std::llround(static_cast<double>(n) * val_fraction));
  TrainValSplit split;
  split.val.assign(rows.begin(), rows.begin() + val_count);
  split.train.assign(rows.begin() + val_count, rows.end());
  std::sort(split.val.begin(), split.val.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

std::string split_fingerprint(const TrainValSplit& split) {
  std::string text = std::to_string(split.train.size()) + ":";
  for (int64_t row : split.val) text += std::to_string(row) + ",";
  return bytes_digest(text, DigestAlgorithm::Sha256).substr(0, 16);
}

std::vector<int64_t> epoch_order(const std::vector<int64_t>& rows, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order = rows;
  SplitMix64 rng(mix_seed(seed, 0xE90C0000u + static_cast<uint64_t>(epoch)));
  seeded_shuffle(order, rng);
  return order;
}

std::vector<std::vector<int64_t>> make_batches(const std::vector<int64_t>& rows, int64_t batch_size) {
  if (batch_size < 1) usage_fail("batch size must be at least 1, got {}", batch_size);
  std::vector<std::vector<int64_t>> batches;
  for (size_t begin = 0; begin < rows.size(); begin += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(rows.size(), begin + static_cast<size_t>(batch_size));
    batches.emplace_back(rows.begin() + static_cast<std::ptrdiff_t>(begin), rows.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return batches;
}

}  // namespace pipeline
