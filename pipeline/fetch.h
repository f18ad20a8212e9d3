#pragma once
// The fetch stage: a dataset's official archive (CIFAR-10 or CIFAR-100, binary version;
// pipeline/datasets/) and a backbone's torchvision weights, each downloaded (or taken
// from a local file), verified, and put in place atomically.
//
// On disk, under FetchOptions::out_dir:
//   cifar-10-batches-bin/            data_batch_1..5.bin, test_batch.bin (+ whatever else
//                                    the archive holds, e.g. batches.meta.txt); for
//                                    CIFAR-100, cifar-100-binary/: train.bin, test.bin and
//                                    the two names files
//   <folder>/.verified               written last: the archive's MD5 and a newline.
//                                    A folder without it is not used (and is replaced).
//   <weights file name>              e.g. resnet18-f37072fd.pth, sha256-checked against its
//                                    name (as torchvision's hub does)
//   <archive file name>              a downloaded archive is kept (not a local --archive)
// Temporary names used while working (removed on failure, never mistaken for results):
//   .cifar-10-batches-bin.tmp-XXXXXX/   the archive unpacked, checked, then renamed
//   <name>.part                          a download in progress (resumed by the next run)
//   <weights name>.tmp                   a local weights file being copied

#include <filesystem>
#include <string>

namespace pipeline {

inline constexpr const char* kCifar10Url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
inline constexpr const char* kCifar10Md5 = "c32a1d4ab5d03f1284b67883e8d87530";
inline constexpr const char* kCifar10DirName = "cifar-10-batches-bin";
// Marker file inside kCifar10DirName, written once the folder is complete and checked.
inline constexpr const char* kCifar10VerifiedMarker = ".verified";

struct FetchOptions {
  std::filesystem::path out_dir = "data";  // gets cifar-10-batches-bin/ and the weights file (created if missing)
  std::string dataset = "cifar10";        // whose archive (pipeline/datasets/dataset.h)
  std::string url;                        // where to download the archive ("": the official one; a mirror; http, https or file)
  std::filesystem::path archive;          // local archive instead of downloading (offline); empty = download
  std::string md5;                        // expected archive MD5, 32 hex digits ("": the official; override for a repack/mirror)
  bool skip_weights = false;              // do not fetch the backbone's weights
  std::string backbone = "alexnet";       // whose weights (pipeline/models/backbone.h)
  std::string weights_url;                // where to download the weights ("": torchvision's URL for the backbone)
  std::filesystem::path weights_file;     // local weights file to copy instead of downloading; empty = download
  int retries = 5;                        // download retries after the first attempt (backoff 1, 2, 4… s)
  long timeout_seconds = 60;              // connect timeout, and abort a download stalled (<1 KiB/s) this long
  bool show_progress = true;              // download progress on stderr
};

struct FetchResult {
  std::filesystem::path cifar_dir;       // out_dir/<the dataset's folder>, verified
  std::string archive_md5;               // MD5 of the archive it was unpacked from (from the marker)
  std::filesystem::path weights_path;    // out_dir/<weights name>; empty if skipped
  std::string weights_sha256;            // full SHA-256 of weights_path; empty if skipped
  bool cifar_already_present = false;    // a verified folder was there: nothing was done
  bool weights_already_present = false;  // a verified weights file was there: nothing was done
};

// Makes out_dir/cifar-10-batches-bin and (unless skip_weights) the weights file
// present and verified, doing only what is missing; logs (spdlog info) what it did or
// that everything was already there. Throws pipeline::UsageError for malformed
// options (an MD5 that is not 32 hex digits, a URL without a file name), and
// pipeline::Error naming the file or URL for everything else: download failures, a
// wrong MD5 (the downloaded file is deleted; a local --archive is left alone), a
// damaged or hostile archive (links, entries the official archive does not hold, or
// larger than its 10,000-record files), an archive without the expected files or with
// a file whose size is not a positive multiple of 3073 bytes, unpacked files whose
// published MD5 differs (official archive only), an existing cifar-10-batches-bin/
// holding files the archive does not (never replaced), an unwritable out_dir, weights
// whose SHA-256 contradicts their name, an archive or weights file that is not a
// regular file, a file of the archive's or the weights' name already in out_dir that
// fails its check (never written here, since downloads are verified before they get
// their names: never replaced); UsageError for an unknown backbone. A weights file
// whose name does not begin with the backbone's name gets a warning (the stages check
// that it fits). After a failure no folder or file that looks finished is left behind:
// temporary folders are removed, and so is out_dir if this call made it and it is empty.
FetchResult fetch(const FetchOptions& options);

// Checks that the torchvision naming convention holds: the hex digits after the last
// '-' of the file's stem ("name-<hex8>.pth", 8 to 64 hex digits) begin its SHA-256.
// Returns the full SHA-256 (lowercase hex); throws pipeline::Error naming the file and
// both digests if they disagree; if the name has no such hex part, returns the SHA-256
// and logs a warning that it could not be verified.
std::string verify_weights_file(const std::filesystem::path& file);

// Checks `dir` for the CIFAR-10 binary files: data_batch_1..5.bin and test_batch.bin,
// each a regular file whose size is a positive multiple of 3073 bytes. Throws
// pipeline::Error naming the first missing or malformed file (and its size).
void check_cifar10_files(const std::filesystem::path& dir);

}  // namespace pipeline
