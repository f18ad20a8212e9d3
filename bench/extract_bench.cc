// transfer-extract's throughput against the backbone's bare forward pass on ready
// tensors (same size, precision, batch size, threads and number of images, one run):
// what decoding, preprocessing, copying and HDF5 writing cost on top of the model.
// The bare pass runs before and after the stage, so a machine that changes speed
// meanwhile shows as two different yardsticks instead of a wrong ratio. Then every
// batch's seconds and the stage's median batch against the same yardstick. Target: >= 0.95.
//   bench-extract [--backbone alexnet|resnet18|resnet50|vgg16] [--device auto|cpu|cuda] [--threads N] [image_size=224] [images=512] [precision=fp32]
#include <filesystem>
#include <string>

#include "bench_util.h"
#include "pipeline/extract.h"
#include "pipeline/synth.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  bench::print_machine();
  const pipeline::Backbone& backbone = bench::backbone_arg(argc, argv);
  pipeline::ComputeOptions compute_options = bench::compute_args(argc, argv);
  const int64_t side = argc > 1 ? std::atoll(argv[1]) : 224;
  const int64_t images = argc > 2 ? std::atoll(argv[2]) : 512;
  compute_options.precision = argc > 3 ? argv[3] : "fp32";
  const fs::path dir = fs::temp_directory_path() / "transfer-bench-extract";
  fs::remove_all(dir);
  pipeline::write_synthetic_cifar({dir / "data", std::max<int64_t>(images, 5), 64, 0});

  pipeline::ExtractOptions options;  // the stage's defaults (batch size included), as users run it
  options.data = dir / "data";
  options.backbone = backbone.name();
  options.weights = "random:0";
  options.out = dir / "features.h5";
  options.image_size = side;
  options.compute = compute_options;
  const pipeline::Compute compute = bench::resolve_or_exit(options.compute);
  pipeline::keep_freed_memory();  // the yardstick at its best too: no page faults per batch (the stage does the same)
  // The stage writes every training image and the 64 test images; the bare pass runs
  // as many images in whole batches.
  const int64_t bare_batches = std::max<int64_t>(1, (images + 64) / options.batch_size);
  const double before = bench::bare_forward_rate(backbone, side, options.batch_size, bare_batches, compute);
  const pipeline::ExtractSummary summary = pipeline::run_extract(options);
  const double after = bench::bare_forward_rate(backbone, side, options.batch_size, bare_batches, compute);

  std::printf("extract stage: %lld images in %.2f s, %.1f images/s on %s (batch %lld)\n",
              static_cast<long long>(summary.images), summary.seconds, summary.images_per_second,
              summary.device.c_str(), static_cast<long long>(options.batch_size));
  std::printf("  of which reading + preprocessing %.2f s, model %.2f s, cache writes %.2f s\n", summary.preprocess_seconds,
              summary.model_seconds, summary.write_seconds);
  std::printf("bare %s forward pass (%s, same settings, %lld images): %.1f images/s before the stage, %.1f after\n",
              backbone.title().c_str(), backbone.default_tap().c_str(),
              static_cast<long long>(bare_batches * options.batch_size), before, after);
  bench::print_ratio("extract / bare forward", summary.images_per_second, before, after);
  bench::print_steps("extract stage", summary.batch_seconds, options.batch_size, /*last_partial=*/true, before, after);
  fs::remove_all(dir);
  return 0;
}
