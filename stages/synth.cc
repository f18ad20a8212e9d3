// transfer-synth: a CIFAR-10-format folder of learnable synthetic images.
#include <fmt/format.h>

#include "pipeline/synth.h"
#include "stages/cli.h"

int main(int argc, char** argv) {
  pipeline::SynthOptions options;
  CLI::App app{"Write a CIFAR-10-format folder of learnable synthetic images (tests, CI, demos)", "transfer-synth"};
  app.add_option("--out", options.out, "folder to create (replaced if it exists)")->required();
  app.add_option("--train", options.train, "training images (spread over data_batch_1..5.bin)")->capture_default_str();
  app.add_option("--test", options.test, "test images (test_batch.bin)")->capture_default_str();
  app.add_option("--seed", options.seed, "random seed")->capture_default_str();
  stages::add_config_flag(app);
  return stages::run(app, argc, argv, [&] {
    pipeline::write_synthetic_cifar(options);
    fmt::print("synthetic CIFAR-10: {} ({} train, {} test images, seed {})\n", options.out.string(), options.train,
               options.test, options.seed);
    return 0;
  });
}
