#pragma once
// torch::save / torch::load with the pipeline's file guarantees (files.h).
//
// torch::save(value, "file") writes through LibTorch's stream writer, which throws from
// its destructor when the disk is full, so the process aborts ("terminate called")
// and leaves a half file. Here the archive is serialized into memory first (the
// model's size, briefly twice) and written by write_file_atomic: a failed write is a
// pipeline::Error naming the file, and no temporary stays.
// torch::load errors carry a 20-frame backtrace and no file name; here they become a
// pipeline::Error naming the file, with LibTorch's message only.
// Include only from .cc files that already need <torch/torch.h>.

#include <torch/serialize.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <utility>

#include "pipeline/error.h"
#include "pipeline/files.h"

namespace pipeline {

// Saves what torch::save accepts (a module holder, an optimizer, a vector of tensors)
// to `file` atomically. Throws pipeline::Error naming the file.
template <typename Value>
void save_torch_file(const Value& value, const std::filesystem::path& file) {
  std::ostringstream bytes;
  try {
    torch::save(value, bytes);
  } catch (const c10::Error& e) {
    fail("cannot serialize {}: {}", file.string(), e.what_without_backtrace());
  }
  write_file_atomic(file, bytes.str());
}

// An OutputArchive (e.g. from a module's save(archive)), saved the same way.
inline void save_torch_archive(torch::serialize::OutputArchive& archive, const std::filesystem::path& file) {
  std::ostringstream bytes;
  try {
    archive.save_to(bytes);
  } catch (const c10::Error& e) {
    fail("cannot serialize {}: {}", file.string(), e.what_without_backtrace());
  }
  write_file_atomic(file, bytes.str());
}

// torch::load(value, file, extra...) after checking that `file` is a regular file.
// Throws pipeline::Error naming the file ("what" says which kind) for anything that
// goes wrong, LibTorch's own message included without its backtrace.
template <typename Value, typename... Extra>
void load_torch_file(Value& value, const std::filesystem::path& file, const std::string& what, Extra&&... extra) {
  require_regular_file(file, what);
  try {
    torch::load(value, file.string(), std::forward<Extra>(extra)...);
  } catch (const c10::Error& e) {
    fail("{} {} cannot be loaded (truncated, corrupt or of another model): {}", what, file.string(),
         e.what_without_backtrace());
  } catch (const std::exception& e) {
    fail("{} {} cannot be loaded (truncated, corrupt or of another model): {}", what, file.string(), e.what());
  }
}

}  // namespace pipeline
