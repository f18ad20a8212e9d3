#pragma once
// A small, fully specified random generator (SplitMix64) for everything that must
// be identical across runs, stages, platforms and standard libraries: data splits,
// shuffles, synthetic images. std::shuffle and std::uniform_int_distribution are
// implementation-defined, so they are not used for these.

#include <cstdint>
#include <utility>
#include <vector>

namespace pipeline {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  // Uniform in [0, bound); bound > 0. Lemire's multiply-shift (bias < 2^-32 for our sizes).
  uint64_t below(uint64_t bound) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * bound) >> 64);
  }

  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  uint64_t state_;
};

// Fisher-Yates shuffle driven by SplitMix64.
template <typename T>
void seeded_shuffle(std::vector<T>& items, SplitMix64& rng) {
  for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng.below(i)]);
}

// Mixes several integers into one seed (e.g. run seed and epoch).
inline uint64_t mix_seed(uint64_t a, uint64_t b) { return SplitMix64(a ^ (b * 0xD1B54A32D192ED03ull)).next(); }

}  // namespace pipeline
