// Writes a loaded (dense) model as a `.sf` file, optionally pruning every decoder linear weight to
// 2:4 on the way. Streams: each tensor is converted, pruned, written and dropped in turn, so the
// output never needs the model's size in memory beyond the source's own mapping.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "model/sparsegpt_model.hpp"
#include "model/weights.hpp"

namespace sf::model {

inline constexpr const char* kConverterVersion = SPARSEFLOW_VERSION_STRING;

struct ConvertOptions {
  std::string sparsity = "none";     // "none" or "2:4"
  std::string method = "magnitude";  // 2:4 only: "magnitude", "wanda" or "sparsegpt"
  // Wanda: per decoder linear ("model.decoder.layers.3.fc1"), the L2 norm of each input channel
  // over calibration tokens (collect_activation_norms in cpu_engine.hpp).
  std::map<std::string, std::vector<float>> act_norms;
  // Decoder linear weights ("model.layers.3.mlp.up_proj.weight") already pruned, in the output
  // dtype, written as given: every one for SparseGPT (sparsegpt_prune_model), any for the others.
  std::map<std::string, PrunedWeight> pruned;
  // Decoder linear weights written dense although the sparsity is 2:4 (a mixed plan).
  std::set<std::string> keep_dense;
  std::optional<DType> dtype;  // element type of every float tensor (default: as loaded)
  nlohmann::json extra_metadata = nlohmann::json::object();  // merged into the header metadata
  // Write each layer's FFN as neuron bundles (model.decoder.layers.N.ffn_neurons +
  // neuron_order, docs/FORMAT.md) instead of fc1/fc2, listing "ffn_neuron_major" in requires.
  // Bundles are ordered by firing rate (hottest first) when the source has an activation profile
  // (profile.layers.N.firing_rate) and hotness_order is set; otherwise in the source's order.
  bool neuron_major = false;
  bool hotness_order = true;
};

struct LinearReport {
  std::string name;  // "model.decoder.layers.0.fc1.weight"
  int64_t layer = -1;
  double relative_error = 0;  // ||W - W_2:4|| / ||W||
  double norm_sq = 0, dropped_sq = 0;
  // SparseGPT: ||(W - W_2:4) X^T|| / ||W X^T|| over the calibration rows; negative when unknown.
  double output_error = -1;
};

struct ConvertReport {
  int64_t parameters = 0;  // logical elements of every model tensor (pruned zeros included)
  uint64_t file_bytes = 0;
  uint64_t dense_bytes = 0;   // what the weights would take dense in the output dtype
  uint64_t weight_bytes = 0;  // what they take as written (2:4 values + metadata)
  std::vector<LinearReport> linears;
  // Per decoder layer: sqrt(sum dropped^2 / sum ||W||^2) over its pruned linears.
  std::vector<double> layer_relative_error;
};

// (tensors done, tensors total, name of the tensor just written, bytes written so far, bytes total)
using ConvertProgress = std::function<void(size_t, size_t, const std::string&, uint64_t, uint64_t)>;

// Throws Error(InvalidArgument) for bad options (wanda without norms, sparsegpt without a pruned
// weight for every decoder linear or in another dtype, unknown sparsity, 2:4 with neuron_major),
// and Error(UnsupportedShape) for a source model that is already 2:4. The output is atomic. A
// source's activation profile and predictors (profile.*, predictor.* tensors and metadata) are
// carried over, permuted with the neurons when the order changes. A neuron-major source can be
// converted back to row-major (original neuron order) or re-ordered.
ConvertReport convert_to_sf(const Model& source, const std::string& output,
                            const ConvertOptions& opt, const ConvertProgress& progress = {});

// Every decoder linear weight pruned to 2:4 as convert_to_sf would write it (opt.method and its
// norms; SparseGPT's opt.pruned as they are), dense in the output dtype: the candidates a mixed
// plan (model/sensitivity.hpp) measures.
std::map<std::string, PrunedWeight> prune_linears(const Model& source, const ConvertOptions& opt);

}  // namespace sf::model
