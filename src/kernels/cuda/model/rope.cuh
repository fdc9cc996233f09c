// Rotary positions on the device, HF's steps and roundings (kernels/cpu/rope.hpp has the
// convention and the dtype of each step). Used where q and k are written: attention.cu's decode
// kernel and qkv_to_cache, so there is no separate pass over q and k.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace sf::cuda::model {

// v rounded to the activation type dt (0 fp32: unchanged), as PyTorch rounds each elementwise
// 16-bit op it computes in fp32.
__device__ __forceinline__ float round_act(float v, int dt) {
  if (dt == 1) return __half2float(__float2half_rn(v));
  if (dt == 2) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

// cos and sin of pair i at position pos, in act: freqs = float(pos) * inv_freq (one fp32 rounding;
// __fmul_rn so it is never contracted), fp32 sincosf (full range reduction, within 2 ulp, as the
// cosf / sinf of PyTorch's CUDA kernels), times attention_factor in fp32, then rounded to act.
__device__ __forceinline__ void rope_cos_sin(int64_t pos, float inv_freq, float attention_factor,
                                             int dt, float& c, float& s) {
  const float f = __fmul_rn(float(pos), inv_freq);
  float sn, cs;
  sincosf(f, &sn, &cs);
  c = round_act(__fmul_rn(cs, attention_factor), dt);
  s = round_act(__fmul_rn(sn, attention_factor), dt);
}

// One rotated element: x cos + rotate_half(x) sin, where rotate_half(x) is -partner in the first
// half (partner = x[i + half]) and +partner in the second (x[i - half]). x and partner already in
// act; each product and the sum rounded to act (__fmul_rn / __fadd_rn keep fp32 from contracting).
__device__ __forceinline__ float rope_rotate(float x, float partner, bool first_half, float c,
                                             float s, int dt) {
  const float xc = round_act(__fmul_rn(x, c), dt);
  const float ps = round_act(__fmul_rn(first_half ? -partner : partner, s), dt);
  return round_act(__fadd_rn(xc, ps), dt);
}

}  // namespace sf::cuda::model
