// Device helpers shared by the offloaded-FFN kernels: the 16-byte dot product and the streaming
// load of the resident decode GEMV, element conversions, and the warp butterfly.
//
// dot16 is the resident GEMV's own (kernels/cuda/dot16.cuh) and the butterfly must stay identical to
// kernels/cuda/model/gemv.cu's: the oracle-mode test holds the sparse FFN to its output bit for bit.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/dot16.cuh"
#include "kernels/cuda/ptx.cuh"

namespace sf::offload::cuda {

// Weights are streamed once (ld.global.nc.L1::no_allocate, ptx.cuh); L1 stays for x.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  return sf::cuda::ptx::ld_global_nc_na_v4(static_cast<const uint4*>(p));
}

// The resident GEMV's dot product itself (kernels/cuda/dot16.cuh), not a copy of it.
using sf::cuda::dot16;

// Elements per 16-byte chunk.
template <typename T>
constexpr int kChunk = 16 / int(sizeof(T));

// Element e of a 16-byte chunk as float.
template <typename T>
__device__ __forceinline__ float chunk_elem(const uint4& v, int e) {
  return float(reinterpret_cast<const T*>(&v)[e]);
}
template <>
__device__ __forceinline__ float chunk_elem<__half>(const uint4& v, int e) {
  return __half2float(reinterpret_cast<const __half*>(&v)[e]);
}
template <>
__device__ __forceinline__ float chunk_elem<__nv_bfloat16>(const uint4& v, int e) {
  return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(&v)[e]);
}

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return float(v);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// Round to the activation type exactly as epilogue.cuh's store_elem does.
template <typename T>
__device__ __forceinline__ T from_float(float v) {
  return T(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// The GEMV's warp reduction: every lane ends with the same sum.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The fc1 pre-activation of one neuron: x . row accumulated exactly as gemv_kernel<T, 1> does
// (lane-strided 16-byte chunks in ascending order, acc += dot16, then the butterfly). kv = d / cw.
// Shaped like the GEMV's loop (the first batch issued before it, each later batch at the top of its
// iteration) so that ptxas keeps a whole batch of kUnroll loads in flight: a plain load-then-use loop
// compiled (sm_90a, nvcc 13) to one or two loads in flight per lane, which left the sparse fc1 bound
// by latency (it reads only a few hundred rows per layer).
template <typename T, int kUnroll = 4>
__device__ __forceinline__ float warp_row_dot(const uint4* __restrict__ row, const uint4* __restrict__ x, int kv,
                                             int lane) {
  float acc = 0.0f;
  int i = lane;
  uint4 wv[kUnroll];
  if (i + 32 * (kUnroll - 1) < kv)
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = ld_stream(row + i + 32 * u);
  for (; i + 32 * (kUnroll - 1) < kv; i += 32 * kUnroll) {
    if (i != lane)
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) wv[u] = ld_stream(row + i + 32 * u);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc += dot16(wv[u], __ldg(x + i + 32 * u), T{});
  }
  for (; i < kv; i += 32) acc += dot16(ld_stream(row + i), __ldg(x + i), T{});
  return warp_sum(acc);
}

}  // namespace sf::offload::cuda
