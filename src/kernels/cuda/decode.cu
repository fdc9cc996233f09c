// Decode-family 2:4 GEMM (M = 1..64 per launch; larger M tiles over grid.z): bound by the bytes of
// W, so everything is arranged around reading the compressed values and metadata once, 16 bytes
// per lane per load, with two steps (16 k-tiles, 9 KB per warp) in flight.
//
// mma.sp m16n8k32 with W as the sparse A operand (16 rows of N) and x^T as B (8 tokens). A block
// owns one 16-row block and a K range (its split); its warps take interleaved 256-wide K steps of
// that range and reduce through shared memory. With splits > 1 each block stores a fp32 partial
// and the last block of the 16-row block to arrive sums the partials in split order (so the
// result does not depend on arrival order), applies the epilogue and resets the counter.
//
// A gated epilogue (fused gate/up rows 2j, 2j + 1, epilogue.cuh) changes only the stores: the
// shared-memory tiles and split-K partials hold rows along the fastest index, so a thread takes the
// pair (2j, 2j + 1) instead of one element; the shared-x kernel's registers hold row g in lane
// 4g + t, so the up row is one __shfl_xor(4) away.
//
// Launched with programmatic dependent launch (pdl.cuh): the first step of W values and metadata
// (constant) is loaded before pdl_wait(); x, the split-K partials and counters and the epilogue's
// inputs and outputs only after it, so on sm_90+ the weights start streaming while the kernel that
// writes x drains.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/decode_kernels.hpp"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/ptx.cuh"

namespace sf::cuda {
namespace {

constexpr int kStepTiles = 8;                 // k-tiles (of 32) per warp step
constexpr int kStepQuads = kStepTiles / 4;    // metadata is stored per 4 k-tiles
constexpr uint32_t kNeutralMeta = 0x44444444u;  // indices (0, 1) everywhere: a valid word for zero A

struct Step {
  uint4 a[kStepTiles];  // A fragments, one per k-tile
  uint4 e[kStepQuads];  // metadata words, 4 k-tiles per uint4 (only lanes with t < 2 use them)
};

__device__ __forceinline__ void load_step(Step& s, const uint4* vals, const uint4* meta, int q, int q_end,
                                          bool meta_lane) {
#pragma unroll
  for (int u = 0; u < kStepTiles; ++u) {
    const bool ok = q + u / 4 < q_end;
    s.a[u] = ok ? ptx::ld_global_nc_na_v4(vals + size_t(q * 4 + u) * 32) : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int i = 0; i < kStepQuads; ++i) {
    const bool ok = q + i < q_end && meta_lane;
    s.e[i] = ok ? ptx::ld_global_nc_na_v4(meta + size_t(q + i) * 16)
                : make_uint4(kNeutralMeta, kNeutralMeta, kNeutralMeta, kNeutralMeta);
  }
}

__device__ __forceinline__ uint32_t meta_word(const uint4& e, int i) {
  return i == 0 ? e.x : i == 1 ? e.y : i == 2 ? e.z : e.w;
}

// Sum of the split partials v[s * stride], s = 0..splits-1, in split order (bit-identical across
// runs), with 8 loads in flight at a time: the last block's pass is on the kernel's critical path.
__device__ __forceinline__ float sum_splits(const float* v, size_t stride, int splits) {
  float acc = 0.0f;
  for (int s0 = 0; s0 < splits; s0 += 8) {
    float l[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) l[j] = s0 + j < splits ? __ldcg(v + size_t(s0 + j) * stride) : 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (s0 + j < splits) acc += l[j];
  }
  return acc;
}

// The B fragments of lane (g, t): token tok0 + 8 mt + g of x (row[mt], null-safe: row 0 when the
// token does not exist, ok[mt] false), for the plain decode kernels.
template <typename T, int MT>
struct XRows {
  const uint32_t* row[MT];
  bool ok[MT];
  int kpairs;
  __device__ __forceinline__ XRows(const DecodeLaunch& p, int tok0, int g) : kpairs(p.k / 2) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int tok = tok0 + mt * 8 + g;
      ok[mt] = tok < p.m;
      row[mt] = reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.x) + size_t(ok[mt] ? tok : 0) * p.k);
    }
  }
};

// The step at quad q (kStepTiles k-tiles of W in s) against x: B fragment x[tok][32 kt + 8 j + 2 t +
// {0, 1}], j = 0..3, read from L1/L2 as it goes.
template <typename T, int MT>
__device__ __forceinline__ void mma_step(float (&acc)[MT][4], const Step& s, int q, const XRows<T, MT>& x, int t) {
#pragma unroll
  for (int u = 0; u < kStepTiles; ++u) {
    const int kt = q * 4 + u;
    const uint32_t e = meta_word(s.e[u / 4], u % 4);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      uint32_t b[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int kp = kt * 16 + 4 * j + t;  // pair index: element 32 kt + 8 j + 2 t
        b[j] = (x.ok[mt] && kp < x.kpairs) ? __ldg(x.row[mt] + kp) : 0u;
      }
      ptx::mma_sp_m16n8k32<T>(acc[mt], s.a[u], b, e);
    }
  }
}

// A warp's accumulators to red[warp][token][row] (16 rows of W by 8 MT tokens).
template <int MT, int WARPS>
__device__ __forceinline__ void tile_to_shared(float (&red)[WARPS][MT * 128], const float (&acc)[MT][4], int warp,
                                               int g, int t) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int tk = mt * 8 + 2 * t;
    red[warp][tk * 16 + g] = acc[mt][0];
    red[warp][(tk + 1) * 16 + g] = acc[mt][1];
    red[warp][tk * 16 + g + 8] = acc[mt][2];
    red[warp][(tk + 1) * 16 + g + 8] = acc[mt][3];
  }
}

// The warps' tiles summed in warp order and stored through the epilogue (one split: the result).
// Gated: a thread takes the row pair (i, i + 1), i even.
template <int MT, int WARPS>
__device__ __forceinline__ void store_tile(const float (&red)[WARPS][MT * 128], const DecodeLaunch& p, int tok0,
                                           int rb) {
  const int step = p.ep.gated ? 2 : 1;
  for (int i = threadIdx.x * step; i < MT * 128; i += WARPS * 32 * step) {
    float v = 0.0f, u = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) v += red[w][i];
    if (step == 2)
#pragma unroll
      for (int w = 0; w < WARPS; ++w) u += red[w][i + 1];
    const int tok = tok0 + i / 16, n = rb * 16 + i % 16;
    if (tok < p.m && n < p.n) epilogue_store_step(p.ep, tok, n, v, u);
  }
}

template <typename T, int MT, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) decode_kernel(const DecodeLaunch p) {
  pdl_launch_dependents();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int rb = blockIdx.x, split = blockIdx.y;
  const int tok0 = blockIdx.z * MT * 8;
  const int q_begin = split * p.quads_per_split;
  const int q_end = min(p.k_quads, q_begin + p.quads_per_split);

  const uint4* vals = static_cast<const uint4*>(p.values) + size_t(rb) * p.k_tiles * 32 + lane;
  const uint4* meta = static_cast<const uint4*>(p.meta) + size_t(rb) * p.k_quads * 16 + (2 * g + (t & 1));
  const bool meta_lane = t < 2;

  const XRows<T, MT> x(p, tok0, g);
  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;

  constexpr int stride = WARPS * kStepQuads;
  Step cur, nxt;
  int q = q_begin + warp * kStepQuads;
  if (q < q_end) load_step(cur, vals, meta, q, q_end, meta_lane);  // W only: before the wait
  pdl_wait();
  for (; q < q_end; q += stride) {
    // Issue the next step's weight loads before this step's math: they are the long-latency part.
    if (q + stride < q_end) load_step(nxt, vals, meta, q + stride, q_end, meta_lane);
    mma_step(acc, cur, q, x, t);
    cur = nxt;
  }

  // Reduce the warps' partial tiles: red[warp][token][row], 16 rows of W by 8 * MT tokens.
  constexpr int kTile = MT * 8 * 16;
  __shared__ float red[WARPS][kTile];
  tile_to_shared<MT, WARPS>(red, acc, warp, g, t);
  __syncthreads();

  const size_t tile_id = size_t(blockIdx.z) * gridDim.x + rb;
  if (gridDim.y == 1) {
    store_tile<MT, WARPS>(red, p, tok0, rb);
    return;
  }

  float* part = p.partials + tile_id * gridDim.y * kTile;
  for (int i = threadIdx.x; i < kTile; i += WARPS * 32) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) v += red[w][i];
    __stcg(part + size_t(split) * kTile + i, v);
  }
  __threadfence();  // publish the partial before the counter says it is there
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) last = atomicAdd(p.counters + tile_id, 1) == int(gridDim.y) - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int step = p.ep.gated ? 2 : 1;  // gated: the row pair (i, i + 1)
  for (int i = threadIdx.x * step; i < kTile; i += WARPS * 32 * step) {
    const float v = sum_splits(part + i, kTile, int(gridDim.y));
    const float u = step == 2 ? sum_splits(part + i + 1, kTile, int(gridDim.y)) : 0.0f;
    const int tok = tok0 + i / 16, n = rb * 16 + i % 16;
    if (tok < p.m && n < p.n) epilogue_store_step(p.ep, tok, n, v, u);
  }
  if (threadIdx.x == 0) p.counters[tile_id] = 0;  // ready for the next launch on this workspace
}

// The persistent variant of decode_kernel without split-K (kPersistentDecode, check.hpp): gridDim.x
// blocks (at most as many as fit the GPU at once, balanced so that every block gets the same number
// of 16-row blocks), block b taking 16-row blocks b, b + gridDim.x, ... Each warp's last step of a
// 16-row block loads the first step of its next one, so the weights stay in flight through the
// reduction and the store (and no block starts or retires mid-product). Per output the sums are
// decode_kernel's with one split, in its order: bit-identical.
template <typename T, int MT, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) decode_persistent_kernel(const DecodeLaunch p) {
  pdl_launch_dependents();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int tok0 = blockIdx.z * MT * 8;
  const bool meta_lane = t < 2;
  const uint4* vals0 = static_cast<const uint4*>(p.values) + lane;
  const uint4* meta0 = static_cast<const uint4*>(p.meta) + (2 * g + (t & 1));
  auto vals_of = [&](int rb) { return vals0 + size_t(rb) * p.k_tiles * 32; };
  auto meta_of = [&](int rb) { return meta0 + size_t(rb) * p.k_quads * 16; };

  const XRows<T, MT> x(p, tok0, g);
  constexpr int stride = WARPS * kStepQuads;
  const int q0 = warp * kStepQuads;  // this warp's first step in every 16-row block

  constexpr int kTile = MT * 8 * 16;
  __shared__ float red[WARPS][kTile];
  Step cur, nxt;
  int rb = blockIdx.x;
  if (rb < p.row_blocks && q0 < p.k_quads) load_step(cur, vals_of(rb), meta_of(rb), q0, p.k_quads, meta_lane);
  pdl_wait();
  for (; rb < p.row_blocks; rb += gridDim.x) {
    const int rb_next = rb + int(gridDim.x);
    float acc[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;
    for (int q = q0; q < p.k_quads; q += stride) {
      if (q + stride < p.k_quads)
        load_step(nxt, vals_of(rb), meta_of(rb), q + stride, p.k_quads, meta_lane);
      else if (rb_next < p.row_blocks)  // the next 16-row block's first step, in flight from here on
        load_step(nxt, vals_of(rb_next), meta_of(rb_next), q0, p.k_quads, meta_lane);
      mma_step(acc, cur, q, x, t);
      cur = nxt;
    }
    tile_to_shared<MT, WARPS>(red, acc, warp, g, t);
    __syncthreads();
    store_tile<MT, WARPS>(red, p, tok0, rb);
    __syncthreads();  // red is free for the next 16-row block
  }
}

// The bulk-copy variant for M <= 8 without split-K (kBulkDecode, check.hpp; sm_90+). Nsight Compute
// put the register-fed kernels above at 36-67% of DRAM peak on OPT-6.7B's batch-1 products, at 21%
// occupancy: 124 registers of two 4.5 KB steps per warp, and blocks that live two memory round trips.
// Here the weights never pass through registers on their way in: one producer warp streams a 16-row
// block's values and metadata, 16 k-tiles (8 KB + 1 KB) per stage, through a ring of kBulkStages
// stages in shared memory with cp.async.bulk (the SM's copy engine), each stage's arrival signalled
// on its mbarrier, while WARPS consumer warps run the mma.sp from shared memory and release the stage
// on a second mbarrier. Persistent: block b takes 16-row blocks b, b + gridDim.x, ... and the
// producer runs ahead across their boundaries, so the copy engine always has kBulkStages stages (36
// KB) in flight per block. Consumer warp w takes k-tiles w, w + WARPS, ... of each stage; the warps'
// sums are added in warp order at the end of a 16-row block (a different grouping of the same
// products than decode_kernel's: equal to it within rounding, not bit for bit).
constexpr int kBulkTiles = 16;
constexpr int kBulkQuads = kBulkTiles / 4;
constexpr int kBulkStages = 4;
constexpr int kBulkStageBytes = kBulkTiles * 512 + kBulkQuads * 256;

template <typename T, int WARPS>
__global__ void __launch_bounds__((WARPS + 1) * 32) decode_bulk_kernel(const DecodeLaunch p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  pdl_launch_dependents();
  __shared__ __align__(128) uint8_t ring[kBulkStages][kBulkStageBytes];
  __shared__ __align__(8) uint64_t full[kBulkStages], empty[kBulkStages];
  __shared__ float red[WARPS][128];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int chunks = (p.k_tiles + kBulkTiles - 1) / kBulkTiles;  // stages per 16-row block
  const int my_blocks = int(blockIdx.x) < p.row_blocks ? (p.row_blocks - 1 - int(blockIdx.x)) / int(gridDim.x) + 1 : 0;
  const int items = my_blocks * chunks;
  const uint32_t ring0 = uint32_t(__cvta_generic_to_shared(&ring[0][0]));
  const uint32_t full0 = uint32_t(__cvta_generic_to_shared(&full[0]));
  const uint32_t empty0 = uint32_t(__cvta_generic_to_shared(&empty[0]));
  if (threadIdx.x == 0) {
    for (int s = 0; s < kBulkStages; ++s) {
      ptx::mbarrier_init(full0 + 8 * s, 1);          // the producer's arrival (+ the bytes)
      ptx::mbarrier_init(empty0 + 8 * s, WARPS);     // one arrival per consumer warp
    }
    ptx::fence_mbarrier_init();
  }
  __syncthreads();

  if (warp == WARPS) {  // the producer: W only (constant), so it may run ahead of pdl_wait()
    if (lane == 0) {
      const uint8_t* vals = static_cast<const uint8_t*>(p.values);
      const uint8_t* meta = static_cast<const uint8_t*>(p.meta);
      for (int i = 0; i < items; ++i) {
        const int s = i % kBulkStages, round = i / kBulkStages;
        if (round > 0) ptx::mbarrier_wait(empty0 + 8 * s, uint32_t(round - 1) & 1u);  // its last use released
        const int rb = int(blockIdx.x) + (i / chunks) * int(gridDim.x), c = i % chunks;
        const int tiles = min(kBulkTiles, p.k_tiles - c * kBulkTiles);
        const uint32_t vbytes = uint32_t(tiles) * 512u, mbytes = uint32_t((tiles + 3) / 4) * 256u;
        ptx::mbarrier_arrive_expect_tx(full0 + 8 * s, vbytes + mbytes);
        ptx::cp_async_bulk_g2s(ring0 + s * kBulkStageBytes, vals + (size_t(rb) * p.k_tiles + size_t(c) * kBulkTiles) * 512,
                               vbytes, full0 + 8 * s);
        ptx::cp_async_bulk_g2s(ring0 + s * kBulkStageBytes + kBulkTiles * 512,
                               meta + (size_t(rb) * p.k_quads + size_t(c) * kBulkQuads) * 256, mbytes, full0 + 8 * s);
      }
    }
    pdl_wait();  // every thread of every block waits (pdl.cuh)
    return;
  }

  pdl_wait();
  const int g = lane >> 2, t = lane & 3;
  const bool xok = g < p.m;  // token g (M <= 8: one 8-token tile)
  const uint32_t* xrow = reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.x) + size_t(xok ? g : 0) * p.k);
  const int kpairs = p.k / 2;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < items; ++i) {
    const int s = i % kBulkStages, c = i % chunks;
    const int rb = int(blockIdx.x) + (i / chunks) * int(gridDim.x);
    const int tiles = min(kBulkTiles, p.k_tiles - c * kBulkTiles);
    ptx::mbarrier_wait(full0 + 8 * s, uint32_t(i / kBulkStages) & 1u);
    const uint8_t* st = ring[s];
    for (int u = warp; u < tiles; u += WARPS) {
      const uint4 a = *reinterpret_cast<const uint4*>(st + (u * 32 + lane) * 16);
      const uint4 ew = t < 2 ? *reinterpret_cast<const uint4*>(st + kBulkTiles * 512 + ((u / 4) * 16 + 2 * g + (t & 1)) * 16)
                             : make_uint4(kNeutralMeta, kNeutralMeta, kNeutralMeta, kNeutralMeta);
      const int kt = c * kBulkTiles + u;
      uint32_t b[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int kp = kt * 16 + 4 * j + t;
        b[j] = (xok && kp < kpairs) ? __ldg(xrow + kp) : 0u;
      }
      ptx::mma_sp_m16n8k32<T>(acc, a, b, meta_word(ew, u % 4));
    }
    __syncwarp();
    if (lane == 0) ptx::mbarrier_arrive(empty0 + 8 * s);  // this warp is done with the stage
    if (c == chunks - 1) {  // the 16-row block is complete: add the warps' sums, store
      const int tk = 2 * t;
      red[warp][tk * 16 + g] = acc[0];
      red[warp][(tk + 1) * 16 + g] = acc[1];
      red[warp][tk * 16 + g + 8] = acc[2];
      red[warp][(tk + 1) * 16 + g + 8] = acc[3];
      ptx::named_barrier_sync(1, WARPS * 32);
      const int step = p.ep.gated ? 2 : 1;  // gated: the row pair (e, e + 1)
      for (int e = threadIdx.x * step; e < 128; e += WARPS * 32 * step) {
        float v = 0.0f, u = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) v += red[w][e];
        if (step == 2)
#pragma unroll
          for (int w = 0; w < WARPS; ++w) u += red[w][e + 1];
        const int tok = e / 16, n = rb * 16 + e % 16;
        if (tok < p.m && n < p.n) epilogue_store_step(p.ep, tok, n, v, u);
      }
      ptx::named_barrier_sync(1, WARPS * 32);  // red is free for the next 16-row block
      acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
    }
  }
#else
  (void)p;  // never launched below sm_90 (bulk_decode_available)
  (void)kBulkStages;
  (void)kBulkStageBytes;
#endif
}

// Whether the bulk kernel runs on the current device: it was built for sm_90+ and the device is one.
template <typename T, int WARPS>
bool bulk_decode_available() {
  static const bool ok = [] {
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, decode_bulk_kernel<T, WARPS>) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return fa.binaryVersion >= 90;
  }();
  return ok;
}

// The shared-x variant ("decode_sx"): a block's warps are R row warps x KG k-groups. The R row warps
// own R different 16-row blocks; the KG k-groups split each 256-wide "superstep" of KG steps, so
// one block keeps R * KG warps of 16-byte W loads in flight while x for the superstep (8 mt tokens x
// KG * 256 k) is fetched once per block (cp.async into shared memory, double buffered) and fed to all
// warps by ldmatrix. The plain kernel above re-reads x from L2 for every 16-row block, which costs
// more than W itself once M reaches 8-16 tokens. k-groups replace most of the grid split-K (whose
// partial sums go through L2 and a last-block pass) by a reduction in shared memory.
// Needs k % 8 == 0 and x 16-byte aligned (the 16-byte cp.async); the launcher checks.
template <int KG>
__host__ __device__ constexpr int sx_row_bytes() { return KG * 512 + 16; }  // + 16 B: the 8 rows an ldmatrix reads hit distinct banks

template <int MT, int KG>
__host__ __device__ constexpr int sx_smem_bytes() { return 2 * MT * 8 * sx_row_bytes<KG>(); }

template <typename T, int MT, int R, int KG>
__global__ void __launch_bounds__(R * KG * 32) decode_sx_kernel(const DecodeLaunch p) {
  pdl_launch_dependents();
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr int kThreads = R * KG * 32;
  constexpr int kRows = MT * 8;
  constexpr int kRowBytes = sx_row_bytes<KG>();
  constexpr int kBuf = kRows * kRowBytes;
  constexpr int kSuper = KG * kStepQuads;  // quads per superstep
  constexpr int kWarpTile = MT * 32 * 4;   // accumulator floats per warp, in lane order
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wr = warp % R, kg = warp / R;
  const int g = lane >> 2, t = lane & 3;
  const int rb = blockIdx.x * R + wr;
  const bool active = rb < p.row_blocks;
  const int split = blockIdx.y;
  const int tok0 = blockIdx.z * kRows;
  const int q_begin = split * p.quads_per_split;
  const int q_end = min(p.k_quads, q_begin + p.quads_per_split);
  const int k_end = min(p.k, q_end * 128);
  const int rbc = active ? rb : 0;
  const uint4* vals = static_cast<const uint4*>(p.values) + size_t(rbc) * p.k_tiles * 32 + lane;
  const uint4* meta = static_cast<const uint4*>(p.meta) + size_t(rbc) * p.k_quads * 16 + (2 * g + (t & 1));
  const T* x = static_cast<const T*>(p.x);
  const uint32_t smem_base = uint32_t(__cvta_generic_to_shared(smem));
  const int my_end = active ? q_end : 0;  // warps past the last row block load zeros

  // One superstep of x: kRows tokens x KG * 256 k, as 16-byte chunks spread over the block.
  auto stage = [&](int q, int buf) {
    for (int c = threadIdx.x; c < kRows * KG * 32; c += kThreads) {
      const int r = c / (KG * 32), cc = c % (KG * 32);
      const int tok = tok0 + r, k = q * 128 + cc * 8;
      const bool ok = tok < p.m && k < k_end;
      ptx::cp_async_cg_16(smem_base + buf * kBuf + r * kRowBytes + cc * 16, ok ? x + size_t(tok) * p.k + k : x,
                          ok ? 16 : 0);
    }
    ptx::cp_async_commit_group();
  };

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;

  Step cur, nxt;
  int q = q_begin;
  const int qk = kg * kStepQuads;  // this warp's step inside each superstep
  if (q < q_end) load_step(cur, vals, meta, q + qk, my_end, t < 2);  // W only: before the wait
  pdl_wait();
  if (q < q_end) stage(q, 0);
  int buf = 0;
  for (; q < q_end; q += kSuper) {
    const int qn = q + kSuper;
    if (qn < q_end) {
      load_step(nxt, vals, meta, qn + qk, my_end, t < 2);
      stage(qn, buf ^ 1);
      ptx::cp_async_wait_group<1>();
    } else {
      ptx::cp_async_wait_group<0>();
    }
    __syncthreads();  // this superstep's x is in shared memory
    // ldmatrix addresses: lanes 8 i .. 8 i + 7 give the rows of matrix i (k offset 8 i).
    const uint32_t xb = smem_base + buf * kBuf + (lane & 7) * kRowBytes + kg * 512 + (lane >> 3) * 16;
#pragma unroll
    for (int u = 0; u < kStepTiles; ++u) {
      const uint32_t e = meta_word(cur.e[u / 4], u % 4);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t b[4];
        ptx::ldmatrix_x4(b, xb + mt * 8 * kRowBytes + u * 64);
        ptx::mma_sp_m16n8k32<T>(acc[mt], cur.a[u], b, e);
      }
    }
    __syncthreads();  // all warps are done with buf before the next iteration refills it
    cur = nxt;
    buf ^= 1;
  }

  // k-groups 1..KG-1 hand their sums to k-group 0 through the (now idle) x buffers; k-group 0 adds
  // them in k-group order.
  if constexpr (KG > 1) {
    float* red = reinterpret_cast<float*>(smem);  // [KG - 1][R][kWarpTile], lane order
    if (kg > 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) red[((kg - 1) * R + wr) * kWarpTile + (mt * 4 + i) * 32 + lane] = acc[mt][i];
    }
    __syncthreads();
    if (kg == 0) {
#pragma unroll
      for (int j = 1; j < KG; ++j)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[mt][i] += red[((j - 1) * R + wr) * kWarpTile + (mt * 4 + i) * 32 + lane];
    }
  }

  // Lane (g, t) of a k-group-0 warp holds rows g, g + 8 of its 16-row block for tokens 8 mt + 2 t, + 1.
  const size_t tile_id = size_t(blockIdx.z) * gridDim.x + blockIdx.x;
  if (gridDim.y == 1) {
    if (!active || kg != 0) return;  // (whole warps: the shuffle below has all 32 lanes)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int tok = tok0 + mt * 8 + 2 * t + (i & 1), n = rb * 16 + g + 8 * (i >> 1);
        if (p.ep.gated) {  // row n + 1 (g + 1) is in lane + 4; the even-g lanes store the pair
          const float up = __shfl_xor_sync(0xffffffffu, acc[mt][i], 4);
          if ((g & 1) == 0 && tok < p.m && n < p.n)
            epilogue_store_gated(p.ep, tok, n >> 1, acc[mt][i], up);
        } else if (tok < p.m && n < p.n) {
          epilogue_store(p.ep, tok, n, acc[mt][i]);
        }
      }
    return;
  }
  constexpr int kTile = R * kWarpTile;  // floats per block per split
  float* part = p.partials + tile_id * gridDim.y * kTile;
  if (kg == 0) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        __stcg(part + size_t(split) * kTile + wr * kWarpTile + (mt * 4 + i) * 32 + lane, acc[mt][i]);
  }
  __threadfence();
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) last = atomicAdd(p.counters + tile_id, 1) == int(gridDim.y) - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The whole block sums the partials, element e = (r, mt, i, lane) of the tile per thread. Gated:
  // the elements of even g (bit 2 of e clear), each with its up row at e + 4 (lane + 4).
  const bool gated = p.ep.gated;
  for (int h = threadIdx.x; h < (gated ? kTile / 2 : kTile); h += kThreads) {
    const int e = gated ? (h >> 2) * 8 + (h & 3) : h;
    const float v = sum_splits(part + e, kTile, int(gridDim.y));
    const float u = gated ? sum_splits(part + e + 4, kTile, int(gridDim.y)) : 0.0f;
    const int r = e / kWarpTile, mi = (e % kWarpTile) / 32, ln = e % 32;
    const int tok = tok0 + (mi / 4) * 8 + 2 * (ln & 3) + (mi & 1), n = (blockIdx.x * R + r) * 16 + (ln >> 2) + 8 * ((mi % 4) >> 1);
    if (tok < p.m && n < p.n) epilogue_store_step(p.ep, tok, n, v, u);
  }
  if (threadIdx.x == 0) p.counters[tile_id] = 0;
}

template <typename T, int MT, int R, int KG>
void launch_sx_typed(const DecodeLaunch& p, cudaStream_t stream) {
  constexpr int kSmem = sx_smem_bytes<MT, KG>();
  if constexpr (kSmem > 48 * 1024) {
    static bool raised = false;  // the attribute is per kernel and process; set it once
    if (!raised) {
      SF_CUDA_CHECK(cudaFuncSetAttribute(decode_sx_kernel<T, MT, R, KG>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
      raised = true;
    }
  }
  const dim3 grid(unsigned((p.row_blocks + R - 1) / R), unsigned(p.splits), unsigned((p.m + MT * 8 - 1) / (MT * 8)));
  launch_pdl(decode_sx_kernel<T, MT, R, KG>, grid, R * KG * 32, kSmem, stream, p);
  SF_CUDA_CHECK_LAUNCH();
}

template <typename T, int MT, int WARPS>
void launch_typed(const DecodeLaunch& p, cudaStream_t stream) {
  const unsigned chunks = unsigned((p.m + MT * 8 - 1) / (MT * 8));
  if constexpr (MT == 1) {
    if (p.splits == 1 && p.m <= 8 && (persistent_kernels() & kBulkDecode) && bulk_decode_available<T, WARPS>()) {
      static const int per_sm = [] {
        int b = 0;
        SF_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, decode_bulk_kernel<T, WARPS>, (WARPS + 1) * 32, 0));
        return std::max(b, 1);
      }();
      const unsigned grid = persistent_grid(unsigned(p.row_blocks), unsigned(per_sm * sm_count()));
      launch_pdl(decode_bulk_kernel<T, WARPS>, dim3(grid), (WARPS + 1) * 32, 0, stream, p);
      SF_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  if (p.splits == 1 && (persistent_kernels() & kPersistentDecode)) {
    static const int per_sm = [] {
      int b = 0;
      SF_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, decode_persistent_kernel<T, MT, WARPS>, WARPS * 32, 0));
      return std::max(b, 1);
    }();
    // Resident blocks shared by the token chunks (grid.z), then balanced over the 16-row blocks.
    const dim3 grid(persistent_grid(unsigned(p.row_blocks), std::max(1u, unsigned(per_sm * sm_count()) / chunks)), 1,
                    chunks);
    launch_pdl(decode_persistent_kernel<T, MT, WARPS>, grid, WARPS * 32, 0, stream, p);
    SF_CUDA_CHECK_LAUNCH();
    return;
  }
  const dim3 grid(unsigned(p.row_blocks), unsigned(p.splits), chunks);
  launch_pdl(decode_kernel<T, MT, WARPS>, grid, WARPS * 32, 0, stream, p);
  SF_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_dtype(const DecodeLaunch& p, int mt, int warps, int kgroups, bool shared_x, cudaStream_t stream) {
  // kDecodeConfigs (decode_kernels.hpp) lists these; keep the two in step.
  if (!shared_x) {
#define SF_DECODE_CASE(MT_, W_) \
  if (mt == MT_ && warps == W_) return launch_typed<T, MT_, W_>(p, stream);
    SF_DECODE_CASE(1, 4) SF_DECODE_CASE(1, 8)
#undef SF_DECODE_CASE
  } else {
#define SF_DECODE_SX_CASE(MT_, R_, KG_) \
  if (mt == MT_ && warps == R_ && kgroups == KG_) return launch_sx_typed<T, MT_, R_, KG_>(p, stream);
    SF_DECODE_SX_CASE(1, 4, 2) SF_DECODE_SX_CASE(1, 4, 4)
    SF_DECODE_SX_CASE(2, 4, 4) SF_DECODE_SX_CASE(2, 8, 2)
    SF_DECODE_SX_CASE(4, 8, 2)
    SF_DECODE_SX_CASE(8, 4, 1)
#undef SF_DECODE_SX_CASE
  }
  detail::throw_status(9 /* Internal */, "decode kernel with mt=" + std::to_string(mt) + " warps=" + std::to_string(warps) +
                                    " kgroups=" + std::to_string(kgroups) + " is not instantiated");
}

}  // namespace

void launch_decode(DecodeLaunch p, DType dtype, int mt, int warps, int kgroups, bool shared_x, cudaStream_t stream) {
  if (p.m <= 0 || p.n <= 0) return;
  if (dtype == DType::F16) return launch_dtype<__half>(p, mt, warps, kgroups, shared_x, stream);
  if (dtype == DType::BF16) return launch_dtype<__nv_bfloat16>(p, mt, warps, kgroups, shared_x, stream);
  detail::throw_status(2 /* UnsupportedShape */, "the 2:4 GPU kernels take fp16 or bf16 weights, not " +
                                            std::string(dtype_name(dtype)));
}

}  // namespace sf::cuda
