#pragma once
// Shared pieces of the benchmarks: wall-clock timing and a backbone's bare forward pass,
// the yardstick every stage's throughput is compared with (in the same run, on the
// same machine, so that the printed ratios mean something on a noisy shared box).

#include <torch/torch.h>

#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/models/backbone_net.h"
#include "pipeline/device.h"
#include "pipeline/error.h"

namespace bench {

// The core generation of an x86 CPU from /proc/cpuinfo's vendor, family and model, for
// VMs that name every CPU "AMD EPYC" or "Intel Xeon" alone; "" when not in this table.
inline std::string cpu_generation(const std::string& vendor, int family, int model) {
  if (vendor == "AuthenticAMD") {
    if (family == 0x17) return "Zen, Zen+ or Zen 2";
    if (family == 0x1A) return "Zen 5";
    if (family == 0x19) {
      const bool zen4 = (model >= 0x10 && model <= 0x1F) || (model >= 0x60 && model <= 0x7F) ||
                        (model >= 0xA0 && model <= 0xAF);
      return zen4 ? "Zen 4" : "Zen 3";
    }
  }
  if (vendor == "GenuineIntel" && family == 6) {
    switch (model) {
      case 0x55: return "Skylake-SP or Cascade Lake";
      case 0x6A: case 0x6C: return "Ice Lake-SP";
      case 0x8F: return "Sapphire Rapids";
      case 0xCF: return "Emerald Rapids";
      case 0xAD: case 0xAE: return "Granite Rapids";
      default: break;
    }
  }
  return "";
}

// The machine the figures are from, first in every benchmark's output: they differ
// threefold between CPUs (AMX-BF16 or not). Reads /proc/cpuinfo (Linux).
inline void print_machine() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model = "unknown CPU", flags, vendor;
  int family = -1, model_number = -1;
  const auto value = [&line] { return line.substr(line.find(':') + 1); };
  const auto number = [&](int& out) {
    if (out < 0) out = std::atoi(value().c_str());
  };
  while (std::getline(in, line)) {
    if (model == "unknown CPU" && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = " " + value() + " ";
    if (vendor.empty() && line.rfind("vendor_id", 0) == 0) vendor = line.substr(line.find(':') + 2);
    if (line.rfind("cpu family", 0) == 0) number(family);
    if (line.rfind("model\t", 0) == 0) number(model_number);  // not "model name"
  }
  const auto has = [&](const char* flag) { return flags.find(std::string(" ") + flag + " ") != std::string::npos; };
  std::string id;
  if (family >= 0 && model_number >= 0) {
    const std::string generation = cpu_generation(vendor, family, model_number);
    id = " (family " + std::to_string(family) + " model " + std::to_string(model_number) +
         (generation.empty() ? "" : ": " + generation) + ")";
  }
  std::printf("machine: %s%s, %u cores; AVX-512: %s, AVX512-BF16: %s, AMX-BF16: %s; LibTorch %s\n", model.c_str(),
              id.c_str(), std::thread::hardware_concurrency(), has("avx512f") ? "yes" : "no",
              has("avx512_bf16") ? "yes" : "no", has("amx_bf16") ? "yes" : "no", TORCH_VERSION);
}

// Seconds taken by f().
inline double seconds(const std::function<void()>& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A stage's rate against its yardstick timed before and after it (images/s each): the
// ratio to the yardstick's mean, which the target is about, and to the faster of the two.
inline void print_ratio(const char* what, double stage, double before, double after) {
  std::printf("ratio %s: %.3f (target >= 0.95; %.3f against the faster of the two)\n", what,
              stage / ((before + after) / 2), stage / std::max(before, after));
}

// Every step (batch) of a stage in order, so that a slowdown cannot hide in the average,
// then the stage's median full step as images/s against its yardstick: a fixed warm-up
// (first-touch pages, oneDNN's kernels made) weighs on a short run, not on a long one.
// A last step that is a partial batch is left out of the median and the warm-up.
inline void print_steps(const char* what, const std::vector<double>& steps_s, int64_t batch, bool last_partial,
                        double before, double after) {
  std::printf("%s steps (s):", what);
  for (const double s : steps_s) std::printf(" %.3f", s);
  std::printf("\n");
  const size_t full = steps_s.size() - (last_partial && !steps_s.empty() ? 1 : 0);
  if (full < 2) return;
  std::vector<double> sorted(steps_s.begin(), steps_s.begin() + static_cast<std::ptrdiff_t>(full));
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  double total = 0, extra = 0;
  for (size_t i = 0; i < full; ++i) {
    total += steps_s[i];
    extra += steps_s[i] - median;
  }
  std::printf("%s median step: %.1f images/s; the steps took %+.2f s against as many median steps (%+.1f%%)\n",
              what, static_cast<double>(batch) / median, extra, 100 * extra / total);
  print_ratio((std::string(what) + " median step / yardstick").c_str(), static_cast<double>(batch) / median, before,
              after);
}

// Takes `--name VALUE` out of argv (the positional arguments stay in order) and returns
// VALUE, or `fallback` when the flag is absent.
inline std::string take_flag(int& argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] != name) continue;
    const std::string value = argv[i + 1];
    for (int j = i; j + 2 < argc; ++j) argv[j] = argv[j + 2];
    argc -= 2;
    return value;
  }
  return fallback;
}

// The --backbone flag's value (alexnet when absent). Unknown names end the benchmark
// with the registered ones listed.
inline const pipeline::Backbone& backbone_arg(int& argc, char** argv) {
  const std::string name = take_flag(argc, argv, "--backbone", "alexnet");
  try {
    return pipeline::backbone(name);
  } catch (const pipeline::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(2);
  }
}

// The stage's --device and --threads flags (auto and every core when absent); the
// caller sets the precision. A --threads that is not a whole number ends the benchmark.
inline pipeline::ComputeOptions compute_args(int& argc, char** argv) {
  const std::string device = take_flag(argc, argv, "--device", "auto");
  const std::string threads = take_flag(argc, argv, "--threads", "0");
  char* end = nullptr;
  const long n = std::strtol(threads.c_str(), &end, 10);
  if (threads.empty() || *end != '\0') {
    std::fprintf(stderr, "--threads must be a whole number, got '%s'\n", threads.c_str());
    std::exit(2);
  }
  return {device, "fp32", static_cast<int>(n)};
}

// resolve_compute, with a bad device, precision or thread count ending the benchmark
// (exit 2, the message on stderr) instead of an uncaught exception.
inline pipeline::Compute resolve_or_exit(const pipeline::ComputeOptions& options) {
  try {
    return pipeline::resolve_compute(options);
  } catch (const pipeline::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(2);
  }
}

// Images per second of the backbone's eval forward pass (its default tap and below,
// channels-last on a CPU, the given precision) on ready tensors of `side` pixels, after
// one warm-up batch.
inline double bare_forward_rate(const pipeline::Backbone& backbone, int64_t side, int64_t batch, int64_t batches,
                                const pipeline::Compute& compute) {
  torch::NoGradGuard no_grad;
  const std::shared_ptr<pipeline::BackboneNet> model = backbone.build();
  model->eval();
  model->to(compute.device);
  if (!compute.cuda()) pipeline::to_channels_last(*model);
  if (compute.precision != pipeline::Precision::Fp32) model->to(compute.dtype());
  at::Tensor x = torch::randn({batch, 3, side, side}).to(compute.device);
  if (!compute.cuda()) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  x = x.to(compute.dtype());
  auto run = [&] {
    auto out = model->forward_taps(x, {backbone.default_tap()});
    out.begin()->second.to(torch::kCPU);
  };
  run();
  const double s = seconds([&] {
    for (int64_t i = 0; i < batches; ++i) run();
  });
  return static_cast<double>(batch * batches) / s;
}

}  // namespace bench
