#pragma once
// Message digests of files (OpenSSL EVP), as lowercase hex strings.
// Used to verify downloads (CIFAR-10's MD5, torchvision's SHA-256 name prefix) and
// to record exactly which inputs a cache or run came from.

#include <filesystem>
#include <string>

namespace pipeline {

enum class DigestAlgorithm { Md5, Sha256 };

// Digest of the whole file, streamed in 1 MiB blocks.
// Throws pipeline::Error naming the file if it is not a regular file (a link to
// /dev/zero would be read forever), cannot be opened or read.
std::string file_digest(const std::filesystem::path& file, DigestAlgorithm algorithm);

// Digest of a byte string (for tests and for digests of several files combined).
std::string bytes_digest(const std::string& bytes, DigestAlgorithm algorithm);

}  // namespace pipeline
