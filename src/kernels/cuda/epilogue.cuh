// The fused epilogue shared by the kernels: v -> act(v + bias[n]) + residual[m, n] -> y[m, n].
// Gated (ep.gated, a fused gate/up weight: rows 2j, 2j + 1 = gate j, up j; sparse24.hpp): the pair
// (gate, up) = (v[m, 2j], v[m, 2j + 1]) -> act(gate + bias[2j]) * (up + bias[2j + 1])
// + residual[m, j] -> y[m, j].
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace sf::cuda {

// Dtype codes as in sf::DType (F32 = 0, F16 = 1, BF16 = 2); a runtime switch costs nothing next to
// the bytes moved, and keeps the kernel instantiations few.
struct EpilogueParams {
  const void* bias = nullptr;
  const void* residual = nullptr;
  void* y = nullptr;
  int bias_dt = 0, residual_dt = 0, y_dt = 0;
  int act = 0;  // s24::Activation: 0 none, 1 ReLU, 2 GELU (erf), 3 SiLU, 4 GELU (tanh)
  int64_t ldy = 0;  // = N (N / 2 when gated)
  int gated = 0;    // 1: each kernel hands rows 2j, 2j + 1 to epilogue_store_gated together
};

// The device side, for nvcc only: host compilers include this header for EpilogueParams alone.
#if defined(__CUDACC__)

__device__ __forceinline__ float load_elem(const void* p, int dt, int64_t i) {
  if (dt == 1) return __half2float(static_cast<const __half*>(p)[i]);
  if (dt == 2) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void store_elem(void* p, int dt, int64_t i, float v) {
  if (dt == 1) static_cast<__half*>(p)[i] = __float2half_rn(v);
  else if (dt == 2) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else static_cast<float*>(p)[i] = v;
}

__device__ __forceinline__ float activate(int act, float v) {
  switch (act) {
    case 1: return fmaxf(v, 0.0f);
    case 2: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));  // exact (erf) GELU
    case 3: return v / (1.0f + __expf(-v));
    case 4: {  // GELU, tanh form (GPT-2's "gelu_new"), as v * sigmoid(2u) = 0.5 v (1 + tanh(u)):
               // no cancellation in 1 + tanh for negative v. expf, not __expf: this runs once per
               // output, and __expf's error grows with |2u|.
      const float u2 = 1.5957691216057308f * (v + 0.044715f * v * v * v);
      return v / (1.0f + expf(-u2));
    }
    default: return v;
  }
}

// Not inlined: every kernel stores its outputs through here from fully unrolled loops, and one inlined
// copy per accumulator register (up to 32 per kernel) cost minutes of cicc and ptxas per architecture.
// The call costs nothing next to the bytes a store moves.
static __device__ __noinline__ void epilogue_store(const EpilogueParams& ep, int64_t m, int64_t n, float v) {
  if (ep.bias) v += load_elem(ep.bias, ep.bias_dt, n);
  v = activate(ep.act, v);
  const int64_t i = m * ep.ldy + n;
  if (ep.residual) v += load_elem(ep.residual, ep.residual_dt, i);
  store_elem(ep.y, ep.y_dt, i, v);
}

// The gated store (not inlined, as above): `gate` and `up` are fused rows 2j and 2j + 1 of token m.
static __device__ __noinline__ void epilogue_store_gated(const EpilogueParams& ep, int64_t m,
                                                         int64_t j, float gate, float up) {
  if (ep.bias) {
    gate += load_elem(ep.bias, ep.bias_dt, 2 * j);
    up += load_elem(ep.bias, ep.bias_dt, 2 * j + 1);
  }
  float v = activate(ep.act, gate) * up;
  const int64_t i = m * ep.ldy + j;
  if (ep.residual) v += load_elem(ep.residual, ep.residual_dt, i);
  store_elem(ep.y, ep.y_dt, i, v);
}

// The store of a kernel that, gated, visits the fused rows in pairs: rows n (even) and n + 1 as
// (v, u); otherwise row n alone as v (u unused).
__device__ __forceinline__ void epilogue_store_step(const EpilogueParams& ep, int64_t m, int64_t n,
                                                    float v, float u) {
  if (ep.gated)
    epilogue_store_gated(ep, m, n >> 1, v, u);
  else
    epilogue_store(ep, m, n, v);
}

#endif  // __CUDACC__

}  // namespace sf::cuda
