#pragma once
// How the reports (report.cc, backbones_report.cc) write numbers for people: percent
// with two decimals, seconds with 2/1/0 decimals by size, losses with four, counts with
// thousands separators; "—" for a value that is not finite.

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace pipeline {

inline std::string pct(double fraction) {
  return std::isfinite(fraction) ? fmt::format("{:.2f} %", 100 * fraction) : "—";
}

inline std::string secs(double s) {
  if (!std::isfinite(s)) return "—";
  if (std::fabs(s) < 10) return fmt::format("{:.2f} s", s);
  if (std::fabs(s) < 100) return fmt::format("{:.1f} s", s);
  return fmt::format("{:.0f} s", s);
}

inline std::string loss_text(double loss) { return std::isfinite(loss) ? fmt::format("{:.4f}", loss) : "—"; }

inline std::string count_text(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

}  // namespace pipeline
