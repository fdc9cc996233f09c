// Layer norm and RMSNorm over rows of the fp32 residual stream, writing fp32 and/or the activation
// type. One kernel for both: RMSNorm skips the mean (NormKind::Rms, a template flag).
//
// Decode runs it 2 x layers + 1 times per token on 1..64 rows of 768..12288 floats: a launch is all
// latency (the first version, one 256-thread block per row making three fp64 passes over the row in
// global memory, took ~0.49 ms of a 5.4 ms OPT-6.7B step on an H100 for its 64 launches). So each
// thread loads its elements of the row once into registers (float4 when the row allows), the mean
// and the centred variance come from the registers (two block reductions, two barriers), and the
// output is written from them. Launched with PDL (pdl.cuh): gamma and beta are constant and loaded
// before pdl_wait(), the row after it.
//
// Accuracy: the CPU backend computes in fp64; here a thread sums its <= 16 values in fp32, the
// block adds those partials in two 32-wide trees (warp, then the warps' sums), so a sum carries at
// most ~(15 + 10) fp32 roundings of sum |x| (~1.5e-6 relative), and the variance is taken around
// the mean (no cancellation). That is far below the fp16/bf16 rounding of the output and the 1e-3
// perplexity tolerance against the CPU, and it keeps fp64 (1/64 rate on sm_86/89) out of the
// kernel.
//
// RMSNorm rounds as HF's LlamaRMSNorm does with the activation type as its input dtype:
// x * rsqrt(mean(x^2) + eps) in fp32 (rsqrtf, as torch.rsqrt on CUDA), rounded to act, times w,
// rounded again (model_kernels.hpp); the fp32 output is the same without the roundings.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/l2_prefetch.cuh"
#include "kernels/cuda/model/model_kernels.hpp"
#include "kernels/cuda/pdl.cuh"

namespace sf::cuda::model {
namespace {

// Row width -> per-thread work (one block per row, threads = accesses / PT rounded up to a warp):
//
//   | row                                  | access  | PT | threads                              |
//   | dim % 4 == 0, 16-B aligned, <= 8192  | float4  | 2  | 96 (768) .. 512 (4096) .. 1024       |
//   | dim % 4 == 0, 16-B aligned, <= 16384 | float4  | 4  | 576 (9216), 768 (12288) .. 1024      |
//   | any other row, dim <= 8192           | float   | 8  | dim / 8                              |
//   | wider                                | the strided fp64 loop (any width, not on OPT shapes) |
//
// Not measured yet: picked so that OPT-6.7B's 4096 runs 16 warps with 8 values each (a single row
// is one SM's work: its L2 round trip and the two barriers are the cost, not the arithmetic), and
// every OPT width stays in registers. (ptxas, sm_90a: 47 registers at PT 2, 64 at PT 4, no spills;
// 16 scalar values per thread spilled under the 1024-thread bound, hence 8.)
constexpr int kVec2MaxDim = 8192;
constexpr int kVec4MaxDim = 16384;
constexpr int kScalarMaxDim = 8192;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block, the same value in every thread: each warp's butterfly, then every warp sums
// the warps' sums again by butterfly (same operands in the same order everywhere, and a butterfly
// leaves every lane with the bit-identical result). `red` is 32 floats used by this call only.
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int lane = int(threadIdx.x % 32);
  if (lane == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  return warp_sum(lane < int(blockDim.x / 32) ? red[lane] : 0.0f);
}

// V consecutive floats (V = 4: one 16-byte access) at access index a.
template <int V>
__device__ __forceinline__ void load_v(const float* p, int a, float (&o)[V]) {
  if constexpr (V == 4) {
    const float4 t = reinterpret_cast<const float4*>(p)[a];
    o[0] = t.x, o[1] = t.y, o[2] = t.z, o[3] = t.w;
  } else {
    o[0] = p[a];
  }
}

// y[0..V) to element i.. of `out` in dtype dt (0 fp32, 1 fp16, 2 bf16), rounded as store_elem does.
template <int V>
__device__ __forceinline__ void store_v(void* out, int dt, int64_t i, const float (&y)[V]) {
  if constexpr (V == 4) {
    if (dt == 0) {
      *reinterpret_cast<float4*>(static_cast<float*>(out) + i) = make_float4(y[0], y[1], y[2], y[3]);
    } else if (dt == 1) {
      const __half2 lo = __floats2half2_rn(y[0], y[1]), hi = __floats2half2_rn(y[2], y[3]);
      *reinterpret_cast<uint2*>(static_cast<__half*>(out) + i) =
          make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
    } else {
      const __nv_bfloat162 lo = __floats2bfloat162_rn(y[0], y[1]), hi = __floats2bfloat162_rn(y[2], y[3]);
      *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(out) + i) =
          make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
    }
  } else {
    store_elem(out, dt, i, y[0]);
  }
}

__device__ __forceinline__ float round_to(float v, int dt) {
  if (dt == 1) return __half2float(__float2half_rn(v));
  if (dt == 2) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

// One block per row; thread t owns accesses t, t + blockDim.x, ... (PT of them, V floats each), so
// every load and store is coalesced. x is not __restrict__: out_f32 may be x. Each thread writes
// exactly the elements it read, and only after the barriers, so the in-place case is safe.
template <int V, int PT, bool RMS>
__global__ void __launch_bounds__(1024)
    layernorm_kernel(const float* x, int dim, const float* __restrict__ w,
                     const float* __restrict__ b, float eps, float* out_f32, void* out_act,
                     int act_dt, L2Prefetch pf) {
  __shared__ float red[2][32];
  pdl_launch_dependents();
  if (threadIdx.x < 32) issue_l2_prefetch(pf, blockIdx.x, gridDim.x, threadIdx.x);  // constant weights: early
  const int accesses = dim / V;
  float gw[PT][V] = {}, gb[PT][V] = {};
  if (w) {  // gamma, beta: constant, so before the wait
#pragma unroll
    for (int p = 0; p < PT; ++p) {
      const int a = int(threadIdx.x) + p * int(blockDim.x);
      if (a < accesses) {
        load_v<V>(w, a, gw[p]);
        if (b) load_v<V>(b, a, gb[p]);
      }
    }
  }
  pdl_wait();
  const int64_t row = int64_t(blockIdx.x) * dim;
  float v[PT][V] = {};
  float s = 0.0f;
#pragma unroll
  for (int p = 0; p < PT; ++p) {
    const int a = int(threadIdx.x) + p * int(blockDim.x);
    if (a < accesses) load_v<V>(x + row, a, v[p]);
#pragma unroll
    for (int e = 0; e < V; ++e) s += RMS ? v[p][e] * v[p][e] : v[p][e];  // zeros past the row
  }
  if constexpr (RMS) {
    const float inv = rsqrtf(block_sum(s, red[0]) / float(dim) + eps);
#pragma unroll
    for (int p = 0; p < PT; ++p) {
      const int a = int(threadIdx.x) + p * int(blockDim.x);
      if (a >= accesses) continue;
      float ya[V], yf[V];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float y = v[p][e] * inv;
        ya[e] = w ? gw[p][e] * round_to(y, act_dt) : y;  // store_v rounds the product
        yf[e] = w ? y * gw[p][e] : y;
      }
      const int64_t i = row + int64_t(a) * V;
      if (out_act) store_v<V>(out_act, act_dt, i, ya);
      if (out_f32) store_v<V>(out_f32, 0, i, yf);
    }
    return;
  }
  const float mean = block_sum(s, red[0]) / float(dim);
  float q = 0.0f;
#pragma unroll
  for (int p = 0; p < PT; ++p) {
    const int a = int(threadIdx.x) + p * int(blockDim.x);
    if (a < accesses)
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float d = v[p][e] - mean;
        q += d * d;
      }
  }
  const float var = block_sum(q, red[1]) / float(dim);  // biased, like torch
  const float inv = 1.0f / sqrtf(var + eps);
#pragma unroll
  for (int p = 0; p < PT; ++p) {
    const int a = int(threadIdx.x) + p * int(blockDim.x);
    if (a >= accesses) continue;
    float y[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      y[e] = (v[p][e] - mean) * inv;
      if (w) y[e] = y[e] * gw[p][e] + gb[p][e];  // gb stays 0 without a bias
    }
    const int64_t i = row + int64_t(a) * V;
    if (out_act) store_v<V>(out_act, act_dt, i, y);
    if (out_f32) store_v<V>(out_f32, 0, i, y);
  }
}

// Rows wider than the register kernels take (no model we run): strided passes over global memory,
// mean and centred variance (RMSNorm: the mean square) in fp64.
constexpr int kStridedThreads = 1024;

__device__ double block_sum_f64(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read from a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double s = 0.0;
  for (int i = 0; i < kStridedThreads / 32; ++i) s += red[i];
  return s;
}

template <bool RMS>
__global__ void __launch_bounds__(kStridedThreads)
    layernorm_strided_kernel(const float* x, int64_t dim, const float* __restrict__ w,
                             const float* __restrict__ b, float eps, float* out_f32, void* out_act,
                             int act_dt, L2Prefetch pf) {
  __shared__ double red[kStridedThreads / 32];
  pdl_launch_dependents();
  if (threadIdx.x < 32) issue_l2_prefetch(pf, blockIdx.x, gridDim.x, threadIdx.x);
  pdl_wait();
  const float* xr = x + int64_t(blockIdx.x) * dim;
  double mean = 0.0;
  if (!RMS) {
    double s = 0.0;
    for (int64_t j = threadIdx.x; j < dim; j += kStridedThreads) s += xr[j];
    mean = block_sum_f64(s, red) / double(dim);
  }
  double v = 0.0;
  for (int64_t j = threadIdx.x; j < dim; j += kStridedThreads) {
    const double d = xr[j] - mean;
    v += d * d;
  }
  const double var = block_sum_f64(v, red) / double(dim);
  const float inv = float(1.0 / sqrt(var + double(eps)));
  const float meanf = float(mean);
  for (int64_t j = threadIdx.x; j < dim; j += kStridedThreads) {
    const float yn = (xr[j] - meanf) * inv;
    float y = yn, ya = yn;
    if (RMS && w) {
      y = yn * w[j];
      ya = w[j] * round_to(yn, act_dt);
    } else if (w) {
      y = ya = yn * w[j] + (b ? b[j] : 0.0f);
    }
    const int64_t i = int64_t(blockIdx.x) * dim + j;
    if (out_act) store_elem(out_act, act_dt, i, ya);
    if (out_f32) out_f32[i] = y;  // after every read of xr[j] by this thread (out_f32 may be x)
  }
}

// On the decode path for post-LN models (the embedding output) and pre-LN ones without a final
// layer norm; launched with PDL, nothing before the wait.
__global__ void cast_kernel(const float* __restrict__ x, int64_t n, void* __restrict__ out, int act_dt) {
  pdl_launch_dependents();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) store_elem(out, act_dt, i, x[i]);
}

bool aligned(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

}  // namespace

void launch_cast(const float* x, int64_t n, void* out, int act_dt, cudaStream_t stream) {
  if (n == 0) return;
  launch_pdl(cast_kernel, unsigned((n + 255) / 256), 256, 0, stream, x, n, out, act_dt);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_norm(NormKind kind, const float* x, int64_t rows, int64_t dim, const float* w,
                 const float* b, float eps, float* out_f32, void* out_act, int act_dt,
                 cudaStream_t stream, const L2Prefetch& pf) {
  if (rows == 0 || dim == 0) return;
  const bool rms = kind == NormKind::Rms;
  if (rms && b)
    detail::throw_status(1 /*InvalidArgument*/,
                         "RMSNorm takes no bias: pass b = null (got a bias pointer)");
  if (!rms && kind != NormKind::Layer)
    detail::throw_status(
        1, "norm: unknown kind " + std::to_string(int(kind)) + " (0 LayerNorm, 1 RMSNorm)");
  const uintptr_t act_bytes = act_dt == 0 ? 4 : 2;
  const bool vec = dim % 4 == 0 && aligned(x, 16) && aligned(out_f32, 16) && aligned(out_act, 4 * act_bytes) &&
                   aligned(w, 16) && aligned(b, 16);  // null pointers count as aligned
  const unsigned grid = unsigned(rows);
  auto threads = [](int64_t accesses, int pt) { return unsigned((accesses + 32 * pt - 1) / (32 * pt) * 32); };
  const int d = int(dim);
  auto launch = [&](auto kernel, unsigned block) {
    launch_pdl(kernel, grid, block, 0, stream, x, d, w, b, eps, out_f32, out_act, act_dt, pf);
  };
  if (vec && dim <= kVec2MaxDim)
    rms ? launch(layernorm_kernel<4, 2, true>, threads(dim / 4, 2))
        : launch(layernorm_kernel<4, 2, false>, threads(dim / 4, 2));
  else if (vec && dim <= kVec4MaxDim)
    rms ? launch(layernorm_kernel<4, 4, true>, threads(dim / 4, 4))
        : launch(layernorm_kernel<4, 4, false>, threads(dim / 4, 4));
  else if (dim <= kScalarMaxDim)
    rms ? launch(layernorm_kernel<1, 8, true>, threads(dim, 8))
        : launch(layernorm_kernel<1, 8, false>, threads(dim, 8));
  else
    launch_pdl(rms ? layernorm_strided_kernel<true> : layernorm_strided_kernel<false>, grid,
               kStridedThreads, 0, stream, x, dim, w, b, eps, out_f32, out_act, act_dt, pf);
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace sf::cuda::model
