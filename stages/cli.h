#pragma once
// The shared door of every stage: CLI11 parses flags into an options struct, one
// pipeline call does the work, and errors map to the exit codes of DESIGN.md:
//   0 done (or already up to date; --help), 1 failure at run time, 2 bad usage.
// CLI11 reports its parse/validation errors with codes of 100 and up; they become 2.

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <exception>
#include <filesystem>
#include <string>

#include "pipeline/device.h"
#include "pipeline/error.h"
#include "pipeline/datasets/dataset.h"
#include "pipeline/models/backbone.h"

namespace stages {

// Adds --config FILE (TOML or INI, CLI11's format: `flag = value` lines) to `app`.
// A key that names no flag is an error (exit 2), so a typo such as `epoch = 1` cannot
// silently train with the default.
inline void add_config_flag(CLI::App& app) {
  app.set_config("--config", "", "read flags from a TOML file (key = value per flag)", false);
  app.allow_config_extras(false);
}

// "" when argv's --config (if any) is a regular file or absent, else why not: CLI11 would
// read a FIFO (blocking forever) or /dev/zero (without end) before any check runs.
inline std::string config_file_problem(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string value;
    if (arg == "--config" && i + 1 < argc) {
      value = argv[i + 1];
    } else if (arg.rfind("--config=", 0) == 0) {
      value = arg.substr(9);
    } else {
      continue;
    }
    std::error_code ec;
    const std::filesystem::file_status status = std::filesystem::status(value, ec);
    if (std::filesystem::exists(status) && !std::filesystem::is_regular_file(status)) {
      return "--config " + value + " is not a regular file (a folder, device, FIFO or socket); refusing to read it";
    }
  }
  return "";
}

// --backbone, the same in every stage: one of the registered backbones.
inline CLI::Option* add_backbone_flag(CLI::App& app, std::string& backbone, const std::string& help) {
  return app.add_option("--backbone", backbone, help)->check(CLI::IsMember(pipeline::backbone_names()));
}

// --dataset, the same in every stage that reads data: one of the registered datasets.
inline CLI::Option* add_dataset_flag(CLI::App& app, std::string& dataset) {
  return app.add_option("--dataset", dataset, "the data: cifar10, cifar100, or folder:PATH (your own images)")
      ->check([](const std::string& value) -> std::string {
        if (value.rfind("folder:", 0) == 0 && value.size() > 7) return "";
        for (const std::string& name : pipeline::dataset_names()) {
          if (name == value && name != "folder") return "";
        }
        return "unknown --dataset '" + value + "': use cifar10, cifar100 or folder:PATH";
      });
}

// --data, --dataset and --labels: which dataset, where, and (CIFAR-100) which labels.
// The data flags of the stages that read records (transfer-extract, transfer-finetune):
// Options has data, dataset, labels, transform, skip_bad, test_fraction, image_store.
template <typename Options>
void add_data_flags(CLI::App& app, Options& o) {
  app.add_option("--data", o.data,
                 "the dataset's folder, or a folder holding it (default: data, i.e. data/cifar-10-batches-bin or "
                 "data/cifar-100-binary)");
  add_dataset_flag(app, o.dataset)->capture_default_str();
  app.add_option("--labels", o.labels, "CIFAR-100's labels: fine (100 classes, default) or coarse (20)")
      ->check(CLI::IsMember({"fine", "coarse"}));
  app.add_option("--transform", o.transform,
                 "image folders: resize256-crop224 (torchvision's Resize(256) + CenterCrop(224), the default) or "
                 "resize (square images of one size, resized to --image-size as CIFAR is)")
      ->check(CLI::IsMember({"resize256-crop224", "resize"}));
  app.add_flag("--skip-bad", o.skip_bad,
               "image folders: leave out images that cannot be decoded (counted in the summary and provenance) "
               "instead of stopping at the first");
  app.add_option("--test-fraction", o.test_fraction,
                 "image folders of one tree PATH/<class>/...: the share of each class held out as the test set "
                 "(default 0.2, seeded)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--image-store", o.image_store,
                 "image folders: the HDF5 file the decoded images are kept in, reused by later runs (default: beside "
                 "--out)");
}

// ", N unreadable images left out (--skip-bad)" for a summary line; "" for none.
inline std::string skipped_note(int64_t skipped) {
  return skipped > 0 ? fmt::format(", {} unreadable image{} left out (--skip-bad)", skipped, skipped == 1 ? "" : "s") : "";
}

// The flags every model-running stage shares, with the same meaning everywhere.
inline void add_compute_flags(CLI::App& app, pipeline::ComputeOptions& compute) {
  app.add_option("--device", compute.device, "auto (CUDA when present), cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--precision", compute.precision, "fp32, bf16 (CPU with AVX512-BF16/AMX, or CUDA) or fp16 (CUDA)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_option("--threads", compute.threads, "CPU threads for LibTorch (0: every core)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
}

// Parses argv into `app`, then runs body() (which returns the exit code) and maps
// exceptions: pipeline::UsageError -> 2, pipeline::Error and anything else -> 1, each
// printed once on stderr without a stack trace (LibTorch's c10::Error included).
// Logs and progress go to stderr, so stdout holds only each stage's summary.
template <typename Body>
int run(CLI::App& app, int argc, char** argv, Body body) {
  spdlog::set_default_logger(spdlog::stderr_color_mt(app.get_name()));
  spdlog::set_pattern("[%H:%M:%S] [%^%l%$] %v");
  if (const std::string problem = config_file_problem(argc, argv); !problem.empty()) {
    spdlog::error("{}", problem);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    return body();
  } catch (const pipeline::UsageError& e) {
    spdlog::error("{}", e.what());
    spdlog::error("run '{} --help' for the flags", app.get_name());
    return 2;
  } catch (const pipeline::Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  } catch (const c10::Error& e) {
    // LibTorch's message without its 20-frame backtrace.
    spdlog::error("{} failed: {}", app.get_name(), e.what_without_backtrace());
    return 1;
  } catch (const std::bad_alloc&) {
    spdlog::error("{} failed: out of memory", app.get_name());
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("{} failed: {}", app.get_name(), e.what());
    return 1;
  } catch (...) {
    spdlog::error("{} failed with an unexpected error", app.get_name());
    return 1;
  }
}

}  // namespace stages
