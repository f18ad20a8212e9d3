#include "pipeline/preprocess.h"

#include <tbb/parallel_for.h>
#include <torch/types.h>

#include <cmath>
#include <cstring>

#include "pipeline/cifar10.h"
#include "pipeline/error.h"
#include "pipeline/simd.h"

namespace pipeline {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL's PRECISION_BITS for 8-bit images
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

// PIL's clip8, written branch-free so that a row of it vectorizes: for sums >= 2^30 the
// shift gives 256..511 and for negative sums a negative number, both clamped as PIL clips.
inline int32_t rounded(int32_t sum) { return std::min(std::max(sum >> kPrecisionBits, 0), 255); }

void check_images(const at::Tensor& images, int64_t side) {
  if (images.dim() != 4 || images.size(1) != 3 || images.size(2) != side || images.size(3) != side ||
      images.scalar_type() != torch::kUInt8 || !images.device().is_cpu()) {
    fail("preprocess expects CPU uint8 images [B,3,{},{}], got {} {}", side, side, images.sizes().vec(),
         std::string(c10::toString(images.scalar_type())));
  }
}

// float -> bfloat16 bits rounded to nearest, ties to even: c10::BFloat16's rounding
// without its NaN branch (these values are always finite), so that a row vectorizes.
inline uint16_t bf16_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// What one output value becomes, from PIL's fixed-point sum: the 8-bit pixel PIL's
// resize returns (uint8_t), ToTensor + Normalize as one multiply-add v*a + b (float), or
// that rounded as torch's .to(kBFloat16) rounds it (uint16_t: bfloat16 bits, straight
// into a bf16 model's input: no float batch, no conversion pass).
inline void store(uint8_t& dst, int32_t sum, float, float) { dst = static_cast<uint8_t>(rounded(sum)); }
inline void store(float& dst, int32_t sum, float a, float b) { dst = static_cast<float>(rounded(sum)) * a + b; }
inline void store(uint16_t& dst, int32_t sum, float a, float b) {
  dst = bf16_bits(static_cast<float>(rounded(sum)) * a + b);
}

// The row kernels, compiled for AVX-512 and AVX2 as well as the baseline (simd.h): the
// baseline x86-64 (SSE2) has neither a 32-bit integer multiply-low nor wide vectors,
// which these loops are made of. Built without FMA contraction (CMakeLists.txt), every
// clone gives the same bits.
#define TRANSFER_ROW_KERNEL TRANSFER_CLONES("avx512f", "avx2", "default")

TRANSFER_ROW_KERNEL void accumulate_row(int32_t* acc, const uint8_t* src, int32_t weight, int64_t n) {
  for (int64_t x = 0; x < n; ++x) acc[x] += src[x] * weight;
}

// 32 (or, at a column's end, m < 32) pixels of one output column: `taps` whole input
// columns `side` bytes apart from src, weighted by k[0..taps). With a fixed count the
// sums stay in registers.
template <bool kFull>
TRANSFER_INLINE void column_chunk(uint8_t* out, const uint8_t* src, int64_t side, const int32_t* k, int32_t taps,
                                  int64_t m) {
  constexpr int64_t kChunk = 32;
  const int64_t count = kFull ? kChunk : m;
  int32_t acc[kChunk];
  for (int64_t y = 0; y < count; ++y) acc[y] = kHalf;
  for (int32_t t = 0; t < taps; ++t) {
    for (int64_t y = 0; y < count; ++y) acc[y] += src[t * side + y] * k[t];
  }
  for (int64_t y = 0; y < count; ++y) out[y] = static_cast<uint8_t>(rounded(acc[y]));
}

// PIL's horizontal pass by output column: out[x][y] (s x side) from the input transposed,
// in[column][y] (side x side); output column x sums count[x] whole input columns from
// first[x] with weight[x * taps ..].
TRANSFER_ROW_KERNEL void horizontal_columns(uint8_t* out, const uint8_t* in, const int32_t* first, const int32_t* count,
                                            const int32_t* weight, int64_t taps, int64_t s, int64_t side) {
  for (int64_t x = 0; x < s; ++x) {
    const uint8_t* src = in + first[x] * side;
    const int32_t* k = weight + x * taps;
    int64_t y = 0;
    for (; y + 32 <= side; y += 32) column_chunk<true>(out + x * side + y, src + y, side, k, count[x], 32);
    if (y < side) column_chunk<false>(out + x * side + y, src + y, side, k, count[x], side - y);
  }
}

// One output row of n contiguous values: the last two vertical taps (rows r0, r1 of the
// horizontal pass, weights k0, k1; a missing tap has weight 0) added to `base` (PIL's
// rounding half, plus any earlier taps), rounded as PIL rounds, normalized with the
// per-position a[x], b[x] and stored: one pass over the row, every step vectorized.
template <typename T>
TRANSFER_INLINE void finish_row_loop(T* dst, const int32_t* base, const uint8_t* r0, const uint8_t* r1,
                                     int32_t k0, int32_t k1, const float* a, const float* b, int64_t n) {
  for (int64_t x = 0; x < n; ++x) store(dst[x], base[x] + r0[x] * k0 + r1[x] * k1, a[x], b[x]);
}
template <typename T>
TRANSFER_ROW_KERNEL void finish_row_any(T* dst, const int32_t* base, const uint8_t* r0, const uint8_t* r1,
                                        int32_t k0, int32_t k1, const float* a, const float* b, int64_t n) {
  finish_row_loop(dst, base, r0, r1, k0, k1, a, b, n);
}
// The same loop in 512-bit vectors, which need AVX-512BW for its byte and word steps
// (target_clones cannot name it), chosen once per process.
template <typename T>
TRANSFER_AVX512BW void finish_row_avx512(T* dst, const int32_t* base, const uint8_t* r0, const uint8_t* r1,
                                         int32_t k0, int32_t k1, const float* a, const float* b, int64_t n) {
  finish_row_loop(dst, base, r0, r1, k0, k1, a, b, n);
}
template <typename T>
void finish_row(T* dst, const int32_t* base, const uint8_t* r0, const uint8_t* r1, int32_t k0, int32_t k1,
                const float* a, const float* b, int64_t n) {
  static const bool avx512 = has_avx512bw();
  (avx512 ? finish_row_avx512<T> : finish_row_any<T>)(dst, base, r0, r1, k0, k1, a, b, n);
}

// The vertical pass for one output row: `taps` rows of the horizontal pass, `stride`
// bytes apart from `src`, weighted by k[0..taps). Upscaling (CIFAR's 32 px to the model's
// size) has at most two, one fused pass; more taps are summed into `scratch` first.
template <typename T>
void vertical_row(T* dst, const uint8_t* src, int64_t stride, const int32_t* k, int32_t taps, const int32_t* halves,
                  const float* a, const float* b, int64_t n, std::vector<int32_t>& scratch) {
  const int32_t* base = halves;
  int32_t t = 0;
  if (taps > 2) {
    scratch.assign(halves, halves + n);
    for (; t < taps - 2; ++t) accumulate_row(scratch.data(), src + t * stride, k[t], n);
    base = scratch.data();
  }
  const auto row = [&](int32_t i) { return t + i < taps ? src + (t + i) * stride : src; };
  const auto weight = [&](int32_t i) { return t + i < taps ? k[t + i] : 0; };
  finish_row(dst, base, row(0), row(1), weight(0), weight(1), a, b, n);
}

}  // namespace

Normalization normalization_by_name(const std::string& name) {
  if (name == "imagenet") return {name, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
  if (name == "half") return {name, {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
  usage_fail("unknown normalization '{}': use imagenet or half", name);
}

// Mirrors PIL's precompute_coeffs + normalize_coeffs_8bpc (Resample.c) for the
// bilinear filter: same centres, same rounding of bounds, same fixed-point rounding,
// so that the integer sums below equal PIL's bit for bit.
ResampleTaps bilinear_taps(int64_t in_size, int64_t out_size) {
  ResampleTaps taps;
  taps.in_size = in_size;
  taps.out_size = out_size;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;
  taps.taps_per_output = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  taps.first.resize(out_size);
  taps.count.resize(out_size);
  taps.weight.assign(out_size * taps.taps_per_output, 0);
  std::vector<double> w(taps.taps_per_output);
  for (int64_t out = 0; out < out_size; ++out) {
    const double center = (static_cast<double>(out) + 0.5) * scale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), static_cast<int>(in_size)) - xmin;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double d = std::abs((x + xmin - center + 0.5) / filter_scale);
      w[x] = d < 1.0 ? 1.0 - d : 0.0;
      total += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double k = total != 0.0 ? w[x] / total : w[x];
      const double scaled = k * (1 << kPrecisionBits);
      taps.weight[out * taps.taps_per_output + x] = static_cast<int32_t>(k < 0 ? scaled - 0.5 : scaled + 0.5);
    }
    // PIL keeps taps of weight 0 at the ends; they add nothing to a sum, so they are
    // dropped here once instead of being skipped in every pass.
    int32_t* k = &taps.weight[out * taps.taps_per_output];
    int lead = 0, count = xmax;
    while (lead < count && k[lead] == 0) ++lead;
    while (count > lead && k[count - 1] == 0) --count;
    std::copy(k + lead, k + count, k);
    std::fill(k + (count - lead), k + taps.taps_per_output, 0);
    taps.first[out] = xmin + lead;
    taps.count[out] = count - lead;
  }
  return taps;
}

namespace {
int64_t checked_size(int64_t size) {
  if (size < 1) usage_fail("image size must be positive, got {}", size);
  return size;
}
}  // namespace

Preprocessor::Preprocessor(int64_t size, Normalization normalization, int64_t input_side)
    : size_(checked_size(size)),
      input_side_(checked_size(input_side)),
      normalization_(std::move(normalization)),
      horizontal_(bilinear_taps(input_side_, size_)),
      vertical_(bilinear_taps(input_side_, size_)) {}

// PIL's two passes for every image of the batch, written straight into `dst` as T
// (store() above): the horizontal pass into 8-bit rows, laid out as the output is (one
// row per channel for NCHW, the channels interleaved for channels-last), so that the
// vertical pass, the rounding, the normalization and the store are one contiguous pass
// over each output row.
template <typename T>
void Preprocessor::write(const at::Tensor& images, T* dst, bool nchw) const {
  check_images(images, input_side_);
  const at::Tensor source = images.contiguous();
  const uint8_t* pixels = source.data_ptr<uint8_t>();
  const int64_t n = source.size(0), s = size_, side = input_side_;
  const ResampleTaps& h = horizontal_;
  const ResampleTaps& v = vertical_;
  const int64_t h_taps = h.taps_per_output;
  // ToTensor + Normalize as one multiply-add, (v/255 - mean)/std = v*a + b, given per
  // position of an output row: channel c's row at c*s (NCHW), or one row of s pixels'
  // three channels (channels-last).
  const int64_t width = nchw ? s : 3 * s;  // values in one output row
  std::vector<float> a(3 * s), b(3 * s);
  for (int64_t x = 0; x < s; ++x) {
    for (int64_t c = 0; c < 3; ++c) {
      const int64_t at = nchw ? c * s + x : 3 * x + c;
      a[at] = 1.0f / (255.0f * normalization_.stddev[c]);
      b[at] = -normalization_.mean[c] / normalization_.stddev[c];
    }
  }
  const std::vector<int32_t> halves(width, kHalf);

  auto one_image = [&](int64_t i) {
    // Per-thread scratch, reused across images: one channel transposed (side x side),
    // its horizontal pass by output column (s x side), the same as rows in the output's
    // layout (3 x side rows of s pixels), and the vertical sums when an output row has
    // more than two taps.
    thread_local std::vector<uint8_t> transposed, columns, rows;
    thread_local std::vector<int32_t> scratch;
    transposed.resize(side * side);
    columns.resize(s * side);
    rows.resize(3 * side * s);
    // Raw pointers: byte stores may alias anything, so the vectors' own pointers (and
    // thread-locals) would be reloaded on every iteration of the loops below.
    uint8_t* const flipped = transposed.data();
    uint8_t* const by_column = columns.data();
    uint8_t* const by_row = rows.data();
    const uint8_t* image = pixels + i * 3 * side * side;
    const int64_t step = nchw ? 1 : 3;
    for (int64_t c = 0; c < 3; ++c) {
      // The horizontal pass runs on the channel transposed, so that an output column's
      // taps are whole input columns and its sums vectorize over the column's pixels
      // (a scalar loop of taps per output pixel was the larger half of the work).
      const uint8_t* plane = image + c * side * side;
      for (int64_t y = 0; y < side; ++y) {
        for (int64_t x = 0; x < side; ++x) flipped[x * side + y] = plane[y * side + x];
      }
      horizontal_columns(by_column, flipped, h.first.data(), h.count.data(), h.weight.data(), h_taps, s, side);
      for (int64_t y = 0; y < side; ++y) {
        uint8_t* out = nchw ? by_row + (c * side + y) * s : by_row + y * 3 * s + c;
        for (int64_t x = 0; x < s; ++x) out[x * step] = by_column[x * side + y];
      }
    }
    for (int64_t y = 0; y < s; ++y) {
      const int32_t* k = &v.weight[y * v.taps_per_output];
      if (nchw) {
        for (int64_t c = 0; c < 3; ++c) {
          vertical_row(dst + ((i * 3 + c) * s + y) * s, by_row + (c * side + v.first[y]) * s, s, k, v.count[y],
                       halves.data(), a.data() + c * s, b.data() + c * s, s, scratch);
        }
      } else {
        vertical_row(dst + (i * s + y) * 3 * s, by_row + v.first[y] * 3 * s, 3 * s, k, v.count[y], halves.data(),
                     a.data(), b.data(), 3 * s, scratch);
      }
    }
  };
  if (parallel_) {
    tbb::parallel_for(int64_t{0}, n, one_image);
  } else {
    for (int64_t i = 0; i < n; ++i) one_image(i);
  }
}

at::Tensor Preprocessor::operator()(const at::Tensor& images, bool channels_last) const {
  at::Tensor out = torch::empty({images.size(0), 3, size_, size_},
                                torch::TensorOptions(torch::kFloat32)
                                    .memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                 : at::MemoryFormat::Contiguous));
  into(images, out);
  return out;
}

void Preprocessor::into(const at::Tensor& images, at::Tensor& out) const {
  const bool nchw = out.is_contiguous();
  const bool nhwc = !nchw && out.is_contiguous(at::MemoryFormat::ChannelsLast);
  const bool bf16 = out.scalar_type() == torch::kBFloat16;
  if (out.dim() != 4 || out.size(0) != images.size(0) || out.size(1) != 3 || out.size(2) != size_ ||
      out.size(3) != size_ || !(out.scalar_type() == torch::kFloat32 || bf16) || !(nchw || nhwc) ||
      !out.device().is_cpu()) {
    fail("preprocess output must be a contiguous (NCHW or channels-last) float32 or bfloat16 CPU tensor [{},3,{},{}]",
         images.size(0), size_, size_);
  }
  if (bf16) {
    write(images, reinterpret_cast<uint16_t*>(out.data_ptr<c10::BFloat16>()), nchw);
  } else {
    write(images, out.data_ptr<float>(), nchw);
  }
}

at::Tensor Preprocessor::resize(const at::Tensor& images) const {
  at::Tensor out = torch::empty({images.size(0), 3, size_, size_}, torch::kUInt8);
  write(images, out.data_ptr<uint8_t>(), /*nchw=*/true);
  return out;
}

std::pair<int64_t, int64_t> resized_size(int64_t width, int64_t height, int64_t shorter) {
  // torchvision 0.14's _compute_resized_output_size: the long side is
  // int(shorter * long / short), in Python's float arithmetic.
  const bool wide = width > height;
  const int64_t short_side = wide ? height : width, long_side = wide ? width : height;
  const auto new_long = static_cast<int64_t>(static_cast<double>(shorter) * static_cast<double>(long_side) /
                                             static_cast<double>(short_side));
  return wide ? std::pair{new_long, shorter} : std::pair{shorter, new_long};
}

at::Tensor resize_and_center_crop(const uint8_t* rgb, int64_t width, int64_t height, int64_t shorter, int64_t crop) {
  if (width < 1 || height < 1 || shorter < 1 || crop < 1 || crop > shorter) {
    fail("resize_and_center_crop: bad sizes ({}x{} image, shorter side {}, crop {})", width, height, shorter, crop);
  }
  const auto [out_w, out_h] = resized_size(width, height, shorter);
  // CenterCrop's offsets: int(round((size - crop) / 2.0)), Python's round (ties to even).
  const auto offset = [&](int64_t size) {
    return static_cast<int64_t>(std::nearbyint(static_cast<double>(size - crop) / 2.0));
  };
  const int64_t left = offset(out_w), top = offset(out_h);
  const ResampleTaps h = bilinear_taps(width, out_w), v = bilinear_taps(height, out_h);
  // PIL's order: the horizontal pass into 8-bit rows, then the vertical pass; only the
  // rows and columns the crop keeps are computed (each output pixel is independent).
  const int64_t row_first = v.first[top];
  int64_t row_end = row_first;
  for (int64_t y = top; y < top + crop; ++y) row_end = std::max<int64_t>(row_end, v.first[y] + v.count[y]);
  std::vector<uint8_t> rows(static_cast<size_t>((row_end - row_first) * crop * 3));
  for (int64_t r = row_first; r < row_end; ++r) {
    const uint8_t* in = rgb + r * width * 3;
    uint8_t* out = rows.data() + (r - row_first) * crop * 3;
    for (int64_t x = 0; x < crop; ++x) {
      const int64_t ox = left + x;
      const int32_t* k = &h.weight[ox * h.taps_per_output];
      for (int64_t c = 0; c < 3; ++c) {
        int32_t sum = kHalf;
        for (int32_t t = 0; t < h.count[ox]; ++t) sum += in[(h.first[ox] + t) * 3 + c] * k[t];
        out[x * 3 + c] = static_cast<uint8_t>(rounded(sum));
      }
    }
  }
  at::Tensor result = torch::empty({3, crop, crop}, torch::kUInt8);
  uint8_t* dst = result.data_ptr<uint8_t>();
  for (int64_t y = 0; y < crop; ++y) {
    const int64_t oy = top + y;
    const int32_t* k = &v.weight[oy * v.taps_per_output];
    for (int64_t x = 0; x < crop; ++x) {
      for (int64_t c = 0; c < 3; ++c) {
        int32_t sum = kHalf;
        for (int32_t t = 0; t < v.count[oy]; ++t) sum += rows[((v.first[oy] + t - row_first) * crop + x) * 3 + c] * k[t];
        dst[(c * crop + y) * crop + x] = static_cast<uint8_t>(rounded(sum));
      }
    }
  }
  return result;
}

}  // namespace pipeline
