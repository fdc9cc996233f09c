// The glue from a GGUF file to GgufTokenizerData, as the integrator writes it for the engine:
// the tokenizer.ggml.* keys of format::GgufFile into the struct.
#pragma once
#include "format/gguf.hpp"
#include "tokenizer/gguf_tokenizer.hpp"

namespace sf::tok::testing {

inline GgufTokenizerData read_gguf_tokenizer(const format::GgufFile& f) {
  GgufTokenizerData d;
  const auto int_or = [&](const char* key, int64_t fallback) {
    const format::GgufValue* v = f.find(key);
    return v ? v->as_int() : fallback;
  };
  const auto bool_or = [&](const char* key, bool fallback) {
    const format::GgufValue* v = f.find(key);
    return v ? v->as_bool() : fallback;
  };
  d.model = f.get("tokenizer.ggml.model").as_string();
  if (const auto* v = f.find("tokenizer.ggml.pre")) d.pre = v->as_string();
  d.tokens = f.get("tokenizer.ggml.tokens").as_string_array();
  if (const auto* v = f.find("tokenizer.ggml.scores")) {
    for (double s : v->as_float_array()) d.scores.push_back(static_cast<float>(s));
  }
  if (const auto* v = f.find("tokenizer.ggml.token_type")) {
    for (int64_t t : v->as_int_array()) d.token_types.push_back(static_cast<int32_t>(t));
  }
  if (const auto* v = f.find("tokenizer.ggml.merges")) d.merges = v->as_string_array();
  d.bos = int_or("tokenizer.ggml.bos_token_id", -1);
  d.eos = int_or("tokenizer.ggml.eos_token_id", -1);
  d.unk = int_or("tokenizer.ggml.unknown_token_id", -1);
  d.pad = int_or("tokenizer.ggml.padding_token_id", -1);
  d.add_bos = bool_or("tokenizer.ggml.add_bos_token", d.model == "llama");
  d.add_eos = bool_or("tokenizer.ggml.add_eos_token", false);
  d.add_space_prefix = bool_or("tokenizer.ggml.add_space_prefix", false);
  return d;
}

}  // namespace sf::tok::testing
