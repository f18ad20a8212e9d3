#include "pipeline/files.h"

#include <fstream>
#include <iterator>

#include "pipeline/error.h"

namespace fs = std::filesystem;

namespace pipeline {

void write_file_atomic(const fs::path& path, const std::string& content) {
  std::error_code error;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), error);
  const fs::path temporary = path.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out.flush()) {
      fs::remove(temporary, error);
      fail("cannot write {}", temporary.string());
    }
  }
  fs::rename(temporary, path, error);
  if (error) {
    const std::string reason = error.message();
    fs::remove(temporary, error);
    fail("cannot rename {} to {}: {}", temporary.string(), path.string(), reason);
  }
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read {}", path.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace pipeline
