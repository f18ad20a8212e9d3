// transfer-head: train linear heads (or a sweep of them) on a feature cache.
#include <fmt/format.h>

#include "pipeline/head.h"
#include "stages/cli.h"

int main(int argc, char** argv) {
  pipeline::HeadOptions options;
  CLI::App app{"Train new last layers on a backbone's cached features (approach 1: linear probe)", "transfer-head"};
  app.add_option("--features", options.features, "feature cache written by transfer-extract")->required();
  app.add_option("--out", options.out, "run folder to write")->required();
  stages::add_backbone_flag(app, options.backbone, "check that the cache is this backbone's (default: any)");
  app.add_option("--tap", options.tap, "cached layer to train on (default: the layer before the classifier)");
  app.add_option("--head", options.head, "linear, or classifier (the whole classifier on pool5: alexnet, vgg16)")
      ->capture_default_str()
      ->check(CLI::IsMember({"linear", "classifier"}));
  app.add_option("--epochs", options.epochs, "training epochs")->capture_default_str();
  app.add_option("--lr", options.lr, "Adam learning rate")->capture_default_str();
  app.add_option("--weight-decay", options.weight_decay, "Adam weight decay (L2)")->capture_default_str();
  app.add_option("--batch-size", options.batch_size, "rows per step")->capture_default_str();
  app.add_option("--val-fraction", options.val_fraction, "share of the training rows held out for validation")
      ->capture_default_str();
  app.add_option("--seed", options.seed, "split, batch order and init seed")->capture_default_str();
  app.add_option("--sweep-lr", options.sweep_lr, "sweep these learning rates (comma list)")->delimiter(',');
  app.add_option("--sweep-wd", options.sweep_wd, "sweep these weight decays (comma list)")->delimiter(',');
  app.add_option("--sweep-seeds", options.sweep_seeds, "init seeds per setting (seed, seed+1, ...)")->capture_default_str();
  app.add_option("--precision", options.precision,
                 "fp32, or bf16: matrix products in bfloat16 (up to 2x faster sweeps on CPUs with AVX512-BF16/AMX); "
                 "heads train on the CPU, so fp16 is refused")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_flag("--test-every-epoch", options.test_every_epoch, "also score test each epoch (curves only)");
  app.add_option("--threads", options.threads, "CPU threads (0: every core)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--force", options.force, "retrain even if the run folder is up to date");
  stages::add_config_flag(app);
  return stages::run(app, argc, argv, [&] {
    const pipeline::HeadSummary s = pipeline::run_head(options);
    const auto& m = s.best;
    fmt::print("{}: {}{} test accuracy {:.2f}% (loss {:.4f}), best epoch {}, {:.2f} s training\n",
               options.out.string(), s.up_to_date ? "up to date; " : "",
               s.heads > 1 ? fmt::format("best of {} heads,", s.heads) : options.head + " head,",
               100 * m.test_acc, m.test_loss, m.best_epoch, m.train_seconds);
    return 0;
  });
}
