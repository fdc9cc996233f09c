// Dense prefill products with cuBLASLt's fused epilogues: y = act(x W^T + bias) (+ residual) in one
// GEMM, no fp32 accumulator written and re-read by a separate epilogue kernel.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

namespace sf::cuda {

struct LtProduct {
  const void* w = nullptr;         // [out, in] row-major, act dtype
  const void* x = nullptr;         // [m, in] row-major, act dtype
  int64_t m = 0, out = 0, in = 0;
  int act_dt = 1;                  // 1 fp16, 2 bf16 (fp32 activations are not taken)
  const void* bias = nullptr;      // [out] or null
  int bias_dt = 0;                 // 0 fp32, else act_dt (cuBLASLt takes an fp32 bias with 16-bit y on some
                                   // epilogues only: OPT's fc1, ReLU + bias into fp16, wants a 16-bit bias)
  bool relu = false;
  const float* residual = nullptr; // [m, out] fp32 or null (then y_dt must be fp32; may alias y)
  void* y = nullptr;               // [m, out] ([m, out / 2] gated)
  int y_dt = 0;                    // 0 fp32, else act_dt (gated: any of 0, 1, 2)
  // Gated: w is a fused gate/up weight (rows 2j, 2j + 1 = gate j, up j; s24::fuse_gate_up) and
  // y[m, j] = act(gate + bias[2j]) * (up + bias[2j + 1]) (+ residual [m, out / 2], fp32). cuBLASLt
  // has no epilogue that combines two output columns, so the product (with its bias) goes to the
  // caller's gate_up workspace [m, out] and a small kernel (launch_epilogue) writes y: one more
  // pass over [m, out] than a fused epilogue. relu must be false; gated_act is the activation.
  bool gated = false;
  int gated_act = 0;        // s24::Activation code (3 SiLU: SwiGLU; 4 GELU-tanh: GeGLU)
  void* gate_up = nullptr;  // [m, out] workspace, gate_up_dt
  int gate_up_dt = 0;       // 0 fp32, else act_dt (rounds gate and up to 16 bits first, as
                            // PyTorch does; halves the workspace)
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
  //
  // Choosing the algorithm: for m >= kTuneMinM the first call of a combination (m bucketed to the
  // next power of two) times cuBLASLt's top kTuneCandidates heuristic answers on the real operands,
  // writing to a scratch output, and keeps the fastest (for OPT-6.7B's four prefill shapes on the H200
  // the first answer was within 0-8% of the best; the timing costs ~10 ms once per shape). Timing
  // synchronises the stream once, so it is skipped while the stream is being captured into a graph
  // and with SPARSEFLOW_LT_TUNE=0 (then the first heuristic answer is taken).
  bool run(const LtProduct& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);
  // One line per remembered plan: shape, epilogue, how it was chosen, time per candidate.
  std::string describe_plans() const;
  static constexpr int64_t kTuneMinM = 256;
  static constexpr int kTuneCandidates = 8;
  struct Descs;  // one product's cuBLASLt descriptors
  // A workspace size that lets cuBLASLt pick its fast Hopper kernels.
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, int, int, bool, bool, int>;  // bias: 0 none, 1 + bias_dt
  struct Plan {
    bool ok = false;
    cublasLtMatmulAlgo_t algo{};
    std::string how;  // "heuristic" or the timed candidates
  };
  Plan choose(const LtProduct& p, const Descs& ds, void* workspace, size_t workspace_bytes, cudaStream_t stream);
  cublasLtHandle_t lt_ = nullptr;
  std::map<Key, Plan> plans_;
};

}  // namespace sf::cuda
