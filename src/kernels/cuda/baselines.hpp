// The baselines every 2:4 kernel is measured against, in the same process: cuBLAS dense on the
// pruned dense weight, and cuSPARSELt (when built with it) on its own compressed copy of it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.hpp"
#include "kernels/cuda/epilogue.cuh"

namespace sf::cuda {

// y[M, N] = x[M, K] W^T with W dense [N, K] row-major; fp32 accumulation, y in the input dtype.
class DenseGemm {
 public:
  explicit DenseGemm(cudaStream_t stream);
  ~DenseGemm();
  DenseGemm(const DenseGemm&) = delete;
  DenseGemm& operator=(const DenseGemm&) = delete;
  void run(const void* w, const void* x, void* y, int64_t m, int64_t n, int64_t k, DType dtype);
  // Gated (w a fused gate/up weight, rows 2j, 2j + 1; n even): the product into gate_up [m, n]
  // (dtype), then the gated epilogue kernel writes ep.y [m, n / 2] (ep.gated, ep.ldy = n / 2):
  // cuBLAS has no epilogue over two output columns.
  void run_gated(const void* w, const void* x, void* gate_up, int64_t m, int64_t n, int64_t k,
                 DType dtype, const EpilogueParams& ep);

 private:
  cudaStream_t stream_;
  void* handle_ = nullptr;
};

// One cuSPARSELt product y[m, N] = x W^T for a fixed m, planned once (algorithm chosen by
// cusparseLtMatmulSearch). M is padded to a multiple of 16 (the library's 16-bit alignment); the
// caller provides x and y with room for padded_m() rows.
class CusparseLtGemm {
 public:
  static bool available();  // built with cuSPARSELt
  CusparseLtGemm(int64_t m, int64_t n, int64_t k, DType dtype, cudaStream_t stream);
  ~CusparseLtGemm();
  CusparseLtGemm(const CusparseLtGemm&) = delete;
  CusparseLtGemm& operator=(const CusparseLtGemm&) = delete;

  int64_t padded_m() const { return m_pad_; }
  size_t compressed_bytes() const;
  // Compresses a pruned dense W [N, K] (device) into a new buffer owned by the caller (cudaFree).
  void* compress(const void* dense_w);
  // Picks the fastest algorithm on these buffers (once), then runs.
  void search(const void* wc, const void* x, void* y);
  void run(const void* wc, const void* x, void* y);
  // Gated (W a fused gate/up weight, rows 2j, 2j + 1; N even): the product into gate_up [padded_m,
  // N] (the dtype), then the gated epilogue kernel writes ep.y [m, N / 2] for the first m rows
  // (ep.gated, ep.ldy = N / 2): cuSPARSELt has no epilogue over two output columns.
  void run_gated(const void* wc, const void* x, void* gate_up, const EpilogueParams& ep);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t m_ = 0, m_pad_ = 0, n_ = 0;
  DType dtype_ = DType::F16;
};

}  // namespace sf::cuda
