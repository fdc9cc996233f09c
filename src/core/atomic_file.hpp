// Write a file so that readers never see it half-written: bytes go to an unnamed temporary file in
// the same directory (O_TMPFILE; a named one where the file system lacks it), which becomes the
// target only on commit(). Without commit() (an error, an exception, a signal, even SIGKILL for
// the unnamed kind) nothing is left behind and the target is as it was. With replace = false,
// commit() fails rather than replace a target that exists by then.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace sf {

class AtomicFile {
 public:
  // Throws Error(Io) when the temporary cannot be made.
  explicit AtomicFile(std::string target_path, bool replace = true);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);  // throws Error(Io) on short write (disk full)
  void write_zeros(size_t bytes);
  uint64_t tell() const { return written_; }
  void commit();  // fsync, close, give it the target's name

 private:
  void commit_unnamed();
  void refuse_existing() const;

  std::string target_, temp_;  // temp_ empty: the unnamed kind
  bool replace_ = true;
  std::FILE* f_ = nullptr;
  uint64_t written_ = 0;
  bool committed_ = false;
};

}  // namespace sf
