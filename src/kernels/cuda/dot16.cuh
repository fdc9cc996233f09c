// The 16-byte dot product of the decode GEMVs: 8 halves, 8 bf16 or 4 floats of W against the same
// of x, accumulated in fp32 in a fixed order. One definition for the resident GEMV (model/gemv.cu)
// and the offloaded sparse FFN (offload/cuda), whose oracle mode must match it bit for bit.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace sf::cuda {

__device__ __forceinline__ float dot16(uint4 a, uint4 b, __half) {
  const __half2* x = reinterpret_cast<const __half2*>(&a);
  const __half2* y = reinterpret_cast<const __half2*>(&b);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fx = __half22float2(x[i]), fy = __half22float2(y[i]);
    s = fmaf(fx.x, fy.x, s);
    s = fmaf(fx.y, fy.y, s);
  }
  return s;
}
__device__ __forceinline__ float dot16(uint4 a, uint4 b, __nv_bfloat16) {
  const __nv_bfloat162* x = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* y = reinterpret_cast<const __nv_bfloat162*>(&b);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fx = __bfloat1622float2(x[i]), fy = __bfloat1622float2(y[i]);
    s = fmaf(fx.x, fy.x, s);
    s = fmaf(fx.y, fy.y, s);
  }
  return s;
}
__device__ __forceinline__ float dot16(uint4 a, uint4 b, float) {
  const float4 x = *reinterpret_cast<const float4*>(&a), y = *reinterpret_cast<const float4*>(&b);
  return x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
}

}  // namespace sf::cuda
