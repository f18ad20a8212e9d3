#include "pipeline/plots.h"

#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "pipeline/error.h"
#include "pipeline/files.h"
#include "pipeline/isolate.h"  // run_program

namespace fs = std::filesystem;

namespace pipeline {
namespace {

// The program's path: as given when it holds a '/', else the first executable on PATH;
// empty when there is none.
std::string find_program(const std::string& program) {
  if (program.find('/') != std::string::npos) {
    // Absolute: the program runs in the report folder, but `./plot.sh` means the caller's.
    const std::string absolute = fs::absolute(program).string();
    return ::access(absolute.c_str(), X_OK) == 0 ? absolute : "";
  }
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const fs::path candidate = fs::path(dir.empty() ? "." : dir) / program;
    std::error_code error;
    if (fs::is_regular_file(candidate, error) && ::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

std::string first_lines(const std::string& text, size_t count) {
  std::istringstream lines(text);
  std::string line, out;
  for (size_t n = 0; n < count && std::getline(lines, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    out += (out.empty() ? "" : " / ") + line;
    ++n;
  }
  return out;
}

}  // namespace

const char* kPlotHowTo =
    "To get the plots, install gnuplot (Debian/Ubuntu: `sudo apt-get install gnuplot-nox`) and rerun "
    "transfer-compare, or run `gnuplot plots.gp` in this folder.";

std::vector<std::string> draw_plots(const fs::path& out, const std::string& gnuplot, const std::string& script,
                                    const std::vector<std::string>& wanted, const std::vector<std::string>& owned,
                                    std::string& error) {
  const auto remove_all = [&](bool finals) {
    std::error_code ignored;
    for (const std::string& name : owned) {
      fs::remove(out / (std::string(name) + ".tmp"), ignored);
      if (finals) fs::remove(out / name, ignored);
    }
  };
  remove_all(false);
  std::string program;
  if (gnuplot.empty()) {
    error = "No plots were asked for (the gnuplot program was set to empty).";
  } else if ((program = find_program(gnuplot)).empty()) {
    error = gnuplot.find('/') != std::string::npos
                ? fmt::format("No plots: the gnuplot program {} does not exist or is not executable.", gnuplot)
                : fmt::format("No plots: `{}` was not found on PATH.", gnuplot);
  } else {
    const fs::path log = out / kPlotLog;
    // gnuplot draws these plots in about a second; one that hangs (or a --gnuplot that
    // waits for input) must not hang the report.
    constexpr double kPlotSeconds = 120;
    const int status = run_program(out, program, {"-e", "suffix='.tmp'", script}, log, kPlotSeconds);
    std::string messages;
    try {
      messages = read_file(log);
    } catch (const Error&) {
    }
    std::error_code ignored;
    fs::remove(log, ignored);
    if (status != 0) {
      error = fmt::format("No plots: `{}` failed ({}){}", program,
                          status == 127         ? "it could not be started"
                          : status == kTimedOut ? fmt::format("it did not finish in {:.0f} s and was stopped", kPlotSeconds)
                                                : fmt::format("exit status {}", status),
                          messages.empty() ? "." : ": " + first_lines(messages, 3));
    } else {
      for (const std::string& name : wanted) {
        std::error_code size_error;
        const fs::path drawn = out / (name + ".tmp");
        if (!fs::exists(drawn) || fs::file_size(drawn, size_error) == 0) {
          error = fmt::format("No plots: `{}` ran but did not write {}{}", program, name,
                              messages.empty() ? "." : ": " + first_lines(messages, 3));
          break;
        }
      }
    }
  }
  if (!error.empty()) {
    remove_all(true);  // old plots would not match this report
    return {};
  }
  for (const std::string& name : wanted) {
    std::error_code rename_error;
    fs::rename(out / (name + ".tmp"), out / name, rename_error);
    if (rename_error) fail("cannot rename {} to {}: {}", (out / (name + ".tmp")).string(), name, rename_error.message());
  }
  for (const std::string& name : owned) {
    if (std::find(wanted.begin(), wanted.end(), name) == wanted.end()) {
      std::error_code ignored;
      fs::remove(out / name, ignored);
    }
  }
  return wanted;
}

}  // namespace pipeline
