// Fused causal attention for prefill (fp16 / bf16 activations, head_dim a multiple of 16 up to 128):
// one block per (64 queries, head) of one sequence walks the key tiles in order with an online
// softmax (flash attention), so the [heads, n, len] scores and probabilities never reach global
// memory. The unfused path (cuBLAS scores, causal_softmax, cuBLAS P.V) wrote and re-read ~0.5 GB per
// layer at n = 2046 and spent 66 of the 97 ms of an OPT-6.7B prefill in attention on an H200
// (bench/results/2026-12-03-NVIDIA-H200-opt-6.7b-generate.md).
//
// Layout: 4 warps, warp w owns query rows 16w..16w+15 of the block. Per key tile of 64:
//   S = Q K^T (tensor cores, fp32 accumulate) -> the warp's S rows in shared memory;
//   per row (2 lanes each, 32 keys per lane): causal mask, new running max m, rescale alpha,
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

template <int D, typename T>
struct Smem {
  static constexpr size_t q = size_t(kQTile) * D * sizeof(T);
  static constexpr size_t k = size_t(kKTile) * D * sizeof(T);
  static constexpr size_t s = size_t(kQTile) * kKTile * sizeof(float);
  static constexpr size_t p = size_t(kQTile) * kKTile * sizeof(T);
  static constexpr size_t o = size_t(kQTile) * D * sizeof(float);
  static constexpr size_t stats = size_t(kQTile) * 2 * sizeof(float);
  static constexpr size_t total = q + 2 * k + s + p + o + stats;
};

__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Rows [row0, row0 + 64) of a [*, hidden] matrix (head slice at column col0, D wide) into smem
// [64][D]; rows at or past `rows` are zero.
template <int D, typename T>
__device__ void load_tile(T* dst, const T* src, int64_t hidden, int64_t col0, int64_t row0, int64_t rows) {
  constexpr int kVecPerRow = D * int(sizeof(T)) / 16;
  for (int i = threadIdx.x; i < kKTile * kVecPerRow; i += kWarps * 32) {
    const int r = i / kVecPerRow, c = i % kVecPerRow;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row0 + r < rows) v = *reinterpret_cast<const uint4*>(src + (row0 + r) * hidden + col0 + c * (16 / sizeof(T)));
    reinterpret_cast<uint4*>(dst + r * D)[c] = v;
  }
}

template <int D, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_attention_kernel(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                             T* __restrict__ out, int64_t hidden, int64_t n, int64_t past) {
  using L = Smem<D, T>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = reinterpret_cast<T*>(smem + L::q);
  T* Vs = reinterpret_cast<T*>(smem + L::q + L::k);
  float* S = reinterpret_cast<float*>(smem + L::q + 2 * L::k);
  T* P = reinterpret_cast<T*>(smem + L::q + 2 * L::k + L::s);
  float* O = reinterpret_cast<float*>(smem + L::q + 2 * L::k + L::s + L::p);
  float* row_m = reinterpret_cast<float*>(smem + L::q + 2 * L::k + L::s + L::p + L::o);
  float* row_l = row_m + kQTile;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = int64_t(blockIdx.x) * kQTile;
  const int64_t col0 = int64_t(blockIdx.y) * D;
  const int64_t len = past + n;

  load_tile<D>(Qs, q, hidden, col0, q0, n);
  for (int i = threadIdx.x; i < kQTile * D; i += kWarps * 32) O[i] = 0.0f;
  if (threadIdx.x < kQTile) {
    row_m[threadIdx.x] = -INFINITY;
    row_l[threadIdx.x] = 0.0f;
  }

  // Row r of this warp's 16 is handled by lanes 2r and 2r+1, 32 keys each.
  const int my_row = warp * kRowsPerWarp + lane / 2;
  const int half = lane % 2;
  // Query q0 + my_row sees keys 0..past + q0 + my_row; a padding row (past n) is treated as the last
  // real query, computed and never stored.
  const int64_t last_key = past + (q0 + my_row < n ? q0 + my_row : n - 1);
  const int64_t block_last_key = past + (q0 + kQTile - 1 < n ? q0 + kQTile - 1 : n - 1);
  T* Pw = P + warp * kRowsPerWarp * kKTile;
  float* Sw = S + warp * kRowsPerWarp * kKTile;
  float* Ow = O + warp * kRowsPerWarp * D;

  for (int64_t k0 = 0; k0 <= block_last_key; k0 += kKTile) {
    __syncthreads();  // every warp is done with the previous K/V tile
    load_tile<D>(Ks, k_cache, hidden, col0, k0, len);
    load_tile<D>(Vs, v_cache, hidden, col0, k0, len);
    __syncthreads();

    // S rows of this warp = Q[16 rows] K^T: K row-major [key][d] is K^T column-major with ld D.
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kKTile / 16];
#pragma unroll
      for (int j = 0; j < kKTile / 16; ++j) wmma::fill_fragment(acc[j], 0.0f);
#pragma unroll
      for (int d = 0; d < D; d += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, Qs + warp * kRowsPerWarp * D + d, D);
#pragma unroll
        for (int j = 0; j < kKTile / 16; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
          wmma::load_matrix_sync(b, Ks + j * 16 * D + d, D);
          wmma::mma_sync(acc[j], a, b, acc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < kKTile / 16; ++j)
        wmma::store_matrix_sync(Sw + j * 16, acc[j], kKTile, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax for my row's 32 keys of this tile; the pair of lanes combines by shuffle.
    const int r = lane / 2;
    const float* srow = Sw + r * kKTile + half * 32;
    float tmax = -INFINITY;
#pragma unroll 8
    for (int j = 0; j < 32; ++j)
      if (k0 + half * 32 + j <= last_key) tmax = fmaxf(tmax, srow[j]);
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float m_old = row_m[my_row];
    const float m_new = fmaxf(m_old, tmax);  // finite: key 0 is in the first tile for every row
    const float alpha = __expf(m_old - m_new);  // 0 on the first tile (m_old = -inf)
    float sum = 0.0f;
    T* prow = Pw + r * kKTile + half * 32;
#pragma unroll 8
    for (int j = 0; j < 32; ++j) {
      const bool vis = k0 + half * 32 + j <= last_key;
      const T pv = from_f<T>(vis ? __expf(srow[j] - m_new) : 0.0f);
      prow[j] = pv;
      sum += to_f(pv);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    // Rescale my row's O (each lane half of the D columns), then publish m and l.
    float* orow = Ow + r * D + half * (D / 2);
#pragma unroll 8
    for (int c = 0; c < D / 2; ++c) orow[c] *= alpha;
    __syncwarp();
    if (half == 0) {
      row_m[my_row] = m_new;
      row_l[my_row] = row_l[my_row] * alpha + sum;
    }

    // O rows of this warp += P[16 x 64] V[64 x D].
#pragma unroll
    for (int c = 0; c < D; c += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::load_matrix_sync(o, Ow + c, D, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kKTile; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(a, Pw + kk, kKTile);
        wmma::load_matrix_sync(b, Vs + kk * D + c, D);
        wmma::mma_sync(o, a, b, o);
      }
      wmma::store_matrix_sync(Ow + c, o, D, wmma::mem_row_major);
    }
    __syncwarp();
  }

  // out[q0 + row, col0 + c] = O / l, the warp's own rows.
  for (int i = lane; i < kRowsPerWarp * D; i += 32) {
    const int r = warp * kRowsPerWarp + i / D, c = i % D;
    if (q0 + r < n) out[(q0 + r) * hidden + col0 + c] = from_f<T>(O[r * D + c] / row_l[r]);
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
