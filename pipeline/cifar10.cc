#include "pipeline/cifar10.h"

#include <torch/types.h>

#include <fstream>

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

std::string cifar_file_problem(const fs::path& file) {
  std::error_code ec;
  const auto status = fs::status(file, ec);
  if (ec || !fs::exists(status)) return "is missing";
  if (!fs::is_regular_file(status)) return "is not a regular file";
  const auto size = fs::file_size(file, ec);
  if (ec) return "cannot be read: " + ec.message();
  if (size == 0 || size % kCifarRecordBytes != 0) {
    return fmt::format("has {} bytes, not a positive multiple of the {}-byte record", size, kCifarRecordBytes);
  }
  return "";
}

CifarImages decode_cifar_files(const std::vector<fs::path>& files, int64_t limit) {
  // Sizes first, so the tensors are allocated once and every error comes before work.
  std::vector<int64_t> records;
  int64_t total = 0;
  for (const fs::path& file : files) {
    const std::string problem = cifar_file_problem(file);
    if (!problem.empty()) fail("CIFAR-10 file {} {}: truncated, missing or not a CIFAR-10 batch; run transfer-fetch", file.string(), problem);
    records.push_back(static_cast<int64_t>(fs::file_size(file)) / kCifarRecordBytes);
    total += records.back();
  }
  const int64_t n = limit < 0 ? total : std::min(limit, total);
  CifarImages out{torch::empty({n, 3, kCifarSide, kCifarSide}, torch::kUInt8), torch::empty({n}, torch::kInt64)};
  uint8_t* images = out.images.data_ptr<uint8_t>();
  int64_t* labels = out.labels.data_ptr<int64_t>();

  std::vector<char> record(kCifarRecordBytes);
  int64_t row = 0;
  for (size_t f = 0; f < files.size() && row < n; ++f) {
    std::ifstream in(files[f], std::ios::binary);
    if (!in) fail("cannot open CIFAR-10 file {}", files[f].string());
    for (int64_t r = 0; r < records[f] && row < n; ++r, ++row) {
      if (!in.read(record.data(), kCifarRecordBytes)) {
        fail("CIFAR-10 file {}: read failed at record {}", files[f].string(), r);
      }
      const auto label = static_cast<uint8_t>(record[0]);
      if (label >= kCifarClasses) {
        fail("CIFAR-10 file {}: record {} has label {}, expected 0..9", files[f].string(), r, label);
      }
      labels[row] = label;
      std::copy(record.begin() + 1, record.end(), images + row * kCifarImageBytes);
    }
  }
  return out;
}

CifarImages load_cifar(const fs::path& dir, Split split, int64_t limit) {
  return decode_cifar_files(cifar_files(dir, split), limit);
}

std::string cifar_digest(const fs::path& dir) {
  std::string digests;
  for (Split split : {Split::Train, Split::Test}) {
    for (const fs::path& file : cifar_files(dir, split)) {
      if (!fs::exists(file)) fail("CIFAR-10 file {} is missing; run transfer-fetch", file.string());
      digests += file_digest(file, DigestAlgorithm::Sha256);
    }
  }
  return bytes_digest(digests, DigestAlgorithm::Sha256);
}

}  // namespace pipeline
