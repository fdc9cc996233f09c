// Fitting per-layer activation predictors (`sparseflow calibrate`). docs/OFFLOAD.md justifies the
// choice; in short:
//
//   input   a = the layer's attention input (q_proj's input), known before attention runs, so the
//           neuron fetch can overlap attention (Deja Vu's lookahead)
//   target  z = fc1 pre-activation of the same token (LN2(h) W1^T + b1), recorded by the CPU pass
//   model   z ~ a U V + c, rank R: reduced-rank least squares (ridge-regularised), solved exactly:
//           whiten a with the Cholesky factor L of its Gram matrix, take the top-R left singular
//           vectors Q of C = L^-1 A^T Z, then U = L^-T Q, V = Q^T C, c from the means
//   rule    neuron j predicted active iff (a U V)[j] > threshold[j] = -c_j - kappa * s_j, s_j the
//           residual std of neuron j on the fit tokens and kappa the smallest value giving the
//           target recall on them (plus --margin standard deviations)
//
// Stored as predictor.layers.N.u [d, R] F16, .v [R, ffn] F16, .threshold [ffn] F32; recall and
// precision are measured on held-out tokens with the fp16-rounded factors the GPU will use.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "model/weights.hpp"

namespace sf::offload {

struct NewTensor;  // offload/profile.hpp

class ReducedRankSolver;

struct PredictorFitOptions {
  int64_t rank = 128;
  double recall = 0.99;  // target recall on the fit tokens (micro-averaged over neurons)
  double margin = 0.0;   // extra residual standard deviations subtracted from every threshold
  double ridge = 1e-3;   // Gram regularisation, relative to its mean diagonal
  double heldout = 0.2;  // fraction of tokens (the last ones) kept for measuring
  int64_t window = 0;    // tokens per forward pass (0: max positions)
  std::vector<int64_t> layers;  // empty: all
  // Set: the fit's large fp64 products run on what it makes (the GPU: the caller passes
  // backend::CudaBackend::reduced_rank, so that offload/ does not depend on the backend); the fit
  // falls back to the CPU when it throws. Unset: the CPU.
  std::function<std::unique_ptr<ReducedRankSolver>(const double* ac, const double* zc, int64_t t1,
                                                   int64_t d, int64_t ffn)>
      gpu_solver;
  bool attention_inputs =
      true;  // collect a as well as z (false: z only, for the profile, which counts z)
};

// The GPU half of a reduced-rank fit, fp64 with cuBLAS, all matrices column-major: holds Ac
// [T1, d] and Zc [T1, F] on the device and computes
//   gram()                  Ac' Ac (lower triangle) [d, d],
//   whitened_covariance(L)  K = C C' (lower triangle) [d, d] with C = L^-1 Ac' Zc kept on the
//   device, project(Q, R)           Q' C [R, F].
// Throws sf::Error on any CUDA/cuBLAS failure. The CUDA backend makes one
// (backend::CudaBackend::reduced_rank, src/offload/cuda/predictor_fit_cuda.cpp).
class ReducedRankSolver {
 public:
  virtual ~ReducedRankSolver() = default;
  virtual std::vector<double> gram() = 0;
  virtual std::vector<double> whitened_covariance(const std::vector<double>& l) = 0;
  virtual std::vector<double> project(const std::vector<double>& q, int64_t rank) = 0;
};
// CUDA backend only (predictor_fit_cuda.cpp).
std::unique_ptr<ReducedRankSolver> make_gpu_reduced_rank(const double* ac, const double* zc,
                                                         int64_t t1, int64_t d, int64_t ffn);

struct FittedPredictor {
  int64_t layer = 0, rank = 0, hidden = 0, ffn = 0;
  std::vector<uint16_t> u, v;    // fp16: [d, R], [R, ffn] row-major
  std::vector<float> threshold;  // [ffn]
  double kappa = 0;              // threshold in residual standard deviations (margin included)
  // Held-out measurements (micro-averaged over tokens and neurons).
  double recall = 0, precision = 0, predicted_fraction = 0, true_fraction = 0;
  double fit_recall = 0;  // on the fit tokens
  int64_t fit_tokens = 0, heldout_tokens = 0;
  bool fitted_on_gpu =
      false;  // the large products ran on the GPU (PredictorFitOptions::gpu, no fallback)
  uint64_t bytes() const { return u.size() * 2 + v.size() * 2 + threshold.size() * 4; }
};

struct CalibrationReport {
  std::vector<FittedPredictor> layers;
  double recall = 0, precision = 0, predicted_fraction = 0, true_fraction = 0;  // means over layers
  uint64_t bytes = 0;
  double forward_seconds = 0, fit_seconds = 0;
  uint64_t collected_bytes = 0;  // host memory the (a, z) pairs took
};

// What the predictors are fitted on: per layer, the attention input a [tokens, hidden] and the fc1
// pre-activation z [tokens, ffn] (bundle order for neuron-major models) of every token, fp32.
struct CollectedActivations {
  int64_t tokens = 0, hidden = 0, ffn = 0;
  std::vector<int64_t> layers;           // the layers collected
  std::vector<std::vector<float>> a, z;  // indexed by layer; empty for the others
  int64_t window = 0;  // tokens per forward pass: rows [k*window, (k+1)*window) are one sequence
  double seconds = 0;  // the forward passes
  uint64_t bytes() const {
    return uint64_t(layers.size()) * uint64_t(tokens) * uint64_t(hidden + ffn) * 4;
  }
};

// The forward passes over `tokens` in windows of opt.window tokens (0: max positions), each from an
// empty cache, on the CPU backend.
CollectedActivations collect_activations_cpu(const model::Model& model,
                                             std::span<const int32_t> tokens,
                                             const PredictorFitOptions& opt);
// The same on a CUDA GPU (src/offload/cuda/activation_collect.cpp): the engine's own prefill, the
// FFN of every layer computed from the neuron bundles (or row-major fc1/fc2) with cuBLAS, a and z
// copied to host memory. a is the 16-bit attention input the GPU runtime's predictor reads. A last
// window of a single token is dropped (a one-token forward is a decode step). Throws
// Error(NoDevice) on a machine without a GPU. CUDA backend only: code that builds either way calls
// backend::require_cuda(...).collect_activations.
CollectedActivations collect_activations_cuda(const model::Model& model,
                                              std::span<const int32_t> tokens,
                                              const PredictorFitOptions& opt, int device = 0);
// Fits every collected layer (releasing its pairs as it goes).
CalibrationReport fit_collected(CollectedActivations& c, const PredictorFitOptions& opt);

// The layers to calibrate: `asked`, or all when empty; throws InvalidArgument for one that does not
// exist.
std::vector<int64_t> calibration_layers(const std::vector<int64_t>& asked, int64_t num_layers);

// collect_activations_cpu + fit_collected.
CalibrationReport fit_predictors(const model::Model& model, std::span<const int32_t> tokens,
                                 const PredictorFitOptions& opt);

// Fits one layer from its pairs: a [T, d] and z [T, ffn] row-major fp32, the first T - heldout
// rows for fitting and the rest for measuring.
FittedPredictor fit_layer(const float* a, const float* z, int64_t tokens, int64_t heldout,
                          int64_t d, int64_t ffn, const PredictorFitOptions& opt);

// Writes predictor.layers.N.{u,v,threshold} and metadata predictor.* into the .sf file at `path`
// (atomically; replaces those layers' earlier predictors, keeps the others). predictor_entries
// gives the same tensors and metadata, to write together with others in one rewrite (calibrate
// --with-profile).
void predictor_entries(const CalibrationReport& r, const PredictorFitOptions& opt,
                       const std::string& calibration_name, std::vector<NewTensor>& add,
                       nlohmann::json& metadata);
void write_predictors(const std::string& path, const CalibrationReport& r,
                      const PredictorFitOptions& opt, const std::string& calibration_name);

std::string calibration_table(const CalibrationReport& r);

}  // namespace sf::offload
