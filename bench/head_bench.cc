// Heads on a full-size cache (60,000 x 4,096 fc7-like features, generated): seconds for
// 10 epochs of one head, for a 32-head sweep (float32, and with bf16 products) and its
// cost per head relative to a lone head, the sweep against its own matrix products
// timed alone in the same run (the floor: what is left is Adam, softmax, batching and
// scoring), and the ratio of 10 head epochs to ONE forward pass of the backbone over the
// same 40,000 training images (what the study paid every epoch).
// Targets (2-core CPU): one head <= 5 s (aim <= 1 s); 32-head sweep <= 20 s and
// <= half a lone head's cost per head.
//   bench-head [rows=60000] [width=4096]
#include <nlohmann/json.hpp>

#include <filesystem>

#include "bench_util.h"
#include "pipeline/batches.h"
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
  options.out = dir / "sweep-bf16";
  options.precision = "bf16";
  const pipeline::HeadSummary sweep_bf16 = pipeline::run_head(options);

  // The sweep's float32 matrix products alone, on ready tensors: per step the forward
  // [B,D]x[D,K*C] and the weight gradient [K*C,B]x[B,D]; per epoch the validation's
  // forward products in the heads' scoring batches; once, the test's.
  const int64_t width_out = sweep.heads * 10, batch = options.batch_size;
  const pipeline::TrainValSplit split = pipeline::split_train_val(train, options.val_fraction, options.seed);
  const auto train_rows = static_cast<int64_t>(split.train.size()), val_rows = static_cast<int64_t>(split.val.size());
  const int64_t steps = options.epochs * ((train_rows + batch - 1) / batch);
  const int64_t eval_rows = options.epochs * val_rows + test;
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::rand({batch, width}), w = torch::rand({width_out, width}), b = torch::rand({width_out});
  const at::Tensor g = torch::rand({batch, width_out}), x_eval = torch::rand({pipeline::kHeadEvalBatchSize, width});
  at::Tensor grad = torch::empty({width_out, width});
  const int64_t probe_steps = 300, probe_evals = 20;
  const double step_s = bench::seconds([&] {
    for (int64_t i = 0; i < probe_steps; ++i) {
      torch::addmm(b, x, w.t());
      at::mm_out(grad, g.t(), x);
    }
  }) / probe_steps;
  const double eval_s = bench::seconds([&] {
    for (int64_t i = 0; i < probe_evals; ++i) torch::addmm(b, x_eval, w.t());
  }) / (probe_evals * pipeline::kHeadEvalBatchSize);
  const double floor_s = steps * step_s + eval_rows * eval_s;

  const pipeline::Compute compute = pipeline::resolve_compute({"cpu", "fp32", 0});
  const double forward_rate = bench::bare_forward_rate(224, 64, 3, compute);
  const double forward_pass_seconds = static_cast<double>(train_rows) / forward_rate;
  const double one_s = one.best.train_seconds, sweep_s = sweep.best.train_seconds;
  std::printf("cache: %lld x %lld float32, read in %.2f s\n", static_cast<long long>(rows),
              static_cast<long long>(width), one.read_seconds);
  std::printf("one head, 10 epochs: %.2f s (target <= 5 s, aim <= 1 s)\n", one_s);
  std::printf("%lld-head sweep, 10 epochs: %.2f s (target <= 20 s); per head %.3f s = %.2f of a lone head (target <= 0.5)\n",
              static_cast<long long>(sweep.heads), sweep_s, sweep_s / sweep.heads, sweep_s / sweep.heads / one_s);
  std::printf("  its float32 matrix products alone (%lld steps + scoring %lld rows): %.2f s; sweep / products = %.2f\n",
              static_cast<long long>(steps), static_cast<long long>(eval_rows), floor_s, sweep_s / floor_s);
  std::printf("  the same sweep with --precision bf16: %.2f s (%.2fx faster)\n", sweep_bf16.best.train_seconds,
              sweep_s / sweep_bf16.best.train_seconds);
  std::printf("one backbone forward pass over %lld images at 224 px (fp32, %.0f images/s): %.0f s\n",
              static_cast<long long>(train_rows), forward_rate, forward_pass_seconds);
  std::printf("ratio 10 head epochs / one backbone pass: %.4f (the study paid that pass every epoch)\n",
              one_s / forward_pass_seconds);
  fs::remove_all(dir);
  return 0;
}
