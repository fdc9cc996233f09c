// pdl_enabled(): whether launch_pdl() asks for programmatic dependent launch (see pdl.cuh).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/pdl.cuh"

namespace sf::cuda {
namespace {

// Compiled with the same -gencode list as every other kernel of the library, so its attributes say
// which code the device runs: ptxVersion is the virtual architecture the code was compiled from
// (the __CUDA_ARCH__ pdl_wait() saw), also when the driver JIT-compiled it from PTX.
__global__ void pdl_probe_kernel() {}

constexpr int kMaxDevices = 64;

bool probe(int dev) {
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  if (major < 9) return false;
  cudaFuncAttributes fa{};
  if (cudaFuncGetAttributes(&fa, pdl_probe_kernel) != cudaSuccess) {
    cudaGetLastError();  // no image for this device: the first real launch reports it
    return false;
  }
  return fa.ptxVersion >= 90;
}

}  // namespace

bool pdl_enabled() {
  // Opt-in: on the H200 (2026-12-03) it made dense OPT-6.7B decode 5% slower (228.5 vs 241.7 tok/s)
  // and left 2:4 unchanged (309.4 vs 307.9); docs/KERNELS.md.
  static const bool allowed = [] {
    const char* e = std::getenv("SPARSEFLOW_PDL");
    return e && std::strcmp(e, "1") == 0;
  }();
  if (!allowed) return false;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return false;
  static std::atomic<int> state[kMaxDevices];  // 0 not probed yet, 1 off, 2 on
  int s = state[dev].load(std::memory_order_relaxed);
  if (s == 0) {
    s = probe(dev) ? 2 : 1;
    state[dev].store(s, std::memory_order_relaxed);
  }
  return s == 2;
}

}  // namespace sf::cuda
