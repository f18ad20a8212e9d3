#pragma once
// Child processes: a risky reader run in one (run_isolated), and another program run
// as one (run_program: gnuplot for the plots, a stage for a benchmark).
//
// HDF5 is not hardened against hostile files: a damaged global heap can make it loop
// forever (seen: H5HG_read under H5Aread on a mutated cache), and damaged metadata can
// crash it. Neither can be interrupted from inside the process. So readers of
// untrusted HDF5 files first do their work in a forked child with a deadline; only if
// the child finishes cleanly does the caller repeat it for real. A hang or crash then
// costs the child, not the user: the caller gets a clear error instead.

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

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

// Runs the program at path `program` (no PATH search) with `args` inside `dir`, stdin
// from /dev/null and stdout+stderr into `log` (a relative `program` or `log` is taken
// inside `dir`), and waits for it, at most `seconds`: then it is killed (SIGKILL), so
// a program that hangs cannot hang the stage. No shell: arguments are passed as they
// are. Returns its exit status: 127 when it could not be started, -1 when a signal
// ended it, kTimedOut when it was killed at the deadline.
inline constexpr int kTimedOut = -2;
int run_program(const std::filesystem::path& dir, const std::string& program, const std::vector<std::string>& args,
                const std::filesystem::path& log, double seconds);

}  // namespace pipeline
