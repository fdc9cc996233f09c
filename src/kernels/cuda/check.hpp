// One check macro family for CUDA, cuBLAS and cuSPARSELt calls: a failure throws sf::Error(Cuda)
// naming the statement, the file and line, and the library's own error string.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#ifdef SF_WITH_CUSPARSELT
#include <cusparseLt.h>
#endif

namespace sf::cuda::detail {

// Defined in check.cpp (fmt's compile-time format checks do not build under nvcc).
// This header stays free of fmt (core/error.hpp) so that .cu files can include it.
[[noreturn]] void throw_cuda(const char* lib, const char* what, const char* stmt, const char* file, int line);
// throw sf::Error(Status(status), message), for .cu files.
[[noreturn]] void throw_status(int status, const std::string& message);

inline const char* cublas_error_string(cublasStatus_t s) { return cublasGetStatusString(s); }

}  // namespace sf::cuda::detail

namespace sf::cuda {

// SMs of the device current at the first call (cached; 108 if the query fails): launch sizing.
int sm_count();

// Persistent batch-1 decode products (opt-in, an A/B of docs/KERNELS.md): a grid of as many blocks as
// fit the GPU at once, each looping over output rows (dense GEMV) or 16-row blocks (2:4 decode kernel,
// no split-K) and loading the next one's first weights before it reduces and stores the current one,
// so no block starts or retires mid-product and the weight loads never pause. Per output the
// arithmetic is the non-persistent kernel's, in the same order: the results are bit-identical.
inline constexpr int kPersistentGemv = 1;    // model/gemv.cu
inline constexpr int kPersistentDecode = 2;  // decode.cu
// The 2:4 decode kernel for M <= 8 fed by bulk copies (decode.cu, sm_90+): weights streamed through
// shared memory by the copy engine; equal within rounding, not bit for bit (other warp grouping).
inline constexpr int kBulkDecode = 4;
// The dense decode GEMV fed the same way (model/gemv.cu, sm_90+, rows of a multiple of 512 bytes).
inline constexpr int kBulkGemv = 8;
// SPARSEFLOW_PERSISTENT=gemv,decode,bulk-decode,bulk-gemv (comma-separated; all: every one; read once)
// unless set_persistent_kernels() was called.
int persistent_kernels();
// Override for this process (tests, A/B in one run): a mask of the bits above; -1 back to the environment.
void set_persistent_kernels(int mask);

// The dense decode GEMV on the tensor cores (model/gemv.cu: mma.sync m16n8k16, fp16/bf16 weights) from
// this many tokens on; fewer run the CUDA-core GEMV. SPARSEFLOW_GEMV_MMA_MIN_M (read once; 0 = never)
// unless set_gemv_mma_min_m() was called (-1: back to the environment). The default is measured
// (batch 2 level, 4 1.10x, 8 1.68x): bench/results/2026-12-06-NVIDIA-H100-80GB-HBM3-opt-6.7b-batch.md.
inline constexpr int kGemvMmaDefaultMinM = 2;
int gemv_mma_min_m();
void set_gemv_mma_min_m(int m);

// Blocks of a persistent launch over `items` work items (rows, 16-row blocks): at most `resident`
// (what fits the GPU at once), and then the fewest that give every block the same number of items,
// so no block runs a last item alone while the others are done (12288 rows of 8 warps on 1056
// resident blocks: 768 blocks of 2 items each, not 1056 of 1 or 2).
inline unsigned persistent_grid(unsigned items, unsigned resident) {
  if (items <= resident || resident == 0) return items;
  const unsigned per_block = (items + resident - 1) / resident;
  return (items + per_block - 1) / per_block;
}

}  // namespace sf::cuda

#define SF_CUDA_CHECK(stmt)                                                                     \
  do {                                                                                         \
    cudaError_t sf_err_ = (stmt);                                                              \
    if (sf_err_ != cudaSuccess)                                                                \
      ::sf::cuda::detail::throw_cuda("CUDA", cudaGetErrorString(sf_err_), #stmt, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: catches bad launch configurations at once (not at the next sync).
#define SF_CUDA_CHECK_LAUNCH() SF_CUDA_CHECK(cudaGetLastError())

#define SF_CUBLAS_CHECK(stmt)                                                                   \
  do {                                                                                         \
    cublasStatus_t sf_st_ = (stmt);                                                            \
    if (sf_st_ != CUBLAS_STATUS_SUCCESS)                                                       \
      ::sf::cuda::detail::throw_cuda("cuBLAS", ::sf::cuda::detail::cublas_error_string(sf_st_), #stmt, \
                                     __FILE__, __LINE__);                                      \
  } while (0)

#ifdef SF_WITH_CUSPARSELT
#define SF_CUSPARSELT_CHECK(stmt)                                                               \
  do {                                                                                         \
    cusparseStatus_t sf_st_ = (stmt);                                                          \
    if (sf_st_ != CUSPARSE_STATUS_SUCCESS)                                                     \
      ::sf::cuda::detail::throw_cuda("cuSPARSELt", cusparseLtGetErrorString(sf_st_), #stmt,    \
                                     __FILE__, __LINE__);                                      \
  } while (0)
#endif
