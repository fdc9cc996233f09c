#include "kernels/cuda/check.hpp"
#include "kernels/cuda/sparsegpt_kernels.hpp"

namespace sf::cuda::sgpt {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarpsPerBlock = 4;

unsigned blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 65535 * 32 ? b : 65535 * 32);
}

__global__ void scale_to_f64(const float* xtx, int64_t n, double scale, double* h) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    h[i] = scale * double(xtx[i]);
}

__global__ void count_nonfinite(const double* a, int64_t n, unsigned long long* count) {
  unsigned long long c = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    if (!isfinite(a[i])) ++c;
  for (int off = 16; off > 0; off >>= 1) c += __shfl_down_sync(kFull, c, off);
  if ((threadIdx.x & 31) == 0 && c) atomicAdd(count, c);
}

// One thread per (row, column) of w for the dead columns, and the diagonal.
__global__ void fix_diagonal(double* h, int64_t k, const uint8_t* dead, double damp, double* w,
                             int64_t rows) {
  const int64_t total = rows * k;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / k, j = i % k;
    if (dead[j]) w[i] = 0.0;
    if (r == 0) h[j * k + j] = (dead[j] ? 1.0 : h[j * k + j]) + damp;
  }
}

__global__ void mirror_lower(double* a, int64_t k) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < k * k;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / k, c = i % k;
    if (c > r) a[i] = a[c * k + r];
  }
}

__global__ void zero_lower(double* a, int64_t k) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < k * k;
       i += int64_t(gridDim.x) * blockDim.x)
    if (i % k < i / k) a[i] = 0.0;
}

// Keep the two largest of 4 scores, ties to the lower index (as the CPU solver and the magnitude
// and Wanda masks): bit c set = column c kept.
__device__ unsigned keep_top2(const double (&s)[4]) {
  unsigned bits = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int above = 0;
#pragma unroll
    for (int c = 0; c < 4; ++c)
      if (c != i && (s[c] > s[i] || (s[c] == s[i] && c < i))) ++above;
    if (above < 2) bits |= 1u << i;
  }
  return bits;
}

// A warp per row; lane g holds the block's columns 4g .. 4g + 3 in registers, so lane g chooses
// group g's mask and the pruned column's weight reaches the other lanes by a shuffle. The row's
// columns are independent of every other row's (the OBS update mixes columns, not rows).
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    obs_block(double* w, const double* u, double* e, int64_t ld_e, double* loss, uint8_t* mask,
              int64_t rows, int64_t k, int64_t i0, int64_t i1) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;  // the whole warp: r is the same for its lanes
  const int b = int(i1 - i0), groups = b / 4;
  double* wr = w + r * k;
  double v[4];
#pragma unroll
  for (int t = 0; t < 4; ++t) v[t] = 4 * lane + t < b ? wr[i0 + 4 * lane + t] : 0.0;
  unsigned mine = 0xfu;  // this lane's group's kept columns
  double sum = 0.0;
  for (int g = 0; g < groups; ++g) {
    const int64_t j0 = i0 + 4 * g;
    unsigned bits = 0;
    if (lane == g) {
      double s[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const double d = u[(j0 + c) * k + j0 + c];
        s[c] = v[c] * v[c] / (d * d);
      }
      bits = keep_top2(s);
      mine = bits;
    }
    bits = __shfl_sync(kFull, bits, g);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t j = j0 + c;
      const double wj = __shfl_sync(kFull, v[c], g);
      const bool kept = (bits >> c) & 1u;
      const double err = kept ? 0.0 : wj / u[j * k + j];
      sum += err * err;
      if (lane == 0) e[r * ld_e + (j - i0)] = err;
      if (err != 0.0) {
        const double* uj = u + j * k + i0;
#pragma unroll
        for (int t = 0; t < 4; ++t) {
          const int col = 4 * lane + t;
          if (col > 4 * g + c && col < b) v[t] -= err * uj[col];
        }
      }
      if (!kept && lane == g) v[c] = 0.0;
    }
  }
#pragma unroll
  for (int t = 0; t < 4; ++t)
    if (4 * lane + t < b) {
      wr[i0 + 4 * lane + t] = v[t];
      mask[r * k + i0 + 4 * lane + t] = (mine >> t) & 1u;
    }
  if (lane == 0) loss[r] += sum;
}

}  // namespace

void launch_scale_to_f64(const float* xtx, int64_t n, double scale, double* h,
                         cudaStream_t stream) {
  scale_to_f64<<<blocks_for(n, 256), 256, 0, stream>>>(xtx, n, scale, h);
  SF_CUDA_CHECK(cudaGetLastError());
}

void launch_count_nonfinite(const double* a, int64_t n, unsigned long long* count,
                            cudaStream_t stream) {
  count_nonfinite<<<blocks_for(n, 256), 256, 0, stream>>>(a, n, count);
  SF_CUDA_CHECK(cudaGetLastError());
}

void launch_fix_diagonal(double* h, int64_t k, const uint8_t* dead, double damp, double* w,
                         int64_t rows, cudaStream_t stream) {
  fix_diagonal<<<blocks_for(rows * k, 256), 256, 0, stream>>>(h, k, dead, damp, w, rows);
  SF_CUDA_CHECK(cudaGetLastError());
}

void launch_mirror_lower(double* a, int64_t k, cudaStream_t stream) {
  mirror_lower<<<blocks_for(k * k, 256), 256, 0, stream>>>(a, k);
  SF_CUDA_CHECK(cudaGetLastError());
}

void launch_zero_lower(double* a, int64_t k, cudaStream_t stream) {
  zero_lower<<<blocks_for(k * k, 256), 256, 0, stream>>>(a, k);
  SF_CUDA_CHECK(cudaGetLastError());
}

void launch_obs_block(double* w, const double* u, double* e, int64_t ld_e, double* loss,
                      uint8_t* mask, int64_t rows, int64_t k, int64_t i0, int64_t i1,
                      cudaStream_t stream) {
  const unsigned blocks = unsigned((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  obs_block<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(w, u, e, ld_e, loss, mask, rows, k, i0, i1);
  SF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace sf::cuda::sgpt
