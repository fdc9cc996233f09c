// SparseGPT's solver for one linear layer on the GPU: the algorithm of sparse24/sparsegpt.hpp in
// fp64 as there, with cuSOLVER's Cholesky factorisations, a warp-per-row kernel for the OBS sweep
// inside each block of columns (rows are independent of each other) and cuBLAS for the lazy batch
// update. The result equals the CPU solver's up to the order of fp64 roundings.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "sparse24/sparsegpt.hpp"

namespace sf::cuda {

class SparseGptSolver {
 public:
  explicit SparseGptSolver(cudaStream_t stream);
  ~SparseGptSolver();
  SparseGptSolver(const SparseGptSolver&) = delete;
  SparseGptSolver& operator=(const SparseGptSolver&) = delete;

  // Prunes w (host memory, [rows, cols]) given its input Hessian h (device memory, fp64 [cols,
  // cols], symmetric, H = 2 X^T X / n; overwritten: it becomes the factor of H^-1). Same contract
  // and errors as s24::sparsegpt_prune, except that a fixed mask and blocks over 128 columns are
  // refused (Error(InvalidArgument)).
  s24::SparseGptResult prune(const s24::MatrixView& w, double* h, const s24::SparseGptOptions& opt);

  // The same from a host Hessian (uploaded first): what the tests compare with the CPU solver.
  s24::SparseGptResult prune(const s24::MatrixView& w, std::span<const double> h,
                             const s24::SparseGptOptions& opt);

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace sf::cuda
