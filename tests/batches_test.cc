#include "pipeline/batches.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <thread>

#include "pipeline/error.h"

TEST(Batches, SplitIsDeterministicDisjointAndComplete) {
  auto a = pipeline::split_train_val(1000, 0.2, 5);
  auto b = pipeline::split_train_val(1000, 0.2, 5);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.val, b.val);
  EXPECT_EQ(a.val.size(), 200u);
  std::set<int64_t> all(a.train.begin(), a.train.end());
  all.insert(a.val.begin(), a.val.end());
  EXPECT_EQ(all.size(), 1000u);
  auto c = pipeline::split_train_val(1000, 0.2, 6);
  EXPECT_NE(a.val, c.val);
}

TEST(Batches, SplitIsAShuffleNotAPrefix) {
  auto split = pipeline::split_train_val(1000, 0.2, 1);
  EXPECT_LT(split.val.front(), 50);
  EXPECT_GT(split.val.back(), 950);
}

TEST(Batches, SplitRejectsBadFractions) {
  EXPECT_THROW(pipeline::split_train_val(10, 1.0, 0), pipeline::UsageError);
  EXPECT_THROW(pipeline::split_train_val(10, -0.1, 0), pipeline::UsageError);
  EXPECT_TRUE(pipeline::split_train_val(10, 0.0, 0).val.empty());
}

TEST(Batches, EpochOrderIsASeededPermutationPerEpoch) {
  std::vector<int64_t> rows(100);
  std::iota(rows.begin(), rows.end(), 0);
  auto e0 = pipeline::epoch_order(rows, 3, 0);
  EXPECT_EQ(e0, pipeline::epoch_order(rows, 3, 0));
  EXPECT_NE(e0, pipeline::epoch_order(rows, 3, 1));
  EXPECT_NE(e0, rows);
  std::sort(e0.begin(), e0.end());
  EXPECT_EQ(e0, rows);
}

TEST(Batches, MakeBatchesCoversEveryRowOnce) {
  std::vector<int64_t> rows(10);
  std::iota(rows.begin(), rows.end(), 0);
  auto batches = pipeline::make_batches(rows, 4);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[2], (std::vector<int64_t>{8, 9}));
  EXPECT_THROW(pipeline::make_batches(rows, 0), pipeline::UsageError);
}

// With `ahead`, item k+1 is produced while the consumer still holds item k: the
// producer of item 1 must run to completion before the consumer asks for it.
TEST(Prefetcher, ProducesTheNextItemWhileTheCurrentOneIsUsed) {
  std::mutex mutex;
  std::condition_variable produced_cv;
  std::set<int64_t> produced;
  pipeline::Prefetcher<int64_t> source(
      3,
      [&](int64_t k) {
        std::lock_guard<std::mutex> lock(mutex);
        produced.insert(k);
        produced_cv.notify_all();
        return k * 10;
      },
      true);
  EXPECT_EQ(source.next(), 0);
  {
    std::unique_lock<std::mutex> lock(mutex);
    // Liveness, not timing: fails only if item 1 is never produced ahead.
    EXPECT_TRUE(produced_cv.wait_for(lock, std::chrono::seconds(30), [&] { return produced.count(1) == 1; }));
    EXPECT_EQ(produced.count(2), 0u) << "only one item ahead";
  }
  EXPECT_EQ(source.next(), 10);
  EXPECT_EQ(source.next(), 20);
  EXPECT_FALSE(source.has_next());
}

TEST(Prefetcher, InlineModeProducesOnDemandInOrder) {
  std::vector<int64_t> calls;
  pipeline::Prefetcher<int64_t> source(3, [&](int64_t k) { calls.push_back(k); return k; }, false);
  EXPECT_TRUE(calls.empty());
  EXPECT_EQ(source.next(), 0);
  EXPECT_EQ(calls, (std::vector<int64_t>{0}));
  source.next();
  source.next();
  EXPECT_EQ(calls, (std::vector<int64_t>{0, 1, 2}));
}

TEST(Prefetcher, ProducerErrorsSurfaceInNext) {
  pipeline::Prefetcher<int> source(2, [](int64_t k) -> int { if (k == 1) throw std::runtime_error("bad batch"); return 0; }, true);
  EXPECT_EQ(source.next(), 0);
  EXPECT_THROW(source.next(), std::runtime_error);
}
