// One error type for the engine. Every failure a user can cause carries a status (mirrored by the
// C ABI's sf_status) and a message that says what was expected, what was found and what to do.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace sf {

// Keep in sync with sf_status in include/sparseflow/sparseflow.h (values are ABI).
enum class Status : int {
  Ok = 0,
  InvalidArgument = 1,   // a caller passed something malformed (shape, dtype, null pointer)
  UnsupportedShape = 2,  // well-formed, but the format or kernel cannot take it
  Io = 3,                // a file could not be opened, read or written
  Format = 4,            // a file's contents are damaged or lie (offsets, checksums)
  OutOfMemory = 5,
  Cuda = 6,              // a CUDA / cuBLAS / cuSPARSELt call failed
  NoDevice = 7,          // a GPU was asked for and none is usable
  NotFound = 8,          // a named tensor, key or file is missing
  Internal = 9,
};

const char* status_name(Status s);

class Error : public std::runtime_error {
 public:
  Error(Status status, std::string message) : std::runtime_error(std::move(message)), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

template <typename... Args>
[[noreturn]] void fail(Status status, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(status, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace sf
