#include "pipeline/files.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <vector>

#include <spdlog/spdlog.h>

#include "pipeline/error.h"
#include "pipeline/interrupt_cleanup.h"

namespace fs = std::filesystem;

namespace pipeline {
namespace {

// The first of `names` present in `dir` (links not followed), or "".
std::string first_present(const fs::path& dir, const std::vector<std::string>& names) {
  std::error_code ec;
  for (const std::string& name : names) {
    if (fs::exists(fs::symlink_status(dir / name, ec))) return name;
  }
  return {};
}

// `dir`, after checking that it is not a folder of the user's or of another stage:
// every run leaves its .lock naming its stage, so an existing folder without one is not
// a run folder, and its files of the stage's output names (or their temporaries' names)
// are the user's, never to be overwritten or removed.
const fs::path& checked_run_folder(const fs::path& dir, const std::string& kind, const std::vector<std::string>& outputs) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return dir;
  const fs::path lock = dir / ".lock";
  const fs::file_status status = fs::symlink_status(lock, ec);
  if (fs::exists(status)) {
    if (!fs::is_regular_file(status)) {
      fail("{} is not a regular file (a link, folder or FIFO), so {} is not a run folder this program made: choose "
           "another --out, or remove {}",
           lock.string(), dir.string(), lock.string());
    }
    std::string owner = read_file(lock, 4096);
    while (!owner.empty() && std::isspace(static_cast<unsigned char>(owner.back()))) owner.pop_back();
    const bool printable =
        std::all_of(owner.begin(), owner.end(), [](unsigned char c) { return c >= 0x20 && c < 0x7f; });
    if (!printable) {
      fail("{} holds text this program does not write, so {} is not a run folder it made: choose another --out",
           lock.string(), dir.string());
    }
    if (!owner.empty() && owner != kind) {
      fail("{} is a {} folder (its .lock says so), not one for {}: choose another --out", dir.string(), owner, kind);
    }
    return dir;
  }
  std::vector<std::string> names = outputs;
  for (const std::string& name : outputs) names.push_back(name + ".tmp");
  const std::string theirs = first_present(dir, names);
  if (!theirs.empty()) {
    fail("{} holds {}, which no run of this program wrote there (the folder has no .lock file): choose another "
         "--out, or move {} away (a run folder copied without its hidden .lock file: create an empty {})",
         dir.string(), theirs, (dir / theirs).string(), lock.string());
  }
  return dir;
}

// An exclusive flock on the folder `parent` itself (no file is made), held while a
// folder in it is replaced; waits, saying so, while another run holds it.
class ParentLock {
 public:
  ParentLock(const fs::path& parent, const fs::path& target)
      : fd_(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (fd_ < 0) fail("cannot open the folder {}: {}", parent.string(), std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
    spdlog::info("waiting for another run that is writing a folder in {} to finish before {} is written",
                 parent.string(), target.string());
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        const int error = errno;
        ::close(fd_);
        fail("cannot lock the folder {}: {}", parent.string(), std::strerror(error));
      }
    }
  }
  ~ParentLock() { ::close(fd_); }
  ParentLock(const ParentLock&) = delete;
  ParentLock& operator=(const ParentLock&) = delete;

 private:
  int fd_;
};

// True for PREFIX + mkdtemp's six letters or digits, optionally after "unpack-" (the
// names make_temp_dir gives this program's temporaries): other names are the user's.
bool is_temporary_name(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0) return false;
  std::string rest = name.substr(prefix.size());
  if (rest.rfind("unpack-", 0) == 0) rest = rest.substr(7);
  return rest.size() == 6 && std::all_of(rest.begin(), rest.end(), [](unsigned char c) { return std::isalnum(c) != 0; });
}

// `path` with every existing part's links resolved (the rest kept lexically).
fs::path resolved(const fs::path& path) {
  std::error_code ec;
  fs::path out = fs::weakly_canonical(fs::absolute(path), ec);
  return ec ? fs::absolute(path).lexically_normal() : out;
}

// The path's parts, without the empty one a trailing separator adds.
std::vector<fs::path> parts_of(const fs::path& path) {
  std::vector<fs::path> parts;
  for (const fs::path& part : path) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

// True when `inner` equals `outer` or lies inside it (both resolved).
bool within(const fs::path& inner, const fs::path& outer) {
  const std::vector<fs::path> i = parts_of(inner), o = parts_of(outer);
  return o.size() <= i.size() && std::equal(o.begin(), o.end(), i.begin());
}

}  // namespace

TempPath::~TempPath() {
  std::error_code ignored;
  if (!path_.empty()) fs::remove_all(path_, ignored);
}

fs::path make_temp_dir(const fs::path& parent, const std::string& prefix) {
  std::string name = (parent / (prefix + "XXXXXX")).string();
  if (mkdtemp(name.data()) == nullptr) {
    fail("cannot create a temporary folder in {}: {}; choose a writable output folder", parent.string(),
         std::strerror(errno));
  }
  return fs::path(name.c_str());
}

fs::path output_path(const fs::path& given, const std::string& flag) {
  if (given.empty()) usage_fail("{} is required", flag);
  fs::path path = fs::absolute(given).lexically_normal();
  // "DIR/" has an empty file name: the folder meant is DIR itself, never its parent.
  while (!path.has_filename() && path.has_relative_path()) path = path.parent_path();
  if (!path.has_relative_path()) usage_fail("{} {} is the root folder; choose a folder of its own", flag, given.string());
  return path;
}

void refuse_output_over_inputs(const fs::path& output, const std::vector<fs::path>& inputs, const std::string& flag) {
  const fs::path out = resolved(output);
  for (const fs::path& input : inputs) {
    std::error_code ec;
    if (input.empty() || !fs::exists(fs::symlink_status(input, ec))) continue;
    const fs::path in = resolved(input);
    if (within(out, in)) {
      usage_fail("{} {} would overwrite, or lie inside, the input {}: choose an output outside the inputs", flag, output.string(),
                 input.string());
    }
    // The other way round: an output folder holding an input (--out naming the data
    // folder, or "." beside it) would put the run's files among the inputs.
    if (within(in, out)) {
      usage_fail("{} {} holds the input {}: choose an output outside the inputs", flag, output.string(),
                 input.string());
    }
  }
}

void check_output_file(const fs::path& path, const std::string& flag) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail("{} {} is a folder; name the file to write", flag, path.string());
  fs::path folder = fs::absolute(path).parent_path();
  while (!fs::exists(fs::symlink_status(folder, ec)) && folder != folder.parent_path()) folder = folder.parent_path();
  if (!fs::is_directory(folder, ec)) {
    fail("{} {}: cannot create a folder there: {} is a file, not a folder", flag, path.string(), folder.string());
  }
  if (::access(folder.c_str(), W_OK) != 0) {
    fail("{} {}: the folder {} is not writable: {}", flag, path.string(), folder.string(), std::strerror(errno));
  }
}

MadeFolders::MadeFolders(const fs::path& dir, const std::string& what) : exceptions_(std::uncaught_exceptions()) {
  std::error_code ec;
  for (fs::path part = dir; !part.empty() && !fs::exists(fs::symlink_status(part, ec)); part = part.parent_path()) {
    made_.push_back(part);
    if (part == part.parent_path()) break;
  }
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) {
    fail("cannot create {} {}: {}", what, dir.string(), ec ? ec.message() : "a file of that name is in the way");
  }
  if (!made_.empty()) arm_interrupt_cleanup({}, {}, made_);
}

MadeFolders::~MadeFolders() {
  if (!made_.empty()) disarm_interrupt_cleanup();
  if (std::uncaught_exceptions() <= exceptions_) return;
  std::error_code ignored;
  for (const fs::path& dir : made_) {
    if (!fs::is_empty(dir, ignored) || !fs::remove(dir, ignored)) break;
  }
}

FolderLock::FolderLock(const fs::path& dir, const std::string& kind, std::vector<std::string> outputs)
    : dir_(dir), outputs_(std::move(outputs)), folders_(checked_run_folder(dir, kind, outputs_), "the run folder"),
      exceptions_(std::uncaught_exceptions()) {
  if (::access(dir.c_str(), W_OK) != 0) {
    fail("the run folder {} is not writable: {}", dir.string(), std::strerror(errno));  // before any work
  }
  std::error_code ec;
  const fs::path lock = dir / ".lock";
  made_lock_ = !fs::exists(fs::symlink_status(lock, ec));
  // O_NOFOLLOW: a link planted since the check above is refused, never followed.
  fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot write the lock file {}: {}", lock.string(), std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd_);
    fd_ = -1;
    made_lock_ = false;  // another run's: never taken back
    if (error == EWOULDBLOCK) {
      fail("{} is in use by another run (it holds {}); wait for it to finish or choose another --out", dir.string(),
           lock.string());
    }
    fail("cannot lock the run folder {}: {}", dir.string(), std::strerror(error));
  }
  if (made_lock_) {
    // Names its stage for the runs to come (see checked_run_folder). An empty .lock of
    // an older run stays as it is: any stage's, as before.
    if (::write(fd_, kind.data(), kind.size()) != static_cast<ssize_t>(kind.size())) {
      const int error = errno;  // a full disk: no destructor runs, so undo here
      ::unlink(lock.c_str());
      ::close(fd_);
      fd_ = -1;
      fail("cannot write the lock file {}: {}", lock.string(), std::strerror(error));
    }
  }
  std::vector<fs::path> outputs_in_dir;
  for (const std::string& name : outputs_) outputs_in_dir.push_back(dir / name);
  arm_interrupt_cleanup(made_lock_ ? lock : fs::path(), outputs_in_dir, folders_.made());
}

FolderLock::~FolderLock() {
  if (fd_ < 0) return;
  disarm_interrupt_cleanup();
  if (std::uncaught_exceptions() > exceptions_) {
    // A failed run that wrote nothing of its own leaves no trace of the lock: the
    // .lock it made goes (while still held, so no other run can take it in between);
    // then folders_ takes back the folders it made, if nothing else was written there.
    // One that wrote some (a checkpoint to resume) keeps the mark of a run folder.
    std::error_code ignored;
    if (made_lock_ && first_present(dir_, outputs_).empty()) fs::remove(dir_ / ".lock", ignored);
  }
  ::close(fd_);  // closing releases the flock
}

void require_regular_file(const fs::path& file, const std::string& what) {
  std::error_code ec;
  const fs::file_status status = fs::status(file, ec);
  if (!fs::exists(status)) fail("{} {}: no such file", what, file.string());
  if (fs::is_directory(status)) fail("{} {} is a folder, not a file", what, file.string());
  if (!fs::is_regular_file(status)) {
    fail("{} {} is not a regular file (a device, FIFO or socket, or a link to one); refusing to read it", what,
         file.string());
  }
}

void replace_atomically(const fs::path& path, const std::function<void(const fs::path& temporary)>& write) {
  std::error_code error;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), error);
  const fs::path temporary = path.string() + ".tmp";
  // Whatever has the temporary's name goes first (never followed: a planted link to a
  // file elsewhere would otherwise be written through), so write() makes a fresh file.
  fs::remove(temporary, error);
  try {
    write(temporary);
  } catch (...) {
    fs::remove(temporary, error);
    throw;
  }
  fs::rename(temporary, path, error);
  if (error) {
    const std::string reason = error.message();
    fs::remove(temporary, error);
    fail("cannot rename {} to {}: {}", temporary.string(), path.string(), reason);
  }
}

void write_file_atomic(const fs::path& path, const std::string& content) {
  replace_atomically(path, [&](const fs::path& temporary) {
    // A fresh file (replace_atomically cleared the name; O_EXCL | O_NOFOLLOW refuse one
    // planted since), never through a link.
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) fail("cannot create {}: {}", temporary.string(), std::strerror(errno));
    size_t done = 0;
    int error = 0;
    while (done < content.size()) {
      const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? errno : ENOSPC;
        break;
      }
      done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0 && error == 0) error = errno;
    if (error != 0) {
      fail("cannot write {} ({} bytes): {}{}", path.string(), content.size(), std::strerror(error),
           error == ENOSPC || error == EFBIG || error == EDQUOT ? " (the disk or quota is full)" : "");
    }
  });
}

fs::path old_folder_of(const fs::path& target) {
  return target.parent_path() / ("." + target.filename().string() + ".old");
}

std::string only_entries(const fs::path& dir, const std::vector<std::string>& names) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      return fmt::format("holds {}, which this program did not write", name);
    }
  }
  if (ec) return "cannot be listed: " + ec.message();
  return "";
}

void replace_folder_atomically(const fs::path& target, const std::function<void(const fs::path& temporary)>& fill,
                               const std::function<std::string(const fs::path& existing)>& replaceable) {
  std::error_code ec;
  if (within(resolved(fs::current_path(ec)), resolved(target))) {
    fail("{} is the current folder or holds it; refusing to replace it (name a new folder inside it)", target.string());
  }
  const fs::path parent = target.parent_path();
  fs::create_directories(parent, ec);
  if (!fs::is_directory(parent)) fail("cannot create the folder {}: {}", parent.string(), ec ? ec.message() : "a file is in the way");
  // One replacement at a time in this folder: a second run would otherwise take the
  // first's temporary for a killed run's and remove it under its feet. The target is
  // checked once the lock is held, so a run that waited sees the first one's folder.
  const ParentLock lock(parent, target);
  const fs::file_status status = fs::symlink_status(target, ec);
  const bool existed = fs::exists(status);
  if (existed) {
    if (fs::is_symlink(status)) fail("{} is a symbolic link; refusing to replace it (remove it or choose another folder)", target.string());
    if (!fs::is_directory(status)) fail("{} exists and is not a folder; refusing to replace it", target.string());
    const std::string why = replaceable(target);
    if (!why.empty()) {
      fail("{} exists and {}; refusing to replace it (remove it by hand or choose another folder)", target.string(), why);
    }
  }
  // Temporaries of an earlier run that was killed (a checkpoint's is ~1 GB) go first:
  // names of mkdtemp's pattern under this program's prefix, which the lock above keeps
  // from being a running run's.
  const std::string prefix = "." + target.filename().string() + ".tmp-";
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    if (is_temporary_name(it->path().filename().string(), prefix)) {
      std::error_code ignored;
      fs::remove_all(it->path(), ignored);
    }
  }
  // A previous folder a crash left aside goes only if it is one: a folder of that name
  // holding anything else is the user's.
  const fs::path old = old_folder_of(target);
  const fs::file_status old_status = fs::symlink_status(old, ec);
  if (fs::exists(old_status)) {
    const std::string why = fs::is_directory(old_status) ? replaceable(old) : "is not a folder";
    if (!why.empty()) fail("{} is in the way and {}: it is not removed (move it away)", old.string(), why);
    fs::remove_all(old, ec);
  }
  TempPath temporary(make_temp_dir(parent, prefix));
  const mode_t mask = ::umask(0);  // mkdtemp makes 0700; the folder gets a new folder's mode
  ::umask(mask);
  ::chmod(temporary.path().c_str(), 0777 & ~mask);
  fill(temporary.path());

  if (existed) {
    fs::rename(target, old, ec);
    if (ec) fail("cannot move {} aside to {}: {}", target.string(), old.string(), ec.message());
  }
  fs::rename(temporary.path(), target, ec);
  if (ec) {
    const std::string reason = ec.message();
    if (existed) fs::rename(old, target, ec);
    fail("cannot rename {} to {}: {}", temporary.path().string(), target.string(), reason);
  }
  fs::remove_all(old, ec);
}

std::string read_file(const fs::path& path, std::uintmax_t max_bytes) {
  require_regular_file(path, "file");
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) fail("cannot read {}: {}", path.string(), ec.message());
  if (size > max_bytes) fail("{} has {} bytes, more than the {} such a file can hold", path.string(), size, max_bytes);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read {}: {}", path.string(), std::strerror(errno));
  std::string content(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) fail("read error in {}", path.string());
  return content;
}

}  // namespace pipeline
