// The placement planner: a pure function from a model's byte counts, its firing rates and the
// user's budgets to what lives where during offloaded decode. It allocates nothing; the CUDA
// engine follows the plan. docs/OFFLOAD.md explains the policy.
//
//   GPU:  fixed resident part (embeddings, positions, lm_head, attention, layer norms, b2,
//         predictors, KV cache, workspace)  +  per layer: hot neurons pinned  +  LRU cache slots
//   host: every bundle not pinned on the GPU, in pinned memory, or read from the .sf mmap when
//         --host-memory is smaller than they are; and, only when the budget cannot hold all the
//         attention, the q/k/v/out weight matrices of the last layers (read over PCIe every token)
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "offload/offload_options.hpp"

namespace sf::model {
class Model;
}
namespace sf::offload {

class NeuronStore;

// "6GiB", "6 GiB", "6GB" (10^9), "6000MiB", "512M" (binary), "123456" (bytes, an integer), "0.5"
// (a fraction of the model's bytes, 0 < f <= 1), "50%". Throws Error(InvalidArgument) saying what
// it accepts. `what` names the flag in messages ("--gpu-memory").
SizeSpec parse_size_spec(std::string_view text, std::string_view what);
std::string format_bytes(uint64_t bytes);  // "4.62 GiB", "310.0 MiB", "512 B"

struct PlannerInput {
  // Shapes.
  int64_t layers = 0, hidden = 0, ffn = 0;
  // Bytes of what must be resident, as stored (2:4 attention counts its compressed bytes).
  uint64_t embedding_bytes = 0;   // embed_tokens + embed_positions (+ project_in/out)
  uint64_t lm_head_bytes = 0;     // 0 when tied to embed_tokens
  uint64_t attention_bytes = 0;   // all layers: q,k,v,out weights and biases
  // Per layer [layers]: the bytes of its q,k,v,out weight matrices that may live in host memory
  // instead (biases stay). Empty: no layer's attention can move (2:4 attention, which the engine
  // keeps on the GPU).
  std::vector<uint64_t> attention_weight_bytes;
  uint64_t norm_bytes = 0;        // all layer norms
  uint64_t ffn_bias_bytes = 0;    // all layers' b2 (b1 travels inside the bundles)
  uint64_t predictor_bytes = 0;   // all layers' predictors (0: none / exact mode)
  uint64_t bundle_stride = 0;     // bytes per neuron bundle
  uint64_t kv_cache_bytes = 0;    // for the context length (2 * layers * tokens * hidden * 2 bytes)
  uint64_t workspace_bytes = 0;   // activations, logits, staging buffers
  // Per layer firing rates [layers][ffn] by bundle position (empty: no profile; uniform assumed).
  std::vector<std::span<const float>> firing_rates;
  bool bundles_in_file = false;   // the .sf stores the FFN neuron-major (so it can be mmapped)
  // Budgets.
  uint64_t gpu_budget = 0;
  double gpu_cache_ratio = 0.3;
  std::optional<uint64_t> host_limit;

  uint64_t fixed_bytes() const {
    return embedding_bytes + lm_head_bytes + attention_bytes + norm_bytes + ffn_bias_bytes + predictor_bytes +
           kv_cache_bytes + workspace_bytes;
  }
  uint64_t ffn_bytes() const { return uint64_t(layers) * uint64_t(ffn) * bundle_stride; }
  uint64_t model_bytes() const { return fixed_bytes() - kv_cache_bytes - workspace_bytes + ffn_bytes(); }
};

struct LayerPlan {
  int64_t hot = 0;          // neurons pinned on the GPU (the `hot` hottest bundle positions)
  int64_t cache_slots = 0;  // LRU slots for the rest
  double hot_coverage = 0;  // expected share of this layer's firings that hit pinned neurons
};

enum class HostPlacement { None, Pinned, Mmap };

struct Plan {
  bool whole_model_resident = false;  // every bundle fits: no offload traffic at all
  uint64_t gpu_budget = 0, fixed_bytes = 0, ffn_budget = 0, hot_bytes = 0, cache_bytes = 0;
  uint64_t min_gpu_bytes = 0;         // the smallest budget this model and context can run in
  // The last attention_host_layers layers keep their attention weights in mapped host memory: the
  // fewest that let the budget hold the rest (0 when it fits); fixed_bytes excludes them.
  int64_t attention_host_layers = 0;
  uint64_t attention_host_bytes = 0;  // those weights: read over PCIe once per decode token
  uint64_t host_bytes = 0;            // bundles that stay on the host
  HostPlacement host = HostPlacement::None;
  double expected_hit = 0;            // firing-weighted share of activations served by pinned neurons
  std::vector<LayerPlan> layers;
  PlannerInput input;                 // what it was planned from (spans not owned)
  std::string table() const;          // the human summary `--stats` and generate print
};

// Attention weights move to the host (last layer first) only when the fixed part with all of them
// plus the minimal neuron cache does not fit: resident attention comes before hot FFN neurons.
// Throws Error(InvalidArgument) when the budget cannot work even so, naming the minimum and its parts:
// "--gpu-memory 2.00 GiB is below the 4.62 GiB this model needs resident: embeddings 0.41 GiB,
// attention 4.00 GiB, ...; raise it to at least 4.63 GiB". Also when the host limit is smaller than
// the non-resident bundles and the file is not neuron-major (nothing to mmap).
Plan plan_placement(const PlannerInput& in);

// The smallest FFN cache a layer may have: twice the expected active neurons per token
// (2 * sum(firing_rate)) when profiled, else ffn/8; at least 64 slots and at most ffn.
int64_t min_cache_slots(const PlannerInput& in, int64_t layer);

// Fills the byte counts and shapes from a loaded model and its neuron store. context_tokens sizes
// the KV cache (fp16); workspace defaults to a conservative estimate when 0.
PlannerInput planner_input(const model::Model& model, const NeuronStore& store, int64_t context_tokens,
                           const OffloadOptions& opt, uint64_t workspace_bytes = 0);

}  // namespace sf::offload
