#pragma once
// File and folder helpers shared by every stage's readers and writers. They carry the
// pipeline's storage guarantees in one place:
//   - an output is written under a temporary name and renamed into place, so a reader
//     sees the old file (or folder) or the whole new one, never a half;
//   - a failed write (full disk, quota, EFBIG) is a pipeline::Error naming the file,
//     and its temporary is removed;
//   - only regular files are read (a link to /dev/zero, a FIFO or a folder is refused
//     before a byte is read), and reads are bounded by what the caller expects;
//   - an output that is, or lies inside, one of the run's inputs is refused before
//     any work starts.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace pipeline {

// `given` (a --out flag's value) as an absolute, normalized path without a trailing
// separator: "runs/x/" and "runs/x/." both become "<cwd>/runs/x", "." becomes the
// current folder itself. Throws pipeline::UsageError naming `flag` when `given` is
// empty or names the root folder.
std::filesystem::path output_path(const std::filesystem::path& given, const std::string& flag);

// Throws pipeline::UsageError when `output` (a file or folder the stage writes) is one
// of `inputs`, lies inside one of them, or holds one, compared after resolving links so that two
// spellings of one file are caught: e.g. `--out` naming the batch file, the weights or
// the cache the stage reads. Inputs that do not exist are ignored. `flag` names the
// output's flag in the message.
void refuse_output_over_inputs(const std::filesystem::path& output, const std::vector<std::filesystem::path>& inputs,
                               const std::string& flag);

// Checks, before any work, that a stage can later write the file `path` (named by
// `flag`), touching nothing: throws pipeline::Error naming it when `path` is a folder,
// or its nearest existing folder is a file or not writable. The missing folders are
// made only when the file is written, so a run that fails first leaves none behind.
void check_output_file(const std::filesystem::path& path, const std::string& flag);

// Makes the folder `dir` and its missing parents (like create_directories). Throws
// pipeline::Error naming `dir` (called `what`, e.g. "the run folder") when it cannot.
// Destroyed while an exception unwinds (a failed stage), or ended by SIGINT, SIGTERM or
// SIGHUP while it lives (interrupt_cleanup.h), it removes again, innermost first, each
// folder it made that is still empty: a failed run leaves no empty folder.
class MadeFolders {
 public:
  MadeFolders(const std::filesystem::path& dir, const std::string& what);
  ~MadeFolders();
  MadeFolders(const MadeFolders&) = delete;
  MadeFolders& operator=(const MadeFolders&) = delete;
  const std::vector<std::filesystem::path>& made() const { return made_; }  // innermost first

 private:
  std::vector<std::filesystem::path> made_;  // innermost first
  int exceptions_ = 0;                       // std::uncaught_exceptions() when made
};

// An exclusive lock on a run folder (flock on `dir`/.lock), taken before a stage
// writes into it, so two runs on one --out cannot corrupt each other's files. Creates
// `dir` (so an unwritable --out fails before any work). The .lock also marks the folder
// as a run folder of the stage `kind` (e.g. "transfer-head run", its only content):
//   - an existing `dir` without one that holds any of `outputs` (the names the stage
//     writes, replaces or removes there, e.g. "metrics.json", or those names plus
//     ".tmp", its temporaries) is the user's, and is refused before anything in it is
//     touched;
//   - one whose .lock names another kind is another stage's run, and is refused too
//     (an empty .lock, from before locks named their stage, is taken as this kind's);
//   - a .lock that is not a regular file (a link, a FIFO, a folder) is refused.
// Throws pipeline::Error naming the folder when it cannot be made or written, is
// refused as above, or another process holds the lock. Released (the .lock file stays)
// on destruction or when the process dies. Released while an exception unwinds (a
// failed run), or ended by SIGINT, SIGTERM or SIGHUP (Ctrl-C), it takes back what it
// made unless the run wrote one of `outputs`: the .lock file if it created it, and
// `dir` and its parents if it created them and they are empty again.
class FolderLock {
 public:
  FolderLock(const std::filesystem::path& dir, const std::string& kind, std::vector<std::string> outputs);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
  std::filesystem::path dir_;
  std::vector<std::string> outputs_;
  MadeFolders folders_;
  bool made_lock_ = false;
  int exceptions_ = 0;  // std::uncaught_exceptions() when taken
};

// Throws pipeline::Error naming `file` (called `what`, e.g. "weights file") unless it
// is an existing regular file, links followed: a folder, device, FIFO or socket is
// refused before anything reads it (reading /dev/zero would never end).
void require_regular_file(const std::filesystem::path& file, const std::string& what);

// Writes `content` to `path` through a temporary sibling and a rename, so readers see
// the old file or the whole new one, never a half. Creates parent folders.
// Throws pipeline::Error naming the path on failure (the temporary is removed).
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

// Lets write(temporary) produce the file at a temporary sibling of `path`, then renames
// it into place; on any failure the temporary is removed and the error rethrown (a
// rename failure as pipeline::Error naming both paths). Creates parent folders.
void replace_atomically(const std::filesystem::path& path,
                        const std::function<void(const std::filesystem::path& temporary)>& write);

// Makes the folder `target` the one fill(temporary) builds in a fresh temporary
// sibling (".NAME.tmp-XXXXXX"; those left by a killed run are removed first), then
// swaps it in by renames: an existing `target` is
// first renamed to ".NAME.old" and removed only once the new one is in place (a crash
// between the two renames leaves ".NAME.old" complete; see old_folder_of()).
// Before any work, an existing `target` is checked: it must be a real folder (not a
// file, not a symbolic link) and replaceable(target) must return "" -- otherwise its
// text says why not, and the call throws pipeline::Error naming the folder, touching
// nothing. On any failure the temporary folder is removed and `target` is left as it
// was. `target` must be absolute and normalized (see output_path()).
void replace_folder_atomically(const std::filesystem::path& target,
                               const std::function<void(const std::filesystem::path& temporary)>& fill,
                               const std::function<std::string(const std::filesystem::path& existing)>& replaceable);

// Where replace_folder_atomically() keeps the previous `target` during the swap.
std::filesystem::path old_folder_of(const std::filesystem::path& target);

// For replaceable(): "" when every entry of `dir` is one of `names` (an empty folder
// included), else a sentence naming the first foreign entry. Never follows links.
std::string only_entries(const std::filesystem::path& dir, const std::vector<std::string>& names);

// The whole file as a string. Throws pipeline::Error naming the path when it is not a
// regular file, cannot be read, or is larger than `max_bytes`.
std::string read_file(const std::filesystem::path& path, std::uintmax_t max_bytes = 64u << 20);

// A temporary file or folder, removed (recursively) when this goes out of scope.
class TempPath {
 public:
  explicit TempPath(std::filesystem::path path) : path_(std::move(path)) {}
  TempPath(const TempPath&) = delete;
  TempPath& operator=(const TempPath&) = delete;
  ~TempPath();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A new, empty folder `parent`/`prefix`XXXXXX (mkdtemp). Throws pipeline::Error naming
// `parent` when it cannot be made.
std::filesystem::path make_temp_dir(const std::filesystem::path& parent, const std::string& prefix);

}  // namespace pipeline
