#include "pipeline/head.h"

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>

#include "pipeline/alexnet.h"
#include "pipeline/batches.h"
#include "pipeline/cifar10.h"
#include "pipeline/classifier_head.h"
#include "pipeline/device.h"
#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/files.h"
#include "pipeline/random.h"
#include "pipeline/simd.h"
#include "pipeline/torch_files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline {
namespace {

constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;  // torch.optim.Adam's defaults

// One pass over parameter, gradient and both moments: torch.optim.Adam's update
// (weight decay as an L2 term added to the gradient) with each row's own learning rate
// and weight decay. LibTorch's Adam does ~10 separate passes over the same memory,
// which dominated a 32-head sweep's time; fused, it is one pass. The loop must
// vectorize: head.cc is built with -fno-math-errno (otherwise every sqrt keeps a scalar
// errno branch and the loop stays scalar: 3.3 ms per 32-head step here, against 0.5 ms)
// and the kernel is cloned for AVX-512 and AVX2 (simd.h). Built without FMA contraction
// (CMakeLists.txt) and without reassociation, every clone gives the same bits.
TRANSFER_CLONES("avx512f", "avx2", "default")
void adam_rows_kernel(int64_t begin, int64_t end, int64_t cols, float* p, const float* g, float* m, float* v,
                      const float* row_lr, const float* row_wd, double bias1, float inv_bias2_sqrt) {
  const float b1 = kBeta1, b2 = kBeta2, one_b1 = 1.0f - b1, one_b2 = 1.0f - b2, eps = kEps;
  for (int64_t r = begin; r < end; ++r) {
    const float step_size = static_cast<float>(row_lr[r] / bias1), decay = row_wd[r];
    float* pr = p + r * cols;
    const float* gr = g + r * cols;
    float* mr = m + r * cols;
    float* vr = v + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float gc = gr[c] + decay * pr[c];
      const float mc = b1 * mr[c] + one_b1 * gc;
      const float vc = b2 * vr[c] + one_b2 * gc * gc;
      mr[c] = mc;
      vr[c] = vc;
      pr[c] -= step_size * mc / (std::sqrt(vc) * inv_bias2_sqrt + eps);
    }
  }
}

void fused_adam_rows(at::Tensor& param, const at::Tensor& grad, at::Tensor& m, at::Tensor& v,
                     const at::Tensor& row_lr, const at::Tensor& row_wd, int64_t step) {
  const int64_t rows = param.size(0), cols = param.numel() / rows;
  float* p = param.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  float* mm = m.data_ptr<float>();
  float* vv = v.data_ptr<float>();
  const float* lr = row_lr.data_ptr<float>();
  const float* wd = row_wd.data_ptr<float>();
  const double bias1 = 1.0 - std::pow(kBeta1, static_cast<double>(step));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(kBeta2, static_cast<double>(step)));
  const float inv_bias2_sqrt = static_cast<float>(1.0 / bias2_sqrt);
  at::parallel_for(0, rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
    const FlushSubnormals flush;  // the moments of always-zero features decay into subnormals
    adam_rows_kernel(begin, end, cols, p, g, mm, vv, lr, wd, bias1, inv_bias2_sqrt);
  });
}

// d(mean cross-entropy)/d(logits) = (softmax - one_hot) / B for every head's C logits
// of every row, in one pass that also sums the bias gradient and scores the batch (the
// softmax's normaliser gives the loss for free). Written by hand: as LibTorch ops
// (softmax, scatter, divide, sum, log_softmax, argmax) it cost more than the update.
// logits [B, K*C] (C = classes per head) -> gradient [B, K*C]; accumulates bias_grad
// [K*C] float32 and scores (loss_sum [K] float64, correct [K] int64), all zeroed.
at::Tensor logits_grad(const at::Tensor& logits, const at::Tensor& labels, int64_t c, const at::Tensor& bias_grad,
                       const BatchScores& scores) {
  const int64_t b = logits.size(0), width = logits.size(1);
  at::Tensor grad = torch::empty_like(logits);
  const float* in = logits.data_ptr<float>();
  float* out = grad.data_ptr<float>();
  float* bias = bias_grad.data_ptr<float>();
  double* loss_sum = scores.loss_sum.data_ptr<double>();
  int64_t* correct = scores.correct.data_ptr<int64_t>();
  const at::Tensor labels64 = labels.to(torch::kLong).contiguous();
  const int64_t* y = labels64.data_ptr<int64_t>();
  const float inv_b = 1.0f / static_cast<float>(b);
  for (int64_t row = 0; row < b; ++row) {
    if (y[row] < 0 || y[row] >= c) fail("label {} of batch row {} is outside 0..{}", y[row], row, c - 1);
  }
  // Heads are independent: split them over the threads (a sweep's 32 heads halve this
  // pass on two cores; one head stays on the calling thread).
  at::parallel_for(0, width / c, 1, [&](int64_t head_begin, int64_t head_end) {
    const FlushSubnormals flush;  // exp() of logits far below the top one
    for (int64_t k = head_begin; k < head_end; ++k) {
      const int64_t head = k * c;
      for (int64_t row = 0; row < b; ++row) {
        const float* l = in + row * width + head;
        float* g = out + row * width + head;
        int64_t best = 0;
        for (int64_t j = 1; j < c; ++j) best = l[j] > l[best] ? j : best;
        const float top = l[best];
        float total = 0;
        for (int64_t j = 0; j < c; ++j) total += (g[j] = std::exp(l[j] - top));
        // -log softmax(l)[y]; NaN when a logit is not finite, which stops the run.
        loss_sum[k] += std::log(static_cast<double>(total)) + top - l[y[row]];
        correct[k] += best == y[row];
        const float scale = inv_b / total;
        for (int64_t j = 0; j < c; ++j) g[j] *= scale;
        g[y[row]] -= inv_b;
        for (int64_t j = 0; j < c; ++j) bias[head + j] += g[j];
      }
    }
  });
  return grad;
}

}  // namespace

std::vector<HeadSetting> head_grid(const HeadOptions& options) {
  const std::vector<double> lrs = options.sweep_lr.empty() ? std::vector<double>{options.lr} : options.sweep_lr;
  const std::vector<double> wds = options.sweep_wd.empty() ? std::vector<double>{options.weight_decay} : options.sweep_wd;
  const int64_t seeds = std::max<int64_t>(1, options.sweep_seeds);
  std::vector<HeadSetting> grid;
  for (double lr : lrs)
    for (double wd : wds)
      for (int64_t s = 0; s < seeds; ++s) grid.push_back({lr, wd, options.seed + static_cast<uint64_t>(s)});
  return grid;
}

LinearHeads::LinearHeads(int64_t inputs, int64_t classes, std::vector<HeadSetting> settings, c10::ScalarType matmul)
    : classes_(classes), matmul_(matmul), settings_(std::move(settings)) {
  if (matmul_ != c10::kFloat && matmul_ != c10::kBFloat16) {
    usage_fail("linear heads multiply in float32 or bfloat16, not {}", c10::toString(matmul_));
  }
  const int64_t k = members();
  weight_ = torch::empty({k * classes, inputs});
  bias_ = torch::empty({k * classes});
  row_lr_ = torch::empty({k * classes});
  row_wd_ = torch::empty({k * classes});
  // torch.nn.Linear's default init bound, 1/sqrt(fan_in), for weight and bias alike;
  // drawn from SplitMix64 so that a head's init depends on its seed alone.
  const double bound = 1.0 / std::sqrt(static_cast<double>(inputs));
  for (int64_t m = 0; m < k; ++m) {
    SplitMix64 rng(mix_seed(settings_[m].init_seed, 0x4EADu));
    float* w = weight_.data_ptr<float>() + m * classes * inputs;
    for (int64_t i = 0; i < classes * inputs; ++i) w[i] = static_cast<float>((2 * rng.uniform() - 1) * bound);
    float* b = bias_.data_ptr<float>() + m * classes;
    for (int64_t i = 0; i < classes; ++i) b[i] = static_cast<float>((2 * rng.uniform() - 1) * bound);
    row_lr_.slice(0, m * classes, (m + 1) * classes).fill_(settings_[m].lr);
    row_wd_.slice(0, m * classes, (m + 1) * classes).fill_(settings_[m].weight_decay);
  }
  weight_grad_ = torch::empty_like(weight_);
  if (matmul_ != c10::kFloat) {
    weight_low_ = torch::empty_like(weight_, matmul_);
    bias_low_ = torch::empty_like(bias_, matmul_);
    weight_grad_low_ = torch::empty_like(weight_, matmul_);
  }
  bias_grad_ = torch::empty_like(bias_);
  weight_m_ = torch::zeros_like(weight_);
  weight_v_ = torch::zeros_like(weight_);
  bias_m_ = torch::zeros_like(bias_);
  bias_v_ = torch::zeros_like(bias_);
  best_weight_ = weight_.clone();
  best_bias_ = bias_.clone();
}

int64_t LinearHeads::members() const { return static_cast<int64_t>(settings_.size()); }

at::Tensor LinearHeads::logits(const at::Tensor& inputs) const {
  if (matmul_ == c10::kFloat) return torch::addmm(bias_, inputs.to(c10::kFloat), weight_.t());
  // As autocast runs a Linear: every operand rounded to bfloat16, float32 accumulation
  // inside the product (oneDNN), the result rounded to bfloat16. The rounded weights go
  // into buffers made once, not fresh tensors every step.
  weight_low_.copy_(weight_);
  bias_low_.copy_(bias_);
  return torch::addmm(bias_low_, inputs.to(matmul_), weight_low_.t()).to(c10::kFloat);
}

BatchScores LinearHeads::train_step(const Batch& batch) {
  torch::NoGradGuard no_grad;
  const at::Tensor x = batch.inputs.to(matmul_);
  const int64_t k = members();
  const at::Tensor z = logits(x);  // [B, K*C]
  bias_grad_.zero_();
  const BatchScores scores{torch::zeros({k}, torch::kFloat64), torch::zeros({k}, torch::kInt64)};
  const at::Tensor flat = logits_grad(z, batch.labels, classes_, bias_grad_, scores);
  // Into the same buffer every step: a fresh [K*C, D] tensor (5 MB for 32 heads) cost
  // page faults on every step.
  if (matmul_ == c10::kFloat) {
    at::mm_out(weight_grad_, flat.t(), x);
  } else {
    at::mm_out(weight_grad_low_, flat.to(matmul_).t(), x);
    weight_grad_.copy_(weight_grad_low_);
  }
  ++step_;
  fused_adam_rows(weight_, weight_grad_, weight_m_, weight_v_, row_lr_, row_wd_, step_);
  at::Tensor bias_2d = bias_.view({k * classes_, 1}), bias_m = bias_m_.view({k * classes_, 1}),
             bias_v = bias_v_.view({k * classes_, 1});
  fused_adam_rows(bias_2d, bias_grad_.view({k * classes_, 1}), bias_m, bias_v, row_lr_, row_wd_, step_);
  return scores;
}

at::Tensor LinearHeads::predict(const at::Tensor& inputs) {
  torch::NoGradGuard no_grad;
  return logits(inputs).view({inputs.size(0), members(), classes_}).permute({1, 0, 2});
}

void LinearHeads::keep_best(int64_t member) {
  const int64_t begin = member * classes_, end = begin + classes_;
  best_weight_.slice(0, begin, end).copy_(weight_.slice(0, begin, end));
  best_bias_.slice(0, begin, end).copy_(bias_.slice(0, begin, end));
}

void LinearHeads::use_best() {
  weight_.copy_(best_weight_);
  bias_.copy_(best_bias_);
}

at::Tensor LinearHeads::weight(int64_t member) const { return weight_.slice(0, member * classes_, (member + 1) * classes_).clone(); }
at::Tensor LinearHeads::bias(int64_t member) const { return bias_.slice(0, member * classes_, (member + 1) * classes_).clone(); }

namespace {

void validate(const HeadOptions& o) {
  if (o.epochs < 1) usage_fail("--epochs must be at least 1, got {}", o.epochs);
  if (!(o.lr > 0)) usage_fail("--lr must be > 0, got {}", o.lr);
  if (!(o.weight_decay >= 0)) usage_fail("--weight-decay must be >= 0, got {}", o.weight_decay);
  for (double lr : o.sweep_lr)
    if (!(lr > 0)) usage_fail("--sweep-lr values must be > 0, got {}", lr);
  for (double wd : o.sweep_wd)
    if (!(wd >= 0)) usage_fail("--sweep-wd values must be >= 0, got {}", wd);
  if (o.sweep_seeds < 0 || o.sweep_seeds > kMaxHeads) {
    usage_fail("--sweep-seeds must be 0..{}, got {}", kMaxHeads, o.sweep_seeds);
  }
  const size_t heads = std::max<size_t>(1, o.sweep_lr.size()) * std::max<size_t>(1, o.sweep_wd.size()) *
                       static_cast<size_t>(std::max<int64_t>(1, o.sweep_seeds));
  if (heads > static_cast<size_t>(kMaxHeads)) {
    usage_fail("the sweep asks for {} heads (--sweep-lr x --sweep-wd x --sweep-seeds); at most {} train at once",
               heads, kMaxHeads);
  }
  if (head_grid(o).size() > 1 && !(o.val_fraction > 0)) {
    usage_fail("a sweep ranks its heads on validation: --val-fraction must be > 0");
  }
  if (o.batch_size < 1) usage_fail("--batch-size must be at least 1, got {}", o.batch_size);
  if (o.head != "linear" && o.head != "classifier") usage_fail("unknown --head '{}': use linear or classifier", o.head);
  if (o.head == "classifier" && (!o.sweep_lr.empty() || !o.sweep_wd.empty() || o.sweep_seeds > 0)) {
    usage_fail("sweeps train linear heads only; drop --sweep-* or use --head linear");
  }
  if (o.head == "classifier" && o.tap != "pool5") {
    usage_fail("--head classifier is AlexNet's whole classifier and trains on pool5: use --tap pool5 on a cache "
               "extracted with --taps pool5");
  }
  parse_tap(o.tap);  // an unknown layer name is a usage error
  if (o.features.empty()) usage_fail("--features is required");
  if (o.out.empty()) usage_fail("--out is required");
}

json config_json(const HeadOptions& o, const FeatureReader& cache) {
  const json& provenance = cache.provenance();
  return {{"stage", "transfer-head"},
          {"features", fs::absolute(o.features).lexically_normal().string()},
          {"cache_settings", provenance.value("settings", json::object())},
          {"tap", o.tap},
          {"head", o.head},
          {"precision", o.precision},
          {"epochs", o.epochs},
          {"lr", o.lr},
          {"weight_decay", o.weight_decay},
          {"batch_size", o.batch_size},
          {"val_fraction", o.val_fraction},
          {"seed", o.seed},
          {"sweep_lr", o.sweep_lr},
          {"sweep_wd", o.sweep_wd},
          {"sweep_seeds", o.sweep_seeds},
          {"test_every_epoch", o.test_every_epoch},
          {"optimizer", "Adam(beta1 0.9, beta2 0.999, eps 1e-8)"},
          {"train_rows", cache.rows("train")},
          {"test_rows", cache.rows("test")}};
}

// Where --head classifier's fc6/fc7 come from: the weights file named in the cache's
// provenance if it is still there and still the file the cache was made from (returned),
// else "" (random init). `how` says which, for the run's config.
std::string pretrained_classifier_file(const FeatureReader& cache, std::string& how) {
  const json& provenance = cache.provenance();
  const json file_value = provenance.contains("weights_file") ? provenance["weights_file"] : json("");
  const json settings = provenance.value("settings", json::object());
  const json sha_value = settings.is_object() ? settings.value("weights_sha256", json("")) : json("");
  if (!file_value.is_string() || !sha_value.is_string()) {
    fail("feature cache {}: its provenance's weights_file and settings.weights_sha256 must be strings",
         cache.path().string());
  }
  const std::string file = file_value.get<std::string>(), sha256 = sha_value.get<std::string>();
  if (file.empty()) {
    how = "random init (the cache was made with random weights)";
    return "";
  }
  if (!fs::exists(file) || file_digest(file, DigestAlgorithm::Sha256) != sha256) {
    how = fmt::format("random init ({} is missing or changed since the extraction)", file);
    spdlog::warn("--head classifier: {}", how);
    return "";
  }
  how = "pretrained fc6/fc7 from " + file;
  return file;
}

void save_head(const fs::path& file, const at::Tensor& weight, const at::Tensor& bias) {
  torch::serialize::OutputArchive archive;
  archive.write("weight", weight);
  archive.write("bias", bias);
  save_torch_archive(archive, file);
}

std::string sweep_csv(const std::vector<HeadSetting>& grid, const std::vector<MemberResult>& members,
                      const std::vector<size_t>& ranking) {
  std::string csv = std::string(kSweepCsvHeader) + "\n";
  for (size_t r = 0; r < ranking.size(); ++r) {
    const size_t m = ranking[r];
    const EpochRecord& best = members[m].epochs[members[m].best_epoch - 1];
    csv += fmt::format("{},{},{},{},{},{:.6f},{:.6f},{:.6f},{:.6f}\n", r + 1, grid[m].lr, grid[m].weight_decay,
                       grid[m].init_seed, members[m].best_epoch, best.val_acc, best.val_loss, members[m].test_acc,
                       members[m].test_loss);
  }
  return csv;
}

}  // namespace

HeadSummary run_head(const HeadOptions& given) {
  validate(given);
  HeadOptions options = given;
  options.out = output_path(given.out, "--out");
  refuse_output_over_inputs(options.out, {options.features}, "--out");
  const FolderLock lock(options.out);  // before any work: writable, and this run's alone
  // Heads train on the CPU; fp16 there is a usage error.
  const Compute compute = resolve_compute({"cpu", options.precision, options.threads});
  const auto read_start = std::chrono::steady_clock::now();
  FeatureReader cache(options.features);
  json config = config_json(options, cache);
  std::string classifier_weights;  // "": random init
  if (options.head == "classifier") {
    // In the config, so that a weights file that comes back (or changes) retrains.
    std::string how;
    classifier_weights = pretrained_classifier_file(cache, how);
    config["classifier_init"] = how;
  }
  HeadSummary summary;
  if (!options.force && run_is_up_to_date(options.out, config)) {
    spdlog::info("{} is up to date with these settings and this cache: nothing to do (--force retrains)",
                 options.out.string());
    summary.up_to_date = true;
    summary.heads = static_cast<int64_t>(head_grid(options).size());
    summary.best = read_metrics(options.out);
    return summary;
  }

  // Rounded once, here, to what the products take (halves the memory for bf16).
  const at::Tensor train_x = cache.read("train", options.tap).to(compute.dtype()), train_y = cache.labels("train");
  const at::Tensor test_x = cache.read("test", options.tap).to(compute.dtype()), test_y = cache.labels("test");
  for (const at::Tensor& labels : {train_y, test_y}) {
    if (labels.numel() > 0 && labels.max().item<int64_t>() >= kCifarClasses) {
      fail("{} holds label {}: CIFAR-10 labels are 0..9", options.features.string(), labels.max().item<int64_t>());
    }
  }
  summary.read_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - read_start).count();
  spdlog::info("read {} {} features ({} + {} rows x {}) in {:.2f} s", options.features.string(), options.tap,
               train_x.size(0), test_x.size(0), train_x.size(1), summary.read_seconds);

  const TrainValSplit split = split_train_val(train_x.size(0), options.val_fraction, options.seed);
  json run_config = config;
  run_config["split"] = split_fingerprint(split);
  TrainData data;
  data.train_rows = split.train;
  data.val_rows = split.val;
  data.test_rows.resize(static_cast<size_t>(test_x.size(0)));
  for (int64_t i = 0; i < test_x.size(0); ++i) data.test_rows[i] = i;
  data.make_batch = [&](Part part, const std::vector<int64_t>& rows) {
    const at::Tensor index = torch::tensor(rows, torch::kInt64);
    const bool test = part == Part::Test;
    return Batch{(test ? test_x : train_x).index_select(0, index), (test ? test_y : train_y).index_select(0, index)};
  };

  const std::vector<HeadSetting> grid = head_grid(options);
  std::unique_ptr<LinearHeads> linear;
  std::unique_ptr<ClassifierHead> classifier;
  if (options.head == "classifier") {
    const auto pretrained =
        classifier_weights.empty() ? nullptr : std::make_unique<StateDict>(read_state_dict(classifier_weights));
    classifier = std::make_unique<ClassifierHead>(kCifarClasses, options.lr, options.weight_decay, options.seed,
                                                  pretrained.get(), compute);
  } else {
    linear = std::make_unique<LinearHeads>(train_x.size(1), kCifarClasses, grid, compute.dtype());
  }
  Trainable& heads = linear ? static_cast<Trainable&>(*linear) : *classifier;
  LoopOptions loop;
  loop.epochs = options.epochs;
  loop.batch_size = options.batch_size;
  loop.seed = options.seed;
  loop.test_every_epoch = options.test_every_epoch;
  loop.eval_batch_size = kHeadEvalBatchSize;
  loop.label = grid.size() > 1 ? fmt::format("head sweep ({} heads)", grid.size()) : "head";
  const LoopResult result = run_training(heads, data, loop);

  // Rank by best validation accuracy (ties: lower validation loss).
  std::vector<size_t> ranking(grid.size());
  for (size_t i = 0; i < ranking.size(); ++i) ranking[i] = i;
  auto best_record = [&](size_t m) { return result.members[m].epochs[result.members[m].best_epoch - 1]; };
  std::stable_sort(ranking.begin(), ranking.end(), [&](size_t a, size_t b) {
    const EpochRecord ra = best_record(a), rb = best_record(b);
    if (ra.val_acc != rb.val_acc) return ra.val_acc > rb.val_acc;
    return ra.val_loss < rb.val_loss;
  });
  const size_t best = ranking.front();

  RunMetrics metrics;
  metrics.approach = linear ? "linear-probe" : "classifier-head";
  metrics.config = run_config;
  metrics.config["best_setting"] = {{"lr", grid[best].lr}, {"weight_decay", grid[best].weight_decay},
                                    {"init_seed", grid[best].init_seed}};
  metrics.epochs = result.members[best].epochs;
  metrics.best_epoch = result.members[best].best_epoch;
  metrics.test_loss = result.members[best].test_loss;
  metrics.test_acc = result.members[best].test_acc;
  metrics.train_seconds = result.train_seconds;
  metrics.images_per_second = result.images_per_second;
  metrics.device = compute.describe();
  metrics.confusion = result.members[best].confusion;

  fs::create_directories(options.out);
  // config.json goes last: it is what marks the folder as finished and up to date.
  std::error_code ignored;
  fs::remove(options.out / "config.json", ignored);
  write_metrics(options.out, metrics);
  if (linear) {
    save_head(options.out / "head.pt", linear->weight(best), linear->bias(best));
  } else {
    classifier->save((options.out / "head.pt").string());
  }
  if (grid.size() > 1) {
    write_file_atomic(options.out / "sweep.csv", sweep_csv(grid, result.members, ranking));
  } else {
    fs::remove(options.out / "sweep.csv", ignored);
  }
  write_file_atomic(options.out / "config.json", json_file_text(config));
  summary.best = metrics;
  summary.heads = static_cast<int64_t>(grid.size());
  return summary;
}

}  // namespace pipeline
