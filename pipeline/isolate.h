#pragma once
// Running a risky reader in a child process.
//
// HDF5 is not hardened against hostile files: a damaged global heap can make it loop
// forever (seen: H5HG_read under H5Aread on a mutated cache), and damaged metadata can
// crash it. Neither can be interrupted from inside the process. So readers of
// untrusted HDF5 files first do their work in a forked child with a deadline; only if
// the child finishes cleanly does the caller repeat it for real. A hang or crash then
// costs the child, not the user: the caller gets a clear error instead.

#include <functional>
#include <string>

namespace pipeline {

struct Isolated {
  enum Outcome { Finished, Threw, Hung, Crashed } outcome = Finished;
  std::string message;  // Threw: the exception's message; Hung, Crashed: what happened
};

// Runs work() in a forked child process and waits for it at most `seconds` (then
// kills it). The child's effects stay in the child (it ends with _exit, running no
// exit handlers); work() must not need other threads of this process. If no child can
// be made, work() runs here and its exceptions propagate.
// Thread safety: call from one thread at a time.
Isolated run_isolated(const std::function<void()>& work, double seconds);

}  // namespace pipeline
