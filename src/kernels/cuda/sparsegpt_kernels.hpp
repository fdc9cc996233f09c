// The kernels of SparseGPT's GPU solver (sparsegpt_cuda.hpp): everything it needs besides the
// Cholesky factorisations (cuSOLVER) and the lazy batch update (cuBLAS). Row-major fp64 matrices,
// device pointers; every launch is enqueued on `stream`.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace sf::cuda::sgpt {

// h[i] = scale * xtx[i] for the n x n entries: the fp32 sums of x^T x as the fp64 Hessian.
void launch_scale_to_f64(const float* xtx, int64_t n, double scale, double* h, cudaStream_t stream);
// *count += entries of a[0, n) that are NaN or infinite.
void launch_count_nonfinite(const double* a, int64_t n, unsigned long long* count,
                            cudaStream_t stream);
// For every column j with dead[j]: H[j, j] = 1 and w[:, j] = 0; then H[j, j] += damp for all j.
void launch_fix_diagonal(double* h, int64_t k, const uint8_t* dead, double damp, double* w,
                         int64_t rows, cudaStream_t stream);
// a[r, c] = a[c, r] for c > r: the lower triangle mirrored into the upper one.
void launch_mirror_lower(double* a, int64_t k, cudaStream_t stream);
// a[r, c] = 0 for c < r.
void launch_zero_lower(double* a, int64_t k, cudaStream_t stream);

// One block of columns [i0, i1) (i1 - i0 <= 128, a multiple of 4) of the OBS sweep over every row
// of w [rows, k], given the upper Cholesky factor u [k, k] of H^-1: chooses each 4-column group's
// 2:4 mask when the sweep reaches it, prunes, updates the block's columns right of each pruned one,
// writes each column's error / U_jj into e [rows, ldE] (columns 0..i1-i0) and the kept flags into
// mask [rows, k], and adds each row's sum of squared errors to loss[row]. The columns right of i1
// are left to the caller's product w[:, i1:] -= e u[i0:i1, i1:].
void launch_obs_block(double* w, const double* u, double* e, int64_t ld_e, double* loss,
                      uint8_t* mask, int64_t rows, int64_t k, int64_t i0, int64_t i1,
                      cudaStream_t stream);

}  // namespace sf::cuda::sgpt
