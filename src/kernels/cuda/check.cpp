#include "kernels/cuda/check.hpp"

#include <string_view>

#include "core/error.hpp"

namespace sf::cuda::detail {

void throw_cuda(const char* lib, const char* what, const char* stmt, const char* file, int line) {
  Status st = Status::Cuda;
  if (what && std::string_view(what).find("out of memory") != std::string_view::npos) st = Status::OutOfMemory;
  fail(st, "{} call failed: {}\n  statement: {}\n  at {}:{}", lib, what ? what : "?", stmt, file, line);
}

void throw_status(int status, const std::string& message) { throw Error(Status(status), message); }

}  // namespace sf::cuda::detail

namespace sf::cuda {

int sm_count() {
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      cudaGetLastError();
      return 108;
    }
    return n > 0 ? n : 108;
  }();
  return sms;
}

}  // namespace sf::cuda
