// transfer-extract's throughput against the backbone's bare forward pass on ready
// tensors (same size, precision, threads, one run): what decoding, preprocessing,
// copying and HDF5 writing cost on top of the model. Target: >= 0.95.
//   bench-extract [--backbone alexnet|resnet18|resnet50|vgg16] [image_size=224] [images=512] [precision=fp32]
#include <filesystem>
#include <string>

#include "bench_util.h"
#include "pipeline/extract.h"
#include "pipeline/synth.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  bench::print_machine();
  const pipeline::Backbone& backbone = bench::backbone_arg(argc, argv);
  const int64_t side = argc > 1 ? std::atoll(argv[1]) : 224;
  const int64_t images = argc > 2 ? std::atoll(argv[2]) : 512;
  const std::string precision = argc > 3 ? argv[3] : "fp32";
  const fs::path dir = fs::temp_directory_path() / "transfer-bench-extract";
  fs::remove_all(dir);
  pipeline::write_synthetic_cifar({dir / "data", std::max<int64_t>(images, 5), 64, 0});

  pipeline::ExtractOptions options;
  options.data = dir / "data";
  options.backbone = backbone.name();
  options.weights = "random:0";
  options.out = dir / "features.h5";
  options.image_size = side;
  options.batch_size = 64;
  options.compute = {"auto", precision, 0};
  const pipeline::ExtractSummary summary = pipeline::run_extract(options);
  const pipeline::Compute compute = pipeline::resolve_compute(options.compute);
  const double forward = bench::bare_forward_rate(backbone, side, options.batch_size, 4, compute);

  std::printf("extract stage: %lld images in %.2f s, %.1f images/s on %s\n", static_cast<long long>(summary.images),
              summary.seconds, summary.images_per_second, summary.device.c_str());
  std::printf("bare %s forward pass (%s, same settings): %.1f images/s\n", backbone.title().c_str(),
              backbone.default_tap().c_str(), forward);
  std::printf("ratio extract / bare forward: %.3f (target >= 0.95)\n", summary.images_per_second / forward);
  fs::remove_all(dir);
  return 0;
}
