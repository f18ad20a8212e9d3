#pragma once
// Unpacking archives with libarchive, safely.

#include <cstddef>
#include <filesystem>

namespace pipeline {

// Unpacks `archive` (any format and compression libarchive reads: .tar.gz, .tar,
// .tar.bz2, .zip, …) into the existing folder `dest_dir`, keeping the archive's
// relative paths. Returns the number of entries written.
//
// Hostile archives are refused, before anything is written for the offending entry:
// absolute paths, paths with a `..` component, symbolic links whose target is
// absolute or leads out of `dest_dir`, hard links to paths outside `dest_dir`,
// devices, FIFOs and sockets. Nothing is written through a symbolic link. Owners and
// permission bits stored in the archive are not applied (new files get the umask).
//
// Throws pipeline::Error naming the archive (and the entry) when the archive cannot be
// opened, is damaged or truncated, holds a refused entry, or a file cannot be written
// (naming that file). Whatever was written before the error stays in `dest_dir`:
// unpack into a temporary folder and delete it on failure (as fetch() does).
std::size_t extract_archive(const std::filesystem::path& archive, const std::filesystem::path& dest_dir);

}  // namespace pipeline
