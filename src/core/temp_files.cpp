#include "core/temp_files.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.hpp"

namespace sf {

namespace fs = std::filesystem;

namespace {

std::timed_mutex& registry_mutex() {
  static std::timed_mutex m;
  return m;
}
std::vector<std::string>& registry() {
  static std::vector<std::string> paths;
  return paths;
}

void remove_registered() {
  // The thread that took the signal may be parked in the handler while it holds the lock; do not
  // wait for it forever (the process is about to end either way).
  std::unique_lock lock(registry_mutex(), std::defer_lock);
  (void)lock.try_lock_for(std::chrono::milliseconds(500));
  for (const auto& p : registry()) {
    // The other threads run on while this one cleans up: a file they add to a temporary directory
    // after remove_all listed it makes the final rmdir fail, so go again until it is gone.
    for (int tries = 0; tries < 100; ++tries) {
      std::error_code ec;
      fs::remove_all(p, ec);
      if (!fs::exists(fs::symlink_status(p, ec))) break;
    }
  }
  registry().clear();
}

int g_signal_pipe[2] = {-1, -1};

// Async-signal-safe: hand the signal to the cleanup thread and park this thread; the cleanup thread
// ends the process. (Blocking the signals and sigwait-ing is not enough: threads that libraries
// start before main, OpenBLAS's among them, would still take them.)
void on_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  ssize_t ignored = ::write(g_signal_pipe[1], &b, 1);
  (void)ignored;
  for (;;) ::pause();
}

}  // namespace

void register_temp_path(const std::string& path) {
  std::lock_guard lock(registry_mutex());
  registry().push_back(path);
}

void unregister_temp_path(const std::string& path) {
  std::lock_guard lock(registry_mutex());
  auto& r = registry();
  r.erase(std::remove(r.begin(), r.end(), path), r.end());
}

void install_signal_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) return;  // keep the default behaviour
    // The cleanup thread must never take these signals itself (it would park in the handler and
    // nobody would read the pipe): it starts with them blocked, inherited from this thread.
    sigset_t set, previous;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
    pthread_sigmask(SIG_BLOCK, &set, &previous);
    std::thread([set] {
      unsigned char b = 0;
      while (::read(g_signal_pipe[0], &b, 1) != 1) {
        if (errno != EINTR) return;
      }
      const int sig = b;
      remove_registered();
      // Die of the same signal, so that a shell or a parent sees what happened (128 + sig).
      ::signal(sig, SIG_DFL);
      pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
      ::raise(sig);
      ::_exit(128 + sig);  // not reached: the default action of these signals ends the process
    }).detach();
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN)
        continue;  // nohup, background jobs
      struct sigaction sa {};
      sa.sa_handler = on_signal;
      sigfillset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

std::string temp_stem(const std::string& target, const char* prefix) {
  const fs::path t = fs::absolute(target);
  return (t.parent_path() / fmt::format("{}{}.tmp.{}.", prefix, t.filename().string(), ::getpid()))
      .string();
}

void remove_stale_temps(const std::string& target, const char* prefix) {
  const fs::path t = fs::absolute(target);
  const std::string lead = fmt::format("{}{}.tmp.", prefix, t.filename().string());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(t.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(lead, 0) != 0) continue;
    // "<lead><pid>.<suffix>": only a pid that no longer exists is stale.
    const std::string rest = name.substr(lead.size());
    const size_t dot = rest.find('.');
    if (dot == std::string::npos || dot == 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(rest.c_str(), &end, 10);
    if (end != rest.c_str() + dot || pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code rec;
    fs::remove_all(e.path(), rec);
  }
}

unsigned usual_permissions(unsigned base) {
  const mode_t mask = ::umask(0);  // umask can only be read by setting it
  ::umask(mask);
  return base & ~unsigned(mask);
}

ScratchDir::ScratchDir(const std::string& target) {
  remove_stale_temps(target, ".");
  std::string pattern = temp_stem(target, ".") + "XXXXXX";
  if (!::mkdtemp(pattern.data()))
    fail(Status::Io,
         "cannot create a temporary directory next to '{}': {}. Check that the parent "
         "directory exists and is writable.",
         target, std::strerror(errno));
  path_ = pattern;
  register_temp_path(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);  // nothing there once AtomicDir renamed it onto its target
  unregister_temp_path(path_);
}

AtomicDir::AtomicDir(std::string target, bool replace)
    : target_(std::move(target)), replace_(replace), scratch_(target_) {}

void AtomicDir::commit() {
  std::error_code ec;
  const bool exists = fs::exists(fs::symlink_status(target_, ec));
  if (exists && !replace_)
    fail(Status::InvalidArgument,
         "'{}' appeared while it was being written; nothing was replaced "
         "(pass --force to replace it)",
         target_);
  const std::string& temp = scratch_.path();
  ::chmod(temp.c_str(), usual_permissions(0777));
  std::string old;
  if (exists) {
    // Move the old directory aside first: rename() cannot replace a non-empty directory.
    old = temp + ".old";
    register_temp_path(old);
    if (std::rename(target_.c_str(), old.c_str()) != 0) {
      unregister_temp_path(old);
      fail(Status::Io, "cannot move '{}' aside to replace it: {}", target_, std::strerror(errno));
    }
  }
  if (std::rename(temp.c_str(), target_.c_str()) != 0) {
    const int e = errno;
    if (!old.empty()) std::rename(old.c_str(), target_.c_str());  // put the old one back
    fail(Status::Io, "cannot move '{}' onto '{}': {}", temp, target_, std::strerror(e));
  }
  if (!old.empty()) {
    fs::remove_all(old, ec);
    unregister_temp_path(old);
  }
}

}  // namespace sf
