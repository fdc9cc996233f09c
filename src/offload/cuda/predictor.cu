// The low-rank activation predictor (neuron_store.hpp): score = (a U) V, flag = score > threshold,
// and the exact (oracle) active set with the recall counters of --stats.
//
// Predictor, three small passes, all deterministic (fixed summation orders, no float atomics):
//   1. t partials: U [d, R] split along d into S slices; a thread owns cw consecutive columns of U
//      (one 16-byte load per row), 8 row groups per block reduced in shared memory in fixed order.
//   2. score partials: V [R, ffn] split along R into RS slices; a thread owns cw consecutive
//      neurons; t for the slice (the S partials summed in order) sits in shared memory.
//   3. score = sum of the RS partials in order; flags: by the last block of each column of stage 2
//      (a wrapping counter per column in the scratch), so stages 2 and 3 are one launch.
// At OPT-6.7B with rank 1024 it reads 8 + 32 MB per layer; with rank 128, 1 + 4 MB: latency, not
// bytes, bounds it, so every loop issues kBatch loads together (the first batch before the loop:
// a load-then-use loop compiled to one load in flight per thread, checked in the SASS).
#include "kernels/cuda/check.hpp"
#include "offload/cuda/ffn_math.cuh"
#include "offload/cuda/offload_kernels.hpp"

#include <algorithm>

namespace sf::offload::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBatch = 8;  // loads a thread issues together (rows of U or V, slices of the partials)

int chunk_of(int act) { return act == 0 ? 4 : 8; }

// Slices of stage 1 (along d) and stage 2 (along R), from the shapes alone.
int64_t t_blocks_x(int64_t rank, int act) { return (rank / chunk_of(act) + 31) / 32; }
int64_t t_slices(int64_t d, int64_t rank, int act) {
  const int64_t want = std::max<int64_t>(1, 256 / t_blocks_x(rank, act));
  return std::clamp<int64_t>(want, 1, std::max<int64_t>(1, d / 64));
}
int64_t s_blocks_x(int64_t ffn, int act) { return (ffn / chunk_of(act) + kThreads - 1) / kThreads; }
// Unsigned counters at the start of the scratch, one per column of stage-2 blocks, padded to 16 bytes.
size_t counter_floats(int64_t ffn) {
  return size_t((std::max(s_blocks_x(ffn, 0), s_blocks_x(ffn, 1)) + 3) / 4 * 4);
}
int64_t s_slices(int64_t rank, int64_t ffn, int act) {
  return std::clamp<int64_t>(256 / s_blocks_x(ffn, act), 1, rank);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) predictor_t_kernel(const T* __restrict__ a, const uint4* __restrict__ u,
                                                               int d, int rank, int slices, float* partial) {
  constexpr int cw = kChunk<T>;
  const int rv = blockIdx.x * 32 + threadIdx.x % 32;  // this thread's 16-byte column chunk
  const int g = threadIdx.x / 32;                     // row group 0..7
  const int rows = (d + slices - 1) / slices;
  const int lo = blockIdx.y * rows, hi = min(d, lo + rows);
  const int rvs = rank / cw;
  float acc[cw];
#pragma unroll
  for (int e = 0; e < cw; ++e) acc[e] = 0.0f;
  if (rv < rvs) {
    // The thread's rows lo + g, lo + g + 8, ... in batches of kBatch, each batch's loads issued together
    // (the first before the loop, so ptxas keeps them in flight), the sums in row order.
    float ai[kBatch];
    uint4 w[kBatch];
    auto load = [&](int i0) {
#pragma unroll
      for (int q = 0; q < kBatch; ++q) {
        const int i = i0 + 8 * q;
        ai[q] = i < hi ? to_float(a[i]) : 0.0f;
        w[q] = i < hi ? ld_stream(u + int64_t(i) * rvs + rv) : make_uint4(0, 0, 0, 0);
      }
    };
    const int first = lo + g;
    if (first < hi) load(first);
    for (int i0 = first; i0 < hi; i0 += 8 * kBatch) {
      if (i0 != first) load(i0);
#pragma unroll
      for (int q = 0; q < kBatch; ++q)
        if (i0 + 8 * q < hi)
#pragma unroll
          for (int e = 0; e < cw; ++e) acc[e] = fmaf(ai[q], chunk_elem<T>(w[q], e), acc[e]);
    }
  }
  __shared__ float red[8][32 * 8 + 1];
#pragma unroll
  for (int e = 0; e < cw; ++e) red[g][(threadIdx.x % 32) * cw + e] = acc[e];
  __syncthreads();
  for (int c = threadIdx.x; c < 32 * cw; c += kThreads) {
    const int r = blockIdx.x * 32 * cw + c;
    if (r >= rank) continue;
    float s = 0.0f;
    for (int k = 0; k < 8; ++k) s += red[k][c];
    partial[int64_t(blockIdx.y) * rank + r] = s;
  }
}

// Stage 2 and 3 in one launch: every block writes its slice's partial scores; the last block of a
// column of blocks to finish (a counter per column, atomicInc wrapping back to 0, so the counters are
// ready for the next launch) sums the column's partials in slice order and writes the flags.
template <typename T>
__global__ void __launch_bounds__(kThreads) predictor_s_kernel(const uint4* __restrict__ v, int rank, int ffn,
                                                               int t_slices, int slices, const float* t_partial,
                                                               float* s_partial, const float* __restrict__ threshold,
                                                               uint8_t* __restrict__ flags, unsigned* counters) {
  constexpr int cw = kChunk<T>;
  extern __shared__ float t[];
  const int rows = (rank + slices - 1) / slices;
  const int lo = blockIdx.y * rows, hi = min(rank, lo + rows);
  for (int r = lo + threadIdx.x; r < hi; r += kThreads) {
    float s = 0.0f;
    for (int k = 0; k < t_slices; ++k) s += t_partial[int64_t(k) * rank + r];
    t[r - lo] = s;
  }
  __syncthreads();
  const int bv = blockIdx.x * kThreads + threadIdx.x;  // 16-byte chunk of neurons
  const int bvs = ffn / cw;
  if (bv < bvs) {
    float acc[cw];
#pragma unroll
    for (int e = 0; e < cw; ++e) acc[e] = 0.0f;
    // Rows lo.. in batches of kBatch loads issued together (the first before the loop), in row order.
    uint4 w[kBatch];
    auto load = [&](int r0) {
#pragma unroll
      for (int q = 0; q < kBatch; ++q)
        w[q] = r0 + q < hi ? ld_stream(v + int64_t(r0 + q) * bvs + bv) : make_uint4(0, 0, 0, 0);
    };
    if (lo < hi) load(lo);
    for (int r0 = lo; r0 < hi; r0 += kBatch) {
      if (r0 != lo) load(r0);
#pragma unroll
      for (int q = 0; q < kBatch; ++q)
        if (r0 + q < hi) {
          const float tr = t[r0 + q - lo];
#pragma unroll
          for (int e = 0; e < cw; ++e) acc[e] = fmaf(tr, chunk_elem<T>(w[q], e), acc[e]);
        }
    }
#pragma unroll
    for (int e = 0; e < cw; ++e) s_partial[int64_t(blockIdx.y) * ffn + int64_t(bv) * cw + e] = acc[e];
  }
  // The last block of this column: every other block's partials are visible after its fence.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicInc(&counters[blockIdx.x], unsigned(slices - 1)) == unsigned(slices - 1);
  __syncthreads();
  if (!last || bv >= bvs) return;
  __threadfence();
  // The thread's cw scores: each slice's cw partials as 16-byte loads past L1, kBatch slices in flight
  // at a time, summed in slice order.
  constexpr int kVec = cw / 4;
  const auto* col = reinterpret_cast<const float4*>(s_partial + int64_t(bv) * cw);
  const int64_t slice4 = ffn / 4;  // float4s per slice
  float sum[cw];
#pragma unroll
  for (int e = 0; e < cw; ++e) sum[e] = 0.0f;
  float4 pk[kBatch][kVec];
  auto load = [&](int k0) {
#pragma unroll
    for (int q = 0; q < kBatch; ++q)
#pragma unroll
      for (int x = 0; x < kVec; ++x)
        pk[q][x] = k0 + q < slices ? __ldcg(col + int64_t(k0 + q) * slice4 + x) : make_float4(0, 0, 0, 0);
  };
  load(0);
  for (int k0 = 0; k0 < slices; k0 += kBatch) {
    if (k0 != 0) load(k0);
#pragma unroll
    for (int q = 0; q < kBatch; ++q)
      if (k0 + q < slices)
#pragma unroll
        for (int x = 0; x < kVec; ++x) {
          sum[4 * x] += pk[q][x].x;
          sum[4 * x + 1] += pk[q][x].y;
          sum[4 * x + 2] += pk[q][x].z;
          sum[4 * x + 3] += pk[q][x].w;
        }
  }
#pragma unroll
  for (int e = 0; e < cw; ++e) {
    const int64_t b = int64_t(bv) * cw + e;
    flags[b] = sum[e] > threshold[b] ? 1 : 0;
  }
}

// ---- exact active set ----------------------------------------------------------------------------
template <typename T, int M>
__global__ void __launch_bounds__(256) exact_flags_kernel(const uint4* __restrict__ x, int kv, int ffn,
                                                          const float* __restrict__ b1, CacheView cache,
                                                          BundleSource backing, uint8_t* flags) {
  const int lane = threadIdx.x % 32;
  const int warps = gridDim.x * 8;
  for (int b = blockIdx.x * 8 + threadIdx.x / 32; b < ffn; b += warps) {
    const int s = cache.slot_of[b];
    const uint8_t* bundle = s >= 0 ? cache.pool + uint64_t(s) * backing.stride : backing.base + uint64_t(b) * backing.stride;
    const auto* row = reinterpret_cast<const uint4*>(bundle);
    // gemv_kernel<T, M>'s loop for one row (see ffn_math.cuh's warp_row_dot for M = 1).
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = 0.0f;
    constexpr int kUnroll = 4;
    int i = lane;
    for (; i + 32 * (kUnroll - 1) < kv; i += 32 * kUnroll) {
      uint4 wv[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) wv[u] = ld_stream(row + i + 32 * u);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[m] += dot16(wv[u], __ldg(x + int64_t(m) * kv + i + 32 * u), T{});
    }
    for (; i < kv; i += 32) {
      const uint4 wv = ld_stream(row + i);
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] += dot16(wv, __ldg(x + int64_t(m) * kv + i), T{});
    }
    const float bias = b1[b];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float v = warp_sum(acc[m]);
      v += bias;
      v = fmaxf(v, 0.0f);
      if (lane == m) flags[int64_t(m) * ffn + b] = to_float(from_float<T>(v)) != 0.0f ? 1 : 0;
    }
  }
}

__global__ void __launch_bounds__(1024) count_recall_kernel(const uint8_t* pred, const uint8_t* exact, int ffn,
                                                            unsigned long long* stats) {
  int active = 0, tp = 0, fp = 0;
  for (int b = threadIdx.x; b < ffn; b += blockDim.x) {
    const bool p = pred[b] != 0, e = exact[b] != 0;
    active += e;
    tp += p && e;
    fp += p && !e;
  }
  __shared__ int sum[3];
  if (threadIdx.x < 3) sum[threadIdx.x] = 0;
  __syncthreads();
  atomicAdd(&sum[0], active);  // integer sums: the order does not change the result
  atomicAdd(&sum[1], tp);
  atomicAdd(&sum[2], fp);
  __syncthreads();
  if (threadIdx.x == 0) {
    atomicAdd(&stats[kStatExactRows], 1ull);
    atomicAdd(&stats[kStatExactActive], (unsigned long long)sum[0]);
    atomicAdd(&stats[kStatTruePos], (unsigned long long)sum[1]);
    atomicAdd(&stats[kStatFalsePos], (unsigned long long)sum[2]);
  }
}

template <typename T>
void exact_t(const void* x, int64_t rows, int64_t d, int64_t ffn, const float* b1, CacheView cache,
             BundleSource backing, uint8_t* flags, cudaStream_t stream) {
  const int kv = int(d / kChunk<T>);
  const int grid = int(std::min<int64_t>((ffn + 7) / 8, 8 * sf::cuda::sm_count()));
  const auto* x4 = static_cast<const uint4*>(x);
  switch (rows) {
#define SF_EXACT_CASE(M) \
  case M: exact_flags_kernel<T, M><<<grid, 256, 0, stream>>>(x4, kv, int(ffn), b1, cache, backing, flags); break;
    SF_EXACT_CASE(1) SF_EXACT_CASE(2) SF_EXACT_CASE(3) SF_EXACT_CASE(4)
    SF_EXACT_CASE(5) SF_EXACT_CASE(6) SF_EXACT_CASE(7) SF_EXACT_CASE(8)
#undef SF_EXACT_CASE
    default: ::sf::cuda::detail::throw_status(1 /* InvalidArgument */, "launch_exact_flags: rows must be 1..8");
  }
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t predictor_scratch_floats(int64_t d, int64_t rank, int64_t ffn) {
  // The stage-2 column counters first (their place depends on ffn only, so layers of different
  // ranks share one scratch), then the larger of the two element sizes' slicings.
  size_t n = 0;
  for (int act : {0, 1})
    n = std::max<size_t>(n, size_t(t_slices(d, rank, act) * rank + s_slices(rank, ffn, act) * ffn));
  return counter_floats(ffn) + n;
}

void launch_predictor_t(const void* a, const void* u, int64_t d, int64_t rank, int64_t ffn, float* scratch, int act,
                        cudaStream_t stream) {
  scratch += counter_floats(ffn);
  const dim3 grid(unsigned(t_blocks_x(rank, act)), unsigned(t_slices(d, rank, act)));
  const auto* u4 = static_cast<const uint4*>(u);
  if (act == 1) predictor_t_kernel<__half><<<grid, kThreads, 0, stream>>>(static_cast<const __half*>(a), u4, int(d), int(rank), int(grid.y), scratch);
  else if (act == 2) predictor_t_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(a), u4, int(d), int(rank), int(grid.y), scratch);
  else predictor_t_kernel<float><<<grid, kThreads, 0, stream>>>(static_cast<const float*>(a), u4, int(d), int(rank), int(grid.y), scratch);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_predictor_flags(const void* v, const float* threshold, int64_t d, int64_t rank, int64_t ffn,
                            float* scratch, uint8_t* flags, int act, cudaStream_t stream) {
  auto* counters = reinterpret_cast<unsigned*>(scratch);
  scratch += counter_floats(ffn);
  const int64_t ts = t_slices(d, rank, act), ss = s_slices(rank, ffn, act);
  float* t_partial = scratch;
  float* s_partial = scratch + ts * rank;
  const dim3 grid(unsigned(s_blocks_x(ffn, act)), unsigned(ss));
  const size_t smem = size_t((rank + ss - 1) / ss) * sizeof(float);
  const auto* v4 = static_cast<const uint4*>(v);
  if (act == 1)
    predictor_s_kernel<__half><<<grid, kThreads, smem, stream>>>(v4, int(rank), int(ffn), int(ts), int(ss), t_partial,
                                                                 s_partial, threshold, flags, counters);
  else if (act == 2)
    predictor_s_kernel<__nv_bfloat16><<<grid, kThreads, smem, stream>>>(v4, int(rank), int(ffn), int(ts), int(ss),
                                                                        t_partial, s_partial, threshold, flags, counters);
  else
    predictor_s_kernel<float><<<grid, kThreads, smem, stream>>>(v4, int(rank), int(ffn), int(ts), int(ss), t_partial,
                                                                s_partial, threshold, flags, counters);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_exact_flags(const void* x, int64_t rows, int64_t d, int64_t ffn, const float* b1, CacheView cache,
                        BundleSource backing, uint8_t* flags, int act, cudaStream_t stream) {
  if (act == 1) exact_t<__half>(x, rows, d, ffn, b1, cache, backing, flags, stream);
  else if (act == 2) exact_t<__nv_bfloat16>(x, rows, d, ffn, b1, cache, backing, flags, stream);
  else exact_t<float>(x, rows, d, ffn, b1, cache, backing, flags, stream);
}

void launch_count_recall(const uint8_t* predicted, const uint8_t* exact, int64_t ffn, uint64_t* stats,
                         cudaStream_t stream) {
  count_recall_kernel<<<1, 1024, 0, stream>>>(predicted, exact, int(ffn), reinterpret_cast<unsigned long long*>(stats));
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace sf::offload::cuda
