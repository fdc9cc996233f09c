// Dense prefill products with cuBLASLt's fused epilogues: y = act(x W^T + bias) (+ residual) in one
// GEMM, no fp32 accumulator written and re-read by a separate epilogue kernel.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace sf::cuda {

struct LtProduct {
  const void* w = nullptr;         // [out, in] row-major, act dtype
  const void* x = nullptr;         // [m, in] row-major, act dtype
  int64_t m = 0, out = 0, in = 0;
  int act_dt = 1;                  // 1 fp16, 2 bf16 (fp32 activations are not taken)
  const float* bias = nullptr;     // [out] fp32 or null
  bool relu = false;
  const float* residual = nullptr; // [m, out] fp32 or null (then y_dt must be fp32; may alias y)
  void* y = nullptr;               // [m, out]
  int y_dt = 0;                    // 0 fp32, else act_dt
};

class LtLinear {
 public:
  LtLinear();
  ~LtLinear();
  LtLinear(const LtLinear&) = delete;
  LtLinear& operator=(const LtLinear&) = delete;
  // Runs the product on `stream` and returns true, or returns false without launching anything when
  // cuBLASLt offers no algorithm for this combination (the caller keeps its GEMM + epilogue path);
  // the answer is remembered per combination. Throws on a failure after launch.
  bool run(const LtProduct& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);
  // A workspace size that lets cuBLASLt pick its fast Hopper kernels.
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, bool, bool, int>;
  struct Plan {
    bool ok = false;
    cublasLtMatmulAlgo_t algo{};
  };
  cublasLtHandle_t lt_ = nullptr;
  std::map<Key, Plan> plans_;
};

}  // namespace sf::cuda
