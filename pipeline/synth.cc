#include "pipeline/synth.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "pipeline/cifar10.h"
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

void draw(int label, SplitMix64& rng, char* record) {
  record[0] = static_cast<char>(label);
  const int shape = label % 5;
  const int cx = 10 + static_cast<int>(rng.below(12)), cy = 10 + static_cast<int>(rng.below(12));
  const int radius = 5 + static_cast<int>(rng.below(6));
  for (int y = 0; y < kCifarSide; ++y) {
    for (int x = 0; x < kCifarSide; ++x) {
      const Rgb& colour = in_shape(shape, x, y, cx, cy, radius) ? kForeground[label] : kBackground[label];
      for (int c = 0; c < 3; ++c) {
        const int noise = static_cast<int>(rng.below(61)) - 30;
        record[1 + c * 1024 + y * 32 + x] = static_cast<char>(std::clamp(colour[c] + noise, 0, 255));
      }
    }
  }
}

void write_records(const fs::path& file, const std::vector<int>& labels, size_t begin, size_t end, SplitMix64& rng) {
  std::string records(static_cast<size_t>(kCifarRecordBytes) * (end - begin), '\0');
  for (size_t i = begin; i < end; ++i) draw(labels[i], rng, records.data() + (i - begin) * kCifarRecordBytes);
  write_file_atomic(file, records);
}

std::vector<int> balanced_labels(int64_t n, SplitMix64& rng) {
  std::vector<int> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<int>(i % kCifarClasses);
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

}  // namespace pipeline
