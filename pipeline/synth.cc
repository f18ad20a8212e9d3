#include "pipeline/synth.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "pipeline/cifar10.h"
#include "pipeline/error.h"
#include "pipeline/random.h"

namespace fs = std::filesystem;

namespace pipeline {
namespace {

using Rgb = std::array<int, 3>;

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
  std::ofstream out(file, std::ios::binary);
  std::vector<char> record(kCifarRecordBytes);
  for (size_t i = begin; i < end; ++i) {
    draw(labels[i], rng, record.data());
    out.write(record.data(), kCifarRecordBytes);
  }
  if (!out.flush()) fail("cannot write synthetic data to {}", file.string());
}

std::vector<int> balanced_labels(int64_t n, SplitMix64& rng) {
  std::vector<int> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<int>(i % kCifarClasses);
  seeded_shuffle(labels, rng);
  return labels;
}

}  // namespace

void write_synthetic_cifar(const SynthOptions& options) {
  if (options.train < 5) usage_fail("--train must be at least 5 (one record per batch file), got {}", options.train);
  if (options.test < 1) usage_fail("--test must be at least 1, got {}", options.test);
  if (options.out.empty()) usage_fail("--out is required");

  const fs::path out = fs::absolute(options.out).lexically_normal();
  const fs::path parent = out.has_filename() ? out.parent_path() : out.parent_path().parent_path();
  const fs::path target = parent / out.filename();
  const fs::path temporary = parent / ("." + target.filename().string() + ".tmp");
  std::error_code error;
  fs::create_directories(parent, error);
  fs::remove_all(temporary, error);
  if (!fs::create_directories(temporary, error)) fail("cannot create {}: {}", temporary.string(), error.message());

  SplitMix64 rng(options.seed);
  const std::vector<int> train = balanced_labels(options.train, rng);
  for (int b = 0; b < 5; ++b) {
    const size_t begin = train.size() * b / 5, end = train.size() * (b + 1) / 5;
    write_records(temporary / ("data_batch_" + std::to_string(b + 1) + ".bin"), train, begin, end, rng);
  }
  const std::vector<int> test = balanced_labels(options.test, rng);
  write_records(temporary / "test_batch.bin", test, 0, test.size(), rng);
  {
    std::ofstream meta(temporary / "batches.meta.txt");
    for (const char* name : kCifarClassNames) meta << name << "\n";
  }
  fs::remove_all(target, error);
  fs::rename(temporary, target, error);
  if (error) fail("cannot move {} into place as {}: {}", temporary.string(), target.string(), error.message());
}

}  // namespace pipeline
