// Fused causal attention for prefill (fp16 / bf16 activations, head_dim 64, 80, 96 or 128): one
// block per (64 queries, query head) of one sequence walks the key tiles of the head's KV head (h /
// group: grouped-query attention) in order with an online softmax (flash attention), so the [heads,
// n, len] scores and probabilities never reach global memory. The unfused path (cuBLAS scores,
// causal softmax, cuBLAS P.V) writes and re-reads ~0.3 GB per layer at n = 2046 and spends 14.5 of
// the 50.9 ms of an OPT-6.7B prefill in attention on an H200
// (bench/results/2026-12-03-NVIDIA-H200-opt-6.7b-prefill-2046.md).
//
// Version 3, FlashAttention-2's register layout on mma.sync (m16n8k16, fp32 accumulate). The first
// two versions kept S, P and O in shared memory through WMMA and measured slower than the unfused
// path (23.6 ms against 14.5 at n = 2046); here nothing but the Q, K and V tiles touches shared
// memory:
//   - 4 warps; warp w owns query rows 16w..16w+15 of the block; its Q fragments stay in registers.
//   - K/V tiles of 64 keys, double-buffered with cp.async (zero-filled past the sequence: the cache
//     beyond it holds stale data, possibly NaN, and 0 * NaN would leak), rows padded by 16 bytes so
//     that ldmatrix's eight row addresses fall on distinct banks.
//   - S = Q K^T accumulates in registers (8 m16n8 tiles per warp); the causal mask applies only on
//     tiles that cross the diagonal; the running max and sum of a row live in the 4 lanes that hold
//     it (two shuffles per reduction).
//   - P = exp(S - m), rounded to the activation type, is re-used in place as the A operand of P V
//     (the m16n8 accumulator layout of two adjacent key tiles is the m16k16 A layout); V's B
//     operand comes from ldmatrix.trans.
//   - O / l is written from the accumulators, two elements per 32-bit store.
// q carries the scale and the rotation, k the rotation (launch_qkv_to_cache). Blocks with the most
// key tiles (the last queries) are scheduled first; blockIdx.y is the query head, so the heads
// sharing a KV head run side by side and their K/V tiles come from L2 after the first (loading a
// tile once per group, with the group's heads stacked as rows of one block, is not done yet).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/model/model_kernels.hpp"

namespace sf::cuda::model {
namespace {

constexpr int kQTile = 64;  // queries per block
constexpr int kKTile = 64;  // keys per tile
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

// Shared tile row stride in elements: D + 8 (16 bytes of padding).
template <int D>
constexpr int kLd = D + 8;

template <int D>
constexpr size_t smem_bytes() {  // Q + 2 x K + 2 x V tiles of 16-bit elements
  return size_t(kQTile + 4 * kKTile) * size_t(kLd<D>) * 2;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, or 16 zero bytes when !valid (src is then not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                                  const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_addr(p)));
}

// D (16x8 fp32) += A (16x16) B (16x8), 16-bit inputs.
template <typename T>
__device__ __forceinline__ void mma16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a packed pair of 16-bit values (lower address first).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Rows [row0, row0 + 64) of a [*, ld] matrix (the head slice at column col0, D wide) into the
// shared tile [64][kLd<D>]; rows at or past `rows` are zero-filled. One commit group per call site.
template <int D, typename T>
__device__ __forceinline__ void load_tile_async(T* dst, const T* src, int64_t ld, int64_t col0,
                                                int64_t row0, int64_t rows) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < kKTile * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const bool valid = row0 + r < rows;
    const T* s = valid ? src + (row0 + r) * ld + col0 + c * 8 : src;
    cp_async16(dst + r * kLd<D> + c * 8, s, valid);
  }
}

// q, out [n, q_ld]; the caches [*, kv_ld]; query head blockIdx.y reads KV head blockIdx.y / group.
template <int D, typename T>
__global__ void __launch_bounds__(kThreads)
    flash_prefill_kernel(const T* __restrict__ q, const T* __restrict__ k_cache,
                         const T* __restrict__ v_cache, T* __restrict__ out, int64_t q_ld,
                         int64_t kv_ld, int group, int64_t n, int64_t past) {
  constexpr int LD = kLd<D>;
  constexpr int kSteps = D / 16;     // k-steps of Q K^T
  constexpr int kDimTiles = D / 8;   // n-tiles of O
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = Qs + kQTile * LD;          // [2][64][LD]
  T* Vs = Ks + 2 * kKTile * LD;      // [2][64][LD]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tq = lane % 4;  // accumulator row (and row + 8), column pair
  const int64_t q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kQTile;  // the longest blocks first
  const int64_t col0 = int64_t(blockIdx.y) * D;                     // q and out
  const int64_t kv_col0 = int64_t(blockIdx.y / group) * D;          // k and v
  const int64_t len = past + n;
  const int64_t last_query = q0 + kQTile - 1 < n ? q0 + kQTile - 1 : n - 1;
  const int tiles = int((past + last_query) / kKTile) + 1;  // key tiles the block's last query sees

  load_tile_async<D>(Qs, q, q_ld, col0, q0, n);
  load_tile_async<D>(Ks, k_cache, kv_ld, kv_col0, 0, len);
  load_tile_async<D>(Vs, v_cache, kv_ld, kv_col0, 0, len);
  cp_async_commit();

  // This lane's two rows: query indices (a row past n acts as the last query; it is not written).
  const int64_t row_q0 = q0 + warp * 16 + g, row_q1 = row_q0 + 8;
  const int64_t lim0 = past + (row_q0 < n ? row_q0 : n - 1), lim1 = past + (row_q1 < n ? row_q1 : n - 1);
  const int64_t warp_first_key_limit = past + q0 + warp * 16;  // the warp's first row's last key

  uint32_t qf[kSteps][4];
  float o[kDimTiles][4];
#pragma unroll
  for (int i = 0; i < kDimTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  constexpr float kLog2e = 1.4426950408889634f;

  for (int j = 0; j < tiles; ++j) {
    const int buf = j & 1;
    if (j + 1 < tiles) {  // prefetch the next tile into the other buffer (free since the last barrier)
      load_tile_async<D>(Ks + (buf ^ 1) * kKTile * LD, k_cache, kv_ld, kv_col0,
                         int64_t(j + 1) * kKTile, len);
      load_tile_async<D>(Vs + (buf ^ 1) * kKTile * LD, v_cache, kv_ld, kv_col0,
                         int64_t(j + 1) * kKTile, len);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk)
        ldmatrix_x4(qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3],
                    Qs + (warp * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
    }
    const T* Kt = Ks + buf * kKTile * LD;
    const T* Vt = Vs + buf * kKTile * LD;
    const int64_t k0 = int64_t(j) * kKTile;

    // S [16 x 64] = Q K^T: n-tiles of 8 keys, two per ldmatrix.x4 (b0, b1 of keys nt and nt + 1).
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk)
#pragma unroll
      for (int nt = 0; nt < 8; nt += 2) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4(b0, b1, b2, b3, Kt + (nt * 8 + (lane / 16) * 8 + lane % 8) * LD + kk * 16 + ((lane / 8) % 2) * 8);
        mma16816<T>(s[nt], qf[kk], b0, b1);
        mma16816<T>(s[nt + 1], qf[kk], b2, b3);
      }

    // Causal mask, only on a tile that reaches past the warp's first row's limit.
    if (k0 + kKTile - 1 > warp_first_key_limit) {
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int64_t key = k0 + nt * 8 + tq * 2;
        if (key > lim0) s[nt][0] = -INFINITY;
        if (key + 1 > lim0) s[nt][1] = -INFINITY;
        if (key > lim1) s[nt][2] = -INFINITY;
        if (key + 1 > lim1) s[nt][3] = -INFINITY;
      }
    }

    // Online softmax of rows g (elements 0, 1) and g + 8 (elements 2, 3); the 4 lanes of a row are
    // lanes 4g..4g+3. Key 0 is in every row's first tile, so the maxima are finite from tile 0 on.
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    const float alpha0 = exp2f((m0 - mn0) * kLog2e), alpha1 = exp2f((m1 - mn1) * kLog2e);  // 0 on tile 0
    m0 = mn0;
    m1 = mn1;
    const float base0 = mn0 * kLog2e, base1 = mn1 * kLog2e;
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = exp2f(fmaf(s[nt][0], kLog2e, -base0));
      s[nt][1] = exp2f(fmaf(s[nt][1], kLog2e, -base0));
      s[nt][2] = exp2f(fmaf(s[nt][2], kLog2e, -base1));
      s[nt][3] = exp2f(fmaf(s[nt][3], kLog2e, -base1));
      sum0 += s[nt][0] + s[nt][1];
      sum1 += s[nt][2] + s[nt][3];
    }
    l0 = l0 * alpha0 + sum0;  // this lane's part of the row sum; reduced over the 4 lanes at the end
    l1 = l1 * alpha1 + sum1;
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
      o[dt][0] *= alpha0;
      o[dt][1] *= alpha0;
      o[dt][2] *= alpha1;
      o[dt][3] *= alpha1;
    }

    // O [16 x D] += P [16 x 64] V [64 x D]: k-steps of 16 keys (P from the accumulators of key tiles
    // 2kt and 2kt + 1), n-tiles of 8 dims, two per ldmatrix.x4.trans.
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kt][0], s[2 * kt][1]), pack2<T>(s[2 * kt][2], s[2 * kt][3]),
                              pack2<T>(s[2 * kt + 1][0], s[2 * kt + 1][1]),
                              pack2<T>(s[2 * kt + 1][2], s[2 * kt + 1][3])};
#pragma unroll
      for (int dt = 0; dt < kDimTiles; dt += 2) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4_trans(b0, b1, b2, b3,
                          Vt + (kt * 16 + ((lane / 8) % 2) * 8 + lane % 8) * LD + dt * 8 + (lane / 16) * 8);
        mma16816<T>(o[dt], pa, b0, b1);
        mma16816<T>(o[dt + 1], pa, b2, b3);
      }
    }
    __syncthreads();  // every warp is done with this buffer before the next prefetch overwrites it
  }

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
#pragma unroll
  for (int dt = 0; dt < kDimTiles; ++dt) {
    const int64_t c = col0 + dt * 8 + tq * 2;
    if (row_q0 < n)
      *reinterpret_cast<uint32_t*>(out + row_q0 * q_ld + c) =
          pack2<T>(o[dt][0] * inv0, o[dt][1] * inv0);
    if (row_q1 < n)
      *reinterpret_cast<uint32_t*>(out + row_q1 * q_ld + c) =
          pack2<T>(o[dt][2] * inv1, o[dt][3] * inv1);
  }
}

template <int D, typename T>
void launch_t(const AttentionArgs& a, int64_t seq, int64_t n, int64_t past, const void* q, cudaStream_t stream) {
  constexpr size_t smem = smem_bytes<D>();
  // Above the 48 KB default: set on every launch (the attribute belongs to the current device, and a
  // prefill makes one launch per layer, so the call costs nothing that matters).
  SF_CUDA_CHECK(cudaFuncSetAttribute(flash_prefill_kernel<D, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(smem)));
  const int64_t q_dim = a.heads * D, kv_dim = a.kv_heads * D;
  const size_t seq_off = size_t(seq) * size_t(a.capacity) * size_t(kv_dim);
  const dim3 grid(unsigned((n + kQTile - 1) / kQTile), unsigned(a.heads));
  flash_prefill_kernel<D, T><<<grid, kThreads, smem, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(a.k_cache) + seq_off,
      static_cast<const T*>(a.v_cache) + seq_off, static_cast<T*>(a.out), q_dim, kv_dim,
      int(a.heads / a.kv_heads), n, past);
  SF_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_d(const AttentionArgs& a, int64_t seq, int64_t n, int64_t past, const void* q, cudaStream_t stream) {
  switch (a.head_dim) {
    case 64: return launch_t<64, T>(a, seq, n, past, q, stream);
    case 80: return launch_t<80, T>(a, seq, n, past, q, stream);
    case 96:
      return launch_t<96, T>(a, seq, n, past, q, stream);
    case 128: return launch_t<128, T>(a, seq, n, past, q, stream);
    default: break;
  }
}

}  // namespace

bool fused_prefill_attention_supported(int act_dt, int64_t head_dim, int64_t row_width) {
  return (act_dt == 1 || act_dt == 2) &&
         (head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 128) &&
         row_width % 8 == 0;
}

void launch_prefill_attention(const AttentionArgs& args, int64_t seq, int64_t n, int64_t past,
                              const void* q, cudaStream_t stream) {
  if (n == 0) return;
  const AttentionArgs a = checked_attention_args(args, "fused prefill attention");
  if (!fused_prefill_attention_supported(a.act_dt, a.head_dim, a.heads * a.head_dim) || !a.out)
    detail::throw_status(2 /*UnsupportedShape*/,
                         "fused prefill attention needs fp16/bf16 activations, an output "
                         "and head_dim 64, 80, 96 or 128, got head_dim " +
                             std::to_string(a.head_dim) + ", act_dt " + std::to_string(a.act_dt));
  if (seq < 0 || seq >= a.batch || past < 0 || past + n > a.capacity)
    detail::throw_status(1 /*InvalidArgument*/,
                         "fused prefill attention: sequence " + std::to_string(seq) +
                             " positions " + std::to_string(past) + ".." +
                             std::to_string(past + n) + " outside the batch " +
                             std::to_string(a.batch) + " x capacity " + std::to_string(a.capacity));
  if (a.act_dt == 1) launch_d<__half>(a, seq, n, past, q, stream);
  else launch_d<__nv_bfloat16>(a, seq, n, past, q, stream);
}

}  // namespace sf::cuda::model
