#pragma once
// sweep.csv: a head sweep's leaderboard, one row per head, best first (transfer-head
// writes it, transfer-compare and the backbone ranking read it).
//   rank,lr,weight_decay,init_seed,best_epoch,best_val_acc,best_val_loss,test_acc,test_loss
// rank is 1-based; best_epoch is the head's best-validation epoch (1-based); accuracies
// are fractions in [0,1]; losses are mean cross-entropy (nats), of that epoch's weights.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace pipeline {

inline constexpr char kSweepCsvHeader[] =
    "rank,lr,weight_decay,init_seed,best_epoch,best_val_acc,best_val_loss,test_acc,test_loss";

struct SweepRow {
  int64_t rank = 0, best_epoch = 0;
  uint64_t init_seed = 0;
  double lr = 0, weight_decay = 0, best_val_acc = 0, best_val_loss = 0, test_acc = 0, test_loss = 0;
};

// The file's text: the header, then one line per row in the order given.
std::string sweep_csv_text(const std::vector<SweepRow>& rows);

// The rows of a sweep.csv, in file order. Throws pipeline::Error naming the file and
// line for a missing file, another header, a field that is not a finite number, an
// integer field (rank, init_seed, best_epoch) that is not an integer, a line without 9
// fields, or no rows at all.
std::vector<SweepRow> read_sweep(const std::filesystem::path& file);

}  // namespace pipeline
