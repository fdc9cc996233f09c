// Models built in memory for the model tests and the decode benchmark: random OPT weights of any
// shape and dtype, dense or 2:4-pruned (magnitude), plus a straightforward fp64 reference forward.
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
  std::vector<std::string> linear_prefixes()
      const;  // decoder linears, "model.decoder.layers.0.fc1", ...
};

struct RandomSpec {
  arch::ModelDesc config;
  DType dtype = DType::F16;
  bool sparse24 = false;  // magnitude-prune and compress every decoder linear
  uint64_t seed = 1;
  float embed_std = 0.5f;  // scales chosen so logits spread over a few units (far from uniform)
};
std::unique_ptr<MemModel> random_opt(const RandomSpec& spec);

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
