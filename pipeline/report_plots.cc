// The data behind the comparison's plots and the gnuplot script that draws them.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "pipeline/metrics.h"
#include "pipeline/report_parts.h"
#include "pipeline/report_text.h"

namespace pipeline::report_parts {
namespace {

// A class name as one CSV field (quoted when it holds a comma or a quote).
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c == '\n' ? ' ' : c);
  return quoted + "\"";
}

}  // namespace

std::string plot_csv(const std::vector<EpochRecord>& epochs, double start_seconds) {
  std::string csv = "epoch,train_loss,train_acc,val_loss,val_acc,seconds,elapsed_seconds\n";
  double elapsed = start_seconds;
  for (const EpochRecord& e : epochs) {
    elapsed += e.seconds;
    csv += fmt::format("{},{},{},{},{},{},{}\n", e.epoch, csv_number(e.train_loss), csv_number(e.train_acc),
                       csv_number(e.val_loss), csv_number(e.val_acc), csv_number(e.seconds), csv_number(elapsed));
  }
  return csv;
}

std::string per_class_csv(const std::vector<std::string>& names, const std::vector<double>& probe,
                          const std::vector<double>& finetune) {
  std::string csv = "class,linear_probe,fine_tune\n";
  const auto cell = [](double v) { return std::isfinite(v) ? fmt::format("{:.4f}", 100 * v) : std::string(); };
  for (size_t k = 0; k < probe.size(); ++k) {
    csv += fmt::format("{},{},{}\n", csv_field(names[k]), cell(probe[k]), cell(finetune[k]));
  }
  return csv;
}

std::string gnuplot_script(double extract_seconds, bool per_class, size_t classes) {
  std::string s = R"(# Draws the comparison's plots from the CSVs beside this file: run `gnuplot plots.gp`
# in this folder. (transfer-compare runs it with suffix='.tmp' and renames the results.)
if (!exists("suffix")) suffix = ''
set datafile separator ','
set datafile missing ''
set key autotitle columnhead
set terminal svg size 800,480 dynamic noenhanced font 'Helvetica,13' background rgb 'white'
set grid
set key top right
probe = 'linear-probe-history.csv'
tune = 'fine-tune-history.csv'
set style line 1 lc rgb '#1f77b4' lw 2 pt 7 ps 0.6
set style line 2 lc rgb '#1f77b4' lw 2 dt 2 pt 6 ps 0.6
set style line 3 lc rgb '#d62728' lw 2 pt 7 ps 0.6
set style line 4 lc rgb '#d62728' lw 2 dt 2 pt 6 ps 0.6

set output 'loss.svg'.suffix
set title 'Loss per epoch'
set xlabel 'epoch'
set ylabel 'mean cross-entropy'
set xtics 1
plot probe using 1:2 with linespoints ls 2 title 'linear probe, training', \
     probe using 1:4 with linespoints ls 1 title 'linear probe, validation', \
     tune using 1:2 with linespoints ls 4 title 'fine-tuning, training', \
     tune using 1:4 with linespoints ls 3 title 'fine-tuning, validation'

set output 'accuracy.svg'.suffix
set title 'Validation accuracy per epoch'
set ylabel 'validation accuracy (%)'
set key bottom right
plot probe using 1:($5*100) with linespoints ls 1 title 'linear probe', \
     tune using 1:($5*100) with linespoints ls 3 title 'fine-tuning'

set output 'time.svg'.suffix
set xtics autofreq
set xrange [0:*]
)";
  if (std::isfinite(extract_seconds)) {
    s += fmt::format(
        "set title 'Validation accuracy against wall-clock time'\n"
        "set arrow 1 from {0:.6g}, graph 0 to {0:.6g}, graph 1 nohead lc rgb '#1f77b4' dt 3\n"
        "set label 1 'feature extraction ({1})' at {0:.6g}, graph 0.05 offset 0.5,0 tc rgb '#1f77b4'\n",
        extract_seconds, secs(extract_seconds));
  } else {
    s += "set title 'Validation accuracy against wall-clock time (probe: extraction cost unknown)'\n";
  }
  s += R"(set xlabel 'cumulative wall-clock seconds (the probe''s include its feature extraction)'
plot probe using 7:($5*100) with linespoints ls 1 title 'linear probe', \
     tune using 7:($5*100) with linespoints ls 3 title 'fine-tuning'
unset arrow 1
unset label 1
)";
  if (per_class) {
    s += R"(
set output 'per_class.svg'.suffix
set title 'Per-class test accuracy (best-validation weights)'
set xrange [*:*]
set xlabel ''
set ylabel 'test accuracy (%)'
set yrange [0:100]
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -30 nomirror
set key top right
)";
    if (classes > 20) {
      // 100 classes: a wider plot, labels turned upright and small.
      s += fmt::format("set terminal svg size {},520 dynamic noenhanced font 'Helvetica,11' background rgb 'white'\n"
                       "set output 'per_class.svg'.suffix\n"
                       "set xtics rotate by -90 font ',8'\n",
                       std::max<size_t>(800, 24 * classes));
    }
    s += R"(plot 'per-class.csv' using 2:xtic(1) lc rgb '#1f77b4' title 'linear probe', \
     '' using 3 lc rgb '#d62728' title 'fine-tuning'
)";
  }
  s += "unset output\n";
  return s;
}

}  // namespace pipeline::report_parts
