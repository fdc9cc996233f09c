// Kernels of the dense fallback: W decompressed from the device layout into a dense scratch
// matrix (for cuBLAS), and the elementwise epilogue over cuBLAS's fp32 output.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/decode_kernels.hpp"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/pdl.cuh"

namespace sf::cuda {
namespace {

// One thread per lane-fragment (16 bytes = 4 kept pairs): it knows rows g and g + 8 and chunks t and
// 4 + t of its tile, which is exactly what the metadata words of slot 2 g + (chunk / 4) describe.
__global__ void decompress_kernel(const uint4* __restrict__ values, const uint32_t* __restrict__ meta, int64_t n,
                                  int64_t k, int64_t k_tiles, uint16_t* __restrict__ dense) {
  const int64_t frag = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row_blocks = (n + 15) / 16;
  if (frag >= row_blocks * k_tiles * 32) return;
  const int lane = int(frag & 31);
  const int64_t tile = frag >> 5, rb = tile / k_tiles, kt = tile % k_tiles;
  const int g = lane >> 2, t = lane & 3;
  const uint4 v = values[frag];
  const uint32_t regs[4] = {v.x, v.y, v.z, v.w};
  const int64_t k_quads = k_tiles / 4;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row_in_block = g + 8 * (r & 1);
    const int chunk = t + 4 * (r >> 1);
    const int64_t row = rb * 16 + row_in_block;
    const int64_t col = kt * 32 + chunk * 4;
    if (row >= n || col >= k) continue;
    const uint32_t word = meta[((rb * k_quads + kt / 4) * 16 + 2 * g + (chunk >> 2)) * 4 + kt % 4];
    const uint32_t nib = (word >> (16 * (row_in_block >> 3) + 4 * (chunk & 3))) & 0xfu;
    uint16_t out[4] = {0, 0, 0, 0};
    out[nib & 3] = uint16_t(regs[r] & 0xffffu);
    out[nib >> 2] = uint16_t(regs[r] >> 16);
    uint2 packed = make_uint2(uint32_t(out[0]) | (uint32_t(out[1]) << 16), uint32_t(out[2]) | (uint32_t(out[3]) << 16));
    *reinterpret_cast<uint2*>(dense + row * k + col) = packed;  // k % 4 == 0: 8-byte aligned
  }
}

// clang-format off
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
// clang-format on

// On the decode path after cuBLAS at M > 8, so launched with PDL (pdl.cuh): nothing before the
// wait. acc [m, n] in T (fp32, or the 16-bit output of a library product: cuBLASLt, cuSPARSELt).
// Gated: one thread per output, reading the pair acc[r, 2j], acc[r, 2j + 1].
template <typename T>
__global__ void epilogue_kernel(const T* __restrict__ acc, int64_t m, int64_t n,
                                EpilogueParams ep) {
  pdl_launch_dependents();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (!ep.gated) {
    if (i < m * n) epilogue_store(ep, i / n, i % n, to_float(acc[i]));
    return;
  }
  const int64_t half = n / 2;
  if (i >= m * half) return;
  const int64_t r = i / half, j = i % half;
  epilogue_store_gated(ep, r, j, to_float(acc[r * n + 2 * j]), to_float(acc[r * n + 2 * j + 1]));
}

template <typename T>
void launch_epilogue_t(const T* acc, int64_t m, int64_t n, const EpilogueParams& ep,
                       cudaStream_t stream) {
  const int64_t outputs = ep.gated ? m * (n / 2) : m * n;
  if (outputs == 0) return;
  launch_pdl(epilogue_kernel<T>, unsigned((outputs + 255) / 256), 256, 0, stream, acc, m, n, ep);
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_decompress(const void* values, const void* meta, int64_t n, int64_t k, int64_t k_tiles, void* dense,
                       cudaStream_t stream) {
  const int64_t frags = (n + 15) / 16 * k_tiles * 32;
  if (frags == 0) return;
  decompress_kernel<<<unsigned((frags + 255) / 256), 256, 0, stream>>>(
      static_cast<const uint4*>(values), static_cast<const uint32_t*>(meta), n, k, k_tiles,
      static_cast<uint16_t*>(dense));
  SF_CUDA_CHECK_LAUNCH();
}

void launch_epilogue(const float* acc, int64_t m, int64_t n, const EpilogueParams& ep, cudaStream_t stream) {
  launch_epilogue_t(acc, m, n, ep, stream);
}

void launch_epilogue(const void* acc, int acc_dt, int64_t m, int64_t n, const EpilogueParams& ep,
                     cudaStream_t stream) {
  if (acc_dt == 1) return launch_epilogue_t(static_cast<const __half*>(acc), m, n, ep, stream);
  if (acc_dt == 2)
    return launch_epilogue_t(static_cast<const __nv_bfloat16*>(acc), m, n, ep, stream);
  launch_epilogue_t(static_cast<const float*>(acc), m, n, ep, stream);
}

}  // namespace sf::cuda
