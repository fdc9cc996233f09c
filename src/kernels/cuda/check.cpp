#include "kernels/cuda/check.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
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

namespace {
std::atomic<int> g_persistent_override{-1};
}  // namespace

int persistent_kernels() {
  if (const int o = g_persistent_override.load(std::memory_order_relaxed); o >= 0) return o;
  static const int from_env = [] {
    const char* e = std::getenv("SPARSEFLOW_PERSISTENT");
    if (!e) return 0;
    int mask = 0;
    std::string_view v(e);
    while (!v.empty()) {  // comma-separated names
      const size_t comma = v.find(',');
      const std::string_view name = v.substr(0, comma);
      if (name == "all" || name == "1") mask |= kPersistentGemv | kPersistentDecode | kBulkDecode | kBulkGemv;
      else if (name == "gemv") mask |= kPersistentGemv;
      else if (name == "decode") mask |= kPersistentDecode;
      else if (name == "bulk-decode" || name == "bulk") mask |= kBulkDecode;
      else if (name == "bulk-gemv") mask |= kBulkGemv;
      else if (name != "none" && name != "0" && !name.empty())
        std::fprintf(stderr,
                     "sparseflow: SPARSEFLOW_PERSISTENT names '%.*s', which is not a kernel variant (expected a "
                     "comma-separated list of gemv, decode, bulk-decode, bulk-gemv, or all / none); ignored\n",
                     int(name.size()), name.data());
      v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
    }
    return mask;
  }();
  return from_env;
}

void set_persistent_kernels(int mask) { g_persistent_override.store(mask, std::memory_order_relaxed); }

namespace {
std::atomic<int> g_gemv_mma_override{-1};
}  // namespace

int gemv_mma_min_m() {
  if (const int o = g_gemv_mma_override.load(std::memory_order_relaxed); o >= 0) return o;
  static const int from_env = [] {
    const char* e = std::getenv("SPARSEFLOW_GEMV_MMA_MIN_M");
    if (!e || !*e) return kGemvMmaDefaultMinM;
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    if (*end != '\0' || v < 0) {
      std::fprintf(stderr,
                   "sparseflow: SPARSEFLOW_GEMV_MMA_MIN_M is '%s', expected a batch size (0 = never use the tensor-core "
                   "GEMV); using the default %d\n",
                   e, kGemvMmaDefaultMinM);
      return kGemvMmaDefaultMinM;
    }
    return int(std::min<long>(v, 1 << 20));
  }();
  return from_env;
}

void set_gemv_mma_min_m(int m) { g_gemv_mma_override.store(m, std::memory_order_relaxed); }

}  // namespace sf::cuda
