// transfer-finetune: fine-tune every layer of a backbone on CIFAR-10 (approach 2).
#include <fmt/format.h>

#include "pipeline/finetune.h"
#include "stages/cli.h"

int main(int argc, char** argv) {
  pipeline::FinetuneOptions options;
  CLI::App app{"Fine-tune all of a backbone with a new last layer for the dataset's classes (approach 2)", "transfer-finetune"};
  stages::add_data_flags(app, options);
  stages::add_backbone_flag(app, options.backbone, "the network (alexnet, resnet18, resnet50, vgg16)")
      ->capture_default_str();
  app.add_option("--weights", options.weights, "weights file, a folder holding the backbone's torchvision file, or random:SEED (default: data/<its file>)");
  app.add_option("--out", options.out, "run folder to write")->required();
  app.add_option("--epochs", options.epochs, "training epochs")->capture_default_str();
  app.add_option("--lr", options.lr, "Adam learning rate")->capture_default_str();
  app.add_option("--batch-size", options.batch_size, "images per step")->capture_default_str();
  app.add_option("--image-size", options.image_size, "resize 32 -> this many pixels (alexnet >= 63, others >= 32)")
      ->capture_default_str();
  app.add_option("--normalize", options.normalize, "imagenet, or half (0.5/0.5, as the study's approach 2)")
      ->capture_default_str()
      ->check(CLI::IsMember({"imagenet", "half"}));
  app.add_option("--val-fraction", options.val_fraction, "share of the training images held out for validation")
      ->capture_default_str();
  app.add_option("--seed", options.seed, "split, batch order, new layer and dropout seed")->capture_default_str();
  stages::add_compute_flags(app, options.compute);
  app.add_option("--limit-train", options.limit_train, "use only the first N training images (-1: all)")
      ->capture_default_str();
  app.add_option("--limit-test", options.limit_test, "use only the first M test images (-1: all)")->capture_default_str();
  app.add_flag("--resume", options.resume, "continue an interrupted run from its checkpoint");
  app.add_flag("--force", options.force, "retrain even if the run folder is up to date");
  app.add_flag("--test-every-epoch", options.test_every_epoch, "also score test each epoch (curves only)");
  app.add_option("--stop-after", options.stop_after_epochs, "stop after N epochs, as if interrupted (for tests)")
      ->group("");
  stages::add_config_flag(app);
  return stages::run(app, argc, argv, [&] {
    const pipeline::FinetuneSummary s = pipeline::run_finetune(options);
    if (!s.finished) {
      fmt::print("{}: stopped early; rerun with --resume to continue\n", options.out.string());
      return 0;
    }
    fmt::print("{}: {}fine-tuned, test accuracy {:.2f}% (loss {:.4f}), best epoch {}, {:.1f} s training, {:.1f} images/s{}\n",
               options.out.string(), s.up_to_date ? "up to date; " : "", 100 * s.metrics.test_acc,
               s.metrics.test_loss, s.metrics.best_epoch, s.metrics.train_seconds, s.metrics.images_per_second,
               stages::skipped_note(s.metrics.config.value("skipped_images", int64_t{0})));
    return 0;
  });
}
