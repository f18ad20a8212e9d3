// transfer-fetch: CIFAR-10 (binary) and a backbone's torchvision weights into --out, verified.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "pipeline/fetch.h"
#include "stages/cli.h"

int main(int argc, char** argv) {
  pipeline::FetchOptions options;
  CLI::App app{"Download (or take from local files), verify and unpack a dataset (CIFAR-10, CIFAR-100) and a backbone's weights",
               "transfer-fetch"};
  app.add_option("--out", options.out_dir, "folder for the dataset's folder and the weights file")
      ->capture_default_str();
  stages::add_dataset_flag(app, options.dataset)->capture_default_str();
  app.add_option("--url", options.url, "the dataset's archive URL (default: the official one; a mirror)");
  app.add_option("--archive", options.archive, "local archive to use instead of downloading")
      ->check(CLI::ExistingFile);
  app.add_option("--md5", options.md5, "expected MD5 of the archive (default: the official; override for a repack)");
  stages::add_backbone_flag(app, options.backbone, "whose weights to fetch (alexnet, resnet18, resnet50, vgg16)")
      ->capture_default_str();
  app.add_flag("--skip-weights", options.skip_weights, "do not fetch the backbone's weights");
  app.add_option("--weights-url", options.weights_url, "weights URL (default: torchvision's for the backbone)");
  app.add_option("--weights-file", options.weights_file, "local weights file to copy instead of downloading")
      ->check(CLI::ExistingFile);
  app.add_option("--retries", options.retries, "download retries after the first attempt")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--timeout", options.timeout_seconds,
                 "seconds to wait for a connection, or for a stalled download to move")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--no-progress", [&](std::int64_t) { options.show_progress = false; },
               "no download progress on stderr");
  stages::add_config_flag(app);

  return stages::run(app, argc, argv, [&] {
    const pipeline::FetchResult result = pipeline::fetch(options);
    if (!result.cifar_dir.empty()) fmt::print("{}: {} ({}, archive MD5 {})\n", options.dataset, result.cifar_dir.string(),
               result.cifar_already_present ? "already present" : "unpacked and verified", result.archive_md5);
    if (result.weights_path.empty()) {
      fmt::print("weights:  skipped\n");
    } else {
      fmt::print("weights:  {} ({}, SHA-256 {})\n", result.weights_path.string(),
                 result.weights_already_present ? "already present" : "fetched",
                 result.weights_sha256);
    }
    return 0;
  });
}
