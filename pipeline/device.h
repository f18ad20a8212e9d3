#pragma once
// Where and how the model computes: --device auto|cpu|cuda, --precision fp32|bf16|fp16,
// --threads N. CUDA is chosen at run time, never at compile time. The autocast API
// moved between LibTorch 1.13 and 2.x; AutocastGuard is the one place that knows.

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace pipeline {

enum class Precision { Fp32, Bf16, Fp16 };
Precision parse_precision(const std::string& name);  // UsageError for another name
std::string to_string(Precision precision);           // "fp32" | "bf16" | "fp16"

struct ComputeOptions {
  std::string device = "auto";     // auto: CUDA when present, else CPU
  std::string precision = "fp32";
  int threads = 0;                 // CPU threads for LibTorch; 0: every core
};

struct Compute {
  c10::Device device = c10::Device(c10::kCPU);
  Precision precision = Precision::Fp32;
  int threads = 1;
  bool cuda() const { return device.is_cuda(); }
  c10::ScalarType dtype() const;   // Float, BFloat16 or Half
  std::string describe() const;    // e.g. "cpu (2 threads), fp32" or "cuda:0 (1 CUDA device(s)), bf16"
};

// Resolves the options and applies the thread count to LibTorch (LibTorch defaulted to
// 1 thread on a 2-core machine). Throws UsageError for an unknown device/precision,
// fp16 on CPU, or --device cuda without a GPU.
Compute resolve_compute(const ComputeOptions& options);

// Autocast to compute.precision's dtype on compute's device for its lifetime (no-op for
// fp32). The only #if on the LibTorch version lives behind this.
class AutocastGuard {
 public:
  explicit AutocastGuard(const Compute& compute);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
};

// "LibTorch 1.13.1" etc., for provenance and reports.
std::string torch_version();

// Keeps memory the process frees for its next use instead of returning it to the
// system (glibc: no mmap for large blocks, no trimming). A model's activations are
// freed after every batch; returned, the next batch pays page faults for them again
// (measured: the bf16 AlexNet forward pass ran 15 % slower inside transfer-extract than
// alone, and at its bare speed with this). The process then stays at its peak memory,
// which a stage that runs batch after batch reaches anyway. Process-wide; idempotent.
void keep_freed_memory();

}  // namespace pipeline
