#include "kernels/cuda/sparsegpt_cuda.hpp"

#include <cusolverDn.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/sparsegpt_kernels.hpp"
#include "sparse24/internal.hpp"

#define SF_CUSOLVER_CHECK(stmt)                                                                 \
  do {                                                                                          \
    cusolverStatus_t sf_st_ = (stmt);                                                           \
    if (sf_st_ != CUSOLVER_STATUS_SUCCESS)                                                      \
      ::sf::cuda::detail::throw_cuda("cuSOLVER", fmt::format("status {}", int(sf_st_)).c_str(), \
                                     #stmt, __FILE__, __LINE__);                                \
  } while (0)

namespace sf::cuda {

namespace {

// A device allocation freed when it goes out of scope, so that every error path cleans up.
template <class T>
struct DeviceArray {
  T* p = nullptr;
  explicit DeviceArray(size_t n) {
    if (n) SF_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  }
  ~DeviceArray() {
    if (p) cudaFree(p);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
};

}  // namespace

struct SparseGptSolver::Impl {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;

  // Runs a cuSOLVER routine on a (row-major, symmetric; cuSOLVER is column-major, so its "upper"
  // triangle is the row-major lower one) with the workspace it asks for. Returns cuSOLVER's info:
  // 0, or the failing minor.
  template <class BufferSize, class Routine>
  int solve(double* a, int n, cublasFillMode_t uplo, BufferSize buffer_size, Routine routine) {
    int lwork = 0;
    SF_CUSOLVER_CHECK(buffer_size(solver, uplo, n, a, n, &lwork));
    DeviceArray<double> work(size_t(std::max(lwork, 1)));
    DeviceArray<int> info(1);
    SF_CUSOLVER_CHECK(routine(solver, uplo, n, a, n, work.p, lwork, info.p));
    int h = 0;
    SF_CUDA_CHECK(cudaMemcpyAsync(&h, info.p, sizeof(int), cudaMemcpyDeviceToHost, stream));
    SF_CUDA_CHECK(cudaStreamSynchronize(stream));
    return h;
  }
  int potrf(double* a, int n, cublasFillMode_t uplo) {
    return solve(a, n, uplo, cusolverDnDpotrf_bufferSize, cusolverDnDpotrf);
  }
  int potri(double* a, int n, cublasFillMode_t uplo) {
    return solve(a, n, uplo, cusolverDnDpotri_bufferSize, cusolverDnDpotri);
  }
};

SparseGptSolver::SparseGptSolver(cudaStream_t stream) : impl_(new Impl) {
  impl_->stream = stream;
  try {
    SF_CUBLAS_CHECK(cublasCreate(&impl_->blas));
    SF_CUBLAS_CHECK(cublasSetStream(impl_->blas, stream));
    SF_CUSOLVER_CHECK(cusolverDnCreate(&impl_->solver));
    SF_CUSOLVER_CHECK(cusolverDnSetStream(impl_->solver, stream));
  } catch (...) {
    if (impl_->blas) cublasDestroy(impl_->blas);
    delete impl_;
    throw;
  }
}

SparseGptSolver::~SparseGptSolver() {
  if (impl_->solver) cusolverDnDestroy(impl_->solver);
  if (impl_->blas) cublasDestroy(impl_->blas);
  delete impl_;
}

s24::SparseGptResult SparseGptSolver::prune(const s24::MatrixView& w, std::span<const double> h,
                                            const s24::SparseGptOptions& opt) {
  const int64_t K = w.cols;
  if (h.size() != size_t(K * K))
    fail(Status::InvalidArgument,
         "sparsegpt_prune: expected a [{}, {}] input Hessian for a [{}, {}] weight, found {} "
         "elements; the Hessian is over the layer's input features",
         K, K, w.rows, K, h.size());
  DeviceArray<double> d(h.size());
  SF_CUDA_CHECK(cudaMemcpyAsync(d.p, h.data(), h.size() * sizeof(double), cudaMemcpyHostToDevice,
                                impl_->stream));
  return prune(w, d.p, opt);
}

s24::SparseGptResult SparseGptSolver::prune(const s24::MatrixView& w, double* H,
                                            const s24::SparseGptOptions& opt) {
  s24::check_shape(w, "sparsegpt_prune");
  cudaStream_t st = impl_->stream;
  const int64_t R = w.rows, K = w.cols;
  const size_t n = size_t(R * K), KK = size_t(K * K);
  if (!(opt.dampening >= 0.0) || !std::isfinite(opt.dampening))
    fail(Status::InvalidArgument,
         "sparsegpt_prune: dampening must be a finite fraction >= 0 (0.01 is usual), got {}",
         opt.dampening);
  if (opt.block <= 0 || opt.block % 4 != 0 || opt.block > 128)
    fail(Status::InvalidArgument,
         "sparsegpt_prune on the GPU: block must be a multiple of 4 up to 128 (a warp holds 4 "
         "columns per lane), got {}",
         opt.block);
  if (!opt.mask.empty())
    fail(Status::InvalidArgument,
         "sparsegpt_prune on the GPU chooses its own 2:4 masks; a fixed mask runs on the CPU "
         "solver (s24::sparsegpt_prune)");
  if (K > int64_t(1) << 30)
    fail(Status::UnsupportedShape,
         "sparsegpt_prune: {} input features are more than cuSOLVER takes", K);

  s24::SparseGptResult res;
  std::vector<double> W0(n);
  for (size_t i = 0; i < n; ++i) {
    W0[i] = double(load_as_float(w.data, w.dtype, i));
    if (!std::isfinite(W0[i]))
      fail(Status::InvalidArgument,
           "sparsegpt_prune: weight ({}, {}) is {}; SparseGPT needs finite weights", i / size_t(K),
           i % size_t(K), W0[i]);
  }
  DeviceArray<unsigned long long> bad(1);
  SF_CUDA_CHECK(cudaMemsetAsync(bad.p, 0, sizeof(unsigned long long), st));
  sgpt::launch_count_nonfinite(H, int64_t(KK), bad.p, st);
  unsigned long long nonfinite = 0;
  SF_CUDA_CHECK(cudaMemcpyAsync(&nonfinite, bad.p, sizeof(nonfinite), cudaMemcpyDeviceToHost, st));
  SF_CUDA_CHECK(cudaStreamSynchronize(st));
  if (nonfinite)
    fail(Status::InvalidArgument,
         "sparsegpt_prune: the input Hessian has {} non-finite entries: the calibration "
         "activations overflowed or hold NaN",
         nonfinite);

  DeviceArray<double> dW(n);
  SF_CUDA_CHECK(cudaMemcpyAsync(dW.p, W0.data(), n * sizeof(double), cudaMemcpyHostToDevice, st));
  // The reference, sum over rows of w H w^T with the undamped H, before H is changed: T = W0 H
  // (column-major: T^T = H W0^T, H symmetric), then the dot product of W0 and T.
  {
    DeviceArray<double> T(n);
    const double one = 1.0, zero = 0.0;
    SF_CUBLAS_CHECK(cublasDgemm(impl_->blas, CUBLAS_OP_N, CUBLAS_OP_N, int(K), int(R), int(K), &one,
                                H, int(K), dW.p, int(K), &zero, T.p, int(K)));
    // cublasDdot takes an int count: rows at a time.
    double total = 0.0;
    for (int64_t r0 = 0; r0 < R;) {
      const int64_t rows = std::min<int64_t>(R - r0, std::max<int64_t>(1, (int64_t(1) << 30) / K));
      double part = 0.0;
      SF_CUBLAS_CHECK(
          cublasDdot(impl_->blas, int(rows * K), dW.p + r0 * K, 1, T.p + r0 * K, 1, &part));
      total += part;
      r0 += rows;
    }
    res.reference = total;
  }

  // Dead inputs (H_jj == 0) carry no information: their weights go and H_jj = 1 keeps the
  // factorisation defined. Dampening: a fraction of the mean diagonal, after that.
  std::vector<double> diag(static_cast<size_t>(K));
  SF_CUDA_CHECK(cudaMemcpy2DAsync(diag.data(), sizeof(double), H, size_t(K + 1) * sizeof(double),
                                  sizeof(double), size_t(K), cudaMemcpyDeviceToHost, st));
  SF_CUDA_CHECK(cudaStreamSynchronize(st));
  std::vector<uint8_t> dead(static_cast<size_t>(K));
  double mean_diag = 0.0;
  for (int64_t j = 0; j < K; ++j) {
    dead[size_t(j)] = diag[size_t(j)] == 0.0;
    mean_diag += dead[size_t(j)] ? 1.0 : diag[size_t(j)];
  }
  mean_diag /= double(K);
  const double damp = opt.dampening * mean_diag;
  DeviceArray<uint8_t> dDead(static_cast<size_t>(K));
  SF_CUDA_CHECK(cudaMemcpyAsync(dDead.p, dead.data(), size_t(K), cudaMemcpyHostToDevice, st));
  sgpt::launch_fix_diagonal(H, K, dDead.p, damp, dW.p, R, st);

  // U, upper with H^-1 = U^T U, as the CPU solver computes it: cuSOLVER's "upper" (row-major
  // lower) factor of H, the inverse from it in the same triangle, mirrored to a full matrix, then
  // its "lower" factor, which reads row-major as U.
  const int k = int(K);
  if (const int minor = impl_->potrf(H, k, CUBLAS_FILL_MODE_UPPER); minor != 0)
    fail(Status::InvalidArgument,
         "SparseGPT: the layer's input Hessian plus dampening {} is not positive definite (leading "
         "minor {} of {}): its calibration inputs are nearly linearly dependent. Raise the "
         "dampening (e.g. --dampening 0.1) or calibrate on more text",
         opt.dampening, minor, K);
  if (const int info = impl_->potri(H, k, CUBLAS_FILL_MODE_UPPER); info != 0)
    fail(Status::InvalidArgument,
         "SparseGPT: the layer's input Hessian plus dampening {} is singular (potri: {}); raise "
         "the dampening (e.g. --dampening 0.1) or calibrate on more text",
         opt.dampening, info);
  sgpt::launch_mirror_lower(H, K, st);
  if (const int minor = impl_->potrf(H, k, CUBLAS_FILL_MODE_LOWER); minor != 0)
    fail(Status::InvalidArgument,
         "SparseGPT: the inverse of the layer's input Hessian lost positive definiteness to "
         "rounding (minor {} of {}); raise the dampening (e.g. --dampening 0.1)",
         minor, K);
  sgpt::launch_zero_lower(H, K, st);
  const double* U = H;

  const int64_t B = std::min(opt.block, K);
  DeviceArray<double> E(static_cast<size_t>(R * B)), loss(static_cast<size_t>(R));
  DeviceArray<uint8_t> mask(n);
  SF_CUDA_CHECK(cudaMemsetAsync(loss.p, 0, size_t(R) * sizeof(double), st));
  for (int64_t i0 = 0; i0 < K; i0 += B) {
    const int64_t i1 = std::min(i0 + B, K), b = i1 - i0;
    sgpt::launch_obs_block(dW.p, U, E.p, B, loss.p, mask.p, R, K, i0, i1, st);
    // The lazy batch update, row-major W[:, i1:] -= E[:, :b] U[i0:i1, i1:]; column-major that is
    // W^T[i1:, :] -= U[i0:i1, i1:]^T E^T.
    if (i1 < K) {
      const double minus = -1.0, one = 1.0;
      SF_CUBLAS_CHECK(cublasDgemm(impl_->blas, CUBLAS_OP_N, CUBLAS_OP_N, int(K - i1), int(R),
                                  int(b), &minus, U + i0 * K + i1, int(K), E.p, int(B), &one,
                                  dW.p + i1, int(K)));
    }
  }

  res.weight.resize(n);
  res.mask.resize(n);
  std::vector<double> row_loss(static_cast<size_t>(R));
  SF_CUDA_CHECK(
      cudaMemcpyAsync(res.weight.data(), dW.p, n * sizeof(double), cudaMemcpyDeviceToHost, st));
  SF_CUDA_CHECK(cudaMemcpyAsync(res.mask.data(), mask.p, n, cudaMemcpyDeviceToHost, st));
  SF_CUDA_CHECK(cudaMemcpyAsync(row_loss.data(), loss.p, size_t(R) * sizeof(double),
                                cudaMemcpyDeviceToHost, st));
  SF_CUDA_CHECK(cudaStreamSynchronize(st));

  // As in the CPU solver: sum err^2 = D (H + damp I) D^T for D = W0 - W, so the undamped error is
  // that less damp |D|^2, the dead columns left out of both.
  double err2 = 0, d2 = 0;
  for (double e : row_loss) err2 += e;
  for (size_t i = 0; i < n; ++i)
    if (!dead[i % size_t(K)]) d2 += (W0[i] - res.weight[i]) * (W0[i] - res.weight[i]);
  res.error = std::max(0.0, err2 - damp * d2);
  return res;
}

}  // namespace sf::cuda
