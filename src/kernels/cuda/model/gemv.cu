// The dense decode product y[m, n] = epilogue(x[m, :] . W[n, :]) for M <= 8 (batch-1..8 decode); from
// M = gemv_mma_min_m() on (fp16 / bf16) the tensor-core variant at the end of this file.
//
// Decode is bound by HBM: every byte of W is read exactly once per step and nothing else matters.
// So: one warp per output row (N = 4096..50272 rows give 512..6284 blocks of 8 warps, enough to fill
// 132 SMs), each lane streaming 16-byte chunks of its row with UNROLL loads in flight before the
// first use, W read with ld.global.nc.L1::no_allocate so it does not evict x from L1 (x is [M, K],
// at most 8 x 16384 x 2 bytes, read by every warp of the block). The fused epilogue (bias,
// activation, fp32 residual, output type) saves cuBLAS's extra pass over y.
//
// A gated epilogue (W's rows 2j, 2j + 1 = gate j, up j, epilogue.cuh) changes only the stores:
// warps 2i and 2i + 1 of a block own such a pair (row = block * kWarps + warp, kWarps even) and
// the up warp hands its sums to the gate warp through shared memory; the bulk kernel's block runs
// its rows in order (an even number of them); the tensor-core kernel's tile has the pair adjacent.
//
// Launched with programmatic dependent launch (pdl.cuh): each warp issues its first UNROLL loads of
// W (constant) before pdl_wait(), so on sm_90+ the first wave streams weights while the previous
// kernel (the layer norm or attention that writes x) drains; x, the residual and y come after.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/dot16.cuh"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/l2_prefetch.cuh"
#include "kernels/cuda/model/model_kernels.hpp"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/ptx.cuh"

namespace sf::cuda::model {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;

// W is streamed once (ld.global.nc.L1::no_allocate, ptx.cuh), keeping L1 for the x rows every
// warp re-reads.
__device__ __forceinline__ uint4 ld_stream(const uint4* p) { return ptx::ld_global_nc_na_v4(p); }

// acc[m] += W row chunk . x[m] chunk for the 16-byte chunks i, i + 32, ... < kv past the full
// batches (the loop tail of both kernels below).
template <typename T, int M>
__device__ __forceinline__ void dot_tail(float (&acc)[M], const uint4* wr, const uint4* x, int kv, int i) {
  for (; i < kv; i += 32) {
    const uint4 wt = ld_stream(wr + i);
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] += dot16(wt, __ldg(x + int64_t(m) * kv + i), T{});
  }
}

// Every lane ends with every token's sum (butterfly); lane m keeps token m's, so the epilogue (bias,
// activation, residual, three output types) is inlined once per kernel, not M times: with M copies
// in each of the 24 instantiations cicc and ptxas took minutes per architecture.
//
// Gated: the warp pair (2i, 2i + 1) holds rows (2j, 2j + 1), both live or both past N (N is even).
// The up warp leaves its sums in shared memory; a named barrier per pair (ids 1..4, 64 threads)
// lets the gate warp read them, and a second one frees the slot for the pair's next row.
template <int M>
__device__ __forceinline__ void store_row(const float (&acc)[M], int lane, int row, const EpilogueParams& ep) {
  float mine = 0.0f;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == m) mine = v;
  }
  if (!ep.gated) {
    if (lane < M) epilogue_store(ep, lane, row, mine);  // one lane per token row
    return;
  }
  __shared__ float up[kWarps / 2][M];
  const int warp = int(threadIdx.x) / 32, pair = warp / 2;
  if ((warp & 1) && lane < M) up[pair][lane] = mine;
  ptx::named_barrier_sync(1 + pair, 64);
  if (!(warp & 1) && lane < M) epilogue_store_gated(ep, lane, row >> 1, mine, up[pair][lane]);
  ptx::named_barrier_sync(1 + pair, 64);
}

template <typename T, int M>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const uint4* __restrict__ w, const uint4* __restrict__ x,
                                                           int n, int kv, EpilogueParams ep, L2Prefetch next,
                                                           int tail_start) {
  pdl_launch_dependents();
  // The blocks of the last waves start while HBM drains: they ask for the head of the next product's
  // weights (an L2 prefetch, a hint) so the gap between the two kernels carries bytes.
  if (int(blockIdx.x) >= tail_start && threadIdx.x < 32)
    issue_l2_prefetch(next, blockIdx.x - unsigned(tail_start), gridDim.x - unsigned(tail_start), threadIdx.x);
  const int row = blockIdx.x * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const bool live = row < n;
  const uint4* wr = w + int64_t(live ? row : 0) * kv;  // kv: 16-byte chunks per row
  // The first batch of W before the wait (W is constant); a warp past the last row waits, then exits.
  uint4 wv[kUnroll];
  if (live && lane + 32 * (kUnroll - 1) < kv)
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = ld_stream(wr + lane + 32 * u);
  pdl_wait();
  if (!live) return;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  int i = lane;
  for (; i + 32 * (kUnroll - 1) < kv; i += 32 * kUnroll) {
    if (i != lane)  // the first batch is already in flight
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) wv[u] = ld_stream(wr + i + 32 * u);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] += dot16(wv[u], __ldg(x + int64_t(m) * kv + i + 32 * u), T{});
  }
  dot_tail<T, M>(acc, wr, x, kv, i);
  store_row<M>(acc, lane, row, ep);
}

// The persistent variant (kPersistentGemv, check.hpp): gridDim.x blocks (at most as many as fit the
// GPU at once, persistent_grid), warp w of block b taking rows b * kWarps + w, then + gridDim.x *
// kWarps, ... Inside a row the next batch of W is issued before the current one is used (two batches
// in flight instead of one), and the next row's first batch before this row's tail, reduction and
// store. Per row the sums are gemv_kernel's, in its order: the outputs are bit-identical.
template <typename T, int M>
__global__ void __launch_bounds__(kWarps * 32) gemv_persistent_kernel(const uint4* __restrict__ w,
                                                                      const uint4* __restrict__ x, int n, int kv,
                                                                      EpilogueParams ep) {
  pdl_launch_dependents();
  const int lane = threadIdx.x % 32;
  const int stride = int(gridDim.x) * kWarps;
  int row = blockIdx.x * kWarps + threadIdx.x / 32;
  const bool full_batch = lane + 32 * (kUnroll - 1) < kv;  // a row has a first batch at all
  uint4 wv[kUnroll];
  if (row < n && full_batch)
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = ld_stream(w + int64_t(row) * kv + lane + 32 * u);
  pdl_wait();
  for (; row < n; row += stride) {
    const uint4* wr = w + int64_t(row) * kv;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = 0.0f;
    int i = lane;
    for (; i + 32 * (kUnroll - 1) < kv; i += 32 * kUnroll) {
      uint4 cur[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) cur[u] = wv[u];
      if (i + 32 * kUnroll + 32 * (kUnroll - 1) < kv)  // this row's next batch, in flight during the math
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) wv[u] = ld_stream(wr + i + 32 * kUnroll + 32 * u);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[m] += dot16(cur[u], __ldg(x + int64_t(m) * kv + i + 32 * u), T{});
    }
    // The next row's first batch before this row's tail, reduction and store.
    if (row + stride < n && full_batch)
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) wv[u] = ld_stream(w + int64_t(row + stride) * kv + lane + 32 * u);
    dot_tail<T, M>(acc, wr, x, kv, i);
    store_row<M>(acc, lane, row, ep);
  }
}

// The bulk-copy variant (kBulkGemv, check.hpp; sm_90+): block b owns rows [b R, b R + R) (R =
// rows_per_block), which are contiguous in W, and one producer warp streams them through a ring of
// kBulkStages chunks in shared memory with cp.async.bulk (the SM's copy engine; an mbarrier per
// stage says a chunk has landed, a second one that the consumers are done with it). A chunk is a
// whole part of one row (chunk_words 16-byte words, at most 8 KB, a multiple of 512 bytes: rows of K =
// 4096 are one chunk, K = 16384 four). The 8 consumer warps read a chunk's words from shared memory,
// thread j taking words j, j + 256, ..., and at a row's last chunk add their sums (butterfly, then
// the warps in order) and store. The loads never go through registers or the LSU's miss queues, so
// the bytes in flight per SM are the ring's, not what the registers hold. Same products as
// gemv_kernel, grouped differently: equal within rounding, not bit for bit.
constexpr int kBulkStages = 4;
constexpr int kBulkChunkWords = 512;  // 8 KB

template <typename T, int M>
__global__ void __launch_bounds__((kWarps + 1) * 32) gemv_bulk_kernel(const uint4* __restrict__ w,
                                                                      const uint4* __restrict__ x, int n, int kv,
                                                                      int rows_per_block, int chunk_words,
                                                                      EpilogueParams ep) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  pdl_launch_dependents();
  __shared__ __align__(128) uint4 ring[kBulkStages][kBulkChunkWords];
  __shared__ __align__(8) uint64_t full[kBulkStages], empty[kBulkStages];
  __shared__ float red[kWarps][M];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int row0 = int(blockIdx.x) * rows_per_block;
  const int rows = max(0, min(rows_per_block, n - row0));
  const int parts = kv / chunk_words;  // chunks per row
  const int items = rows * parts;
  const uint32_t ring0 = uint32_t(__cvta_generic_to_shared(&ring[0][0]));
  const uint32_t full0 = uint32_t(__cvta_generic_to_shared(&full[0]));
  const uint32_t empty0 = uint32_t(__cvta_generic_to_shared(&empty[0]));
  if (threadIdx.x == 0) {
    for (int s = 0; s < kBulkStages; ++s) {
      ptx::mbarrier_init(full0 + 8 * s, 1);
      ptx::mbarrier_init(empty0 + 8 * s, kWarps);
    }
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  if (warp == kWarps) {  // the producer: W only (constant), so it runs ahead of pdl_wait()
    if (lane == 0) {
      const uint4* src = w + int64_t(row0) * kv;  // the block's rows, contiguous
      for (int i = 0; i < items; ++i) {
        const int s = i % kBulkStages, round = i / kBulkStages;
        if (round > 0) ptx::mbarrier_wait(empty0 + 8 * s, uint32_t(round - 1) & 1u);
        ptx::mbarrier_arrive_expect_tx(full0 + 8 * s, uint32_t(chunk_words) * 16u);
        ptx::cp_async_bulk_g2s(ring0 + uint32_t(s * kBulkChunkWords * 16), src + int64_t(i) * chunk_words,
                               uint32_t(chunk_words) * 16u, full0 + 8 * s);
      }
    }
    pdl_wait();  // every thread of every block waits (pdl.cuh)
    return;
  }
  pdl_wait();
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  float gate = 0.0f;  // gated: the even row's sum of token threadIdx.x, until its up row is done
  for (int i = 0; i < items; ++i) {
    const int s = i % kBulkStages, part = i % parts;
    ptx::mbarrier_wait(full0 + 8 * s, uint32_t(i / kBulkStages) & 1u);
    const int col0 = part * chunk_words;
    for (int j = int(threadIdx.x); j < chunk_words; j += kWarps * 32) {
      const uint4 wv = ring[s][j];
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] += dot16(wv, __ldg(x + int64_t(m) * kv + col0 + j), T{});
    }
    __syncwarp();
    if (lane == 0) ptx::mbarrier_arrive(empty0 + 8 * s);
    if (part == parts - 1) {  // the row is complete
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float v = acc[m];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) red[warp][m] = v;
        acc[m] = 0.0f;
      }
      ptx::named_barrier_sync(1, kWarps * 32);
      if (int(threadIdx.x) < M) {
        float v = 0.0f;
#pragma unroll
        for (int q = 0; q < kWarps; ++q) v += red[q][threadIdx.x];
        const int row = row0 + i / parts;  // gated: rows_per_block and so row0 are even
        if (!ep.gated)
          epilogue_store(ep, int(threadIdx.x), row, v);
        else if ((row & 1) == 0)
          gate = v;
        else
          epilogue_store_gated(ep, int(threadIdx.x), row >> 1, gate, v);
      }
      ptx::named_barrier_sync(1, kWarps * 32);  // red is free for the next row
    }
  }
#else
  (void)w, (void)x, (void)n, (void)kv, (void)rows_per_block, (void)chunk_words, (void)ep;
  (void)kBulkStages;  // never launched below sm_90 (bulk_gemv_available)
#endif
}

// The bulk variant's chunk for rows of kv 16-byte words: the fewest equal parts of at most 8 KB, each
// a multiple of 512 bytes (32 words); 0 when no such split exists (the caller keeps gemv_kernel).
int bulk_chunk_words(int kv) {
  for (int parts = (kv + kBulkChunkWords - 1) / kBulkChunkWords; parts <= kv / 32; ++parts)
    if (kv % parts == 0 && (kv / parts) % 32 == 0) return kv / parts;
  return 0;
}

template <typename T, int M>
bool bulk_gemv_available() {
  static const bool ok = [] {
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, gemv_bulk_kernel<T, M>) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return fa.binaryVersion >= 90;
  }();
  return ok;
}

template <typename T, int M>
void launch_bulk(const uint4* w, const uint4* x, int64_t n, int kv, int chunk_words, const EpilogueParams& ep,
                 cudaStream_t stream) {
  static const int per_sm = [] {
    int b = 0;
    SF_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemv_bulk_kernel<T, M>, (kWarps + 1) * 32, 0));
    return std::max(b, 1);
  }();
  const int64_t resident = int64_t(per_sm) * sf::cuda::sm_count();
  int rows_per_block = int((n + resident - 1) / resident);
  if (ep.gated) rows_per_block += rows_per_block & 1;  // whole gate/up pairs per block
  const unsigned grid = unsigned((n + rows_per_block - 1) / rows_per_block);
  launch_pdl(gemv_bulk_kernel<T, M>, grid, (kWarps + 1) * 32, 0, stream, w, x, int(n), kv, rows_per_block, chunk_words,
             ep);
}

// ---- the tensor-core variant (M = 2..8) ---------------------------------------------------------
// At M > 1 the kernel above re-reads every token's x for each 16-byte chunk of W and does 8 fp32
// FMAs per token per chunk: at M = 8 that is 8 L1 loads and 64 FMAs (plus the conversions) per 16
// bytes of weight, and OPT-6.7B's batch-8 step took 2.5x the batch-1 step (H200, 2026-12-06). Here
// each warp multiplies 16 rows of W by the M <= 8 tokens with mma.sync m16n8k16 (fp32 accumulate).
//
// A dot product does not care in which order K is summed, so W and x need only agree on it: lane
// (g, t) (g = lane / 4, t = lane % 4) loads the 16-byte chunk c = 4 s + t of W rows g and g + 8 and of
// token g's x, and those 8 k values become the fragment slots the ISA gives the lane (a0 a1: row g, k
// 2t..2t+1; a2 a3: row g + 8; a4..a7: k + 8; b0 b1: k 2t..2t+1 of column g; b2 b3: k + 8): the first
// two words of each chunk feed one mma, the last two a second. Every load is a whole 16-byte chunk,
// four lanes cover 64 contiguous bytes of a row, and x costs half of W's loads instead of M times.
// A block's 8 warps split K (warp w takes 32-k steps w, w + 8, ...; the block reads each row in
// contiguous 512-byte runs) and add their 16 x 8 tiles in shared memory; 16 rows per block (N = 4096:
// 256 blocks). Tokens past M load zeros and are not stored.
constexpr int kMmaUnroll = 4;

template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __half>)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  (void)c, (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1;
#endif
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) gemv_mma_kernel(const uint4* __restrict__ w,
                                                               const uint4* __restrict__ x, int m, int n, int kv,
                                                               EpilogueParams ep) {
  pdl_launch_dependents();
  __shared__ float red[kWarps][16][8];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int row0 = int(blockIdx.x) * 16;
  const int steps = kv / 4;  // 32-k steps; the launcher checks kv % 4 == 0
  const bool lo_ok = row0 + g < n, hi_ok = row0 + g + 8 < n, x_ok = g < m;
  const uint4* wlo = w + int64_t(lo_ok ? row0 + g : 0) * kv + t;
  const uint4* whi = w + int64_t(hi_ok ? row0 + g + 8 : 0) * kv + t;
  const uint4* xg = x + int64_t(x_ok ? g : 0) * kv + t;
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
  uint4 lo[kMmaUnroll], hi[kMmaUnroll];
  auto load_w = [&](int s0) {
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      const int s = s0 + kWarps * u;
      lo[u] = lo_ok && s < steps ? ld_stream(wlo + 4 * s) : zero;
      hi[u] = hi_ok && s < steps ? ld_stream(whi + 4 * s) : zero;
    }
  };
  load_w(warp);  // W is constant: the first batch goes out before the wait (pdl.cuh)
  pdl_wait();
  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int s0 = warp; s0 < steps; s0 += kWarps * kMmaUnroll) {
    uint4 b[kMmaUnroll], clo[kMmaUnroll], chi[kMmaUnroll];
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      const int s = s0 + kWarps * u;
      b[u] = x_ok && s < steps ? __ldg(xg + 4 * s) : zero;
      clo[u] = lo[u];
      chi[u] = hi[u];
    }
    if (s0 + kWarps * kMmaUnroll < steps) load_w(s0 + kWarps * kMmaUnroll);  // in flight during the math
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      mma_16816<T>(c, clo[u].x, chi[u].x, clo[u].y, chi[u].y, b[u].x, b[u].y);
      mma_16816<T>(c, clo[u].z, chi[u].z, clo[u].w, chi[u].w, b[u].z, b[u].w);
    }
  }
  // c0 c1: row g, tokens 2t, 2t + 1; c2 c3: row g + 8.
  red[warp][g][2 * t] = c[0];
  red[warp][g][2 * t + 1] = c[1];
  red[warp][g + 8][2 * t] = c[2];
  red[warp][g + 8][2 * t + 1] = c[3];
  __syncthreads();
  const int step = ep.gated ? 2 : 1;  // gated: a thread takes the row pair (r, r + 1)
  if (int(threadIdx.x) < 128 / step) {
    const int r = step * (int(threadIdx.x) / 8), j = int(threadIdx.x) % 8;
    if (j < m && row0 + r < n) {
      float v = 0.0f, u = 0.0f;
#pragma unroll
      for (int q = 0; q < kWarps; ++q) v += red[q][r][j];
      if (step == 2)
#pragma unroll
        for (int q = 0; q < kWarps; ++q) u += red[q][r + 1][j];
      epilogue_store_step(ep, j, row0 + r, v, u);
    }
  }
}

// Blocks from which on a launch issues the next product's prefetch: the last two per SM.
int tail_start(unsigned grid) { return std::max(0, int(grid) - 2 * sf::cuda::sm_count()); }

// The tensor-core kernel takes M in [gemv_mma_min_m(), 8] on rows of whole 32-k steps, unless a
// persistent or bulk GEMV variant was asked for (those keep the CUDA-core arithmetic).
bool uses_mma(int64_t m, int64_t kv) {
  const int min_m = gemv_mma_min_m();
  return min_m > 0 && m >= min_m && m <= 8 && kv % 4 == 0 && !(persistent_kernels() & (kBulkGemv | kPersistentGemv));
}

template <typename T>
void launch_t(const void* w, const void* x, int64_t m, int64_t n, int kv, const EpilogueParams& ep,
              const L2Prefetch& next, cudaStream_t stream) {
  const unsigned grid = unsigned((n + kWarps - 1) / kWarps);
  const auto* w4 = static_cast<const uint4*>(w);
  const auto* x4 = static_cast<const uint4*>(x);
  const int tail = next.ptr[0] ? tail_start(grid) : int(grid);  // nothing to prefetch: no block asks
  if (persistent_kernels() & kBulkGemv) {
    const int cw = bulk_chunk_words(kv);
    bool ok = cw > 0;
    switch (m) {
#define SF_GEMV_B_CASE(M) \
  case M: ok = ok && bulk_gemv_available<T, M>(); if (ok) launch_bulk<T, M>(w4, x4, n, kv, cw, ep, stream); break;
      SF_GEMV_B_CASE(1) SF_GEMV_B_CASE(2) SF_GEMV_B_CASE(3) SF_GEMV_B_CASE(4)
      SF_GEMV_B_CASE(5) SF_GEMV_B_CASE(6) SF_GEMV_B_CASE(7) SF_GEMV_B_CASE(8)
#undef SF_GEMV_B_CASE
    }
    if (ok) {
      SF_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  if (persistent_kernels() & kPersistentGemv) {  // no L2 prefetch of the next product in this variant
    switch (m) {
#define SF_GEMV_P_CASE(M)                                                                                    \
  case M: {                                                                                                  \
    static const int per_sm = [] {                                                                           \
      int b = 0;                                                                                             \
      SF_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemv_persistent_kernel<T, M>, kWarps * 32, 0)); \
      return std::max(b, 1);                                                                                 \
    }();                                                                                                     \
    const unsigned pgrid = persistent_grid(grid, unsigned(per_sm * sf::cuda::sm_count()));                      \
    launch_pdl(gemv_persistent_kernel<T, M>, pgrid, kWarps * 32, 0, stream, w4, x4, int(n), kv, ep);          \
    break;                                                                                                   \
  }
      SF_GEMV_P_CASE(1) SF_GEMV_P_CASE(2) SF_GEMV_P_CASE(3) SF_GEMV_P_CASE(4)
      SF_GEMV_P_CASE(5) SF_GEMV_P_CASE(6) SF_GEMV_P_CASE(7) SF_GEMV_P_CASE(8)
#undef SF_GEMV_P_CASE
    }
    SF_CUDA_CHECK_LAUNCH();
    return;
  }
  if constexpr (!std::is_same_v<T, float>)
    if (uses_mma(m, kv)) {
      launch_pdl(gemv_mma_kernel<T>, unsigned((n + 15) / 16), kWarps * 32, 0, stream, w4, x4, int(m), int(n), kv, ep);
      SF_CUDA_CHECK_LAUNCH();
      return;
    }
  switch (m) {
#define SF_GEMV_CASE(M) \
  case M: launch_pdl(gemv_kernel<T, M>, grid, kWarps * 32, 0, stream, w4, x4, int(n), kv, ep, next, tail); break;
    SF_GEMV_CASE(1) SF_GEMV_CASE(2) SF_GEMV_CASE(3) SF_GEMV_CASE(4)
    SF_GEMV_CASE(5) SF_GEMV_CASE(6) SF_GEMV_CASE(7) SF_GEMV_CASE(8)
#undef SF_GEMV_CASE
  }
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool gemv_uses_tensor_cores(int w_dt, int64_t m, int64_t k) {
  return w_dt != 0 && k % 8 == 0 && uses_mma(m, k / 8);
}

bool launch_gemv(const void* w, int w_dt, const void* x, int64_t m, int64_t n, int64_t k, const EpilogueParams& ep,
                 cudaStream_t stream, const L2Prefetch& next) {
  const int64_t elem = w_dt == 0 ? 4 : 2;
  const int64_t per16 = 16 / elem;
  if (m < 1 || m > kGemvMaxM || k % per16 != 0 || n > (int64_t(1) << 30) ||
      k / per16 > (int64_t(1) << 30) || reinterpret_cast<uintptr_t>(w) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(x) % 16 != 0 || (ep.gated && n % 2 != 0))
    return false;
  const int kv = int(k / per16);
  if (w_dt == 1) launch_t<__half>(w, x, m, n, kv, ep, next, stream);
  else if (w_dt == 2) launch_t<__nv_bfloat16>(w, x, m, n, kv, ep, next, stream);
  else launch_t<float>(w, x, m, n, kv, ep, next, stream);
  return true;
}

}  // namespace sf::cuda::model
