// The HBM read bandwidth a kernel reaches: the ceiling a decode GEMM (which reads W once and writes
// almost nothing) is measured against. cudaMemcpy's device-to-device rate is a different quantity
// (reads and writes share the bus), and on an H200 reports ~2.75 TB/s counted as read + write bytes
// against the ~4.2 TB/s a read-only stream reaches.
#include <cuda_runtime.h>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/membw.hpp"
#include "kernels/cuda/ptx.cuh"

namespace sf::cuda {
namespace {

// Each thread streams 16-byte words with 4 loads in flight and folds them into one word, written
// only when it matches a value that never occurs, so the compiler cannot drop the loads.
__global__ void read_kernel(const uint4* p, size_t words, uint32_t* sink) {
  uint32_t acc = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < words; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = ptx::ld_global_nc_na_v4(p + i + j * stride);
#pragma unroll
    for (int j = 0; j < 4; ++j) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
  }
  for (; i < words; i += stride) {
    const uint4 v = ptx::ld_global_nc_na_v4(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

}  // namespace

double measure_read_tbps(size_t bytes, cudaStream_t stream) {
  bytes = bytes / 16 * 16;
  void* buf = nullptr;
  uint32_t* sink = nullptr;
  SF_CUDA_CHECK(cudaMalloc(&buf, bytes));
  SF_CUDA_CHECK(cudaMalloc(&sink, 4));
  SF_CUDA_CHECK(cudaMemsetAsync(buf, 1, bytes, stream));
  int dev = 0, sms = 0;
  SF_CUDA_CHECK(cudaGetDevice(&dev));
  SF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const unsigned blocks = unsigned(sms) * 8;
  cudaEvent_t e0, e1;
  SF_CUDA_CHECK(cudaEventCreate(&e0));
  SF_CUDA_CHECK(cudaEventCreate(&e1));
  auto launch = [&] {
    read_kernel<<<blocks, 256, 0, stream>>>(static_cast<const uint4*>(buf), bytes / 16, sink);
    SF_CUDA_CHECK_LAUNCH();
  };
  for (int i = 0; i < 3; ++i) launch();
  constexpr int kIters = 20;
  SF_CUDA_CHECK(cudaEventRecord(e0, stream));
  for (int i = 0; i < kIters; ++i) launch();
  SF_CUDA_CHECK(cudaEventRecord(e1, stream));
  SF_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  SF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(buf);
  cudaFree(sink);
  return double(bytes) * kIters / (double(ms) * 1e-3) / 1e12;
}

}  // namespace sf::cuda
