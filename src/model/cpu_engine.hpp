// The OPT forward pass on the CPU: fp32 activations, weights read in their stored dtype (fp16,
// bf16 or fp32; dense or 2:4-compressed), fp32 accumulation, OpenMP threads inside every stage.
// Semantics follow Hugging Face's modeling_opt.py (OPTForCausalLM, eval mode, one sequence, no
// padding): learned positions at index + 2, q scaled by head_dim^-0.5 after its bias, causal
// softmax in fp32, pre- or post-layernorm, final_layer_norm only with do_layer_norm_before,
// project_in/out when word_embed_proj_dim != hidden_size.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/weights.hpp"

namespace sf::model {

// Keys and values of every layer for one sequence. Positions [0, length) are filled.
struct KvCache {
  int64_t layers = 0, capacity = 0, hidden = 0;
  int64_t length = 0;
  std::vector<float> k, v;  // [layers, capacity, hidden]: row p is k_proj/v_proj of token p

  KvCache() = default;
  KvCache(const OptConfig& c, int64_t capacity_tokens);
  float* key(int64_t layer, int64_t pos) { return k.data() + (layer * capacity + pos) * hidden; }
  float* value(int64_t layer, int64_t pos) { return v.data() + (layer * capacity + pos) * hidden; }
  void clear() { length = 0; }
};

// Called with the input of every linear layer of the decoder (not lm_head) as it runs:
// prefix like "model.decoder.layers.3.fc1", x = [rows, in_features] fp32.
using LinearInputObserver = std::function<void(const std::string& prefix, const float* x,
                                               int64_t rows, int64_t in_features)>;

// Called once per decoder layer while set (profile, calibrate): the layer's attention input (what
// q_proj reads: LN1(h) for pre-LN models, h for post-LN) and its fc1 output before the activation.
// Neuron index = bundle position for neuron-major layers (the same as fc1 row otherwise).
struct FfnObservation {
  int64_t layer = 0, rows = 0, hidden = 0, ffn = 0;
  int64_t position = 0;             // position of row 0 in the sequence
  const float* attn_in = nullptr;   // [rows, hidden]
  float* pre_act = nullptr;         // [rows, ffn]; the observer may change it (the activation runs after)
};
using FfnObserver = std::function<void(const FfnObservation&)>;

class OptCpu {
 public:
  // Checks every tensor the forward pass needs (names, shapes) up front and throws sf::Error naming
  // the first one that is missing or has the wrong shape. The model must outlive this object.
  explicit OptCpu(const Model& model);

  const OptConfig& config() const { return cfg_; }
  const Model& model() const { return model_; }
  KvCache make_cache(int64_t capacity_tokens) const { return KvCache(cfg_, capacity_tokens); }

  // Runs `tokens` at positions cache.length.. and appends their keys/values to the cache.
  // Returns logits [tokens.size(), vocab] when all_logits, else the last position's [vocab].
  // A whole prompt at once is the prefill; one token at a time is the incremental decode.
  // Throws Error(InvalidArgument) for an empty input, an id outside the vocabulary, or a sequence
  // longer than the cache or max_position_embeddings.
  std::vector<float> forward(std::span<const int32_t> tokens, KvCache& cache,
                             bool all_logits = false);

  // While set, every decoder linear's input is handed to the observer (used for Wanda norms).
  void set_observer(LinearInputObserver obs) { observer_ = std::move(obs); }
  // While set, every layer's attention input and FFN pre-activation are handed to the observer.
  // Unset, the forward pass does no extra work.
  void set_ffn_observer(FfnObserver obs) { ffn_observer_ = std::move(obs); }

 private:
  struct LayerNormW {
    std::vector<float> weight, bias;  // empty when layer_norm_elementwise_affine is false
  };
  struct Layer {
    std::string prefix;  // "model.decoder.layers.<i>."
    LayerNormW attn_ln, ffn_ln;
    Linear q, k, v, out, fc1, fc2;  // fc1, fc2 unset when the layer is neuron-major
    const NeuronMajorFfn* neurons = nullptr;  // the FFN as bundles (docs/FORMAT.md)
    std::vector<float> neuron_b1;             // [ffn] the bundles' fc1 biases, widened once
    const Tensor* fc2_bias = nullptr;         // [hidden] b2 of a neuron-major layer
  };
  void linear(const Linear& l, const std::string& name, const float* x, int64_t rows, float* y,
              const float* residual = nullptr, bool relu = false);
  void layer_norm(const LayerNormW& ln, const float* x, float* y, int64_t rows, int64_t dim) const;
  void attention(const float* q, KvCache& cache, int64_t layer, int64_t past, int64_t n,
                 float* out) const;

  const Model& model_;
  OptConfig cfg_;
  int64_t head_dim_ = 0;
  bool has_final_ln_ = false;
  s24::Activation act_ = s24::Activation::ReLU;
  const Tensor* embed_tokens_ = nullptr;  // [vocab, word_embed_proj_dim]
  const Tensor* embed_pos_ = nullptr;     // [max_position_embeddings + 2, hidden]
  const Tensor* lm_head_ = nullptr;       // [vocab, word_embed_proj_dim]
  std::optional<Linear> project_in_, project_out_;
  LayerNormW final_ln_;
  std::vector<Layer> layers_;
  LinearInputObserver observer_;
  FfnObserver ffn_observer_;
};

// Wanda calibration statistics: runs the model over `tokens` (one sequence, split into windows of
// at most max_position_embeddings tokens) and returns, for every decoder linear layer
// ("model.decoder.layers.3.fc1", ...), the L2 norm over all tokens of each input channel:
// norm[j] = sqrt(sum_t x[t, j]^2), one entry per in_feature.
std::map<std::string, std::vector<float>> collect_activation_norms(const Model& model,
                                                                   std::span<const int32_t> tokens);

}  // namespace sf::model
