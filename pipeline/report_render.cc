// The comparison as text for people (report.md) and as data (report.json).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "pipeline/metrics.h"
#include "pipeline/models/backbone.h"
#include "pipeline/plots.h"
#include "pipeline/report_parts.h"
#include "pipeline/report_text.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline::report_parts {
namespace {

// The run's settings for report.json: the run schema (run_settings.h) without the
// cache's verbatim settings, which repeat what it already says.
json settings_json(const RunSettings& settings) {
  json j = to_json(settings);
  j.erase("cache_settings");
  return j;
}

json approach_json(const ApproachNumbers& n, const RunSettings& settings, const fs::path& folder) {
  json j = {{"run", folder.string()},
            {"best_val_acc", number_or_null(n.best_val_acc)},
            {"best_val_loss", number_or_null(n.best_val_loss)},
            {"best_epoch", n.best_epoch},
            {"test_acc", number_or_null(n.test_acc)},
            {"test_loss", number_or_null(n.test_loss)},
            {"epochs", n.epochs},
            {"train_seconds", number_or_null(n.train_seconds)},
            {"seconds_per_epoch", number_or_null(n.seconds_per_epoch)},
            {"images_per_second", number_or_null(n.images_per_second)},
            {"test_rows", n.test_rows},
            {"device", n.device},
            {"total_seconds", number_or_null(n.total_seconds())},
            {"settings", settings_json(settings)}};
  if (n.approach == "linear-probe") j["extract_seconds"] = number_or_null(n.extract_seconds);
  return j;
}

json study_json(const StudyNumbers& s) {
  return {{"test_acc", s.test_acc},         {"val_loss", s.val_loss}, {"seconds_low", s.seconds_low},
          {"seconds_high", s.seconds_high}, {"epochs", s.epochs}};
}

std::string study_seconds(const StudyNumbers& s, double divide = 1) {
  if (s.seconds_low == s.seconds_high) return fmt::format("{:.{}f} s", s.seconds_low / divide, divide > 1 ? 1 : 0);
  return fmt::format("~{:.0f}–{:.0f} s", s.seconds_low / divide, s.seconds_high / divide);
}

json conclusion_json(const Conclusion& c) {
  return {{"more_accurate", c.more_accurate},
          {"gap_pp", c.gap_pp},
          {"gap_standard_error_pp", number_or_null(c.gap_standard_error_pp)},
          {"within_noise", c.within_noise},
          {"probe_seconds", number_or_null(c.probe_seconds)},
          {"finetune_seconds", number_or_null(c.finetune_seconds)},
          {"extract_known", c.extract_known},
          {"break_even_head_runs", number_or_null(c.break_even_head_runs)},
          {"cheaper_from_experiments", c.cheaper_from_experiments},
          {"text", c.text}};
}


}  // namespace

std::string markdown(const ReportOptions& options, const ReportInputs& in, const Conclusion& conclusion,
                     const std::vector<std::string>& diffs, const std::vector<std::string>& plots,
                     const std::string& plots_error) {
  const ApproachNumbers &probe = in.probe, &tune = in.finetune;
  const Extraction& extraction = in.extraction;
  const std::vector<double>&probe_classes = in.probe_classes, &tune_classes = in.tune_classes;
  const std::vector<SweepRow>& sweep = in.sweep;
  const json& dataset = in.dataset();
  const Backbone& net = backbone(probe.backbone);
  const bool study = in.has_study();
  const std::string data_title = dataset["title"].get<std::string>();
  const std::vector<std::string> names = in.class_names();
  std::string md = fmt::format("# Linear probe vs full fine-tuning: {} on {}\n\n", net.title(), data_title);
  md += fmt::format("Runs: linear probe `{}`, fine-tuning `{}`. Extraction cost: {}.\n\n", options.head.string(),
                    options.finetune.string(), extraction.source);
  md += "## Conclusion\n\n" + conclusion.text + "\n\n";

  md += "## Results\n\n";
  if (study) {
    md += "| | linear probe (this run) | linear probe (study) | fine-tuning (this run) | fine-tuning (study) |\n";
    md += "|---|---:|---:|---:|---:|\n";
  } else {
    md += fmt::format("| {} | linear probe | fine-tuning |\n|---|---:|---:|\n", net.title());
  }
  const auto row = [&](const std::string& name, const std::string& a, const std::string& b, const std::string& c,
                       const std::string& d) {
    md += study ? fmt::format("| {} | {} | {} | {} | {} |\n", name, a, b, c, d)
                : fmt::format("| {} | {} | {} |\n", name, a, c);
  };
  row("best validation accuracy", fmt::format("{} (epoch {})", pct(probe.best_val_acc), probe.best_epoch), "—",
      fmt::format("{} (epoch {})", pct(tune.best_val_acc), tune.best_epoch), "—");
  row("validation loss (best epoch)", loss_text(probe.best_val_loss), loss_text(kStudyProbe.val_loss),
      loss_text(tune.best_val_loss), loss_text(kStudyFinetune.val_loss));
  row("test accuracy", pct(probe.test_acc), pct(kStudyProbe.test_acc), pct(tune.test_acc), pct(kStudyFinetune.test_acc));
  row("test loss", loss_text(probe.test_loss), "—", loss_text(tune.test_loss), "—");
  row("epochs", std::to_string(probe.epochs), std::to_string(kStudyProbe.epochs), std::to_string(tune.epochs),
      std::to_string(kStudyFinetune.epochs));
  row("training seconds", secs(probe.train_seconds), study_seconds(kStudyProbe), secs(tune.train_seconds),
      study_seconds(kStudyFinetune));
  row("seconds per epoch", secs(probe.seconds_per_epoch), study_seconds(kStudyProbe, 10), secs(tune.seconds_per_epoch),
      study_seconds(kStudyFinetune, 10));
  row("training images/s", count_text(std::llround(probe.images_per_second)), "—",
      count_text(std::llround(tune.images_per_second)), "—");
  row("one-time feature extraction", std::isfinite(probe.extract_seconds) ? secs(probe.extract_seconds) : "unknown",
      "none (forward pass every epoch)", "—", "—");
  row("total (extraction + training)",
      std::isfinite(probe.extract_seconds) ? secs(probe.total_seconds()) : "unknown", study_seconds(kStudyProbe),
      secs(tune.train_seconds), study_seconds(kStudyFinetune));
  row("test images", count_text(probe.test_rows), count_text(kStudyTestImages), count_text(tune.test_rows),
      count_text(kStudyTestImages));
  row("device", probe.device.empty() ? "?" : probe.device, "T4 GPU", tune.device.empty() ? "?" : tune.device,
      "T4 GPU");
  if (study) {
    md += "\nStudy: one T4 GPU, 224 px, full CIFAR-10, ImageNet-pretrained weights, 10 epochs, Adam lr 1e-3, batch "
          "128. ";
  } else {
    md += fmt::format("\nThe study measured AlexNet on CIFAR-10 only: for {} on {} there is no study number to "
                      "compare with. ",
                      net.title(), data_title);
  }
  md += "Accuracies are on the test set with the best-validation weights; the validation loss is that of the best "
        "epoch.\n\n";

  md += "## Differences from the study\n\n";
  for (const std::string& d : diffs) md += "- " + d + "\n";
  for (const std::string& n : extraction.notes) md += "- " + n + "\n";
  md += "\n";

  md += "## Per-class test accuracy\n\n";
  if (probe_classes.empty() || tune_classes.empty()) {
    md += fmt::format("Not available: a run has no {0}×{0} confusion matrix in its metrics.json.\n\n", names.size());
  } else {
    // Up to 20 classes: all of them; more: the 10 best and 10 worst (mean of both
    // approaches), every class in per-class.csv.
    std::vector<size_t> order(probe_classes.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    const bool all = order.size() <= 2 * kClassesShownEachEnd;
    if (!all) {
      const auto mean = [&](size_t k) {
        const double m = (probe_classes[k] + tune_classes[k]) / 2;
        return std::isfinite(m) ? m : -1.0;
      };
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return mean(a) > mean(b); });
      order.erase(order.begin() + static_cast<ptrdiff_t>(kClassesShownEachEnd),
                  order.end() - static_cast<ptrdiff_t>(kClassesShownEachEnd));
      md += fmt::format("The {0} best and {0} worst of {1} classes (by the mean of both approaches); all {1} are in "
                        "per-class.csv.\n\n",
                        kClassesShownEachEnd, probe_classes.size());
    }
    md += "| class | linear probe | fine-tuning | difference (pp) |\n|---|---:|---:|---:|\n";
    for (size_t i = 0; i < order.size(); ++i) {
      const size_t k = order[i];
      if (!all && i == kClassesShownEachEnd) md += "| … | | | |\n";
      const double gap = 100 * (tune_classes[k] - probe_classes[k]);
      md += fmt::format("| {} | {} | {} | {} |\n", names[k], pct(probe_classes[k]), pct(tune_classes[k]),
                        std::isfinite(gap) ? fmt::format("{:+.2f}", gap) : "—");
    }
    md += "\n";
  }

  if (!sweep.empty()) {
    const size_t shown = std::min(sweep.size(), kSweepRowsShown);
    md += fmt::format("## Head sweep: top {} of {} heads (ranked on validation)\n\n", shown, sweep.size());
    md += "| rank | lr | weight decay | init seed | best epoch | best val acc | best val loss | test acc | test loss "
          "|\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (size_t i = 0; i < shown; ++i) {
      const SweepRow& r = sweep[i];
      md += fmt::format("| {} | {:g} | {:g} | {} | {} | {} | {} | {} | {} |\n", r.rank, r.lr, r.weight_decay,
                        r.init_seed, r.best_epoch, pct(r.best_val_acc), loss_text(r.best_val_loss), pct(r.test_acc),
                        loss_text(r.test_loss));
    }
    md += "\n";
  }

  md += "## Plots\n\n";
  if (plots.empty()) {
    md += plots_error + " " + kPlotHowTo + "\n";
  } else {
    const std::vector<std::pair<std::string, std::string>> captions = {
        {"loss.svg", "Training and validation loss per epoch"},
        {"accuracy.svg", "Validation accuracy per epoch"},
        {"time.svg", "Validation accuracy against cumulative wall-clock seconds (the probe starts after its "
                     "feature extraction)"},
        {"per_class.svg", "Per-class test accuracy"}};
    for (const auto& [file, caption] : captions) {
      if (std::find(plots.begin(), plots.end(), file) != plots.end()) {
        md += fmt::format("**{}**\n\n![{}]({})\n\n", caption, caption, file);
      }
    }
    md += "The data behind them: linear-probe-history.csv, fine-tune-history.csv, per-class.csv; the script: "
          "plots.gp.\n";
  }
  return md;
}


json report_json(const ReportOptions& options, const ReportInputs& in, const Conclusion& conclusion,
                 const std::vector<std::string>& diffs, const std::vector<std::string>& plots,
                 const std::string& plots_error) {
  json report;
  report["inputs"] = {{"head", options.head.string()},
                      {"finetune", options.finetune.string()},
                      {"extract_seconds_source", in.extraction.source}};
  report["approaches"] = {{"linear-probe", approach_json(in.probe, in.head.settings, options.head)},
                          {"fine-tune", approach_json(in.finetune, in.tune.settings, options.finetune)}};
  report["approaches"]["linear-probe"]["extract_device"] = in.extraction.device;
  report["backbone"] = in.probe.backbone;
  report["dataset"] = in.dataset();
  report["study"] = nullptr;
  if (in.has_study()) {
    report["study"] = {{"linear-probe", study_json(kStudyProbe)},
                       {"fine-tune", study_json(kStudyFinetune)},
                       {"setup", {{"gpu", "T4"}, {"image_size", kStudyImageSize}, {"train_images", kStudyTrainImages},
                                  {"test_images", kStudyTestImages}, {"pretrained", true}, {"epochs", 10},
                                  {"optimizer", "Adam"}, {"lr", 1e-3}, {"batch_size", 128}}}};
  }
  report["differences"] = diffs;
  report["notes"] = in.extraction.notes;
  report["conclusion"] = conclusion_json(conclusion);
  if (in.per_class()) {
    const std::vector<std::string> class_names = in.class_names();
    json classes = json::array(), a = json::array(), b = json::array();
    for (size_t k = 0; k < in.probe_classes.size(); ++k) {
      classes.push_back(class_names[k]);
      a.push_back(number_or_null(in.probe_classes[k]));
      b.push_back(number_or_null(in.tune_classes[k]));
    }
    report["per_class"] = {{"classes", classes}, {"linear-probe", a}, {"fine-tune", b}};
  } else {
    report["per_class"] = nullptr;
  }
  const std::vector<SweepRow>& sweep = in.sweep;
  if (sweep.empty()) {
    report["sweep"] = nullptr;
  } else {
    json rows = json::array();
    for (size_t i = 0; i < std::min(sweep.size(), kSweepRowsShown); ++i) {
      const SweepRow& r = sweep[i];
      rows.push_back({{"rank", r.rank}, {"lr", r.lr}, {"weight_decay", r.weight_decay}, {"init_seed", r.init_seed},
                      {"best_epoch", r.best_epoch}, {"best_val_acc", r.best_val_acc},
                      {"best_val_loss", r.best_val_loss}, {"test_acc", r.test_acc}, {"test_loss", r.test_loss}});
    }
    report["sweep"] = {{"heads", sweep.size()}, {"top", rows}};
  }
  report["plots"] = plots;
  report["plots_error"] = plots_error.empty() ? json(nullptr) : json(plots_error);
  return report;

}

}  // namespace pipeline::report_parts
