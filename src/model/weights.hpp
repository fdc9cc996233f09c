// A loaded OPT model: its configuration, tokenizer files and weights, whether it came from a `.sf`
// file (memory-mapped) or a Hugging Face checkpoint directory (converted in memory).
// Tensor names are Hugging Face's ("model.decoder.layers.0.self_attn.q_proj.weight", ...), with the
// "model." prefix always present (checkpoints saved without it are normalised on load).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::model {

// The fields of an HF OPTConfig that the forward pass uses.
struct OptConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t ffn_dim = 0;
  int64_t num_attention_heads = 0;
  int64_t max_position_embeddings = 0;
  int64_t word_embed_proj_dim = 0;      // == hidden_size unless project_in/project_out exist
  bool do_layer_norm_before = true;     // false: post-layernorm (OPT-350m)
  bool enable_bias = true;
  bool layer_norm_elementwise_affine = true;
  bool tie_word_embeddings = true;      // lm_head.weight == embed_tokens.weight
  std::string activation_function = "relu";
  int64_t pad_token_id = 1, bos_token_id = 2, eos_token_id = 2;
  static constexpr int64_t kPositionOffset = 2;  // OPT's learned positions start at index 2
};

// A dense tensor view into memory owned by the Model (mmap or buffer).
struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// A linear layer y = x W^T + b; exactly one of dense / sparse is set.
struct Linear {
  const Tensor* dense = nullptr;             // [out, in]
  const s24::Compressed* sparse = nullptr;   // 2:4 along `in`
  const Tensor* bias = nullptr;              // [out] or null
  int64_t out_features = 0, in_features = 0;
};

class Model {
 public:
  // `path` is a .sf file or an HF checkpoint directory. Throws sf::Error with a message naming
  // what is missing or damaged. `sparsity` applies only to HF directories ("none" or "2:4",
  // magnitude pruning in memory).
  static std::unique_ptr<Model> open(const std::string& path, const std::string& sparsity = "none");

  const OptConfig& config() const { return config_; }
  const std::string& vocab_json() const { return vocab_json_; }
  const std::string& merges_txt() const { return merges_txt_; }
  // Throws Error(NotFound) naming the tensor.
  const Tensor& tensor(const std::string& name) const;
  const Tensor* find(const std::string& name) const;
  // prefix like "model.decoder.layers.3.fc1": weight (dense or 2:4) + bias.
  Linear linear(const std::string& prefix) const;
  // The output projection: lm_head.weight when untied, embed_tokens otherwise.
  const Tensor& lm_head() const;
  DType dtype() const { return dtype_; }  // element type of the linear weights
  bool is_sparse() const { return !sparse_.empty(); }

 protected:
  OptConfig config_;
  std::string vocab_json_, merges_txt_;
  DType dtype_ = DType::F16;
  std::map<std::string, Tensor> dense_;
  std::map<std::string, s24::Compressed> sparse_;  // key: "...weight" names of 2:4 linears
  std::vector<std::shared_ptr<void>> keep_alive_;  // mmaps and buffers backing the views
  friend class ModelBuilder;
};

}  // namespace sf::model
