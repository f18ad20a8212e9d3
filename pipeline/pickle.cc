#include "pipeline/pickle.h"

#include <archive.h>
#include <archive_entry.h>

#include <ATen/ops/empty.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <unordered_map>

#include "pipeline/error.h"
#include "pipeline/files.h"

namespace pipeline {
namespace {

// ---------------------------------------------------------------------------------
// Values on the unpickler's stack.

struct Value;
using Ref = std::shared_ptr<Value>;

enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Storage, Tensor };

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

struct Value {
  explicit Value(Kind k) : kind(k) {}
  Kind kind;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string text;          // String; Global as "module.name"
  std::vector<Ref> items;    // Tuple, List; Dict as key, value, key, value, ...
  at::Tensor tensor;         // Storage (1-D) or Tensor
  // A container becomes frozen once it is placed inside another one; later
  // APPEND/SETITEM into it is refused. torch.save never does that, and refusing it
  // rules out reference cycles and keeps `depth` exact (deep nesting is refused too,
  // so destroying a value can never recurse deeply).
  bool frozen = false;
  int depth = 0;
};

constexpr int kMaxDepth = 64;
constexpr int64_t kMaxElements = int64_t{1} << 56;  // so that elements * itemsize fits int64

// The storage classes torch.save names in persistent ids, and their element types.
const std::map<std::string, at::ScalarType>& storage_types() {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble},
      {"torch.HalfStorage", at::kHalf},     {"torch.BFloat16Storage", at::kBFloat16},
      {"torch.LongStorage", at::kLong},     {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},     {"torch.BoolStorage", at::kBool},
  };
  return types;
}

const char* kOrderedDict = "collections.OrderedDict";
const char* kRebuildTensor = "torch._utils._rebuild_tensor_v2";
const char* kRebuildParameter = "torch._utils._rebuild_parameter";
const char* kRebuildTensorV1 = "torch._utils._rebuild_tensor";  // PyTorch 0.3 and older

// ---------------------------------------------------------------------------------
// The unpickler: a stack machine over the opcodes listed in pickle.h.

class Unpickler {
 public:
  // Interprets the pickle that starts at byte `start` of `data`; `label` names the
  // pickle in errors ("data.pkl", or "byte" for a legacy file, whose offsets are the file's).
  Unpickler(std::string_view data, const StorageLoader& storages, const std::string& source,
            std::string label = "data.pkl", size_t start = 0)
      : data_(data), storages_(storages), source_(source), label_(std::move(label)), pos_(start) {}

  // One past the STOP opcode, once run() has returned.
  size_t end() const { return pos_; }

  Ref run() {
    while (true) {
      op_offset_ = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t version = u8();
          if (version > 5) error(fmt::format("pickle protocol {} is not supported", version));
          break;
        }
        case 'c': op_global(); break;
        case 'q': memo_put(u8()); break;            // BINPUT
        case 'r': memo_put(u32()); break;           // LONG_BINPUT
        case 'h': memo_get(u8()); break;            // BINGET
        case 'j': memo_get(u32()); break;           // LONG_BINGET
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '}': push(std::make_shared<Value>(Kind::Dict)); break;   // EMPTY_DICT
        case ')': push(std::make_shared<Value>(Kind::Tuple)); break;  // EMPTY_TUPLE
        case ']': push(std::make_shared<Value>(Kind::List)); break;   // EMPTY_LIST
        case 't': push(make_container(Kind::Tuple, pop_mark())); break;  // TUPLE
        case 0x85: push(make_container(Kind::Tuple, pop_n(1))); break;   // TUPLE1
        case 0x86: push(make_container(Kind::Tuple, pop_n(2))); break;   // TUPLE2
        case 0x87: push(make_container(Kind::Tuple, pop_n(3))); break;   // TUPLE3
        case 'X': push_string(u32()); break;        // BINUNICODE
        case 0x8c: push_string(u8()); break;        // SHORT_BINUNICODE
        case 'J': push_int(static_cast<int32_t>(u32())); break;  // BININT
        case 'K': push_int(u8()); break;                          // BININT1
        case 'M': push_int(u16()); break;                         // BININT2
        case 0x8a: op_long1(); break;
        case 0x88: push_bool(true); break;          // NEWTRUE
        case 0x89: push_bool(false); break;         // NEWFALSE
        case 'N': push(std::make_shared<Value>(Kind::None)); break;
        case 'G': op_binfloat(); break;
        case 'R': op_reduce(); break;
        case 'Q': op_binpersid(); break;
        case 's': {  // SETITEM
          std::vector<Ref> pair = pop_n(2);
          add_items(Kind::Dict, std::move(pair), "SETITEM");
          break;
        }
        case 'u': add_items(Kind::Dict, pop_mark(), "SETITEMS"); break;
        case 'a': add_items(Kind::List, pop_n(1), "APPEND"); break;
        case 'e': add_items(Kind::List, pop_mark(), "APPENDS"); break;
        case 'b': op_build(); break;
        case '.': {  // STOP
          if (stack_.size() != 1 || !marks_.empty()) error("the pickle ends with a malformed stack");
          return stack_.back();
        }
        default:
          error(fmt::format("unsupported pickle opcode 0x{:02x}{} (torch.save of a state dict "
                            "does not use it)",
                            op, (op >= 0x20 && op < 0x7f) ? fmt::format(" '{}'", char(op)) : ""));
      }
    }
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail("{}: {} byte {}: {}", source_, label_, op_offset_, what);
  }

  // --- reading bytes, bounds-checked
  std::string_view take(uint64_t n) {
    if (n > data_.size() - pos_) error("the pickle is truncated");
    std::string_view out = data_.substr(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return out;
  }
  uint8_t u8() { return static_cast<uint8_t>(take(1)[0]); }
  uint64_t little(size_t n) {
    std::string_view b = take(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(uint8_t(b[i])) << (8 * i);
    return v;
  }
  uint16_t u16() { return static_cast<uint16_t>(little(2)); }
  uint32_t u32() { return static_cast<uint32_t>(little(4)); }

  // --- stack
  void push(Ref value) { stack_.push_back(std::move(value)); }
  Ref pop() {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() <= floor) error("pop from an empty stack");
    Ref v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  std::vector<Ref> pop_n(size_t n) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() < floor + n) error("pop from an empty stack");
    std::vector<Ref> out(std::make_move_iterator(stack_.end() - static_cast<ptrdiff_t>(n)),
                         std::make_move_iterator(stack_.end()));
    stack_.resize(stack_.size() - n);
    return out;
  }
  std::vector<Ref> pop_mark() {
    if (marks_.empty()) error("no MARK before this opcode");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Ref> out(std::make_move_iterator(stack_.begin() + static_cast<ptrdiff_t>(mark)),
                         std::make_move_iterator(stack_.end()));
    stack_.resize(mark);
    return out;
  }
  Ref& top() {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() <= floor) error("the stack is empty");
    return stack_.back();
  }

  void adopt(Value& container, Ref& item) {
    item->frozen = true;
    container.depth = std::max(container.depth, item->depth + 1);
    if (container.depth > kMaxDepth) error("values are nested too deeply");
  }
  Ref make_container(Kind kind, std::vector<Ref> items) {
    auto value = std::make_shared<Value>(kind);
    for (Ref& item : items) adopt(*value, item);
    value->items = std::move(items);
    return value;
  }
  void add_items(Kind kind, std::vector<Ref> items, const char* op) {
    Ref target = pop();
    if (target->kind != kind) {
      error(fmt::format("{} on a {}", op, kind_name(target->kind)));
    }
    if (target->frozen) error(fmt::format("{} into a value already inside another", op));
    if (kind == Kind::Dict && items.size() % 2 != 0) error(fmt::format("{} with an odd count", op));
    for (Ref& item : items) {
      adopt(*target, item);
      target->items.push_back(std::move(item));
    }
    push(std::move(target));
  }

  // --- memo
  void memo_put(uint32_t index) { memo_[index] = top(); }
  void memo_get(uint32_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) error(fmt::format("memo entry {} was never stored", index));
    push(it->second);
  }

  // --- scalars
  void push_int(int64_t v) {
    auto value = std::make_shared<Value>(Kind::Int);
    value->integer = v;
    push(std::move(value));
  }
  void push_bool(bool v) {
    auto value = std::make_shared<Value>(Kind::Bool);
    value->boolean = v;
    push(std::move(value));
  }
  void push_string(uint32_t length) {
    auto value = std::make_shared<Value>(Kind::String);
    value->text = std::string(take(length));
    push(std::move(value));
  }
  void op_long1() {
    const uint8_t n = u8();
    if (n > 8) error(fmt::format("LONG1 of {} bytes does not fit 64 bits", n));
    uint64_t v = little(n);
    if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    push_int(static_cast<int64_t>(v));
  }
  void op_binfloat() {
    std::string_view b = take(8);  // big-endian IEEE double
    uint64_t bits = 0;
    for (char c : b) bits = (bits << 8) | uint8_t(c);
    auto value = std::make_shared<Value>(Kind::Float);
    std::memcpy(&value->real, &bits, sizeof bits);
    push(std::move(value));
  }

  // --- objects
  std::string line() {
    const size_t end = data_.find('\n', pos_);
    if (end == std::string_view::npos) error("the pickle is truncated");
    std::string out(data_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  void op_global() {
    const std::string module = line();
    const std::string name = line();
    const std::string full = module + "." + name;
    if (full != kOrderedDict && full != kRebuildTensor && full != kRebuildParameter && full != kRebuildTensorV1 &&
        storage_types().count(full) == 0) {
      error(fmt::format("unsupported global {} (a state dict holds only tensors; this reader "
                        "knows {}, {}, {}, {} and torch.*Storage)",
                        full, kOrderedDict, kRebuildTensor, kRebuildTensorV1, kRebuildParameter));
    }
    auto value = std::make_shared<Value>(Kind::Global);
    value->text = full;
    push(std::move(value));
  }

  int64_t as_int(const Ref& v, const char* what) {
    if (v->kind != Kind::Int) error(fmt::format("{} is a {}, not an int", what, kind_name(v->kind)));
    return v->integer;
  }
  std::vector<int64_t> as_ints(const Ref& v, const char* what) {
    if (v->kind != Kind::Tuple && v->kind != Kind::List) {
      error(fmt::format("{} is a {}, not a tuple", what, kind_name(v->kind)));
    }
    std::vector<int64_t> out;
    for (const Ref& item : v->items) out.push_back(as_int(item, what));
    return out;
  }

  void op_reduce() {
    Ref args = pop();
    Ref callable = pop();
    if (callable->kind != Kind::Global) error(fmt::format("REDUCE on a {}", kind_name(callable->kind)));
    if (args->kind != Kind::Tuple) error(fmt::format("REDUCE with {} arguments", kind_name(args->kind)));
    const std::vector<Ref>& a = args->items;
    const std::string& name = callable->text;
    if (name == kOrderedDict) {
      if (!a.empty()) error("collections.OrderedDict called with arguments");
      push(std::make_shared<Value>(Kind::Dict));
    } else if (name == kRebuildTensor) {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.size() != 6 && a.size() != 7) error(fmt::format("{} with {} arguments", name, a.size()));
      push(rebuild_tensor(a[0], as_int(a[1], "storage offset"), as_ints(a[2], "size"),
                          as_ints(a[3], "stride")));
    } else if (name == kRebuildTensorV1) {
      // (storage, storage_offset, size, stride)
      if (a.size() != 4) error(fmt::format("{} with {} arguments", name, a.size()));
      push(rebuild_tensor(a[0], as_int(a[1], "storage offset"), as_ints(a[2], "size"),
                          as_ints(a[3], "stride")));
    } else if (name == kRebuildParameter) {
      // (data, requires_grad, backward_hooks)
      if (a.size() != 3 || a[0]->kind != Kind::Tensor) error(fmt::format("{} with unexpected arguments", name));
      auto value = std::make_shared<Value>(Kind::Tensor);
      value->tensor = a[0]->tensor;
      push(std::move(value));
    } else {
      error(fmt::format("{} cannot be called", name));
    }
  }

  Ref rebuild_tensor(const Ref& storage, int64_t offset, const std::vector<int64_t>& size,
                     const std::vector<int64_t>& stride) {
    if (storage->kind != Kind::Storage) error("a tensor's storage is not a storage");
    if (size.size() != stride.size()) error("a tensor's size and stride differ in length");
    const int64_t numel = storage->tensor.numel();
    if (offset < 0 || offset > numel) {
      error(fmt::format("storage offset {} outside a storage of {} elements", offset, numel));
    }
    // The last element reached must lie inside the storage (all in 128 bits: no overflow).
    __int128 last = offset;
    bool empty = false;
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] < 0 || stride[d] < 0) error("negative size or stride");
      if (size[d] == 0) empty = true;
      last += static_cast<__int128>(size[d] > 0 ? size[d] - 1 : 0) * stride[d];
      if (last > numel) break;
    }
    // The element count must fit too: with zero strides a tiny storage can claim
    // [2^40, 2^40], whose count overflows int64 inside LibTorch.
    __int128 count = 1;
    for (int64_t extent : size) {
      count *= extent;
      if (count > kMaxElements) {
        error(fmt::format("tensor of size [{}] has more than {} elements", fmt::join(size, ","),
                          static_cast<int64_t>(kMaxElements)));
      }
    }
    if (!empty && last >= numel) {
      error(fmt::format("tensor of size [{}] stride [{}] offset {} overruns its storage of {} "
                        "elements",
                        fmt::join(size, ","), fmt::join(stride, ","), offset, numel));
    }
    auto value = std::make_shared<Value>(Kind::Tensor);
    // Offsets count from the storage's start; a legacy storage view starts inside its root.
    value->tensor = storage->tensor.as_strided(size, stride, offset + storage->tensor.storage_offset());
    return value;
  }

  void op_binpersid() {
    Ref pid = pop();
    // Zip files: ('storage', torch.<T>Storage, key, location, numel). Legacy files add
    // view_metadata: None, or (view_key, offset, numel) for a view into storage `key`.
    const size_t n = pid->kind == Kind::Tuple ? pid->items.size() : 0;
    if ((n != 5 && n != 6) || pid->items[0]->kind != Kind::String ||
        pid->items[0]->text != "storage" || pid->items[1]->kind != Kind::Global ||
        pid->items[2]->kind != Kind::String || pid->items[4]->kind != Kind::Int) {
      error("unsupported persistent id (expected ('storage', type, key, location, numel[, view]))");
    }
    auto type = storage_types().find(pid->items[1]->text);
    if (type == storage_types().end()) {
      error(fmt::format("persistent id names {}, not a storage type", pid->items[1]->text));
    }
    const std::string& key = pid->items[2]->text;
    const int64_t numel = pid->items[4]->integer;
    if (numel < 0 || numel > kMaxElements) error(fmt::format("storage {} has {} elements", key, numel));
    auto value = std::make_shared<Value>(Kind::Storage);
    auto cached = loaded_.find(key);
    if (cached != loaded_.end()) {
      if (cached->second.scalar_type() != type->second || cached->second.numel() != numel) {
        error(fmt::format("storage {} is named twice with different types or sizes", key));
      }
      value->tensor = cached->second;
    } else {
      value->tensor = storages_(key, type->second, numel);
      loaded_.emplace(key, value->tensor);
    }
    if (n == 6 && pid->items[5]->kind != Kind::None) {
      const Ref& view = pid->items[5];
      if (view->kind != Kind::Tuple || view->items.size() != 3 || view->items[0]->kind != Kind::String) {
        error("unsupported storage view (expected (key, offset, numel))");
      }
      const int64_t offset = as_int(view->items[1], "view offset"), size = as_int(view->items[2], "view size");
      if (offset < 0 || size < 0 || offset > numel || size > numel - offset) {
        error(fmt::format("storage view [{}, +{}) outside storage {} of {} elements", offset, size, key, numel));
      }
      value->tensor = value->tensor.narrow(0, offset, size);
    }
    push(std::move(value));
  }

  void op_build() {
    Ref state = pop();
    Ref& target = top();
    // OrderedDict's state is its instance __dict__ ({'_metadata': ...}); not needed.
    if (target->kind != Kind::Dict) error(fmt::format("BUILD on a {}", kind_name(target->kind)));
  }

  std::string_view data_;
  const StorageLoader& storages_;
  const std::string& source_;
  std::string label_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Ref> memo_;
  std::map<std::string, at::Tensor> loaded_;
};

// ---------------------------------------------------------------------------------
// The zip archive.

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// A torch.save file before PyTorch 1.6 is a bare pickle stream that begins with
// PROTO 2 and a 10-byte LONG1 (the magic number 0x1950a86a20f9469cfc6c); those first
// four bytes tell it apart from a zip archive ("PK\3\4").
bool is_legacy_format(const std::string& head) {
  return head.size() >= 4 && head.compare(0, 4, "\x80\x02\x8a\x0a", 4) == 0;
}

// torch.save before PyTorch 0.1.10 wrote a tar archive ("ustar" at byte 257).
bool is_tar_format(const std::string& head) { return head.size() >= 262 && head.compare(257, 5, "ustar") == 0; }

std::string read_head(const std::filesystem::path& file, size_t n) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("cannot open {}: {}", file.string(), std::strerror(errno));
  std::string head(n, '\0');
  in.read(head.data(), static_cast<std::streamsize>(n));
  head.resize(static_cast<size_t>(in.gcount()));
  return head;
}

struct ZipContents {
  std::string pickle_name;  // "<prefix>/data.pkl"
  std::string pickle;
  std::string byteorder;    // "" when the archive has no byteorder record (1.x)
  std::map<std::string, int64_t> storages;  // "*/data/*" entry name -> declared bytes (not read yet)
};

[[noreturn]] void archive_fail(struct archive* a, const std::filesystem::path& file,
                               const std::string& what) {
  const char* message = archive_error_string(a);
  fail("{}: {}: {} (the file is truncated or corrupt; download or save it again)", file.string(),
       what, message ? message : "unknown libarchive error");
}

// Reads the current entry's `declared` bytes into `out`, then reads on to the end of
// the entry so that libarchive checks its CRC.
void read_entry(struct archive* a, const std::filesystem::path& file, const std::string& name,
                la_int64_t declared, uint8_t* out) {
  la_int64_t done = 0;
  while (done < declared) {
    const size_t want = static_cast<size_t>(std::min<la_int64_t>(declared - done, 1 << 30));
    const la_ssize_t n = archive_read_data(a, out + done, want);
    if (n < 0) archive_fail(a, file, "cannot read entry " + name);
    if (n == 0) break;
    done += n;
  }
  char extra = 0;
  const la_ssize_t n = archive_read_data(a, &extra, 1);
  if (n < 0) archive_fail(a, file, "cannot read entry " + name);
  if (done != declared || n != 0) {
    fail("{}: zip entry {} does not hold the {} bytes its header says (the file is truncated or "
         "corrupt; download or save it again)",
         file.string(), name, declared);
  }
}

// Calls visit(name, declared size) for each file entry of the zip `file`, with the
// entry open for reading; visit reads it (read_entry) or leaves it (it is skipped
// unread: never inflated). Entries claiming more bytes than the file has are refused:
// torch.save stores entries uncompressed, so none can be larger than the file.
template <typename Visit>
void for_each_zip_entry(const std::filesystem::path& file, uintmax_t file_size, Visit&& visit) {
  std::unique_ptr<struct archive, ArchiveDeleter> archive(archive_read_new());
  if (!archive) fail("libarchive could not start reading {}", file.string());
  struct archive* a = archive.get();
  // Seekable mode reads the central directory: torch.save's local headers carry no
  // sizes (it streams entries with data descriptors).
  archive_read_support_format_zip_seekable(a);
  if (archive_read_open_filename(a, file.c_str(), 1 << 16) != ARCHIVE_OK) {
    archive_fail(a, file, "cannot open as a zip archive");
  }
  struct archive_entry* entry = nullptr;
  while (true) {
    const int status = archive_read_next_header(a, &entry);
    if (status == ARCHIVE_EOF) break;
    if (status != ARCHIVE_OK && status != ARCHIVE_WARN) archive_fail(a, file, "cannot read the zip directory");
    if (archive_entry_filetype(entry) == AE_IFDIR) continue;
    const char* raw_name = archive_entry_pathname(entry);
    const std::string name = raw_name ? raw_name : "";
    if (!archive_entry_size_is_set(entry)) fail("{}: zip entry {} has no size", file.string(), name);
    const la_int64_t size = archive_entry_size(entry);
    if (size < 0 || static_cast<uintmax_t>(size) > file_size) {
      fail("{}: zip entry {} claims {} bytes in a file of {} (corrupt; download or save it again)",
           file.string(), name, size, file_size);
    }
    visit(a, name, size);
  }
}

// The part of `name` after its first '/' ("archive/data/0" -> "data/0").
std::string inner_name(const std::string& name) {
  const size_t slash = name.find('/');
  return slash == std::string::npos ? "" : name.substr(slash + 1);
}

// First pass: data.pkl and byteorder are read; storages are only listed.
ZipContents read_zip_index(const std::filesystem::path& file, uintmax_t file_size) {
  ZipContents zip;
  for_each_zip_entry(file, file_size, [&](struct archive* a, const std::string& name, la_int64_t size) {
    const std::string rest = inner_name(name);
    if (rest == "data.pkl" || rest == "byteorder") {
      std::string bytes(static_cast<size_t>(size), '\0');
      read_entry(a, file, name, size, reinterpret_cast<uint8_t*>(bytes.data()));
      if (rest == "byteorder") {
        zip.byteorder = bytes;
      } else {
        if (!zip.pickle_name.empty()) fail("{}: holds two data.pkl entries ({} and {})", file.string(), zip.pickle_name, name);
        zip.pickle_name = name;
        zip.pickle = std::move(bytes);
      }
    } else if (rest.rfind("data/", 0) == 0) {
      if (!zip.storages.emplace(name, size).second) fail("{}: holds the entry {} twice", file.string(), name);
    }
  });
  return zip;
}

// The unpickled object as a state dict: a dict of str -> tensor, keys in order.
TensorDict to_tensor_dict(const Ref& result, const std::string& source) {
  if (result->kind != Kind::Dict) {
    fail("{}: holds a {}, not a dict of tensors (a state dict: save model.state_dict())", source,
         kind_name(result->kind));
  }
  TensorDict out;
  std::unordered_map<std::string, size_t> index;
  const std::vector<Ref>& items = result->items;
  for (size_t i = 0; i + 1 < items.size(); i += 2) {
    if (items[i]->kind != Kind::String) {
      fail("{}: a key of the dict is a {}, not a str", source, kind_name(items[i]->kind));
    }
    const std::string& key = items[i]->text;
    if (items[i + 1]->kind != Kind::Tensor) {
      fail("{}: entry '{}' is a {}, not a tensor (expected a state dict of tensors)", source, key,
           kind_name(items[i + 1]->kind));
    }
    auto [where, added] = index.emplace(key, out.size());
    if (added) {
      out.emplace_back(key, items[i + 1]->tensor);
    } else {
      out[where->second].second = items[i + 1]->tensor;  // a dict keeps a key's last value
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------
// The legacy (pre-1.6) format: five pickles, then the storages' bytes.
//   magic number (PROTO 2, LONG1 0x1950a86a20f9469cfc6c, STOP)
//   protocol version 1001
//   sys_info {'protocol_version', 'little_endian': True, 'type_sizes': {...}}
//   the saved object, storages as persistent ids with a 6th field (view metadata)
//   the list of storage keys, in the order their data follows
// then per key: numel as an int64 (little-endian) and numel * itemsize raw bytes.

// The pickles of a state dict are small (resnet50's: 60 KB); the storages follow them.
// The first 1 MiB is read for them, more (doubling) only when they go on, up to 64 MiB.
constexpr size_t kFirstLegacyPickleBytes = 1u << 20;
constexpr size_t kMaxLegacyPickleBytes = 64u << 20;

class LegacyFile {
 public:
  LegacyFile(const std::filesystem::path& file, uintmax_t file_size)
      : source_(file.string()), size_(file_size), in_(file, std::ios::binary) {
    if (!in_) fail("cannot open {}: {}", source_, std::strerror(errno));
    read_head(kFirstLegacyPickleBytes);
  }

  // Parses the pickles from the bytes read so far, reading more when they run out.
  TensorDict read() {
    while (true) {
      try {
        return parse();
      } catch (const NeedMore&) {
        read_head(head_.size() * 2);
      }
    }
  }

 private:
  struct NeedMore {};  // the pickles go on past the bytes read, and the file has more

  void read_head(size_t wanted) {
    head_.resize(static_cast<size_t>(std::min<uintmax_t>({size_, wanted, kMaxLegacyPickleBytes})));
    in_.clear();
    in_.seekg(0);
    in_.read(head_.data(), static_cast<std::streamsize>(head_.size()));
    if (static_cast<size_t>(in_.gcount()) != head_.size()) fail("cannot read {}: it changed while being read", source_);
  }

  bool can_read_more() const { return head_.size() < size_ && head_.size() < kMaxLegacyPickleBytes; }

  TensorDict parse() {
    static const std::string kMagic("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e", 15);
    if (head_.compare(0, kMagic.size(), kMagic) != 0) {
      fail("{}: does not begin with torch.save's magic number (corrupt; download or save it again)", source_);
    }
    size_t pos = kMagic.size();
    const StorageLoader none = [&](const std::string&, at::ScalarType, int64_t) -> at::Tensor {
      fail("{}: byte {}: a storage before the saved object", source_, pos);
    };
    Ref version = run(none, pos);
    if (version->kind != Kind::Int || version->integer != 1001) {
      fail("{}: torch.save protocol version is not 1001 (corrupt, or from an unknown PyTorch)", source_);
    }
    Ref sys_info = run(none, pos);
    if (!little_endian(sys_info)) fail("{}: was saved on a big-endian machine; only little-endian files are supported", source_);

    // Storages are allocated as the object names them (their total bounded by the
    // file's size) and filled from the bytes after the key list.
    std::map<std::string, at::Tensor> named;
    uintmax_t total = 0;
    const StorageLoader loader = [&](const std::string& key, at::ScalarType dtype, int64_t numel) {
      total += static_cast<uintmax_t>(numel) * c10::elementSize(dtype);
      if (total > size_) {
        fail("{}: its storages hold {} bytes or more, more than the file's {} (corrupt; download or save it again)",
             source_, total, size_);
      }
      at::Tensor storage = at::empty({numel}, at::TensorOptions().dtype(dtype));
      named[key] = storage;
      return storage;
    };
    Ref object = run(loader, pos);
    Ref keys = run(none, pos);
    if (keys->kind != Kind::List) fail("{}: the storage key list is a {}, not a list", source_, kind_name(keys->kind));
    TensorDict dict = to_tensor_dict(object, source_);

    uintmax_t offset = pos;
    std::map<std::string, bool> filled;
    for (const Ref& key : keys->items) {
      if (key->kind != Kind::String) fail("{}: a storage key is a {}, not a str", source_, kind_name(key->kind));
      auto it = named.find(key->text);
      if (it == named.end()) fail("{}: storage {} is listed but not used by the saved object", source_, key->text);
      if (!filled.emplace(key->text, true).second) fail("{}: storage {} is listed twice", source_, key->text);
      at::Tensor& storage = it->second;
      const int64_t numel = static_cast<int64_t>(read_u64(offset, key->text));
      offset += 8;
      if (numel != storage.numel()) {
        fail("{}: byte {}: storage {} holds {} elements, but the object says {}", source_, offset - 8, key->text, numel,
             storage.numel());
      }
      const uintmax_t bytes = static_cast<uintmax_t>(storage.nbytes());
      read_at(offset, static_cast<char*>(storage.data_ptr()), bytes, key->text);
      offset += bytes;
    }
    if (filled.size() != named.size()) {
      for (const auto& [key, tensor] : named) {
        if (!filled.count(key)) fail("{}: storage {} is used by the saved object but not listed", source_, key);
      }
    }
    return dict;
  }

  Ref run(const StorageLoader& loader, size_t& pos) {
    if (pos >= head_.size()) {
      if (can_read_more()) throw NeedMore{};
      fail("{}: ends after byte {}, before the saved object is complete (truncated; download or save it again)",
           source_, pos);
    }
    Unpickler unpickler(head_, loader, source_, "byte", pos);
    try {
      Ref result = unpickler.run();
      pos = unpickler.end();
      return result;
    } catch (const Error& e) {
      const bool truncated = std::string(e.what()).find("truncated") != std::string::npos;
      if (truncated && can_read_more()) throw NeedMore{};
      if (truncated && head_.size() < size_) {
        fail("{}: its pickles are larger than {} MiB: not a state dict this reader accepts", source_,
             kMaxLegacyPickleBytes >> 20);
      }
      throw;
    }
  }

  static bool little_endian(const Ref& info) {
    if (info->kind != Kind::Dict) return false;
    for (size_t i = 0; i + 1 < info->items.size(); i += 2) {
      if (info->items[i]->kind == Kind::String && info->items[i]->text == "little_endian") {
        return info->items[i + 1]->kind == Kind::Bool && info->items[i + 1]->boolean;
      }
    }
    return false;
  }

  void read_at(uintmax_t offset, char* out, uintmax_t n, const std::string& key) {
    if (offset > size_ || n > size_ - offset) {
      fail("{}: storage {} needs bytes {}..{}, but the file has {} (truncated; download or save it again)", source_,
           key, offset, offset + n, size_);
    }
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(out, static_cast<std::streamsize>(n));
    if (!in_ || static_cast<uintmax_t>(in_.gcount()) != n) {
      fail("cannot read {} at byte {}: {}", source_, offset, std::strerror(errno));
    }
  }
  uint64_t read_u64(uintmax_t offset, const std::string& key) {
    unsigned char b[8];
    read_at(offset, reinterpret_cast<char*>(b), 8, key);
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }

  std::string source_;
  uintmax_t size_;
  std::ifstream in_;
  std::string head_;
};

}  // namespace

TensorDict unpickle_tensor_dict(std::string_view pickle, const StorageLoader& storages,
                                const std::string& source) {
  Unpickler unpickler(pickle, storages, source);
  return to_tensor_dict(unpickler.run(), source);
}

TensorDict read_torch_save_dict(const std::filesystem::path& file) {
  const std::string source = file.string();
  require_regular_file(file, "torch.save file");
  const std::string head = read_head(file, 512);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
  fail("{}: reading torch.save files needs a little-endian machine", source);
#endif
  std::error_code ec;
  const uintmax_t file_size = std::filesystem::file_size(file, ec);
  if (ec) fail("cannot read {}: {}", source, ec.message());
  if (is_legacy_format(head)) return LegacyFile(file, file_size).read();
  if (is_tar_format(head)) {
    fail("{} is in torch.save's tar format (PyTorch before 0.1.10), which this reader does not support; "
         "re-save it with PyTorch (torch.save(torch.load(f), f))",
         source);
  }
  if (head.size() < 4 || head.compare(0, 2, "PK") != 0) {
    fail("{} is not a torch.save file: it is neither a zip archive nor the legacy format{}", source,
         head.empty() ? " (it is empty)" : "");
  }
  const ZipContents zip = read_zip_index(file, file_size);
  if (zip.pickle_name.empty()) {
    fail("{}: the zip archive has no <name>/data.pkl entry, so it is not a torch.save file", source);
  }
  if (!zip.byteorder.empty() && zip.byteorder != "little") {
    fail("{}: was saved with byteorder '{}'; only little-endian files are supported", source,
         zip.byteorder);
  }
  const std::string prefix = zip.pickle_name.substr(0, zip.pickle_name.size() - 8);  // "x/"
  // Storages the pickle refers to are allocated as it names them and filled in a second
  // pass over the zip; entries it does not name are never read. Their total is bounded
  // by the file's size (torch.save does not compress), so no file can make the reader
  // allocate more than it holds.
  std::map<std::string, at::Tensor> wanted;
  uintmax_t total = 0;
  StorageLoader loader = [&](const std::string& key, at::ScalarType dtype, int64_t numel) {
    const std::string name = prefix + "data/" + key;
    auto it = zip.storages.find(name);
    if (it == zip.storages.end()) fail("{}: storage {} is missing", source, name);
    const int64_t item = static_cast<int64_t>(c10::elementSize(dtype));
    const int64_t bytes = it->second;
    if (numel > bytes / item || numel * item != bytes) {
      fail("{}: storage {} holds {} bytes, not {} elements of {}", source, name, bytes, numel, c10::toString(dtype));
    }
    total += static_cast<uintmax_t>(bytes);
    if (total > file_size) {
      fail("{}: its storages hold {} bytes or more, more than the file's {} (corrupt; download or save it again)",
           source, total, file_size);
    }
    at::Tensor storage = at::empty({numel}, at::TensorOptions().dtype(dtype));
    wanted[name] = storage;
    return storage;
  };
  TensorDict dict = unpickle_tensor_dict(zip.pickle, loader, source);
  size_t filled = 0;
  for_each_zip_entry(file, file_size, [&](struct archive* a, const std::string& name, la_int64_t size) {
    auto it = wanted.find(name);
    if (it == wanted.end()) return;
    read_entry(a, file, name, size, static_cast<uint8_t*>(it->second.data_ptr()));
    ++filled;
  });
  if (filled != wanted.size()) fail("{}: a storage entry could not be read on the second pass", source);
  return dict;
}

}  // namespace pipeline
