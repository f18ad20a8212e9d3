// Heads on a full-size cache (60,000 x 4,096 fc7-like features, generated): seconds for
// 10 epochs of one head, for a 32-head sweep and its cost per head relative to a lone
// head, and the ratio of 10 head epochs to ONE forward pass of the backbone over the
// same 40,000 training images (what the study paid every epoch).
// Targets (2-core CPU): one head <= 5 s (aim <= 1 s); 32-head sweep <= 20 s and
// <= half a lone head's cost per head.
//   bench-head [rows=60000] [width=4096]
#include <nlohmann/json.hpp>

#include <filesystem>

#include "bench_util.h"
#include "pipeline/features.h"
#include "pipeline/head.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 60000;
  const int64_t width = argc > 2 ? std::atoll(argv[2]) : 4096;
  const int64_t train = rows * 5 / 6, test = rows - train;
  const fs::path dir = fs::temp_directory_path() / "transfer-bench-head";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path cache = dir / "fc7.h5";
  {
    // Class-dependent sparse non-negative features, like fc7 after its ReLU.
    torch::manual_seed(0);
    const at::Tensor centres = torch::randn({10, width});
    pipeline::FeatureWriter writer(cache, nlohmann::json{{"settings", {{"bench", true}}}},
                                   {train, test, {{"fc7", width}}, pipeline::FeatureDtype::Float32});
    for (const auto& [split, n] : {std::pair<std::string, int64_t>{"train", train}, {"test", test}}) {
      for (int64_t row = 0; row < n; row += 5000) {
        const int64_t count = std::min<int64_t>(5000, n - row);
        const at::Tensor labels = torch::arange(row, row + count) % 10;
        writer.write(split, row, labels, {{"fc7", (centres.index_select(0, labels) + torch::randn({count, width})).relu()}});
      }
    }
    writer.finish();
  }
  pipeline::HeadOptions options;
  options.features = cache;
  options.out = dir / "one";
  const pipeline::HeadSummary one = pipeline::run_head(options);
  options.out = dir / "sweep";
  options.sweep_lr = {1e-4, 3e-4, 1e-3, 3e-3};
  options.sweep_wd = {0, 1e-4};
  options.sweep_seeds = 4;
  const pipeline::HeadSummary sweep = pipeline::run_head(options);

  const pipeline::Compute compute = pipeline::resolve_compute({"cpu", "fp32", 0});
  const double forward_rate = bench::bare_forward_rate(224, 64, 3, compute);
  const double forward_pass_seconds = static_cast<double>(train - train / 5) / forward_rate;
  const double one_s = one.best.train_seconds, sweep_s = sweep.best.train_seconds;
  std::printf("cache: %lld x %lld float32, read in %.2f s\n", static_cast<long long>(rows),
              static_cast<long long>(width), one.read_seconds);
  std::printf("one head, 10 epochs: %.2f s (target <= 5 s, aim <= 1 s)\n", one_s);
  std::printf("%lld-head sweep, 10 epochs: %.2f s (target <= 20 s); per head %.3f s = %.2f of a lone head (target <= 0.5)\n",
              static_cast<long long>(sweep.heads), sweep_s, sweep_s / sweep.heads, sweep_s / sweep.heads / one_s);
  std::printf("one backbone forward pass over %lld images at 224 px (fp32, %.0f images/s): %.0f s\n",
              static_cast<long long>(train - train / 5), forward_rate, forward_pass_seconds);
  std::printf("ratio 10 head epochs / one backbone pass: %.4f (the study paid that pass every epoch)\n",
              one_s / forward_pass_seconds);
  fs::remove_all(dir);
  return 0;
}
