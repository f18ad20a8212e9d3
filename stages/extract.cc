// transfer-extract: a frozen backbone's features of every CIFAR-10 image into an HDF5 cache.
#include <fmt/format.h>

#include "pipeline/extract.h"
#include "stages/cli.h"

int main(int argc, char** argv) {
  pipeline::ExtractOptions options;
  CLI::App app{"Run a frozen backbone once over a dataset (CIFAR-10, CIFAR-100) and cache the chosen layers in HDF5", "transfer-extract"};
  stages::add_data_flags(app, options);
  stages::add_backbone_flag(app, options.backbone, "the network (alexnet, resnet18, resnet50, vgg16)")
      ->capture_default_str();
  app.add_option("--weights", options.weights, "weights file, a folder holding the backbone's torchvision file, or random:SEED (default: data/<its file>)");
  app.add_option("--out", options.out, "cache file to write, e.g. cache/fc7.h5")->required();
  app.add_flag("--force", options.force, "rebuild even if a complete cache with these settings exists");
  app.add_option("--taps", options.taps,
                 "layers to cache, comma list (alexnet, vgg16: pool5, fc6, fc7, logits; resnets: pool, logits); "
                 "default: the layer before the classifier");
  app.add_option("--image-size", options.image_size, "resize 32 -> this many pixels (alexnet >= 63, others >= 32)")
      ->capture_default_str();
  app.add_option("--normalize", options.normalize, "imagenet or half (0.5/0.5)")
      ->capture_default_str()
      ->check(CLI::IsMember({"imagenet", "half"}));
  app.add_option("--batch-size", options.batch_size, "images per forward pass")->capture_default_str();
  stages::add_compute_flags(app, options.compute);
  app.add_option("--limit-train", options.limit_train, "use only the first N training images (-1: all)")
      ->capture_default_str();
  app.add_option("--limit-test", options.limit_test, "use only the first M test images (-1: all)")->capture_default_str();
  app.add_option("--dtype", options.dtype, "storage type: float32 or float16")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "float16"}));
  app.add_option("--stop-after", options.stop_after_batches, "stop after N batches, as if killed (for tests)")
      ->group("");
  stages::add_config_flag(app);
  return stages::run(app, argc, argv, [&] {
    const pipeline::ExtractSummary s = pipeline::run_extract(options);
    if (s.stopped) {
      fmt::print("{}: stopped early; rerun to resume\n", options.out.string());
    } else if (s.up_to_date) {
      fmt::print("{}: up to date ({:.1f} MiB)\n", options.out.string(), s.file_bytes / 1048576.0);
    } else {
      fmt::print("{}: {} images in {:.1f} s ({:.1f} images/s) on {}{}, {:.1f} MiB{}\n", options.out.string(), s.images,
                 s.seconds, s.images_per_second, s.device, s.resumed ? ", resumed" : "", s.file_bytes / 1048576.0,
                 stages::skipped_note(s.skipped));
    }
    return 0;
  });
}
