// A GGUF file (llama.cpp's format) read as a model: its metadata as a model description, its
// tensors under the description's (Hugging Face) names, dequantized, and its tokenizer and chat
// template as tokenizer.json / tokenizer_config.json text, so that a GGUF model is then the same
// thing as an HF checkpoint to everything downstream (convert, the engines, the session).
//
// Architectures: "llama" (Llama 2/3, Mistral, SmolLM2: llama.cpp writes Mistral as llama) and
// "qwen2". llama.cpp's converter interleaves the rotary halves of q_proj and k_proj rows for
// "llama" (its rope pairs adjacent elements); the rows are put back in HF's order here, as
// transformers does when it loads a GGUF.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "arch/model_desc.hpp"
#include "core/dtype.hpp"

namespace sf::model {

struct GgufTensor {
  DType dtype = DType::F16;
  std::vector<int64_t> shape;  // row-major ([out, in] for a linear weight)
  std::shared_ptr<std::vector<uint8_t>> data;
};

struct GgufModel {
  arch::ModelDesc desc;
  std::map<std::string, GgufTensor>
      tensors;  // full names ("model.layers.0.self_attn.q_proj.weight")
  std::string tokenizer_json, tokenizer_config_json, chat_template;
  std::map<std::string, std::string> types;  // tensor name -> its GGUF type ("Q4_1"), for reports
};

// Reads and dequantizes every tensor into `dtype` (F32 keeps ggml's dequantized values exactly;
// F16 and BF16 round each to nearest even). Throws Error(Format) for a damaged file,
// Error(UnsupportedShape) for an architecture or feature not implemented, naming the key.
GgufModel load_gguf(const std::string& path, DType dtype);

// Whether the file starts with GGUF's magic.
bool looks_like_gguf(const std::string& path);

}  // namespace sf::model
