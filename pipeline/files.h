#pragma once
// Small file helpers shared by the stages' writers.

#include <filesystem>
#include <functional>
#include <string>

namespace pipeline {

// Writes `content` to `path` through a temporary sibling and a rename, so readers see
// the old file or the whole new one, never a half. Creates parent folders.
// Throws pipeline::Error naming the path on failure.
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

// Lets write(temporary) produce the file at a temporary sibling of `path`, then renames
// it into place; on any failure the temporary is removed and the error rethrown (a
// rename failure as pipeline::Error naming both paths). Creates parent folders.
void replace_atomically(const std::filesystem::path& path,
                        const std::function<void(const std::filesystem::path& temporary)>& write);

// The whole file as a string; throws pipeline::Error naming the path if unreadable.
std::string read_file(const std::filesystem::path& path);

}  // namespace pipeline
