#pragma once
// Drawing a report's SVG plots with gnuplot, never half: the script writes each plot
// as NAME + suffix (gnuplot is run with -e "suffix='.tmp'"), and only when every
// wanted file is there and non-empty are they renamed into place.

#include <filesystem>
#include <string>
#include <vector>

namespace pipeline {

// gnuplot's messages while it runs, in the report folder (removed after).
inline constexpr const char* kPlotLog = ".gnuplot.log";

// Runs `gnuplot` (looked up on PATH unless it holds a '/', then taken from the
// caller's folder) on `script`, a file inside `out`, from inside `out`, for at most
// 120 s. Returns the names drawn (`wanted`). On any failure -- no such program, a
// non-zero exit, the deadline, a missing or empty plot -- returns {} with `error`
// saying why (gnuplot's first lines included) and removes every file of `owned` (plots
// of an earlier report would not match this one). Files of `owned` not in `wanted` are
// removed too. Throws pipeline::Error only when a rename fails.
std::vector<std::string> draw_plots(const std::filesystem::path& out, const std::string& gnuplot,
                                    const std::string& script, const std::vector<std::string>& wanted,
                                    const std::vector<std::string>& owned, std::string& error);

// One sentence: how to get the plots when there are none.
extern const char* kPlotHowTo;

}  // namespace pipeline
