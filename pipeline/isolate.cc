#include "pipeline/isolate.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

#include "pipeline/error.h"

namespace pipeline {
namespace {

constexpr size_t kMaxMessage = 4096;  // the child's message; far below the pipe's buffer

// The child's report: one tag byte ('E' pipeline::Error, 'X' other exception) and text.
void report(int fd, char tag, const char* text) {
  std::string message = std::string(1, tag) + text;
  message.resize(std::min(message.size(), kMaxMessage));
  size_t done = 0;
  while (done < message.size()) {
    const ssize_t n = ::write(fd, message.data() + done, message.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

[[noreturn]] void run_child(int fd, const std::function<void()>& work) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a child looping in HDF5 never outlives us
  const struct rlimit no_core = {0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);  // a crash on a hostile file leaves no core file
  int code = 0;
  try {
    work();
  } catch (const Error& e) {
    report(fd, 'E', e.what());
    code = 1;
  } catch (const std::exception& e) {
    report(fd, 'X', e.what());
    code = 1;
  } catch (...) {
    report(fd, 'X', "an exception of unknown type");
    code = 1;
  }
  ::_exit(code);
}

}  // namespace

Isolated run_isolated(const std::function<void()>& work, double seconds) {
  const char* inline_env = std::getenv("TRANSFER_NO_ISOLATE");
  if (inline_env != nullptr && std::strcmp(inline_env, "1") == 0) {
    work();
    return {};
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return {};
  const pid_t child = ::fork();
  if (child < 0) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return {};
  }
  if (child == 0) {
    ::close(pipe_fds[0]);
    run_child(pipe_fds[1], work);
  }
  ::close(pipe_fds[1]);
  // Read the report while waiting: the pipe closes when the child exits (or dies).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::string message;
  bool hung = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      hung = true;
      break;
    }
    struct pollfd p = {pipe_fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    char buffer[1024];
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
    if (n <= 0) break;  // end of file: the child is gone
    if (message.size() < kMaxMessage) message.append(buffer, static_cast<size_t>(n));
  }
  ::close(pipe_fds[0]);
  if (hung) ::kill(child, SIGKILL);
  int status = 0;
  pid_t done;
  while ((done = ::waitpid(child, &status, 0)) < 0 && errno == EINTR) {
  }
  if (hung) return {Isolated::Hung, fmt::format("did not finish within {:g} s", seconds)};
  if (done < 0) return {Isolated::Crashed, fmt::format("could not be waited for: {}", std::strerror(errno))};
  if (WIFSIGNALED(status)) return {Isolated::Crashed, fmt::format("crashed (signal {})", WTERMSIG(status))};
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  if (message.empty()) return {Isolated::Crashed, fmt::format("failed (exit code {})", WEXITSTATUS(status))};
  return {message[0] == 'E' ? Isolated::Threw : Isolated::ThrewOther, message.substr(1)};
}

int run_program(const std::filesystem::path& dir, const std::string& program, const std::vector<std::string>& args,
                const std::filesystem::path& log, double seconds) {
  std::vector<std::string> words{program};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const std::string dir_text = dir.string(), log_text = log.string();
  const pid_t pid = ::fork();
  if (pid < 0) return 127;
  if (pid == 0) {  // only async-signal-safe calls until exec
    if (::chdir(dir_text.c_str()) != 0) ::_exit(127);
    ::unlink(log_text.c_str());  // a fresh file, never through a planted link
    const int out = ::open(log_text.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    if (in >= 0) ::dup2(in, 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) return 127;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return kTimedOut;
    }
    ::usleep(20000);  // a plot takes about a second: 20 ms of polling costs nothing
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace pipeline
