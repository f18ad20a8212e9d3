#pragma once
// The two matrix products of a stack of many heads (a sweep: N_out = heads x classes
// above head_kernels.h's kFewOutputs), with the weights kept transposed, [D, N_out], so
// that the outputs of one input feature are consecutive, a vector of them at a time.
// Register-blocked kernels of their own (wide_head_blocks.h) for AVX-512 (4 rows x 80
// outputs in 20 accumulators) and for AVX2 + FMA (4 x 24 in 12): on two Zen 4 cores, on
// a batch in cache, the forward product of a 32-head sweep (128 x 4,096 by 4,096 x 320)
// ran at 205-216 GFLOP/s with AVX-512 against 134-157 for OpenBLAS's, the weight
// gradient at 212-222 against 177-187, the CPU's FMA peak being ~234. Without either
// (not x86-64 GCC, or an older CPU) LibTorch's BLAS on the same layout (rows in place
// are gathered for it).
//
// Each output of the own kernels is one chain of fused multiply-adds in input order (the
// forward: over the D features, then + bias; the gradient: over the B rows), whatever
// the instruction set, the blocking and the thread count: the same bits from run to run,
// from AVX-512 and AVX2, and from std::fma in that order (the tests' reference). All run
// on at::parallel_for's threads with subnormals flushed (simd.h FlushSubnormals). Thread
// safety: no shared state but the process's choice of kernels (below); the tensors
// passed must not be used elsewhere during a call.
//
// Errors (pipeline::Error, naming the operand): an operand that is not contiguous
// float32, shapes that do not fit each other, a row index outside x.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

namespace pipeline {

// Each takes its B input rows either as x [B, D] or, with `rows` defined, as the rows
// [B] int64 of x [N, D] read in place (an index outside 0..N-1 is a pipeline::Error).

// z = x . weight_t + bias.
//   x, weight_t [D, N_out], bias [N_out]: float32 contiguous
//   -> z [B, N_out] float32
at::Tensor wide_outputs_linear(const at::Tensor& x, const at::Tensor& weight_t, const at::Tensor& bias,
                               const at::Tensor& rows = {});

// grad_t = x^T . g, the weight gradient in the weights' transposed layout.
//   g [B, N_out] float32 contiguous; grad_t [D, N_out] float32 contiguous, overwritten
void wide_outputs_weight_grad(at::Tensor& grad_t, const at::Tensor& g, const at::Tensor& x,
                              const at::Tensor& rows = {});

// The same gradient handed on strip by strip instead of written whole: for each strip of
// input features c0..c1 (16 of them; the rows of grad_t), use(c0, c1, grad) with grad
// those rows [c1 - c0, N_out] in a buffer of the thread that computed them, called on
// that thread while they are in cache (a sweep applies Adam to them there: the 5 MB
// gradient of 32 heads never goes to memory). `grad` (row stride N_out) is valid during
// that call only. Strips run in parallel, each once; `use` must be safe for that. x,
// rows, g as above.
using GradStrips = std::function<void(int64_t c0, int64_t c1, const float* grad)>;
void wide_outputs_weight_grad_strips(const at::Tensor& g, const at::Tensor& x, const at::Tensor& rows,
                                     const GradStrips& use);

// The kernels behind the functions above, one choice for the whole process: by default
// the first of avx512, avx2, blas that this CPU and build have.
enum class WideKernels { avx512, avx2, blas };
const char* wide_kernels_name(WideKernels kernels);  // "avx512", "avx2", "blas"
bool wide_kernels_available(WideKernels kernels);    // blas: always
WideKernels wide_outputs_kernels();                  // the ones in use
// Chooses them (benchmarks and tests compare them); not during a call above. An
// unavailable choice is a pipeline::Error.
void use_wide_outputs_kernels(WideKernels kernels);

}  // namespace pipeline
