#include "pipeline/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "pipeline/error.h"

namespace pipeline {
namespace fs = std::filesystem;

namespace {

struct ReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
struct WriteDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};

const char* error_of(struct archive* a) {
  const char* text = archive_error_string(a);
  return text != nullptr ? text : "unknown libarchive error";
}

[[noreturn]] void refuse(const fs::path& archive, const std::string& name, const std::string& why) {
  fail("refusing to unpack {}: entry '{}' {}, which could write outside the target folder; the archive is not "
       "trustworthy (download it again from the official source)",
       archive.string(), name, why);
}

// `value` (the path of entry `name`, or its link target) as a relative path without
// "." components. Refuses absolute paths and "..".
fs::path safe_relative(const fs::path& archive, const std::string& name, const std::string& value, const char* role) {
  const std::string shown = value == name ? std::string() : fmt::format(" '{}'", value);
  if (!value.empty() && (value.front() == '/' || value.front() == '\\')) {
    refuse(archive, name, fmt::format("has an absolute {}{}", role, shown));
  }
  fs::path out;
  for (const fs::path& part : fs::path(value)) {
    if (part == "..") refuse(archive, name, fmt::format("has a '..' component in its {}{}", role, shown));
    if (part.empty() || part == ".") continue;
    out /= part;
  }
  return out;
}

// A symbolic link may only point down from where it stands. A lexical check of
// link/../target is not enough: `a -> .` followed by `b -> a/..` is lexically inside
// but physically the folder's parent, and a link made later can change what an earlier
// target means. Without any ".." no resolution can ever climb, whatever the links.
void check_symlink(const fs::path& archive, const std::string& name, const std::string& target) {
  if (target.empty()) refuse(archive, name, "is a symbolic link with an empty target");
  if (target.front() == '/') refuse(archive, name, fmt::format("is a symbolic link to the absolute path '{}'", target));
  for (const fs::path& part : fs::path(target)) {
    if (part == "..") refuse(archive, name, fmt::format("is a symbolic link to '{}', which climbs with '..'", target));
  }
}

[[noreturn]] void refuse_size(const fs::path& archive, const std::string& name, uint64_t bytes, uint64_t max_bytes) {
  fail("refusing to unpack {}: entry '{}' holds {} bytes or more, more than the {} such a file can hold; the archive "
       "is not the one expected",
       archive.string(), name, bytes, max_bytes);
}

[[noreturn]] void damaged(const fs::path& archive, const std::string& where, struct archive* a) {
  fail("cannot unpack {}{}: {}; the archive is damaged or truncated (delete it and download it again)",
       archive.string(), where, error_of(a));
}

// Copies the entry's data, at most `max_bytes` (offset + size of every block, so a
// sparse entry is bounded too). libarchive reports a short or failed write to disk
// (ENOSPC, EFBIG) as ARCHIVE_WARN, so anything but ARCHIVE_OK is a failure.
// Returns the end of the data written.
uint64_t copy_data(const fs::path& archive, const std::string& name, const fs::path& out, struct archive* in,
                   struct archive* disk, uint64_t max_bytes) {
  uint64_t end = 0;
  for (;;) {
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    const int r = archive_read_data_block(in, &block, &size, &offset);
    if (r == ARCHIVE_EOF) return end;
    if (r != ARCHIVE_OK) damaged(archive, fmt::format(" at entry '{}'", name), in);
    if (offset < 0 || static_cast<uint64_t>(offset) + size > max_bytes) {
      refuse_size(archive, name, static_cast<uint64_t>(std::max<la_int64_t>(offset, 0)) + size, max_bytes);
    }
    end = std::max<uint64_t>(end, static_cast<uint64_t>(offset) + size);
    if (archive_write_data_block(disk, block, size, offset) != ARCHIVE_OK) {
      fail("cannot write {} while unpacking {}: {} (is the disk full?)", out.string(), archive.string(),
           error_of(disk));
    }
  }
}

std::string allowed_list(const UnpackLimits& limits) {
  std::string names;
  for (const auto& [name, bytes] : limits.entries) names += (names.empty() ? "" : ", ") + name;
  return names;
}

}  // namespace

std::size_t extract_archive(const fs::path& archive, const fs::path& dest_dir, const UnpackLimits& limits) {
  std::unique_ptr<struct archive, ReadDeleter> in(archive_read_new());
  std::unique_ptr<struct archive, WriteDeleter> disk(archive_write_disk_new());
  if (!in || !disk) fail("libarchive could not start reading {}", archive.string());
  archive_read_support_filter_all(in.get());
  archive_read_support_format_all(in.get());
  // Absolute paths are checked by hand: the entries are rewritten to dest_dir/… below.
  archive_write_disk_set_options(disk.get(), ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                 ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  if (archive_read_open_filename(in.get(), archive.c_str(), 1 << 16) != ARCHIVE_OK) {
    fail("cannot open the archive {}: {}", archive.string(), error_of(in.get()));
  }

  std::size_t written = 0;
  for (;;) {
    struct archive_entry* entry = nullptr;
    const int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) damaged(archive, written == 0 ? "" : fmt::format(" after {} entries", written), in.get());
    if (r == ARCHIVE_WARN) spdlog::warn("{}: {}", archive.string(), error_of(in.get()));

    const char* raw_name = archive_entry_pathname(entry);
    if (raw_name == nullptr) fail("cannot unpack {}: entry {} has an unreadable name", archive.string(), written + 1);
    const std::string name = raw_name;
    const fs::path relative = safe_relative(archive, name, name, "path");
    if (relative.empty()) continue;  // "./" itself

    const mode_t type = archive_entry_filetype(entry);
    const char* hardlink = archive_entry_hardlink(entry);
    if (!limits.links && (hardlink != nullptr || type == AE_IFLNK)) {
      fail("refusing to unpack {}: entry '{}' is a link, and this archive holds none in its official form; the "
           "archive is not trustworthy (download it again from the official source)",
           archive.string(), name);
    }
    uint64_t max_bytes = UINT64_MAX;
    if (!limits.entries.empty()) {
      const auto allowed = limits.entries.find(relative.generic_string());
      if (allowed == limits.entries.end() || (type == AE_IFDIR) != (allowed->second == 0)) {
        fail("refusing to unpack {}: it holds '{}', which the expected archive does not (it holds only {}); the "
             "archive is not the one expected",
             archive.string(), name, allowed_list(limits));
      }
      max_bytes = allowed->second;
      if (archive_entry_size_is_set(entry) && archive_entry_size(entry) > 0 &&
          static_cast<uint64_t>(archive_entry_size(entry)) > max_bytes) {
        refuse_size(archive, name, static_cast<uint64_t>(archive_entry_size(entry)), max_bytes);
      }
    }
    if (hardlink != nullptr) {
      const fs::path target = safe_relative(archive, name, hardlink, "hard link target");
      if (target.empty()) refuse(archive, name, "is a hard link to the folder itself");
      archive_entry_set_hardlink(entry, (dest_dir / target).c_str());
    } else if (type == AE_IFLNK) {
      const char* target = archive_entry_symlink(entry);
      check_symlink(archive, name, target != nullptr ? target : "");
    } else if (type != AE_IFREG && type != AE_IFDIR) {
      refuse(archive, name, "is a device, FIFO or socket");
    }

    const fs::path out = dest_dir / relative;
    archive_entry_set_pathname(entry, out.c_str());
    const int w = archive_write_header(disk.get(), entry);
    if (w != ARCHIVE_OK) {
      fail("cannot write {} while unpacking {}: {}", out.string(), archive.string(), error_of(disk.get()));
    }
    if (archive_entry_size(entry) > 0 && hardlink == nullptr) {
      const uint64_t end = copy_data(archive, name, out, in.get(), disk.get(), max_bytes);
      if (type == AE_IFREG && archive_entry_size_is_set(entry) && end > static_cast<uint64_t>(archive_entry_size(entry))) {
        damaged(archive, fmt::format(" at entry '{}' (more data than its header declares)", name), in.get());
      }
    }
    if (archive_write_finish_entry(disk.get()) != ARCHIVE_OK) {
      fail("cannot finish writing {} while unpacking {}: {}", out.string(), archive.string(), error_of(disk.get()));
    }
    ++written;
  }
  if (archive_write_close(disk.get()) != ARCHIVE_OK) {
    fail("cannot finish unpacking {} into {}: {}", archive.string(), dest_dir.string(), error_of(disk.get()));
  }
  return written;
}

}  // namespace pipeline
