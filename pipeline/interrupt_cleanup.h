#pragma once
// What a stage made before any of its outputs, taken back when the process is ended by
// SIGINT, SIGTERM or SIGHUP (Ctrl-C, kill, a closed terminal), which unwind no stack:
// a run folder's new .lock (unless one of the run's outputs is already there, e.g. a
// checkpoint to resume) and the folders the stage created, if they are empty. The
// signal then ends the process as it would have (same status), so callers and shells
// see no difference. A signal whose handling is not the default (a parent set it to be
// ignored, or a caller installed its own) is left alone.
//
// One cleanup is armed at a time per process (a stage makes one output folder); the
// handler does only async-signal-safe work (lstat, unlink, rmdir) on paths prepared
// when armed.

#include <filesystem>
#include <vector>

namespace pipeline {

// Arms the cleanup: on one of those signals, `lock` (if not empty) is unlinked unless
// one of `outputs` exists, then `folders` (innermost first) are removed while empty.
// Replaces whatever was armed. Paths longer than the system's limit are skipped.
void arm_interrupt_cleanup(const std::filesystem::path& lock, const std::vector<std::filesystem::path>& outputs,
                           const std::vector<std::filesystem::path>& folders);

// Disarms it: the signals then end the process with nothing removed.
void disarm_interrupt_cleanup();

}  // namespace pipeline
