// transfer-finetune's training throughput against a bare forward+backward+Adam step on
// ready tensors (same size, batch, precision, threads and number of images, one run):
// what decoding, preprocessing and the loop cost on top of the model. The bare steps run
// before and after the stage, so a machine that changes speed meanwhile shows as two
// different yardsticks instead of a wrong ratio. Then every step's seconds and the
// stage's median step against the same yardstick (a short run carries the warm-up).
// Target: >= 0.95.
//   bench-finetune [--backbone alexnet|resnet18|resnet50|vgg16] [--device auto|cpu|cuda] [--threads N] [image_size=128] [images=512] [precision=fp32]
#include <filesystem>
#include <string>

#include "bench_util.h"
#include "pipeline/finetune.h"
#include "pipeline/synth.h"

namespace fs = std::filesystem;

namespace {

// Images per second of `steps` bare training steps (after one warm-up step): the same
// model, optimizer and precision on one ready channels-last batch.
double bare_step_rate(const pipeline::Backbone& backbone, int64_t side, int64_t batch, int64_t steps,
                      const pipeline::Compute& compute) {
  const std::shared_ptr<pipeline::BackboneNet> model = backbone.build();
  model->replace_classifier(10);
  model->to(compute.device);
  if (!compute.cuda()) pipeline::to_channels_last(*model);
  model->train();
  torch::optim::Adam adam(model->parameters(), 1e-3);
  at::Tensor x = torch::randn({batch, 3, side, side}).to(compute.device);
  if (!compute.cuda()) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  const at::Tensor y = torch::randint(0, 10, {batch}, torch::kLong).to(compute.device);
  auto step = [&] {
    at::Tensor loss;
    {
      pipeline::AutocastGuard autocast(compute);
      loss = torch::cross_entropy_loss(model->forward(x).to(torch::kFloat), y);
    }
    adam.zero_grad();
    loss.backward();
    adam.step();
    loss.item<float>();
  };
  step();
  return static_cast<double>(batch * steps) / bench::seconds([&] {
           for (int64_t i = 0; i < steps; ++i) step();
         });
}

}  // namespace

int main(int argc, char** argv) {
  bench::print_machine();
  const pipeline::Backbone& backbone = bench::backbone_arg(argc, argv);
  pipeline::ComputeOptions compute_options = bench::compute_args(argc, argv);
  const int64_t side = argc > 1 ? std::atoll(argv[1]) : 128;
  const int64_t images = argc > 2 ? std::atoll(argv[2]) : 512;
  compute_options.precision = argc > 3 ? argv[3] : "fp32";
  const fs::path dir = fs::temp_directory_path() / "transfer-bench-finetune";
  fs::remove_all(dir);
  pipeline::write_synthetic_cifar({dir / "data", images, 64, 0});

  pipeline::FinetuneOptions options;  // the stage's defaults (batch size included), as users run it
  options.data = dir / "data";
  options.backbone = backbone.name();
  options.weights = "random:0";
  options.out = dir / "run";
  options.epochs = 1;
  options.image_size = side;
  options.val_fraction = 0.0;
  options.compute = compute_options;
  const pipeline::Compute compute = bench::resolve_or_exit(options.compute);
  pipeline::keep_freed_memory();  // the yardstick at its best too (the stage does the same)
  const int64_t batch = options.batch_size, steps = std::max<int64_t>(2, images / batch);
  const double before = bare_step_rate(backbone, side, batch, steps, compute);
  const pipeline::FinetuneSummary run = pipeline::run_finetune(options);
  const double after = bare_step_rate(backbone, side, batch, steps, compute);

  std::printf("%s at %lld px, %s, batch %lld\n", backbone.title().c_str(), static_cast<long long>(side),
              compute_options.precision.c_str(), static_cast<long long>(batch));
  std::printf("fine-tune stage: %.1f images/s (training phase, data included) on %s\n",
              run.metrics.images_per_second, run.metrics.device.c_str());
  std::printf("bare forward+backward+Adam step on ready tensors (%lld images): %.1f images/s before the stage, %.1f "
              "after\n",
              static_cast<long long>(batch * steps), before, after);
  bench::print_ratio("stage / bare step", run.metrics.images_per_second, before, after);
  bench::print_steps("fine-tune stage", run.step_seconds, batch, images % batch != 0, before, after);
  fs::remove_all(dir);
  return 0;
}
