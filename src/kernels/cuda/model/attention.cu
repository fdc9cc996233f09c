// Attention over the KV cache: the decode kernel for one new token per sequence (split over key
// chunks, flash-decoding style, then merged), and the prefill helpers around cuBLAS's batched GEMMs
// (q/k/v into the cache, causal softmax).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/model/model_kernels.hpp"

namespace sf::cuda::model {
namespace {

// Keys per decode block. One thread per key for the scores: each reads its key's head slice with
// 16-byte loads, all in flight at once; a 384-token context of OPT-6.7B is 3 chunks x 32 heads = 96
// blocks instead of 32 with one block per head.
constexpr int kChunk = 128;

// q . k for one key: k is the key's head slice in the cache (d elements of type dt), q in smem.
__device__ __forceinline__ float dot_key(const float* q, const void* k, int dt, int d) {
  float s = 0.0f;
  if (dt == 1 && d % 8 == 0) {
    const uint4* k4 = static_cast<const uint4*>(k);
#pragma unroll 4
    for (int c = 0; c < d / 8; ++c) {
      const uint4 v = k4[c];
      const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(h[i]);
        s = fmaf(q[8 * c + 2 * i], f.x, s);
        s = fmaf(q[8 * c + 2 * i + 1], f.y, s);
      }
    }
  } else if (dt == 2 && d % 8 == 0) {
    const uint4* k4 = static_cast<const uint4*>(k);
#pragma unroll 4
    for (int c = 0; c < d / 8; ++c) {
      const uint4 v = k4[c];
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        s = fmaf(q[8 * c + 2 * i], f.x, s);
        s = fmaf(q[8 * c + 2 * i + 1], f.y, s);
      }
    }
  } else {
    for (int c = 0; c < d; ++c) s = fmaf(q[c], load_elem(k, dt, c), s);
  }
  return s;
}

__device__ float block_max(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < int(blockDim.x / 32); ++w) r = fmaxf(r, red[w]);
  return r;
}
__device__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = 0.0f;
  for (int w = 0; w < int(blockDim.x / 32); ++w) r += red[w];
  return r;
}

// Block (head h, sequence b, chunk c) over keys [c * kChunk, min((c + 1) * kChunk, len)). The chunk
// holding the new token writes its k, v row first (no other block reads that row). Writes the
// chunk's running max, sum of exp and unnormalised output to the partials.
__global__ void __launch_bounds__(kChunk) decode_attention_kernel(AttentionArgs a, float* __restrict__ part) {
  extern __shared__ float smem[];  // q[d], p[kChunk], red[32], ored[kChunk]
  const int h = blockIdx.x, b = blockIdx.y, c = blockIdx.z;
  const int d = int(a.head_dim), H = int(a.hidden);
  const int p = *a.pos, len = p + 1;
  const int j0 = c * kChunk;
  const int nchunk = gridDim.z;
  float* pm = part + ((int64_t(b) * a.heads + h) * nchunk + c) * (d + 2);  // m, l, o[d]
  if (j0 >= len) {
    if (threadIdx.x == 0) {
      pm[0] = -INFINITY;
      pm[1] = 0.0f;
    }
    return;
  }
  float* q = smem;
  float* pr = smem + d;
  float* red = pr + kChunk;
  const float* row = a.qkv + int64_t(b) * 3 * H;
  const int64_t cache_row = int64_t(b) * a.capacity;
  for (int t = threadIdx.x; t < d; t += blockDim.x) {
    q[t] = row[h * d + t] * a.scale;
    if (p >= j0 && p < j0 + kChunk) {
      store_elem(a.k_cache, a.act_dt, (cache_row + p) * H + h * d + t, row[H + h * d + t]);
      store_elem(a.v_cache, a.act_dt, (cache_row + p) * H + h * d + t, row[2 * H + h * d + t]);
    }
  }
  __syncthreads();  // also makes the new k, v row visible to this block's threads
  const int elem = a.act_dt == 0 ? 4 : 2;
  const int j = j0 + int(threadIdx.x);
  float s = -INFINITY;
  if (j < len) {
    const char* k = static_cast<const char*>(a.k_cache) + ((cache_row + j) * H + int64_t(h) * d) * elem;
    s = dot_key(q, k, a.act_dt, d);
  }
  const float m = block_max(s, red);
  const float e = j < len ? __expf(s - m) : 0.0f;
  pr[threadIdx.x] = e;
  const float l = block_sum(e, red);  // its barriers also publish pr[]
  // Output: thread t owns dimension t % d for the keys of group t / d (d <= kChunk, checked at launch);
  // the groups are then summed through shared memory.
  const int groups = int(blockDim.x) / d;
  const int g = int(threadIdx.x) / d, dim = int(threadIdx.x) % d;
  const int n_keys = min(kChunk, len - j0);
  float acc = 0.0f;
  if (g < groups) {
    const int64_t vbase = (cache_row + j0) * H + int64_t(h) * d + dim;
#pragma unroll 8
    for (int jj = g; jj < n_keys; jj += groups) acc = fmaf(pr[jj], load_elem(a.v_cache, a.act_dt, vbase + int64_t(jj) * H), acc);
  }
  float* ored = red + 32;
  ored[threadIdx.x] = acc;
  __syncthreads();
  if (int(threadIdx.x) < d) {
    float o = 0.0f;
    for (int gg = 0; gg < groups; ++gg) o += ored[gg * d + threadIdx.x];
    pm[2 + threadIdx.x] = o;
  }
  if (threadIdx.x == 0) {
    pm[0] = m;
    pm[1] = l;
  }
}

// Merge the chunks of (h, b): out = sum_c o_c e^(m_c - M) / sum_c l_c e^(m_c - M).
__global__ void merge_kernel(AttentionArgs a, const float* __restrict__ part, int nchunk) {
  const int h = blockIdx.x, b = blockIdx.y;
  const int d = int(a.head_dim);
  const float* base = part + (int64_t(b) * a.heads + h) * nchunk * (d + 2);
  float M = -INFINITY;
  for (int c = 0; c < nchunk; ++c) M = fmaxf(M, base[c * (d + 2)]);
  float L = 0.0f;
  for (int c = 0; c < nchunk; ++c)
    if (base[c * (d + 2) + 1] > 0.0f) L += base[c * (d + 2) + 1] * __expf(base[c * (d + 2)] - M);
  for (int dim = threadIdx.x; dim < d; dim += blockDim.x) {
    float o = 0.0f;
    for (int c = 0; c < nchunk; ++c)
      if (base[c * (d + 2) + 1] > 0.0f) o += base[c * (d + 2) + 2 + dim] * __expf(base[c * (d + 2)] - M);
    store_elem(a.out, a.act_dt, int64_t(b) * a.hidden + int64_t(h) * d + dim, o / L);
  }
}

// Token i of sequence `seq`: k, v to cache rows *pos + i; q * scale to q_out[i].
__global__ void qkv_to_cache_kernel(AttentionArgs a, int64_t seq, void* __restrict__ q_out) {
  const int64_t i = blockIdx.x;
  const int64_t H = a.hidden;
  const float* row = a.qkv + i * 3 * H;
  const int64_t crow = (seq * a.capacity + *a.pos + i) * H;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    store_elem(q_out, a.act_dt, i * H + j, row[j] * a.scale);
    store_elem(a.k_cache, a.act_dt, crow + j, row[H + j]);
    store_elem(a.v_cache, a.act_dt, crow + j, row[2 * H + j]);
  }
}

// One block per (query i, head h): softmax over keys 0..past+i in fp32, zeros after.
__global__ void causal_softmax_kernel(const float* __restrict__ scores, int64_t n, int64_t len, void* probs,
                                      int act_dt) {
  __shared__ float red[32];
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const int64_t visible = len - n + i + 1;
  const float* s = scores + (h * n + i) * len;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) m = fmaxf(m, s[j]);
  m = block_max(m, red);
  float l = 0.0f;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) l += __expf(s[j] - m);
  l = block_sum(l, red);
  const float inv = 1.0f / l;
  const int64_t o = (h * n + i) * len;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x)
    store_elem(probs, act_dt, o + j, j < visible ? __expf(s[j] - m) * inv : 0.0f);
}

}  // namespace

size_t decode_attention_partial_floats(int64_t batch, int64_t heads, int64_t capacity, int64_t head_dim) {
  return size_t(batch) * size_t(heads) * size_t((capacity + kChunk - 1) / kChunk) * size_t(head_dim + 2);
}

void launch_decode_attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.head_dim > kChunk || a.head_dim <= 0)
    detail::throw_status(2 /*UnsupportedShape*/, "decode attention supports head_dim 1.." + std::to_string(kChunk) +
                                                     ", got " + std::to_string(a.head_dim));
  const int nchunk = int((a.capacity + kChunk - 1) / kChunk);
  if (!a.partials) detail::throw_status(1 /*InvalidArgument*/, "decode attention: no partials workspace given");
  const size_t smem = size_t(a.head_dim + 2 * kChunk + 32) * sizeof(float);
  decode_attention_kernel<<<dim3(unsigned(a.heads), unsigned(a.batch), unsigned(nchunk)), kChunk, smem, stream>>>(
      a, a.partials);
  SF_CUDA_CHECK_LAUNCH();
  merge_kernel<<<dim3(unsigned(a.heads), unsigned(a.batch)), 128, 0, stream>>>(a, a.partials, nchunk);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_qkv_to_cache(const AttentionArgs& a, int64_t seq, int64_t n, void* q_out, cudaStream_t stream) {
  if (n == 0) return;
  qkv_to_cache_kernel<<<unsigned(n), 256, 0, stream>>>(a, seq, q_out);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_causal_softmax(const float* scores, int64_t heads, int64_t n, int64_t len, void* probs, int act_dt,
                           cudaStream_t stream) {
  if (n == 0 || heads == 0) return;
  causal_softmax_kernel<<<dim3(unsigned(n), unsigned(heads)), 256, 0, stream>>>(scores, n, len, probs, act_dt);
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace sf::cuda::model
