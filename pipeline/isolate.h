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
  enum Outcome {
    Finished,    // work() returned (or no child could be made: the caller does the work unprotected)
    Threw,       // work() threw pipeline::Error; message is its text
    ThrewOther,  // work() threw another exception; message is its what()
    Hung,        // the deadline passed and the child was killed
    Crashed,     // the child died of a signal (message says which)
  } outcome = Finished;
  std::string message;
};

// Runs work() in a forked child process and waits for it at most `seconds` (then
// kills it). The child's effects stay in the child (it ends with _exit, running no
// exit handlers, and dies with this process); work() must not need other threads of
// this process. With TRANSFER_NO_ISOLATE=1 in the environment, work() runs here
// instead and its exceptions propagate (the fuzzer uses this to put the sanitizers on
// the reader itself). Thread safety: call from one thread at a time.
Isolated run_isolated(const std::function<void()>& work, double seconds);

}  // namespace pipeline
