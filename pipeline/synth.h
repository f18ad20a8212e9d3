#pragma once
// Synthetic CIFAR-10-format (or CIFAR-100-format) data whose classes are learnable: each class has its own
// background/foreground colours and shape (horizontal or vertical stripes, disc, square, cross),
// drawn at a random offset and scale with per-pixel noise. For tests, CI and demos
// without a download. Deterministic for a seed.

#include <cstdint>
#include <filesystem>

namespace pipeline {

struct SynthOptions {
  std::filesystem::path out;  // folder to create: data_batch_1..5.bin, test_batch.bin, batches.meta.txt
  int64_t train = 5000;       // training records, spread over the 5 batch files (5..50,000)
  int64_t test = 1000;        // test records (1..10,000)
  uint64_t seed = 0;
};

// Writes the folder through a temporary sibling and a rename (files.h's
// replace_folder_atomically). An existing `out` is replaced only when it holds nothing
// but the files this writes; any other folder (or a file, or a link) is refused with
// pipeline::Error, untouched. "DIR/" and "DIR/." mean DIR. Labels are balanced (round
// robin) and shuffled. Throws pipeline::Error on I/O failure (naming the file) and
// pipeline::UsageError for counts out of range or an empty or root `out`.
void write_synthetic_cifar(const SynthOptions& options);

// The same in CIFAR-100's layout (cifar100.h): train.bin, test.bin and both names files;
// 100 fine classes, each its own colour pair and shape, fine label c in coarse c / 5.
// train 1..50,000, test 1..10,000.
void write_synthetic_cifar100(const SynthOptions& options);

}  // namespace pipeline
