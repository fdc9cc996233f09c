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
#include "kernels/cuda/model/rope.cuh"
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
constexpr int kMaxRopeHalf = 256;  // qkv_to_cache: rotary_dims <= 512

// Element e of a 16-byte word holding 8 halves / 8 bf16 / 4 floats.
__device__ __forceinline__ float word_elem(const uint4& w, int dt, int e) {
  const uint32_t u = e < 0 ? 0 : (dt == 0 ? (&w.x)[e] : (&w.x)[e / 2]);
  if (dt == 0) return __uint_as_float(u);
  const uint16_t hbits = uint16_t(e % 2 ? u >> 16 : u & 0xffffu);
  if (dt == 1) return __half2float(__ushort_as_half(hbits));
  return __bfloat162float(__ushort_as_bfloat16(hbits));
}

__device__ __forceinline__ int64_t chunks_of(int64_t capacity) {
  return (capacity + kChunk - 1) / kChunk;
}

// Merge the chunks 0..n-1 of query heads h0..h0+count-1 of sequence b with the block's threads (one
// (head, dim) output each): out = sum_c o_c e^(m_c - M) / sum_c l_c e^(m_c - M) over the chunks
// with l_c > 0, in chunk order. The partials are read past L1: in the fused path other blocks wrote
// them during this launch.
__device__ void merge_heads(const AttentionArgs& a, const float* part, int h0, int count, int b,
                            int n) {
  const int d = int(a.head_dim);
  const int64_t chunks = chunks_of(a.capacity);  // per (b, h) in the workspace
  for (int idx = threadIdx.x; idx < count * d; idx += blockDim.x) {
    const int h = h0 + idx / d, dim = idx % d;
    const float* base = part + (int64_t(b) * a.heads + h) * chunks * (d + 2);
    float M = -INFINITY;
    for (int c = 0; c < n; ++c) M = fmaxf(M, __ldcg(base + c * (d + 2)));
    float L = 0.0f, o = 0.0f;
    for (int c = 0; c < n; ++c) {
      const float l = __ldcg(base + c * (d + 2) + 1);
      if (l > 0.0f) {
        const float w = __expf(__ldcg(base + c * (d + 2)) - M);
        L += l * w;
        o += __ldcg(base + c * (d + 2) + 2 + dim) * w;
      }
    }
    store_elem(a.out, a.act_dt, int64_t(b) * a.heads * d + int64_t(h) * d + dim, o / L);
  }
}

// Element e of a head slice x (fp32 qkv row) as attention uses it: unchanged without rotary
// positions (OPT: q stays fp32 up to the scores); with them rounded to act (HF's q and k are the
// projection's act output) and rotated when e < rotary_dims. cs: cos and sin of the token's pairs.
__device__ __forceinline__ float rotated_elem(const float* x, int e, int rotary_dims,
                                              const float (*cs)[kMaxHeadDim / 2], bool rope,
                                              int dt) {
  if (!rope) return x[e];
  const float v = round_act(x[e], dt);
  if (e >= rotary_dims) return v;
  const int half = rotary_dims / 2;
  const bool lo = e < half;
  const int i = lo ? e : e - half;
  return rope_rotate(v, round_act(x[lo ? e + half : e - half], dt), lo, cs[0][i], cs[1][i], dt);
}

// An empty asm that "changes" w: the decode kernel's pass loop re-reads its key and value words,
// and without it the compiler hoists their conversion to fp32 out of the loop, holding the floats
// instead of the words (ptxas, sm_90a: 245 registers instead of 147 at 8 heads per pass). Placed
// after the words' last use in a pass, so it never waits on their loads.
__device__ __forceinline__ void opaque(uint4& w) {
  asm volatile("" : "+r"(w.x), "+r"(w.y), "+r"(w.z), "+r"(w.w));
}

// Block (KV head kvh, sequence b, chunk c) over keys [c * kChunk, min((c + 1) * kChunk, len)), for
// the G = heads / kv_heads query heads kvh * G.. of the group, GS of them at a time: the chunk's
// key and value words are loaded into registers once and serve every pass. The chunk holding the
// new token writes its k (rotated), v row first (no other block reads that row). Writes each query
// head's chunk max, sum of exp and unnormalised output to the partials. Rows are read as 16-byte
// words when the head slice is a whole number of them, element by element otherwise.
// EPW: elements per 16-byte word (8: fp16/bf16, 4: fp32), 0: element by element. MULTI: G may
// exceed GS (more than one pass; a single-pass kernel has no loop to keep its registers live
// across).
template <int EPW, int GS, bool MULTI>
__global__ void __launch_bounds__(kThreads)
    decode_attention_kernel(AttentionArgs a, float* __restrict__ part) {
  // Per thread: up to WPT 16-byte words of a row (or SLOTS single elements).
  constexpr int kWpt = EPW ? (kMaxHeadDim / EPW + kTpk - 1) / kTpk : 0;
  constexpr int kSlots = EPW ? kWpt * EPW : kMaxHeadDim / kTpk;
  __shared__ float q[GS][kMaxHeadDim];
  __shared__ float pr[GS][kChunk];
  __shared__ float ored[kKeysPerPass][GS][kMaxHeadDim];
  __shared__ float ml[GS][2];
  __shared__ float cs[2][kMaxHeadDim / 2];  // rotary cos, sin of the new token's pairs
  pdl_launch_dependents();
  // The L2 prefetch first: the weights are constant, so it may start before the previous kernel ends.
  if (threadIdx.x < 32)
    issue_l2_prefetch(a.prefetch, blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z),
                      gridDim.x * gridDim.y * gridDim.z, threadIdx.x);
  const bool rope = a.rope_inv_freq != nullptr;
  const int rd = int(a.rotary_dims), half = rd / 2;
  const float inv_freq =
      rope && int(threadIdx.x) < half ? a.rope_inv_freq[threadIdx.x] : 0.0f;  // constant
  pdl_wait();  // before *pos, the qkv row and the cache (blocks past len return below, after it)
  const int kvh = blockIdx.x, b = blockIdx.y, c = blockIdx.z;
  const int d = int(a.head_dim), G = int(a.heads / a.kv_heads), h0 = kvh * G;
  const int64_t QD = a.heads * d, KD = a.kv_heads * d;
  const int p = *a.pos, len = p + 1;
  const int j0 = c * kChunk;
  const int nchunk = gridDim.z;
  auto partial = [&](int h) {
    return part + ((int64_t(b) * a.heads + h) * nchunk + c) * (d + 2);
  };  // m, l, o[d]
  if (j0 >= len) {
    for (int g = threadIdx.x; g < G; g += blockDim.x) {
      partial(h0 + g)[0] = -INFINITY;
      partial(h0 + g)[1] = 0.0f;
    }
    return;
  }
  const float* row = a.qkv + int64_t(b) * (QD + 2 * KD);
  const int64_t cache_row = int64_t(b) * a.capacity;
  if (rope) {
    if (int(threadIdx.x) < half)
      rope_cos_sin(p, inv_freq, a.rope_attention_factor, a.act_dt, cs[0][threadIdx.x],
                   cs[1][threadIdx.x]);
    __syncthreads();
  }
  // q of the pass's heads g0.., scaled (zeros for heads past the group: computed, never written).
  auto load_q = [&](int g0) {
    for (int i = threadIdx.x; i < GS * d; i += blockDim.x) {
      const int gi = GS == 1 ? 0 : i / d, t = GS == 1 ? i : i % d;
      q[gi][t] =
          g0 + gi < G
              ? rotated_elem(row + int64_t(h0 + g0 + gi) * d, t, rd, cs, rope, a.act_dt) * a.scale
              : 0.0f;
    }
  };
  load_q(0);
  if (p >= j0 && p < j0 + kChunk) {
    const float* kr = row + QD + int64_t(kvh) * d;
    const float* vr = row + QD + KD + int64_t(kvh) * d;
    for (int t = threadIdx.x; t < d; t += blockDim.x) {
      store_elem(a.k_cache, a.act_dt, (cache_row + p) * KD + kvh * d + t,
                 rotated_elem(kr, t, rd, cs, rope, a.act_dt));
      store_elem(a.v_cache, a.act_dt, (cache_row + p) * KD + kvh * d + t, vr[t]);
    }
  }
  __syncthreads();  // also makes the new k, v row visible to this block's threads

  const int elem = a.act_dt == 0 ? 4 : 2;
  const int words = EPW ? d / EPW : 0;
  const int n_keys = min(kChunk, len - j0);
  const int part_id = int(threadIdx.x) % kTpk, ks = int(threadIdx.x) / kTpk;
  const char* kbase =
      static_cast<const char*>(a.k_cache) + ((cache_row + j0) * KD + int64_t(kvh) * d) * elem;
  const char* vbase =
      static_cast<const char*>(a.v_cache) + ((cache_row + j0) * KD + int64_t(kvh) * d) * elem;
  const int64_t row_bytes = KD * elem;

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

  const int passes = MULTI ? (G + GS - 1) / GS : 1;
  for (int pass = 0; pass < passes; ++pass) {
    const int g0 = pass * GS;
    if (pass > 0) {
      load_q(g0);
      __syncthreads();
    }
    // Scores: the 16 threads of a key split its row and reduce with shuffles (aligned 16-lane
    // groups).
#pragma unroll
    for (int ps = 0; ps < kPasses; ++ps) {
      const int j = ps * kKeysPerPass + ks;
      float sacc[GS];
#pragma unroll
      for (int gi = 0; gi < GS; ++gi) sacc[gi] = 0.0f;
      if (j < n_keys) {
        if constexpr (EPW) {
#pragma unroll
          for (int i = 0; i < kWpt; ++i) {
            const int w = part_id + i * kTpk;
            if (w < words)
#pragma unroll
              for (int e = 0; e < EPW; ++e) {
                const float kv = word_elem(kw[ps][i], a.act_dt, e);
#pragma unroll
                for (int gi = 0; gi < GS; ++gi) sacc[gi] = fmaf(q[gi][w * EPW + e], kv, sacc[gi]);
              }
          }
        } else {
          const char* kr = kbase + int64_t(j) * row_bytes;
#pragma unroll
          for (int i = 0; i < kSlots; ++i) {
            const int e = part_id + i * kTpk;
            if (e < d) {
              const float kv = load_elem(kr, a.act_dt, e);
#pragma unroll
              for (int gi = 0; gi < GS; ++gi) sacc[gi] = fmaf(q[gi][e], kv, sacc[gi]);
            }
          }
        }
      }
#pragma unroll
      for (int gi = 0; gi < GS; ++gi) {
#pragma unroll
        for (int o = kTpk / 2; o > 0; o >>= 1)
          sacc[gi] += __shfl_xor_sync(0xffffffffu, sacc[gi], o);
        if (part_id == 0 && j < n_keys) pr[gi][j] = sacc[gi];
      }
    }
    __syncthreads();
    // Softmax over the chunk's (at most 32) scores of head gi by warp gi % 4.
    for (int gi = int(threadIdx.x) / 32; gi < GS; gi += kThreads / 32) {
      const int lane = int(threadIdx.x) % 32;
      const float sv = lane < n_keys ? pr[gi][lane] : -INFINITY;
      float m = sv;
      for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
      const float e = lane < n_keys ? __expf(sv - m) : 0.0f;
      float l = e;
      for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
      if (lane < n_keys) pr[gi][lane] = e;
      if (lane == 0) {
        ml[gi][0] = m;
        ml[gi][1] = l;
      }
    }
    __syncthreads();

    // Values: thread (ks, part) accumulates keys ks, ks + 8, ... over its words (or elements) of
    // the row.
    float acc[GS][kSlots];
#pragma unroll
    for (int gi = 0; gi < GS; ++gi)
#pragma unroll
      for (int i = 0; i < kSlots; ++i) acc[gi][i] = 0.0f;
#pragma unroll
    for (int ps = 0; ps < kPasses; ++ps) {
      const int j = ps * kKeysPerPass + ks;
      if (j >= n_keys) break;
      float pj[GS];
#pragma unroll
      for (int gi = 0; gi < GS; ++gi) pj[gi] = pr[gi][j];
      if constexpr (EPW) {
#pragma unroll
        for (int i = 0; i < kWpt; ++i) {
          const int w = part_id + i * kTpk;
          if (w < words)
#pragma unroll
            for (int e = 0; e < EPW; ++e) {
              const float vv = word_elem(vw[ps][i], a.act_dt, e);
#pragma unroll
              for (int gi = 0; gi < GS; ++gi)
                acc[gi][i * EPW + e] = fmaf(pj[gi], vv, acc[gi][i * EPW + e]);
            }
        }
      } else {
        const char* vr = vbase + int64_t(j) * row_bytes;
#pragma unroll
        for (int i = 0; i < kSlots; ++i) {
          const int e = part_id + i * kTpk;
          if (e < d) {
            const float vv = load_elem(vr, a.act_dt, e);
#pragma unroll
            for (int gi = 0; gi < GS; ++gi) acc[gi][i] = fmaf(pj[gi], vv, acc[gi][i]);
          }
        }
      }
    }
#pragma unroll
    for (int gi = 0; gi < GS; ++gi) {
      if constexpr (EPW) {
#pragma unroll
        for (int i = 0; i < kWpt; ++i) {
          const int w = part_id + i * kTpk;
          if (w < words)
#pragma unroll
            for (int e = 0; e < EPW; ++e) ored[ks][gi][w * EPW + e] = acc[gi][i * EPW + e];
        }
      } else {
#pragma unroll
        for (int i = 0; i < kSlots; ++i) {
          const int e = part_id + i * kTpk;
          if (e < d) ored[ks][gi][e] = acc[gi][i];
        }
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < GS * d; i += blockDim.x) {
      const int gi = GS == 1 ? 0 : i / d, t = GS == 1 ? i : i % d;
      if (g0 + gi >= G) break;  // i grows with gi
      float o = 0.0f;
#pragma unroll
      for (int g = 0; g < kKeysPerPass; ++g) o += ored[g][gi][t];
      partial(h0 + g0 + gi)[2 + t] = o;
    }
    if (int(threadIdx.x) < GS && g0 + int(threadIdx.x) < G) {
      partial(h0 + g0 + threadIdx.x)[0] = ml[threadIdx.x][0];
      partial(h0 + g0 + threadIdx.x)[1] = ml[threadIdx.x][1];
    }
    if (pass + 1 < passes) {
      __syncthreads();  // the next pass rewrites q, pr, ml and ored
      if constexpr (EPW) {
#pragma unroll
        for (int ps = 0; ps < kPasses; ++ps)
#pragma unroll
          for (int i = 0; i < kWpt; ++i) {
            opaque(kw[ps][i]);
            opaque(vw[ps][i]);
          }
      }
    }
  }
  if (!a.counters) return;  // merge_kernel follows
  // The last of the live chunks of (kvh, b) to finish merges the group's heads (a counter per
  // (b, kvh), wrapping back to 0 for the next launch): no second kernel. Chunks past len were never
  // counted.
  __shared__ bool last;
  const int live = (len + kChunk - 1) / kChunk;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0)
    last = atomicInc(&a.counters[int64_t(b) * a.kv_heads + kvh], unsigned(live - 1)) ==
           unsigned(live - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  merge_heads(a, part, h0, G, b, live);
}

// The chunks of query head blockIdx.x of sequence blockIdx.y merged by a kernel of their own, when
// no counters are given.
__global__ void merge_kernel(AttentionArgs a, const float* __restrict__ part, int nchunk) {
  pdl_launch_dependents();
  pdl_wait();
  merge_heads(a, part, blockIdx.x, 1, blockIdx.y, nchunk);
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

// V consecutive elements at element index i as floats / stored from floats (V = 4: one 16- or
// 8-byte access, V = 1: one element).
template <int V>
__device__ __forceinline__ void load_v(const void* p, int dt, int64_t i, float (&x)[V]) {
  if constexpr (V == 4) {
    const float4 t = load4(p, dt, i);
    x[0] = t.x, x[1] = t.y, x[2] = t.z, x[3] = t.w;
  } else {
    x[0] = load_elem(p, dt, i);
  }
}
template <int V>
__device__ __forceinline__ void store_v(void* p, int dt, int64_t i, const float (&x)[V]) {
  if constexpr (V == 4)
    store4(p, dt, i, make_float4(x[0], x[1], x[2], x[3]));
  else
    store_elem(p, dt, i, x[0]);
}

// Elements e..e+V-1 of a head (x, read at row index i of `qkv` in qkv_dt) rotated in place: the
// same V-element group of the partner half sits at i +- rotary_dims / 2. V = 4 needs rotary_dims
// % 8 == 0 so that a group lies in one half.
template <int V>
__device__ __forceinline__ void rotate_v(const void* qkv, int qkv_dt, int64_t i, int e,
                                         int rotary_dims, const float (*cs)[kMaxRopeHalf], int dt,
                                         float (&x)[V]) {
#pragma unroll
  for (int v = 0; v < V; ++v) x[v] = round_act(x[v], dt);
  if (e >= rotary_dims) return;
  const int half = rotary_dims / 2;
  const bool lo = e < half;
  float partner[V];
  load_v<V>(qkv, qkv_dt, lo ? i + half : i - half, partner);
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const int k = (lo ? e : e - half) + v;
    x[v] = rope_rotate(x[v], round_act(partner[v], dt), lo, cs[0][k], cs[1][k], dt);
  }
}

// Token i of sequence `seq` (position *pos + i): k (rotated), v to its cache row, q (rotated) *
// scale to q_out[i]; qkv rows [n, q_dim + 2 kv_dim] in qkv_dt. V elements per thread and access
// (V = 4: head_dim % 4 == 0, rotary_dims % 8 == 0, 16-byte aligned buffers: every model we run).
// Without rotary positions q * scale is rounded once, as before the rotary path existed.
template <int V>
__global__ void qkv_to_cache_kernel(AttentionArgs a, int64_t seq, void* __restrict__ q_out,
                                    int qkv_dt) {
  __shared__ float cs[2][kMaxRopeHalf];
  const int64_t i = blockIdx.x;
  const int d = int(a.head_dim), rd = int(a.rotary_dims);
  const int64_t QD = a.heads * d, KD = a.kv_heads * d;
  const int64_t pos = *a.pos + i;
  const bool rope = a.rope_inv_freq != nullptr;
  if (rope) {
    for (int t = threadIdx.x; t < rd / 2; t += blockDim.x)
      rope_cos_sin(pos, a.rope_inv_freq[t], a.rope_attention_factor, a.act_dt, cs[0][t], cs[1][t]);
    __syncthreads();
  }
  const int64_t row = i * (QD + 2 * KD);
  const int64_t crow = (seq * a.capacity + pos) * KD;
  for (int64_t j = V * int64_t(threadIdx.x); j < QD; j += V * blockDim.x) {
    float x[V];
    load_v<V>(a.qkv, qkv_dt, row + j, x);
    if (rope) rotate_v<V>(a.qkv, qkv_dt, row + j, int(j % d), rd, cs, a.act_dt, x);
#pragma unroll
    for (int v = 0; v < V; ++v) x[v] *= a.scale;
    store_v<V>(q_out, a.act_dt, i * QD + j, x);
  }
  for (int64_t j = V * int64_t(threadIdx.x); j < KD; j += V * blockDim.x) {
    float k[V], v[V];
    load_v<V>(a.qkv, qkv_dt, row + QD + j, k);
    load_v<V>(a.qkv, qkv_dt, row + QD + KD + j, v);
    if (rope) rotate_v<V>(a.qkv, qkv_dt, row + QD + j, int(j % d), rd, cs, a.act_dt, k);
    store_v<V>(a.k_cache, a.act_dt, crow + j, k);
    store_v<V>(a.v_cache, a.act_dt, crow + j, v);
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

AttentionArgs checked_attention_args(const AttentionArgs& a, const char* what) {
  auto fail = [&](int status, const std::string& m) {
    detail::throw_status(status, std::string(what) + ": " + m);
  };
  if (a.heads <= 0 || a.kv_heads <= 0 || a.heads % a.kv_heads != 0)
    fail(1 /*InvalidArgument*/, "kv_heads must divide heads, got heads " + std::to_string(a.heads) +
                                    " and kv_heads " + std::to_string(a.kv_heads));
  if (a.head_dim <= 0 || a.batch <= 0 || a.capacity <= 0)
    fail(1, "head_dim, batch and capacity must be > 0, got " + std::to_string(a.head_dim) + ", " +
                std::to_string(a.batch) + ", " + std::to_string(a.capacity));
  if (a.act_dt < 0 || a.act_dt > 2)
    fail(1, "act_dt must be 0 (fp32), 1 (fp16) or 2 (bf16), got " + std::to_string(a.act_dt));
  if (a.rope_inv_freq && (a.rotary_dims < 2 || a.rotary_dims % 2 != 0 ||
                          a.rotary_dims > a.head_dim || a.rotary_dims > 2 * kMaxRopeHalf))
    fail(2 /*UnsupportedShape*/,
         "rotary_dims must be even, 2..head_dim (" + std::to_string(a.head_dim) + ") and <= " +
             std::to_string(2 * kMaxRopeHalf) + ", got " + std::to_string(a.rotary_dims));
  AttentionArgs r = a;
  if (r.scale == 0.0f) r.scale = 1.0f / std::sqrt(float(a.head_dim));
  return r;
}

size_t decode_attention_partial_floats(int64_t batch, int64_t heads, int64_t capacity, int64_t head_dim) {
  return size_t(batch) * size_t(heads) * size_t((capacity + kChunk - 1) / kChunk) * size_t(head_dim + 2);
}

namespace {

// Query heads per pass of the decode kernel, by group size G = heads / kv_heads. A block serves its
// group in ceil(G / GS) passes over the chunk's key and value words (loaded once), GS heads' scores
// and value sums at a time. Registers (ptxas, sm_90a, fp16/bf16 rows; the multi-head kernel before
// GQA used 55):
//   | G        | models                                    | kernel          | registers |
//   | 1        | OPT, GPT-2, Llama 2 7B/13B, SmolLM2-1.7B  | <8, 1, single>  | 48        |
//   | 2        | 16 query heads over 8 KV heads            | <8, 2, single>  | 56        |
//   | 3, 4     | SmolLM2-135M/360M, Llama 3 8B, Mistral 7B | <8, 4, single>  | 64        |
//   | 5..8     | Qwen2 (6, 7), Llama 2/3 70B (8)           | <8, 8, single>  | 96        |
//   | 9+ (MQA) | two or more passes                        | <8, 8, multi>   | 149       |
//   | fp32 rows: G = 1 single pass (80 registers), else one head per pass (96); rows that are not
//   | whole 16-byte words: element by element, the same split (40 / 64).
// Not timed yet: a GQA block does G heads' arithmetic on one chunk's loads (grid kv_heads x batch x
// chunks), so short contexts launch fewer, longer blocks than the multi-head kernel would.
using DecodeKernel = void (*)(AttentionArgs, float*);
DecodeKernel decode_kernel_for(int64_t epw, bool vec, int64_t group) {
  if (!vec)
    return group == 1 ? decode_attention_kernel<0, 1, false> : decode_attention_kernel<0, 1, true>;
  if (epw == 4)
    return group == 1 ? decode_attention_kernel<4, 1, false> : decode_attention_kernel<4, 1, true>;
  if (group == 1) return decode_attention_kernel<8, 1, false>;
  if (group == 2) return decode_attention_kernel<8, 2, false>;
  if (group <= 4) return decode_attention_kernel<8, 4, false>;
  if (group <= 8) return decode_attention_kernel<8, 8, false>;
  return decode_attention_kernel<8, 8, true>;
}

}  // namespace

void launch_decode_attention(const AttentionArgs& args, cudaStream_t stream) {
  const AttentionArgs a = checked_attention_args(args, "decode attention");
  if (a.head_dim > kMaxHeadDim)
    detail::throw_status(2 /*UnsupportedShape*/, "decode attention supports head_dim 1.." +
                                                     std::to_string(kMaxHeadDim) + ", got " + std::to_string(a.head_dim));
  const int nchunk = int((a.capacity + kChunk - 1) / kChunk);
  if (!a.partials) detail::throw_status(1 /*InvalidArgument*/, "decode attention: no partials workspace given");
  // 16-byte rows when the head slice is whole words and every row starts on a word (the cache is
  // cudaMalloc'ed): every model we run; the element path keeps any other head_dim correct.
  const int64_t elem = a.act_dt == 0 ? 4 : 2, epw = 16 / elem, kv_dim = a.kv_heads * a.head_dim;
  const bool vec = a.head_dim % epw == 0 && (kv_dim * elem) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.k_cache) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.v_cache) % 16 == 0;
  const dim3 grid(unsigned(a.kv_heads), unsigned(a.batch), unsigned(nchunk));
  launch_pdl(decode_kernel_for(epw, vec, a.heads / a.kv_heads), grid, kThreads, 0, stream, a,
             a.partials);
  SF_CUDA_CHECK_LAUNCH();
  if (a.counters) return;  // the chunks' last block merged them
  launch_pdl(merge_kernel, dim3(unsigned(a.heads), unsigned(a.batch)), 128, 0, stream, a, a.partials, nchunk);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_qkv_to_cache(const AttentionArgs& args, int64_t seq, int64_t n, void* q_out,
                         cudaStream_t stream, int qkv_dt) {
  if (n == 0) return;
  const AttentionArgs a = checked_attention_args(args, "qkv_to_cache");
  if (qkv_dt != 0 && qkv_dt != a.act_dt)
    detail::throw_status(1 /*InvalidArgument*/, "qkv_to_cache: qkv rows must be fp32 or the activation type");
  if (seq < 0 || seq >= a.batch)
    detail::throw_status(1, "qkv_to_cache: sequence " + std::to_string(seq) +
                                " outside the batch of " + std::to_string(a.batch));
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vec = a.head_dim % 4 == 0 && (!a.rope_inv_freq || a.rotary_dims % 8 == 0) &&
                   aligned(a.qkv) && aligned(q_out) && aligned(a.k_cache) && aligned(a.v_cache);
  if (vec)
    qkv_to_cache_kernel<4><<<unsigned(n), 256, 0, stream>>>(a, seq, q_out, qkv_dt);
  else
    qkv_to_cache_kernel<1><<<unsigned(n), 256, 0, stream>>>(a, seq, q_out, qkv_dt);
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
