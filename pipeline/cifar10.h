#pragma once
// CIFAR-10 in its official binary layout, decoded into tensors.
//
// A batch file is a sequence of 3,073-byte records: 1 label byte (0-9), then the
// 1,024 red, 1,024 green and 1,024 blue bytes of a 32x32 image, each plane row-major.
// The training set is data_batch_1.bin ... data_batch_5.bin, the test set
// test_batch.bin, all in one folder (cifar-10-batches-bin/). Rows keep file order.

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace pipeline {

inline constexpr int64_t kCifarSide = 32;
inline constexpr int64_t kCifarImageBytes = 3 * kCifarSide * kCifarSide;  // 3,072
inline constexpr int64_t kCifarRecordBytes = 1 + kCifarImageBytes;        // 3,073
inline constexpr int64_t kCifarClasses = 10;
// The official batch files hold exactly 10,000 records each; no valid file holds more,
// which bounds what a batch file can make the program read or allocate.
inline constexpr int64_t kCifarRecordsPerFile = 10000;
inline constexpr std::array<const char*, 10> kCifarClassNames = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};

enum class Split { Train, Test };

// A CIFAR binary layout: each record is `label_bytes` label bytes then the 3,072 pixel
// bytes; the label used is byte `label_index` (CIFAR-100: 0 coarse, 1 fine).
struct CifarFormat {
  const char* dataset;   // "CIFAR-10", for messages
  int64_t label_bytes;   // 1 (CIFAR-10) or 2 (CIFAR-100)
  int64_t label_index;   // which label byte
  int64_t classes;       // labels must be below this
  int64_t max_records;   // the most records one file may hold
  int64_t record_bytes() const { return label_bytes + kCifarImageBytes; }
};
inline constexpr CifarFormat kCifar10Format{"CIFAR-10", 1, 0, kCifarClasses, kCifarRecordsPerFile};

struct CifarImages {
  at::Tensor images;  // [N,3,32,32] uint8, contiguous
  at::Tensor labels;  // [N] int64, values 0..9 (-1: a record left out, see skipped)
  // Records that could not be decoded and were left out (image folders read with
  // --skip-bad), one "FILE: why" each; their label is -1. CIFAR's are always empty.
  std::vector<std::string> skipped = {};
  int64_t size() const;
};

// The batch files of a split, in order, inside `dir`.
std::vector<std::filesystem::path> cifar_files(const std::filesystem::path& dir, Split split);
// Every batch file inside `dir`: the training files, then test_batch.bin.
std::vector<std::filesystem::path> cifar_all_files(const std::filesystem::path& dir);

// What is wrong with one batch file, "" if nothing: "is missing", "is not a regular
// file" (links are followed: a link to /dev/zero is not one), "cannot be read: ...",
// "has N bytes, not a positive multiple of the 3073-byte record" (a truncated or
// foreign file), or more than kCifarRecordsPerFile records. Never throws; reads
// nothing but the file's metadata.
std::string cifar_file_problem(const std::filesystem::path& file);
// The same for any CIFAR layout.
std::string cifar_file_problem(const std::filesystem::path& file, const CifarFormat& format);

// Decodes `files` in order, keeping at most `limit` records (limit < 0: all).
// Throws pipeline::Error naming the file (and record) for a missing file, a size that
// is not a positive multiple of 3,073 bytes, or a label above 9.
CifarImages decode_cifar_files(const std::vector<std::filesystem::path>& files, int64_t limit = -1);
// The same for any CIFAR layout (labels checked against format.classes).
CifarImages decode_cifar_files(const std::vector<std::filesystem::path>& files, const CifarFormat& format,
                               int64_t limit);

// decode_cifar_files(cifar_files(dir, split), limit).
CifarImages load_cifar(const std::filesystem::path& dir, Split split, int64_t limit = -1);

// The MD5 of each file of the official cifar-10-binary.tar.gz, by file name (as
// published beside the archive; DESIGN.md lists them).
const std::map<std::string, std::string>& cifar10_official_md5s();

// SHA-256 over the split files' digests (train then test, in order): identifies the
// dataset a cache or run was made from. Reads every file once.
std::string cifar_digest(const std::filesystem::path& dir);

}  // namespace pipeline
