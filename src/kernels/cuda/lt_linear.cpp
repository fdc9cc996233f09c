#include "kernels/cuda/lt_linear.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/decode_kernels.hpp"

namespace sf::cuda {
namespace {

void lt_check(cublasStatus_t s, const char* stmt) {
  if (s != CUBLAS_STATUS_SUCCESS) detail::throw_cuda("cuBLASLt", cublasGetStatusString(s), stmt, __FILE__, __LINE__);
}
#define SF_LT(stmt) lt_check((stmt), #stmt)

cudaDataType_t data_type(int dt) { return dt == 0 ? CUDA_R_32F : dt == 1 ? CUDA_R_16F : CUDA_R_16BF; }
size_t dtype_size(int dt) { return dt == 0 ? 4 : 2; }

int64_t bucket(int64_t m) {  // plans are shared by m in (2^(k-1), 2^k] from kTuneMinM on
  if (m < LtLinear::kTuneMinM) return m;
  int64_t b = LtLinear::kTuneMinM;
  while (b < m) b *= 2;
  return -b;  // negative: a bucket, never equal to an exact small m
}

bool tuning_enabled() {
  const char* v = std::getenv("SPARSEFLOW_LT_TUNE");
  return !(v && std::string(v) == "0");
}

}  // namespace

// The descriptors of one product, destroyed with it.
struct LtLinear::Descs {
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
namespace {

void describe(const LtProduct& p, LtLinear::Descs& ds) {
  SF_LT(cublasLtMatmulDescCreate(&ds.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  SF_LT(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  SF_LT(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  cublasLtEpilogue_t epi = p.bias ? (p.relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                  : (p.relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
  SF_LT(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (p.bias) {
    const cudaDataType_t bt = data_type(p.bias_dt);
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

// The heuristic's top answers; with tuning, each timed on the real operands (output to scratch) and
// the fastest kept.
LtLinear::Plan LtLinear::choose(const LtProduct& p, const Descs& ds, void* workspace, size_t workspace_bytes,
                                cudaStream_t stream) {
  Plan plan;
  cublasLtMatmulPreference_t pref = nullptr;
  SF_LT(cublasLtMatmulPreferenceCreate(&pref));
  SF_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                             sizeof(workspace_bytes)));
  cublasLtMatmulHeuristicResult_t res[kTuneCandidates]{};
  int found = 0;
  const cublasStatus_t s =
      cublasLtMatmulAlgoGetHeuristic(lt_, ds.op, ds.a, ds.b, ds.c, ds.d, pref, kTuneCandidates, res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  std::vector<cublasLtMatmulAlgo_t> cands;
  for (int i = 0; s == CUBLAS_STATUS_SUCCESS && i < found; ++i)
    if (res[i].state == CUBLAS_STATUS_SUCCESS) cands.push_back(res[i].algo);
  if (cands.empty()) return plan;
  plan.ok = true;
  plan.algo = cands[0];
  plan.how = "heuristic";
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  SF_CUDA_CHECK(cudaStreamIsCapturing(stream, &cap));
  if (cands.size() == 1 || p.m < kTuneMinM || cap != cudaStreamCaptureStatusNone || !tuning_enabled()) return plan;

  // Scratch output: the caller's y may alias the residual (C), which a repeated product would corrupt.
  void* scratch = nullptr;
  const size_t ybytes = size_t(p.m * p.out) * dtype_size(p.y_dt);
  if (cudaMallocAsync(&scratch, ybytes, stream) != cudaSuccess) {
    cudaGetLastError();
    return plan;  // no room to time: keep the heuristic's answer
  }
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  SF_CUDA_CHECK(cudaEventCreate(&e0));
  SF_CUDA_CHECK(cudaEventCreate(&e1));
  const float one = 1.0f, zero = 0.0f;
  const void* c = p.residual ? static_cast<const void*>(p.residual) : scratch;
  constexpr int kReps = 3;
  float best = 0;
  bool timed_any = false;
  std::string how = "timed";
  for (size_t i = 0; i < cands.size(); ++i) {
    auto launch = [&] {
      return cublasLtMatmul(lt_, ds.op, &one, p.w, ds.a, p.x, ds.b, p.residual ? &one : &zero, c, ds.c, scratch, ds.d,
                            &cands[i], workspace, workspace_bytes, stream);
    };
    if (launch() != CUBLAS_STATUS_SUCCESS) continue;  // warm-up; a candidate that refuses is skipped
    SF_CUDA_CHECK(cudaEventRecord(e0, stream));
    for (int r = 0; r < kReps; ++r) SF_LT(launch());
    SF_CUDA_CHECK(cudaEventRecord(e1, stream));
    SF_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    SF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    ms /= kReps;
    how += fmt::format(" {}:{:.3f}", i, ms);
    if (!timed_any || ms < best) {
      best = ms;
      plan.algo = cands[i];
      timed_any = true;
    }
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  SF_CUDA_CHECK(cudaFreeAsync(scratch, stream));
  // No candidate ran out of place (with a scratch output): the heuristic's first, as without tuning.
  plan.how = timed_any ? how : std::string("heuristic (no candidate ran with a scratch output)");
  return plan;
}

bool LtLinear::run(const LtProduct& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (p.gated) {
    if (p.relu || !p.gate_up || p.out % 2 != 0 || (p.gate_up_dt != 0 && p.gate_up_dt != p.act_dt))
      fail(Status::InvalidArgument,
           "LtLinear: a gated product needs an even number of outputs (gate/up pairs; found {}), a "
           "gate_up "
           "workspace in fp32 or the activation type (found {}, dtype code {}) and relu off (found "
           "{}); the "
           "activation goes in gated_act",
           p.out, p.gate_up ? "one" : "none", p.gate_up_dt, p.relu);
    LtProduct q = p;  // the plain product (with its bias) into the workspace
    q.gated = false;
    q.residual = nullptr;
    q.y = p.gate_up;
    q.y_dt = p.gate_up_dt;
    if (!run(q, workspace, workspace_bytes, stream)) return false;
    EpilogueParams ep;
    ep.act = p.gated_act;
    ep.gated = 1;
    ep.residual = p.residual;
    ep.residual_dt = 0;
    ep.y = p.y;
    ep.y_dt = p.y_dt;
    ep.ldy = p.out / 2;
    launch_epilogue(p.gate_up, p.gate_up_dt, p.m, p.out, ep, stream);
    return true;
  }
  if (p.act_dt != 1 && p.act_dt != 2) return false;
  if (p.residual && p.y_dt != 0) return false;
  if (p.y_dt != 0 && p.y_dt != p.act_dt) return false;
  if (p.bias_dt != 0 && p.bias_dt != p.act_dt) return false;
  Descs ds;
  describe(p, ds);
  const Key key{bucket(p.m), p.out, p.in, p.act_dt, p.bias ? 1 + p.bias_dt : 0, p.relu, p.residual != nullptr, p.y_dt};
  auto it = plans_.find(key);
  if (it == plans_.end()) it = plans_.emplace(key, choose(p, ds, workspace, workspace_bytes, stream)).first;
  if (!it->second.ok) return false;
  const float one = 1.0f, zero = 0.0f;
  const void* c = p.residual ? static_cast<const void*>(p.residual) : p.y;
  SF_LT(cublasLtMatmul(lt_, ds.op, &one, p.w, ds.a, p.x, ds.b, p.residual ? &one : &zero, c, ds.c, p.y, ds.d,
                       &it->second.algo, workspace, workspace_bytes, stream));
  return true;
}

std::string LtLinear::describe_plans() const {
  std::string s;
  for (const auto& [k, plan] : plans_) {
    const auto& [m, out, in, dt, bias, relu, residual, ydt] = k;
    s += fmt::format("  m {}{} out {} in {}{}{}{}: {}\n", m < 0 ? "<=" : "", m < 0 ? -m : m, out, in,
                     bias == 0 ? "" : bias == 1 ? " +bias" : " +bias (16-bit)", relu ? " relu" : "", residual ? " +residual" : "",
                     plan.ok ? plan.how : std::string("no algorithm (GEMM + epilogue kernel)"));
  }
  return s;
}

}  // namespace sf::cuda
