#pragma once
// Small file helpers shared by the stages' writers.

#include <filesystem>
#include <string>

namespace pipeline {

// Writes `content` to `path` through a temporary sibling and a rename, so readers see
// the old file or the whole new one, never a half. Creates parent folders.
// Throws pipeline::Error naming the path on failure.
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

// The whole file as a string; throws pipeline::Error naming the path if unreadable.
std::string read_file(const std::filesystem::path& path);

}  // namespace pipeline
