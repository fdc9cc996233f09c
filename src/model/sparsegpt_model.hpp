// SparseGPT over a whole model, sequentially as the paper does: the linears of decoder layer l are
// pruned (s24::sparsegpt_prune) from the Hessians of their inputs measured by the CPU forward pass
// over the calibration tokens, with layers 0..l-1 already pruned, so each layer corrects for what
// the layers before it lost. Within a layer every linear sees the layer's dense inputs, as in the
// reference implementation.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/weights.hpp"
#include "sparse24/sparsegpt.hpp"

namespace sf::model {

struct SparseGptModelOptions {
  s24::SparseGptOptions solver;  // dampening and block size; its mask must stay empty
  std::optional<DType> dtype;    // element type of the pruned weights (default: each weight's own)
  // Tokens per calibration sample: the calibration tokens run as independent sequences of this
  // length (the last one shorter). 0: the model's context, max_position_embeddings (the sliding
  // window where that is shorter).
  int64_t window = 0;
};

// One pruned decoder linear, dense: 2 of every 4 along `in` are zero, the rest updated.
struct PrunedWeight {
  DType dtype = DType::F16;
  std::vector<int64_t> shape;   // [out, in]
  std::vector<uint8_t> values;  // [out, in] elements of dtype
  // ||(W - W') X^T|| / ||W X^T|| over the calibration rows this layer saw (before rounding W');
  // negative when not measured (magnitude, Wanda).
  double relative_output_error = -1;
};

// (decoder layers done, layers, seconds so far)
using LayerProgress = std::function<void(int64_t, int64_t, double)>;

// Every decoder linear weight ("model.layers.3.mlp.up_proj.weight") of a dense, row-major model
// pruned to 2:4 by SparseGPT. Calibration runs the tokens as one sequence in windows of at most
// max_position_embeddings. The later layers are calibrated on the pruned weights rounded to the
// output dtype, as the written model will run them. Deterministic for given tokens, options and
// thread count. Throws Error(InvalidArgument) for empty tokens or a Hessian that dampening cannot
// make positive definite (naming the layer), Error(UnsupportedShape) for a 2:4 or neuron-major
// source.
std::map<std::string, PrunedWeight> sparsegpt_prune_model(const Model& model,
                                                          std::span<const int32_t> tokens,
                                                          const SparseGptModelOptions& opt,
                                                          const LayerProgress& progress = {});

// The same on one GPU (device index `device`): the calibration forward passes by CudaEngine's
// layer-at-a-time calls, the Hessians as cuBLAS products of the layers' fp16/bf16/fp32 inputs (as
// the engine runs them) summed in fp32, the solver in fp64 (cuda::SparseGptSolver). Equal to the
// CPU run up to rounding (the CPU computes activations in fp32). CUDA backend only: host code
// reaches it through backend::require_cuda(...).sparsegpt_prune_model. Also throws
// Error(OutOfMemory) when the calibration activations do not fit beside the model, saying how
// many tokens would.
std::map<std::string, PrunedWeight> sparsegpt_prune_model_cuda(const Model& model,
                                                               std::span<const int32_t> tokens,
                                                               const SparseGptModelOptions& opt,
                                                               const LayerProgress& progress,
                                                               int device);

// What both runs share: the checks on the inputs, the calibration samples, and a solver result
// as the weight to write.
void check_sparsegpt_inputs(const Model& model, std::span<const int32_t> tokens,
                            const SparseGptModelOptions& opt);
std::vector<std::span<const int32_t>> calibration_windows(const arch::ModelDesc& c,
                                                          std::span<const int32_t> tokens,
                                                          int64_t window);
PrunedWeight pruned_weight(const s24::SparseGptResult& r, const Tensor& original,
                           std::optional<DType> dtype);

}  // namespace sf::model
