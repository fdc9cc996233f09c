// Fused causal attention for prefill (fp16 / bf16 activations, head_dim a multiple of 16 up to 128):
// one block per (64 queries, head) of one sequence walks the key tiles in order with an online
// softmax (flash attention), so the [heads, n, len] scores and probabilities never reach global
// memory. The unfused path (cuBLAS scores, causal_softmax, cuBLAS P.V) wrote and re-read ~0.5 GB per
// layer at n = 2046 and spent 66 of the 97 ms of an OPT-6.7B prefill in attention on an H200
// (bench/results/2026-12-03-NVIDIA-H200-opt-6.7b-generate.md).
//
// Layout: 4 warps, warp w owns query rows 16w..16w+15 of the block. Per key tile of 64:
//   S = Q K^T (tensor cores, fp32 accumulate) -> the warp's S rows in shared memory (padded rows);
//   per row (all 32 lanes across its 64 keys; m and l in registers): causal mask, new running max m,
//   rescale alpha,
//   P = exp(S - m) rounded to the activation type (as the unfused path rounds its probabilities),
//   l = l * alpha + sum(P);  O = O * alpha + P V (tensor cores, fp32 accumulate, O in shared memory).
// Only the K/V tile loads are shared between warps, so only they need block barriers. The output is
// O / l in the activation type. Keys past the sequence's length are zero-filled (the cache beyond it
// holds stale data, possibly NaN, and 0 * NaN would leak).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/model/model_kernels.hpp"

namespace sf::cuda::model {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kQTile = 64;  // queries per block
constexpr int kKTile = 64;  // keys per tile
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = kQTile / kWarps;  // 16

// Leading dimensions of the shared tiles, padded so that WMMA's row accesses and the softmax's
// row walks do not land on one bank (an unpadded row of 128 halves or 64 floats is a multiple of
// the 128-byte bank period). Each stays a multiple of 8 halves / 4 floats, and 16 rows of each stay
// a multiple of 32 bytes, as WMMA requires.
template <int D>
struct Ld {
  static constexpr int qkv = D + 8;       // halves
  static constexpr int s = kKTile + 4;    // floats
  static constexpr int p = kKTile + 8;    // halves
  static constexpr int o = D + 4;         // floats
};

template <int D, typename T>
struct Smem {
  static constexpr size_t q = size_t(kQTile) * Ld<D>::qkv * sizeof(T);
  static constexpr size_t k = size_t(kKTile) * Ld<D>::qkv * sizeof(T);
  static constexpr size_t s = size_t(kQTile) * Ld<D>::s * sizeof(float);
  static constexpr size_t p = size_t(kQTile) * Ld<D>::p * sizeof(T);
  static constexpr size_t o = size_t(kQTile) * Ld<D>::o * sizeof(float);
  static constexpr size_t total = q + 2 * k + s + p + o;
};

__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Rows [row0, row0 + 64) of a [*, hidden] matrix (head slice at column col0, D wide) into smem
// [64][ld]; rows at or past `rows` are zero.
template <int D, typename T>
__device__ void load_tile(T* dst, const T* src, int64_t hidden, int64_t col0, int64_t row0, int64_t rows) {
  constexpr int kVecPerRow = D * int(sizeof(T)) / 16;
  for (int i = threadIdx.x; i < kKTile * kVecPerRow; i += kWarps * 32) {
    const int r = i / kVecPerRow, c = i % kVecPerRow;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row0 + r < rows) v = *reinterpret_cast<const uint4*>(src + (row0 + r) * hidden + col0 + c * (16 / sizeof(T)));
    *reinterpret_cast<uint4*>(dst + r * Ld<D>::qkv + c * (16 / sizeof(T))) = v;
  }
}

template <int D, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_attention_kernel(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                             T* __restrict__ out, int64_t hidden, int64_t n, int64_t past) {
  using L = Smem<D, T>;
  constexpr int LQ = Ld<D>::qkv, LS = Ld<D>::s, LP = Ld<D>::p, LO = Ld<D>::o;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = reinterpret_cast<T*>(smem + L::q);
  T* Vs = reinterpret_cast<T*>(smem + L::q + L::k);
  float* S = reinterpret_cast<float*>(smem + L::q + 2 * L::k);
  T* P = reinterpret_cast<T*>(smem + L::q + 2 * L::k + L::s);
  float* O = reinterpret_cast<float*>(smem + L::q + 2 * L::k + L::s + L::p);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = int64_t(blockIdx.x) * kQTile;
  const int64_t col0 = int64_t(blockIdx.y) * D;
  const int64_t len = past + n;

  load_tile<D>(Qs, q, hidden, col0, q0, n);
  for (int i = threadIdx.x; i < kQTile * LO; i += kWarps * 32) O[i] = 0.0f;

  // Running max and sum of this warp's 16 rows, the same in every lane (warp-wide reductions).
  float row_m[kRowsPerWarp], row_l[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    row_m[r] = -INFINITY;
    row_l[r] = 0.0f;
  }
  const int64_t warp_q0 = q0 + warp * kRowsPerWarp;
  const int64_t block_last_key = past + (q0 + kQTile - 1 < n ? q0 + kQTile - 1 : n - 1);
  T* Pw = P + warp * kRowsPerWarp * LP;
  float* Sw = S + warp * kRowsPerWarp * LS;
  float* Ow = O + warp * kRowsPerWarp * LO;
  const T* Qw = Qs + warp * kRowsPerWarp * LQ;

  for (int64_t k0 = 0; k0 <= block_last_key; k0 += kKTile) {
    __syncthreads();  // every warp is done with the previous K/V tile
    load_tile<D>(Ks, k_cache, hidden, col0, k0, len);
    load_tile<D>(Vs, v_cache, hidden, col0, k0, len);
    __syncthreads();

    // S rows of this warp = Q[16 rows] K^T: K row-major [key][d] is K^T column-major with ld LQ.
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kKTile / 16];
#pragma unroll
      for (int j = 0; j < kKTile / 16; ++j) wmma::fill_fragment(acc[j], 0.0f);
#pragma unroll
      for (int d = 0; d < D; d += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, Qw + d, LQ);
#pragma unroll
        for (int j = 0; j < kKTile / 16; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
          wmma::load_matrix_sync(b, Ks + j * 16 * LQ + d, LQ);
          wmma::mma_sync(acc[j], a, b, acc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < kKTile / 16; ++j) wmma::store_matrix_sync(Sw + j * 16, acc[j], LS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax, one row at a time with the lanes across its 64 keys (consecutive words), then
    // the row's O rescaled the same way. A padding row (past n) acts as the last real query.
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t qi = warp_q0 + r < n ? warp_q0 + r : n - 1;
      const int64_t last_key = past + qi;
      const float* srow = Sw + r * LS;
      const bool v0 = k0 + lane <= last_key, v1 = k0 + lane + 32 <= last_key;
      const float s0 = srow[lane], s1 = srow[lane + 32];
      const float tmax = warp_max(fmaxf(v0 ? s0 : -INFINITY, v1 ? s1 : -INFINITY));
      const float m_new = fmaxf(row_m[r], tmax);  // finite: key 0 is in the first tile for every row
      const float alpha = __expf(row_m[r] - m_new);  // 0 on the first tile (m = -inf)
      const T p0 = from_f<T>(v0 ? __expf(s0 - m_new) : 0.0f), p1 = from_f<T>(v1 ? __expf(s1 - m_new) : 0.0f);
      Pw[r * LP + lane] = p0;
      Pw[r * LP + lane + 32] = p1;
      row_l[r] = row_l[r] * alpha + warp_sum(to_f(p0) + to_f(p1));
      row_m[r] = m_new;
      float* orow = Ow + r * LO;
      for (int c = lane; c < D; c += 32) orow[c] *= alpha;
    }
    __syncwarp();

    // O rows of this warp += P[16 x 64] V[64 x D].
#pragma unroll
    for (int c = 0; c < D; c += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::load_matrix_sync(o, Ow + c, LO, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kKTile; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(a, Pw + kk, LP);
        wmma::load_matrix_sync(b, Vs + kk * LQ + c, LQ);
        wmma::mma_sync(o, a, b, o);
      }
      wmma::store_matrix_sync(Ow + c, o, LO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  // out[q0 + row, col0 + c] = O / l, the warp's own rows, lanes across the columns.
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    if (warp_q0 + r >= n) break;
    const float inv = 1.0f / row_l[r];
    for (int c = lane; c < D; c += 32) out[(warp_q0 + r) * hidden + col0 + c] = from_f<T>(Ow[r * LO + c] * inv);
  }
}

template <int D, typename T>
void launch_t(const AttentionArgs& a, int64_t seq, int64_t n, int64_t past, const void* q, cudaStream_t stream) {
  constexpr size_t smem = Smem<D, T>::total;
  // Above the 48 KB default: set on every launch (the attribute belongs to the current device, and a
  // prefill makes one launch per layer, so the call costs nothing that matters).
  SF_CUDA_CHECK(cudaFuncSetAttribute(prefill_attention_kernel<D, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(smem)));
  const size_t seq_off = size_t(seq) * size_t(a.capacity) * size_t(a.hidden);
  const dim3 grid(unsigned((n + kQTile - 1) / kQTile), unsigned(a.heads));
  prefill_attention_kernel<D, T><<<grid, kWarps * 32, smem, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(a.k_cache) + seq_off, static_cast<const T*>(a.v_cache) + seq_off,
      static_cast<T*>(a.out), a.hidden, n, past);
  SF_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_d(const AttentionArgs& a, int64_t seq, int64_t n, int64_t past, const void* q, cudaStream_t stream) {
  switch (a.head_dim) {
    case 64: return launch_t<64, T>(a, seq, n, past, q, stream);
    case 80: return launch_t<80, T>(a, seq, n, past, q, stream);
    case 128: return launch_t<128, T>(a, seq, n, past, q, stream);
    default: break;
  }
}

}  // namespace

bool fused_prefill_attention_supported(int act_dt, int64_t head_dim, int64_t hidden) {
  return (act_dt == 1 || act_dt == 2) && (head_dim == 64 || head_dim == 80 || head_dim == 128) && hidden % 8 == 0;
}

void launch_prefill_attention(const AttentionArgs& a, int64_t seq, int64_t n, int64_t past, const void* q,
                              cudaStream_t stream) {
  if (n == 0) return;
  if (!fused_prefill_attention_supported(a.act_dt, a.head_dim, a.hidden) || !a.out)
    detail::throw_status(2 /*UnsupportedShape*/, "fused prefill attention needs fp16/bf16 activations and head_dim "
                                                 "64, 80 or 128, got head_dim " + std::to_string(a.head_dim));
  if (a.act_dt == 1) launch_d<__half>(a, seq, n, past, q, stream);
  else launch_d<__nv_bfloat16>(a, seq, n, past, q, stream);
}

}  // namespace sf::cuda::model
