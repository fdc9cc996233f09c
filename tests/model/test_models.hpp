// Models built in memory for the model tests and the decode benchmark: random weights of any
// architecture the model description covers (OPT, Llama, Mistral, Qwen2, GPT-2), any shape and
// dtype, dense or 2:4-pruned (magnitude), plus a straightforward fp64 reference forward of OPT.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/weights.hpp"

namespace sf::test {

class MemModel : public model::Model {
 public:
  void set_config(const arch::ModelDesc& c) { config_ = c; }
  void set_dtype(DType t) { dtype_ = t; }
  // Stores `values` converted to `dtype` under `name`.
  void add_dense(const std::string& name, DType dtype, std::vector<int64_t> shape,
                 const std::vector<float>& values);
  void add_sparse(const std::string& name, s24::Compressed c) { sparse_[name] = std::move(c); }
  // A dense copy: every 2:4 weight decompressed, everything else shared.
  std::unique_ptr<MemModel> densified() const;
  // The same for any model (e.g. one from Model::open), which must outlive the copy.
  static std::unique_ptr<MemModel> densified(const model::Model& m);
  // Every dense tensor's values as fp32 (what a 2:4 weight decompresses to, for 2:4 ones).
  std::vector<float> values(const std::string& name) const;
  // The decoder linears in the order the layers run them: "model.decoder.layers.0.fc1", ...
  std::vector<std::string> linear_prefixes() const;
};

struct RandomSpec {
  arch::ModelDesc config;
  DType dtype = DType::F16;
  bool sparse24 = false;  // magnitude-prune and compress every decoder linear
  uint64_t seed = 1;
  float embed_std = 0.5f;  // scales chosen so logits spread over a few units (far from uniform)
};
// Every tensor arch::expected_tensors(config) lists (lm_head only when untied), random: token
// embeddings and an untied lm_head N(0, embed_std), learned positions N(0, 0.5), norm weights
// N(1, 0.1), biases N(0, 0.1), linear weights N(0, 1 / in). The config is completed first
// (arch::complete), so a preset with sizes is enough.
std::unique_ptr<MemModel> random_model(const RandomSpec& spec);
// random_model for an OPT config (the name the OPT tests use).
std::unique_ptr<MemModel> random_opt(const RandomSpec& spec);

// n token ids in [0, vocab), a fixed sequence for a seed (a linear congruential generator).
inline std::vector<int32_t> some_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint32_t s = seed;
  for (auto& e : t) {
    s = s * 1664525u + 1013904223u;
    e = int32_t((s >> 8) % uint32_t(vocab));
  }
  return t;
}

// Tiny configs of the other architectures, every size a multiple of 16 so dense and 2:4 products,
// the GEMV and the attention kernels all take them (head_dim 64, what the fused prefill attention
// supports): 2 layers, vocab 96, 64 positions.
//   llama:   hidden 512, 8 heads / 2 KV heads (GQA), SwiGLU 384, RMSNorm, rope, untied
//   qwen2:   hidden 256, 4 heads / 2 KV heads, SwiGLU 192, q/k/v biases, tied embeddings
//   mistral: hidden 128, 4 heads of 64 (q_dim 256 != hidden), 2 KV heads, SwiGLU 256, sliding
//            window 48
//   gpt2:    hidden 128, 2 heads, GELU-tanh MLP 256, learned positions from row 0, tied
arch::ModelDesc tiny_llama_config();
arch::ModelDesc tiny_qwen2_config();
arch::ModelDesc tiny_mistral_config();
arch::ModelDesc tiny_gpt2_config();

// A tiny config: hidden 32, 2 layers, 4 heads, ffn 64, vocab 61, 40 positions.
arch::ModelDesc tiny_config();
// OPT-125m's shapes: hidden 768, 12 layers, 12 heads, ffn 3072, vocab 50272, 2048 positions.
arch::ModelDesc opt125m_config();

// Reference forward in fp64 with plain loops, written from HF's modeling_opt.py independently of
// src/model/cpu_engine.cpp. Returns logits [tokens, vocab]. When `inputs` is given it receives each
// decoder linear's input ([tokens, in] row-major) by prefix.
std::vector<double> reference_forward(const MemModel& m, const std::vector<int32_t>& tokens,
                                      std::map<std::string, std::vector<double>>* inputs = nullptr);

// ||a - b|| / ||b||
double rel_l2(const std::vector<float>& a, const std::vector<double>& b);
double rel_l2(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace sf::test
