#pragma once
// Helpers shared by the tests: a temporary folder removed at the end of a test, raw
// file and fixture reads and writes, running a stage binary for its exit code, the
// message of an expected pipeline::Error, and seeded random bytes.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "pipeline/error.h"

namespace testutil {

namespace fs = std::filesystem;

// A fresh folder under the system temp dir, unique per test, removed on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("transfer_") + (info ? std::string(info->test_suite_name()) + "_" + info->name() : "t");
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    path_ = fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline std::vector<char> read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(const fs::path& file, const std::vector<char>& bytes) {
  std::ofstream out(file, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline void write_bytes(const fs::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary);
  out << bytes;
}

inline fs::path fixture(const std::string& name) { return fs::path(TRANSFER_FIXTURES) / name; }

// Runs a stage from the build's bin folder with a shell command line; returns its
// exit code. Output goes to `log` (if given) so that tests can check messages.
inline int run_stage(const std::string& stage_and_args, const fs::path& log = {}) {
  std::string command = std::string(TRANSFER_BIN) + "/" + stage_and_args;
  command += log.empty() ? " >/dev/null 2>&1" : " >" + log.string() + " 2>&1";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The message of the pipeline::Error that f() throws; a test failure (and "") if it
// throws nothing or something else.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const pipeline::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw something other than pipeline::Error: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw pipeline::Error";
  return "";
}

// `size` bytes from a seeded generator.
inline std::string random_bytes(size_t size, unsigned seed) {
  std::mt19937 generator(seed);
  std::string out(size, '\0');
  for (auto& c : out) c = static_cast<char>(generator() & 0xff);
  return out;
}

inline std::string read_text(const fs::path& file) {
  const std::vector<char> bytes = read_bytes(file);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace testutil
