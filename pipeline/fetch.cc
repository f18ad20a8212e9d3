#include "pipeline/fetch.h"

#include <spdlog/spdlog.h>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <system_error>
#include <vector>

#include "pipeline/archive.h"
#include "pipeline/cifar10.h"
#include "pipeline/datasets/dataset.h"
#include "pipeline/digest.h"
#include "pipeline/download.h"
#include "pipeline/error.h"
#include "pipeline/files.h"
#include "pipeline/models/backbone.h"

namespace pipeline {
namespace fs = std::filesystem;

namespace {

// download(), with the offline alternative added to a failure's message.
void download_or_hint(const std::string& url, const fs::path& dest, const DownloadOptions& options,
                      const char* local_flag) {
  try {
    download(url, dest, options);
  } catch (const Error& e) {
    fail("{}\nWithout network access, use a local copy instead: {}", e.what(), local_flag);
  }
}

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

bool all_hex(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isxdigit(c) != 0; });
}

// The MD5 the folder's marker records, "" when there is no readable marker (a link
// to a device, a huge file: never read past 4 KiB).
std::string read_marker(const fs::path& dir) {
  try {
    std::istringstream in(read_file(dir / kCifar10VerifiedMarker, 4096));
    std::string md5;
    in >> md5;
    return lowercase(md5);
  } catch (const Error&) {
    return "";
  }
}

bool data_verified(const DatasetKind& kind, const fs::path& dir, const std::string& md5) {
  return read_marker(dir) == md5 && kind.folder_problem(dir, dir.string()).empty();
}

std::string checked_md5(const std::string& md5) {
  const std::string lower = lowercase(md5);
  if (lower.size() != 32 || !all_hex(lower)) usage_fail("--md5 must be 32 hexadecimal digits, not '{}'", md5);
  return lower;
}

std::string file_name_of_url(const std::string& url, const char* flag) {
  try {
    return url_file_name(url);
  } catch (const Error& e) {
    usage_fail("{} {}: {}", flag, url, e.what());
  }
}

DownloadOptions download_options(const FetchOptions& options) {
  DownloadOptions out;
  out.retries = options.retries;
  out.connect_timeout_seconds = options.timeout_seconds;
  out.low_speed_seconds = options.timeout_seconds;
  out.show_progress = options.show_progress;
  return out;
}

// The entries of the dataset's official archive, each with the most bytes it may hold:
// nothing else, and nothing larger, is unpacked, and no links.
UnpackLimits archive_limits(const DatasetKind& kind, const DatasetArchive& official) {
  UnpackLimits limits;
  limits.links = false;
  const std::string top = kind.folder_name();
  limits.entries[top] = 0;
  for (const auto& [name, bytes] : official.entries) limits.entries[top + "/" + name] = bytes;
  return limits;
}

// What a folder may hold to be replaced by a new unpack: the archive's own files and
// the marker, nothing of the user's.
std::string replaceable_data_folder(const DatasetArchive& official, const fs::path& dir) {
  std::vector<std::string> names = {kCifar10VerifiedMarker};
  for (const auto& [name, bytes] : official.entries) names.push_back(name);
  return only_entries(dir, names);
}

// Unpacks `archive` into a temporary folder next to the target, checks it (sizes; the
// published per-file MD5s when it is the official archive), marks it, and swaps it in.
void unpack_data(const DatasetKind& kind, const DatasetArchive& official, const fs::path& archive,
                 const std::string& md5, const fs::path& target) {
  spdlog::info("unpacking {} into {}", archive.string(), target.string());
  const std::string top = kind.folder_name();
  replace_folder_atomically(
      target,
      [&](const fs::path& temp) {
        TempPath unpack_dir(make_temp_dir(target.parent_path(), fmt::format(".{}.tmp-unpack-", top)));
        extract_archive(archive, unpack_dir.path(), archive_limits(kind, official));
        const fs::path unpacked = unpack_dir.path() / top;
        if (!fs::is_directory(fs::symlink_status(unpacked))) {
          fail("{} has no top folder {}/: it is not the binary version of {} (the python and matlab "
               "versions will not do)",
               archive.string(), top, kind.title());
        }
        const std::string problem = kind.folder_problem(unpacked, top);
        if (!problem.empty()) fail("{} is not a complete {} binary archive: {}", archive.string(), kind.title(), problem);
        if (md5 == official.md5) {
          // The archive's MD5 matched, but what reached the disk is checked too: a write
          // that failed silently would leave zeros where the records were.
          for (const auto& [name, expected] : official.md5s) {
            const std::string actual = file_digest(unpacked / name, DigestAlgorithm::Md5);
            if (actual != expected) {
              fail("{}/{} unpacked from {} has MD5 {}, not the published {}: the unpack was damaged (is the disk "
                   "full?)",
                   top, name, archive.string(), actual, expected);
            }
          }
        }
        write_file_atomic(unpacked / kCifar10VerifiedMarker, md5 + "\n");
        fs::remove(temp);
        std::error_code ec;
        fs::rename(unpacked, temp, ec);
        if (ec) fail("cannot rename {} to {}: {}", unpacked.string(), temp.string(), ec.message());
      },
      [&](const fs::path& dir) { return replaceable_data_folder(official, dir); });
}

void fetch_data(const DatasetKind& kind, const DatasetArchive& official, const FetchOptions& options,
                const std::string& md5, FetchResult& result) {
  const fs::path target = options.out_dir / kind.folder_name();
  result.cifar_dir = target;
  result.archive_md5 = md5;
  if (data_verified(kind, target, md5)) {
    spdlog::info("{} is already present and verified (archive MD5 {}); nothing to do", target.string(), md5);
    result.cifar_already_present = true;
    return;
  }
  const std::string previous = read_marker(target);
  if (!previous.empty() && previous != md5) {
    spdlog::info("{} was unpacked from an archive with MD5 {}, not the expected {}; fetching again", target.string(),
                 previous, md5);
  }

  fs::path archive;
  if (!options.archive.empty()) {
    archive = options.archive;
    require_regular_file(archive, "the archive");
    const std::string actual = file_digest(archive, DigestAlgorithm::Md5);
    if (actual != md5) {
      fail("{} has MD5 {} but {} was expected: the file is damaged or not the official archive (pass --md5 {} if it "
           "is a deliberate repack)",
           archive.string(), actual, md5, actual);
    }
  } else {
    archive = options.out_dir / file_name_of_url(options.url, "--url");
    if (fs::exists(archive)) {
      const std::string actual = file_digest(archive, DigestAlgorithm::Md5);
      if (actual != md5) {
        // Downloads are verified before they get this name: this file is not one of
        // ours (a partial download is NAME.part), so it is the user's to move.
        fail("{} is in the way: its MD5 is {}, not the expected {}, so this program did not download it and will not "
             "replace it: move it away to download the archive again, or pass --archive {} (with --md5 {} if it is a "
             "deliberate repack)",
             archive.string(), actual, md5, archive.string(), actual);
      }
      spdlog::info("reusing the downloaded archive {} (MD5 verified)", archive.string());
    }
    if (!fs::exists(archive)) {
      DownloadOptions download_opts = download_options(options);
      download_opts.verify = [&](const fs::path& part) {
        const std::string actual = file_digest(part, DigestAlgorithm::Md5);
        if (actual != md5) {
          fail("the download of {} has MD5 {} but {} was expected; the file was deleted (run again to download it "
               "again, or pass --md5 {} if this mirror serves a deliberate repack)",
               options.url, actual, md5, actual);
        }
      };
      spdlog::info("downloading {} to {}", options.url, archive.string());
      download_or_hint(options.url, archive, download_opts, "--archive FILE (make: CIFAR_ARCHIVE=FILE)");
    }
  }
  unpack_data(kind, official, archive, md5, target);
  spdlog::info("{} is ready and verified (archive MD5 {})", target.string(), md5);
}

// The hex digits after the last '-' of the stem of `name`, lowercase; "" if none.
std::string name_prefix(const std::string& name) {
  const std::string stem = fs::path(name).stem().string();
  const auto dash = stem.rfind('-');
  if (dash == std::string::npos) return "";
  const std::string hex = lowercase(stem.substr(dash + 1));
  if (hex.size() < 8 || hex.size() > 64 || !all_hex(hex)) return "";
  return hex;
}

// SHA-256 of `file`, checked against the prefix in `name` (the name it has, or will
// have). Messages call the file `shown_as` and end with `advice`.
std::string checked_weights_digest(const fs::path& file, const std::string& name, const std::string& shown_as,
                                   const std::string& advice = "") {
  const std::string sha = file_digest(file, DigestAlgorithm::Sha256);
  const std::string prefix = name_prefix(name);
  if (prefix.empty()) {
    spdlog::warn("cannot verify {}: its name has no '-<hex>' part to compare with its SHA-256 {}", shown_as, sha);
  } else if (sha.compare(0, prefix.size(), prefix) != 0) {
    fail("{} has SHA-256 {}, which does not begin with {} as the name {} says: the file is damaged or not the one "
         "named{}",
         shown_as, sha, prefix, name, advice);
  }
  return sha;
}

void fetch_weights(const FetchOptions& options, FetchResult& result) {
  const Backbone& spec = backbone(options.backbone);
  const bool local = !options.weights_file.empty();
  const std::string name = local ? options.weights_file.filename().string()
                                 : file_name_of_url(options.weights_url, "--weights-url");
  if (name.rfind(spec.name(), 0) != 0) {
    // torchvision names every weights file after its network; the stages check the fit.
    spdlog::warn("{} does not look like {} weights (torchvision's is {}); the stages will refuse it if it does not fit",
                 name, spec.title(), spec.weights().file);
  }
  const fs::path dest = options.out_dir / name;
  result.weights_path = dest;
  // The user's own image folder is an input: the weights never land among the images.
  refuse_output_over_inputs(dest, {image_folder_of(options.dataset)}, "--out");

  std::error_code ec;
  if (fs::exists(dest)) {
    if (local && fs::equivalent(options.weights_file, dest, ec)) {
      result.weights_sha256 = verify_weights_file(dest);  // the user's own file: never deleted
      result.weights_already_present = true;
      return;
    }
    try {
      result.weights_sha256 = verify_weights_file(dest);
      result.weights_already_present = true;
      spdlog::info("{} is already present and verified (SHA-256 {}); nothing to do", dest.string(),
                   result.weights_sha256);
      return;
    } catch (const Error& e) {
      // Every fetched file is verified before it gets this name: this one is not ours.
      fail("{}\n{} is in the way, and this program did not write it, so it is not replaced: move it away to fetch the "
           "weights again",
           e.what(), dest.string());
    }
  }

  if (local) {
    require_regular_file(options.weights_file, "the weights file");
    replace_atomically(dest, [&](const fs::path& temporary) {
      fs::copy_file(options.weights_file, temporary, fs::copy_options::overwrite_existing, ec);
      if (ec) fail("cannot copy {} to {}: {}", options.weights_file.string(), temporary.string(), ec.message());
      result.weights_sha256 = checked_weights_digest(temporary, name, options.weights_file.string());
    });
  } else {
    DownloadOptions download_opts = download_options(options);
    download_opts.verify = [&](const fs::path& part) {
      result.weights_sha256 = checked_weights_digest(part, name, fmt::format("the download of {}", options.weights_url),
                                                     "; it was deleted (run again to download it again)");
    };
    spdlog::info("downloading {} to {}", options.weights_url, dest.string());
    download_or_hint(options.weights_url, dest, download_opts, "--weights-file FILE (make: WEIGHTS=FILE)");
  }
  spdlog::info("{} is ready (SHA-256 {})", dest.string(), result.weights_sha256);
}

}  // namespace

void check_cifar10_files(const fs::path& dir) {
  const std::string problem = dataset_kind("cifar10").folder_problem(dir, dir.string());
  if (!problem.empty()) fail("{} is not a usable CIFAR-10 binary folder: {}", dir.string(), problem);
}

std::string verify_weights_file(const fs::path& file) {
  return checked_weights_digest(file, file.filename().string(), file.string());
}

FetchResult fetch(const FetchOptions& options) {
  const DatasetKind& kind = dataset_kind(options.dataset);
  // No official archive (an image folder, the user's own): only the weights are fetched.
  const std::optional<DatasetArchive> official = kind.archive();
  const std::string md5 = official ? checked_md5(options.md5.empty() ? official->md5 : options.md5) : "";
  if (options.retries < 0) usage_fail("--retries must be 0 or more, not {}", options.retries);
  if (options.timeout_seconds <= 0) usage_fail("--timeout must be positive, not {}", options.timeout_seconds);
  FetchOptions resolved = options;
  resolved.out_dir = output_path(options.out_dir, "--out");
  const Backbone& spec = backbone(options.backbone);
  if (resolved.weights_url.empty()) resolved.weights_url = spec.weights().url;
  if (resolved.url.empty() && official) resolved.url = official->url;
  refuse_output_over_inputs(resolved.out_dir / kind.folder_name(), {options.archive, options.weights_file}, "--out");
  // A failed fetch (a damaged archive, no network) takes back the folders it made.
  const MadeFolders out_dir(resolved.out_dir, "the --out folder");

  FetchResult result;
  if (!official) {
    if (options.skip_weights) usage_fail("--dataset {} with --skip-weights: there is nothing to fetch", options.dataset);
    spdlog::info("{} is your own data: fetching only the weights", options.dataset);
  } else {
    fetch_data(kind, *official, resolved, md5, result);
  }
  if (options.skip_weights) {
    spdlog::info("skipping the {} weights as asked", spec.title());
  } else {
    fetch_weights(resolved, result);
  }
  return result;
}

}  // namespace pipeline
