#pragma once
// Progress of long work on stderr: count, rate and ETA. On a terminal one line is
// redrawn at most 5 times a second; otherwise (logs, CI) a line every few seconds.

#include <chrono>
#include <cstdint>
#include <string>

namespace pipeline {

class Progress {
 public:
  // what: e.g. "extract train"; total: expected units (0: unknown); unit: "images".
  Progress(std::string what, int64_t total, std::string unit = "images");
  ~Progress();

  // Adds `done` units; `note` (e.g. "loss 0.61") is shown after the rate.
  void advance(int64_t done, const std::string& note = "");
  // Prints the final line (count, seconds, rate) once.
  void finish(const std::string& note = "");

  int64_t done() const { return done_; }
  double seconds() const;
  double rate() const;  // units per second so far

 private:
  void print(bool final, const std::string& note);

  std::string what_, unit_;
  int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_print_;
  bool terminal_, finished_ = false;
};

}  // namespace pipeline
