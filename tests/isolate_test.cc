// Tests of pipeline/isolate: each way a child's work can end, and the inline mode.

#include "pipeline/isolate.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "pipeline/error.h"
#include "test_util.h"

namespace {

using pipeline::Isolated;

TEST(Isolate, ReportsHowTheChildsWorkEnded) {
  EXPECT_EQ(pipeline::run_isolated([] {}, 10).outcome, Isolated::Finished);

  Isolated r = pipeline::run_isolated([] { pipeline::fail("cache {} is damaged", "x.h5"); }, 10);
  EXPECT_EQ(r.outcome, Isolated::Threw);
  EXPECT_EQ(r.message, "cache x.h5 is damaged");

  r = pipeline::run_isolated([] { throw std::out_of_range("vector::at"); }, 10);
  EXPECT_EQ(r.outcome, Isolated::ThrewOther);
  EXPECT_EQ(r.message, "vector::at");

  r = pipeline::run_isolated([] { std::abort(); }, 10);
  EXPECT_EQ(r.outcome, Isolated::Crashed);

  const auto start = std::chrono::steady_clock::now();
  r = pipeline::run_isolated([] { std::this_thread::sleep_for(std::chrono::seconds(30)); }, 0.3);
  EXPECT_EQ(r.outcome, Isolated::Hung);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10)) << "the child was not killed";
}

TEST(Isolate, TheChildsEffectsStayInTheChild) {
  int value = 1;
  pipeline::run_isolated([&] { value = 2; }, 10);
  EXPECT_EQ(value, 1);
}

TEST(Isolate, InlineModeRunsHereAndPropagates) {
  ::setenv("TRANSFER_NO_ISOLATE", "1", 1);
  int value = 1;
  EXPECT_EQ(pipeline::run_isolated([&] { value = 2; }, 10).outcome, Isolated::Finished);
  EXPECT_EQ(value, 2);
  EXPECT_THROW(pipeline::run_isolated([] { pipeline::fail("here"); }, 10), pipeline::Error);
  ::unsetenv("TRANSFER_NO_ISOLATE");
}

}  // namespace

// A program that hangs is stopped at its deadline (gnuplot for the report's plots).
TEST(RunProgram, AProgramThatHangsIsStoppedAtItsDeadline) {
  testutil::TempDir dir;
  // Killed, not waited for: sleep would end with status 0.
  EXPECT_EQ(pipeline::run_program(dir.path(), "/bin/sleep", {"30"}, "log.txt", 0.3), pipeline::kTimedOut);
  EXPECT_EQ(pipeline::run_program(dir.path(), "/bin/sh", {"-c", "exit 3"}, "log.txt", 30), 3);
}
