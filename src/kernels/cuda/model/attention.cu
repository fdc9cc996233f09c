// Attention over the KV cache: the decode kernel for one new token per sequence (split over key
// chunks, flash-decoding style, then merged), and the prefill helpers around cuBLAS's batched GEMMs
// (q/k/v into the cache, causal softmax).
// The decode kernel and its merge are launched with PDL (pdl.cuh). Everything they read (q/k/v from
// the qkv product, *pos, the cache, the partials) is written by earlier kernels, and the decode
// kernel appends to the cache, so both wait first; they only let the next kernel launch early.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/l2_prefetch.cuh"
#include "kernels/cuda/model/model_kernels.hpp"
#include "kernels/cuda/pdl.cuh"

namespace sf::cuda::model {
namespace {

// Keys per decode block, and threads per key. A step's attention reads a few MB (OPT-6.7B at 384
// tokens: 6 MB per layer), so it is latency bound unless many blocks each keep many coalesced loads in
// flight. The first kernel (one thread per key over 128-key chunks, 2-byte value loads) ran at
// 38 GB/s: 2.0 ms of a 6.9 ms OPT-6.7B step on an H100 (2026-11-22, benchmark --profile). Now: 32
// keys per block (12 blocks per head at 384 tokens), 16 threads per key row reading it with
// 16-byte loads, the same mapping for the values; each thread's key and value words all in flight
// at once, and the chunks of a head merged by the last of its blocks to finish (no second kernel).
constexpr int kChunk = 32;
constexpr int kThreads = 128;
constexpr int kTpk = 16;                  // threads per key row
constexpr int kKeysPerPass = kThreads / kTpk;  // 8
constexpr int kMaxHeadDim = 128;

// Element e of a 16-byte word holding 8 halves / 8 bf16 / 4 floats.
__device__ __forceinline__ float word_elem(const uint4& w, int dt, int e) {
  const uint32_t u = e < 0 ? 0 : (dt == 0 ? (&w.x)[e] : (&w.x)[e / 2]);
  if (dt == 0) return __uint_as_float(u);
  const uint16_t hbits = uint16_t(e % 2 ? u >> 16 : u & 0xffffu);
  if (dt == 1) return __half2float(__ushort_as_half(hbits));
  return __bfloat162float(__ushort_as_bfloat16(hbits));
}

// Merge the chunks 0..n-1 of (h, b) with the block's threads: out = sum_c o_c e^(m_c - M) / sum_c
// l_c e^(m_c - M) over the chunks with l_c > 0, in chunk order. The partials are read past L1: in the
// fused path other blocks wrote them during this launch.
__device__ void merge_head(const AttentionArgs& a, const float* part, int h, int b, int n) {
  const int d = int(a.head_dim);
  const int64_t chunks = (a.capacity + kChunk - 1) / kChunk;  // per (b, h) in the workspace
  const float* base = part + (int64_t(b) * a.heads + h) * chunks * (d + 2);
  float M = -INFINITY;
  for (int c = 0; c < n; ++c) M = fmaxf(M, __ldcg(base + c * (d + 2)));
  float L = 0.0f;
  for (int c = 0; c < n; ++c) {
    const float l = __ldcg(base + c * (d + 2) + 1);
    if (l > 0.0f) L += l * __expf(__ldcg(base + c * (d + 2)) - M);
  }
  for (int dim = threadIdx.x; dim < d; dim += blockDim.x) {
    float o = 0.0f;
    for (int c = 0; c < n; ++c) {
      const float l = __ldcg(base + c * (d + 2) + 1);
      if (l > 0.0f) o += __ldcg(base + c * (d + 2) + 2 + dim) * __expf(__ldcg(base + c * (d + 2)) - M);
    }
    store_elem(a.out, a.act_dt, int64_t(b) * a.hidden + int64_t(h) * d + dim, o / L);
  }
}

// Block (head h, sequence b, chunk c) over keys [c * kChunk, min((c + 1) * kChunk, len)). The chunk
// holding the new token writes its k, v row first (no other block reads that row). Writes the
// chunk's max, sum of exp and unnormalised output to the partials. Rows are read as 16-byte words
// when the head slice is a whole number of them (every OPT model), element by element otherwise.
template <int EPW>  // elements per 16-byte word read (8: fp16/bf16, 4: fp32), 0: element by element
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(AttentionArgs a, float* __restrict__ part) {
  // Per thread: up to WPT 16-byte words of a row (or SLOTS single elements).
  constexpr int kWpt = EPW ? (kMaxHeadDim / EPW + kTpk - 1) / kTpk : 0;
  constexpr int kSlots = EPW ? kWpt * EPW : kMaxHeadDim / kTpk;
  __shared__ float q[kMaxHeadDim];
  __shared__ float pr[kChunk];
  __shared__ float ored[kKeysPerPass][kMaxHeadDim];
  __shared__ float ml[2];
  pdl_launch_dependents();
  // The L2 prefetch first: the weights are constant, so it may start before the previous kernel ends.
  if (threadIdx.x < 32)
    issue_l2_prefetch(a.prefetch, blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z),
                      gridDim.x * gridDim.y * gridDim.z, threadIdx.x);
  pdl_wait();  // before *pos, the qkv row and the cache (blocks past len return below, after it)
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
  const int words = EPW ? d / EPW : 0;
  const int n_keys = min(kChunk, len - j0);
  const int part_id = int(threadIdx.x) % kTpk, ks = int(threadIdx.x) / kTpk;
  const char* kbase = static_cast<const char*>(a.k_cache) + ((cache_row + j0) * H + int64_t(h) * d) * elem;
  const char* vbase = static_cast<const char*>(a.v_cache) + ((cache_row + j0) * H + int64_t(h) * d) * elem;
  const int64_t row_bytes = int64_t(H) * elem;

  // Every key and value word this thread reads (keys ks, ks + 8, ...) is loaded first, all in flight
  // at once (16-byte rows; element-wise heads load as they go): one memory round trip for the chunk
  // instead of one per pass. The sums below run in the same order as one pass at a time.
  constexpr int kPasses = kChunk / kKeysPerPass;
  constexpr int kWords = EPW ? kWpt : 1;
  uint4 kw[kPasses][kWords], vw[kPasses][kWords];
  if constexpr (EPW) {
#pragma unroll
    for (int ps = 0; ps < kPasses; ++ps) {
      const int j = ps * kKeysPerPass + ks;
#pragma unroll
      for (int i = 0; i < kWpt; ++i) {
        const int w = part_id + i * kTpk;
        const bool live = j < n_keys && w < words;
        kw[ps][i] = live ? *reinterpret_cast<const uint4*>(kbase + int64_t(j) * row_bytes + w * 16) : uint4{};
        vw[ps][i] = live ? *reinterpret_cast<const uint4*>(vbase + int64_t(j) * row_bytes + w * 16) : uint4{};
      }
    }
  }

  // Scores: the 16 threads of a key split its row and reduce with shuffles (aligned 16-lane groups).
#pragma unroll
  for (int ps = 0; ps < kPasses; ++ps) {
    const int j = ps * kKeysPerPass + ks;
    float sacc = 0.0f;
    if (j < n_keys) {
      if constexpr (EPW) {
#pragma unroll
        for (int i = 0; i < kWpt; ++i) {
          const int w = part_id + i * kTpk;
          if (w < words)
#pragma unroll
            for (int e = 0; e < EPW; ++e) sacc = fmaf(q[w * EPW + e], word_elem(kw[ps][i], a.act_dt, e), sacc);
        }
      } else {
        const char* kr = kbase + int64_t(j) * row_bytes;
#pragma unroll
        for (int i = 0; i < kSlots; ++i) {
          const int e = part_id + i * kTpk;
          if (e < d) sacc = fmaf(q[e], load_elem(kr, a.act_dt, e), sacc);
        }
      }
    }
#pragma unroll
    for (int o = kTpk / 2; o > 0; o >>= 1) sacc += __shfl_xor_sync(0xffffffffu, sacc, o);
    if (part_id == 0 && j < n_keys) pr[j] = sacc;
  }
  __syncthreads();
  // Softmax over the chunk's (at most 32) scores by the first warp.
  if (threadIdx.x < 32) {
    const float sv = int(threadIdx.x) < n_keys ? pr[threadIdx.x] : -INFINITY;
    float m = sv;
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    const float e = int(threadIdx.x) < n_keys ? __expf(sv - m) : 0.0f;
    float l = e;
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    if (int(threadIdx.x) < n_keys) pr[threadIdx.x] = e;
    if (threadIdx.x == 0) {
      ml[0] = m;
      ml[1] = l;
    }
  }
  __syncthreads();

  // Values: thread (ks, part) accumulates keys ks, ks + 8, ... over its words (or elements) of the row.
  float acc[kSlots];
#pragma unroll
  for (int i = 0; i < kSlots; ++i) acc[i] = 0.0f;
#pragma unroll
  for (int ps = 0; ps < kPasses; ++ps) {
    const int j = ps * kKeysPerPass + ks;
    if (j >= n_keys) break;
    const float pj = pr[j];
    if constexpr (EPW) {
#pragma unroll
      for (int i = 0; i < kWpt; ++i) {
        const int w = part_id + i * kTpk;
        if (w < words)
#pragma unroll
          for (int e = 0; e < EPW; ++e)
            acc[i * EPW + e] = fmaf(pj, word_elem(vw[ps][i], a.act_dt, e), acc[i * EPW + e]);
      }
    } else {
      const char* vr = vbase + int64_t(j) * row_bytes;
#pragma unroll
      for (int i = 0; i < kSlots; ++i) {
        const int e = part_id + i * kTpk;
        if (e < d) acc[i] = fmaf(pj, load_elem(vr, a.act_dt, e), acc[i]);
      }
    }
  }
  if constexpr (EPW) {
#pragma unroll
    for (int i = 0; i < kWpt; ++i) {
      const int w = part_id + i * kTpk;
      if (w < words)
#pragma unroll
        for (int e = 0; e < EPW; ++e) ored[ks][w * EPW + e] = acc[i * EPW + e];
    }
  } else {
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const int e = part_id + i * kTpk;
      if (e < d) ored[ks][e] = acc[i];
    }
  }
  __syncthreads();
  for (int t = threadIdx.x; t < d; t += blockDim.x) {
    float o = 0.0f;
#pragma unroll
    for (int g = 0; g < kKeysPerPass; ++g) o += ored[g][t];
    pm[2 + t] = o;
  }
  if (threadIdx.x == 0) {
    pm[0] = ml[0];
    pm[1] = ml[1];
  }
  if (!a.counters) return;  // merge_kernel follows
  // The last of the live chunks of (h, b) to finish merges them (a counter per (h, b), wrapping back
  // to 0 for the next launch): no second kernel. Chunks past len were never counted.
  __shared__ bool last;
  const int live = (len + kChunk - 1) / kChunk;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicInc(&a.counters[int64_t(b) * a.heads + h], unsigned(live - 1)) == unsigned(live - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  merge_head(a, part, h, b, live);
}

// The chunks of (h, b) merged by one kernel of their own, when no counters are given.
__global__ void merge_kernel(AttentionArgs a, const float* __restrict__ part, int nchunk) {
  pdl_launch_dependents();
  pdl_wait();
  merge_head(a, part, blockIdx.x, blockIdx.y, nchunk);
}

// Token i of sequence `seq`: k, v to cache rows *pos + i; q * scale to q_out[i]. qkv rows in qkv_dt.
__global__ void qkv_to_cache_kernel(AttentionArgs a, int64_t seq, void* __restrict__ q_out, int qkv_dt) {
  const int64_t i = blockIdx.x;
  const int64_t H = a.hidden;
  const int64_t row = i * 3 * H;
  const int64_t crow = (seq * a.capacity + *a.pos + i) * H;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    store_elem(q_out, a.act_dt, i * H + j, load_elem(a.qkv, qkv_dt, row + j) * a.scale);
    store_elem(a.k_cache, a.act_dt, crow + j, load_elem(a.qkv, qkv_dt, row + H + j));
    store_elem(a.v_cache, a.act_dt, crow + j, load_elem(a.qkv, qkv_dt, row + 2 * H + j));
  }
}

// Four consecutive elements as floats / stored from floats (dt 0 fp32: 16 bytes, else 8 bytes).
__device__ __forceinline__ float4 load4(const void* p, int dt, int64_t i) {
  if (dt == 0) return reinterpret_cast<const float4*>(p)[i / 4];
  const uint2 u = reinterpret_cast<const uint2*>(p)[i / 4];
  float2 lo, hi;
  if (dt == 1) {
    lo = __half22float2(*reinterpret_cast<const __half2*>(&u.x));
    hi = __half22float2(*reinterpret_cast<const __half2*>(&u.y));
  } else {
    lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
    hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  }
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}
__device__ __forceinline__ void store4(void* p, int dt, int64_t i, float4 v) {
  if (dt == 0) {
    reinterpret_cast<float4*>(p)[i / 4] = v;
    return;
  }
  uint2 u;
  if (dt == 1) {
    const __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
    u = make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
  } else {
    const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
    u = make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
  }
  reinterpret_cast<uint2*>(p)[i / 4] = u;
}

// The same, four elements per thread (hidden % 4 == 0 and 16-byte aligned buffers: every OPT model).
__global__ void qkv_to_cache4_kernel(AttentionArgs a, int64_t seq, void* __restrict__ q_out, int qkv_dt) {
  const int64_t i = blockIdx.x;
  const int64_t H = a.hidden;
  const int64_t row = i * 3 * H;
  const int64_t crow = (seq * a.capacity + *a.pos + i) * H;
  for (int64_t j = 4 * int64_t(threadIdx.x); j < H; j += 4 * blockDim.x) {
    float4 q = load4(a.qkv, qkv_dt, row + j);
    q.x *= a.scale, q.y *= a.scale, q.z *= a.scale, q.w *= a.scale;
    store4(q_out, a.act_dt, i * H + j, q);
    store4(a.k_cache, a.act_dt, crow + j, load4(a.qkv, qkv_dt, row + H + j));
    store4(a.v_cache, a.act_dt, crow + j, load4(a.qkv, qkv_dt, row + 2 * H + j));
  }
}

// The row of scores a warp of the causal softmax kernels owns: warp r of the grid takes row r
// (rows = heads x queries of the chunk); query i = r % queries sees keys 0..first_visible + i - 1;
// words: 16-byte words of visible scores, out_words: of the row's len outputs.
struct SoftmaxRow {
  int lane;
  int64_t r, visible, words, out_words;
  bool live;
  __device__ SoftmaxRow(int64_t rows, int64_t queries, int64_t len, int64_t first_visible)
      : lane(int(threadIdx.x % 32)), r(int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32) {
    live = r < rows;
    const int64_t seen = first_visible + r % queries;
    visible = seen < len ? seen : len;
    words = (visible + 3) / 4;
    out_words = (len + 3) / 4;
  }
};

// One warp per row r of scores [rows, ld] fp32 (rows = heads x queries of the chunk): query i = r %
// queries sees keys 0..first_visible + i - 1; softmax over those in fp32, zeros over the rest of the
// row's len keys, written as act to probs [rows, ld]. ld % 4 == 0: 16-byte score loads, 8/16-byte stores.
__global__ void causal_softmax_kernel(const float* __restrict__ scores, int64_t rows, int64_t queries, int64_t len,
                                      int64_t ld, int64_t first_visible, void* __restrict__ probs, int act_dt) {
  const SoftmaxRow row(rows, queries, len, first_visible);
  if (!row.live) return;
  const int lane = row.lane;
  const int64_t r = row.r, visible = row.visible, words = row.words, out_words = row.out_words;
  const float4* s = reinterpret_cast<const float4*>(scores + r * ld);
  auto elem = [&](const float4& v, int k) { return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w; };
  float m = -INFINITY;
  for (int64_t w = lane; w < words; w += 32) {
    const float4 v = s[w];
    for (int k = 0; k < 4; ++k)
      if (w * 4 + k < visible) m = fmaxf(m, elem(v, k));
  }
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float l = 0.0f;
  for (int64_t w = lane; w < words; w += 32) {
    const float4 v = s[w];
    for (int k = 0; k < 4; ++k)
      if (w * 4 + k < visible) l += __expf(elem(v, k) - m);
  }
  for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
  const float inv = 1.0f / l;
  for (int64_t w = lane; w < out_words; w += 32) {
    const float4 v = w < words ? s[w] : make_float4(0, 0, 0, 0);
    float p[4];
    for (int k = 0; k < 4; ++k) p[k] = w * 4 + k < visible ? __expf(elem(v, k) - m) * inv : 0.0f;
    store4(probs, act_dt, r * ld + 4 * w, make_float4(p[0], p[1], p[2], p[3]));
  }
}

// The same softmax with the row held in registers: lane l keeps words l, l + 32, ... (W per lane), so
// the scores are read once instead of three times (max, sum, write), which was most of the softmax's
// traffic. Rows of up to 128 W keys (W = 16: 2048, every OPT context).
template <int W>
__global__ void causal_softmax_regs_kernel(const float* __restrict__ scores, int64_t rows, int64_t queries,
                                           int64_t len, int64_t ld, int64_t first_visible, void* __restrict__ probs,
                                           int act_dt) {
  const SoftmaxRow row(rows, queries, len, first_visible);
  if (!row.live) return;
  const int lane = row.lane;
  const int64_t r = row.r, visible = row.visible, words = row.words, out_words = row.out_words;
  const float4* s = reinterpret_cast<const float4*>(scores + r * ld);
  float v[W][4];
  float m = -INFINITY;
#pragma unroll
  for (int j = 0; j < W; ++j) {
    const int64_t w = lane + 32 * j;
    const float4 x = w < words ? s[w] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
    v[j][0] = x.x, v[j][1] = x.y, v[j][2] = x.z, v[j][3] = x.w;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (w * 4 + k >= visible) v[j][k] = -INFINITY;
      m = fmaxf(m, v[j][k]);
    }
  }
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float l = 0.0f;
#pragma unroll
  for (int j = 0; j < W; ++j)
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[j][k] = __expf(v[j][k] - m);  // exp(-inf) = 0 past the visible keys
      l += v[j][k];
    }
  for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
  const float inv = 1.0f / l;
#pragma unroll
  for (int j = 0; j < W; ++j) {
    const int64_t w = lane + 32 * j;
    if (w >= out_words) break;
    store4(probs, act_dt, r * ld + 4 * w, make_float4(v[j][0] * inv, v[j][1] * inv, v[j][2] * inv, v[j][3] * inv));
  }
}

}  // namespace

size_t decode_attention_partial_floats(int64_t batch, int64_t heads, int64_t capacity, int64_t head_dim) {
  return size_t(batch) * size_t(heads) * size_t((capacity + kChunk - 1) / kChunk) * size_t(head_dim + 2);
}

void launch_decode_attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.head_dim > kMaxHeadDim || a.head_dim <= 0)
    detail::throw_status(2 /*UnsupportedShape*/, "decode attention supports head_dim 1.." +
                                                     std::to_string(kMaxHeadDim) + ", got " + std::to_string(a.head_dim));
  const int nchunk = int((a.capacity + kChunk - 1) / kChunk);
  if (!a.partials) detail::throw_status(1 /*InvalidArgument*/, "decode attention: no partials workspace given");
  // 16-byte rows when the head slice is whole words and every row starts on a word (the cache is
  // cudaMalloc'ed): all OPT models; the element path keeps any other head_dim correct.
  const int64_t elem = a.act_dt == 0 ? 4 : 2, epw = 16 / elem;
  const bool vec = a.head_dim % epw == 0 && (a.hidden * elem) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.k_cache) % 16 == 0 && reinterpret_cast<uintptr_t>(a.v_cache) % 16 == 0;
  const dim3 grid(unsigned(a.heads), unsigned(a.batch), unsigned(nchunk));
  auto* kernel = !vec ? decode_attention_kernel<0> : epw == 8 ? decode_attention_kernel<8> : decode_attention_kernel<4>;
  launch_pdl(kernel, grid, kThreads, 0, stream, a, a.partials);
  SF_CUDA_CHECK_LAUNCH();
  if (a.counters) return;  // the chunks' last block merged them
  launch_pdl(merge_kernel, dim3(unsigned(a.heads), unsigned(a.batch)), 128, 0, stream, a, a.partials, nchunk);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_qkv_to_cache(const AttentionArgs& a, int64_t seq, int64_t n, void* q_out, cudaStream_t stream,
                         int qkv_dt) {
  if (n == 0) return;
  if (qkv_dt != 0 && qkv_dt != a.act_dt)
    detail::throw_status(1 /*InvalidArgument*/, "qkv_to_cache: qkv rows must be fp32 or the activation type");
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (a.hidden % 4 == 0 && aligned(a.qkv) && aligned(q_out) && aligned(a.k_cache) && aligned(a.v_cache))
    qkv_to_cache4_kernel<<<unsigned(n), 256, 0, stream>>>(a, seq, q_out, qkv_dt);
  else
    qkv_to_cache_kernel<<<unsigned(n), 256, 0, stream>>>(a, seq, q_out, qkv_dt);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_causal_softmax(const float* scores, int64_t heads, int64_t queries, int64_t len, int64_t ld,
                           int64_t first_visible, void* probs, int act_dt, cudaStream_t stream) {
  if (queries == 0 || heads == 0) return;
  if (ld % 4 != 0 || ld < len || first_visible < 1)
    detail::throw_status(1 /*InvalidArgument*/, "causal softmax: ld " + std::to_string(ld) +
                                                    " must be a multiple of 4 and >= len " + std::to_string(len) +
                                                    ", first_visible >= 1");
  const int64_t rows = heads * queries;
  constexpr int kWarps = 8;
  const dim3 grid(unsigned((rows + kWarps - 1) / kWarps)), block(kWarps * 32);
  // Words (4 keys) per lane the row needs in registers; longer rows take the three-pass kernel.
  const int64_t per_lane = ((len + 3) / 4 + 31) / 32;
  if (per_lane <= 1)
    causal_softmax_regs_kernel<1><<<grid, block, 0, stream>>>(scores, rows, queries, len, ld, first_visible, probs, act_dt);
  else if (per_lane <= 2)
    causal_softmax_regs_kernel<2><<<grid, block, 0, stream>>>(scores, rows, queries, len, ld, first_visible, probs, act_dt);
  else if (per_lane <= 4)
    causal_softmax_regs_kernel<4><<<grid, block, 0, stream>>>(scores, rows, queries, len, ld, first_visible, probs, act_dt);
  else if (per_lane <= 8)
    causal_softmax_regs_kernel<8><<<grid, block, 0, stream>>>(scores, rows, queries, len, ld, first_visible, probs, act_dt);
  else if (per_lane <= 16)
    causal_softmax_regs_kernel<16><<<grid, block, 0, stream>>>(scores, rows, queries, len, ld, first_visible, probs, act_dt);
  else
    causal_softmax_kernel<<<grid, block, 0, stream>>>(scores, rows, queries, len, ld, first_visible, probs, act_dt);
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace sf::cuda::model
