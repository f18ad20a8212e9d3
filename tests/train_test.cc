#include "pipeline/train.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <numeric>

#include "pipeline/error.h"
#include "test_util.h"

namespace {

// A model whose logits are scripted per epoch, to test the loop's bookkeeping.
class Scripted : public pipeline::Trainable {
 public:
  explicit Scripted(std::vector<double> accuracy_per_epoch) : accuracy_(std::move(accuracy_per_epoch)) {}
  int64_t members() const override { return 1; }
  void set_training(bool training) override {
    if (training && started_) ++epoch_;  // every epoch after the first starts in train mode
    started_ = started_ || training;
  }
  pipeline::BatchScores train_step(const pipeline::Batch& batch) override {
    if (poison_) return pipeline::score_logits(torch::full({1, batch.labels.size(0), 10}, std::nan("")), batch.labels);
    return pipeline::score_logits(logits_for(batch), batch.labels);
  }
  at::Tensor predict(const at::Tensor& inputs) override {
    return logits_for({inputs, inputs.to(torch::kLong)});
  }
  void keep_best(int64_t) override { best_epoch_ = epoch_; }
  void use_best() override { epoch_ = best_epoch_; }
  bool poison_ = false;

 private:
  // Right on the first round(acc * B) rows of the batch, wrong on the rest.
  at::Tensor logits_for(const pipeline::Batch& batch) {
    const int64_t b = batch.labels.size(0);
    const double acc = accuracy_[std::min<size_t>(epoch_, accuracy_.size() - 1)];
    auto logits = torch::zeros({1, b, 10});
    const auto right = static_cast<int64_t>(std::llround(acc * b));
    for (int64_t i = 0; i < b; ++i) {
      const int64_t label = batch.labels[i].item<int64_t>();
      logits[0][i][i < right ? label : (label + 1) % 10] = 5.0;
    }
    return logits;
  }
  std::vector<double> accuracy_;
  size_t epoch_ = 0, best_epoch_ = 0;
  bool started_ = false;
};

pipeline::TrainData data(int64_t n) {
  pipeline::TrainData d;
  d.train_rows.resize(n);
  std::iota(d.train_rows.begin(), d.train_rows.end(), 0);
  d.val_rows = d.train_rows;
  d.test_rows = d.train_rows;
  d.make_batch = [](pipeline::Part, const std::vector<int64_t>& rows) {
    auto labels = torch::tensor(rows) % 10;
    return pipeline::Batch{labels.to(torch::kFloat), labels};
  };
  return d;
}

}  // namespace

TEST(Train, ScoreLogitsIsMeanCrossEntropyAndAccuracy) {
  const auto logits = torch::tensor({{{2.0f, 0.0f}, {0.0f, 1.0f}, {3.0f, 0.0f}}});
  const auto labels = torch::tensor({0, 1, 1}, torch::kLong);
  const auto [loss, correct] = pipeline::score_logits(logits, labels);
  const double expected = (std::log(1 + std::exp(-2.0)) + std::log(1 + std::exp(-1.0)) + std::log(1 + std::exp(3.0)));
  EXPECT_NEAR(loss[0].item<double>(), expected, 1e-6);
  EXPECT_EQ(correct[0].item<int64_t>(), 2);
}

TEST(Train, ScoreLogitsMatchesLogSoftmaxOnAPermutedView) {
  torch::manual_seed(3);
  const auto logits = (torch::randn({5, 3, 4}) * 4).permute({1, 0, 2});  // [K=3, B=5, C=4], not contiguous
  const auto labels = torch::tensor({0, 3, 2, 1, 3}, torch::kLong);
  const auto [loss, correct] = pipeline::score_logits(logits, labels);
  const auto log_probs = torch::log_softmax(logits.to(torch::kFloat64), -1);
  for (int64_t m = 0; m < 3; ++m) {
    double expected = 0;
    int64_t hits = 0;
    for (int64_t row = 0; row < 5; ++row) {
      expected -= log_probs[m][row][labels[row]].item<double>();
      hits += logits[m][row].argmax().item<int64_t>() == labels[row].item<int64_t>();
    }
    EXPECT_NEAR(loss[m].item<double>(), expected, 1e-9) << "member " << m;
    EXPECT_EQ(correct[m].item<int64_t>(), hits) << "member " << m;
  }
}

TEST(Train, ScoreLogitsFlagsNonFiniteLogitsAndBadLabels) {
  auto logits = torch::zeros({2, 2, 3});
  logits[1][0][2] = std::nanf("");
  const auto [loss, correct] = pipeline::score_logits(logits, torch::tensor({0, 1}, torch::kLong));
  EXPECT_TRUE(std::isfinite(loss[0].item<double>()));
  EXPECT_TRUE(std::isnan(loss[1].item<double>()));
  EXPECT_THROW(pipeline::score_logits(logits, torch::tensor({0, 3}, torch::kLong)), pipeline::Error);
}

TEST(Train, PicksTheBestValidationEpochAndScoresTestWithIt) {
  Scripted model({0.5, 0.9, 0.7});
  pipeline::LoopOptions options;
  options.epochs = 3;
  options.batch_size = 10;
  const auto result = pipeline::run_training(model, data(40), options);
  ASSERT_TRUE(result.finished);
  const auto& member = result.members[0];
  ASSERT_EQ(member.epochs.size(), 3u);
  EXPECT_EQ(member.best_epoch, 2);
  EXPECT_NEAR(member.epochs[1].val_acc, 0.9, 1e-9);
  EXPECT_NEAR(member.test_acc, 0.9, 1e-9) << "test must use the best-validation weights";
  int64_t total = 0;
  for (const auto& row : member.confusion) total += std::accumulate(row.begin(), row.end(), int64_t{0});
  EXPECT_EQ(total, 40);
  EXPECT_TRUE(std::isnan(member.epochs[0].test_acc)) << "test is scored once unless asked";
}

TEST(Train, NonFiniteLossStopsWithAClearError) {
  Scripted model({0.5});
  model.poison_ = true;
  pipeline::LoopOptions options;
  options.epochs = 2;
  const std::string message = testutil::error_of([&] { pipeline::run_training(model, data(20), options); });
  EXPECT_NE(message.find("non-finite"), std::string::npos) << message;
}

TEST(Train, RejectsZeroEpochs) {
  Scripted model({0.5});
  pipeline::LoopOptions options;
  options.epochs = 0;
  EXPECT_THROW(pipeline::run_training(model, data(20), options), pipeline::UsageError);
}
