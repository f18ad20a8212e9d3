#include "pipeline/finetune.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>

#include "pipeline/datasets/dataset.h"
#include "pipeline/models/backbone_net.h"
#include "pipeline/batches.h"
#include "pipeline/cifar10.h"
#include "pipeline/error.h"
#include "pipeline/files.h"
#include "pipeline/preprocess.h"
#include "pipeline/records.h"
#include "pipeline/torch_files.h"
#include "pipeline/train.h"
#include "pipeline/weights.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline {
namespace {

// The files FinetuneModel::save_state() writes into a checkpoint folder.
const std::vector<std::string> kStateFiles = {"model.pt", "optimizer.pt", "best.pt", "rng.pt"};

// The whole network as the loop's single member.
class FinetuneModel : public Trainable {
 public:
  FinetuneModel(std::shared_ptr<BackboneNet> model, const Compute& compute, double lr)
      : model_(std::move(model)),
        compute_(compute),
        optimizer_(model_->parameters(), torch::optim::AdamOptions(lr)),
        best_(parameters_and_buffers(*model_)) {}

  int64_t members() const override { return 1; }
  void set_training(bool training) override { model_->train(training); }

  BatchScores train_step(const Batch& batch) override {
    const at::Tensor labels = batch.labels.to(compute_.device);
    at::Tensor logits, loss;
    {
      AutocastGuard autocast(compute_);
      logits = model_->forward(to_model(batch.inputs));
      loss = torch::cross_entropy_loss(logits.to(torch::kFloat), labels);
    }
    optimizer_.zero_grad();
    if (compute_.precision == Precision::Fp16) {
      step_scaled(loss);
    } else {
      loss.backward();
      optimizer_.step();
    }
    return score_logits(logits.detach().to(torch::kCPU, torch::kFloat).unsqueeze(0), batch.labels);
  }

  at::Tensor predict(const at::Tensor& inputs) override {
    torch::NoGradGuard no_grad;
    AutocastGuard autocast(compute_);
    return model_->forward(to_model(inputs)).to(torch::kCPU, torch::kFloat).unsqueeze(0);
  }

  void keep_best(int64_t) override { best_.keep(); }
  void use_best() override { best_.restore(); }

  std::vector<std::string> state_files() const override { return kStateFiles; }

  void save_state(const fs::path& dir) const override {
    save_torch_file(model_, dir / "model.pt");
    save_torch_file(optimizer_, dir / "optimizer.pt");
    save_torch_file(best_.saved(), dir / "best.pt");
    // Dropout draws from the default CPU generator: saving it makes a resumed CPU run
    // draw the same masks as an uninterrupted one.
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::vector<at::Tensor> extra = {generator.get_state(),
                                     torch::tensor({loss_scale_, static_cast<double>(good_steps_)}, torch::kFloat64)};
    save_torch_file(extra, dir / "rng.pt");
  }

  void load_state(const fs::path& dir) override {
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& p : model_->parameters()) shapes.push_back(p.sizes().vec());
    load_torch_file(model_, dir / "model.pt", "checkpoint file", compute_.device);
    const auto loaded = model_->parameters();
    bool same = loaded.size() == shapes.size();
    for (size_t i = 0; same && i < loaded.size(); ++i) same = loaded[i].sizes().vec() == shapes[i];
    if (!same) fail("checkpoint file {} holds another model's weights", (dir / "model.pt").string());
    load_torch_file(optimizer_, dir / "optimizer.pt", "checkpoint file", compute_.device);
    std::vector<at::Tensor> best, extra;
    load_torch_file(best, dir / "best.pt", "checkpoint file", compute_.device);
    load_torch_file(extra, dir / "rng.pt", "checkpoint file");
    const std::vector<at::Tensor>& live = best_.saved();
    bool fits = best.size() == live.size();
    for (size_t i = 0; fits && i < best.size(); ++i) fits = best[i].sizes() == live[i].sizes();
    if (!fits) fail("checkpoint file {} holds other tensors than this model's best weights", (dir / "best.pt").string());
    // rng.pt: the CPU generator's state (a uint8 tensor) and [loss scale, good steps].
    if (extra.size() != 2 || extra[1].scalar_type() != torch::kFloat64 || extra[1].dim() != 1 || extra[1].numel() != 2 ||
        !std::isfinite(extra[1][0].item<double>()) || !(extra[1][0].item<double>() > 0) ||
        !(extra[1][1].item<double>() >= 0) || !(extra[1][1].item<double>() < 1e15)) {
      fail("checkpoint file {} is not a generator state and loss scale written by transfer-finetune",
           (dir / "rng.pt").string());
    }
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    try {
      generator.set_state(extra[0]);
    } catch (const c10::Error& e) {
      fail("checkpoint file {} holds no valid generator state: {}", (dir / "rng.pt").string(), e.what_without_backtrace());
    }
    best_.saved() = best;
    loss_scale_ = extra[1][0].item<double>();
    good_steps_ = static_cast<int64_t>(extra[1][1].item<double>());
  }

  const std::shared_ptr<BackboneNet>& model() const { return model_; }

 private:
  at::Tensor to_model(const at::Tensor& x) const {
    at::Tensor on_device = x.to(compute_.device, /*non_blocking=*/true);
    return compute_.cuda() ? on_device : on_device.contiguous(torch::MemoryFormat::ChannelsLast);
  }

  // fp16 (CUDA): dynamic loss scaling, as torch.cuda.amp.GradScaler does it: scale the
  // loss, unscale the gradients, skip the step and halve the scale on inf/NaN, double it
  // after 2000 good steps.
  void step_scaled(const at::Tensor& loss) {
    (loss * loss_scale_).backward();
    bool finite = true;
    for (auto& p : model_->parameters()) {
      if (!p.grad().defined()) continue;
      p.mutable_grad().div_(loss_scale_);
      finite = finite && torch::isfinite(p.grad()).all().item<bool>();
    }
    if (!finite) {
      loss_scale_ /= 2;
      good_steps_ = 0;
      return;
    }
    optimizer_.step();
    if (++good_steps_ == 2000) {
      loss_scale_ *= 2;
      good_steps_ = 0;
    }
  }

  // Batch norm's running statistics are part of the best weights too: restoring them
  // restores the network that scored best on validation.
  static std::vector<at::Tensor> parameters_and_buffers(BackboneNet& model) {
    std::vector<at::Tensor> all = model.parameters();
    for (const at::Tensor& buffer : model.buffers()) all.push_back(buffer);
    return all;
  }

  std::shared_ptr<BackboneNet> model_;
  Compute compute_;
  torch::optim::Adam optimizer_;
  ParameterSnapshot best_;
  double loss_scale_ = 65536.0;
  int64_t good_steps_ = 0;
};

void validate(const FinetuneOptions& o) {
  if (o.out.empty()) usage_fail("--out is required (the run folder)");
  if (o.epochs < 1) usage_fail("--epochs must be at least 1, got {}", o.epochs);
  if (!(o.lr > 0) || !std::isfinite(o.lr)) usage_fail("--lr must be a finite number > 0, got {}", o.lr);
  if (o.batch_size < 1) usage_fail("--batch-size must be at least 1, got {}", o.batch_size);
  check_val_fraction(o.val_fraction);
  check_image_size(backbone(o.backbone), o.image_size);
  normalization_by_name(o.normalize);
}


}  // namespace

FinetuneSummary run_finetune(const FinetuneOptions& given) {
  validate(given);
  FinetuneOptions options = given;
  options.out = output_path(given.out, "--out");
  const Backbone& spec = backbone(options.backbone);
  options.weights = resolve_weights(options.weights, spec);
  const std::unique_ptr<Dataset> dataset = open_dataset(
      {options.dataset, options.data, options.labels, options.transform, options.skip_bad, options.test_fraction});
  std::vector<fs::path> inputs = dataset->files();
  inputs.push_back(dataset->folder());  // run files never go into the data's folder
  inputs.push_back(options.weights);  // ignored when it is random:SEED (no such file)
  refuse_output_over_inputs(options.out, inputs, "--out");
  // Before any work: writable, a run folder (never the user's files), and this run's alone.
  const FolderLock lock(options.out, "transfer-finetune run",
                        {"config.json", "metrics.json", "history.csv", "model.pt", "checkpoint", "checkpoint-config.json",
                         ".checkpoint.old", "images.h5", "images.h5.partial"});
  const fs::path store = image_store_path(*dataset, options.image_store, options.out, /*out_is_folder=*/true, inputs);
  const Compute compute = resolve_compute(options.compute);
  keep_freed_memory();  // batch after batch of activations: page faults otherwise (device.h)
  const Normalization normalization = normalization_by_name(options.normalize);
  const WeightsSource source = parse_weights_source(options.weights);
  const std::string dataset_sha256 = dataset->digest();
  // An image folder is decoded once into its store, so epochs read pixels, not JPEGs.
  const DataRecords records =
      open_records(*dataset, {options.limit_train, options.limit_test, store, dataset_sha256});
  const SplitRecords& train = records.train;
  const SplitRecords& test = records.test;

  const std::shared_ptr<BackboneNet> model = spec.build();
  const WeightsInfo weights = load_weights(*model, source);
  spdlog::info("{}: {}", spec.title(), weights.describe());
  const json config = {{"stage", "transfer-finetune"},
                       {"backbone", spec.name()},
                       {"data", fs::absolute(dataset->folder()).lexically_normal().string()},
                       {"dataset", dataset->describe()},
                       {"dataset_sha256", dataset_sha256},
                       {"weights", options.weights},
                       {"weights_sha256", weights.sha256},
                       {"pretrained", weights.pretrained},
                       {"epochs", options.epochs},
                       {"lr", options.lr},
                       {"batch_size", options.batch_size},
                       {"image_size", options.image_size},
                       {"normalization", normalization.name},
                       {"val_fraction", options.val_fraction},
                       {"seed", options.seed},
                       {"precision", to_string(compute.precision)},
                       {"limit_train", options.limit_train},
                       {"limit_test", options.limit_test},
                       {"train_rows", train.size()},
                       {"test_rows", test.size()},
                       {"skipped_images", records.skipped_count},
                       {"test_every_epoch", options.test_every_epoch},
                       {"optimizer", "Adam(beta1 0.9, beta2 0.999, eps 1e-8), every layer"}};
  FinetuneSummary summary;
  if (!options.force && run_is_up_to_date(options.out, config)) {
    spdlog::info("{} is up to date with these settings: nothing to do (--force retrains)", options.out.string());
    summary.up_to_date = summary.finished = true;
    summary.metrics = read_metrics(options.out);
    return summary;
  }

  const fs::path checkpoint = options.out / "checkpoint";
  const fs::path checkpoint_config = options.out / "checkpoint-config.json";
  std::error_code ignored;
  const bool resumable = options.resume && json_file_equals(checkpoint_config, config);
  if (options.resume && !resumable && fs::exists(checkpoint_config)) {
    spdlog::info("the checkpoint in {} is of other settings (or unreadable): starting over", options.out.string());
  }
  if (!resumable) {
    if (fs::exists(checkpoint, ignored)) spdlog::info("starting over: discarding the checkpoint in {}", checkpoint.string());
    remove_checkpoint(checkpoint, kStateFiles);  // only a checkpoint this stage wrote, never a folder of the user's
    fs::remove(options.out / "config.json", ignored);
    write_file_atomic(checkpoint_config, json_file_text(config));
  }

  // The new last layer's init and the dropout masks come from the global generator.
  torch::manual_seed(options.seed);
  model->replace_classifier(dataset->classes());
  model->to(compute.device);
  if (!compute.cuda()) to_channels_last(*model);
  FinetuneModel trainable(model, compute, options.lr);

  const Preprocessor preprocess(options.image_size, normalization, train.side());
  const TrainValSplit split = split_train_val(train.size(), options.val_fraction, options.seed);
  TrainData data;
  data.train_rows = split.train;
  data.val_rows = split.val;
  for (int64_t i = 0; i < test.size(); ++i) data.test_rows.push_back(i);
  data.make_batch = [&](Part part, const std::vector<int64_t>& rows) {
    const DatasetImages images = (part == Part::Test ? test : train).rows(rows);
    // Channels-last on a CPU (the model's layout, no copy later); pinned for a GPU.
    at::Tensor x = preprocess(images.images, /*channels_last=*/!compute.cuda());
    if (compute.cuda()) x = x.pin_memory();
    return Batch{x, images.labels};
  };

  LoopOptions loop;
  loop.epochs = options.epochs;
  loop.batch_size = options.batch_size;
  loop.seed = options.seed;
  loop.prefetch = compute.cuda();  // on a CPU a producer thread would take the model's cores
  loop.test_every_epoch = options.test_every_epoch;
  loop.checkpoint_dir = checkpoint;
  loop.resume = options.resume;
  loop.stop_after_epochs = options.stop_after_epochs;
  loop.label = "fine-tune";
  const LoopResult result = run_training(trainable, data, loop);
  summary.step_seconds = result.step_seconds;
  if (!result.finished) {
    spdlog::info("stopped after {} epochs as asked; --resume continues from {}", result.members[0].epochs.size(),
                 checkpoint.string());
    return summary;
  }

  RunMetrics& metrics = summary.metrics;
  metrics.approach = "fine-tune";
  RunSettings& settings = metrics.settings;
  settings.backbone = spec.name();
  settings.dataset = dataset->describe();
  settings.dataset_sha256 = dataset_sha256;
  settings.image_size = options.image_size;
  settings.pretrained = weights.pretrained;
  settings.normalization = normalization.name;
  settings.limit_train = options.limit_train;
  settings.limit_test = options.limit_test;
  settings.train_rows = train.size();
  settings.test_rows = test.size();
  settings.skipped_images = records.skipped_count;
  settings.epochs = options.epochs;
  settings.batch_size = options.batch_size;
  settings.seed = options.seed;
  settings.lr = options.lr;
  settings.weight_decay = 0;  // Adam without weight decay, as the study
  settings.val_fraction = options.val_fraction;
  settings.precision = to_string(compute.precision);
  settings.test_every_epoch = options.test_every_epoch;
  metrics.config = config;
  metrics.config["split"] = split_fingerprint(split);
  metrics.epochs = result.members[0].epochs;
  metrics.best_epoch = result.members[0].best_epoch;
  metrics.test_loss = result.members[0].test_loss;
  metrics.test_acc = result.members[0].test_acc;
  metrics.train_seconds = result.train_seconds;
  metrics.images_per_second = result.images_per_second;
  metrics.device = compute.describe();
  metrics.confusion = result.members[0].confusion;
  write_metrics(options.out, metrics);
  const fs::path model_file = options.out / "model.pt";
  save_torch_file(trainable.model(), model_file);
  write_file_atomic(options.out / "config.json", json_file_text(config));
  // Finished: the checkpoint (weights, optimizer and best weights, ~1 GB at 224 px) has
  // served its purpose.
  fs::remove_all(checkpoint, ignored);
  fs::remove(checkpoint_config, ignored);
  summary.finished = true;
  return summary;
}

}  // namespace pipeline
