// A loaded model: its description (arch/model_desc.hpp), tokenizer files and weights, whether it came from a `.sf`
// file (memory-mapped) or a Hugging Face checkpoint directory (converted in memory).
// Tensor names are Hugging Face's ("model.decoder.layers.0.self_attn.q_proj.weight", ...), with the
// "model." prefix always present (checkpoints saved without it are normalised on load).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "arch/model_desc.hpp"
#include "core/dtype.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::model {

struct OpenOptions {
  std::string sparsity = "none";  // HF directories: "none" or "2:4" (magnitude pruning in memory)
  std::optional<DType> dtype;     // HF directories: convert float tensors to this type (default: as stored)
  bool verify_checksums = true;   // .sf files: xxh64 of every tensor on open
  std::string config_path;        // HF directories and bare .pt files: config.json to use instead of the one beside them
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

// One decoder layer's FFN stored neuron-major (tensor kind "ffn_neurons", docs/FORMAT.md): neuron
// b's fc1 row, fc2 column and fc1 bias in one bundle of `stride` bytes (format/neuron_bundles.hpp
// gives the layout). Views into the .sf mapping. fc2's bias stays a dense tensor.
struct NeuronMajorFfn {
  DType dtype = DType::F16;
  int64_t ffn = 0, hidden = 0;
  uint64_t stride = 0;
  const uint8_t* bundles = nullptr;    // [ffn, stride] bytes
  const int32_t* order = nullptr;      // [ffn] bundle position -> original neuron index
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
  // `path` is a .sf file, an HF checkpoint directory, a GGUF file (dequantized into
  // OpenOptions::dtype, fp16 by default), or a bare torch.save() state dict (model.pt, with
  // config.json beside it). Throws sf::Error with a message naming
  // what is missing or damaged. `sparsity` applies only to HF directories ("none" or "2:4",
  // magnitude pruning in memory).
  static std::unique_ptr<Model> open(const std::string& path, const std::string& sparsity = "none");
  static std::unique_ptr<Model> open(const std::string& path, const OpenOptions& options);

  const arch::ModelDesc& config() const { return config_; }
  // The tokenizer the model carries: an HF tokenizer.json (every Llama-family model, GGUF
  // conversions), or GPT-2's vocab.json + merges.txt (OPT checkpoints); empty when it has none.
  const std::string& tokenizer_json() const { return tokenizer_json_; }
  // tokenizer_config.json beside tokenizer.json (special tokens, add_bos_token); may be empty.
  const std::string& tokenizer_config_json() const { return tokenizer_config_json_; }
  // The bytes of tokenizer.model (a SentencePiece model) of an HF directory that has no
  // tokenizer.json; empty otherwise. Turned into a tokenizer.json where a tokenizer is made
  // (tok::tokenizer_json_from_spm, as transformers converts it), so that an unsupported one
  // fails only what needs the tokenizer.
  const std::string& tokenizer_model() const { return tokenizer_model_; }
  const std::string& vocab_json() const { return vocab_json_; }
  const std::string& merges_txt() const { return merges_txt_; }
  // The model's chat template (Jinja source from tokenizer_config.json or the GGUF metadata) and
  // the special-token strings it refers to; empty for base models.
  const std::string& chat_template() const { return chat_template_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  // Throws Error(NotFound) naming the tensor.
  const Tensor& tensor(const std::string& name) const;
  const Tensor* find(const std::string& name) const;
  // prefix like "model.decoder.layers.3.fc1": weight (dense or 2:4) + bias.
  Linear linear(const std::string& prefix) const;
  // The output projection: lm_head.weight when untied, embed_tokens otherwise.
  const Tensor& lm_head() const;
  DType dtype() const { return dtype_; }  // element type of the linear weights
  bool is_sparse() const { return !sparse_.empty(); }
  // Layers whose FFN the file stores neuron-major (no fc1/fc2 tensors then); null for others.
  const NeuronMajorFfn* ffn_neurons(int64_t layer) const;
  bool is_neuron_major() const { return !ffn_neurons_.empty(); }
  // Where the model came from and how: "sf" or "hf"; for .sf files the header's metadata object
  // (converter version, sparsity, method, source, ...), for HF directories a few derived keys.
  const std::string& source_format() const { return source_format_; }
  const nlohmann::json& metadata() const { return metadata_; }
  const std::map<std::string, Tensor>& dense_tensors() const { return dense_; }
  const std::map<std::string, s24::Compressed>& sparse_tensors() const { return sparse_; }

 protected:
  arch::ModelDesc config_;
  std::string tokenizer_json_, tokenizer_config_json_, tokenizer_model_, vocab_json_, merges_txt_;
  std::string chat_template_, bos_token_, eos_token_;
  DType dtype_ = DType::F16;
  std::string source_format_;
  nlohmann::json metadata_ = nlohmann::json::object();
  std::map<std::string, Tensor> dense_;
  std::map<std::string, s24::Compressed> sparse_;  // key: "...weight" names of 2:4 linears
  std::map<int64_t, NeuronMajorFfn> ffn_neurons_;  // key: layer index
  std::vector<std::shared_ptr<void>> keep_alive_;  // mmaps and buffers backing the views
  friend class ModelBuilder;
};

// ---- helpers shared by the loaders, `convert` and `synth` ----------------------------------
// A copy of a float tensor's elements in `dtype` (exact when widening; round to nearest even when
// narrowing). Throws Error(UnsupportedShape) for non-float tensors.
std::vector<uint8_t> convert_elements(const Tensor& t, DType dtype);

struct Pruned {
  s24::Compressed compressed;
  double relative_error = 0;  // ||W - W_2:4||_F / ||W||_F, fp64, measured in the output dtype
  double norm_sq = 0, dropped_sq = 0;  // ||W||_F^2 and ||W - W_2:4||_F^2 (to aggregate per layer)
};
// Prunes a dense [out, in] weight to 2:4 along `in` and compresses it, in `dtype`. With an empty
// act_norm the mask is magnitude; otherwise Wanda (|w| * act_norm[in]), act_norm has `in` entries.
Pruned prune_24(const Tensor& w, DType dtype, std::span<const float> act_norm = {});

}  // namespace sf::model
