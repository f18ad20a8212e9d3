#include "pipeline/cifar100.h"

#include <sstream>

#include "pipeline/error.h"
#include "pipeline/files.h"

namespace fs = std::filesystem;

namespace pipeline {

Cifar100Labels parse_cifar100_labels(const std::string& name) {
  if (name == "fine") return Cifar100Labels::Fine;
  if (name == "coarse") return Cifar100Labels::Coarse;
  usage_fail("unknown --labels '{}': CIFAR-100 has fine (100 classes) or coarse (20 superclasses) labels", name);
}

const char* to_string(Cifar100Labels labels) { return labels == Cifar100Labels::Fine ? "fine" : "coarse"; }

CifarFormat cifar100_format(Cifar100Labels labels, Split split) {
  const bool fine = labels == Cifar100Labels::Fine;
  return {"CIFAR-100", 2, fine ? 1 : 0, fine ? 100 : 20,
          split == Split::Train ? kCifar100TrainRecords : kCifar100TestRecords};
}

fs::path cifar100_file(const fs::path& dir, Split split) { return dir / (split == Split::Train ? "train.bin" : "test.bin"); }

fs::path cifar100_names_file(const fs::path& dir, Cifar100Labels labels) {
  return dir / (labels == Cifar100Labels::Fine ? "fine_label_names.txt" : "coarse_label_names.txt");
}

std::vector<std::string> cifar100_class_names(const fs::path& dir, Cifar100Labels labels) {
  const fs::path file = cifar100_names_file(dir, labels);
  std::istringstream in(read_file(file, 64 << 10));
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    const size_t end = line.find_last_not_of(" \t\r");
    if (end == std::string::npos) continue;
    names.push_back(line.substr(0, end + 1));
  }
  const size_t expected = labels == Cifar100Labels::Fine ? 100 : 20;
  if (names.size() != expected) {
    fail("CIFAR-100 names file {} holds {} names, not {}: it is damaged or not CIFAR-100's", file.string(),
         names.size(), expected);
  }
  return names;
}

std::string cifar100_problem(const fs::path& dir, const std::string& shown_as) {
  for (Split split : {Split::Train, Split::Test}) {
    const fs::path file = cifar100_file(dir, split);
    const std::string problem = cifar_file_problem(file, cifar100_format(Cifar100Labels::Fine, split));
    if (!problem.empty()) return fmt::format("{}/{} {}", shown_as, file.filename().string(), problem);
  }
  for (Cifar100Labels labels : {Cifar100Labels::Fine, Cifar100Labels::Coarse}) {
    const fs::path file = cifar100_names_file(dir, labels);
    std::error_code ec;
    if (!fs::is_regular_file(file, ec)) return fmt::format("{}/{} is missing", shown_as, file.filename().string());
  }
  return "";
}

}  // namespace pipeline
