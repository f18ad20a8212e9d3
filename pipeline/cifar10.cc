#include "pipeline/cifar10.h"

#include <torch/types.h>

#include <fstream>
#include <map>

#include "pipeline/digest.h"
#include "pipeline/error.h"

namespace fs = std::filesystem;

namespace pipeline {

int64_t CifarImages::size() const { return labels.defined() ? labels.size(0) : 0; }

std::vector<fs::path> cifar_files(const fs::path& dir, Split split) {
  if (split == Split::Test) return {dir / "test_batch.bin"};
  std::vector<fs::path> files;
  for (int i = 1; i <= 5; ++i) files.push_back(dir / ("data_batch_" + std::to_string(i) + ".bin"));
  return files;
}

std::vector<fs::path> cifar_all_files(const fs::path& dir) {
  std::vector<fs::path> files = cifar_files(dir, Split::Train);
  files.push_back(cifar_files(dir, Split::Test).front());
  return files;
}

std::string cifar_file_problem(const fs::path& file) { return cifar_file_problem(file, kCifar10Format); }

std::string cifar_file_problem(const fs::path& file, const CifarFormat& format) {
  std::error_code ec;
  const auto status = fs::status(file, ec);
  if (ec || !fs::exists(status)) return "is missing";
  if (!fs::is_regular_file(status)) return "is not a regular file";
  const auto size = fs::file_size(file, ec);
  if (ec) return "cannot be read: " + ec.message();
  const auto record = static_cast<uintmax_t>(format.record_bytes());
  if (size == 0 || size % record != 0) {
    return fmt::format("has {} bytes, not a positive multiple of the {}-byte record", size, record);
  }
  if (size / record > static_cast<uintmax_t>(format.max_records)) {
    return fmt::format("has {} bytes ({} records), more than the {} records a {} file holds", size, size / record,
                       format.max_records, format.dataset);
  }
  return "";
}

CifarImages decode_cifar_files(const std::vector<fs::path>& files, int64_t limit) {
  return decode_cifar_files(files, kCifar10Format, limit);
}

CifarImages decode_cifar_files(const std::vector<fs::path>& files, const CifarFormat& format, int64_t limit) {
  // Sizes first, so the tensors are allocated once and every error comes before work.
  const int64_t record_bytes = format.record_bytes();
  std::vector<int64_t> records;
  int64_t total = 0;
  for (const fs::path& file : files) {
    const std::string problem = cifar_file_problem(file, format);
    if (!problem.empty()) {
      fail("{} file {} {}: truncated, missing or not a {} file; run transfer-fetch", format.dataset, file.string(),
           problem, format.dataset);
    }
    records.push_back(static_cast<int64_t>(fs::file_size(file)) / record_bytes);
    total += records.back();
  }
  const int64_t n = limit < 0 ? total : std::min(limit, total);
  CifarImages out{torch::empty({n, 3, kCifarSide, kCifarSide}, torch::kUInt8), torch::empty({n}, torch::kInt64)};
  uint8_t* images = out.images.data_ptr<uint8_t>();
  int64_t* labels = out.labels.data_ptr<int64_t>();

  std::vector<char> record(static_cast<size_t>(record_bytes));
  int64_t row = 0;
  for (size_t f = 0; f < files.size() && row < n; ++f) {
    std::ifstream in(files[f], std::ios::binary);
    if (!in) fail("cannot open {} file {}", format.dataset, files[f].string());
    for (int64_t r = 0; r < records[f] && row < n; ++r, ++row) {
      if (!in.read(record.data(), record_bytes)) {
        fail("{} file {}: read failed at record {}", format.dataset, files[f].string(), r);
      }
      const auto label = static_cast<uint8_t>(record[static_cast<size_t>(format.label_index)]);
      if (label >= format.classes) {
        fail("{} file {}: record {} has label {}, expected 0..{}", format.dataset, files[f].string(), r, label,
             format.classes - 1);
      }
      labels[row] = label;
      std::copy(record.begin() + format.label_bytes, record.end(), images + row * kCifarImageBytes);
    }
  }
  return out;
}

CifarImages load_cifar(const fs::path& dir, Split split, int64_t limit) {
  return decode_cifar_files(cifar_files(dir, split), limit);
}

const std::map<std::string, std::string>& cifar10_official_md5s() {
  static const std::map<std::string, std::string> md5s = {
      {"data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"}, {"data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"},
      {"data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"}, {"data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"},
      {"data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"}, {"test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"}};
  return md5s;
}

std::string cifar_digest(const fs::path& dir) {
  std::string digests;
  {
    for (const fs::path& file : cifar_all_files(dir)) {
      // Checked before hashing: a link to /dev/zero or a huge file is refused, not read.
      const std::string problem = cifar_file_problem(file);
      if (!problem.empty()) fail("CIFAR-10 file {} {}; run transfer-fetch", file.string(), problem);
      digests += file_digest(file, DigestAlgorithm::Sha256);
    }
  }
  return bytes_digest(digests, DigestAlgorithm::Sha256);
}

}  // namespace pipeline
