// The GPU half of `calibrate`'s reduced-rank fit (offload/predictor_fit.hpp): the products that
// cost O(d^2 ffn) in fp64 (Ac' Zc, the triangular solve with L, C C', Q' C), which took most of the
// ~4 s per OPT-6.7B layer on 16 CPU cores; the Cholesky factor and the top eigenvectors stay on the
// CPU.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "offload/predictor_fit.hpp"

namespace sf::offload {

namespace {

class GpuReducedRank final : public ReducedRankSolver {
 public:
  GpuReducedRank(const double* ac, const double* zc, int64_t t1, int64_t d, int64_t ffn);
  ~GpuReducedRank() override;
  GpuReducedRank(const GpuReducedRank&) = delete;
  GpuReducedRank& operator=(const GpuReducedRank&) = delete;
  std::vector<double> gram() override;
  std::vector<double> whitened_covariance(const std::vector<double>& l) override;
  std::vector<double> project(const std::vector<double>& q, int64_t rank) override;

 private:
  struct Impl;
  Impl* impl_ = nullptr;
};

}  // namespace

std::unique_ptr<ReducedRankSolver> make_gpu_reduced_rank(const double* ac, const double* zc,
                                                         int64_t t1, int64_t d, int64_t ffn) {
  return std::make_unique<GpuReducedRank>(ac, zc, t1, d, ffn);
}

struct GpuReducedRank::Impl {
  int64_t t1 = 0, d = 0, f = 0;
  cublasHandle_t h = nullptr;
  double *ac = nullptr, *zc = nullptr, *c = nullptr,
         *sq = nullptr;     // sq: a [d, d] scratch (G, L, K)
  double* small = nullptr;  // Q [d, R] or Q' C [R, F]
  ~Impl() {
    for (double* p : {ac, zc, c, sq, small})
      if (p) cudaFree(p);
    if (h) cublasDestroy(h);
  }
  double* alloc(size_t n) {
    double* p = nullptr;
    SF_CUDA_CHECK(cudaMalloc(&p, n * sizeof(double)));
    return p;
  }
};

GpuReducedRank::GpuReducedRank(const double* ac, const double* zc, int64_t t1, int64_t d,
                               int64_t ffn)
    : impl_(new Impl) {
  auto& m = *impl_;
  try {
    m.t1 = t1;
    m.d = d;
    m.f = ffn;
    SF_CUBLAS_CHECK(cublasCreate(&m.h));
    m.ac = m.alloc(size_t(t1 * d));
    m.zc = m.alloc(size_t(t1 * ffn));
    m.sq = m.alloc(size_t(d * d));
    SF_CUDA_CHECK(cudaMemcpy(m.ac, ac, size_t(t1 * d) * 8, cudaMemcpyHostToDevice));
    SF_CUDA_CHECK(cudaMemcpy(m.zc, zc, size_t(t1 * ffn) * 8, cudaMemcpyHostToDevice));
  } catch (...) {
    delete impl_;
    throw;
  }
}

GpuReducedRank::~GpuReducedRank() {
  delete impl_;
}

namespace {

// op(A) op(A)' into the d x d scratch (lower triangle, the rest zero), downloaded: op = T for A [k,
// d] (Ac' Ac), N for A [d, k] (C C').
std::vector<double> syrk_lower(cublasHandle_t h, cublasOperation_t op, int64_t d, int64_t k,
                               const double* a, int64_t lda, double* scratch) {
  const double one = 1.0, zero = 0.0;
  SF_CUDA_CHECK(cudaMemset(scratch, 0, size_t(d * d) * 8));
  SF_CUBLAS_CHECK(cublasDsyrk(h, CUBLAS_FILL_MODE_LOWER, op, int(d), int(k), &one, a, int(lda),
                              &zero, scratch, int(d)));
  std::vector<double> out(static_cast<size_t>(d * d));
  SF_CUDA_CHECK(cudaMemcpy(out.data(), scratch, out.size() * 8, cudaMemcpyDeviceToHost));
  return out;
}

}  // namespace

std::vector<double> GpuReducedRank::gram() {
  auto& m = *impl_;
  return syrk_lower(m.h, CUBLAS_OP_T, m.d, m.t1, m.ac, m.t1, m.sq);
}

std::vector<double> GpuReducedRank::whitened_covariance(const std::vector<double>& l) {
  auto& m = *impl_;
  const double one = 1.0, zero = 0.0;
  if (!m.c) m.c = m.alloc(size_t(m.d * m.f));
  SF_CUBLAS_CHECK(cublasDgemm(m.h, CUBLAS_OP_T, CUBLAS_OP_N, int(m.d), int(m.f), int(m.t1), &one,
                              m.ac, int(m.t1), m.zc, int(m.t1), &zero, m.c, int(m.d)));
  cudaFree(m.zc);  // not needed again: room for the rest
  m.zc = nullptr;
  SF_CUDA_CHECK(cudaMemcpy(m.sq, l.data(), l.size() * 8, cudaMemcpyHostToDevice));
  SF_CUBLAS_CHECK(cublasDtrsm(m.h, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                              CUBLAS_DIAG_NON_UNIT, int(m.d), int(m.f), &one, m.sq, int(m.d), m.c,
                              int(m.d)));
  return syrk_lower(m.h, CUBLAS_OP_N, m.d, m.f, m.c, m.d, m.sq);
}

std::vector<double> GpuReducedRank::project(const std::vector<double>& q, int64_t rank) {
  auto& m = *impl_;
  if (!m.c)
    fail(Status::Internal, "predictor fit on the GPU: project() before whitened_covariance()");
  const double one = 1.0, zero = 0.0;
  double* dq = m.alloc(size_t(m.d * rank));
  double* dv = nullptr;
  try {
    dv = m.alloc(size_t(rank * m.f));
    SF_CUDA_CHECK(cudaMemcpy(dq, q.data(), q.size() * 8, cudaMemcpyHostToDevice));
    SF_CUBLAS_CHECK(cublasDgemm(m.h, CUBLAS_OP_T, CUBLAS_OP_N, int(rank), int(m.f), int(m.d), &one,
                                dq, int(m.d), m.c, int(m.d), &zero, dv, int(rank)));
    std::vector<double> v(static_cast<size_t>(rank * m.f));
    SF_CUDA_CHECK(cudaMemcpy(v.data(), dv, v.size() * 8, cudaMemcpyDeviceToHost));
    cudaFree(dq);
    cudaFree(dv);
    return v;
  } catch (...) {
    cudaFree(dq);
    if (dv) cudaFree(dv);
    throw;
  }
}

}  // namespace sf::offload
