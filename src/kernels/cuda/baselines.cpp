// cuBLAS dense and cuSPARSELt baselines (see baselines.hpp).
#include "kernels/cuda/baselines.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/decode_kernels.hpp"

namespace sf::cuda {

DenseGemm::DenseGemm(cudaStream_t stream) : stream_(stream) {
  cublasHandle_t h;
  SF_CUBLAS_CHECK(cublasCreate(&h));
  SF_CUBLAS_CHECK(cublasSetStream(h, stream));
  handle_ = h;
}

DenseGemm::~DenseGemm() { cublasDestroy(static_cast<cublasHandle_t>(handle_)); }

void DenseGemm::run(const void* w, const void* x, void* y, int64_t m, int64_t n, int64_t k, DType dtype) {
  const cudaDataType t = dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  const float alpha = 1.0f, beta = 0.0f;
  // Column-major view: y^T [N, M] = op_T(W as col-major K x N) * x^T (col-major K x M).
  SF_CUBLAS_CHECK(cublasGemmEx(static_cast<cublasHandle_t>(handle_), CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m),
                               int(k), &alpha, w, t, int(k), x, t, int(k), &beta, y, t, int(n),
                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

namespace {
void check_gated(int64_t n, const EpilogueParams& ep, const char* what) {
  if (n % 2 != 0 || !ep.gated || ep.ldy != n / 2)
    fail(Status::InvalidArgument,
         "{}: expected a fused gate/up weight (an even N, found {}) and a gated epilogue "
         "writing N / 2 columns (ep.gated = 1, ep.ldy = {}; found gated {}, ldy {})",
         what, n, n / 2, ep.gated, ep.ldy);
}
}  // namespace

void DenseGemm::run_gated(const void* w, const void* x, void* gate_up, int64_t m, int64_t n,
                          int64_t k, DType dtype, const EpilogueParams& ep) {
  check_gated(n, ep, "DenseGemm::run_gated");
  run(w, x, gate_up, m, n, k, dtype);
  launch_epilogue(gate_up, int(dtype), m, n, ep, stream_);
}

#ifdef SF_WITH_CUSPARSELT

// Column-major throughout: D^T [N, M] = W [N, K] * x^T [K, M]. W is the structured operand A,
// row-major [N, K] (its 2:4 groups run along K, the reduction dimension, as cuSPARSELt requires).
struct CusparseLtGemm::Impl {
  cusparseLtHandle_t handle;
  cusparseLtMatDescriptor_t a, b, c;
  cusparseLtMatmulDescriptor_t mm;
  cusparseLtMatmulAlgSelection_t sel;
  cusparseLtMatmulPlan_t plan;
  cudaStream_t stream;
  void* workspace = nullptr;
  size_t workspace_bytes = 0, compressed = 0, compress_buffer = 0;
  bool handle_ok = false, descr_ok = false, mm_ok = false, sel_ok = false, plan_ok = false;
};

bool CusparseLtGemm::available() { return true; }

CusparseLtGemm::CusparseLtGemm(int64_t m, int64_t n, int64_t k, DType dtype, cudaStream_t stream)
    : impl_(new Impl) {
  m_ = m;
  m_pad_ = (m + 15) / 16 * 16;
  n_ = n;
  dtype_ = dtype;
  Impl& s = *impl_;
  s.stream = stream;
  const cudaDataType t = dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  SF_CUSPARSELT_CHECK(cusparseLtInit(&s.handle));
  s.handle_ok = true;
  SF_CUSPARSELT_CHECK(cusparseLtStructuredDescriptorInit(&s.handle, &s.a, n, k, k, 16, t, CUSPARSE_ORDER_ROW,
                                                         CUSPARSELT_SPARSITY_50_PERCENT));
  SF_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(&s.handle, &s.b, k, m_pad_, k, 16, t, CUSPARSE_ORDER_COL));
  SF_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(&s.handle, &s.c, n, m_pad_, n, 16, t, CUSPARSE_ORDER_COL));
  s.descr_ok = true;
  SF_CUSPARSELT_CHECK(cusparseLtMatmulDescriptorInit(&s.handle, &s.mm, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                                     CUSPARSE_OPERATION_NON_TRANSPOSE, &s.a, &s.b, &s.c, &s.c,
                                                     CUSPARSE_COMPUTE_32F));
  s.mm_ok = true;
  SF_CUSPARSELT_CHECK(cusparseLtMatmulAlgSelectionInit(&s.handle, &s.sel, &s.mm, CUSPARSELT_MATMUL_ALG_DEFAULT));
  s.sel_ok = true;
  SF_CUSPARSELT_CHECK(cusparseLtMatmulPlanInit(&s.handle, &s.plan, &s.mm, &s.sel));
  s.plan_ok = true;
  SF_CUSPARSELT_CHECK(cusparseLtMatmulGetWorkspace(&s.handle, &s.plan, &s.workspace_bytes));
  if (s.workspace_bytes) SF_CUDA_CHECK(cudaMalloc(&s.workspace, s.workspace_bytes));
  SF_CUSPARSELT_CHECK(cusparseLtSpMMACompressedSize(&s.handle, &s.plan, &s.compressed, &s.compress_buffer));
}

CusparseLtGemm::~CusparseLtGemm() {
  Impl& s = *impl_;
  if (s.workspace) cudaFree(s.workspace);
  if (s.plan_ok) cusparseLtMatmulPlanDestroy(&s.plan);
  if (s.sel_ok) cusparseLtMatmulAlgSelectionDestroy(&s.sel);
  if (s.descr_ok) {
    cusparseLtMatDescriptorDestroy(&s.a);
    cusparseLtMatDescriptorDestroy(&s.b);
    cusparseLtMatDescriptorDestroy(&s.c);
  }
  if (s.handle_ok) cusparseLtDestroy(&s.handle);
}

size_t CusparseLtGemm::compressed_bytes() const { return impl_->compressed; }

void* CusparseLtGemm::compress(const void* dense_w) {
  Impl& s = *impl_;
  void* out = nullptr;
  void* buf = nullptr;
  SF_CUDA_CHECK(cudaMalloc(&out, s.compressed));
  if (s.compress_buffer) SF_CUDA_CHECK(cudaMalloc(&buf, s.compress_buffer));
  SF_CUSPARSELT_CHECK(cusparseLtSpMMACompress(&s.handle, &s.plan, dense_w, out, buf, s.stream));
  SF_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  if (buf) cudaFree(buf);
  return out;
}

void CusparseLtGemm::search(const void* wc, const void* x, void* y) {
  Impl& s = *impl_;
  const float alpha = 1.0f, beta = 0.0f;
  SF_CUSPARSELT_CHECK(cusparseLtMatmulSearch(&s.handle, &s.plan, &alpha, wc, x, &beta, y, y, s.workspace,
                                             &s.stream, 1));
  // The search may pick an algorithm that needs more workspace.
  size_t need = 0;
  SF_CUSPARSELT_CHECK(cusparseLtMatmulGetWorkspace(&s.handle, &s.plan, &need));
  if (need > s.workspace_bytes) {
    if (s.workspace) SF_CUDA_CHECK(cudaFree(s.workspace));
    SF_CUDA_CHECK(cudaMalloc(&s.workspace, need));
    s.workspace_bytes = need;
  }
}

void CusparseLtGemm::run(const void* wc, const void* x, void* y) {
  Impl& s = *impl_;
  const float alpha = 1.0f, beta = 0.0f;
  SF_CUSPARSELT_CHECK(cusparseLtMatmul(&s.handle, &s.plan, &alpha, wc, x, &beta, y, y, s.workspace, &s.stream, 1));
}

void CusparseLtGemm::run_gated(const void* wc, const void* x, void* gate_up,
                               const EpilogueParams& ep) {
  check_gated(n_, ep, "CusparseLtGemm::run_gated");
  run(wc, x, gate_up);  // D^T column-major [N, padded_m] = row-major [padded_m, N]
  launch_epilogue(gate_up, int(dtype_), m_, n_, ep, impl_->stream);
}

#else  // !SF_WITH_CUSPARSELT

struct CusparseLtGemm::Impl {};
bool CusparseLtGemm::available() { return false; }
CusparseLtGemm::CusparseLtGemm(int64_t, int64_t, int64_t, DType, cudaStream_t) {
  fail(Status::Internal, "this build has no cuSPARSELt (configure found none)");
}
CusparseLtGemm::~CusparseLtGemm() = default;
size_t CusparseLtGemm::compressed_bytes() const { return 0; }
void* CusparseLtGemm::compress(const void*) { return nullptr; }
void CusparseLtGemm::search(const void*, const void*, void*) {}
void CusparseLtGemm::run(const void*, const void*, void*) {}
void CusparseLtGemm::run_gated(const void*, const void*, void*, const EpilogueParams&) {}

#endif

}  // namespace sf::cuda
