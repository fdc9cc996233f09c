// Prefill-family 2:4 GEMM for Hopper (sm_90a): wgmma.mma_async.sp, fed by the SM's copy engine.
//
// A block owns 128 or 256 rows of W (two or four consumer warpgroups of 64 rows) and 128 tokens.
// One thread issues the copies: lane 0 of a producer warp after the consumers (128 rows), or thread
// 0 between its own wgmmas (256 rows: a 17th warp would not fit its registers). Per k-quad (128 of K:
// the unit the metadata is stored in) it fills one stage of a kStages-deep ring in shared memory:
//   x    128 tokens x 128 k as two 64-k boxes by TMA (cp.async.bulk.tensor, 128-byte swizzle: the
//        canonical K-major layout wgmma reads B in; tokens past M and k past K arrive as zeros);
//   A    8 or 16 row blocks x 4 k-tiles x 512 B, one 2 KB bulk copy per row block, verbatim: the
//        weight layout already holds each lane's mma.sp A fragment, which is also the per-warp
//        register fragment of wgmma.sp's A (warp w of a warpgroup: rows 16 w .. 16 w + 15);
//   meta per row block 256 B (16 slots of 4 words, one word per k-tile), one bulk copy each;
// and signals the stage's `full` mbarrier with the byte count. A consumer warpgroup loads its A
// fragments and metadata words from the stage (one conflict-free 16-byte ld.shared per lane each),
// issues four wgmma.sp m64n128k32 against the x boxes, waits for them, and releases the stage on its
// `empty` mbarrier (one arrival per consumer thread). So W keeps the one layout of docs/KERNELS.md:
// nothing is converted for this path.
//
// Blocks are ordered as in prefill.cu (token tiles fastest within groups of kGroup) for L2 reuse. The
// fp32 tile goes through shared memory (the ring is idle at the end) for a coalesced epilogue.
// Needs k % 8 == 0 and x 16-byte aligned (TMA: row stride a multiple of 16 bytes); SparseGemm checks
// and falls back otherwise.
#include <cuda.h>  // CUtensorMap and its encoder's enums (the function itself comes from the runtime)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <mutex>
#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/prefill_kernels.hpp"
#include "kernels/cuda/ptx.cuh"

namespace sf::cuda {
namespace {

constexpr int kTokens = 128;                 // tokens per block
constexpr int kXBoxBytes = kTokens * 128;    // one 64-k box: 128 token rows x 128 bytes

// The block's shape for CW consumer warpgroups (64 rows of W each): 64 CW rows x 128 tokens. CW = 2:
// 50 KB stages, 4 deep; CW = 4: 68 KB stages, 3 deep (x is read from L2 once per 256 rows instead of
// per 128: 123 instead of 84 flop per byte staged). One 64-row tile per warpgroup keeps a consumer
// thread at 64 accumulators + 16 A-fragment registers (wgmma reads A registers until it completes):
// 111 registers at CW = 2 (288 threads), 118 at CW = 4 (512 threads, 128 allowed).
template <int CW>
struct Shape {
  // CW = 2: a producer warp of its own after the consumers. CW = 4: 17 warps would leave 96 registers
  // a thread (each SM quarter holds 16 K registers and 5 of the warps), so thread 0 issues the copies
  // between its own wgmmas instead and 16 warps get 128.
  static constexpr bool kProducerWarp = CW == 2;
  static constexpr int kThreads = 128 * CW + (kProducerWarp ? 32 : 0);
  static constexpr int kRowBlocks = 4 * CW;  // 16-row blocks of W per block
  static constexpr int kRows = 16 * kRowBlocks;
  static constexpr int kABytes = kRowBlocks * 4 * 512;
  static constexpr int kMetaBytes = kRowBlocks * 256;
  static constexpr int kStageBytes = 2 * kXBoxBytes + kABytes + kMetaBytes;
  static constexpr int kStages = CW == 2 ? 4 : 3;
  static constexpr int kLd = kRows + 4;  // epilogue tile row (floats): + 4 against bank conflicts
  static constexpr size_t kSmemBytes = size_t(kStages) * kStageBytes + 1024;  // + alignment slack
  static_assert(kStageBytes % 1024 == 0, "the swizzled x boxes need 1024-byte alignment in every stage");
  static_assert(size_t(kTokens) * kLd * 4 <= size_t(kStages) * kStageBytes, "the epilogue tile reuses the ring");
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 r;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(addr));
  return r;
}

// The shared-memory matrix descriptor of a K-major operand in the 128-byte swizzle layout (rows of
// 128 bytes, 8-row groups 1024 bytes apart): start address >> 4 (bits 0-13), leading offset (unused
// by this layout: 1), stride offset 1024 >> 4 (bits 32-45), layout type 1 = 128-byte swizzle (62-63).
// Moving along K inside the 128-byte row is moving the start address (the swizzle is applied to the
// full address, so the 1024-aligned group stays the pattern's base).
__device__ __forceinline__ uint64_t kmajor_sw128_desc(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
#endif

template <typename T, int CW>
__global__ void __launch_bounds__(Shape<CW>::kThreads, 1)
    prefill_sm90_kernel(const PrefillLaunch p, const __grid_constant__ CUtensorMap xmap) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using S = Shape<CW>;
  constexpr int kThreads = S::kThreads;
  constexpr int kRowBlocks = S::kRowBlocks, kStages = S::kStages, kStageBytes = S::kStageBytes;
  constexpr int kABytes = S::kABytes, kLd = S::kLd;
  extern __shared__ uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  const uint32_t raw = uint32_t(__cvta_generic_to_shared(smem_raw));
  const uint32_t ring = (raw + 1023u) & ~1023u;
  uint8_t* ring_ptr = smem_raw + (ring - raw);
  const uint32_t full0 = uint32_t(__cvta_generic_to_shared(&full[0]));
  const uint32_t empty0 = uint32_t(__cvta_generic_to_shared(&empty[0]));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  // Grouped block order: tiles (row tile r, token tile c) with c fastest inside groups of kGroup.
  constexpr int kGroup = 8;  // token tiles per group
  const int row_tiles = (p.row_blocks + kRowBlocks - 1) / kRowBlocks;
  const int tok_tiles = (p.m + kTokens - 1) / kTokens;
  const int bid = blockIdx.x;
  const int group_size = kGroup * row_tiles;
  const int first_c = (bid / group_size) * kGroup;
  const int group_cols = min(tok_tiles - first_c, kGroup);
  const int c = first_c + (bid % group_size) % group_cols;
  const int r = (bid % group_size) / group_cols;
  const int rb0 = r * kRowBlocks, tok0 = c * kTokens;
  const int nq = p.k_quads;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      ptx::mbarrier_init(full0 + 8 * s, 1);  // the producer's arrival (+ the bytes)
      ptx::mbarrier_init(empty0 + 8 * s, 128 * CW);  // one arrival per consumer thread
    }
    ptx::fence_mbarrier_init();
  }
  __syncthreads();

  // Stage q's copies (one thread), announced on its `full` barrier with the byte count.
  const auto issue = [&](int q) {
    const uint8_t* vals = static_cast<const uint8_t*>(p.values);
    const uint8_t* meta = static_cast<const uint8_t*>(p.meta);
    const int s = q % kStages;
    const uint32_t st = ring + uint32_t(s) * kStageBytes, bar = full0 + 8 * s;
    ptx::mbarrier_arrive_expect_tx(bar, kStageBytes);
    ptx::cp_async_bulk_tensor_2d_g2s(st, &xmap, q * 128, tok0, bar);
    ptx::cp_async_bulk_tensor_2d_g2s(st + kXBoxBytes, &xmap, q * 128 + 64, tok0, bar);
    // Row blocks past the end re-read the last one (their results are never stored), so every
    // metadata word the tensor cores see is valid.
    for (int i = 0; i < kRowBlocks; ++i) {
      const int rb = min(rb0 + i, p.row_blocks - 1);
      ptx::cp_async_bulk_g2s(st + 2 * kXBoxBytes + i * 2048, vals + (size_t(rb) * p.k_tiles + size_t(q) * 4) * 512, 2048,
                             bar);
      ptx::cp_async_bulk_g2s(st + 2 * kXBoxBytes + kABytes + i * 256, meta + (size_t(rb) * p.k_quads + q) * 256, 256, bar);
    }
  };

  float acc[64];
  if (warp == 4 * CW) {  // the producer warp (CW = 2): one thread issues every copy
    if (lane == 0)
      for (int q = 0; q < nq; ++q) {
        const int round = q / kStages;
        if (round > 0) ptx::mbarrier_wait(empty0 + 8 * (q % kStages), uint32_t(round - 1) & 1u);  // released
        issue(q);
      }
  } else {  // consumer warpgroup cw: 64 rows (row blocks 4 cw .. 4 cw + 3, one per warp) x 128 tokens
    const int rbl = warp;
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    if (!S::kProducerWarp && threadIdx.x == 0)
      for (int q = 0; q < min(nq, kStages); ++q) issue(q);
    // The thread is done with stage q's shared memory: release it (and, without a producer warp, thread
    // 0 refills it once every thread has; its warp waits with it, so that the next wgmma.sync.aligned
    // sees the whole warp). Every thread arrives for itself: an arrival releases only the arriving
    // thread's own reads, so one arrival per warp after __syncwarp leans on the warp barrier's ordering,
    // which compute-sanitizer's racecheck does not follow (it reported the next copy into the stage as
    // racing with the A and metadata loads, H100, 2026-12-05).
    const auto release = [&](int q) {
      const int s = q % kStages;
      ptx::mbarrier_arrive(empty0 + 8 * s);
      if constexpr (!S::kProducerWarp) {
        if (threadIdx.x == 0 && q + kStages < nq) {
          ptx::mbarrier_wait(empty0 + 8 * s, uint32_t(q / kStages) & 1u);
          issue(q + kStages);
        }
        __syncwarp();
      }
    };
    // Stage q: wait for its copies, load this warp's A fragments and metadata, issue the four wgmmas.
    const auto mma = [&](int q, uint4(&a)[4]) {
      const int s = q % kStages;
      ptx::mbarrier_wait(full0 + 8 * s, uint32_t(q / kStages) & 1u);
      const uint32_t st = ring + uint32_t(s) * kStageBytes;
      // Lanes with t < 2 hold the word of lane 4 g + t per k-tile; selector 0 ignores the others', which
      // read the same slot so that every word is valid.
      const uint4 e = ld_shared_v4(st + 2 * kXBoxBytes + kABytes + (rbl * 16 + 2 * g + (t & 1)) * 16);
#pragma unroll
      for (int kt = 0; kt < 4; ++kt) a[kt] = ld_shared_v4(st + 2 * kXBoxBytes + ((rbl * 4 + kt) * 32 + lane) * 16);
      ptx::wgmma_fence();
#pragma unroll
      for (int kt = 0; kt < 4; ++kt) {
        const uint32_t ew = kt == 0 ? e.x : kt == 1 ? e.y : kt == 2 ? e.z : e.w;
        ptx::wgmma_sp_m64n128k32<T>(acc, a[kt], kmajor_sw128_desc(st + (kt / 2) * kXBoxBytes + (kt % 2) * 64), ew);
      }
      ptx::wgmma_commit_group();
    };
    // Each stage's wgmmas are waited for before the stage is released. Keeping one stage's wgmmas in
    // flight while the next stage's issue (wait_group 1, two A-register buffers) measured 2-3% slower
    // on the H100 at M = 128..8192 on three shapes (2026-12-05): this loop is not what bounds it.
    for (int q = 0; q < nq; ++q) {
      uint4 a[4];
      mma(q, a);
      ptx::wgmma_wait_group<0>();
      release(q);
    }
  }
  __syncthreads();  // every copy has landed and been consumed: the ring holds the fp32 tile now

  float* tile = reinterpret_cast<float*>(ring_ptr);  // [128 tokens][kLd], rows of W along the row
  if (warp < 4 * CW) {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < 16; ++j)
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const int nl = warp * 16 + g + 8 * (v >> 1);
        const int tl = j * 8 + 2 * t + (v & 1);
        tile[tl * kLd + nl] = acc[4 * j + v];
      }
  }
  __syncthreads();
  const int n0 = rb0 * 16;
  // Gated (fused gate/up rows 2j, 2j + 1): a thread takes the row pair (nl, nl + 1), nl even.
  const int step = p.ep.gated ? 2 : 1;
#pragma unroll 1
  for (int i = threadIdx.x * step; i < kTokens * S::kRows; i += kThreads * step) {
    const int tl = i / S::kRows, nl = i % S::kRows;
    const int tok = tok0 + tl, n = n0 + nl;
    const float* v = tile + tl * kLd + nl;
    if (tok < p.m && n < p.n) epilogue_store_step(p.ep, tok, n, v[0], step == 2 ? v[1] : 0.0f);
  }
#else
  (void)p;  // never launched where it was not built for sm_90a (prefill_sm90_available)
  (void)xmap;
#endif
}

// cuTensorMapEncodeTiled, from the driver through the runtime (no link against libcuda).
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiled encoder() {
  static EncodeTiled fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<EncodeTiled>(f);
    else
      cudaGetLastError();
  });
  return fn;
}

// x [m, k] row-major as a 2D tensor (k innermost), boxes of 64 k x 128 tokens, 128-byte swizzle.
CUtensorMap x_tensor_map(const PrefillLaunch& p, DType dtype) {
  const EncodeTiled encode = encoder();
  if (!encode) detail::throw_status(9 /* Internal */, "the CUDA driver has no cuTensorMapEncodeTiled (needs CUDA 12+)");
  CUtensorMap map;
  const cuuint64_t dims[2] = {cuuint64_t(p.k), cuuint64_t(p.m)};
  const cuuint64_t strides[1] = {cuuint64_t(p.k) * 2};
  const cuuint32_t box[2] = {64, kTokens};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode(&map, dtype == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                            2, const_cast<void*>(p.x), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    detail::throw_status(9 /* Internal */, "cuTensorMapEncodeTiled failed (CUresult " + std::to_string(int(r)) +
                                               ") for x of " + std::to_string(p.m) + " x " + std::to_string(p.k));
  return map;
}

template <typename T>
bool built_for_device() {
  static const bool ok = [] {
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, prefill_sm90_kernel<T, 2>) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    // binaryVersion 90 is the sm_90a cubin (this file's only sm_90 build); a later GPU would run the
    // PTX of another target, without the kernel body, so only Hopper itself qualifies.
    return fa.binaryVersion == 90 && major == 9 && encoder() != nullptr;
  }();
  return ok;
}

template <typename T, int CW>
void launch_typed(const PrefillLaunch& p, cudaStream_t stream) {
  using S = Shape<CW>;
  static bool raised = false;  // the attribute is per kernel and process; set it once
  if (!raised) {
    SF_CUDA_CHECK(cudaFuncSetAttribute(prefill_sm90_kernel<T, CW>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(S::kSmemBytes)));
    raised = true;
  }
  const CUtensorMap map = x_tensor_map(p, std::is_same_v<T, __half> ? DType::F16 : DType::BF16);
  const int row_tiles = (p.row_blocks + S::kRowBlocks - 1) / S::kRowBlocks;
  const int tok_tiles = (p.m + kTokens - 1) / kTokens;
  prefill_sm90_kernel<T, CW><<<unsigned(row_tiles) * unsigned(tok_tiles), S::kThreads, S::kSmemBytes, stream>>>(p, map);
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return;
  // Say what the launch asked for against what the kernel was built with, so a resource failure
  // names its resource.
  cudaFuncAttributes fa{};
  cudaFuncGetAttributes(&fa, prefill_sm90_kernel<T, CW>);
  int fit = -1;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, prefill_sm90_kernel<T, CW>, S::kThreads, S::kSmemBytes);
  cudaGetLastError();
  detail::throw_status(
      9 /* Internal */,
      std::string("the wgmma.sp prefill launch failed: ") + cudaGetErrorString(err) + " (" +
          std::to_string(S::kThreads) + " threads x " + std::to_string(fa.numRegs) + " registers, " +
          std::to_string(S::kSmemBytes) + " B dynamic + " + std::to_string(fa.sharedSizeBytes) +
          " B static shared memory (opt-in limit set to " + std::to_string(fa.maxDynamicSharedSizeBytes) + "), " +
          std::to_string(fa.localSizeBytes) + " B local, max threads " + std::to_string(fa.maxThreadsPerBlock) +
          ", blocks per SM " + std::to_string(fit) + ")");
}

}  // namespace

size_t prefill_sm90_smem_bytes(int rows) { return rows == 256 ? Shape<4>::kSmemBytes : Shape<2>::kSmemBytes; }

bool prefill_sm90_available(DType dtype) {
  if (dtype == DType::F16) return built_for_device<__half>();
  if (dtype == DType::BF16) return built_for_device<__nv_bfloat16>();
  return false;
}

void launch_prefill_sm90(const PrefillLaunch& p, DType dtype, int rows, cudaStream_t stream) {
  if (p.m <= 0 || p.n <= 0) return;
  if (rows != 128 && rows != 256)
    detail::throw_status(9 /* Internal */, "the wgmma.sp prefill kernel takes 128 or 256 rows per block, not " +
                                               std::to_string(rows));
  if (dtype == DType::F16) return rows == 256 ? launch_typed<__half, 4>(p, stream) : launch_typed<__half, 2>(p, stream);
  if (dtype == DType::BF16)
    return rows == 256 ? launch_typed<__nv_bfloat16, 4>(p, stream) : launch_typed<__nv_bfloat16, 2>(p, stream);
  detail::throw_status(2 /* UnsupportedShape */,
                       "the 2:4 GPU kernels take fp16 or bf16 weights, not " + std::string(dtype_name(dtype)));
}

}  // namespace sf::cuda
