// Opening a file the user named (a model, a shard, config.json, a tokenizer or a text file). It
// must be a regular file once symlinks are resolved: reading a FIFO blocks until some writer
// appears, a directory or a device reads as garbage or forever, so each is refused at once with
// its path and what it is. Every loader opens its inputs through these functions.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace sf {

// Throws Error(Io) unless `path` (symlinks followed) is a regular file: the message names `what`
// ("config.json", "--text file"), the path and, when it exists, what it is instead ("is a FIFO;
// expected a regular file").
void require_regular_file(const std::string& path, std::string_view what);

// An open read-only descriptor on a regular file; closes it on destruction.
class InputFile {
 public:
  // require_regular_file, then open(O_NONBLOCK) and fstat again, so that a path swapped for a FIFO
  // in between still cannot block. Throws Error(Io) naming `what` and the path.
  InputFile(const std::string& path, std::string_view what);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
};

// The whole file, through InputFile. Throws Error(Io) naming `what` and the path.
std::string read_text_file(const std::string& path, std::string_view what);

// "a FIFO", "a directory", "a socket", ... for a st_mode; "a regular file" for one.
const char* file_type_name(unsigned mode);

}  // namespace sf
