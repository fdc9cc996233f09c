// Prefill-family 2:4 GEMM (large M): a tiled mma.sp m16n8k32 kernel, bound by the tensor cores
// rather than by the bytes of W.
//
// A block owns 128 rows of W (8 row blocks of 16) and BM tokens. Per k-quad (128 of K, the unit the
// metadata is stored in) it stages, with cp.async into a STAGES-deep ring in shared memory:
//   A    8 row blocks x 4 k-tiles x 512 B, copied verbatim: the weight layout already holds each
//        lane's mma.sp A fragment, so a lane reads its 16 bytes with one conflict-free ld.shared;
//   meta 8 row blocks x 256 B (16 slots of 4 words, one word per k-tile);
//   x    BM tokens x 128 k, rows padded by 16 bytes so the 8 rows an ldmatrix reads hit distinct banks.
// Warps as 2 (rows) x WT (tokens): each warp computes 64 rows x BM/WT tokens, so every A fragment
// feeds BM/WT/8 mma.sp and every B fragment 4 (shared-memory bytes per mma.sp: 512/(BM/WT/8) + 128).
//
// Blocks are ordered in groups of kGroup token tiles (the grid walks tokens fastest within a group)
// so that the W rows and x tiles live at one time fit in L2 (DESIGN.md: 50 MB on H100/H200).
// Needs k % 8 == 0 and x 16-byte aligned (16-byte cp.async of x rows); SparseGemm checks and falls
// back otherwise.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/prefill_kernels.hpp"
#include "kernels/cuda/ptx.cuh"

namespace sf::cuda {
namespace {

constexpr int kRowBlocks = 8;              // 16-row blocks of W per block (128 rows)
constexpr int kWarpRowBlocks = 4;          // per warp
constexpr int kABytes = kRowBlocks * 4 * 512;
constexpr int kMetaBytes = kRowBlocks * 256;
constexpr int kXRowBytes = 128 * 2 + 16;   // one token's 128 k of x, + 16 B against bank conflicts
constexpr int kGroup = 8;                  // token tiles per swizzle group

template <int BM>
__host__ __device__ constexpr int stage_bytes() { return kABytes + kMetaBytes + BM * kXRowBytes; }
// The ring must also hold the fp32 output tile the epilogue reads back.
static_assert(2 * stage_bytes<64>() >= 64 * (128 + 4) * 4 && 3 * stage_bytes<128>() >= 128 * (128 + 4) * 4);

__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 r;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(addr));
  return r;
}

template <typename T, int BM, int WT, int STAGES>
__global__ void __launch_bounds__(64 * WT) prefill_kernel(const PrefillLaunch p) {
  constexpr int kThreads = 64 * WT;  // 2 row warps x WT token warps
  extern __shared__ __align__(128) uint8_t smem[];
  constexpr int kStage = stage_bytes<BM>();
  constexpr int NT = BM / WT / 8;  // 8-token n-tiles per warp
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wr = warp & 1, wt = warp >> 1;
  const int g = lane >> 2, t = lane & 3;

  // Grouped block order: tiles (row tile r, token tile c) with c fastest inside groups of kGroup.
  const int row_tiles = (p.row_blocks + kRowBlocks - 1) / kRowBlocks;
  const int tok_tiles = (p.m + BM - 1) / BM;
  const int bid = blockIdx.x;
  const int group_size = kGroup * row_tiles;
  const int group = bid / group_size;
  const int first_c = group * kGroup;
  const int group_cols = min(tok_tiles - first_c, kGroup);
  const int c = first_c + (bid % group_size) % group_cols;
  const int r = (bid % group_size) / group_cols;
  const int rb0 = r * kRowBlocks, tok0 = c * BM;

  const uint8_t* vals = static_cast<const uint8_t*>(p.values);
  const uint8_t* meta = static_cast<const uint8_t*>(p.meta);
  const T* x = static_cast<const T*>(p.x);
  const uint32_t sbase = uint32_t(__cvta_generic_to_shared(smem));

  // One k-quad of A, metadata and x into stage `s`. Row blocks past the end re-read the last one
  // (their results are never stored), so every metadata word the tensor cores see is valid.
  auto load_stage = [&](int q, int s) {
    const uint32_t st = sbase + s * kStage;
    for (int i = threadIdx.x; i < kABytes / 16; i += kThreads) {
      const int rb = min(rb0 + i / 128, p.row_blocks - 1), off = i % 128;  // 128 chunks = 4 k-tiles
      ptx::cp_async_cg_16(st + i * 16, vals + (size_t(rb) * p.k_tiles + size_t(q) * 4) * 512 + off * 16, 16);
    }
    for (int i = threadIdx.x; i < kMetaBytes / 16; i += kThreads) {
      const int rb = min(rb0 + i / 16, p.row_blocks - 1);
      ptx::cp_async_cg_16(st + kABytes + i * 16, meta + (size_t(rb) * p.k_quads + q) * 256 + (i % 16) * 16, 16);
    }
    for (int i = threadIdx.x; i < BM * 16; i += kThreads) {
      const int row = i / 16, ck = i % 16;
      const int tok = tok0 + row, k = q * 128 + ck * 8;
      const bool ok = tok < p.m && k < p.k;
      ptx::cp_async_cg_16(st + kABytes + kMetaBytes + row * kXRowBytes + ck * 16,
                          ok ? x + size_t(tok) * p.k + k : x, ok ? 16 : 0);
    }
  };

  float acc[kWarpRowBlocks][NT][4];
#pragma unroll
  for (int i = 0; i < kWarpRowBlocks; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

  const int nq = p.k_quads;
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nq) load_stage(s, s);
    ptx::cp_async_commit_group();
  }
  for (int q = 0; q < nq; ++q) {
    ptx::cp_async_wait_group<STAGES - 2>();
    __syncthreads();  // stage q is visible to all warps; stage q - 1 is free for reuse
    if (q + STAGES - 1 < nq) load_stage(q + STAGES - 1, (q + STAGES - 1) % STAGES);
    ptx::cp_async_commit_group();  // (an empty group keeps the wait count uniform at the tail)

    const uint32_t st = sbase + (q % STAGES) * kStage;
    // Metadata: lanes with t < 2 hold the word of lane 4 g + t for each k-tile; the others' words are
    // ignored by sparsity selector 0 but must still be valid, so they read the same slot.
    uint4 e[kWarpRowBlocks];
#pragma unroll
    for (int i = 0; i < kWarpRowBlocks; ++i)
      e[i] = ld_shared_v4(st + kABytes + ((wr * kWarpRowBlocks + i) * 16 + 2 * g + (t & 1)) * 16);
    // ldmatrix: lanes 8 j .. 8 j + 7 address the rows of matrix j (k offset 8 j within the k-tile).
    const uint32_t xb = st + kABytes + kMetaBytes + (wt * (BM / WT) + (lane & 7)) * kXRowBytes + (lane >> 3) * 16;
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      uint4 a[kWarpRowBlocks];
#pragma unroll
      for (int i = 0; i < kWarpRowBlocks; ++i)
        a[i] = ld_shared_v4(st + (((wr * kWarpRowBlocks + i) * 4 + kt) * 32 + lane) * 16);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        uint32_t b[4];
        ptx::ldmatrix_x4(b, xb + j * 8 * kXRowBytes + kt * 64);
#pragma unroll
        for (int i = 0; i < kWarpRowBlocks; ++i) {
          const uint32_t ew = kt == 0 ? e[i].x : kt == 1 ? e[i].y : kt == 2 ? e[i].z : e[i].w;
          ptx::mma_sp_m16n8k32<T>(acc[i][j], a[i], b, ew);
        }
      }
    }
  }
  ptx::cp_async_wait_group<0>();

  // The tile goes through shared memory (the ring is idle now) so that the epilogue runs once per
  // element in one small loop, with consecutive threads on consecutive n: coalesced bias, residual
  // and y, and one inlined copy of the epilogue instead of one per accumulator register.
  // Lane (g, t) holds rows g, g + 8 of each 16-row block for tokens 2 t, 2 t + 1 of each n-tile.
  __syncthreads();
  float* tile = reinterpret_cast<float*>(smem);  // [BM tokens][128 + 4 rows of W]
  constexpr int kLd = 128 + 4;  // + 4 floats: the 32 lanes' stores land in 32 distinct banks
#pragma unroll
  for (int i = 0; i < kWarpRowBlocks; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const int nl = (wr * kWarpRowBlocks + i) * 16 + g + 8 * (v >> 1);
        const int tl = wt * (BM / WT) + j * 8 + 2 * t + (v & 1);
        tile[tl * kLd + nl] = acc[i][j][v];
      }
  __syncthreads();
  const int n0 = rb0 * 16;
  // Gated (fused gate/up rows 2j, 2j + 1): a thread takes the row pair (nl, nl + 1), nl even.
  const int step = p.ep.gated ? 2 : 1;
#pragma unroll 1
  for (int e = threadIdx.x * step; e < BM * 128; e += kThreads * step) {
    const int tl = e / 128, nl = e % 128;
    const int tok = tok0 + tl, n = n0 + nl;
    const float* v = tile + tl * kLd + nl;
    if (tok < p.m && n < p.n) epilogue_store_step(p.ep, tok, n, v[0], step == 2 ? v[1] : 0.0f);
  }
}

template <typename T, int BM, int WT, int STAGES>
void launch_typed(const PrefillLaunch& p, cudaStream_t stream) {
  constexpr int kSmem = STAGES * stage_bytes<BM>();
  static bool raised = false;  // the attribute is per kernel and process; set it once
  if (!raised) {
    SF_CUDA_CHECK(cudaFuncSetAttribute(prefill_kernel<T, BM, WT, STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    raised = true;
  }
  const int row_tiles = (p.row_blocks + kRowBlocks - 1) / kRowBlocks;
  const int tok_tiles = (p.m + BM - 1) / BM;
  prefill_kernel<T, BM, WT, STAGES><<<unsigned(row_tiles) * unsigned(tok_tiles), 64 * WT, kSmem, stream>>>(p);
  SF_CUDA_CHECK_LAUNCH();
}

// The instantiated set (see the kernel table in sparse_gemm.cpp). The first H100 run (2026-11-22)
// of a 4-warp 128 x 128 tile reached only 240-280 TFLOP/s: ncu showed 6% achieved occupancy (one
// block of 4 warps per SM, 250 registers) and 27% SM throughput, latency bound. So: BM = 128 with
// 8 warps (2 x 4, warp tile 64 rows x 32 tokens, 3 stages, 156 KB: sm_80/90), and BM = 64 with 4
// warps and 2 stages (70 KB: three blocks per SM on sm_80/90, and the only tile sm_86/89's 99 KB
// per block takes).
template <typename T>
void launch_dtype(const PrefillLaunch& p, int tile_m, int stages, cudaStream_t stream) {
  if (tile_m == 128 && stages == 3) return launch_typed<T, 128, 4, 3>(p, stream);
  if (tile_m == 64 && stages == 2) return launch_typed<T, 64, 2, 2>(p, stream);
  detail::throw_status(9 /* Internal */, "prefill kernel with tile_m=" + std::to_string(tile_m) +
                                             " stages=" + std::to_string(stages) + " is not instantiated");
}

}  // namespace

size_t prefill_smem_bytes(int tile_m, int stages) {
  return size_t(stages) * size_t(tile_m == 128 ? stage_bytes<128>() : stage_bytes<64>());
}

void launch_prefill(const PrefillLaunch& p, DType dtype, int tile_m, int stages, cudaStream_t stream) {
  if (p.m <= 0 || p.n <= 0) return;
  if (dtype == DType::F16) return launch_dtype<__half>(p, tile_m, stages, stream);
  if (dtype == DType::BF16) return launch_dtype<__nv_bfloat16>(p, tile_m, stages, stream);
  detail::throw_status(2 /* UnsupportedShape */,
                       "the 2:4 GPU kernels take fp16 or bf16 weights, not " + std::string(dtype_name(dtype)));
}

}  // namespace sf::cuda
