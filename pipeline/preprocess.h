#pragma once
// Resize + normalize CIFAR images into model-ready float batches, in parallel (TBB).
//
// Pixel-exact with torchvision's PIL path: transforms.Resize((S,S)) on a PIL RGB image
// (PIL's two-pass bilinear resample in 8-bit fixed point: horizontal pass rounded to
// uint8, then vertical pass rounded to uint8), then ToTensor() (/255) and
// Normalize(mean, std). The resize is separable with its tap tables computed once per
// size; each image is independent, so a batch is split across TBB's worker threads.

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pipeline {

struct Normalization {
  std::string name;              // "imagenet" | "half"
  std::array<float, 3> mean{};   // per RGB channel, on the [0,1] scale
  std::array<float, 3> stddev{};
};

// "imagenet": mean (0.485,0.456,0.406), std (0.229,0.224,0.225) — the study's approach 1
// and torchvision's pretrained weights. "half": 0.5/0.5 (the study's approach 2).
// Throws pipeline::UsageError for another name.
Normalization normalization_by_name(const std::string& name);

// PIL's bilinear resample of one axis, as fixed-point taps (22 fractional bits). The
// taps of weight 0 that PIL keeps at either end are dropped (they add nothing), so
// first/count bound only the taps that weigh.
struct ResampleTaps {
  int64_t in_size = 0, out_size = 0, taps_per_output = 0;
  std::vector<int32_t> first;   // [out_size] first input index of each output
  std::vector<int32_t> count;   // [out_size] taps used
  std::vector<int32_t> weight;  // [out_size * taps_per_output] fixed-point weights
};
ResampleTaps bilinear_taps(int64_t in_size, int64_t out_size);

// torchvision's Resize(shorter) output size for a width x height image: the shorter
// side becomes `shorter`, the longer int(shorter * long / short). Returns (width, height).
std::pair<int64_t, int64_t> resized_size(int64_t width, int64_t height, int64_t shorter);

// torchvision's evaluation transform of a PIL RGB image: Resize(shorter) (PIL bilinear,
// antialiased when it shrinks) then CenterCrop(crop), pixel-exact with PIL. `rgb` is
// height x width x 3 (R G B) bytes. Returns [3,crop,crop] uint8 (CHW). Throws
// pipeline::Error for an empty image or crop > shorter.
at::Tensor resize_and_center_crop(const uint8_t* rgb, int64_t width, int64_t height, int64_t shorter, int64_t crop);

class Preprocessor {
 public:
  // size: output side S in pixels (>= 1); input_side: the images' side (CIFAR's 32, or
  // an image folder's crop). Thread-safe after construction.
  Preprocessor(int64_t size, Normalization normalization, int64_t input_side = 32);

  int64_t size() const { return size_; }
  const Normalization& normalization() const { return normalization_; }

  // images: [B,3,I,I] uint8 (CPU; I the input side) -> [B,3,S,S] float32, contiguous NCHW, or
  // channels-last (NHWC in memory, what the CPU model runs on) if asked.
  // Throws pipeline::Error for another shape or dtype.
  at::Tensor operator()(const at::Tensor& images, bool channels_last = false) const;

  // Same, writing into `out`: [B,3,S,S] float32 or bfloat16 on the CPU, contiguous in
  // NCHW or in channels-last format (e.g. a reused buffer, or pinned memory for a GPU).
  // bfloat16 holds the float32 values rounded as torch's .to(kBFloat16) rounds them.
  void into(const at::Tensor& images, at::Tensor& out) const;

  // The resize alone: [B,3,I,I] uint8 -> [B,3,S,S] uint8 (what PIL's resize returns).
  at::Tensor resize(const at::Tensor& images) const;

  // Run on the calling thread only (no TBB); for the single-thread benchmark.
  void set_parallel(bool parallel) { parallel_ = parallel; }

 private:
  template <typename T>
  void write(const at::Tensor& images, T* dst, bool nchw) const;

  int64_t size_, input_side_;
  Normalization normalization_;
  ResampleTaps horizontal_, vertical_;
  bool parallel_ = true;
};

}  // namespace pipeline
