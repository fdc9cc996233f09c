#include "core/atomic_file.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.hpp"

namespace sf {

AtomicFile::AtomicFile(std::string target_path) : target_(std::move(target_path)) {
  // mkstemp in the target's directory so that rename() stays on one file system.
  std::string pattern = target_ + ".tmp.XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  const int fd = ::mkstemp(buf.data());
  if (fd < 0)
    fail(Status::Io, "cannot create a temporary file next to '{}': {}. Check that the directory "
         "exists and is writable.", target_, std::strerror(errno));
  temp_ = buf.data();
  f_ = ::fdopen(fd, "wb");
  if (!f_) {
    ::close(fd);
    std::remove(temp_.c_str());
    fail(Status::Io, "cannot open temporary file '{}': {}", temp_, std::strerror(errno));
  }
}

AtomicFile::~AtomicFile() {
  if (f_) std::fclose(f_);
  if (!committed_ && !temp_.empty()) std::remove(temp_.c_str());
}

void AtomicFile::write(const void* data, size_t bytes) {
  if (bytes && std::fwrite(data, 1, bytes, f_) != bytes)
    fail(Status::Io, "writing '{}' failed after {} bytes: {}. Is the disk full?", target_,
         written_, std::strerror(errno));
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

void AtomicFile::commit() {
  if (std::fflush(f_) != 0 || ::fsync(::fileno(f_)) != 0)
    fail(Status::Io, "flushing '{}' failed: {}. Is the disk full?", target_, std::strerror(errno));
  // mkstemp creates 0600; give the result the usual permissions (0666 minus umask).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(::fileno(f_), 0666 & ~mask);
  std::fclose(f_);
  f_ = nullptr;
  if (std::rename(temp_.c_str(), target_.c_str()) != 0)
    fail(Status::Io, "cannot move '{}' onto '{}': {}", temp_, target_, std::strerror(errno));
  committed_ = true;
}

}  // namespace sf
