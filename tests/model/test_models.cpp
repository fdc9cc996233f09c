#include "test_models.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string_view>

namespace sf::test {

namespace {

// splitmix64: fast, seedable, identical everywhere; Box-Muller for normals.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double(next() >> 11) + 0.5) * 0x1.0p-53; }
  float normal() {
    return float(std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()));
  }
};

std::vector<float> randn(Rng& r, int64_t n, float std, float mean = 0.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = mean + std * r.normal();
  return v;
}

}  // namespace

void MemModel::add_dense(const std::string& name, DType dtype, std::vector<int64_t> shape,
                         const std::vector<float>& values) {
  auto buf = std::shared_ptr<uint8_t[]>(new uint8_t[values.size() * dtype_size(dtype)]);
  for (size_t i = 0; i < values.size(); ++i) store_from_float(buf.get(), dtype, i, values[i]);
  keep_alive_.push_back(std::shared_ptr<void>(buf, buf.get()));
  dense_[name] = model::Tensor{dtype, std::move(shape), buf.get()};
}

std::vector<float> MemModel::values(const std::string& name) const {
  if (auto it = sparse_.find(name); it != sparse_.end()) {
    const auto& c = it->second;
    std::vector<uint8_t> raw(size_t(c.rows * c.cols) * dtype_size(c.dtype));
    s24::decompress(c, raw.data());
    std::vector<float> out(size_t(c.rows * c.cols));
    for (size_t i = 0; i < out.size(); ++i) out[i] = load_as_float(raw.data(), c.dtype, i);
    return out;
  }
  const auto& t = dense_.at(name);
  std::vector<float> out(size_t(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_as_float(t.data, t.dtype, i);
  return out;
}

std::unique_ptr<MemModel> MemModel::densified() const {
  auto d = densified(static_cast<const model::Model&>(*this));
  d->keep_alive_.insert(d->keep_alive_.end(), keep_alive_.begin(), keep_alive_.end());
  return d;
}

std::unique_ptr<MemModel> MemModel::densified(const model::Model& m) {
  auto d = std::make_unique<MemModel>();
  d->config_ = m.config();
  d->dtype_ = m.dtype();
  d->vocab_json_ = m.vocab_json();
  d->merges_txt_ = m.merges_txt();
  d->dense_ = m.dense_tensors();
  for (const auto& [name, c] : m.sparse_tensors()) {
    auto buf =
        std::shared_ptr<uint8_t[]>(new uint8_t[size_t(c.rows * c.cols) * dtype_size(c.dtype)]);
    s24::decompress(c, buf.get());
    d->keep_alive_.push_back(std::shared_ptr<void>(buf, buf.get()));
    d->dense_[name] = model::Tensor{c.dtype, {c.rows, c.cols}, buf.get()};
  }
  return d;
}

std::vector<std::string> MemModel::linear_prefixes() const {
  std::vector<std::string> out;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l)
    for (const std::string& n : config_.layer_linears()) out.push_back(config_.layer_prefix(l) + n);
  return out;
}

arch::ModelDesc tiny_config() {
  arch::ModelDesc c = arch::preset("opt");
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.ffn_dim = 64;
  c.num_attention_heads = 4;
  c.max_position_embeddings = 40;
  c.word_embed_proj_dim = 32;
  arch::complete(c);
  return c;
}

arch::ModelDesc opt125m_config() {
  arch::ModelDesc c = arch::preset("opt");
  c.vocab_size = 50272;
  c.hidden_size = 768;
  c.num_hidden_layers = 12;
  c.ffn_dim = 3072;
  c.num_attention_heads = 12;
  c.max_position_embeddings = 2048;
  c.word_embed_proj_dim = 768;
  arch::complete(c);
  return c;
}

namespace {

arch::ModelDesc tiny(std::string_view arch, int64_t hidden, int64_t heads, int64_t kv_heads,
                     int64_t ffn) {
  arch::ModelDesc c = arch::preset(arch);
  c.vocab_size = 96;
  c.hidden_size = hidden;
  c.num_hidden_layers = 2;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.ffn_dim = ffn;
  c.max_position_embeddings = 64;
  return c;
}

}  // namespace

arch::ModelDesc tiny_llama_config() {
  arch::ModelDesc c = tiny("llama", 512, 8, 2, 384);
  arch::complete(c);
  return c;
}

arch::ModelDesc tiny_qwen2_config() {
  arch::ModelDesc c = tiny("qwen2", 256, 4, 2, 192);
  c.tie_word_embeddings = true;
  c.rope.theta = 1e6;
  arch::complete(c);
  return c;
}

arch::ModelDesc tiny_mistral_config() {
  arch::ModelDesc c = tiny("mistral", 128, 4, 2, 256);
  c.head_dim = 64;  // q_dim 256, twice the hidden size
  c.sliding_window = 48;
  arch::complete(c);
  return c;
}

arch::ModelDesc tiny_gpt2_config() {
  arch::ModelDesc c = tiny("gpt2", 128, 2, 2, 256);
  c.bos_token_id = c.eos_token_id = 95;  // GPT-2's 50256 is outside the tiny vocabulary
  arch::complete(c);
  return c;
}

std::unique_ptr<MemModel> random_model(const RandomSpec& spec) {
  arch::ModelDesc c = spec.config;
  arch::complete(c);  // the variants edit sizes after the tiny configs
  auto m = std::make_unique<MemModel>();
  m->set_config(c);
  m->set_dtype(spec.dtype);
  Rng r{spec.seed};
  const DType dt = spec.dtype;
  const arch::TensorNames& nm = c.names;
  for (const arch::ExpectedTensor& t : arch::expected_tensors(c, !c.tie_word_embeddings)) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    const bool is_bias = t.name.size() > 5 && t.name.compare(t.name.size() - 5, 5, ".bias") == 0;
    std::vector<float> v;
    if (t.name == nm.embed + ".weight" || t.name == nm.lm_head + ".weight")
      v = randn(r, n, spec.embed_std);
    else if (!nm.positions.empty() && t.name == nm.positions + ".weight")
      v = randn(r, n, 0.5f);
    else if (is_bias)
      v = randn(r, n, 0.1f);
    else if (t.shape.size() == 1)  // a norm's weight
      v = randn(r, n, 0.1f, 1.0f);
    else
      v = randn(r, n, 1.0f / std::sqrt(float(t.shape[1])));
    if (spec.sparse24 && t.prunable) {
      // Round to the storage dtype first so the mask is chosen on the values actually stored.
      const int64_t out = t.shape[0], in = t.shape[1];
      std::vector<uint8_t> raw(v.size() * dtype_size(dt));
      for (size_t i = 0; i < v.size(); ++i) store_from_float(raw.data(), dt, i, v[i]);
      const s24::MatrixView view{raw.data(), dt, out, in};
      s24::apply_mask(raw.data(), dt, out, in, s24::magnitude_mask(view));
      m->add_sparse(t.name, s24::compress(view));
    } else {
      m->add_dense(t.name, dt, t.shape, v);
    }
  }
  return m;
}

std::unique_ptr<MemModel> random_opt(const RandomSpec& spec) {
  if (spec.config.arch != "opt")
    throw std::runtime_error("random_opt: the config is " + spec.config.arch +
                             "; use random_model");
  return random_model(spec);
}

std::vector<double> reference_forward(const MemModel& m, const std::vector<int32_t>& tokens,
                                      std::map<std::string, std::vector<double>>* inputs) {
  const auto& c = m.config();
  const int64_t n = int64_t(tokens.size()), H = c.hidden_size, F = c.ffn_dim,
                E = c.word_embed_proj_dim, V = c.vocab_size, nh = c.num_attention_heads,
                hd = H / nh;
  const std::string d = "model.decoder.";
  auto get = [&](const std::string& name) {
    auto f = m.values(name);
    return std::vector<double>(f.begin(), f.end());
  };
  // y[n, out] = x[n, in] W^T + b
  auto lin = [&](const std::string& prefix, const std::vector<double>& x, int64_t in, int64_t out) {
    if (inputs) (*inputs)[prefix] = x;
    const auto w = get(prefix + ".weight");
    std::vector<double> b(size_t(out), 0.0);
    if (m.find(prefix + ".bias")) b = get(prefix + ".bias");
    std::vector<double> y(size_t(n * out));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double s = b[size_t(o)];
        for (int64_t k = 0; k < in; ++k) s += x[size_t(i * in + k)] * w[size_t(o * in + k)];
        y[size_t(i * out + o)] = s;
      }
    return y;
  };
  auto ln = [&](const std::string& prefix, const std::vector<double>& x) {
    std::vector<double> w(size_t(H), 1.0), b(size_t(H), 0.0);
    if (c.norm_affine) {
      w = get(prefix + ".weight");
      b = get(prefix + ".bias");
    }
    std::vector<double> y(x.size());
    for (int64_t i = 0; i < n; ++i) {
      double mean = 0, var = 0;
      for (int64_t j = 0; j < H; ++j) mean += x[size_t(i * H + j)];
      mean /= double(H);
      for (int64_t j = 0; j < H; ++j) var += std::pow(x[size_t(i * H + j)] - mean, 2);
      var /= double(H);
      for (int64_t j = 0; j < H; ++j)
        y[size_t(i * H + j)] =
            (x[size_t(i * H + j)] - mean) / std::sqrt(var + 1e-5) * w[size_t(j)] + b[size_t(j)];
    }
    return y;
  };

  const auto emb_table = get(d + "embed_tokens.weight");
  const auto pos_table = get(d + "embed_positions.weight");
  std::vector<double> e(size_t(n * E));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < E; ++j)
      e[size_t(i * E + j)] = emb_table[size_t(tokens[size_t(i)] * E + j)];
  std::vector<double> h = E != H ? lin(d + "project_in", e, E, H) : e;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < H; ++j) h[size_t(i * H + j)] += pos_table[size_t((i + 2) * H + j)];

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = d + "layers." + std::to_string(l) + ".";
    std::vector<double> res = h;
    std::vector<double> x = c.pre_norm ? ln(p + "self_attn_layer_norm", h) : h;
    auto q = lin(p + "self_attn.q_proj", x, H, H);
    auto k = lin(p + "self_attn.k_proj", x, H, H);
    auto v = lin(p + "self_attn.v_proj", x, H, H);
    for (auto& e2 : q) e2 *= 1.0 / std::sqrt(double(hd));
    std::vector<double> a(size_t(n * H), 0.0);
    for (int64_t hh = 0; hh < nh; ++hh)
      for (int64_t i = 0; i < n; ++i) {
        std::vector<double> s(size_t(i + 1));
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double t = 0;
          for (int64_t cc = 0; cc < hd; ++cc)
            t += q[size_t(i * H + hh * hd + cc)] * k[size_t(j * H + hh * hd + cc)];
          s[size_t(j)] = t;
          mx = std::max(mx, t);
        }
        double sum = 0;
        for (auto& t : s) sum += (t = std::exp(t - mx));
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t cc = 0; cc < hd; ++cc)
            a[size_t(i * H + hh * hd + cc)] += s[size_t(j)] / sum * v[size_t(j * H + hh * hd + cc)];
      }
    auto o = lin(p + "self_attn.out_proj", a, H, H);
    for (size_t i = 0; i < h.size(); ++i) h[i] = res[i] + o[i];
    if (!c.pre_norm) h = ln(p + "self_attn_layer_norm", h);
    res = h;
    x = c.pre_norm ? ln(p + "final_layer_norm", h) : h;
    auto f1 = lin(p + "fc1", x, H, F);
    for (auto& t : f1) t = std::max(t, 0.0);
    auto f2 = lin(p + "fc2", f1, F, H);
    for (size_t i = 0; i < h.size(); ++i) h[i] = res[i] + f2[i];
    if (!c.pre_norm) h = ln(p + "final_layer_norm", h);
  }
  if (c.pre_norm) h = ln(d + "final_layer_norm", h);
  if (E != H) h = lin(d + "project_out", h, H, E);
  const auto head = get(c.tie_word_embeddings ? d + "embed_tokens.weight" : "lm_head.weight");
  std::vector<double> logits(size_t(n * V));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < V; ++t) {
      double s = 0;
      for (int64_t j = 0; j < E; ++j) s += h[size_t(i * E + j)] * head[size_t(t * E + j)];
      logits[size_t(i * V + t)] = s;
    }
  return logits;
}

double rel_l2(const std::vector<float>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) throw std::runtime_error("rel_l2: size mismatch");
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  return rel_l2(a, std::vector<double>(b.begin(), b.end()));
}

}  // namespace sf::test
