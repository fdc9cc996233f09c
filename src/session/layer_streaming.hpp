// Whole-layer streaming: how a model without neuron-level offloading (a gated MLP: SwiGLU, GeGLU)
// runs under a GPU memory budget below its size. The last layers keep their weight matrices in
// mapped host memory and the CUDA kernels read them over PCIe each token
// (model::CudaOptions::host_layers); everything else stays on the GPU. Activation sparsity for
// gated MLPs, which would fetch only the active neurons, is a later step.
#pragma once
#include <cstdint>
#include <string>

#include "arch/model_desc.hpp"
#include "model/weights.hpp"
#include "offload/offload_options.hpp"

namespace sf::session {

// True for models the neuron-level offloader does not run, which stream whole layers instead: a
// gated MLP, or a plain one whose activation is not ReLU (its sparse FFN kernels apply ReLU; a
// GELU's small negative outputs are not zeros to skip).
inline bool streams_whole_layers(const arch::ModelDesc& c) {
  return c.is_gated() || c.act != arch::Act::ReLU;
}

struct LayerStreamingPlan {
  int64_t host_layers = 0;       // the last host_layers layers' matrices live in host memory
  uint64_t layer_bytes = 0;      // one layer's weight matrices (what streams per token per layer)
  uint64_t resident_bytes = 0;   // weights on the GPU: embeddings, heads, norms, resident layers
  uint64_t kv_bytes = 0;         // the KV cache for context_tokens at batch 1
  uint64_t workspace_bytes = 0;  // activations and scratch, estimated
  std::string summary() const;   // one line for the user
};

// The fewest host layers that fit weights, KV cache and workspace into budget_bytes. Throws
// Error(OutOfMemory) naming the smallest budget that works when even all layers on the host do not
// fit. `element_bytes`: 2 for fp16/bf16 weights.
LayerStreamingPlan plan_layer_streaming(const arch::ModelDesc& c, uint64_t budget_bytes,
                                        int64_t context_tokens, int64_t element_bytes);
// The same for a model and the budget as the user gave it (a fraction is of the model's bytes).
LayerStreamingPlan plan_layer_streaming(const model::Model& m, const offload::SizeSpec& budget,
                                        int64_t context_tokens);

}  // namespace sf::session
