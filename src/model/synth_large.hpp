// Synthetic checkpoints with the shapes of published models (OPT 125m .. 30b, Llama 2 7B / 13B,
// Llama 3 8B, Mistral 7B, Qwen2 7B, SmolLM2 135M), written as an HF directory by streaming: one
// tensor at a time, generated in parallel in 64 MiB pieces and appended to model.safetensors, so a
// 30B model (60 GB in fp16) never needs its size in RAM and the file appears only when complete
// (AtomicFile). Weights are uniform with the standard deviation of HF's initialisation (0.02), norm
// scales 1 +- 0.1: random, finite activations, no claim of realistic statistics. `sparseflow
// convert` turns the directory into a .sf like any other checkpoint; Model::open(dir, "2:4") prunes
// it in memory.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "core/dtype.hpp"
#include "model/weights.hpp"

namespace sf::model {

// A published model's shape: its architecture's preset (arch::preset) with the sizes and the few
// settings its config.json changes. The tokenizer is the built-in one extended to `vocab` ids.
struct LargeShape {
  std::string_view name, arch;
  int64_t vocab, hidden, layers, heads, kv_heads, ffn, max_positions;
  double rope_theta = 0;  // 0: the preset's
  bool tied = false;
  int64_t sliding_window = 0;
  double norm_eps = 0;  // 0: the preset's
};
// From the published config.json files (facebook/opt-*, meta-llama/Llama-2-7b-hf, -13b-hf,
// Meta-Llama-3-8B, mistralai/Mistral-7B-v0.1, Qwen/Qwen2-7B, HuggingFaceTB/SmolLM2-135M).
inline constexpr LargeShape kLargeShapes[] = {
    {"opt-125m", "opt", 50272, 768, 12, 12, 12, 3072, 2048, 0, true},
    {"opt-1.3b", "opt", 50272, 2048, 24, 32, 32, 8192, 2048, 0, true},
    {"opt-2.7b", "opt", 50272, 2560, 32, 32, 32, 10240, 2048, 0, true},
    {"opt-6.7b", "opt", 50272, 4096, 32, 32, 32, 16384, 2048, 0, true},
    {"opt-13b", "opt", 50272, 5120, 40, 40, 40, 20480, 2048, 0, true},
    {"opt-30b", "opt", 50272, 7168, 48, 56, 56, 28672, 2048, 0, true},
    {"smollm2-135m", "llama", 49152, 576, 30, 9, 3, 1536, 8192, 100000, true, 0, 1e-5},
    {"llama-2-7b", "llama", 32000, 4096, 32, 32, 32, 11008, 4096, 10000, false, 0, 1e-5},
    {"llama-2-13b", "llama", 32000, 5120, 40, 40, 40, 13824, 4096, 10000, false, 0, 1e-5},
    {"llama-3-8b", "llama", 128256, 4096, 32, 32, 8, 14336, 8192, 500000, false, 0, 1e-5},
    {"mistral-7b", "mistral", 32000, 4096, 32, 32, 8, 14336, 32768, 10000, false, 4096, 1e-5},
    {"qwen2-7b", "qwen2", 152064, 3584, 28, 28, 4, 18944, 32768, 1000000, false, 0, 1e-6},
};
const LargeShape* find_large_shape(std::string_view name);  // null when unknown
// The shape's model description (sizes, KV heads, rope theta, tying, window).
arch::ModelDesc large_config(const LargeShape& s);
// "opt-125m, ..., qwen2-7b", for help texts and errors.
std::string large_shape_names();

// Writes dir/{config.json, model.safetensors, vocab.json, merges.txt}. Same arch, seed and dtype:
// the same bytes on every machine (the thread count does not change the values).
arch::ModelDesc write_large_hf(const std::string& dir, std::string_view arch, uint64_t seed,
                               DType dtype);

// The same weights written straight into a .sf file (`synth --format sf`), one tensor in memory at
// a time (the largest, the embeddings: 0.7 GB for opt-30b, 1.1 GB for qwen2-7b) and no checkpoint
// in between, dense or with every decoder linear pruned to 2:4 by magnitude and compressed: the
// tensors equal those of write_large_hf followed by `sparseflow convert [--sparsity 2:4]`. Written
// to a temporary file and renamed when complete.
struct LargeSfReport {
  arch::ModelDesc config;
  uint64_t parameters = 0, file_bytes = 0;
};
LargeSfReport write_large_sf(const std::string& path, std::string_view arch, uint64_t seed,
                             DType dtype, bool sparse24);

}  // namespace sf::model
