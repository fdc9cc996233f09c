#include "kernels/cuda/lt_linear.hpp"

#include <string>

#include "kernels/cuda/check.hpp"

namespace sf::cuda {
namespace {

void lt_check(cublasStatus_t s, const char* stmt) {
  if (s != CUBLAS_STATUS_SUCCESS) detail::throw_cuda("cuBLASLt", cublasGetStatusString(s), stmt, __FILE__, __LINE__);
}
#define SF_LT(stmt) lt_check((stmt), #stmt)

cudaDataType_t data_type(int dt) { return dt == 0 ? CUDA_R_32F : dt == 1 ? CUDA_R_16F : CUDA_R_16BF; }

// The descriptors of one product, destroyed with it.
struct Descs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  ~Descs() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Column-major view, as the cuBLAS path: D [out, m] = op(W) [out, in] x^T [in, m] with W row-major
// [out, in] = column-major [in, out] transposed; the bias runs along D's rows (one per output feature).
void describe(const LtProduct& p, Descs& ds) {
  SF_LT(cublasLtMatmulDescCreate(&ds.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  SF_LT(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  SF_LT(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  cublasLtEpilogue_t epi = p.bias ? (p.relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                  : (p.relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
  SF_LT(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (p.bias) {
    const cudaDataType_t bt = CUDA_R_32F;
    SF_LT(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    SF_LT(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias)));
  }
  const cudaDataType_t at = data_type(p.act_dt), yt = data_type(p.y_dt);
  SF_LT(cublasLtMatrixLayoutCreate(&ds.a, at, uint64_t(p.in), uint64_t(p.out), p.in));
  SF_LT(cublasLtMatrixLayoutCreate(&ds.b, at, uint64_t(p.in), uint64_t(p.m), p.in));
  SF_LT(cublasLtMatrixLayoutCreate(&ds.c, yt, uint64_t(p.out), uint64_t(p.m), p.out));
  SF_LT(cublasLtMatrixLayoutCreate(&ds.d, yt, uint64_t(p.out), uint64_t(p.m), p.out));
}

}  // namespace

LtLinear::LtLinear() { SF_LT(cublasLtCreate(&lt_)); }
LtLinear::~LtLinear() {
  if (lt_) cublasLtDestroy(lt_);
}

bool LtLinear::run(const LtProduct& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (p.act_dt != 1 && p.act_dt != 2) return false;
  if (p.residual && p.y_dt != 0) return false;
  if (p.y_dt != 0 && p.y_dt != p.act_dt) return false;
  Descs ds;
  describe(p, ds);
  const Key key{p.m, p.out, p.in, p.act_dt, p.bias != nullptr, p.relu, p.residual != nullptr, p.y_dt};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    Plan plan;
    cublasLtMatmulPreference_t pref = nullptr;
    SF_LT(cublasLtMatmulPreferenceCreate(&pref));
    SF_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                               sizeof(workspace_bytes)));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    const cublasStatus_t s =
        cublasLtMatmulAlgoGetHeuristic(lt_, ds.op, ds.a, ds.b, ds.c, ds.d, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_SUCCESS && found > 0 && res.state == CUBLAS_STATUS_SUCCESS) {
      plan.ok = true;
      plan.algo = res.algo;
    }
    it = plans_.emplace(key, plan).first;
  }
  if (!it->second.ok) return false;
  const float one = 1.0f, zero = 0.0f;
  const void* c = p.residual ? static_cast<const void*>(p.residual) : p.y;
  SF_LT(cublasLtMatmul(lt_, ds.op, &one, p.w, ds.a, p.x, ds.b, p.residual ? &one : &zero, c, ds.c, p.y, ds.d,
                       &it->second.algo, workspace, workspace_bytes, stream));
  return true;
}

}  // namespace sf::cuda
