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

// The row kernels, compiled for AVX2 as well as the baseline (simd.h): the baseline
// x86-64 (SSE2) has neither a 32-bit integer multiply-low nor 256-bit vectors, which
// these loops are made of. Built without FMA contraction (CMakeLists.txt), every clone
// gives the same bits.
#define TRANSFER_ROW_KERNEL TRANSFER_CLONES("avx2", "default")

TRANSFER_ROW_KERNEL void accumulate_row(int32_t* acc, const uint8_t* src, int32_t weight, int64_t n) {
  for (int64_t x = 0; x < n; ++x) acc[x] += src[x] * weight;
}

TRANSFER_ROW_KERNEL void normalize_row(float* dst, const int32_t* sums, float a, float b, int64_t n) {
  for (int64_t x = 0; x < n; ++x) dst[x] = static_cast<float>(rounded(sums[x])) * a + b;
}

TRANSFER_ROW_KERNEL void normalize_row_interleaved(float* dst, const int32_t* const* sums, const float* a,
                                                   const float* b, int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    dst[3 * x + 0] = static_cast<float>(rounded(sums[0][x])) * a[0] + b[0];
    dst[3 * x + 1] = static_cast<float>(rounded(sums[1][x])) * a[1] + b[1];
    dst[3 * x + 2] = static_cast<float>(rounded(sums[2][x])) * a[2] + b[2];
  }
}

// float -> bfloat16 bits rounded to nearest, ties to even: c10::BFloat16's rounding
// without its NaN branch (these values are always finite), so that a row vectorizes.
inline uint16_t bf16_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// The same values rounded to bfloat16 as torch's .to(kBFloat16) rounds them, straight
// into the model's input: a bf16 model then needs no float batch and no conversion pass.
TRANSFER_ROW_KERNEL void normalize_row(uint16_t* dst, const int32_t* sums, float a, float b, int64_t n) {
  for (int64_t x = 0; x < n; ++x) dst[x] = bf16_bits(static_cast<float>(rounded(sums[x])) * a + b);
}

TRANSFER_ROW_KERNEL void normalize_row_interleaved(uint16_t* dst, const int32_t* const* sums, const float* a,
                                                   const float* b, int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    dst[3 * x + 0] = bf16_bits(static_cast<float>(rounded(sums[0][x])) * a[0] + b[0]);
    dst[3 * x + 1] = bf16_bits(static_cast<float>(rounded(sums[1][x])) * a[1] + b[1]);
    dst[3 * x + 2] = bf16_bits(static_cast<float>(rounded(sums[2][x])) * a[2] + b[2]);
  }
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
    taps.first[out] = xmin;
    taps.count[out] = xmax;
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

// Runs both passes for every image of the batch and hands each output row's
// fixed-point sums (PIL's accumulators before rounding; one S-long array per channel)
// to sink(image, row, sums[3]); the sink rounds them with `rounded`.
template <typename Sink>
void Preprocessor::run(const at::Tensor& images, Sink sink) const {
  check_images(images, input_side_);
  const at::Tensor source = images.contiguous();
  const uint8_t* pixels = source.data_ptr<uint8_t>();
  const int64_t n = source.size(0), s = size_, side = input_side_;
  const ResampleTaps& h = horizontal_;
  const ResampleTaps& v = vertical_;
  const int64_t h_taps = h.taps_per_output;

  auto one_image = [&](int64_t i) {
    // Per-thread scratch, reused across images: horizontal pass output [3][32][S], the
    // vertical accumulators [3][S], and one input row padded so that every output can
    // read a fixed number of taps (the padding taps have weight 0).
    thread_local std::vector<uint8_t> rows;
    thread_local std::vector<int32_t> sums;
    thread_local std::vector<uint8_t> padded;
    rows.resize(3 * side * s);
    sums.resize(3 * s);
    padded.assign(side + h_taps, 0);
    const uint8_t* image = pixels + i * 3 * side * side;
    for (int64_t c = 0; c < 3; ++c) {
      for (int64_t y = 0; y < side; ++y) {
        std::copy(image + (c * side + y) * side, image + (c * side + y + 1) * side, padded.begin());
        uint8_t* out = rows.data() + (c * side + y) * s;
        for (int64_t x = 0; x < s; ++x) {
          const int32_t* k = &h.weight[x * h_taps];
          const uint8_t* src = padded.data() + h.first[x];
          int32_t sum = kHalf;
          for (int64_t t = 0; t < h_taps; ++t) sum += src[t] * k[t];
          out[x] = static_cast<uint8_t>(rounded(sum));
        }
      }
    }
    const int32_t* channel_sums[3] = {sums.data(), sums.data() + s, sums.data() + 2 * s};
    for (int64_t y = 0; y < s; ++y) {
      const int32_t* k = &v.weight[y * v.taps_per_output];
      for (int64_t c = 0; c < 3; ++c) {
        // Vertical taps: whole rows at a time, so the inner loops run over contiguous
        // pixels and vectorize.
        int32_t* acc = sums.data() + c * s;
        std::fill(acc, acc + s, kHalf);
        for (int32_t t = 0; t < v.count[y]; ++t) {
          const uint8_t* src = rows.data() + (c * side + v.first[y] + t) * s;
          accumulate_row(acc, src, k[t], s);
        }
      }
      sink(i, y, channel_sums);
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

template <typename T>
void Preprocessor::write(const at::Tensor& images, T* dst, bool nchw) const {
  const int64_t s = size_;
  // ToTensor + Normalize as one multiply-add: (v/255 - mean)/std = v*a + b.
  std::array<float, 3> a{}, b{};
  for (int c = 0; c < 3; ++c) {
    a[c] = 1.0f / (255.0f * normalization_.stddev[c]);
    b[c] = -normalization_.mean[c] / normalization_.stddev[c];
  }
  if (nchw) {
    run(images, [&](int64_t i, int64_t y, const int32_t* const* sums) {
      for (int64_t c = 0; c < 3; ++c) normalize_row(dst + ((i * 3 + c) * s + y) * s, sums[c], a[c], b[c], s);
    });
  } else {
    // Channels-last, what the CPU model takes: writing it here saves a full copy.
    run(images, [&](int64_t i, int64_t y, const int32_t* const* sums) {
      normalize_row_interleaved(dst + (i * s + y) * s * 3, sums, a.data(), b.data(), s);
    });
  }
}

at::Tensor Preprocessor::resize(const at::Tensor& images) const {
  at::Tensor out = torch::empty({images.size(0), 3, size_, size_}, torch::kUInt8);
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t s = size_;
  run(images, [&](int64_t i, int64_t y, const int32_t* const* sums) {
    for (int64_t c = 0; c < 3; ++c) {
      uint8_t* row = dst + ((i * 3 + c) * s + y) * s;
      for (int64_t x = 0; x < s; ++x) row[x] = static_cast<uint8_t>(rounded(sums[c][x]));
    }
  });
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
