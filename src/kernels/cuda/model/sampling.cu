// Choosing the next token on the GPU (greedy argmax, or temperature + top-k + top-p with a seeded
// Philox generator) and the per-row negative log-likelihood for perplexity. One block per row:
// a 50k-entry row is 200 KB, read a few dozen times from L2 at most; sampling is never the
// bottleneck next to the weight traffic of the step that produced the logits.
// sample_kernel and advance_kernel end the decode step and are launched with PDL (pdl.cuh): they
// read the logits and *pos, and advance_kernel writes *pos, so both wait before anything else.
#include <cub/block/block_scan.cuh>
#include <curand_kernel.h>

#include <cfloat>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/model/model_kernels.hpp"
#include "kernels/cuda/pdl.cuh"

namespace sf::cuda::model {
namespace {

constexpr int kThreads = 1024;

// A float's order as an unsigned key (larger float, larger key); NaN maps below -inf so it is
// never kept.
__device__ __forceinline__ uint32_t order_key(float f) {
  if (isnan(f)) return 0u;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct ArgMax {
  uint32_t key;
  int32_t idx;
};
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  return (b.key > a.key || (b.key == a.key && b.idx < a.idx)) ? b : a;
}

template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* red) {
  for (int o = 16; o > 0; o >>= 1) {
    T other;
    if constexpr (sizeof(T) == 8 && !std::is_same_v<T, double>) {
      const unsigned long long bits = __shfl_xor_sync(0xffffffffu, *reinterpret_cast<unsigned long long*>(&v), o);
      other = *reinterpret_cast<const T*>(&bits);
    } else {
      other = __shfl_xor_sync(0xffffffffu, v, o);
    }
    v = op(v, other);
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  T r = red[0];
  for (int w = 1; w < kThreads / 32; ++w) r = op(r, red[w]);
  return r;
}

// count (or mass, weight(l) = exp((l - mx) / T)) of entries with key >= t (and key >= floor_key).
__device__ double mass_at_least(const float* l, int64_t v, uint32_t t, bool count, float mx, float inv_t,
                                double* red) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < v; i += kThreads) {
    const uint32_t k = order_key(l[i]);
    if (k >= t && k != 0u) s += count ? 1.0 : double(__expf((l[i] - mx) * inv_t));
  }
  return block_reduce(s, [](double a, double b) { return a + b; }, red);
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleArgs a) {
  __shared__ ArgMax red_am[kThreads / 32];
  __shared__ double red_d[kThreads / 32];
  pdl_launch_dependents();
  pdl_wait();
  const int64_t r = blockIdx.x;
  const float* l = a.logits + r * a.vocab;
  const int64_t V = a.vocab;
  ArgMax best{0u, 0};
  for (int64_t i = threadIdx.x; i < V; i += kThreads) best = better(best, ArgMax{order_key(l[i]), int32_t(i)});
  best = block_reduce(best, [](ArgMax x, ArgMax y) { return better(x, y); }, red_am);
  int32_t chosen = best.idx;

  if (!a.greedy && best.key != 0u) {
    const float mx = l[best.idx];
    const float inv_t = 1.0f / a.temperature;
    // Largest key threshold t with at least top_k entries >= t: bisection over the 32-bit keys.
    uint32_t floor_key = 1u;
    if (a.top_k > 0 && a.top_k < V) {
      uint32_t lo = 1u, hi = best.key;  // count(>= lo) >= k holds, count(>= hi) >= 1
      while (lo < hi) {
        const uint32_t mid = lo + (hi - lo + 1) / 2;
        if (mass_at_least(l, V, mid, true, mx, inv_t, red_d) >= double(a.top_k)) lo = mid;
        else hi = mid - 1;
      }
      floor_key = lo;
    }
    // Top-p: the largest threshold whose kept mass reaches top_p of the top-k mass.
    if (a.top_p < 1.0f) {
      const double total = mass_at_least(l, V, floor_key, false, mx, inv_t, red_d);
      uint32_t lo = floor_key, hi = best.key;
      while (lo < hi) {
        const uint32_t mid = lo + (hi - lo + 1) / 2;
        if (mass_at_least(l, V, mid, false, mx, inv_t, red_d) >= double(a.top_p) * total) lo = mid;
        else hi = mid - 1;
      }
      floor_key = lo;
    }
    // Inverse CDF over the kept tokens in id order: thread t owns the contiguous ids
    // [t * per, (t + 1) * per), its mass goes through a block-wide exclusive scan.
    const int64_t per = (V + kThreads - 1) / kThreads;
    const int64_t i0 = int64_t(threadIdx.x) * per, i1 = min(V, i0 + per);
    float mine = 0.0f;
    for (int64_t i = i0; i < i1; ++i)
      if (order_key(l[i]) >= floor_key) mine += __expf((l[i] - mx) * inv_t);
    using Scan = cub::BlockScan<float, kThreads>;
    __shared__ typename Scan::TempStorage scan_tmp;
    __shared__ float u_sh;
    __shared__ int32_t pick;
    float before = 0.0f, total = 0.0f;
    Scan(scan_tmp).ExclusiveSum(mine, before, total);
    if (threadIdx.x == 0) {
      curandStatePhilox4_32_10_t st;
      curand_init(a.seed, uint64_t(r), uint64_t(*a.pos), &st);
      const double u01 = double(curand(&st) >> 5) * 0x1.0p-27 + double(curand(&st) >> 6) * 0x1.0p-53;  // [0, 1)
      u_sh = float(u01 * double(total));
      pick = best.idx;  // rounding fallback: the most likely token
    }
    __syncthreads();
    const float u = u_sh;
    if (mine > 0.0f && u >= before && u < before + mine) {
      float c = before;
      int32_t last = -1;
      for (int64_t i = i0; i < i1; ++i) {
        if (order_key(l[i]) < floor_key) continue;
        last = int32_t(i);
        c += __expf((l[i] - mx) * inv_t);
        if (u < c) break;
      }
      if (last >= 0) pick = last;  // exactly one thread's range holds u
    }
    __syncthreads();
    chosen = pick;
  }
  if (threadIdx.x == 0) {
    a.tokens[r] = chosen;
    if (a.history) a.history[(int64_t(*a.pos) + a.advance) * a.rows + r] = chosen;
  }
}

// Runs after every row has been sampled (same stream): advance the position.
__global__ void advance_kernel(int* pos, int by) {
  pdl_launch_dependents();
  pdl_wait();  // every sample_kernel block has read *pos
  *pos += by;
}

__global__ void __launch_bounds__(kThreads) nll_kernel(const float* __restrict__ logits, int64_t vocab,
                                                        const int32_t* __restrict__ targets, double* nll) {
  __shared__ double red[kThreads / 32];
  const float* l = logits + int64_t(blockIdx.x) * vocab;
  double mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) mx = fmax(mx, double(l[i]));
  mx = block_reduce(mx, [](double a, double b) { return fmax(a, b); }, red);
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) s += exp(double(l[i]) - mx);
  s = block_reduce(s, [](double a, double b) { return a + b; }, red);
  if (threadIdx.x == 0) nll[blockIdx.x] = mx + log(s) - double(l[targets[blockIdx.x]]);
}

}  // namespace

void launch_sample(const SampleArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return;
  launch_pdl(sample_kernel, unsigned(a.rows), kThreads, 0, stream, a);
  SF_CUDA_CHECK_LAUNCH();
  if (a.advance) {
    launch_pdl(advance_kernel, 1, 1, 0, stream, a.pos, a.advance);
    SF_CUDA_CHECK_LAUNCH();
  }
}

void launch_row_nll(const float* logits, int64_t rows, int64_t vocab, const int32_t* targets, double* nll,
                    cudaStream_t stream) {
  if (rows == 0) return;
  nll_kernel<<<unsigned(rows), kThreads, 0, stream>>>(logits, vocab, targets, nll);
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace sf::cuda::model
