#include "pipeline/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace pipeline {

Progress::Progress(std::string what, int64_t total, std::string unit)
    : what_(std::move(what)),
      unit_(std::move(unit)),
      total_(total),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_),
      terminal_(isatty(fileno(stderr)) != 0) {}

Progress::~Progress() {
  if (terminal_ && !finished_ && done_ > 0) std::fputc('\n', stderr);
}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double Progress::rate() const {
  const double s = seconds();
  return s > 0 ? static_cast<double>(done_) / s : 0.0;
}

void Progress::advance(int64_t done, const std::string& note) {
  done_ += done;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_print_).count();
  if (since >= (terminal_ ? 0.2 : 5.0)) {
    last_print_ = now;
    print(false, note);
  }
}

void Progress::finish(const std::string& note) {
  if (finished_) return;
  finished_ = true;
  print(true, note);
}

void Progress::print(bool final, const std::string& note) {
  std::string line = fmt::format("{}: {}", what_, done_);
  if (total_ > 0) line += fmt::format("/{} {} ({:.0f}%)", total_, unit_, 100.0 * done_ / total_);
  else line += " " + unit_;
  line += fmt::format(", {:.1f} {}/s", rate(), unit_);
  if (final) {
    line += fmt::format(", {:.1f} s", seconds());
  } else if (total_ > 0 && rate() > 0) {
    line += fmt::format(", ETA {:.0f} s", static_cast<double>(total_ - done_) / rate());
  }
  if (!note.empty()) line += ", " + note;
  if (terminal_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace pipeline
