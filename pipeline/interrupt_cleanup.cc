#include "pipeline/interrupt_cleanup.h"

#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace pipeline {
namespace {

constexpr int kMaxOutputs = 16, kMaxFolders = 16;
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};

// Fixed buffers, filled while disarmed: the handler may neither allocate nor lock.
struct Cleanup {
  char lock[PATH_MAX];
  char outputs[kMaxOutputs][PATH_MAX];
  char folders[kMaxFolders][PATH_MAX];
  int n_outputs, n_folders;
};
Cleanup g_cleanup;
volatile sig_atomic_t g_armed = 0;
bool g_installed = false;

void copy_path(char* to, const std::filesystem::path& from) {
  const std::string text = from.string();
  if (text.size() >= PATH_MAX) {
    to[0] = '\0';  // skipped: a path the system could not take anyway
    return;
  }
  std::memcpy(to, text.c_str(), text.size() + 1);
}

extern "C" void on_signal(int sig) {
  if (g_armed) {
    g_armed = 0;
    struct stat info;
    bool wrote = false;
    for (int i = 0; i < g_cleanup.n_outputs && !wrote; ++i) {
      wrote = g_cleanup.outputs[i][0] != '\0' && ::lstat(g_cleanup.outputs[i], &info) == 0;
    }
    if (!wrote && g_cleanup.lock[0] != '\0') ::unlink(g_cleanup.lock);
    for (int i = 0; i < g_cleanup.n_folders; ++i) {
      if (g_cleanup.folders[i][0] == '\0' || ::rmdir(g_cleanup.folders[i]) != 0) break;  // not empty: stop
    }
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // ends the process as the signal would have
}

void install_once() {
  if (g_installed) return;
  g_installed = true;
  for (const int sig : kSignals) {
    struct sigaction current {};
    if (::sigaction(sig, nullptr, &current) != 0 || current.sa_handler != SIG_DFL) continue;
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    for (const int other : kSignals) sigaddset(&action.sa_mask, other);  // one cleanup at a time
    ::sigaction(sig, &action, nullptr);
  }
}

}  // namespace

void arm_interrupt_cleanup(const std::filesystem::path& lock, const std::vector<std::filesystem::path>& outputs,
                           const std::vector<std::filesystem::path>& folders) {
  g_armed = 0;
  copy_path(g_cleanup.lock, lock);
  g_cleanup.n_outputs = 0;
  for (const auto& output : outputs) {
    if (g_cleanup.n_outputs < kMaxOutputs) copy_path(g_cleanup.outputs[g_cleanup.n_outputs++], output);
  }
  g_cleanup.n_folders = 0;
  for (const auto& folder : folders) {
    if (g_cleanup.n_folders < kMaxFolders) copy_path(g_cleanup.folders[g_cleanup.n_folders++], folder);
  }
  install_once();
  g_armed = 1;
}

void disarm_interrupt_cleanup() { g_armed = 0; }

}  // namespace pipeline
