#include "model/opt_cpu.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/error.hpp"
#include "offload/ffn_bundles_cpu.hpp"
#include "offload/neuron_store.hpp"

namespace sf::model {

namespace {

constexpr float kLayerNormEps = 1e-5f;  // nn.LayerNorm's default, which OPT uses
// Below this many elements of work a loop runs on one thread: a parallel region's fork and barrier
// cost microseconds (far more when cores are oversubscribed), more than the loop itself.
constexpr int64_t kParallelMinWork = 1 << 15;

std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> out(size_t(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_as_float(t.data, t.dtype, i);
  return out;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void expect_shape(const Tensor& t, const std::string& name, std::vector<int64_t> want) {
  if (t.shape != want)
    fail(Status::Format,
         "tensor {} has shape {}, expected {} from the model's config. The checkpoint and its "
         "config.json disagree: re-export the model or fix config.json.",
         name, shape_str(t.shape), shape_str(want));
  if (!dtype_is_float(t.dtype))
    fail(Status::Format, "tensor {} has dtype {}, expected a float type (F32, F16 or BF16).", name,
         dtype_name(t.dtype));
}

void expect_linear(const Linear& l, const std::string& name, int64_t out, int64_t in, bool bias) {
  if (l.out_features != out || l.in_features != in)
    fail(Status::Format, "linear {} is [{}, {}], expected [{}, {}] from the model's config.", name,
         l.out_features, l.in_features, out, in);
  if (!l.dense && !l.sparse)
    fail(Status::Format, "linear {} has no weight (neither dense nor 2:4).", name);
  if (bias && !l.bias)
    fail(Status::NotFound,
         "linear {} has no bias, but config.json says enable_bias=true. Missing tensor: "
         "{}.bias",
         name, name);
  if (l.bias) expect_shape(*l.bias, name + ".bias", {out});
}

// sum_i a[i] * b[i] in fp32; `omp simd` lets the compiler vectorize the reduction.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

}  // namespace

KvCache::KvCache(const OptConfig& c, int64_t capacity_tokens)
    : layers(c.num_hidden_layers), capacity(capacity_tokens), hidden(c.hidden_size) {
  if (capacity_tokens <= 0)
    fail(Status::InvalidArgument, "KV cache capacity must be positive, got {}", capacity_tokens);
  k.assign(size_t(layers * capacity * hidden), 0.0f);
  v.assign(size_t(layers * capacity * hidden), 0.0f);
}

OptCpu::OptCpu(const Model& model) : model_(model), cfg_(model.config()) {
  const int64_t H = cfg_.hidden_size, F = cfg_.ffn_dim, E = cfg_.word_embed_proj_dim,
                V = cfg_.vocab_size;
  if (H <= 0 || F <= 0 || V <= 0 || E <= 0 || cfg_.num_hidden_layers <= 0 ||
      cfg_.num_attention_heads <= 0 || cfg_.max_position_embeddings <= 0)
    fail(Status::Format,
         "OPT config has a non-positive size (hidden {}, ffn {}, vocab {}, word_embed_proj_dim {}, "
         "layers {}, heads {}, max_position_embeddings {}).",
         H, F, V, E, cfg_.num_hidden_layers, cfg_.num_attention_heads,
         cfg_.max_position_embeddings);
  if (H % cfg_.num_attention_heads != 0)
    fail(Status::Format, "hidden_size {} is not divisible by num_attention_heads {}.", H,
         cfg_.num_attention_heads);
  head_dim_ = H / cfg_.num_attention_heads;
  if (cfg_.activation_function == "relu")
    act_ = s24::Activation::ReLU;
  else if (cfg_.activation_function == "gelu")
    act_ = s24::Activation::GELU;
  else
    fail(Status::UnsupportedShape,
         "activation_function \"{}\" is not supported by the CPU backend; expected "
         "\"relu\" (every OPT checkpoint) or \"gelu\".",
         cfg_.activation_function);

  const std::string d = "model.decoder.";
  embed_tokens_ = &model.tensor(d + "embed_tokens.weight");
  expect_shape(*embed_tokens_, d + "embed_tokens.weight", {V, E});
  embed_pos_ = &model.tensor(d + "embed_positions.weight");
  expect_shape(*embed_pos_, d + "embed_positions.weight",
               {cfg_.max_position_embeddings + OptConfig::kPositionOffset, H});
  lm_head_ = &model.lm_head();
  expect_shape(*lm_head_, "lm_head.weight", {V, E});
  if (E != H) {
    project_in_ = model.linear(d + "project_in");
    expect_linear(*project_in_, d + "project_in", H, E, false);
    project_out_ = model.linear(d + "project_out");
    expect_linear(*project_out_, d + "project_out", E, H, false);
  }

  auto load_ln = [&](const std::string& prefix) {
    LayerNormW ln;
    if (!cfg_.layer_norm_elementwise_affine) return ln;
    const Tensor& w = model.tensor(prefix + ".weight");
    const Tensor& b = model.tensor(prefix + ".bias");
    expect_shape(w, prefix + ".weight", {H});
    expect_shape(b, prefix + ".bias", {H});
    ln.weight = to_f32(w);
    ln.bias = to_f32(b);
    return ln;
  };
  // HF builds final_layer_norm only for pre-LN models not marked _remove_final_layer_norm.
  has_final_ln_ = cfg_.has_final_layer_norm();
  if (has_final_ln_) final_ln_ = load_ln(d + "final_layer_norm");

  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    Layer L;
    L.prefix = d + "layers." + std::to_string(i) + ".";
    L.attn_ln = load_ln(L.prefix + "self_attn_layer_norm");
    L.ffn_ln = load_ln(L.prefix + "final_layer_norm");
    const std::pair<Linear*, const char*> attn[] = {{&L.q, "self_attn.q_proj"},
                                                    {&L.k, "self_attn.k_proj"},
                                                    {&L.v, "self_attn.v_proj"},
                                                    {&L.out, "self_attn.out_proj"}};
    for (auto [lin, name] : attn) {
      *lin = model.linear(L.prefix + name);
      expect_linear(*lin, L.prefix + name, H, H, cfg_.enable_bias);
    }
    if (const NeuronMajorFfn* nm = model.ffn_neurons(i)) {
      // Neuron-major: fc1 rows, fc1 biases and fc2 columns live in bundles (ffn_bundles_cpu.hpp).
      if (nm->ffn != F || nm->hidden != H)
        fail(Status::Format, "{}ffn_neurons holds {} neurons of hidden {}, expected {} of {}", L.prefix, nm->ffn,
             nm->hidden, F, H);
      L.neurons = nm;
      const auto layout = offload::BundleLayout::make(H, nm->dtype);
      L.neuron_b1.resize(size_t(F));
      for (int64_t b = 0; b < F; ++b)
        L.neuron_b1[size_t(b)] = load_as_float(nm->bundles + uint64_t(b) * nm->stride + layout.bias_offset, nm->dtype, 0);
      L.fc2_bias = model.find(L.prefix + "fc2.bias");
      if (cfg_.enable_bias && !L.fc2_bias)
        fail(Status::NotFound, "missing tensor {}fc2.bias (config.json says enable_bias=true)", L.prefix);
      if (L.fc2_bias) expect_shape(*L.fc2_bias, L.prefix + "fc2.bias", {H});
    } else {
      L.fc1 = model.linear(L.prefix + "fc1");
      expect_linear(L.fc1, L.prefix + "fc1", F, H, cfg_.enable_bias);
      L.fc2 = model.linear(L.prefix + "fc2");
      expect_linear(L.fc2, L.prefix + "fc2", H, F, cfg_.enable_bias);
    }
    layers_.push_back(std::move(L));
  }
}

void OptCpu::linear(const Linear& l, const std::string& name, const float* x, int64_t rows,
                    float* y, const float* residual, bool activate) {
  if (observer_) observer_(name, x, rows, l.in_features);
  s24::Epilogue ep;
  if (l.bias) {
    ep.bias = l.bias->data;
    ep.bias_dtype = l.bias->dtype;
  }
  if (activate) ep.act = act_;
  if (residual) {
    ep.residual = residual;
    ep.residual_dtype = DType::F32;
  }
  if (l.sparse) {
    s24::gemm_cpu(*l.sparse, x, DType::F32, rows, y, DType::F32, ep);
  } else {
    const s24::MatrixView w{l.dense->data, l.dense->dtype, l.out_features, l.in_features};
    s24::gemm_dense_cpu(w, x, DType::F32, rows, y, DType::F32, ep);
  }
}

// y = (x - mean) / sqrt(var + eps) * weight + bias per row; x may equal y. Statistics in fp64 so
// the only fp32 rounding is in the output, as close to the exact value as fp32 allows.
void OptCpu::layer_norm(const LayerNormW& ln, const float* x, float* y, int64_t rows,
                        int64_t dim) const {
#pragma omp parallel for schedule(static) if (rows > 1 && rows * dim >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double mean = 0.0, var = 0.0;
    for (int64_t j = 0; j < dim; ++j) mean += xr[j];
    mean /= double(dim);
    for (int64_t j = 0; j < dim; ++j) var += (xr[j] - mean) * (xr[j] - mean);
    var /= double(dim);  // biased, like torch
    const double inv = 1.0 / std::sqrt(var + double(kLayerNormEps));
    for (int64_t j = 0; j < dim; ++j) {
      const float norm = float((xr[j] - mean) * inv);
      yr[j] = ln.weight.empty() ? norm : norm * ln.weight[size_t(j)] + ln.bias[size_t(j)];
    }
  }
}

// Causal multi-head attention of n new queries (positions past..past+n-1) over the cached keys and
// values 0..past+n-1. q is already scaled. q, out: [n, hidden]; head h owns columns [h*d, (h+1)*d).
void OptCpu::attention(const float* q, KvCache& cache, int64_t layer, int64_t past, int64_t n,
                       float* out) const {
  const int64_t H = cfg_.hidden_size, heads = cfg_.num_attention_heads, d = head_dim_;
  const float* K = cache.key(layer, 0);
  const float* V = cache.value(layer, 0);
  const int64_t work = n * heads * (past + n) * d;  // multiply-adds of QK^T (and as many for PV)
#pragma omp parallel if (work >= kParallelMinWork)
  {
    std::vector<float> p(size_t(past + n));  // this thread's scores, then probabilities
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* qi = q + i * H + h * d;
        const int64_t len =
            past + i + 1;  // the causal mask: key j is visible iff j <= query position
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < len; ++j) {
          p[size_t(j)] = dot(qi, K + j * H + h * d, d);
          mx = std::max(mx, p[size_t(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < len; ++j) {
          p[size_t(j)] = std::exp(p[size_t(j)] - mx);
          sum += p[size_t(j)];
        }
        const float inv = 1.0f / sum;
        float* o = out + i * H + h * d;
        std::fill(o, o + d, 0.0f);
        for (int64_t j = 0; j < len; ++j) {
          const float w = p[size_t(j)] * inv;
          const float* vj = V + j * H + h * d;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) o[c] += w * vj[c];
        }
      }
    }
  }
}

std::vector<float> OptCpu::forward(std::span<const int32_t> tokens, KvCache& cache,
                                   bool all_logits) {
  const int64_t n = int64_t(tokens.size()), past = cache.length;
  const int64_t H = cfg_.hidden_size, F = cfg_.ffn_dim, E = cfg_.word_embed_proj_dim,
                V = cfg_.vocab_size;
  if (n == 0) fail(Status::InvalidArgument, "forward() got no tokens; pass at least one token id.");
  if (cache.layers != cfg_.num_hidden_layers || cache.hidden != H)
    fail(Status::InvalidArgument,
         "KV cache is for {} layers x {} hidden, the model has {} x {}; make it with "
         "OptCpu::make_cache().",
         cache.layers, cache.hidden, cfg_.num_hidden_layers, H);
  if (past + n > cache.capacity)
    fail(Status::InvalidArgument,
         "sequence of {} tokens does not fit the KV cache of {} tokens; make a larger "
         "cache.",
         past + n, cache.capacity);
  if (past + n > cfg_.max_position_embeddings)
    fail(Status::InvalidArgument,
         "sequence of {} tokens is longer than the model's max_position_embeddings ({}); "
         "shorten the prompt or the number of new tokens.",
         past + n, cfg_.max_position_embeddings);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= V)
      fail(Status::InvalidArgument, "token id {} at index {} is outside the vocabulary [0, {}).",
           tokens[size_t(i)], i, V);

  std::vector<float> h(size_t(n * H));     // [n, hidden] the residual stream
  std::vector<float> x(size_t(n * H));     // [n, hidden] layer-norm output
  std::vector<float> tmp(size_t(n * H));   // [n, hidden] next residual stream
  std::vector<float> q(size_t(n * H));     // [n, hidden] scaled queries
  std::vector<float> attn(size_t(n * H));  // [n, hidden] attention output, heads side by side
  std::vector<float> ff(size_t(n * F));    // [n, ffn] fc1 output after the activation
  std::vector<float> attn_copy;            // [n, hidden] attention input, kept for ffn_observer_

  // 1. Token embeddings (project_in when word_embed_proj_dim != hidden) + learned positions.
  // Without
  //    padding HF's cumsum(attention_mask) - 1 is just the position, and the table is offset by 2.
  {
    std::vector<float> emb(size_t(n * E));  // [n, word_embed_proj_dim]
#pragma omp parallel for schedule(static) if (n * E >= kParallelMinWork)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < E; ++j)
        emb[size_t(i * E + j)] = load_as_float(embed_tokens_->data, embed_tokens_->dtype,
                                               size_t(tokens[size_t(i)] * E + j));
    if (project_in_)
      linear(*project_in_, "model.decoder.project_in", emb.data(), n, h.data());
    else
      h = std::move(emb);
#pragma omp parallel for schedule(static) if (n * H >= kParallelMinWork)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = past + i + OptConfig::kPositionOffset;
      for (int64_t j = 0; j < H; ++j)
        h[size_t(i * H + j)] +=
            load_as_float(embed_pos_->data, embed_pos_->dtype, size_t(pos * H + j));
    }
  }

  // 2. Decoder layers. Pre-LN (do_layer_norm_before): x + f(LN(x)); post-LN: LN(x + f(x)).
  const bool pre = cfg_.do_layer_norm_before;
  const float scaling = 1.0f / std::sqrt(float(head_dim_));
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const Layer& L = layers_[size_t(l)];
    // Self-attention. k and v go straight into the cache rows past..past+n-1.
    const float* a_in = h.data();
    if (pre) {
      layer_norm(L.attn_ln, h.data(), x.data(), n, H);
      a_in = x.data();
    }
    if (ffn_observer_) attn_copy.assign(a_in, a_in + n * H);  // x and h are reused below
    linear(L.q, L.prefix + "self_attn.q_proj", a_in, n, q.data());
    linear(L.k, L.prefix + "self_attn.k_proj", a_in, n, cache.key(l, past));
    linear(L.v, L.prefix + "self_attn.v_proj", a_in, n, cache.value(l, past));
    // HF scales q_proj's output (bias included) before QK^T, in this order.
    for (auto& e : q) e *= scaling;
    attention(q.data(), cache, l, past, n, attn.data());
    linear(L.out, L.prefix + "self_attn.out_proj", attn.data(), n, tmp.data(),
           /*residual=*/h.data());
    std::swap(h, tmp);
    if (!pre) layer_norm(L.attn_ln, h.data(), h.data(), n, H);

    // Feed-forward: fc2(relu(fc1(x))) + residual.
    const float* f_in = h.data();
    if (pre) {
      layer_norm(L.ffn_ln, h.data(), x.data(), n, H);
      f_in = x.data();
    }
    // With an observer the activation runs after it sees the pre-activation: the same fp32 values
    // as the fused epilogue (bias, then activation), so the output does not change.
    const bool fuse_act = !ffn_observer_ && !L.neurons;
    if (L.neurons) {
      if (observer_) observer_(L.prefix + "fc1", f_in, n, H);
      offload::bundles_fc1_cpu(*L.neurons, L.neuron_b1.data(), f_in, n, ff.data());
    } else {
      linear(L.fc1, L.prefix + "fc1", f_in, n, ff.data(), nullptr, /*activate=*/fuse_act);
    }
    if (ffn_observer_) ffn_observer_({l, n, H, F, past, attn_copy.data(), ff.data()});
    if (!fuse_act)
      for (auto& e : ff) e = s24::apply_activation(act_, e);
    if (L.neurons) {
      if (observer_) observer_(L.prefix + "fc2", ff.data(), n, F);
      offload::bundles_fc2_cpu(*L.neurons, ff.data(), n, L.fc2_bias ? L.fc2_bias->data : nullptr,
                               L.fc2_bias ? L.fc2_bias->dtype : DType::F32, h.data(), tmp.data());
    } else {
      linear(L.fc2, L.prefix + "fc2", ff.data(), n, tmp.data(), /*residual=*/h.data());
    }
    std::swap(h, tmp);
    if (!pre) layer_norm(L.ffn_ln, h.data(), h.data(), n, H);
  }
  cache.length = past + n;

  // 3. Head: final_layer_norm (pre-LN only), project_out, lm_head; only the rows asked for.
  const int64_t rows = all_logits ? n : 1;
  const float* last = h.data() + (n - rows) * H;
  if (has_final_ln_) {
    layer_norm(final_ln_, last, x.data(), rows, H);
    last = x.data();
  }
  std::vector<float> out_e;  // [rows, word_embed_proj_dim]
  if (project_out_) {
    out_e.resize(size_t(rows * E));
    linear(*project_out_, "model.decoder.project_out", last, rows, out_e.data());
    last = out_e.data();
  }
  std::vector<float> logits(size_t(rows * V));  // [rows, vocab]
  const s24::MatrixView head{lm_head_->data, lm_head_->dtype, V, E};
  s24::gemm_dense_cpu(head, last, DType::F32, rows, logits.data(), DType::F32);
  return logits;
}

std::map<std::string, std::vector<float>> collect_activation_norms(
    const Model& model, std::span<const int32_t> tokens) {
  if (tokens.empty())
    fail(Status::InvalidArgument,
         "Wanda calibration needs at least one token; the calibration text is empty.");
  OptCpu opt(model);
  std::map<std::string, std::vector<double>> sumsq;
  opt.set_observer([&](const std::string& prefix, const float* x, int64_t rows, int64_t in) {
    auto& acc = sumsq[prefix];
    acc.resize(size_t(in), 0.0);
#pragma omp parallel for schedule(static) if (rows * in >= kParallelMinWork)
    for (int64_t j = 0; j < in; ++j) {
      double s = 0.0;
      for (int64_t r = 0; r < rows; ++r) s += double(x[r * in + j]) * double(x[r * in + j]);
      acc[size_t(j)] += s;
    }
  });
  const int64_t window = opt.config().max_position_embeddings;
  KvCache cache = opt.make_cache(window);
  for (size_t start = 0; start < tokens.size(); start += size_t(window)) {
    cache.clear();
    const size_t len = std::min(tokens.size() - start, size_t(window));
    opt.forward(tokens.subspan(start, len), cache);
  }
  std::map<std::string, std::vector<float>> norms;
  for (auto& [name, acc] : sumsq) {
    auto& out = norms[name];
    out.resize(acc.size());
    for (size_t j = 0; j < acc.size(); ++j) out[j] = float(std::sqrt(acc[j]));
  }
  return norms;
}

}  // namespace sf::model
