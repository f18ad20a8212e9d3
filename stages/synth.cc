// transfer-synth: a CIFAR-10-format (or CIFAR-100-format) folder of learnable synthetic
// images, or (--dataset folder:PATH) the CIFAR-10 ones as an image folder of PNGs.
#include <fmt/format.h>

#include "pipeline/datasets/dataset.h"
#include "stages/cli.h"

int main(int argc, char** argv) {
  std::string dataset = "cifar10";
  std::filesystem::path out;
  int64_t train = 5000, test = 1000;
  uint64_t seed = 0;
  CLI::App app{"Write a CIFAR-format folder of learnable synthetic images (tests, CI, demos)", "transfer-synth"};
  std::filesystem::path root;
  auto* out_flag = app.add_option("--out", out, "folder to create (replaced if it exists)");
  app.add_option("--root", root, "instead of --out: write ROOT/<the dataset's folder name>, where transfer-fetch would")
      ->excludes(out_flag);
  stages::add_dataset_flag(app, dataset)->capture_default_str();
  app.add_option("--train", train, "training images (CIFAR-10: spread over data_batch_1..5.bin)")->capture_default_str();
  app.add_option("--test", test, "test images")->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  stages::add_config_flag(app);
  return stages::run(app, argc, argv, [&] {
    const pipeline::DatasetKind& kind = pipeline::dataset_kind(dataset);
    if (out.empty() && dataset.rfind("folder:", 0) == 0 && root.empty()) out = dataset.substr(7);
    if (out.empty() && root.empty()) throw pipeline::UsageError("give --out FOLDER or --root ROOT");
    if (!root.empty()) out = root / kind.folder_name();
    kind.write_synthetic(out, train, test, seed);
    fmt::print("synthetic {}: {} ({} train, {} test images, seed {})\n", kind.title(), out.string(), train, test, seed);
    return 0;
  });
}
