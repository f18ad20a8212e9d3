#include "pipeline/isolate.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <thread>

#include "pipeline/error.h"

namespace pipeline {
namespace {

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

std::string read_all(int fd) {
  std::string text;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) return text;
    text.append(buffer, static_cast<size_t>(n));
  }
}

}  // namespace

Isolated run_isolated(const std::function<void()>& work, double seconds) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    work();
    return {};
  }
  const pid_t child = ::fork();
  if (child < 0) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    work();
    return {};
  }
  if (child == 0) {
    ::close(pipe_fds[0]);
    int code = 0;
    try {
      work();
    } catch (const std::exception& e) {
      write_all(pipe_fds[1], e.what());  // bounded by the message; the pipe holds 64 KiB
      code = 1;
    } catch (...) {
      write_all(pipe_fds[1], "an unexpected error");
      code = 1;
    }
    ::_exit(code);
  }
  ::close(pipe_fds[1]);
  // Poll: a child that finishes at once (the usual case) costs a millisecond.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  pid_t done = 0;
  auto pause = std::chrono::microseconds(200);
  while ((done = ::waitpid(child, &status, WNOHANG)) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      ::close(pipe_fds[0]);
      return {Isolated::Hung, fmt::format("did not finish within {:g} s", seconds)};
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
  }
  const std::string message = read_all(pipe_fds[0]);
  ::close(pipe_fds[0]);
  if (done < 0) return {};  // lost track of the child: nothing was shown wrong
  if (WIFSIGNALED(status)) return {Isolated::Crashed, fmt::format("crashed (signal {})", WTERMSIG(status))};
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  return {Isolated::Threw, message.empty() ? fmt::format("failed (exit code {})", WEXITSTATUS(status)) : message};
}

}  // namespace pipeline
