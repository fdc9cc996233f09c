// Layer norm over rows of the fp32 residual stream, writing fp32 and/or the activation type.
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/model/model_kernels.hpp"

namespace sf::cuda::model {
namespace {

constexpr int kThreads = 256;

// Sum over the block; every thread gets the result. `red` is kThreads / 32 doubles of shared memory.
__device__ double block_sum(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read from a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double s = 0.0;
  for (int w = 0; w < kThreads / 32; ++w) s += red[w];
  return s;
}

// One block per row. Two passes (mean, then the centred variance) in fp64 like the CPU backend, so
// the only rounding that matters is the output's; the row (<= 12288 floats for OPT-175B) is read
// from L1/L2 the second and third time.
__global__ void __launch_bounds__(kThreads) layernorm_kernel(const float* __restrict__ x, int64_t dim,
                                                             const float* __restrict__ w, const float* __restrict__ b,
                                                             float eps, float* out_f32, void* out_act, int act_dt) {
  __shared__ double red[kThreads / 32];
  const float* xr = x + int64_t(blockIdx.x) * dim;
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < dim; j += kThreads) s += xr[j];
  const double mean = block_sum(s, red) / double(dim);
  double v = 0.0;
  for (int64_t j = threadIdx.x; j < dim; j += kThreads) {
    const double d = xr[j] - mean;
    v += d * d;
  }
  const double var = block_sum(v, red) / double(dim);  // biased, like torch
  const float inv = float(1.0 / sqrt(var + double(eps)));
  const float meanf = float(mean);
  for (int64_t j = threadIdx.x; j < dim; j += kThreads) {
    float y = (xr[j] - meanf) * inv;
    if (w) y = y * w[j] + b[j];
    const int64_t i = int64_t(blockIdx.x) * dim + j;
    if (out_act) store_elem(out_act, act_dt, i, y);
    if (out_f32) out_f32[i] = y;  // after every read of xr[j] by this thread (out_f32 may be x)
  }
}

__global__ void cast_kernel(const float* __restrict__ x, int64_t n, void* __restrict__ out, int act_dt) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) store_elem(out, act_dt, i, x[i]);
}

}  // namespace

void launch_cast(const float* x, int64_t n, void* out, int act_dt, cudaStream_t stream) {
  if (n == 0) return;
  cast_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(x, n, out, act_dt);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_layernorm(const float* x, int64_t rows, int64_t dim, const float* w, const float* b, float eps,
                      float* out_f32, void* out_act, int act_dt, cudaStream_t stream) {
  if (rows == 0) return;
  layernorm_kernel<<<unsigned(rows), kThreads, 0, stream>>>(x, dim, w, b, eps, out_f32, out_act, act_dt);
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace sf::cuda::model
