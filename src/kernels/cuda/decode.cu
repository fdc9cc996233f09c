// Decode-family 2:4 GEMM (M = 1..64 per launch; larger M tiles over grid.z): bound by the bytes of
// W, so everything is arranged around reading the compressed values and metadata once, 16 bytes
// per lane per load, with two steps (16 k-tiles, 9 KB per warp) in flight.
//
// mma.sp m16n8k32 with W as the sparse A operand (16 rows of N) and x^T as B (8 tokens). A block
// owns one 16-row block and a K range (its split); its warps take interleaved 256-wide K steps of
// that range and reduce through shared memory. With splits > 1 each block stores a fp32 partial
// and the last block of the 16-row block to arrive sums the partials in split order (so the
// result does not depend on arrival order), applies the epilogue and resets the counter.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/decode_kernels.hpp"
#include "kernels/cuda/epilogue.cuh"
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

template <typename T, int MT, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) decode_kernel(const DecodeLaunch p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int rb = blockIdx.x, split = blockIdx.y;
  const int tok0 = blockIdx.z * MT * 8;
  const int q_begin = split * p.quads_per_split;
  const int q_end = min(p.k_quads, q_begin + p.quads_per_split);

  const uint4* vals = static_cast<const uint4*>(p.values) + size_t(rb) * p.k_tiles * 32 + lane;
  const uint4* meta = static_cast<const uint4*>(p.meta) + size_t(rb) * p.k_quads * 16 + (2 * g + (t & 1));
  const bool meta_lane = t < 2;

  // B fragment of lane (g, t) for token tok0 + 8 mt + g: x[tok][32 kt + 8 j + 2 t + {0, 1}], j = 0..3.
  const uint32_t* xrow[MT];
  bool xok[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int tok = tok0 + mt * 8 + g;
    xok[mt] = tok < p.m;
    xrow[mt] = reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.x) + size_t(xok[mt] ? tok : 0) * p.k);
  }
  const int kpairs = p.k / 2;

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;

  constexpr int stride = WARPS * kStepQuads;
  Step cur, nxt;
  int q = q_begin + warp * kStepQuads;
  if (q < q_end) load_step(cur, vals, meta, q, q_end, meta_lane);
  for (; q < q_end; q += stride) {
    // Issue the next step's weight loads before this step's math: they are the long-latency part.
    if (q + stride < q_end) load_step(nxt, vals, meta, q + stride, q_end, meta_lane);
#pragma unroll
    for (int u = 0; u < kStepTiles; ++u) {
      const int kt = q * 4 + u;
      const uint32_t e = meta_word(cur.e[u / 4], u % 4);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t b[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int kp = kt * 16 + 4 * j + t;  // pair index: element 32 kt + 8 j + 2 t
          b[j] = (xok[mt] && kp < kpairs) ? __ldg(xrow[mt] + kp) : 0u;
        }
        ptx::mma_sp_m16n8k32<T>(acc[mt], cur.a[u], b, e);
      }
    }
    cur = nxt;
  }

  // Reduce the warps' partial tiles: red[warp][token][row], 16 rows of W by 8 * MT tokens.
  constexpr int kTile = MT * 8 * 16;
  __shared__ float red[WARPS][kTile];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int tk = mt * 8 + 2 * t;
    red[warp][tk * 16 + g] = acc[mt][0];
    red[warp][(tk + 1) * 16 + g] = acc[mt][1];
    red[warp][tk * 16 + g + 8] = acc[mt][2];
    red[warp][(tk + 1) * 16 + g + 8] = acc[mt][3];
  }
  __syncthreads();

  const size_t tile_id = size_t(blockIdx.z) * gridDim.x + rb;
  if (gridDim.y == 1) {
    for (int i = threadIdx.x; i < kTile; i += WARPS * 32) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) v += red[w][i];
      const int tok = tok0 + i / 16, n = rb * 16 + i % 16;
      if (tok < p.m && n < p.n) epilogue_store(p.ep, tok, n, v);
    }
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
  for (int i = threadIdx.x; i < kTile; i += WARPS * 32) {
    float v = 0.0f;
    for (int s = 0; s < int(gridDim.y); ++s) v += __ldcg(part + size_t(s) * kTile + i);
    const int tok = tok0 + i / 16, n = rb * 16 + i % 16;
    if (tok < p.m && n < p.n) epilogue_store(p.ep, tok, n, v);
  }
  if (threadIdx.x == 0) p.counters[tile_id] = 0;  // ready for the next launch on this workspace
}

// The shared-x variant ("decode_sx"): a block's warps own WARPS different 16-row blocks and walk the
// same K range in lockstep, so each 256-wide slice of x is fetched once per block (cp.async into
// shared memory, double buffered) and fed to all warps by ldmatrix. The plain kernel above re-reads
// x from L2 for every 16-row block, which costs more than W itself once M reaches 8-16 tokens.
// Needs k % 8 == 0 and x 16-byte aligned (the 16-byte cp.async); the launcher checks.
constexpr int kSxRowBytes = 512 + 16;  // 256 k of one token + 16 B: the 8 rows an ldmatrix reads hit distinct banks

template <int MT>
constexpr int sx_smem_bytes() { return 2 * MT * 8 * kSxRowBytes; }

template <typename T, int MT, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) decode_sx_kernel(const DecodeLaunch p) {
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr int kRows = MT * 8;
  constexpr int kBuf = kRows * kSxRowBytes;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int rb = blockIdx.x * WARPS + warp;
  const bool active = rb < p.row_blocks;
  const int split = blockIdx.y;
  const int tok0 = blockIdx.z * kRows;
  const int q_begin = split * p.quads_per_split;
  const int q_end = min(p.k_quads, q_begin + p.quads_per_split);
  const int rbc = active ? rb : 0;
  const uint4* vals = static_cast<const uint4*>(p.values) + size_t(rbc) * p.k_tiles * 32 + lane;
  const uint4* meta = static_cast<const uint4*>(p.meta) + size_t(rbc) * p.k_quads * 16 + (2 * g + (t & 1));
  const T* x = static_cast<const T*>(p.x);
  const uint32_t smem_base = uint32_t(__cvta_generic_to_shared(smem));

  // One step of x: kRows tokens x 256 k, as 16-byte chunks spread over the block's threads.
  auto stage = [&](int q, int buf) {
    for (int c = threadIdx.x; c < kRows * 32; c += WARPS * 32) {
      const int r = c >> 5, cc = c & 31;
      const int tok = tok0 + r, k = q * 128 + cc * 8;
      const bool ok = tok < p.m && k < p.k;
      ptx::cp_async_cg_16(smem_base + buf * kBuf + r * kSxRowBytes + cc * 16, ok ? x + size_t(tok) * p.k + k : x,
                          ok ? 16 : 0);
    }
    ptx::cp_async_commit_group();
  };

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;

  Step cur, nxt;
  int q = q_begin;
  if (q < q_end) {
    load_step(cur, vals, meta, q, active ? q_end : q, t < 2);
    stage(q, 0);
  }
  int buf = 0;
  for (; q < q_end; q += kStepQuads) {
    const int qn = q + kStepQuads;
    if (qn < q_end) {
      load_step(nxt, vals, meta, qn, active ? q_end : qn, t < 2);
      stage(qn, buf ^ 1);
      ptx::cp_async_wait_group<1>();
    } else {
      ptx::cp_async_wait_group<0>();
    }
    __syncthreads();  // this step's x is in shared memory
    // ldmatrix addresses: lanes 8 i .. 8 i + 7 give the rows of matrix i (k offset 8 i).
    const uint32_t xb = smem_base + buf * kBuf + (lane & 7) * kSxRowBytes + (lane >> 3) * 16;
#pragma unroll
    for (int u = 0; u < kStepTiles; ++u) {
      const uint32_t e = meta_word(cur.e[u / 4], u % 4);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t b[4];
        ptx::ldmatrix_x4(b, xb + mt * 8 * kSxRowBytes + u * 64);
        ptx::mma_sp_m16n8k32<T>(acc[mt], cur.a[u], b, e);
      }
    }
    __syncthreads();  // all warps are done with buf before the next iteration refills it
    cur = nxt;
    buf ^= 1;
  }

  // Lane (g, t) holds rows g, g + 8 of its 16-row block for tokens 8 mt + 2 t, + 1.
  const size_t tile_id = size_t(blockIdx.z) * gridDim.x + blockIdx.x;
  if (gridDim.y == 1) {
    if (!active) return;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int tok = tok0 + mt * 8 + 2 * t + (i & 1), n = rb * 16 + g + 8 * (i >> 1);
        if (tok < p.m && n < p.n) epilogue_store(p.ep, tok, n, acc[mt][i]);
      }
    return;
  }
  constexpr int kWarpTile = MT * 32 * 4;  // floats per warp per split, in lane order
  float* part = p.partials + (tile_id * gridDim.y * WARPS + warp) * kWarpTile;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) __stcg(part + size_t(split) * WARPS * kWarpTile + (mt * 4 + i) * 32 + lane, acc[mt][i]);
  __threadfence();
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) last = atomicAdd(p.counters + tile_id, 1) == int(gridDim.y) - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (active) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float v = 0.0f;
        for (int sp = 0; sp < int(gridDim.y); ++sp) v += __ldcg(part + size_t(sp) * WARPS * kWarpTile + (mt * 4 + i) * 32 + lane);
        const int tok = tok0 + mt * 8 + 2 * t + (i & 1), n = rb * 16 + g + 8 * (i >> 1);
        if (tok < p.m && n < p.n) epilogue_store(p.ep, tok, n, v);
      }
  }
  if (threadIdx.x == 0) p.counters[tile_id] = 0;
}

template <typename T, int MT, int WARPS>
void launch_sx_typed(const DecodeLaunch& p, cudaStream_t stream) {
  constexpr int kSmem = sx_smem_bytes<MT>();
  if constexpr (kSmem > 48 * 1024) {
    static bool raised = false;  // the attribute is per kernel and process; set it once
    if (!raised) {
      SF_CUDA_CHECK(cudaFuncSetAttribute(decode_sx_kernel<T, MT, WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
      raised = true;
    }
  }
  const dim3 grid(unsigned((p.row_blocks + WARPS - 1) / WARPS), unsigned(p.splits), unsigned((p.m + MT * 8 - 1) / (MT * 8)));
  decode_sx_kernel<T, MT, WARPS><<<grid, WARPS * 32, kSmem, stream>>>(p);
  SF_CUDA_CHECK_LAUNCH();
}

template <typename T, int MT, int WARPS>
void launch_typed(const DecodeLaunch& p, cudaStream_t stream) {
  const dim3 grid(unsigned(p.row_blocks), unsigned(p.splits), unsigned((p.m + MT * 8 - 1) / (MT * 8)));
  decode_kernel<T, MT, WARPS><<<grid, WARPS * 32, 0, stream>>>(p);
  SF_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_dtype(const DecodeLaunch& p, int mt, int warps, bool shared_x, cudaStream_t stream) {
  // The instantiated set: every M bucket (mt) with 4 or 8 warps, both variants; see the table in
  // sparse_gemm.cpp.
#define SF_DECODE_CASE(MT_, W_)                                                   \
  if (mt == MT_ && warps == W_)                                                  \
    return shared_x ? launch_sx_typed<T, MT_, W_>(p, stream) : launch_typed<T, MT_, W_>(p, stream);
  SF_DECODE_CASE(1, 4) SF_DECODE_CASE(1, 8)
  SF_DECODE_CASE(2, 4) SF_DECODE_CASE(2, 8)
  SF_DECODE_CASE(4, 4) SF_DECODE_CASE(4, 8)
  SF_DECODE_CASE(8, 4) SF_DECODE_CASE(8, 8)
#undef SF_DECODE_CASE
  detail::throw_status(9 /* Internal */, "decode kernel with mt=" + std::to_string(mt) + " warps=" + std::to_string(warps) +
                                    " is not instantiated");
}

}  // namespace

void launch_decode(DecodeLaunch p, DType dtype, int mt, int warps, bool shared_x, cudaStream_t stream) {
  if (p.m <= 0 || p.n <= 0) return;
  if (dtype == DType::F16) return launch_dtype<__half>(p, mt, warps, shared_x, stream);
  if (dtype == DType::BF16) return launch_dtype<__nv_bfloat16>(p, mt, warps, shared_x, stream);
  detail::throw_status(2 /* UnsupportedShape */, "the 2:4 GPU kernels take fp16 or bf16 weights, not " +
                                            std::string(dtype_name(dtype)));
}

}  // namespace sf::cuda
