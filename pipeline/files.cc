#include "pipeline/files.h"

#include <fstream>
#include <iterator>

#include "pipeline/error.h"

namespace fs = std::filesystem;

namespace pipeline {

void replace_atomically(const fs::path& path, const std::function<void(const fs::path& temporary)>& write) {
  std::error_code error;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), error);
  const fs::path temporary = path.string() + ".tmp";
  try {
    write(temporary);
  } catch (...) {
    fs::remove(temporary, error);
    throw;
  }
  fs::rename(temporary, path, error);
  if (error) {
    const std::string reason = error.message();
    fs::remove(temporary, error);
    fail("cannot rename {} to {}: {}", temporary.string(), path.string(), reason);
  }
}

void write_file_atomic(const fs::path& path, const std::string& content) {
  replace_atomically(path, [&](const fs::path& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out.flush()) fail("cannot write {}", temporary.string());
  });
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read {}", path.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace pipeline
