// Synthetic checkpoints with the shapes of the published OPT models (opt-125m ... opt-30b), written
// as an HF directory by streaming: one tensor at a time, generated in parallel in 64 MiB pieces and
// appended to model.safetensors, so a 30B model (60 GB in fp16) never needs its size in RAM and the
// file appears only when complete (AtomicFile). Weights are uniform with the standard deviation of
// HF's OPT initialisation (0.02), layer-norm scales 1 +- 0.1: random, finite activations, no
// claim of realistic statistics. `sparseflow convert` turns the directory into a .sf like any
// other checkpoint; Model::open(dir, "2:4") prunes it in memory.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "core/dtype.hpp"
#include "model/weights.hpp"

namespace sf::model {

struct LargeOptShape {
  std::string_view name;
  int64_t hidden, layers, heads, ffn;
};
// From the published configs (facebook/opt-*): vocab 50272, 2048 positions, pre-layernorm, ReLU.
inline constexpr LargeOptShape kLargeOptShapes[] = {
    {"opt-125m", 768, 12, 12, 3072},   {"opt-1.3b", 2048, 24, 32, 8192}, {"opt-2.7b", 2560, 32, 32, 10240},
    {"opt-6.7b", 4096, 32, 32, 16384}, {"opt-13b", 5120, 40, 40, 20480}, {"opt-30b", 7168, 48, 56, 28672},
};
const LargeOptShape* find_large_opt_shape(std::string_view name);  // null when unknown

// Writes dir/{config.json, model.safetensors, vocab.json, merges.txt}. Same arch, seed and dtype:
// the same bytes on every machine (the thread count does not change the values).
arch::ModelDesc write_large_opt_hf(const std::string& dir, std::string_view arch, uint64_t seed, DType dtype);

// The same weights written straight into a .sf file (`synth --format sf`), one tensor in memory at a
// time (the largest, the embeddings: 0.7 GB for opt-30b) and no checkpoint in between, dense or with
// every decoder linear pruned to 2:4 by magnitude and compressed: the tensors equal those of
// write_large_opt_hf followed by `sparseflow convert [--sparsity 2:4]`. Written to a temporary file
// and renamed when complete.
struct LargeSfReport {
  arch::ModelDesc config;
  uint64_t parameters = 0, file_bytes = 0;
};
LargeSfReport write_large_opt_sf(const std::string& path, std::string_view arch, uint64_t seed, DType dtype,
                                 bool sparse24);

}  // namespace sf::model
