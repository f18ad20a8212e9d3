#pragma once
// CIFAR-100 in its official binary layout (cifar-100-binary.tar.gz), decoded with the
// CIFAR record reader (cifar10.h).
//
// Folder cifar-100-binary/: train.bin (50,000 records) and test.bin (10,000), each
// record 1 coarse label byte (0-19), 1 fine label byte (0-99), then the 3,072 pixel
// bytes as in CIFAR-10; fine_label_names.txt (100 lines) and coarse_label_names.txt
// (20 lines) name the classes in label order. Rows keep file order.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "pipeline/cifar10.h"

namespace pipeline {

inline constexpr const char* kCifar100DirName = "cifar-100-binary";
inline constexpr const char* kCifar100Url = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
inline constexpr const char* kCifar100Md5 = "03b5dce01913d631647c71ecec9e9cb8";
inline constexpr int64_t kCifar100TrainRecords = 50000;
inline constexpr int64_t kCifar100TestRecords = 10000;

enum class Cifar100Labels { Fine, Coarse };

// "fine" or "coarse"; throws pipeline::UsageError naming --labels otherwise.
Cifar100Labels parse_cifar100_labels(const std::string& name);
const char* to_string(Cifar100Labels labels);

// The record layout of a split's file, reading the fine (100 classes) or coarse (20) label.
CifarFormat cifar100_format(Cifar100Labels labels, Split split);

// dir/train.bin or dir/test.bin.
std::filesystem::path cifar100_file(const std::filesystem::path& dir, Split split);

// dir/fine_label_names.txt or dir/coarse_label_names.txt.
std::filesystem::path cifar100_names_file(const std::filesystem::path& dir, Cifar100Labels labels);

// The class names, one per non-empty line of the names file (trailing spaces and CR
// removed). Throws pipeline::Error naming the file when it is missing, not a regular
// file, larger than 64 KiB, or does not hold exactly 100 (fine) or 20 (coarse) names.
std::vector<std::string> cifar100_class_names(const std::filesystem::path& dir, Cifar100Labels labels);

// What is wrong with the folder, "" if nothing: each split file as cifar_file_problem
// says (and at most its official record count), each names file present.
std::string cifar100_problem(const std::filesystem::path& dir, const std::string& shown_as);

}  // namespace pipeline
