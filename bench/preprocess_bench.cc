// Preprocessing throughput (resize 32 -> S + normalize) on 1 thread and on all, and its
// ratio to AlexNet's forward pass at the same size: preprocessing must never be what
// the model waits for. Target (issue): >= 10,000 images/s on 2 cores at 224 px.
#include <tbb/global_control.h>

#include <algorithm>
#include <thread>

#include "bench_util.h"
#include "pipeline/preprocess.h"

int main(int argc, char** argv) {
  bench::print_machine();
  const int64_t side = argc > 1 ? std::atoll(argv[1]) : 224;
  const int64_t batch = 256, rounds = 8;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const at::Tensor images = torch::randint(0, 256, {batch, 3, 32, 32}, torch::kUInt8);
  pipeline::Preprocessor preprocess(side, pipeline::normalization_by_name("imagenet"));
  // Both layouts: NCHW (CUDA batches) and channels-last, which CPU extraction and
  // fine-tuning write straight into; the target is judged on the slower of the two.
  at::Tensor nchw = torch::empty({batch, 3, side, side});
  at::Tensor channels_last = torch::empty({batch, 3, side, side}, at::MemoryFormat::ChannelsLast);

  auto rate = [&](bool parallel, at::Tensor& out) {
    preprocess.set_parallel(parallel);
    preprocess.into(images, out);  // warm-up: page in the output
    return batch * rounds / bench::seconds([&] {
             for (int64_t r = 0; r < rounds; ++r) preprocess.into(images, out);
           });
  };
  const double one = rate(false, nchw), one_cl = rate(false, channels_last);
  double all = 0, all_cl = 0;
  {
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism, cores);
    all = rate(true, nchw);
    all_cl = rate(true, channels_last);
  }
  pipeline::Compute compute = pipeline::resolve_compute({"cpu", "fp32", cores});
  const double forward = bench::bare_forward_rate(pipeline::backbone("alexnet"), side, 64, 3, compute);
  std::printf("preprocess %lld px, NCHW: 1 thread %.0f images/s, %d threads %.0f images/s (x%.2f)\n",
              static_cast<long long>(side), one, cores, all, all / one);
  std::printf("preprocess %lld px, channels-last: 1 thread %.0f images/s, %d threads %.0f images/s (x%.2f)\n",
              static_cast<long long>(side), one_cl, cores, all_cl, all_cl / one_cl);
  const double slower = std::min(all, all_cl);
  std::printf("AlexNet forward (fp32, channels-last, %d threads): %.0f images/s\n", cores, forward);
  std::printf("ratio preprocessing / forward pass: %.1f (preprocessing is %.1f%% of the forward pass's time)\n",
              slower / forward, 100.0 * forward / slower);
  std::printf("target >= 10000 images/s on 2 cores at 224 px: %s\n", slower >= 10000 ? "met" : "NOT met");
  return 0;
}
