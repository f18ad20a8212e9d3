#include "pipeline/extract.h"

#include <H5public.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "pipeline/datasets/dataset.h"
#include "pipeline/models/backbone_net.h"
#include "pipeline/batches.h"
#include "pipeline/cifar10.h"
#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/files.h"
#include "pipeline/preprocess.h"
#include "pipeline/progress.h"
#include "pipeline/records.h"
#include "pipeline/weights.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline {
namespace {

void validate(const ExtractOptions& o) {
  if (o.out.empty()) usage_fail("--out is required (the cache file, e.g. cache/fc7.h5)");
  const Backbone& spec = backbone(o.backbone);
  check_image_size(spec, o.image_size);
  if (o.batch_size < 1) usage_fail("--batch-size must be at least 1, got {}", o.batch_size);
  parse_taps(spec, o.taps.empty() ? spec.default_tap() : o.taps);
  parse_feature_dtype(o.dtype);
  normalization_by_name(o.normalize);
  parse_precision(o.compute.precision);
}

std::string now_utc() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

std::string hdf5_version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  return fmt::format("HDF5 {}.{}.{}", major, minor, release);
}

// Moves a preprocessed batch to the model: device, memory format, dtype.
at::Tensor to_model(const at::Tensor& batch, const Compute& compute) {
  at::Tensor x = batch.to(compute.device, /*non_blocking=*/true);
  if (!compute.cuda()) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  return compute.precision == Precision::Fp32 ? x : x.to(compute.dtype());
}

// The dtype preprocessing writes the CPU model's input in: the model's own (bf16 or float32).
c10::ScalarType cpu_input_dtype(const Compute& compute) {
  return compute.precision == Precision::Bf16 ? torch::kBFloat16 : torch::kFloat;
}

// The model's input for `pixels`: on a GPU a fresh pinned NCHW batch (the next one is
// made while the GPU works); on a CPU written channels-last in the model's dtype (bf16
// included: no float batch, no conversion pass) into `buffer`, reused so that no batch
// pays for fresh pages, a layout copy or a dtype copy.
at::Tensor preprocessed_batch(const Preprocessor& preprocess, const at::Tensor& pixels, const Compute& compute,
                              at::Tensor& buffer) {
  const int64_t n = pixels.size(0), s = preprocess.size();
  if (compute.cuda()) {
    at::Tensor pinned = torch::empty({n, 3, s, s}, torch::TensorOptions(torch::kFloat).pinned_memory(true));
    preprocess.into(pixels, pinned);
    return pinned;
  }
  if (!buffer.defined() || buffer.size(0) < n) {
    buffer = torch::empty({n, 3, s, s},
                          torch::TensorOptions(cpu_input_dtype(compute)).memory_format(at::MemoryFormat::ChannelsLast));
  }
  at::Tensor view = buffer.slice(0, 0, n);
  preprocess.into(pixels, view);
  return view;
}

// How many batches one preprocessing call makes on a CPU. After each forward pass
// LibTorch's OpenMP workers spin-wait before they sleep (libgomp's GOMP_SPINCOUNT, read
// once at load), and TBB's workers preprocessing the next batch share the cores with
// them meanwhile: on 2 cores preprocessing ran ~1.5x slower inside the stage than alone
// (245 ms against ~135 ms per 1,728 images at 224 px). A group of batches per TBB call
// pays that once per group. Bounded by the model's input for a group (about 160 MiB, or
// one batch where a batch is larger) and by count.
int64_t batches_per_group(int64_t batch_size, int64_t side, const Compute& compute) {
  constexpr int64_t kGroupBytes = int64_t{160} << 20, kMostBatches = 8;
  const int64_t element_bytes = static_cast<int64_t>(c10::elementSize(cpu_input_dtype(compute)));
  const int64_t batch_bytes = std::max<int64_t>(1, batch_size * 3 * side * side * element_bytes);
  return std::clamp<int64_t>(kGroupBytes / batch_bytes, 1, kMostBatches);
}

// Relative L2 error of each tap of `reduced` (a lower precision) against `reference`.
json relative_errors(const std::map<std::string, at::Tensor>& reference,
                     const std::map<std::string, at::Tensor>& reduced) {
  json errors = json::object();
  for (const auto& [tap, value] : reference) {
    const at::Tensor r = value.to(torch::kCPU, torch::kFloat);
    const at::Tensor d = reduced.at(tap).to(torch::kCPU, torch::kFloat) - r;
    errors[tap] = (d.norm() / r.norm().clamp_min(1e-30)).item<double>();
  }
  return errors;
}

}  // namespace

ExtractSummary run_extract(const ExtractOptions& given) {
  validate(given);
  ExtractOptions options = given;
  const Backbone& spec = backbone(options.backbone);
  options.weights = resolve_weights(options.weights, spec);
  if (options.taps.empty()) options.taps = spec.default_tap();
  const std::string out_text = given.out.string();
  const fs::path last = given.out.filename();  // "" for "x/", "." or ".." for "x/." or "x/y/.."
  if (!out_text.empty() && (last.empty() || last == "." || last == "..")) {
    usage_fail("--out {} names a folder: name the cache file to write (e.g. {})", out_text,
               (given.out / "cache.h5").lexically_normal().string());
  }
  options.out = output_path(given.out, "--out");
  // The output is checked before any work: it may not overwrite an input, and its
  // folder must be writable (else an hour of extraction would end in a failed rename).
  const std::unique_ptr<Dataset> dataset = open_dataset(
      {options.dataset, options.data, options.labels, options.transform, options.skip_bad, options.test_fraction});
  std::vector<fs::path> inputs = dataset->files();
  inputs.push_back(dataset->folder());  // the cache never goes into the data's folder
  const WeightsSource weights_source = parse_weights_source(options.weights);
  if (!weights_source.random) inputs.push_back(weights_source.file);
  refuse_output_over_inputs(options.out, inputs, "--out");
  refuse_output_over_inputs(options.out.string() + ".partial", inputs, "--out");
  check_cache_output(options.out, "--out", /*image_store=*/false);
  const fs::path store = image_store_path(*dataset, options.image_store, options.out, /*out_is_folder=*/false, inputs);
  const std::vector<std::string> taps = parse_taps(spec, options.taps);
  const Normalization normalization = normalization_by_name(options.normalize);
  const FeatureDtype dtype = parse_feature_dtype(options.dtype);
  const Compute compute = resolve_compute(options.compute);
  keep_freed_memory();  // batch after batch of activations: page faults otherwise (device.h)
  ExtractSummary summary;
  summary.device = compute.describe();

  const std::shared_ptr<BackboneNet> model = spec.build();
  const WeightsInfo weights = load_weights(*model, weights_source);
  spdlog::info("{}: {}", spec.title(), weights.describe());

  // What determines the cache's contents (row counts follow from the data and limits).
  const std::string dataset_sha256 = dataset->digest();
  const json settings = {{"backbone", spec.name()},
                         {"weights_sha256", weights.sha256},
                         {"pretrained", weights.pretrained},
                         {"dataset", dataset->describe()},
                         {"dataset_sha256", dataset_sha256},
                         {"image_size", options.image_size},
                         {"normalization", normalization.name},
                         {"mean", normalization.mean},
                         {"std", normalization.stddev},
                         {"taps", taps},
                         {"dtype", to_string(dtype)},
                         {"precision", to_string(compute.precision)},
                         {"limit_train", options.limit_train},
                         {"limit_test", options.limit_test}};
  if (!options.force && cache_matches(options.out, settings)) {
    spdlog::info("{} is complete and matches these settings: nothing to do (--force rebuilds)", options.out.string());
    summary.up_to_date = true;
    summary.file_bytes = static_cast<int64_t>(fs::file_size(options.out));
    return summary;
  }
  if (options.force) {
    std::error_code ignored;
    fs::remove(options.out.string() + ".partial", ignored);
  }
  const DataRecords records =
      open_records(*dataset, {options.limit_train, options.limit_test, store, dataset_sha256});
  const SplitRecords& train = records.train;
  const SplitRecords& test = records.test;
  summary.skipped = records.skipped_count;

  torch::NoGradGuard no_grad;
  model->eval();
  model->to(compute.device);
  if (!compute.cuda()) to_channels_last(*model);
  const Preprocessor preprocess(options.image_size, normalization, train.side());

  json provenance = {{"settings", settings},
                     {"weights", weights.describe()},
                     {"weights_file", weights.pretrained ? fs::absolute(options.weights).string() : ""},
                     {"data", fs::absolute(dataset->folder()).string()},
                     {"device", compute.describe()},
                     {"library_versions", {{"torch", torch_version()}, {"hdf5", hdf5_version()}}},
                     {"created", now_utc()}};
  if (compute.precision != Precision::Fp32) {
    // The reduced precision's cost in accuracy, measured on a sample and recorded.
    Compute fp32 = compute;
    fp32.precision = Precision::Fp32;
    const at::Tensor sample = preprocess(train.rows(row_range(0, std::min<int64_t>(16, train.size()))).images);
    const auto reference = model->forward_taps(to_model(sample, fp32), taps);
    model->to(compute.dtype());
    provenance["precision_error"] = relative_errors(reference, model->forward_taps(to_model(sample, compute), taps));
    spdlog::info("{} vs fp32 on {} images, relative L2 error: {}", to_string(compute.precision), sample.size(0),
                 provenance["precision_error"].dump());
  }

  CacheLayout layout;
  layout.train_rows = train.size();
  layout.test_rows = test.size();
  layout.dtype = dtype;
  for (const std::string& tap : taps) layout.taps.emplace_back(tap, tap_width(spec, tap));
  FeatureWriter writer(options.out, provenance, layout);
  summary.resumed = writer.resumed();
  if (writer.resumed()) {
    spdlog::info("resuming {}: {} train and {} test rows already written", writer.partial_path().string(),
                 writer.rows_done("train"), writer.rows_done("test"));
  }

  const auto start = std::chrono::steady_clock::now();
  int64_t batches_done = 0;
  // CPU: one channels-last buffer for a group of batches, reused by every group of both
  // splits, so the test split does not pay for fresh pages again.
  at::Tensor buffer;
  for (const auto& [split, images] : {std::pair<std::string, const SplitRecords*>{"train", &train}, {"test", &test}}) {
    const int64_t first = writer.rows_done(split), n = images->size();
    if (first >= n) continue;
    const auto batches = make_batches(row_range(first, n - first), options.batch_size);
    // On a CPU, several batches are preprocessed per TBB call (batches_per_group).
    const int64_t group = compute.cuda() ? 1 : batches_per_group(options.batch_size, preprocess.size(), compute);
    const auto groups = make_batches(row_range(first, n - first), options.batch_size * group);
    Progress progress("extract " + split, n - first);
    Prefetcher<at::Tensor> source(
        static_cast<int64_t>(groups.size()),
        [&](int64_t k) { return preprocessed_batch(preprocess, images->rows(groups[k]).images, compute, buffer); },
        /*ahead=*/compute.cuda());
    at::Tensor grouped;  // the current group's model inputs
    for (int64_t b = 0; b < static_cast<int64_t>(batches.size()); ++b) {
      if (options.stop_after_batches > 0 && batches_done++ == options.stop_after_batches) {
        spdlog::info("stopped after {} batches as asked; rerun to resume {}", options.stop_after_batches,
                     writer.partial_path().string());
        summary.stopped = true;
        summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return summary;
      }
      // A group's batches are consecutive rows: batch b is rows [offset, offset + count)
      // of its group's preprocessed tensor.
      const auto batch_start = std::chrono::steady_clock::now();
      auto mark = batch_start;
      const auto lap = [&mark](double& total) {
        const auto now = std::chrono::steady_clock::now();
        total += std::chrono::duration<double>(now - mark).count();
        mark = now;
      };
      if (b % group == 0) grouped = source.next();
      lap(summary.preprocess_seconds);
      const int64_t row = batches[b].front(), count = static_cast<int64_t>(batches[b].size());
      const int64_t offset = (b % group) * options.batch_size;
      const at::Tensor x = to_model(grouped.slice(0, offset, offset + count), compute);
      const auto outputs = model->forward_taps(x, taps);
      std::map<std::string, at::Tensor> rows_out;
      for (const auto& [tap, value] : outputs) rows_out[tap] = value.to(torch::kCPU, torch::kFloat);
      lap(summary.model_seconds);
      writer.write(split, row, images->labels().slice(0, row, row + count), rows_out);
      lap(summary.write_seconds);
      summary.batch_seconds.push_back(std::chrono::duration<double>(mark - batch_start).count());
      progress.advance(count);
      summary.images += count;
    }
    progress.finish();
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.images_per_second = summary.seconds > 0 ? summary.images / summary.seconds : 0;
  // The one-time cost of approach 1, read back by transfer-compare.
  writer.finish(json{{"extract_seconds", summary.seconds},
                      {"extract_images", summary.images},
                      {"extract_images_per_second", summary.images_per_second},
                      {"resumed", summary.resumed},
                      {"skipped_images", records.skipped_count},
                      {"skipped", records.skipped}});
  summary.file_bytes = static_cast<int64_t>(fs::file_size(options.out));
  return summary;
}

}  // namespace pipeline
