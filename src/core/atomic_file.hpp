// Write a file so that readers never see it half-written: bytes go to a temporary file in the same
// directory, which replaces the target by rename() only on commit(). Without commit() (an error, an
// exception) the temporary is removed and the target is left as it was.
#pragma once
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <string>

namespace sf {

class AtomicFile {
 public:
  explicit AtomicFile(std::string target_path);  // throws Error(Io) when the temp cannot be made
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);      // throws Error(Io) on short write (disk full)
  void write_zeros(size_t bytes);
  uint64_t tell() const { return written_; }
  void commit();                                   // fsync, close, rename onto the target

 private:
  std::string target_, temp_;
  std::FILE* f_ = nullptr;
  uint64_t written_ = 0;
  bool committed_ = false;
};

}  // namespace sf
