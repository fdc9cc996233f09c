#include "core/input_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.hpp"

namespace sf {

const char* file_type_name(unsigned mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

namespace {

[[noreturn]] void not_regular(const std::string& path, std::string_view what, unsigned mode) {
  fail(Status::Io, "{} '{}' is {}; expected a regular file{}", what, path, file_type_name(mode),
       S_ISDIR(mode) ? "" : ". Pass the file itself, not a pipe, socket or device");
}

[[noreturn]] void cannot_open(const std::string& path, std::string_view what, int err) {
  struct stat l {};
  // stat() follows links, so a dangling one reports ENOENT: say that the link is what is broken.
  const bool dangling = err == ENOENT && ::lstat(path.c_str(), &l) == 0 && S_ISLNK(l.st_mode);
  fail(Status::Io, "cannot open {} '{}': {}{}. Check the path and its permissions.", what, path,
       std::strerror(err), dangling ? " (it is a symbolic link to a missing file)" : "");
}

}  // namespace

void require_regular_file(const std::string& path, std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) cannot_open(path, what, errno);
  if (!S_ISREG(st.st_mode)) not_regular(path, what, st.st_mode);
}

InputFile::InputFile(const std::string& path, std::string_view what) {
  require_regular_file(path, what);
  // O_NONBLOCK: should the path have become a FIFO since the stat, open() returns at once
  // instead of waiting for a writer; on a regular file it changes nothing.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) cannot_open(path, what, errno);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    cannot_open(path, what, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    not_regular(path, what, st.st_mode);
  }
  size_ = uint64_t(st.st_size);
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::string read_text_file(const std::string& path, std::string_view what) {
  const InputFile f(path, what);
  std::string out(size_t(f.size()), '\0');
  size_t got = 0;
  while (true) {
    if (got == out.size()) out.resize(out.size() + 4096);  // the file grew since fstat
    const ssize_t n = ::read(f.fd(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      fail(Status::Io, "reading {} '{}' failed after {} bytes: {}", what, path, got,
           std::strerror(errno));
    if (n == 0) break;
    got += size_t(n);
  }
  out.resize(got);
  return out;
}

}  // namespace sf
