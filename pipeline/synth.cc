#include "pipeline/synth.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "pipeline/cifar10.h"
#include "pipeline/cifar100.h"
#include "pipeline/error.h"
#include "pipeline/files.h"
#include "pipeline/random.h"

namespace fs = std::filesystem;

namespace pipeline {
namespace {

using Rgb = std::array<int, 3>;

constexpr const char* kMetaFile = "batches.meta.txt";

// Ten colour pairs and five shapes: class c gets palette c and shape c % 5, so two
// classes share a shape but never colours, and colour alone is never the whole story.
constexpr std::array<Rgb, 10> kBackground = {{{200, 60, 60}, {60, 200, 60}, {60, 60, 200}, {200, 200, 60}, {200, 60, 200},
                                              {60, 200, 200}, {140, 140, 140}, {230, 150, 60}, {90, 40, 150}, {30, 110, 80}}};
constexpr std::array<Rgb, 10> kForeground = {{{20, 20, 90}, {240, 240, 240}, {240, 200, 40}, {30, 30, 30}, {40, 160, 40},
                                              {160, 30, 30}, {250, 90, 160}, {20, 60, 140}, {210, 230, 120}, {250, 250, 250}}};

bool in_shape(int shape, int x, int y, int cx, int cy, int radius) {
  const int dx = x - cx, dy = y - cy;
  switch (shape) {
    case 0: return ((y + cy) / 4) % 2 == 0;                      // horizontal stripes
    case 1: return ((x + cx) / 4) % 2 == 0;                      // vertical stripes
    case 2: return dx * dx + dy * dy <= radius * radius;         // disc
    case 3: return std::abs(dx) <= radius && std::abs(dy) <= radius;  // square
    default: return std::abs(dx) <= 2 || std::abs(dy) <= 2;      // cross
  }
}

// One 32x32 image into `pixels` (3,072 bytes, planes R, G, B): background colour
// kBackground[background], shape `shape` in kForeground[foreground], at a random
// offset and scale, with per-pixel noise.
void draw_image(int background, int foreground, int shape, SplitMix64& rng, char* pixels) {
  const int cx = 10 + static_cast<int>(rng.below(12)), cy = 10 + static_cast<int>(rng.below(12));
  const int radius = 5 + static_cast<int>(rng.below(6));
  for (int y = 0; y < kCifarSide; ++y) {
    for (int x = 0; x < kCifarSide; ++x) {
      const Rgb& colour = in_shape(shape, x, y, cx, cy, radius) ? kForeground[foreground] : kBackground[background];
      for (int c = 0; c < 3; ++c) {
        const int noise = static_cast<int>(rng.below(61)) - 30;
        pixels[c * 1024 + y * 32 + x] = static_cast<char>(std::clamp(colour[c] + noise, 0, 255));
      }
    }
  }
}

// CIFAR-10 class c: palette c and shape c % 5.
void draw(int label, SplitMix64& rng, char* record) {
  record[0] = static_cast<char>(label);
  draw_image(label, label, label % 5, rng, record + 1);
}

void write_records(const fs::path& file, const std::vector<int>& labels, size_t begin, size_t end, SplitMix64& rng) {
  std::string records(static_cast<size_t>(kCifarRecordBytes) * (end - begin), '\0');
  for (size_t i = begin; i < end; ++i) draw(labels[i], rng, records.data() + (i - begin) * kCifarRecordBytes);
  write_file_atomic(file, records);
}

// CIFAR-100 fine class c (coarse c / 5): background c % 10, foreground c / 10, shape
// (c + c / 10) % 5 -- every class its own colour pair.
void write_records_100(const fs::path& file, const std::vector<int>& labels, SplitMix64& rng) {
  constexpr size_t kRecord = 2 + kCifarImageBytes;
  std::string records(kRecord * labels.size(), '\0');
  for (size_t i = 0; i < labels.size(); ++i) {
    const int c = labels[i];
    char* record = records.data() + i * kRecord;
    record[0] = static_cast<char>(c / 5);
    record[1] = static_cast<char>(c);
    draw_image(c % 10, c / 10, (c + c / 10) % 5, rng, record + 2);
  }
  write_file_atomic(file, records);
}

std::vector<int> balanced_labels(int64_t n, SplitMix64& rng, int classes = static_cast<int>(kCifarClasses)) {
  std::vector<int> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<int>(i % classes);
  seeded_shuffle(labels, rng);
  return labels;
}

}  // namespace

void write_synthetic_cifar(const SynthOptions& options) {
  constexpr int64_t kMaxTrain = 5 * kCifarRecordsPerFile, kMaxTest = kCifarRecordsPerFile;
  if (options.train < 5 || options.train > kMaxTrain) {
    usage_fail("--train must be 5..{} (one to {} records per batch file, as in CIFAR-10), got {}", kMaxTrain,
               kCifarRecordsPerFile, options.train);
  }
  if (options.test < 1 || options.test > kMaxTest) {
    usage_fail("--test must be 1..{} (test_batch.bin holds at most {} records), got {}", kMaxTest, kMaxTest,
               options.test);
  }
  const fs::path target = output_path(options.out, "--out");
  std::vector<std::string> ours;
  for (Split split : {Split::Train, Split::Test}) {
    for (const fs::path& file : cifar_files(target, split)) ours.push_back(file.filename().string());
  }
  ours.push_back(kMetaFile);
  // Only a folder of files this stage writes is replaced: `--out` naming a folder of
  // the user's own (their home, the current folder) is refused, not emptied.
  replace_folder_atomically(
      target,
      [&](const fs::path& temporary) {
        SplitMix64 rng(options.seed);
        const std::vector<int> train = balanced_labels(options.train, rng);
        for (int b = 0; b < 5; ++b) {
          const size_t begin = train.size() * b / 5, end = train.size() * (b + 1) / 5;
          write_records(temporary / ("data_batch_" + std::to_string(b + 1) + ".bin"), train, begin, end, rng);
        }
        const std::vector<int> test = balanced_labels(options.test, rng);
        write_records(temporary / "test_batch.bin", test, 0, test.size(), rng);
        std::string names;
        for (const char* name : kCifarClassNames) names += std::string(name) + "\n";
        write_file_atomic(temporary / kMetaFile, names);
      },
      [&](const fs::path& existing) { return only_entries(existing, ours); });
}

void write_synthetic_cifar100(const SynthOptions& options) {
  if (options.train < 1 || options.train > kCifar100TrainRecords) {
    usage_fail("--train must be 1..{} (train.bin of CIFAR-100 holds {} records), got {}", kCifar100TrainRecords,
               kCifar100TrainRecords, options.train);
  }
  if (options.test < 1 || options.test > kCifar100TestRecords) {
    usage_fail("--test must be 1..{} (test.bin holds at most {} records), got {}", kCifar100TestRecords,
               kCifar100TestRecords, options.test);
  }
  const fs::path target = output_path(options.out, "--out");
  const std::vector<std::string> ours = {"train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"};
  replace_folder_atomically(
      target,
      [&](const fs::path& temporary) {
        SplitMix64 rng(options.seed);
        write_records_100(temporary / "train.bin", balanced_labels(options.train, rng, 100), rng);
        write_records_100(temporary / "test.bin", balanced_labels(options.test, rng, 100), rng);
        std::string fine, coarse;
        for (int c = 0; c < 100; ++c) fine += fmt::format("synthetic_{:02d}\n", c);
        for (int c = 0; c < 20; ++c) coarse += fmt::format("synthetic_group_{:02d}\n", c);
        write_file_atomic(temporary / "fine_label_names.txt", fine);
        write_file_atomic(temporary / "coarse_label_names.txt", coarse);
      },
      [&](const fs::path& existing) { return only_entries(existing, ours); });
}

}  // namespace pipeline
