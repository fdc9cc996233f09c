#include "core/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "core/error.hpp"
#include "core/temp_files.hpp"

namespace sf {

namespace fs = std::filesystem;

namespace {

std::string parent_dir(const std::string& target) {
  fs::path p = fs::absolute(target).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

// A name beside the target that nothing else uses: "<target>.tmp.<pid>.<random>".
std::string fresh_name(const std::string& target) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:016x}", temp_stem(target, ""), rng());
}

void fsync_dir(const std::string& dir) {
  const int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d >= 0) {
    ::fsync(d);  // the rename itself durable; best effort
    ::close(d);
  }
}

}  // namespace

AtomicFile::AtomicFile(std::string target_path, bool replace)
    : target_(std::move(target_path)), replace_(replace) {
  // An unnamed file in the target's directory (O_TMPFILE): if the process dies, even by SIGKILL,
  // the kernel frees it and nothing is left behind. Same directory, so linking it stays on one file
  // system. File systems without O_TMPFILE get a named temporary, removed on every error and
  // (with install_signal_cleanup) on SIGINT/SIGTERM/SIGHUP.
  const std::string dir = parent_dir(target_);
  remove_stale_temps(target_, "");
  int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
  if (fd < 0) {
    std::string pattern = temp_stem(target_, "") + "XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    fd = ::mkstemp(buf.data());
    if (fd < 0)
      fail(Status::Io,
           "cannot create a temporary file next to '{}': {}. Check that the directory "
           "exists and is writable.",
           target_, std::strerror(errno));
    temp_ = buf.data();
    register_temp_path(temp_);
  }
  f_ = ::fdopen(fd, "wb");
  if (!f_) {
    const int e = errno;
    ::close(fd);
    if (!temp_.empty()) {
      std::remove(temp_.c_str());
      unregister_temp_path(temp_);
    }
    fail(Status::Io, "cannot open a temporary file for '{}': {}", target_, std::strerror(e));
  }
}

AtomicFile::~AtomicFile() {
  if (f_) std::fclose(f_);
  if (!committed_ && !temp_.empty()) {
    std::remove(temp_.c_str());
    unregister_temp_path(temp_);
  }
}

void AtomicFile::write(const void* data, size_t bytes) {
  if (bytes && std::fwrite(data, 1, bytes, f_) != bytes)
    fail(Status::Io, "writing '{}' failed after {} bytes: {}. Is the disk full?", target_, written_,
         std::strerror(errno));
  written_ += bytes;
}

void AtomicFile::write_zeros(size_t bytes) {
  static const char zeros[4096] = {};
  while (bytes) {
    const size_t n = bytes < sizeof zeros ? bytes : sizeof zeros;
    write(zeros, n);
    bytes -= n;
  }
}

void AtomicFile::refuse_existing() const {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(target_, ec)))
    fail(Status::InvalidArgument,
         "'{}' appeared while it was being written; nothing was replaced "
         "(pass --force to replace it)",
         target_);
}

void AtomicFile::commit() {
  if (std::fflush(f_) != 0 || ::fsync(::fileno(f_)) != 0)
    fail(Status::Io, "flushing '{}' failed: {}. Is the disk full?", target_, std::strerror(errno));
  if (temp_.empty()) {
    commit_unnamed();
  } else {
    ::fchmod(::fileno(f_), usual_permissions(0666));  // mkstemp creates 0600
    std::fclose(f_);
    f_ = nullptr;
    if (!replace_) refuse_existing();
    if (std::rename(temp_.c_str(), target_.c_str()) != 0)
      fail(Status::Io, "cannot move '{}' onto '{}': {}", temp_, target_, std::strerror(errno));
    unregister_temp_path(temp_);
  }
  committed_ = true;
  fsync_dir(parent_dir(target_));
}

void AtomicFile::commit_unnamed() {
  const std::string proc = fmt::format("/proc/self/fd/{}", ::fileno(f_));
  // A new name is linked directly: it fails, rather than replaces, if the target exists.
  if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, target_.c_str(), AT_SYMLINK_FOLLOW) == 0) {
    std::fclose(f_);
    f_ = nullptr;
    return;
  }
  if (errno != EEXIST)
    fail(Status::Io, "cannot give the new '{}' its name (linkat: {}); nothing was replaced",
         target_, std::strerror(errno));
  if (!replace_) refuse_existing();
  // Replacing: link under a fresh name, then rename over the target (rename replaces atomically).
  // Only between these two calls does a named temporary exist.
  std::string temp;
  for (int tries = 0;; ++tries) {
    temp = fresh_name(target_);
    register_temp_path(temp);
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, temp.c_str(), AT_SYMLINK_FOLLOW) == 0) break;
    const int e = errno;
    unregister_temp_path(temp);
    if (e != EEXIST || tries > 16)
      fail(Status::Io, "cannot link the new '{}' next to it: {}; nothing was replaced", target_,
           std::strerror(e));
  }
  std::fclose(f_);
  f_ = nullptr;
  if (std::rename(temp.c_str(), target_.c_str()) != 0) {
    const int e = errno;
    std::remove(temp.c_str());
    unregister_temp_path(temp);
    fail(Status::Io, "cannot move the new file onto '{}': {}", target_, std::strerror(e));
  }
  unregister_temp_path(temp);
}

}  // namespace sf
