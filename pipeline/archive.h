#pragma once
// Unpacking archives with libarchive, safely.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

namespace pipeline {

// What an archive may hold, beyond the safety rules below that always apply.
struct UnpackLimits {
  bool links = true;  // false: any symbolic or hard link is refused
  // Empty: any entry. Otherwise the only entries allowed, by relative path without a
  // trailing '/' (e.g. "cifar-10-batches-bin/test_batch.bin"), each with the most
  // bytes it may hold (folders: 0). Anything else, or a larger entry, is refused
  // before a byte of it is written, so an archive cannot make the unpack write more
  // than the sum of these.
  std::map<std::string, std::uint64_t> entries;
};

// Unpacks `archive` (any format and compression libarchive reads: .tar.gz, .tar,
// .tar.bz2, .zip, …) into the existing folder `dest_dir`, keeping the archive's
// relative paths. Returns the number of entries written.
//
// Hostile archives are refused, before anything is written for the offending entry:
// absolute paths, paths with a `..` component, symbolic links whose target is
// absolute or has any `..` component (so no chain of links can climb out, whatever
// links come before or after), hard links to paths outside `dest_dir`, devices, FIFOs
// and sockets, and whatever `limits` rules out. Nothing is written through a symbolic
// link. Owners and permission bits stored in the archive are not applied (new files
// get the umask). Every write that libarchive reports as failed or partial (a full
// disk is only a warning to it) is an error, as is an entry whose data does not reach
// the size its header declares.
//
// Throws pipeline::Error naming the archive (and the entry) when the archive cannot be
// opened, is damaged or truncated, holds a refused entry, or a file cannot be written
// (naming that file). Whatever was written before the error stays in `dest_dir`:
// unpack into a temporary folder and delete it on failure (as fetch() does).
std::size_t extract_archive(const std::filesystem::path& archive, const std::filesystem::path& dest_dir,
                            const UnpackLimits& limits = {});

}  // namespace pipeline
