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

}  // namespace sf::model
