// The comparison's verdict: which approach wins, at what cost, and every setting in
// which the runs differ from the study they reproduce.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "pipeline/models/backbone.h"
#include "pipeline/report_parts.h"
#include "pipeline/report_text.h"

namespace pipeline {
namespace {

std::string capitalized(std::string text) {
  if (!text.empty()) text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[0])));
  return text;
}

// "cpu (2 threads), fp32" -> "cpu (2 threads)": the hardware without the precision.
std::string hardware(const std::string& device) {
  const size_t end = device.find("), ");
  return end == std::string::npos ? device : device.substr(0, end + 1);
}

// floor(n) as a count for the text; "very many" when it is too large to be one.
std::string count_of(double n) {
  return std::isfinite(n) && n < 9e15 ? std::to_string(static_cast<int64_t>(std::floor(n))) : "very many";
}

// One sentence for a setting that differs from the study in either approach; empty
// texts mean "as the study".
void differ(std::vector<std::string>& out, const std::string& what, const std::string& probe,
            const std::string& finetune, const std::string& study) {
  if (probe.empty() && finetune.empty()) return;
  if (probe == finetune) {
    out.push_back(fmt::format("{}: {} in both approaches (study: {}).", what, probe, study));
  } else if (finetune.empty()) {
    out.push_back(fmt::format("{}: {} for the linear probe (study: {}).", what, probe, study));
  } else if (probe.empty()) {
    out.push_back(fmt::format("{}: {} for fine-tuning (study: {}).", what, finetune, study));
  } else {
    out.push_back(fmt::format("{}: {} for the linear probe, {} for fine-tuning (study: {}).", what, probe, finetune,
                              study));
  }
}

std::string image_size_diff(const RunSettings& s) {
  if (s.image_size == 0) return "not recorded";  // a cache from before image sizes were recorded
  return s.image_size == kStudyImageSize ? "" : fmt::format("{} px", s.image_size);
}

std::string rows_diff(const RunSettings& s) {
  if (s.train_rows == kStudyTrainImages && s.test_rows == kStudyTestImages) return "";
  std::string limits;
  if (s.limit_train >= 0) limits += fmt::format(" --limit-train {}", s.limit_train);
  if (s.limit_test >= 0) limits += fmt::format(" --limit-test {}", s.limit_test);
  return fmt::format("{} training and {} test images{}", count_text(s.train_rows), count_text(s.test_rows),
                     limits.empty() ? "" : fmt::format(" (subset:{})", limits));
}

std::string pretrained_diff(const RunSettings& s) {
  return s.pretrained ? "" : "random initialisation, NOT ImageNet-pretrained";
}

std::string epochs_diff(const ApproachNumbers& n) {
  return n.epochs == kStudyProbe.epochs ? "" : fmt::format("{} epochs", n.epochs);
}

std::string number_diff(double value, double study) {
  return std::fabs(value - study) <= 1e-12 * std::max(1.0, std::fabs(study)) ? "" : fmt::format("{:g}", value);
}

// The probe's precision: the extraction's, and the head's products' when they ran in
// another (fp32 products are the default, not a difference).
std::string probe_precision(const RunSettings& s) {
  const std::string features = s.extract_precision.empty() ? "fp32" : s.extract_precision;
  if (!s.precision.empty() && s.precision != "fp32" && s.precision != features) {
    return fmt::format("{} features with {} head products", features, s.precision);
  }
  return features == "fp32" ? "" : features;
}

std::string normalization_text(const std::string& name) {
  return name == "imagenet" ? std::string("ImageNet mean/std") : name == "half" ? std::string("0.5/0.5 (\"half\")") : name;
}

}  // namespace

namespace report_parts {

std::vector<std::string> differences(const ReportInputs& in) {
  const RunSettings &p = in.head.settings, &f = in.tune.settings;
  const ApproachNumbers &probe = in.probe, &finetune = in.finetune;
  std::vector<std::string> out;
  if (p.backbone != "alexnet") {
    out.push_back(fmt::format("Network: {} in both approaches (study: AlexNet), so the study's numbers do not apply.",
                              backbone(p.backbone).title()));
  }
  if (p.dataset["name"] != "cifar10") {
    out.push_back(fmt::format("Data: {} ({} classes) in both approaches (study: CIFAR-10), so the study's numbers do "
                              "not apply.",
                              p.dataset["title"].get<std::string>(), p.dataset["classes"].get<int64_t>()));
  }
  differ(out, "Image size", image_size_diff(p), image_size_diff(f), "224 px");
  differ(out, "Data", rows_diff(p), rows_diff(f), "the full CIFAR-10, 50,000 training and 10,000 test images");
  if (p.skipped_images > 0 || f.skipped_images > 0) {
    differ(out, "Unreadable images left out (--skip-bad)", p.skipped_images ? count_text(p.skipped_images) : "",
           f.skipped_images ? count_text(f.skipped_images) : "", "none");
  }
  differ(out, "Weights", pretrained_diff(p), pretrained_diff(f), "ImageNet-pretrained");
  differ(out, "Epochs", epochs_diff(probe), epochs_diff(finetune), "10");
  differ(out, "Adam learning rate", number_diff(p.lr, 1e-3), number_diff(f.lr, 1e-3), "1e-3");
  differ(out, "Batch size", number_diff(static_cast<double>(p.batch_size), 128),
         number_diff(static_cast<double>(f.batch_size), 128), "128");
  differ(out, "Adam weight decay", number_diff(p.weight_decay, 0), number_diff(f.weight_decay, 0), "none");
  differ(out, "Precision", probe_precision(p), f.precision == "fp32" ? "" : f.precision, "fp32, PyTorch's default");
  differ(out, "Normalization", p.normalization != "imagenet" ? normalization_text(p.normalization) : "",
         f.normalization != "half" ? normalization_text(f.normalization) : "",
         "ImageNet mean/std for the linear probe, 0.5/0.5 (\"half\") for fine-tuning");
  const std::string tap = p.tap.empty() ? std::string("fc7") : p.tap;
  if (tap != "fc7") out.push_back(fmt::format("The linear probe reads the {} layer (study: AlexNet's fc7).", tap));
  if (!p.feature_dtype.empty() && p.feature_dtype != "float32") {
    out.push_back(fmt::format("The cached features are stored as {} (the study kept float32 activations).",
                              p.feature_dtype));
  }
  if (in.sweep.size() > 1) {
    out.push_back(fmt::format("The linear probe shown is the best of a sweep of {} heads, chosen on validation "
                              "accuracy (the study trained one head).",
                              in.sweep.size()));
  }
  out.push_back(fmt::format(
      "The linear probe trains on {} features extracted once into a cache; the study ran the frozen network's full "
      "forward pass in every epoch, so its 1423 s include what here is the one-time extraction.",
      tap));
  const auto fraction = [](double v) { return fmt::format("{:g} %", 100 * v); };
  const std::string split = p.val_fraction == f.val_fraction ? fraction(p.val_fraction)
                                                             : fmt::format("{} (probe) / {} (fine-tuning)",
                                                                           fraction(p.val_fraction),
                                                                           fraction(f.val_fraction));
  const std::string every = p.test_every_epoch || f.test_every_epoch
                                ? " (the test set was also scored every epoch for the curves, but never used to choose)"
                                : "";
  out.push_back(fmt::format("Model selection: {} of the training images are held out for validation (seeded split) "
                            "and the test set is scored once, with the best-validation weights{}; the study scored "
                            "the test set after every epoch.",
                            split, every));
  std::string probe_device = fmt::format("head trained on {}", probe.device.empty() ? "?" : probe.device);
  if (!in.extraction.device.empty()) {
    probe_device = fmt::format("features extracted on {}, ", in.extraction.device) + probe_device;
  }
  out.push_back(fmt::format("Hardware: linear probe: {}; fine-tuning on {} (study: one T4 GPU for both), so the "
                            "seconds measure these machines, not the study's.",
                            probe_device, finetune.device.empty() ? "?" : finetune.device));
  return out;
}

}  // namespace report_parts

Conclusion conclude(const ApproachNumbers& probe, const ApproachNumbers& finetune) {
  Conclusion c;
  c.gap_pp = 100 * (finetune.test_acc - probe.test_acc);
  c.more_accurate = std::fabs(c.gap_pp) < 0.005 ? "tie" : c.gap_pp > 0 ? "fine-tune" : "linear-probe";
  if (probe.test_rows > 0 && finetune.test_rows > 0) {
    const double p = probe.test_acc, q = finetune.test_acc;
    c.gap_standard_error_pp = 100 * std::sqrt(p * (1 - p) / static_cast<double>(probe.test_rows) +
                                              q * (1 - q) / static_cast<double>(finetune.test_rows));
    c.within_noise = std::fabs(c.gap_pp) < 2 * c.gap_standard_error_pp;
  }
  c.extract_known = std::isfinite(probe.extract_seconds);
  const double extract = c.extract_known ? probe.extract_seconds : 0;
  const double head = probe.train_seconds, tune = finetune.train_seconds;
  c.probe_seconds = probe.total_seconds();
  c.finetune_seconds = tune;
  if (c.extract_known && head > 0) c.break_even_head_runs = (tune - extract) / head;
  // Seconds come from run files: a ratio may be huge or not finite, and casting such a
  // double to int64 is undefined, so it is bounded first.
  const double experiments = c.extract_known && tune > head ? std::floor(extract / (tune - head)) : -1;
  if (experiments >= 0 && experiments < 9e15) c.cheaper_from_experiments = static_cast<int64_t>(experiments) + 1;

  std::vector<std::string> text;
  // Accuracy.
  if (c.more_accurate == "tie") {
    text.push_back(fmt::format("Both approaches reach the same test accuracy ({}).", pct(probe.test_acc)));
  } else {
    const bool tune_wins = c.more_accurate == "fine-tune";
    const ApproachNumbers& winner = tune_wins ? finetune : probe;
    const ApproachNumbers& loser = tune_wins ? probe : finetune;
    text.push_back(fmt::format("{} is more accurate: {} against {} test accuracy, {:.2f} percentage points ahead.",
                               capitalized(tune_wins ? "fine-tuning" : "the linear probe"), pct(winner.test_acc),
                               pct(loser.test_acc), std::fabs(c.gap_pp)));
    if (std::isfinite(c.gap_standard_error_pp)) {
      text.push_back(fmt::format(
          c.within_noise ? "That gap is within two standard errors (±{:.2f} pp on {} and {} test images), so it may "
                           "be noise."
                         : "That is more than two standard errors (±{:.2f} pp on {} and {} test images).",
          2 * c.gap_standard_error_pp, count_text(probe.test_rows), count_text(finetune.test_rows)));
    }
  }
  // Cost.
  if (c.extract_known) {
    text.push_back(fmt::format("In time, the linear probe cost {} of one-time feature extraction plus {} of head "
                               "training ({} in all); fine-tuning cost {}.",
                               secs(extract), secs(head), secs(c.probe_seconds), secs(tune)));
  } else {
    text.push_back(fmt::format("In time, the linear probe's head trained in {} (the one-time extraction cost is "
                               "unknown: pass --features or --extract-seconds); fine-tuning took {}.",
                               secs(head), secs(tune)));
  }
  const bool probe_cheaper = c.probe_seconds < tune;
  const double ratio = probe_cheaper ? tune / std::max(c.probe_seconds, 1e-9) : c.probe_seconds / std::max(tune, 1e-9);
  const std::string uncounted = c.extract_known ? "" : " (the probe's extraction not counted)";
  if (c.more_accurate == "linear-probe" && probe_cheaper) {
    text.push_back(fmt::format("The linear probe is both more accurate and {:.1f}× cheaper here{}: in these runs "
                               "fine-tuning does not pay for its cost.",
                               ratio, uncounted));
  } else if (c.more_accurate == "tie" && probe_cheaper) {
    text.push_back(fmt::format("Equal accuracy at {:.1f}× less time{}: the probe is the better choice in these runs.",
                               ratio, uncounted));
  } else if (c.more_accurate == "fine-tune" && !probe_cheaper) {
    text.push_back(fmt::format("Fine-tuning is both more accurate and no more expensive here: {} against the "
                               "probe's {}{}.",
                               secs(tune), secs(c.probe_seconds), c.extract_known ? " (extraction included)" : ""));
  } else if (c.more_accurate == "fine-tune") {
    text.push_back(fmt::format("Fine-tuning buys {:.2f} pp for {} more time ({:.1f}× the probe's){}.", c.gap_pp,
                               secs(tune - c.probe_seconds), ratio, uncounted));
  } else if (c.more_accurate == "linear-probe") {
    text.push_back(fmt::format("The linear probe is more accurate but costs more: {:.2f} pp for {} more time.",
                               -c.gap_pp, secs(c.probe_seconds - tune)));
  } else {
    text.push_back(fmt::format("Equal accuracy, and fine-tuning took {:.1f}× less time here.", ratio));
  }
  // Break-even.
  if (!(head > 0)) {
    text.push_back("The head's training took no measurable time, so only the extraction counts against "
                   "fine-tuning.");
  } else if (!c.extract_known) {
    text.push_back(fmt::format("Without the extraction cost, {:.1f} head runs ({} each) fit in the time of one "
                               "fine-tuning run; the break-even needs the extraction's seconds.",
                               tune / head, secs(head)));
  } else {
    const double n = c.break_even_head_runs;
    if (n >= 1) {
      text.push_back(fmt::format("Break-even: one extraction ({}) + N head runs ({} each) cost what one fine-tuning "
                                 "run costs at N = {:.1f}, so after one extraction {} head experiments fit in the "
                                 "time of one fine-tuning run.",
                                 secs(extract), secs(head), n, count_of(n)));
    } else if (n > 0) {
      text.push_back(fmt::format("Break-even: one extraction ({}) + N head runs ({} each) cost what one fine-tuning "
                                 "run costs at N = {:.2f}, less than one head run: a single probe, extraction "
                                 "included, already costs more than fine-tuning.",
                                 secs(extract), secs(head), n));
    } else {
      text.push_back(fmt::format("No break-even within one fine-tuning run: the extraction alone ({}) costs at least "
                                 "as much as fine-tuning ({}).",
                                 secs(extract), secs(tune)));
    }
    if (c.cheaper_from_experiments == 0) {
      text.push_back("A head run costs at least as much as a fine-tuning run here, so the cache never pays off in "
                     "time.");
    } else if (c.cheaper_from_experiments > 1) {
      text.push_back(fmt::format("Over repeated experiments (one extraction then a head per experiment, against a "
                                 "fine-tuning run per experiment) the probe is cheaper from {} experiments on.",
                                 c.cheaper_from_experiments));
    }
  }
  if (!probe.device.empty() && !finetune.device.empty() && hardware(probe.device) != hardware(finetune.device)) {
    text.push_back(fmt::format("The head and the fine-tuning ran on different hardware ({} / {}), so the times "
                               "compare the setups as much as the approaches.",
                               hardware(probe.device), hardware(finetune.device)));
  }
  for (size_t i = 0; i < text.size(); ++i) c.text += (i ? " " : "") + text[i];
  return c;
}

}  // namespace pipeline
