// Temporary files and directories that must not outlive an interrupted command. A writer registers
// the temporary path it creates and forgets it once it has been renamed into place; on SIGINT,
// SIGTERM or SIGHUP every registered path is removed before the process dies of that signal.
//
// The handler only passes the signal to a cleanup thread (through a pipe), which may then use
// ordinary C++ (std::filesystem::remove_all) before it ends the process with that same signal.
// A signal the process inherited as ignored (nohup, a background job) stays ignored. Call
// install_signal_cleanup() once, early in main.
#pragma once
#include <string>

namespace sf {

void install_signal_cleanup();

// Removed (recursively for a directory) if a signal arrives before unregister_temp_path.
void register_temp_path(const std::string& path);
void unregister_temp_path(const std::string& path);

// The name stem of this process's temporaries for `target`: "<dir>/<prefix><name>.tmp.<pid>."; a
// temporary is the stem plus a unique suffix.
std::string temp_stem(const std::string& target, const char* prefix);
// Removes the temporaries for `target` left by processes that no longer exist (killed by SIGKILL,
// which no process can clean up after), so that they do not pile up. Never touches a live one.
void remove_stale_temps(const std::string& target, const char* prefix);

// RAII for a temporary directory that becomes `target` on commit() (the whole directory at once):
// the directory is created next to the target (hidden: ".<name>.tmp.<pid>.XXXXXX"), registered,
// and removed with its contents unless committed. commit() replaces an existing target only when
// `replace` was given.
class AtomicDir {
 public:
  AtomicDir(std::string target, bool replace);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const std::string& path() const { return temp_; }  // write the directory's files here
  void commit();

 private:
  std::string target_, temp_;
  bool replace_ = false, committed_ = false;
};

}  // namespace sf
