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

// `base` (0666 for a file, 0777 for a directory) less this process's umask: the permissions a
// plain open() or mkdir() would have given what mkstemp/mkdtemp created as 0600/0700.
unsigned usual_permissions(unsigned base);

// A scratch directory beside `target` (hidden: ".<name>.tmp.<pid>.XXXXXX", so on the target's file
// system), registered for signal cleanup and removed with its contents when destroyed. Stale ones
// of dead writers of the same target are removed first.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& target);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A directory that becomes `target` on commit(), whole: files are written into a ScratchDir,
// which commit() renames onto the target (replacing an existing one only when `replace` was
// given). Without commit() it is removed.
class AtomicDir {
 public:
  AtomicDir(std::string target, bool replace);
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const std::string& path() const { return scratch_.path(); }  // write the directory's files here
  void commit();

 private:
  std::string target_;
  bool replace_ = false;
  ScratchDir scratch_;
};

}  // namespace sf
