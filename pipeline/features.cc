#include "pipeline/features.h"

#include <ATen/ATen.h>
#include <H5Cpp.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <system_error>

#include "pipeline/error.h"
#include "pipeline/files.h"
#include "pipeline/isolate.h"
#include "pipeline/metrics.h"  // integer_at

namespace fs = std::filesystem;
using nlohmann::json;

namespace pipeline {
namespace {

constexpr const char* kSplits[] = {"train", "test"};
constexpr const char* kProvenanceAttr = "provenance";
constexpr const char* kCompleteAttr = "complete";
constexpr const char* kRowsWrittenAttr = "rows_written";
constexpr int64_t kTargetChunkBytes = 2 << 20;  // big enough for streaming, small enough to resume cheaply
constexpr int64_t kImageChunkBytes = 256 << 10;
constexpr int64_t kLabelChunkRows = 64 << 10;
constexpr double kIsolationSeconds = 30;  // checking a real cache's metadata takes milliseconds

int split_index(const std::string& split) {
  if (split == "train") return 0;
  if (split == "test") return 1;
  fail("unknown split '{}' (expected 'train' or 'test')", split);
}

// HDF5 reports failures on its error stack, and the C++ wrapper throws an exception
// that carries only "H5Fcreate failed"; the stack, which holds the cause (e.g.
// "unable to lock file, errno = 11"), is reset by the wrapper's own clean-up calls
// before the exception reaches us. So instead of printing the stack, HDF5's automatic
// error handler records its innermost message here, at the moment of failure.
thread_local std::string t_h5_cause;

herr_t record_h5_cause(hid_t stack, void*) {
  if (!t_h5_cause.empty()) return 0;  // keep the first failure, not clean-up noise
  H5Ewalk2(
      stack, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* err, void* data) -> herr_t {
        if (n == 0 && err->desc != nullptr) *static_cast<std::string*>(data) = err->desc;
        return 0;
      },
      &t_h5_cause);
  return 0;
}

// Silences HDF5's error printing (like H5::Exception::dontPrint()) and starts a fresh
// record of the cause. The handler is a per-thread setting in thread-safe HDF5 builds,
// so this runs on whichever thread is about to do the I/O.
void quiet_hdf5() {
  H5Eset_auto2(H5E_DEFAULT, record_h5_cause, nullptr);
  t_h5_cause.clear();
}

[[noreturn]] void h5_fail(const fs::path& file, const std::string& where, const H5::Exception& e) {
  fail("HDF5 error in {} ({}): {}{}{}", file.string(), where, e.getDetailMsg(), t_h5_cause.empty() ? "" : ": ",
       t_h5_cause);
}

// Runs fn, translating HDF5's exceptions into pipeline::Error naming file and where.
template <typename Fn>
auto guarded(const fs::path& file, const std::string& where, Fn&& fn) -> decltype(fn()) {
  quiet_hdf5();
  try {
    return fn();
  } catch (const H5::Exception& e) {
    h5_fail(file, where, e);
  }
}

// One writer per partial file in this process: HDF5 would silently share the open
// file between two writers.
class PartialClaim {
 public:
  explicit PartialClaim(const fs::path& partial) : key_(fs::absolute(partial).lexically_normal().string()) {
    std::lock_guard<std::mutex> lock(mutex());
    if (!claimed().insert(key_).second) {
      fail("feature cache {} is already being written by another FeatureWriter in this process", key_);
    }
  }
  ~PartialClaim() {
    std::lock_guard<std::mutex> lock(mutex());
    claimed().erase(key_);
  }
  PartialClaim(const PartialClaim&) = delete;
  PartialClaim& operator=(const PartialClaim&) = delete;

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::set<std::string>& claimed() {
    static std::set<std::string> paths;
    return paths;
  }
  std::string key_;
};

// IEEE binary16, little-endian: what h5py/numpy call float16. HDF5 1.10 predefines no
// such type, so derive it from float32 the way h5py does.
H5::FloatType half_type() {
  H5::FloatType t(H5::PredType::IEEE_F32LE);
  t.setFields(15, 10, 5, 0, 10);
  t.setSize(2);
  t.setEbias(15);
  return t;
}

// The file's (and memory's: no HDF5 conversion) type of each dtype.
H5::DataType file_type(FeatureDtype dtype) {
  switch (dtype) {
    case FeatureDtype::Float16: return half_type();
    case FeatureDtype::UInt8: return H5::IntType(H5::PredType::STD_U8LE);
    case FeatureDtype::Float32: break;
  }
  return H5::FloatType(H5::PredType::IEEE_F32LE);
}

int64_t element_bytes(FeatureDtype dtype) {
  return dtype == FeatureDtype::Float32 ? 4 : dtype == FeatureDtype::Float16 ? 2 : 1;
}

// Stored values in memory: float16 and uint8 as they are stored, float32 as float32.
at::ScalarType stored_scalar_type(FeatureDtype dtype) {
  return dtype == FeatureDtype::Float16 ? at::kHalf : dtype == FeatureDtype::UInt8 ? at::kByte : at::kFloat;
}

// A layout's dtype: the feature dtypes, or uint8 (decoded images, image_store.h).
FeatureDtype layout_dtype(const std::string& name) {
  return name == "uint8" ? FeatureDtype::UInt8 : parse_feature_dtype(name);
}

H5::EnumType bool_type() {
  // h5py's bool: an int8 enum with FALSE = 0, TRUE = 1.
  H5::EnumType t(H5::PredType::NATIVE_INT8);
  int8_t no = 0, yes = 1;
  t.insert("FALSE", &no);
  t.insert("TRUE", &yes);
  return t;
}

H5::FileAccPropList file_access() {
  H5::FileAccPropList fapl;
  // Lock like HDF5 does by default, but do not fail on file systems without locks.
  H5Pset_file_locking(fapl.getId(), true, true);
  return fapl;
}

json layout_json(const CacheLayout& layout) {
  json taps = json::array();
  for (const auto& [name, width] : layout.taps) taps.push_back({{"name", name}, {"width", width}});
  return {{"train_rows", layout.train_rows},
          {"test_rows", layout.test_rows},
          {"dtype", to_string(layout.dtype)},
          {"taps", taps}};
}

// Throws pipeline::Error (numbers out of range, never cast) or json::exception (types).
CacheLayout layout_from_json(const json& j) {
  constexpr int64_t kMaxRows = int64_t{1} << 40, kMaxWidth = int64_t{1} << 30;
  CacheLayout layout;
  layout.train_rows = integer_at(j, "train_rows", "provenance", "layout", 0, kMaxRows);
  layout.test_rows = integer_at(j, "test_rows", "provenance", "layout", 0, kMaxRows);
  layout.dtype = layout_dtype(j.at("dtype").get<std::string>());
  for (const auto& tap : j.at("taps")) {
    layout.taps.emplace_back(tap.at("name").get<std::string>(), integer_at(tap, "width", "provenance", "layout.taps", 1, kMaxWidth));
  }
  return layout;
}

void check_layout(const CacheLayout& layout, const fs::path& file) {
  if (layout.train_rows < 0 || layout.test_rows < 0) {
    fail("feature cache {}: negative row count (train {}, test {})", file.string(), layout.train_rows,
         layout.test_rows);
  }
  if (layout.taps.empty()) fail("feature cache {}: no taps to store", file.string());
  std::set<std::string> seen;
  for (const auto& [name, width] : layout.taps) {
    if (name.empty() || name == "labels" || name.find('/') != std::string::npos) {
      fail("feature cache {}: bad tap name '{}' (non-empty, not 'labels', no '/')", file.string(), name);
    }
    if (!seen.insert(name).second) fail("feature cache {}: tap '{}' listed twice", file.string(), name);
    if (width <= 0) fail("feature cache {}: tap '{}' has width {} (must be > 0)", file.string(), name, width);
  }
}

std::string tap_names(const CacheLayout& layout) {
  std::string names;
  for (const auto& [name, width] : layout.taps) names += (names.empty() ? "" : ", ") + name;
  return names;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void write_string_attr(const H5::H5Object& obj, const char* name, const std::string& value) {
  if (obj.attrExists(name)) obj.removeAttr(name);
  H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
  type.setCset(H5T_CSET_UTF8);
  H5::Attribute attr = obj.createAttribute(name, type, H5::DataSpace(H5S_SCALAR));
  attr.write(type, value);
}

std::string read_string_attr(const H5::H5Object& obj, const char* name) {
  H5::Attribute attr = obj.openAttribute(name);
  std::string value;
  attr.read(attr.getStrType(), value);
  return value;
}

void write_int64_attr(const H5::H5Object& obj, const char* name, int64_t value) {
  H5::Attribute attr = obj.attrExists(name)
                           ? obj.openAttribute(name)
                           : obj.createAttribute(name, H5::PredType::STD_I64LE, H5::DataSpace(H5S_SCALAR));
  attr.write(H5::PredType::NATIVE_INT64, &value);
}

int64_t read_int64_attr(const H5::H5Object& obj, const char* name) {
  int64_t value = 0;
  obj.openAttribute(name).read(H5::PredType::NATIVE_INT64, &value);
  return value;
}

void write_bool_attr(const H5::H5Object& obj, const char* name, bool value) {
  H5::EnumType type = bool_type();
  H5::Attribute attr = obj.attrExists(name) ? obj.openAttribute(name)
                                            : obj.createAttribute(name, type, H5::DataSpace(H5S_SCALAR));
  int8_t v = value ? 1 : 0;
  attr.write(type, &v);
}

// Accepts h5py's enum bool and plain integers (uint8 0/1 written by other tools).
bool read_bool_attr(const H5::H5Object& obj, const char* name) {
  H5::Attribute attr = obj.openAttribute(name);
  H5::DataType type = attr.getDataType();
  if (type.getClass() == H5T_ENUM) {
    H5::EnumType etype = attr.getEnumType();
    std::vector<unsigned char> raw(etype.getSize());
    attr.read(etype, raw.data());
    return std::any_of(raw.begin(), raw.end(), [](unsigned char b) { return b != 0; });
  }
  if (type.getClass() == H5T_INTEGER) {
    int64_t v = 0;
    attr.read(H5::PredType::NATIVE_INT64, &v);
    return v != 0;
  }
  throw H5::AttributeIException("read_bool_attr", "attribute is neither a bool enum nor an integer");
}

std::vector<hsize_t> dims_of(const H5::DataSet& ds) {
  H5::DataSpace space = ds.getSpace();
  std::vector<hsize_t> dims(static_cast<size_t>(space.getSimpleExtentNdims()));
  space.getSimpleExtentDims(dims.data());
  return dims;
}

// Returns the dataset's stored FeatureDtype, or false when it is not a float of 4 or 2
// bytes or an unsigned byte.
bool stored_dtype(const H5::DataSet& ds, FeatureDtype* out) {
  if (ds.getTypeClass() == H5T_INTEGER) {
    const H5::IntType type = ds.getIntType();
    if (type.getSize() != 1 || type.getSign() != H5T_SGN_NONE) return false;
    *out = FeatureDtype::UInt8;
    return true;
  }
  if (ds.getTypeClass() != H5T_FLOAT) return false;
  size_t size = ds.getFloatType().getSize();
  if (size == 4) *out = FeatureDtype::Float32;
  else if (size == 2) *out = FeatureDtype::Float16;
  else return false;
  return true;
}

// The datasets of one split, opened and checked against the layout. Throws Error
// (via fail) or H5::Exception when the file does not match.
struct SplitSets {
  H5::Group group;
  H5::DataSet labels;
  std::vector<H5::DataSet> taps;  // in layout order
};

// Rows of split s (0 train, 1 test) in `layout`.
int64_t rows_of(const CacheLayout& layout, int s) { return s == 0 ? layout.train_rows : layout.test_rows; }

SplitSets open_split(const H5::H5File& file, const fs::path& path, const CacheLayout& layout, int s,
                     const H5::DSetAccPropList& dapl) {
  const int64_t rows = rows_of(layout, s);
  SplitSets sets;
  sets.group = file.openGroup(kSplits[s]);
  sets.labels = sets.group.openDataSet("labels");
  auto dims = dims_of(sets.labels);
  if (dims.size() != 1 || static_cast<int64_t>(dims[0]) != rows) {
    fail("feature cache {}: /{}/labels does not have {} rows", path.string(), kSplits[s], rows);
  }
  for (const auto& [name, width] : layout.taps) {
    H5::DataSet ds = sets.group.openDataSet(name, dapl);
    dims = dims_of(ds);
    if (dims.size() != 2 || static_cast<int64_t>(dims[0]) != rows || static_cast<int64_t>(dims[1]) != width) {
      fail("feature cache {}: /{}/{} is not [{}, {}]", path.string(), kSplits[s], name, rows, width);
    }
    FeatureDtype dtype;
    if (!stored_dtype(ds, &dtype) || dtype != layout.dtype) {
      fail("feature cache {}: /{}/{} is not stored as {}", path.string(), kSplits[s], name,
           to_string(layout.dtype));
    }
    sets.taps.push_back(ds);
  }
  return sets;
}

// A complete cache has every row written and every byte of its data on disk; these
// checks make a cache that only claims to be complete (a raised or zero rows_written,
// dims far beyond the file, chunks never written) an error instead of rows of fill
// values or a huge allocation.
void check_complete_split(const SplitSets& sets, const fs::path& path, const CacheLayout& layout, int s,
                          uintmax_t file_bytes) {
  const int64_t rows = rows_of(layout, s);
  const int64_t written = sets.group.attrExists(kRowsWrittenAttr) ? read_int64_attr(sets.group, kRowsWrittenAttr) : -1;
  if (written != rows) {
    fail("feature cache {} says it is complete, but /{} has rows_written {} of its {} rows; the file is damaged "
         "(rerun transfer-extract --force)",
         path.string(), kSplits[s], written, rows);
  }
  if (static_cast<int64_t>(sets.labels.getStorageSize()) < rows) {
    fail("feature cache {}: /{}/labels should hold {} bytes but the file stores {}; the file is damaged (rerun "
         "transfer-extract --force)",
         path.string(), kSplits[s], rows, sets.labels.getStorageSize());
  }
  const int64_t item = element_bytes(layout.dtype);
  for (size_t t = 0; t < layout.taps.size(); ++t) {
    const __int128 bytes = static_cast<__int128>(rows) * layout.taps[t].second * item;
    const hsize_t stored = sets.taps[t].getStorageSize();
    if (bytes > static_cast<__int128>(file_bytes) || static_cast<__int128>(stored) < bytes) {
      fail("feature cache {}: /{}/{} should hold {} bytes of features but the file stores {} (of {} in all); the "
           "file is damaged or truncated (rerun transfer-extract --force)",
           path.string(), kSplits[s], layout.taps[t].first, static_cast<int64_t>(std::min<__int128>(bytes, INT64_MAX)),
           stored, file_bytes);
    }
  }
}

void remove_file(const fs::path& path) {
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) fail("cannot delete {}: {}", path.string(), ec.message());
}

}  // namespace

FeatureDtype parse_feature_dtype(const std::string& name) {
  if (name == "float32") return FeatureDtype::Float32;
  if (name == "float16") return FeatureDtype::Float16;
  usage_fail("unknown feature dtype '{}' (expected float32 or float16)", name);
}

std::string to_string(FeatureDtype dtype) {
  return dtype == FeatureDtype::Float16 ? "float16" : dtype == FeatureDtype::UInt8 ? "uint8" : "float32";
}

bool operator==(const CacheLayout& a, const CacheLayout& b) {
  return a.train_rows == b.train_rows && a.test_rows == b.test_rows && a.taps == b.taps && a.dtype == b.dtype;
}

// ---------------------------------------------------------------------------------
// FeatureWriter

struct FeatureWriter::Impl {
  std::unique_ptr<PartialClaim> claim;  // first member: released after the file closes
  fs::path final_path;
  fs::path partial_path;
  CacheLayout layout;
  json provenance;  // as stored
  H5::H5File file;
  std::array<SplitSets, 2> splits;
  std::array<int64_t, 2> done{0, 0};
  bool resumed = false;
  bool open = false;

  int64_t total(int s) const { return rows_of(layout, s); }

  static H5::DSetAccPropList write_access() {
    // Room for a few chunks per dataset, so a chunk that a write leaves half full stays
    // in memory until the next write completes it instead of being re-read.
    H5::DSetAccPropList dapl;
    dapl.setChunkCache(521, static_cast<size_t>(4 * kTargetChunkBytes + (1 << 20)), 1.0);
    return dapl;
  }

  // True when `file` (open) is an interrupted write of this very cache; fills splits
  // and done. Throws H5::Exception or json/pipeline errors on damage.
  bool partial_matches() {
    json stored = json::parse(read_string_attr(file, kProvenanceAttr));
    if (stored.value("schema_version", -1) != kCacheSchemaVersion) return false;
    if (stored.at("settings") != provenance.at("settings")) return false;
    if (layout_from_json(stored.at("layout")) != layout) return false;
    H5::DSetAccPropList dapl = write_access();
    for (int s = 0; s < 2; ++s) {
      splits[s] = open_split(file, partial_path, layout, s, dapl);
      done[s] = read_int64_attr(splits[s].group, kRowsWrittenAttr);
      if (done[s] < 0 || done[s] > total(s)) return false;
      // rows_written may only claim rows whose bytes exist: a raised count over
      // chunks never written would turn fill values into "features".
      for (size_t t = 0; t < layout.taps.size(); ++t) {
        const __int128 claimed = static_cast<__int128>(done[s]) * layout.taps[t].second * element_bytes(layout.dtype);
        if (static_cast<__int128>(splits[s].taps[t].getStorageSize()) < claimed) return false;
      }
    }
    return true;
  }

  // Opens partial_path in `mode`; false when it cannot be opened (not HDF5, damaged).
  // A file another process holds open for writing is not ours to delete: that throws.
  bool open_partial(unsigned mode) {
    quiet_hdf5();
    try {
      if (!H5::H5File::isHdf5(partial_path.string())) return false;
      file = H5::H5File(partial_path.string(), mode, H5::FileCreatPropList::DEFAULT, file_access());
      return true;
    } catch (const H5::Exception&) {
      if (t_h5_cause.find("unable to lock") != std::string::npos) {
        fail("feature cache {} is locked ({}): is another transfer-extract writing it?", partial_path.string(),
             t_h5_cause);
      }
      return false;
    }
  }

  // Tries to reopen an interrupted write of the same cache; false if it is not one.
  bool try_resume() {
    const fs::file_status status = fs::symlink_status(partial_path);
    if (!fs::exists(status)) return false;
    if (!fs::is_regular_file(status)) {  // links not followed: never written through
      fail("feature cache {} is not a regular file (a folder or link of yours?), so it is not replaced: move it away",
           partial_path.string());
    }
    // The partial file is checked read-only in a child process first (isolate.h): a
    // damaged file is started over, one that makes HDF5 loop or crash is an error.
    const Isolated probe = run_isolated(
        [&] {
          if (!open_partial(H5F_ACC_RDONLY)) fail("not resumable");
          bool ok = false;
          try {
            ok = partial_matches();
          } catch (const H5::Exception&) {
          }
          if (!ok) fail("not resumable");
        },
        kIsolationSeconds);
    if (probe.outcome == Isolated::Threw && probe.message.find("is locked") != std::string::npos) throw Error(probe.message);
    if (probe.outcome == Isolated::Threw || probe.outcome == Isolated::ThrewOther) return false;  // start over
    if (probe.outcome != Isolated::Finished) {
      // Not deleted: a probe that timed out on a loaded machine may have been wrong.
      fail("feature cache {}: checking the interrupted write {}; rerun with --force to start over", partial_path.string(),
           probe.message);
    }
    splits = {};  // when the probe ran here (no child could be made), its handles go first
    file = H5::H5File();
    if (!open_partial(H5F_ACC_RDWR)) return false;
    try {
      if (!partial_matches()) return false;
      write_string_attr(file, kProvenanceAttr, dump(provenance));
      file.flush(H5F_SCOPE_LOCAL);
      return true;
    } catch (const std::exception&) {  // H5::Exception is no std::exception: see below
      return false;
    } catch (const H5::Exception&) {
      return false;
    }
  }

  void create() {
    guarded(partial_path, "create", [&] {
      file = H5::H5File(partial_path.string(), H5F_ACC_TRUNC, H5::FileCreatPropList::DEFAULT, file_access());
      write_string_attr(file, kProvenanceAttr, dump(provenance));
      write_bool_attr(file, kCompleteAttr, false);
      const H5::DataType ftype = file_type(layout.dtype);
      const int64_t elem = element_bytes(layout.dtype);
      // Decoded images are read a few random rows at a time (fine-tuning batches):
      // a chunk of about one image; features are read whole, in big chunks.
      const int64_t target = layout.dtype == FeatureDtype::UInt8 ? kImageChunkBytes : kTargetChunkBytes;
      H5::DSetAccPropList dapl = write_access();
      for (int s = 0; s < 2; ++s) {
        const int64_t rows = total(s);
        SplitSets& sets = splits[s];
        sets.group = file.createGroup(kSplits[s]);
        write_int64_attr(sets.group, kRowsWrittenAttr, 0);

        hsize_t label_dims[1] = {static_cast<hsize_t>(rows)};
        H5::DSetCreatPropList label_plist;
        if (rows > 0) {
          hsize_t chunk[1] = {static_cast<hsize_t>(std::min(rows, kLabelChunkRows))};
          label_plist.setChunk(1, chunk);
        }
        sets.labels = sets.group.createDataSet("labels", H5::PredType::STD_U8LE, H5::DataSpace(1, label_dims),
                                               label_plist);
        for (const auto& [name, width] : layout.taps) {
          hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(width)};
          H5::DSetCreatPropList plist;
          if (rows > 0) {
            const int64_t chunk_rows = std::clamp<int64_t>(target / (width * elem), 1, rows);
            hsize_t chunk[2] = {static_cast<hsize_t>(chunk_rows), static_cast<hsize_t>(width)};
            plist.setChunk(2, chunk);
            // Every row gets written: never spend time filling chunks with zeros first.
            plist.setFillTime(H5D_FILL_TIME_NEVER);
          }
          sets.taps.push_back(sets.group.createDataSet(name, ftype, H5::DataSpace(2, dims), plist, dapl));
        }
      }
      file.flush(H5F_SCOPE_LOCAL);
    });
  }

  void require_open(const char* what) const {
    if (!open) fail("feature cache {}: {} after the writer was finished", final_path.string(), what);
  }
};

FeatureWriter::FeatureWriter(const fs::path& final_path, const json& provenance, const CacheLayout& layout)
    : impl_(std::make_unique<Impl>()) {
  quiet_hdf5();
  Impl& w = *impl_;
  w.final_path = final_path;
  w.partial_path = fs::path(final_path.string() + ".partial");
  w.layout = layout;
  check_layout(layout, final_path);
  w.claim = std::make_unique<PartialClaim>(w.partial_path);
  if (!provenance.is_object() || !provenance.contains("settings") || !provenance.at("settings").is_object()) {
    fail("feature cache {}: provenance must be a JSON object with an object \"settings\"", final_path.string());
  }
  w.provenance = provenance;
  w.provenance["schema_version"] = kCacheSchemaVersion;
  w.provenance["layout"] = layout_json(layout);

  if (final_path.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(final_path.parent_path(), ec);
    if (ec) fail("cannot create directory {}: {}", final_path.parent_path().string(), ec.message());
  }

  w.resumed = w.try_resume();
  if (!w.resumed) {
    w.file = H5::H5File();  // close a file that was opened but rejected
    w.splits = {};
    w.done = {0, 0};
    remove_file(w.partial_path);
    w.create();
  }
  w.open = true;
}

FeatureWriter::~FeatureWriter() {
  if (!impl_ || !impl_->open) return;
  try {
    impl_->splits = {};
    impl_->file.close();
  } catch (...) {
    // Nothing to report to: committed rows are already on disk.
  }
}

FeatureWriter::FeatureWriter(FeatureWriter&&) noexcept = default;
FeatureWriter& FeatureWriter::operator=(FeatureWriter&&) noexcept = default;

bool FeatureWriter::resumed() const { return impl_->resumed; }
const CacheLayout& FeatureWriter::layout() const { return impl_->layout; }
const fs::path& FeatureWriter::partial_path() const { return impl_->partial_path; }
int64_t FeatureWriter::rows_done(const std::string& split) const { return impl_->done[split_index(split)]; }
int64_t FeatureWriter::rows(const std::string& split) const { return impl_->total(split_index(split)); }

void FeatureWriter::write(const std::string& split, int64_t row, const at::Tensor& labels,
                          const std::map<std::string, at::Tensor>& taps) {
  Impl& w = *impl_;
  w.require_open("write");
  const int s = split_index(split);
  const std::string where = w.partial_path.string();
  if (row != w.done[s]) {
    fail("feature cache {}: write of {} rows starting at {} out of order ({} rows written so far)", where, split,
         row, w.done[s]);
  }
  if (!labels.defined() || labels.dim() != 1) fail("feature cache {}: {} labels must be a 1-d tensor", where, split);
  if (!at::isIntegralType(labels.scalar_type(), /*includeBool=*/false)) {
    fail("feature cache {}: {} labels have dtype {}, expected an integer dtype", where, split,
         std::string(c10::toString(labels.scalar_type())));
  }
  const int64_t n = labels.size(0);
  if (row + n > w.total(s)) {
    fail("feature cache {}: rows [{}, {}) of {} exceed its {} rows", where, row, row + n, split, w.total(s));
  }
  for (const auto& entry : taps) {
    if (std::none_of(w.layout.taps.begin(), w.layout.taps.end(),
                     [&](const auto& tap) { return tap.first == entry.first; })) {
      fail("feature cache {}: tap '{}' is not in the layout (taps: {})", where, entry.first, tap_names(w.layout));
    }
  }
  if (n == 0) return;

  at::Tensor label_bytes = labels.to(at::kCPU).to(at::kLong);
  const int64_t lo = label_bytes.min().item<int64_t>(), hi = label_bytes.max().item<int64_t>();
  if (lo < 0 || hi > 255) {
    fail("feature cache {}: {} labels for rows [{}, {}) range over [{}, {}], outside 0..255", where, split, row,
         row + n, lo, hi);
  }
  label_bytes = label_bytes.to(at::kByte).contiguous();

  // Convert everything before touching the file, so a bad tap writes nothing.
  const at::ScalarType stype = stored_scalar_type(w.layout.dtype);
  std::vector<at::Tensor> values;
  for (const auto& [name, width] : w.layout.taps) {
    auto it = taps.find(name);
    if (it == taps.end()) fail("feature cache {}: write of {} rows lacks tap '{}'", where, split, name);
    const at::Tensor& t = it->second;
    if (!t.defined() || t.dim() != 2 || t.size(0) != n || t.size(1) != width) {
      fail("feature cache {}: tap '{}' for {} rows [{}, {}) must be [{}, {}], got {}", where, name, split, row,
           row + n, n, width, t.defined() ? fmt::format("{}", fmt::join(t.sizes(), "x")) : "undefined");
    }
    const bool bytes = w.layout.dtype == FeatureDtype::UInt8;
    if (bytes ? t.scalar_type() != at::kByte : !at::isFloatingType(t.scalar_type())) {
      fail("feature cache {}: tap '{}' has dtype {}, expected {}", where, name,
           std::string(c10::toString(t.scalar_type())), bytes ? "uint8" : "float32");
    }
    values.push_back(t.to(at::kCPU).to(stype).contiguous());
  }

  SplitSets& sets = w.splits[s];
  guarded(w.partial_path, "/" + split + "/labels", [&] {
    hsize_t start[1] = {static_cast<hsize_t>(row)}, count[1] = {static_cast<hsize_t>(n)};
    H5::DataSpace fspace = sets.labels.getSpace();
    fspace.selectHyperslab(H5S_SELECT_SET, count, start);
    sets.labels.write(label_bytes.data_ptr(), H5::PredType::NATIVE_UINT8, H5::DataSpace(1, count), fspace);
  });
  const H5::DataType mem_type = guarded(w.partial_path, "value type", [&] { return file_type(w.layout.dtype); });
  for (size_t i = 0; i < values.size(); ++i) {
    const auto& [name, width] = w.layout.taps[i];
    guarded(w.partial_path, "/" + split + "/" + name, [&] {
      hsize_t start[2] = {static_cast<hsize_t>(row), 0};
      hsize_t count[2] = {static_cast<hsize_t>(n), static_cast<hsize_t>(width)};
      H5::DataSpace fspace = sets.taps[i].getSpace();
      fspace.selectHyperslab(H5S_SELECT_SET, count, start);
      // The tensor already holds the file's representation: no HDF5 conversion.
      sets.taps[i].write(values[i].data_ptr(), mem_type, H5::DataSpace(2, count), fspace);
    });
  }
  // Data reaches the disk before the row count that vouches for it.
  guarded(w.partial_path, "flush", [&] { w.file.flush(H5F_SCOPE_LOCAL); });
  guarded(w.partial_path, "/" + split + " rows_written", [&] {
    write_int64_attr(sets.group, kRowsWrittenAttr, row + n);
    w.file.flush(H5F_SCOPE_LOCAL);
  });
  w.done[s] = row + n;
}

void FeatureWriter::finish() { finish(json::object()); }

void FeatureWriter::finish(const json& extra_provenance) {
  Impl& w = *impl_;
  w.require_open("finish");
  if (!extra_provenance.is_object()) {
    fail("feature cache {}: extra provenance must be a JSON object", w.final_path.string());
  }
  for (int s = 0; s < 2; ++s) {
    if (w.done[s] != w.total(s)) {
      fail("feature cache {} is not finished: {} has {} of {} rows written (train {}/{}, test {}/{})",
           w.partial_path.string(), kSplits[s], w.done[s], w.total(s), w.done[0], w.total(0), w.done[1],
           w.total(1));
    }
  }
  for (const auto& [key, value] : extra_provenance.items()) {
    if (key == "settings" || key == "schema_version" || key == "layout") {
      fail("feature cache {}: extra provenance may not change \"{}\"", w.final_path.string(), key);
    }
    w.provenance[key] = value;
  }
  guarded(w.partial_path, "finish", [&] {
    if (!extra_provenance.empty()) write_string_attr(w.file, kProvenanceAttr, dump(w.provenance));
    write_bool_attr(w.file, kCompleteAttr, true);
    w.splits = {};
    w.file.close();
  });
  w.open = false;
  w.claim.reset();
  std::error_code ec;
  fs::rename(w.partial_path, w.final_path, ec);
  if (ec) {
    fail("cannot rename {} to {}: {}", w.partial_path.string(), w.final_path.string(), ec.message());
  }
}

// ---------------------------------------------------------------------------------
// FeatureReader

struct FeatureReader::Impl {
  fs::path path;
  json provenance;
  CacheLayout layout;
  H5::H5File file;
  std::array<SplitSets, 2> splits;

  // Opens and checks the file (the reader's constructor, minus the isolation).
  void open(const fs::path& path);

  int64_t tap_index(const std::string& tap) const {
    for (size_t i = 0; i < layout.taps.size(); ++i) {
      if (layout.taps[i].first == tap) return static_cast<int64_t>(i);
    }
    fail("feature cache {} has no tap '{}' (its taps: {}; rerun transfer-extract with that tap)", path.string(),
         tap, tap_names(layout));
  }
};

void FeatureReader::Impl::open(const fs::path& file) {
  quiet_hdf5();
  Impl& r = *this;
  const fs::path& path = file;
  r.path = path;
  const std::string name = path.string();
  if (!fs::exists(path)) {
    if (fs::exists(name + ".partial")) {
      fail("no feature cache at {}: an unfinished one is at {}.partial; rerun transfer-extract to resume it", name,
           name);
    }
    fail("no feature cache at {}; run transfer-extract to create it", name);
  }
  if (!fs::is_regular_file(path)) fail("feature cache {} is not a regular file", name);
  bool hdf5 = false;
  try {
    hdf5 = H5::H5File::isHdf5(name);
  } catch (const H5::Exception&) {
    hdf5 = false;
  }
  if (!hdf5) fail("{} is not an HDF5 file, so not a feature cache; delete it and rerun transfer-extract", name);

  guarded(path, "open", [&] {
    H5::FileAccPropList fapl = file_access();
    r.file = H5::H5File(name, H5F_ACC_RDONLY, H5::FileCreatPropList::DEFAULT, fapl);
  });
  if (!guarded(path, "/", [&] { return r.file.attrExists(kProvenanceAttr); })) {
    fail("{} is an HDF5 file without a \"provenance\" attribute, so not a feature cache", name);
  }
  std::string text = guarded(path, "attribute provenance", [&] { return read_string_attr(r.file, kProvenanceAttr); });
  try {
    r.provenance = json::parse(text);
  } catch (const json::exception& e) {
    fail("feature cache {}: attribute \"provenance\" is not valid JSON ({})", name, e.what());
  }
  const json version = r.provenance.is_object() ? r.provenance.value("schema_version", json()) : json();
  if (version != json(kCacheSchemaVersion)) {
    fail("feature cache {} has schema version {}, this program reads version {}; rerun transfer-extract --force",
         name, version.dump(), kCacheSchemaVersion);
  }
  bool complete = guarded(path, "attribute complete", [&] {
    return r.file.attrExists(kCompleteAttr) && read_bool_attr(r.file, kCompleteAttr);
  });
  if (!complete) {
    fail("feature cache {} is incomplete (extraction was interrupted); rerun transfer-extract to resume it", name);
  }
  try {
    r.layout = layout_from_json(r.provenance.at("layout"));
    check_layout(r.layout, path);
  } catch (const json::exception& e) {
    fail("feature cache {}: provenance \"layout\" is malformed ({})", name, e.what());
  } catch (const Error& e) {
    fail("feature cache {}: provenance \"layout\" is malformed ({})", name, e.what());
  }
  guarded(path, "datasets", [&] {
    // Whole-dataset reads gain nothing from a chunk cache: read chunks straight into
    // the destination buffer.
    H5::DSetAccPropList dapl;
    dapl.setChunkCache(0, 0, 1.0);
    for (int s = 0; s < 2; ++s) r.splits[s] = open_split(r.file, path, r.layout, s, dapl);
    for (int s = 0; s < 2; ++s) check_complete_split(r.splits[s], path, r.layout, s, fs::file_size(path));
  });
}

FeatureReader::FeatureReader(const fs::path& path) : impl_(std::make_unique<Impl>()) {
  // First in a child process: a hostile file that makes HDF5 loop or crash costs the
  // child, and this process reports it (isolate.h).
  const Isolated probe = run_isolated([&] { Impl().open(path); }, kIsolationSeconds);
  if (probe.outcome == Isolated::Threw) throw Error(probe.message);
  if (probe.outcome == Isolated::ThrewOther) fail("feature cache {} cannot be read: {}", path.string(), probe.message);
  if (probe.outcome != Isolated::Finished) {
    fail("feature cache {}: reading its metadata {}: the file is damaged (rerun transfer-extract --force)",
         path.string(), probe.message);
  }
  impl_->open(path);
}

FeatureReader::~FeatureReader() = default;
FeatureReader::FeatureReader(FeatureReader&&) noexcept = default;
FeatureReader& FeatureReader::operator=(FeatureReader&&) noexcept = default;

const fs::path& FeatureReader::path() const { return impl_->path; }
const json& FeatureReader::provenance() const { return impl_->provenance; }
const CacheLayout& FeatureReader::layout() const { return impl_->layout; }
FeatureDtype FeatureReader::dtype() const { return impl_->layout.dtype; }
int64_t FeatureReader::rows(const std::string& split) const {
  return rows_of(impl_->layout, split_index(split));
}

std::vector<std::string> FeatureReader::taps() const {
  std::vector<std::string> names;
  for (const auto& tap : impl_->layout.taps) names.push_back(tap.first);
  return names;
}

int64_t FeatureReader::width(const std::string& tap) const {
  return impl_->layout.taps[static_cast<size_t>(impl_->tap_index(tap))].second;
}

at::Tensor FeatureReader::labels(const std::string& split) const {
  const Impl& r = *impl_;
  const int s = split_index(split);
  at::Tensor bytes = at::empty({rows(split)}, at::kByte);
  if (bytes.numel() > 0) {
    guarded(r.path, "/" + split + "/labels",
            [&] { r.splits[s].labels.read(bytes.data_ptr(), H5::PredType::NATIVE_UINT8); });
  }
  return bytes.to(at::kLong);
}

at::Tensor FeatureReader::read(const std::string& split, const std::string& tap) const {
  const Impl& r = *impl_;
  const int s = split_index(split);
  const auto i = static_cast<size_t>(r.tap_index(tap));
  const int64_t width = r.layout.taps[i].second;
  at::Tensor out = at::empty({rows(split), width}, stored_scalar_type(r.layout.dtype));
  if (out.numel() > 0) {
    guarded(r.path, "/" + split + "/" + tap, [&] {
      // Memory type = file type: one H5Dread, no HDF5 conversion (torch widens halves).
      r.splits[s].taps[i].read(out.data_ptr(), file_type(r.layout.dtype));
    });
  }
  return r.layout.dtype == FeatureDtype::Float16 ? out.to(at::kFloat) : out;
}

at::Tensor FeatureReader::read_rows(const std::string& split, const std::string& tap,
                                    const std::vector<int64_t>& rows) const {
  const Impl& r = *impl_;
  const int s = split_index(split);
  const auto i = static_cast<size_t>(r.tap_index(tap));
  const int64_t width = r.layout.taps[i].second, total = this->rows(split);
  // HDF5 reads a selection in file order: read the rows sorted, put them back in order.
  std::vector<int64_t> order(rows.size());
  for (size_t k = 0; k < rows.size(); ++k) order[k] = static_cast<int64_t>(k);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return rows[a] < rows[b]; });
  for (const int64_t row : rows) {
    if (row < 0 || row >= total) fail("feature cache {}: row {} of {} is outside its {} rows", r.path.string(), row, split, total);
  }
  for (size_t k = 1; k < order.size(); ++k) {
    if (rows[order[k]] == rows[order[k - 1]]) fail("feature cache {}: row {} of {} asked for twice", r.path.string(), rows[order[k]], split);
  }
  at::Tensor sorted = at::empty({static_cast<int64_t>(rows.size()), width}, stored_scalar_type(r.layout.dtype));
  if (sorted.numel() > 0) {
    guarded(r.path, "/" + split + "/" + tap, [&] {
      const H5::DataSet& ds = r.splits[s].taps[i];
      H5::DataSpace fspace = ds.getSpace();
      fspace.selectNone();
      for (size_t k = 0; k < order.size();) {  // runs of consecutive rows, one hyperslab each
        size_t end = k + 1;
        while (end < order.size() && rows[order[end]] == rows[order[end - 1]] + 1) ++end;
        hsize_t start[2] = {static_cast<hsize_t>(rows[order[k]]), 0};
        hsize_t count[2] = {static_cast<hsize_t>(end - k), static_cast<hsize_t>(width)};
        fspace.selectHyperslab(H5S_SELECT_OR, count, start);
        k = end;
      }
      hsize_t mdims[2] = {static_cast<hsize_t>(rows.size()), static_cast<hsize_t>(width)};
      ds.read(sorted.data_ptr(), file_type(r.layout.dtype), H5::DataSpace(2, mdims), fspace);
    });
  }
  at::Tensor out = at::empty_like(sorted);
  const int64_t row_bytes = width * sorted.element_size();
  const auto* from = static_cast<const uint8_t*>(sorted.data_ptr());
  auto* to = static_cast<uint8_t*>(out.data_ptr());
  for (size_t k = 0; k < order.size(); ++k) {
    std::memcpy(to + order[k] * row_bytes, from + static_cast<int64_t>(k) * row_bytes, static_cast<size_t>(row_bytes));
  }
  return r.layout.dtype == FeatureDtype::Float16 ? out.to(at::kFloat) : out;
}

void FeatureReader::require_settings(const json& expected) const {
  const Impl& r = *impl_;
  const json found = r.provenance.value("settings", json());
  if (found == expected) return;
  std::string diffs;
  auto add = [&](const std::string& key, const json& want, const json& have) {
    diffs += fmt::format("\n  {}: expected {}, found {}", key, want.is_null() ? "(absent)" : dump(want),
                         have.is_null() ? "(absent)" : dump(have));
  };
  if (found.is_object() && expected.is_object()) {
    std::set<std::string> keys;
    for (const auto& item : expected.items()) keys.insert(item.key());
    for (const auto& item : found.items()) keys.insert(item.key());
    for (const auto& key : keys) {
      const json want = expected.value(key, json()), have = found.value(key, json());
      if (want != have || expected.contains(key) != found.contains(key)) add(key, want, have);
    }
  } else {
    add("settings", expected, found);
  }
  fail("feature cache {} was made with other settings:{}\nrerun transfer-extract with --force to rebuild it, "
       "or point at a cache made with these settings",
       r.path.string(), diffs);
}

void check_cache_output(const fs::path& path, const std::string& flag, bool image_store) {
  check_output_file(path, flag);
  std::error_code ec;
  const fs::path partial = path.string() + ".partial";
  const fs::file_status partial_status = fs::symlink_status(partial, ec);
  if (fs::exists(partial_status) && !fs::is_regular_file(partial_status)) {
    fail("{} {}: {} is not a regular file (a link, folder or FIFO of yours?), so it is not resumed or replaced: move "
         "it away",
         flag, path.string(), partial.string());
  }
  if (fs::is_regular_file(partial_status) && fs::file_size(partial, ec) > 0) {
    // The first bytes of every HDF5 file without a user block, as FeatureWriter makes them.
    const std::string signature("\x89HDF\r\n\x1a\n", 8);
    std::string head(signature.size(), '\0');
    std::ifstream in(partial, std::ios::binary);
    if (!in.read(&head[0], static_cast<std::streamsize>(head.size())) || head != signature) {
      fail("{} {}: {} is not an HDF5 file (an interrupted write), so it is not resumed or replaced: move it away", flag,
           path.string(), partial.string());
    }
  }
  const fs::file_status status = fs::symlink_status(path, ec);
  if (!fs::exists(status)) return;
  const char* kind = image_store ? "an image store" : "a feature cache";
  if (fs::is_symlink(status)) {
    fail("{} {} is a link, which the new {} would replace: name the file itself, or another {}", flag, path.string(),
         kind, flag);
  }
  std::string why;
  try {
    const FeatureReader existing(path);
    if ((existing.dtype() == FeatureDtype::UInt8) != image_store) {
      why = image_store ? "it is a feature cache" : "it is an image store";
    }
  } catch (const std::exception& e) {
    why = e.what();
  } catch (const H5::Exception& e) {
    why = e.getDetailMsg();
  }
  if (!why.empty()) {
    fail("{} {} exists and is not {} this program can read ({}), so it is not replaced: choose another {} or move the "
         "file away",
         flag, path.string(), kind, why, flag);
  }
}

bool cache_matches(const fs::path& path, const json& settings) {
  try {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) return false;
    FeatureReader reader(path);
    return reader.provenance().value("settings", json()) == settings;
  } catch (const std::exception&) {
    return false;
  } catch (const H5::Exception&) {
    return false;
  }
}

}  // namespace pipeline
