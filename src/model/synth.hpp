// Synthetic OPT checkpoints with deterministic random weights: the built-in default model (no
// download needed) and the shapes of real OPT models for benchmarks. The weights are random and
// say so: config.json carries "sparseflow_synthetic" and the safetensors metadata "synthetic".
// The tokenizer is the fixture tokenizer (tests/data/tokenizer), embedded into the binary.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"
#include "model/convert.hpp"
#include "model/weights.hpp"

namespace sf::model {

// One row per architecture `sparseflow synth --arch` knows. vocab 0 = the built-in tokenizer's.
struct SynthShape {
  std::string_view name;
  int64_t hidden, layers, heads, ffn, max_positions, word_embed_proj_dim, vocab;
  bool pre_norm;
};
// The tiny shapes; the published OPT and Llama-family shapes are in synth_large.hpp.
inline constexpr SynthShape kSynthShapes[] = {
    // A model that runs anywhere in milliseconds: 2 layers, 4 heads of 16, ReLU FFN of 256.
    {"tiny", 64, 2, 4, 256, 128, 64, 0, true},
};
const SynthShape& find_synth_shape(std::string_view name);  // throws Error(InvalidArgument)

struct SynthOptions {
  std::string arch = "tiny";
  uint64_t seed = 0;
  DType dtype = DType::F16;
  float init_std = 0.02f;  // N(0, std) weights, as HF's OPT initialisation
  // Variants of the checkpoint layout (the loader's tests use every one):
  std::optional<int64_t> word_embed_proj_dim;  // != hidden adds project_in / project_out
  std::optional<bool> pre_norm;                // false: post-layernorm
  bool tie_word_embeddings = true;             // false: a separate lm_head.weight
  bool model_prefix = true;  // "model.decoder.*" (OPTForCausalLM) or "decoder.*" (OPTModel)
  int shards = 1;            // > 1: model-0000i-of-0000n.safetensors + index json
};

// The config the options describe (vocab from the built-in tokenizer when the shape says 0).
arch::ModelDesc synth_config(const SynthOptions& o);

// Writes an HF checkpoint directory (created when absent): config.json, model.safetensors (or
// shards and model.safetensors.index.json), vocab.json, merges.txt. Every file is written
// atomically. Same options and seed -> the same bytes on every machine.
arch::ModelDesc write_tiny_opt(const std::string& dir, const SynthOptions& o);

// The same model as one .sf file at `path`: the checkpoint is written into a scratch directory
// beside it (removed on every exit path, signals included) and converted with `co`.
ConvertReport write_tiny_opt_sf(const std::string& path, const SynthOptions& o,
                                const ConvertOptions& co);

// The built-in tokenizer (tests/data/tokenizer/{vocab.json,merges.txt} at build time).
std::string_view builtin_vocab_json();
std::string_view builtin_merges_txt();
// The built-in vocabulary extended to `vocab_size` ids for models with real OPT shapes (50272 ids
// against the built-in tokenizer's 1500): id i it lacks becomes the token "<|synth_i|>", which no
// merge produces (encoding is unchanged) and which decodes to that text, so the random model's
// output can be printed.
std::string synth_vocab_json(int64_t vocab_size);

}  // namespace sf::model
