#include "pipeline/train.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include "pipeline/batches.h"
#include "pipeline/error.h"
#include "pipeline/files.h"
#include "pipeline/progress.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline {

void Trainable::save_state(const fs::path&) const { fail("this model does not support checkpoints"); }
void Trainable::load_state(const fs::path&) { fail("this model does not support checkpoints"); }

ParameterSnapshot::ParameterSnapshot(std::vector<at::Tensor> parameters) : live_(std::move(parameters)) {
  for (const at::Tensor& p : live_) saved_.push_back(p.detach().clone());
}

at::Tensor Trainable::predict_batch(const Batch& batch) {
  if (!batch.inputs.defined()) fail("this model takes its batches as inputs, not as rows in place");
  return predict(batch.inputs);
}

void ParameterSnapshot::keep() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < live_.size(); ++i) saved_[i].copy_(live_[i]);
}

void ParameterSnapshot::restore() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < live_.size(); ++i) live_[i].copy_(saved_[i]);
}

// By hand, in double: as LibTorch ops (a float64 copy, log_softmax, gather, argmax on
// the permuted view a sweep's predict returns) it cost more than scoring a 32-head sweep
// needs. A NaN or infinite logit makes that member's loss NaN, as log_softmax would.
BatchScores score_logits(const at::Tensor& logits, const at::Tensor& labels) {
  const at::Tensor values = logits.to(torch::kCPU, torch::kFloat);
  const at::Tensor targets = labels.to(torch::kCPU, torch::kLong);
  const int64_t k = values.size(0), b = values.size(1), c = values.size(2);
  at::Tensor loss_sum = torch::zeros({k}, torch::kFloat64), correct = torch::zeros({k}, torch::kInt64);
  const auto l = values.accessor<float, 3>();
  const auto y = targets.accessor<int64_t, 1>();
  auto loss_out = loss_sum.accessor<double, 1>();
  auto correct_out = correct.accessor<int64_t, 1>();
  for (int64_t row = 0; row < b; ++row) {
    if (y[row] < 0 || y[row] >= c) fail("label {} of batch row {} is outside 0..{}", y[row], row, c - 1);
  }
  for (int64_t m = 0; m < k; ++m) {
    for (int64_t row = 0; row < b; ++row) {
      const auto z = l[m][row];
      int64_t best = 0;
      for (int64_t j = 1; j < c; ++j) best = z[j] > z[best] ? j : best;
      const double top = z[best];
      double total = 0;
      for (int64_t j = 0; j < c; ++j) total += std::exp(static_cast<double>(z[j]) - top);
      loss_out[m] += std::log(total) + top - static_cast<double>(z[y[row]]);
      correct_out[m] += best == y[row];
    }
  }
  return {loss_sum, correct};
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct Scores {
  std::vector<double> loss, acc;
  std::vector<std::vector<std::vector<int64_t>>> confusion;  // [K][C][C]
};

// Scores every member on `rows` of `part` in eval mode.
Scores evaluate(Trainable& model, const TrainData& data, Part part, const std::vector<int64_t>& rows,
                const LoopOptions& options, bool want_confusion) {
  const int64_t k = model.members();
  Scores scores{std::vector<double>(k, std::nan("")), std::vector<double>(k, std::nan("")), {}};
  if (rows.empty()) return scores;
  model.set_training(false);
  const auto batches = make_batches(rows, options.eval_batch_size > 0 ? options.eval_batch_size : options.batch_size);
  Prefetcher<Batch> source(static_cast<int64_t>(batches.size()),
                           [&](int64_t i) { return data.make_batch(part, batches[i]); }, options.prefetch);
  at::Tensor loss = torch::zeros({k}, torch::kFloat64), correct = torch::zeros({k}, torch::kInt64);
  at::Tensor confusion;
  while (source.has_next()) {
    const Batch batch = source.next();
    const at::Tensor logits = model.predict_batch(batch);
    const auto [l, c] = score_logits(logits, batch.labels);
    loss += l;
    correct += c;
    if (want_confusion) {
      const int64_t classes = logits.size(2);
      if (!confusion.defined()) confusion = torch::zeros({k, classes * classes}, torch::kInt64);
      const at::Tensor cell = batch.labels.view({1, -1}) * classes + logits.argmax(-1);
      confusion.scatter_add_(1, cell, torch::ones_like(cell));
    }
  }
  const auto n = static_cast<double>(rows.size());
  for (int64_t m = 0; m < k; ++m) {
    scores.loss[m] = loss[m].item<double>() / n;
    scores.acc[m] = static_cast<double>(correct[m].item<int64_t>()) / n;
    if (want_confusion) {
      const int64_t classes = static_cast<int64_t>(std::lround(std::sqrt(confusion.size(1))));
      const at::Tensor matrix = confusion[m].view({classes, classes});
      std::vector<std::vector<int64_t>> rows_out(classes, std::vector<int64_t>(classes));
      for (int64_t i = 0; i < classes; ++i)
        for (int64_t j = 0; j < classes; ++j) rows_out[i][j] = matrix[i][j].item<int64_t>();
      scores.confusion.push_back(rows_out);
    }
  }
  return scores;
}

// The loop's own resume state, beside the model's files in the checkpoint folder.
struct LoopState {
  int64_t epochs_done = 0;
  double train_seconds = 0, phase_seconds = 0;  // phase: training batches, data included
  int64_t images_trained = 0;
  std::vector<MemberResult> members;
  std::vector<double> best_val;
};

// "" when the checkpoint folder `dir` holds only `state_files` and loop.json (or
// nothing), else a sentence naming the first other entry (only_entries()).
std::string checkpoint_foreign_entries(const fs::path& dir, std::vector<std::string> state_files) {
  state_files.emplace_back("loop.json");  // written by save_checkpoint()
  return only_entries(dir, state_files);
}

void save_checkpoint(const Trainable& model, const LoopState& state, const fs::path& dir) {
  // Built in a temporary sibling and swapped in by renames (files.h): an interruption
  // at any point leaves either the previous complete checkpoint or the new one.
  replace_folder_atomically(
      fs::absolute(dir).lexically_normal(),
      [&](const fs::path& fresh) {
        model.save_state(fresh);
        json members = json::array();
        for (size_t m = 0; m < state.members.size(); ++m) {
          json epochs = json::array();
          for (const auto& e : state.members[m].epochs) epochs.push_back(to_json(e));
          members.push_back(
              {{"epochs", epochs}, {"best_epoch", state.members[m].best_epoch}, {"best_val", state.best_val[m]}});
        }
        write_file_atomic(fresh / "loop.json",
                          json{{"epochs_done", state.epochs_done}, {"train_seconds", state.train_seconds},
                               {"phase_seconds", state.phase_seconds}, {"images_trained", state.images_trained},
                               {"members", members}}
                              .dump(1));
      },
      [&model](const fs::path& existing) { return checkpoint_foreign_entries(existing, model.state_files()); });
}

// A finite number >= 0 at object[key]; throws Error naming the file otherwise.
double seconds_at(const json& object, const char* key, const std::string& source) {
  const json& value = object.at(key);
  if (!value.is_number() || !(value.get<double>() >= 0) || !std::isfinite(value.get<double>())) {
    fail("{}: \"{}\" is {}, not a number of seconds", source, key, value.dump());
  }
  return value.get<double>();
}

// Reads loop.json, cross-checking every count against the others and this run, so a
// checkpoint can never claim more (or other) work than it holds.
void read_loop_state(const Trainable& model, LoopState& state, const fs::path& file, int64_t epochs) {
  const std::string source = file.string();
  json j;
  try {
    j = json::parse(read_file(file, 64u << 20));
  } catch (const json::exception& e) {
    fail("{} is not valid JSON: {}", source, e.what());
  }
  if (!j.is_object()) fail("{} is not a JSON object", source);
  try {
    state.epochs_done = integer_at(j, "epochs_done", source, "loop.json", 0, epochs);
    state.train_seconds = seconds_at(j, "train_seconds", source);
    state.phase_seconds = seconds_at(j, "phase_seconds", source);
    state.images_trained = integer_at(j, "images_trained", source, "loop.json", 0, std::numeric_limits<int64_t>::max() / 2);
    const json& members = j.at("members");
    if (!members.is_array() || static_cast<int64_t>(members.size()) != model.members()) {
      fail("{} holds {} members, this run has {}", source, members.is_array() ? members.size() : 0, model.members());
    }
    for (size_t m = 0; m < members.size(); ++m) {
      const json& member = members[m];
      const json& list = member.at("epochs");
      if (!list.is_array() || static_cast<int64_t>(list.size()) != state.epochs_done) {
        fail("{}: member {} records {} epochs, but epochs_done is {}", source, m, list.is_array() ? list.size() : 0,
             state.epochs_done);
      }
      for (size_t e = 0; e < list.size(); ++e) {
        state.members[m].epochs.push_back(epoch_from_json(list[e], source, fmt::format("members[{}].epochs[{}]", m, e)));
        if (state.members[m].epochs.back().epoch != static_cast<int64_t>(e) + 1) {
          fail("{}: members[{}].epochs[{}] is numbered {}, not {}", source, m, e, state.members[m].epochs.back().epoch, e + 1);
        }
      }
      state.members[m].best_epoch =
          integer_at(member, "best_epoch", source, fmt::format("members[{}]", m), state.epochs_done > 0 ? 1 : 0, state.epochs_done);
      state.best_val[m] = member.at("best_val").is_null() ? -1.0 : member.at("best_val").get<double>();
    }
  } catch (const json::exception& e) {
    fail("{}: a field is missing or of the wrong type ({})", source, e.what());
  }
}

bool load_checkpoint(Trainable& model, LoopState& state, const fs::path& dir, int64_t epochs) {
  if (!fs::exists(dir / "loop.json")) {
    // An interruption between the swap's two renames leaves only the old copy.
    const fs::path old = old_folder_of(fs::absolute(dir).lexically_normal());
    if (!fs::exists(old / "loop.json")) return false;
    std::error_code ec;
    remove_checkpoint(dir, model.state_files());  // an incomplete checkpoint (no loop.json) in the way
    fs::rename(old, dir, ec);
    if (ec) fail("cannot recover the checkpoint {} from {}: {}; run without --resume to start over", dir.string(), old.string(), ec.message());
  }
  try {
    read_loop_state(model, state, dir / "loop.json", epochs);
    model.load_state(dir);
  } catch (const Error& e) {
    fail("cannot resume from the checkpoint {}: {}\nrun without --resume to start over", dir.string(), e.what());
  }
  return true;
}

}  // namespace

void remove_checkpoint(const fs::path& dir, const std::vector<std::string>& state_files) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(dir, ec))) return;
  const std::string foreign = checkpoint_foreign_entries(dir, state_files);
  if (!foreign.empty()) {
    fail("{} {}; it is not a checkpoint of this program, so it is not removed: move it away or choose another --out",
         dir.string(), foreign);
  }
  fs::remove_all(dir, ec);
  if (ec) fail("cannot remove the old checkpoint {}: {}", dir.string(), ec.message());
}

LoopResult run_training(Trainable& model, const TrainData& data, const LoopOptions& options) {
  if (options.epochs < 1) usage_fail("--epochs must be at least 1, got {}", options.epochs);
  if (data.train_rows.empty()) fail("no training rows: the training set (after the validation split) is empty");
  const int64_t k = model.members();
  LoopState state;
  state.members.resize(k);
  state.best_val.assign(k, -1.0);
  if (!options.checkpoint_dir.empty() && options.resume &&
      load_checkpoint(model, state, options.checkpoint_dir, options.epochs)) {
    spdlog::info("resuming from {} after epoch {}", options.checkpoint_dir.string(), state.epochs_done);
  }

  int64_t epochs_this_call = 0;
  std::vector<double> step_seconds;
  for (int64_t epoch = state.epochs_done; epoch < options.epochs; ++epoch) {
    if (options.stop_after_epochs > 0 && epochs_this_call == options.stop_after_epochs) break;
    const auto epoch_start = Clock::now();
    const auto batches = make_batches(epoch_order(data.train_rows, options.seed, epoch), options.batch_size);
    Progress progress(fmt::format("{} epoch {}/{}", options.label, epoch + 1, options.epochs),
                      static_cast<int64_t>(data.train_rows.size()));
    Prefetcher<Batch> source(static_cast<int64_t>(batches.size()),
                             [&](int64_t i) { return data.make_batch(Part::Train, batches[i]); }, options.prefetch);
    std::vector<double> loss(k, 0.0);
    std::vector<int64_t> correct(k, 0);
    model.set_training(true);
    const auto phase_start = Clock::now();
    while (source.has_next()) {
      const auto step_start = Clock::now();
      const Batch batch = source.next();
      const auto [l, c] = model.train_step(batch);
      // Summed here by hand: as tensor ops (isfinite, all, +=, min) they took ~9 us a
      // step, a thirtieth of a lone head's whole step.
      const auto step_loss = l.accessor<double, 1>();
      const auto step_correct = c.accessor<int64_t, 1>();
      bool finite = true;
      double lowest = std::numeric_limits<double>::infinity();
      for (int64_t m = 0; m < k; ++m) {
        finite = finite && std::isfinite(step_loss[m]);
        loss[m] += step_loss[m];
        correct[m] += step_correct[m];
        lowest = std::min(lowest, step_loss[m]);
      }
      if (!finite) {
        fail("{}: the training loss became non-finite in epoch {} (learning rate too high?); {}", options.label,
             epoch + 1,
             options.checkpoint_dir.empty() ? "nothing was saved"
                                            : "the last good checkpoint is kept in " + options.checkpoint_dir.string());
      }
      progress.advance(batch.labels.size(0), fmt::format("loss {:.4f}", lowest / batch.labels.size(0)));
      step_seconds.push_back(seconds_since(step_start));
    }
    progress.finish();
    const double phase_seconds = seconds_since(phase_start);
    const auto n = static_cast<double>(data.train_rows.size());
    const Scores val = evaluate(model, data, Part::Val, data.val_rows, options, false);
    Scores test;
    if (options.test_every_epoch) test = evaluate(model, data, Part::Test, data.test_rows, options, false);
    const double seconds = seconds_since(epoch_start);
    for (int64_t m = 0; m < k; ++m) {
      EpochRecord r;
      r.epoch = epoch + 1;
      r.train_loss = loss[m] / n;
      r.train_acc = static_cast<double>(correct[m]) / n;
      r.val_loss = val.loss[m];
      r.val_acc = val.acc[m];
      r.seconds = seconds;
      if (options.test_every_epoch) {
        r.test_loss = test.loss[m];
        r.test_acc = test.acc[m];
      }
      state.members[m].epochs.push_back(r);
      // Best by validation accuracy; without a validation set, the latest epoch.
      const double score = std::isfinite(r.val_acc) ? r.val_acc : static_cast<double>(epoch);
      if (score > state.best_val[m]) {
        state.best_val[m] = score;
        state.members[m].best_epoch = epoch + 1;
        model.keep_best(m);
      }
    }
    if (k == 1) {
      const EpochRecord& r = state.members[0].epochs.back();
      spdlog::info("{} epoch {}/{}: train loss {:.4f} acc {:.2f}%, val loss {:.4f} acc {:.2f}%, {:.1f} s", options.label,
                   r.epoch, options.epochs, r.train_loss, 100 * r.train_acc, r.val_loss, 100 * r.val_acc, r.seconds);
    }
    state.train_seconds += seconds;
    state.phase_seconds += phase_seconds;
    state.images_trained += static_cast<int64_t>(data.train_rows.size());
    state.epochs_done = epoch + 1;
    ++epochs_this_call;
    if (!options.checkpoint_dir.empty()) save_checkpoint(model, state, options.checkpoint_dir);
  }

  LoopResult result;
  result.train_seconds = state.train_seconds;
  result.step_seconds = std::move(step_seconds);
  result.images_per_second = state.phase_seconds > 0 ? state.images_trained / state.phase_seconds : 0.0;
  result.members = std::move(state.members);
  if (state.epochs_done < options.epochs) return result;

  model.use_best();
  const Scores test = evaluate(model, data, Part::Test, data.test_rows, options, true);
  for (int64_t m = 0; m < k; ++m) {
    result.members[m].test_loss = test.loss[m];
    result.members[m].test_acc = test.acc[m];
    if (!test.confusion.empty()) result.members[m].confusion = test.confusion[m];
  }
  result.finished = true;
  return result;
}

}  // namespace pipeline
