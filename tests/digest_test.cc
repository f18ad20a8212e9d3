#include "pipeline/digest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "pipeline/error.h"

namespace fs = std::filesystem;
using pipeline::DigestAlgorithm;

TEST(Digest, KnownVectors) {
  EXPECT_EQ(pipeline::bytes_digest("abc", DigestAlgorithm::Md5), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(pipeline::bytes_digest("abc", DigestAlgorithm::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Digest, FileMatchesBytes) {
  fs::path file = fs::temp_directory_path() / "transfer_digest_test.bin";
  std::string bytes(3 << 20, 'x');
  bytes[12345] = 'y';
  { std::ofstream(file, std::ios::binary) << bytes; }
  EXPECT_EQ(pipeline::file_digest(file, DigestAlgorithm::Sha256), pipeline::bytes_digest(bytes, DigestAlgorithm::Sha256));
  fs::remove(file);
}

TEST(Digest, MissingFileNamesIt) {
  try {
    pipeline::file_digest("/nonexistent/file.bin", DigestAlgorithm::Md5);
    FAIL() << "no error";
  } catch (const pipeline::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/file.bin"), std::string::npos);
  }
}
