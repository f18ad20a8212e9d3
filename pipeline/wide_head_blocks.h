#pragma once
// The register-blocked kernels behind wide_head_kernels.h, one set per vector instruction
// set (wide_head_blocks.inc, compiled by wide_head_blocks_avx512.cc and _avx2.cc), on raw
// rows. For wide_head_kernels.cc, which checks the operands, picks the set the CPU has and
// splits the work over threads; call a set's functions only where the CPU has its
// instructions. Each output is one FMA chain in input order in every set: the same bits.

#include <cstdint>

namespace pipeline::wide_blocks {

// The gradient's input features per strip: 16 floats, one cache line of every batch row,
// so that the blocks of a strip take a row's line from L1.
constexpr int64_t kStrip = 16;

struct Kernels {
  // Rows of z a forward block computes: split a batch over threads on multiples of it.
  int64_t rows_per_block;
  // z's rows begin..end, every output: z[r] = x[r] . wt + bias.
  //   x: row pointers (d floats each); wt [d, n], bias [n], z [.., n]: row-major floats
  void (*linear_rows)(int64_t begin, int64_t end, int64_t d, int64_t n, const float* const* x, const float* wt,
                      const float* bias, float* z);
  // The weight gradient's rows c0..c1 (input features; at most kStrip) into out [c1 - c0, n]:
  // out[c - c0] = sum over the b rows r of x[r][c] g[r], rows in order.
  //   x: b row pointers; g [b, n] row-major floats; packed: b * kStrip floats of scratch (for
  //   the sets that pack a strip of the rows first)
  void (*grad_strip)(int64_t c0, int64_t c1, int64_t b, int64_t n, const float* const* x, const float* g,
                     float* out, float* packed);
};

// Each set's kernels; nullptr where the build has none (it has them with x86-64 GCC).
const Kernels* avx512_kernels();  // AVX-512 F/BW/VL/DQ: 4 x 5 blocks of 16 floats
const Kernels* avx2_kernels();    // AVX2 + FMA: 4 x 3 blocks of 8 floats

}  // namespace pipeline::wide_blocks
