#pragma once
// The HDF5 feature cache: the frozen backbone's activations for every CIFAR-10 image,
// written once by transfer-extract and read (in seconds) by every transfer-head run.
//
// ---------------------------------------------------------------------------------
// Cache file format, schema version 1 (kCacheSchemaVersion). Readable by h5py as is.
//
//   /train/labels    uint8 [N]                     class 0..9, rows in source-file order
//   /train/<tap>     float32 or IEEE float16 [N, W] one dataset per tap (an image store,
//                                                   image_store.h: uint8), e.g.
//                                                   fc7 [N, 4096], fc6 [N, 4096], pool5 [N, 9216]
//   /test/labels     uint8 [M]
//   /test/<tap>      float32 or float16 [M, W]      same taps, widths and dtype as /train
//
//   attribute "provenance" on /   variable-length UTF-8 string holding a JSON object:
//       "settings"        the inputs that determine the contents (weights sha256, dataset
//                         digest, image size, mean/std, taps, dtype, precision, limits...);
//                         two caches are "the same" exactly when their settings are equal
//       "schema_version"  1 (added by the writer; a reader refuses any other version)
//       "layout"          {"train_rows": N, "test_rows": M, "dtype": "float32"|"float16"|"uint8",
//                          "taps": [{"name": "fc7", "width": 4096}, ...]} (added by the
//                         writer; the taps' order is the order the writer was given)
//       any other keys    informational (library versions, created, precision error...)
//   attribute "complete" on /     HDF5 enum bool (h5py: numpy.bool_; a uint8 is also
//                                 accepted on read): true only once every row is written
//   attribute "rows_written" on /train and /test   int64: rows [0, rows_written) of the
//                                 split are committed (written after their data, then
//                                 flushed), which is what makes an interrupted write
//                                 resumable
//
// The float16 type is IEEE binary16 little-endian (sign bit 15, exponent bits 10..14
// with bias 15, mantissa bits 0..9), the layout h5py/numpy read as float16.
// Feature datasets are chunked by whole rows (about 2 MiB per chunk), uncompressed, so
// that streaming writes are cheap and a whole-dataset read is one H5Dread straight into
// the tensor's memory. Labels are chunked by up to 64 Ki rows.
// A file under construction is named <final>.partial and renamed to <final> by
// FeatureWriter::finish(), so a file at the final name is always complete.
// ---------------------------------------------------------------------------------
//
// Errors: every failure throws pipeline::Error naming the file (and dataset or key);
// HDF5's own error-stack printing is turned off and its exceptions are translated.
// Thread safety: an object must not be used from two threads at once; different
// objects (on different files) may be used from different threads.

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pipeline {

// How values are stored on disk. Features are float32 or float16 (reading yields
// float32); uint8 holds decoded images (image_store.h: values are pixels, read as uint8).
enum class FeatureDtype { Float32, Float16, UInt8 };

// The feature dtypes, "float32" | "float16"; anything else throws pipeline::UsageError.
FeatureDtype parse_feature_dtype(const std::string& name);
std::string to_string(FeatureDtype dtype);

inline constexpr int kCacheSchemaVersion = 1;

// The shape of a cache: rows per split and the tapped layers with their widths.
struct CacheLayout {
  int64_t train_rows = 0;  // N, >= 0
  int64_t test_rows = 0;   // M, >= 0
  // tap name -> width (features per row), e.g. {{"fc7", 4096}}; order kept.
  // Names are non-empty, unique, not "labels" and contain no '/'; widths > 0.
  std::vector<std::pair<std::string, int64_t>> taps;
  FeatureDtype dtype = FeatureDtype::Float32;
};

bool operator==(const CacheLayout& a, const CacheLayout& b);
inline bool operator!=(const CacheLayout& a, const CacheLayout& b) { return !(a == b); }

// Writes a cache row block by row block, resumably. Not copyable; movable.
class FeatureWriter {
 public:
  // Writes to final_path + ".partial", creating parent directories.
  // `provenance` must be a JSON object with an object "settings" (see the format above);
  // the writer stores it with "schema_version" and "layout" added.
  // If the partial file exists, is a readable cache of this schema version with equal
  // provenance["settings"] and an equal layout, the writer RESUMES it: resumed() is true
  // and rows_done() gives the rows already committed per split (the stored provenance
  // is replaced by `provenance`, so its informational keys describe this run).
  // The partial file is first checked read-only in a child process (isolate.h); its
  // rows_written may not claim rows whose chunks were never written.
  // Otherwise (missing, corrupt, other settings or layout) it is deleted and the writer
  // starts over. Throws pipeline::Error on a bad layout/provenance, when the partial
  // file is locked by another process, is not a regular file, or made the child's
  // check hang or crash (it is then kept: rerun with --force), or when the file cannot
  // be created.
  FeatureWriter(const std::filesystem::path& final_path, const nlohmann::json& provenance,
                const CacheLayout& layout);
  // Closes without finishing: the partial file stays for a later resume. Never throws.
  ~FeatureWriter();
  FeatureWriter(FeatureWriter&&) noexcept;
  FeatureWriter& operator=(FeatureWriter&&) noexcept;
  FeatureWriter(const FeatureWriter&) = delete;
  FeatureWriter& operator=(const FeatureWriter&) = delete;

  bool resumed() const;
  const CacheLayout& layout() const;
  const std::filesystem::path& partial_path() const;
  // Rows committed so far; split is "train" or "test" (else Error).
  int64_t rows_done(const std::string& split) const;
  int64_t rows(const std::string& split) const;  // total rows of the split (the layout's)

  // Appends rows [row, row + n) of `split`, n = labels.size(0) (n == 0 is a no-op).
  //   labels: [n], any integer dtype, values 0..255 (stored as uint8)
  //   taps:   name -> [n, width] floating tensor (float32 expected; others are converted),
  //           exactly the layout's taps; any device (copied to the CPU if needed)
  // row must equal rows_done(split) and row + n must not exceed rows(split) (else Error).
  // When it returns, the rows are in the file: the data is flushed (H5Fflush, to the
  // operating system; no fsync) first, then the split's "rows_written" attribute is
  // advanced and flushed, so if the process dies afterwards nothing is lost, and if it
  // dies during the call only this call's rows are. A call that throws commits nothing
  // (rows_done is unchanged and the same rows may be written again).
  void write(const std::string& split, int64_t row, const at::Tensor& labels,
             const std::map<std::string, at::Tensor>& taps);

  // Throws (naming the rows missing) unless every row of both splits is written; then
  // sets "complete" = true, closes the file and renames it to final_path, replacing any
  // old file there. The overload merges `extra_provenance` (an object of informational
  // keys, e.g. a precision error measured during extraction) into the stored provenance
  // first; it may not change "settings", "schema_version" or "layout".
  // After finish() the writer is closed; write()/finish() then throw.
  void finish();
  void finish(const nlohmann::json& extra_provenance);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads a complete cache. Not copyable; movable. All reads return CPU tensors.
class FeatureReader {
 public:
  // Opens and checks the file, first in a forked child with a 30 s deadline (isolate.h:
  // HDF5 can loop or crash on a damaged file), then here. Throws pipeline::Error when
  // it does not exist ("no feature cache at ... run transfer-extract"), is not a
  // regular file, is not HDF5, has another schema version, is malformed, is not
  // complete (rerun transfer-extract to resume), claims completeness its numbers
  // contradict (rows_written other than the rows, feature or label bytes not stored),
  // or made the child hang or crash.
  explicit FeatureReader(const std::filesystem::path& path);
  ~FeatureReader();
  FeatureReader(FeatureReader&&) noexcept;
  FeatureReader& operator=(FeatureReader&&) noexcept;
  FeatureReader(const FeatureReader&) = delete;
  FeatureReader& operator=(const FeatureReader&) = delete;

  const std::filesystem::path& path() const;
  const nlohmann::json& provenance() const;  // as stored, see the format above
  const CacheLayout& layout() const;
  std::vector<std::string> taps() const;     // in the writer's order
  int64_t width(const std::string& tap) const;
  int64_t rows(const std::string& split) const;  // split: "train" | "test"
  FeatureDtype dtype() const;                    // how values are stored

  // Labels of the split: [rows] int64.
  at::Tensor labels(const std::string& split) const;
  // The whole tap of the split: [rows, width] float32 (float16 files are widened), read
  // with one H5Dread. An unknown split or tap throws an Error naming the file and the
  // taps it has. (uint8 files: [rows, width] uint8.)
  at::Tensor read(const std::string& split, const std::string& tap) const;
  // The given rows of a tap, in the order given (distinct, each in [0, rows)): [n, width],
  // float32 or (uint8 files) uint8. Consecutive rows are read as one block.
  at::Tensor read_rows(const std::string& split, const std::string& tap, const std::vector<int64_t>& rows) const;

  // Throws an Error naming the file, listing every settings key whose value differs
  // (expected vs found, missing on either side included) and suggesting --force,
  // unless provenance()["settings"] == expected_settings.
  void require_settings(const nlohmann::json& expected_settings) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Checks, before any work, that a cache (image_store false) or an image store (true)
// may later be written at `path` (named by `flag`), touching nothing: check_output_file()'s
// checks, then a file already at `path` must be one this program can read, of that
// kind (it is then replaced), and one at `path`.partial an HDF5 file (or empty: it is
// then resumed or started over). Otherwise it is the user's: throws pipeline::Error
// naming it, and it is never replaced.
void check_cache_output(const std::filesystem::path& path, const std::string& flag, bool image_store);

// True when `path` is a complete cache of this schema version whose
// provenance["settings"] equals `settings`; false otherwise (missing, not HDF5, partial,
// other version or settings). Never throws.
bool cache_matches(const std::filesystem::path& path, const nlohmann::json& settings);

}  // namespace pipeline
