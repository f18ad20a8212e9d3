#include "pipeline/device.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <thread>

#include "pipeline/error.h"

namespace pipeline {

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::Fp32;
  if (name == "bf16") return Precision::Bf16;
  if (name == "fp16") return Precision::Fp16;
  usage_fail("unknown precision '{}': use fp32, bf16 or fp16", name);
}

std::string to_string(Precision precision) {
  switch (precision) {
    case Precision::Bf16: return "bf16";
    case Precision::Fp16: return "fp16";
    default: return "fp32";
  }
}

c10::ScalarType Compute::dtype() const {
  switch (precision) {
    case Precision::Bf16: return c10::kBFloat16;
    case Precision::Fp16: return c10::kHalf;
    default: return c10::kFloat;
  }
}

std::string Compute::describe() const {
  if (cuda()) return fmt::format("{} ({} CUDA device(s)), {}", device.str(), torch::cuda::device_count(), to_string(precision));
  return fmt::format("cpu ({} threads), {}", threads, to_string(precision));
}

Compute resolve_compute(const ComputeOptions& options) {
  Compute compute;
  compute.precision = parse_precision(options.precision);
  if (options.device == "auto") {
    compute.device = torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  } else if (options.device == "cuda") {
    if (!torch::cuda::is_available()) {
      usage_fail("--device cuda asked for, but LibTorch sees no CUDA device (a CPU-only LibTorch, or no GPU): use --device cpu or auto");
    }
    compute.device = c10::Device(c10::kCUDA, 0);
  } else if (options.device == "cpu") {
    compute.device = c10::Device(c10::kCPU);
  } else {
    usage_fail("unknown device '{}': use auto, cpu or cuda", options.device);
  }
  if (compute.precision == Precision::Fp16 && !compute.cuda()) {
    usage_fail("--precision fp16 needs a CUDA device; on a CPU use bf16 or fp32");
  }
  if (options.threads < 0) usage_fail("--threads must be >= 0, got {}", options.threads);
  compute.threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(compute.threads);
  return compute;
}

// LibTorch 2.4 replaced the per-device setters (set_enabled / set_cpu_enabled and
// set_autocast_{cpu,gpu}_dtype) by ones taking a device type.
#if (TORCH_VERSION_MAJOR > 2) || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define TRANSFER_AUTOCAST_BY_DEVICE 1
#endif

AutocastGuard::AutocastGuard(const Compute& compute) : cuda_(compute.cuda()) {
  if (compute.precision == Precision::Fp32) return;
  active_ = true;
#ifdef TRANSFER_AUTOCAST_BY_DEVICE
  const auto type = cuda_ ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_dtype(type, compute.dtype());
  at::autocast::set_autocast_enabled(type, true);
#else
  if (cuda_) {
    at::autocast::set_autocast_gpu_dtype(compute.dtype());
    at::autocast::set_enabled(true);
  } else {
    at::autocast::set_autocast_cpu_dtype(compute.dtype());
    at::autocast::set_cpu_enabled(true);
  }
#endif
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
#ifdef TRANSFER_AUTOCAST_BY_DEVICE
  at::autocast::set_autocast_enabled(cuda_ ? at::kCUDA : at::kCPU, false);
#else
  if (cuda_) {
    at::autocast::set_enabled(false);
  } else {
    at::autocast::set_cpu_enabled(false);
  }
#endif
  at::autocast::clear_cache();
}

std::string torch_version() { return "LibTorch " TORCH_VERSION; }

void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);         // large blocks from the heap, not fresh mappings
  mallopt(M_TRIM_THRESHOLD, -1);  // never give the heap's top back
#endif
}

}  // namespace pipeline
