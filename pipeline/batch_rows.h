#pragma once
// A batch's rows as pointers, for the head kernels (head_kernels.h, wide_head_kernels.h)
// that read a batch where it lies instead of a gathered copy.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "pipeline/error.h"

namespace pipeline {

// pipeline::Error unless t is contiguous float32; `kernel` and `what` name it.
inline void check_contiguous_float(const at::Tensor& t, const char* kernel, const char* what) {
  if (t.scalar_type() != at::kFloat || !t.is_contiguous()) fail("{}: {} must be contiguous float32", kernel, what);
}

// x [N, D] contiguous float32: pointers to its rows in order, or with `rows` [B]
// (integer) defined to those rows of x; an index outside 0..N-1 is a pipeline::Error.
inline std::vector<const float*> batch_row_pointers(const at::Tensor& x, const at::Tensor& rows, const char* kernel) {
  check_contiguous_float(x, kernel, "x");
  const int64_t d = x.size(1);
  const float* base = x.data_ptr<float>();
  std::vector<const float*> out;
  if (!rows.defined()) {
    for (int64_t r = 0; r < x.size(0); ++r) out.push_back(base + r * d);
    return out;
  }
  const at::Tensor index = rows.to(at::kLong).contiguous();
  const int64_t* i = index.data_ptr<int64_t>();
  for (int64_t r = 0; r < index.numel(); ++r) {
    if (i[r] < 0 || i[r] >= x.size(0)) fail("batch row {} is outside the {} rows of its split", i[r], x.size(0));
    out.push_back(base + i[r] * d);
  }
  return out;
}

}  // namespace pipeline
