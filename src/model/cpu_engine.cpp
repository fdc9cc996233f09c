#include "model/cpu_engine.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/error.hpp"
#include "format/neuron_bundles.hpp"
#include "model/engine_checks.hpp"
#include "model/ffn_bundles_cpu.hpp"
#include "model/rope_params.hpp"

namespace sf::model {

namespace {

// Below this many elements of work a loop runs on one thread: a parallel region's fork and barrier
// cost microseconds (far more when cores are oversubscribed), more than the loop itself.
constexpr int64_t kParallelMinWork = 1 << 15;

std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> out(size_t(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_as_float(t.data, t.dtype, i);
  return out;
}

void expect_linear(const Linear& l, const std::string& name, int64_t out, int64_t in, bool bias) {
  if (l.out_features != out || l.in_features != in)
    fail(Status::Format, "linear {} is [{}, {}], expected [{}, {}] from the model's config.", name,
         l.out_features, l.in_features, out, in);
  if (!l.dense && !l.sparse)
    fail(Status::Format, "linear {} has no weight (neither dense nor 2:4).", name);
  if (bias && !l.bias)
    fail(Status::NotFound,
         "linear {} has no bias, but the model's config says it has one. Missing tensor: "
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

KvCache::KvCache(const arch::ModelDesc& c, int64_t capacity_tokens)
    : layers(c.num_hidden_layers), capacity(capacity_tokens), width(c.kv_dim()) {
  if (capacity_tokens <= 0)
    fail(Status::InvalidArgument, "KV cache capacity must be positive, got {}", capacity_tokens);
  k.assign(size_t(layers * capacity * width), 0.0f);
  v.assign(size_t(layers * capacity * width), 0.0f);
}

void KvCache::reserve(int64_t capacity_tokens) {
  if (capacity_tokens <= capacity) return;
  std::vector<float> nk(size_t(layers * capacity_tokens * width), 0.0f);
  std::vector<float> nv(size_t(layers * capacity_tokens * width), 0.0f);
  for (int64_t l = 0; l < layers; ++l) {
    std::copy_n(key(l, 0), length * width, nk.data() + l * capacity_tokens * width);
    std::copy_n(value(l, 0), length * width, nv.data() + l * capacity_tokens * width);
  }
  k = std::move(nk);
  v = std::move(nv);
  capacity = capacity_tokens;
}

CpuEngine::CpuEngine(const Model& model) : model_(model), cfg_(model.config()) {
  arch::validate(cfg_, "the model's description");
  const int64_t H = cfg_.hidden_size, F = cfg_.ffn_dim, E = cfg_.word_embed_proj_dim,
                V = cfg_.vocab_size, Q = cfg_.q_dim(), KV = cfg_.kv_dim();
  const arch::TensorNames& nm = cfg_.names;
  act_ = s24_activation(cfg_.act);

  embed_tokens_ = &model.tensor(nm.embed + ".weight");
  expect_shape(*embed_tokens_, nm.embed + ".weight", {V, E});
  if (cfg_.positions == arch::Positions::Learned) {
    embed_pos_ = &model.tensor(nm.positions + ".weight");
    expect_shape(*embed_pos_, nm.positions + ".weight",
                 {cfg_.max_position_embeddings + cfg_.position_offset, H});
  } else {
    inv_freq_ = cpu::rope_inv_freq(rope_params(cfg_));
    rope_attention_factor_ = cpu::rope_attention_factor(rope_params(cfg_));
  }
  lm_head_ = &model.lm_head();
  expect_shape(*lm_head_, "lm_head.weight", {V, E});
  if (cfg_.has_projections()) {
    project_in_ = model.linear(nm.project_in);
    expect_linear(*project_in_, nm.project_in, H, E, false);
    project_out_ = model.linear(nm.project_out);
    expect_linear(*project_out_, nm.project_out, E, H, false);
  }

  auto load_norm = [&](const std::string& prefix) {
    NormW w;
    if (!cfg_.norm_affine) return w;
    const Tensor& t = model.tensor(prefix + ".weight");
    expect_shape(t, prefix + ".weight", {H});
    w.weight = to_f32(t);
    if (cfg_.norm == arch::Norm::LayerNorm) {
      const Tensor& b = model.tensor(prefix + ".bias");
      expect_shape(b, prefix + ".bias", {H});
      w.bias = to_f32(b);
    }
    return w;
  };
  if (cfg_.final_norm) final_norm_ = load_norm(nm.final_norm);

  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    Layer L;
    L.prefix = cfg_.layer_prefix(i);
    L.attn_norm = load_norm(L.prefix + nm.attn_norm);
    L.ffn_norm = load_norm(L.prefix + nm.ffn_norm);
    auto load = [&](Linear& lin, const std::string& name, int64_t out, int64_t in, bool bias) {
      lin = model.linear(L.prefix + name);
      expect_linear(lin, L.prefix + name, out, in, bias);
    };
    load(L.q, nm.q, Q, H, cfg_.qkv_bias);
    load(L.k, nm.k, KV, H, cfg_.qkv_bias);
    load(L.v, nm.v, KV, H, cfg_.qkv_bias);
    load(L.o, nm.o, H, Q, cfg_.o_bias);
    if (const NeuronMajorFfn* nmf = model.ffn_neurons(i)) {
      // Neuron-major: fc1 rows, fc1 biases and fc2 columns live in bundles (ffn_bundles_cpu.hpp).
      if (cfg_.is_gated())
        fail(Status::Format, "{}: neuron-major FFN bundles hold plain (fc1/fc2) MLPs only",
             L.prefix);
      if (nmf->ffn != F || nmf->hidden != H)
        fail(Status::Format, "{}ffn_neurons holds {} neurons of hidden {}, expected {} of {}",
             L.prefix, nmf->ffn, nmf->hidden, F, H);
      L.neurons = nmf;
      const auto layout = format::BundleLayout::make(H, nmf->dtype);
      L.neuron_b1.resize(size_t(F));
      for (int64_t b = 0; b < F; ++b)
        L.neuron_b1[size_t(b)] = load_as_float(
            nmf->bundles + uint64_t(b) * nmf->stride + layout.bias_offset, nmf->dtype, 0);
      L.fc2_bias = model.find(L.prefix + nm.down + ".bias");
      if (cfg_.mlp_bias && !L.fc2_bias)
        fail(Status::NotFound, "missing tensor {}{}.bias (the config has MLP biases)", L.prefix,
             nm.down);
      if (L.fc2_bias) expect_shape(*L.fc2_bias, L.prefix + nm.down + ".bias", {H});
    } else {
      if (cfg_.is_gated()) load(L.gate, nm.gate, F, H, cfg_.mlp_bias);
      load(L.up, nm.up, F, H, cfg_.mlp_bias);
      load(L.down, nm.down, H, F, cfg_.mlp_bias);
    }
    layers_.push_back(std::move(L));
  }
}

void CpuEngine::linear(const Linear& l, const std::string& name, const float* x, int64_t rows,
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

void CpuEngine::linears(std::initializer_list<Product> ps, const float* x, int64_t rows) {
  const bool one_pass =
      rows == 1 && !observer_ && std::all_of(ps.begin(), ps.end(), [](const auto& p) {
        return p.l->dense != nullptr && p.l->sparse == nullptr;
      });
  if (!one_pass) {
    for (const auto& p : ps) linear(*p.l, *p.name, x, rows, p.y, nullptr, p.activate);
    return;
  }
  std::vector<s24::GemvTarget> t;
  for (const auto& p : ps) {
    s24::GemvTarget g{
        {p.l->dense->data, p.l->dense->dtype, p.l->out_features, p.l->in_features}, p.y, {}};
    if (p.l->bias) {
      g.ep.bias = p.l->bias->data;
      g.ep.bias_dtype = p.l->bias->dtype;
    }
    if (p.activate) g.ep.act = act_;
    t.push_back(g);
  }
  s24::gemv_dense_cpu(t, x);
}

// LayerNorm: (x - mean) / sqrt(var + eps) * weight + bias; RMSNorm: x / sqrt(mean(x^2) + eps) *
// weight. Per row, x may equal y. Statistics in fp64 so the only fp32 rounding is in the output, as
// close to the exact value as fp32 allows.
void CpuEngine::norm(const NormW& w, const float* x, float* y, int64_t rows) const {
  const int64_t dim = cfg_.hidden_size;
  const bool rms = cfg_.norm == arch::Norm::RMSNorm;
  const double eps = cfg_.norm_eps;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * dim >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double mean = 0.0, var = 0.0;
    if (!rms) {
      for (int64_t j = 0; j < dim; ++j) mean += xr[j];
      mean /= double(dim);
    }
    for (int64_t j = 0; j < dim; ++j) var += (xr[j] - mean) * (xr[j] - mean);
    var /= double(dim);  // biased, like torch
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t j = 0; j < dim; ++j) {
      float v = float((xr[j] - mean) * inv);
      if (!w.weight.empty()) v *= w.weight[size_t(j)];
      if (!w.bias.empty()) v += w.bias[size_t(j)];
      yr[j] = v;
    }
  }
}

// Rotary positions on `heads` heads of each of `rows` rows (row r at position first_pos + r, the
// heads side by side, row stride ld).
void CpuEngine::rotate(float* x, int64_t rows, int64_t heads, int64_t ld, int64_t first_pos) const {
#pragma omp parallel for schedule(static) if (rows * heads * cfg_.head_dim >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r)
    cpu::apply_rope_cpu(x + r * ld, heads, cfg_.head_dim, first_pos + r, inv_freq_,
                        rope_attention_factor_);
}

// Causal multi-head attention of each row's query at its position over its own sequence's cached
// keys and values 0..pos (the last sliding_window of them when the model has a window): a prefill
// is rows of one cache at consecutive positions, a batched decode one row per cache. q is already
// scaled. q, out: [rows, q_dim], head h owns columns [h*d, (h+1)*d) and reads KV head h / group.
void CpuEngine::attention(const float* q, std::span<const RowPos> rows, int64_t layer,
                          float* out) const {
  const int64_t Q = cfg_.q_dim(), heads = cfg_.num_attention_heads, d = cfg_.head_dim,
                group = cfg_.group(), window = cfg_.sliding_window;
  const int64_t n = int64_t(rows.size());
  int64_t longest = 0, keys = 0;
  for (const RowPos& r : rows) {
    longest = std::max(longest, r.pos + 1);
    keys += r.pos + 1;
  }
  const int64_t work = heads * keys * d;  // multiply-adds of QK^T (and as many for PV)
#pragma omp parallel if (work >= kParallelMinWork)
  {
    std::vector<float> p(static_cast<size_t>(longest));  // this thread's scores, then probabilities
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        const KvCache& cache = *rows[size_t(i)].cache;
        const int64_t W = cache.width;
        const float* K = cache.k.data() + layer * cache.capacity * W;
        const float* V = cache.v.data() + layer * cache.capacity * W;
        const float* qi = q + i * Q + h * d;
        const int64_t kv = (h / group) * d;
        // The causal mask: key j is visible iff j <= the query's position.
        const int64_t end = rows[size_t(i)].pos + 1;
        const int64_t begin = window > 0 ? std::max<int64_t>(0, end - window) : 0;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = begin; j < end; ++j) {
          p[size_t(j)] = dot(qi, K + j * W + kv, d);
          mx = std::max(mx, p[size_t(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = begin; j < end; ++j) {
          p[size_t(j)] = std::exp(p[size_t(j)] - mx);
          sum += p[size_t(j)];
        }
        const float inv = 1.0f / sum;
        float* o = out + i * Q + h * d;
        std::fill(o, o + d, 0.0f);
        for (int64_t j = begin; j < end; ++j) {
          const float w = p[size_t(j)] * inv;
          const float* vj = V + j * W + kv;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) o[c] += w * vj[c];
        }
      }
    }
  }
}

// h_out = h + mlp(x): plain down(act(up x)) (fused into up's epilogue unless an observer must see
// the pre-activation, or the layer is neuron-major), or gated down(act(gate x) * up x).
void CpuEngine::mlp(const Layer& L, int64_t l, int64_t past, int64_t n, const float* x,
                    const float* attn_in, float* h, float* out) {
  const int64_t H = cfg_.hidden_size, F = cfg_.ffn_dim;
  const arch::TensorNames& nm = cfg_.names;
  std::vector<float> ff(size_t(n * F));  // [n, ffn] the input of down
  if (cfg_.is_gated()) {
    std::vector<float> up(size_t(n * F));
    const std::string gn = L.prefix + nm.gate, un = L.prefix + nm.up;
    linears({{&L.gate, &gn, ff.data(), /*activate=*/true}, {&L.up, &un, up.data()}}, x, n);
#pragma omp parallel for schedule(static) if (n * F >= kParallelMinWork)
    for (int64_t i = 0; i < n * F; ++i) ff[size_t(i)] *= up[size_t(i)];
    linear(L.down, L.prefix + nm.down, ff.data(), n, out, /*residual=*/h);
    return;
  }
  // With an observer the activation runs after it sees the pre-activation: the same fp32 values
  // as the fused epilogue (bias, then activation), so the output does not change.
  const bool fuse_act = !ffn_observer_ && !L.neurons;
  if (L.neurons) {
    if (observer_) observer_(L.prefix + nm.up, x, n, H);
    bundles_fc1_cpu(*L.neurons, L.neuron_b1.data(), x, n, ff.data());
  } else {
    linear(L.up, L.prefix + nm.up, x, n, ff.data(), nullptr, /*activate=*/fuse_act);
  }
  if (ffn_observer_) ffn_observer_({l, n, H, F, past, attn_in, ff.data()});
  if (!fuse_act)
    for (auto& e : ff) e = s24::apply_activation(act_, e);
  if (L.neurons) {
    if (observer_) observer_(L.prefix + nm.down, ff.data(), n, F);
    bundles_fc2_cpu(*L.neurons, ff.data(), n, L.fc2_bias ? L.fc2_bias->data : nullptr,
                    L.fc2_bias ? L.fc2_bias->dtype : DType::F32, h, out);
  } else {
    linear(L.down, L.prefix + nm.down, ff.data(), n, out, /*residual=*/h);
  }
}

std::vector<float> CpuEngine::forward(std::span<const int32_t> tokens, KvCache& cache,
                                      bool all_logits) {
  const BatchSegment one{tokens, &cache};
  return run(std::span<const BatchSegment>(&one, 1), all_logits);
}

std::vector<float> CpuEngine::forward_batch(std::span<const BatchSegment> segments) {
  if (segments.empty())
    fail(Status::InvalidArgument, "forward_batch() got no segments; pass at least one sequence.");
  if (segments.size() > 1 && ffn_observer_)
    fail(Status::InvalidArgument,
         "forward_batch() runs one sequence at a time while an FFN observer is set (it sees one "
         "position per call); unset it or call forward() per sequence.");
  return run(segments, /*all_logits=*/false);
}

CpuEngine::Pass CpuEngine::plan(std::span<const BatchSegment> segs) const {
  const int64_t V = cfg_.vocab_size;
  const bool batch = segs.size() > 1;
  // Messages name the segment only in a batch, so forward()'s read as they always did.
  auto which = [&](size_t s) { return batch ? fmt::format("segment {}: ", s) : std::string(); };
  Pass p;
  for (size_t s = 0; s < segs.size(); ++s) {
    const BatchSegment& g = segs[s];
    const int64_t len = int64_t(g.tokens.size());
    if (!g.cache) fail(Status::InvalidArgument, "{}no KV cache given.", which(s));
    const KvCache& cache = *g.cache;
    if (len == 0)
      fail(Status::InvalidArgument, "{}forward() got no tokens; pass at least one token id.",
           which(s));
    if (cache.layers != cfg_.num_hidden_layers || cache.width != cfg_.kv_dim())
      fail(Status::InvalidArgument,
           "{}KV cache is for {} layers x {} KV width, the model has {} x {}; make it with "
           "CpuEngine::make_cache().",
           which(s), cache.layers, cache.width, cfg_.num_hidden_layers, cfg_.kv_dim());
    if (cache.length + len > cache.capacity)
      fail(Status::InvalidArgument,
           "{}sequence of {} tokens does not fit the KV cache of {} tokens; make a larger cache.",
           which(s), cache.length + len, cache.capacity);
    if (cache.length + len > cfg_.max_position_embeddings)
      fail(Status::InvalidArgument,
           "{}sequence of {} tokens is longer than the model's max_position_embeddings ({}); "
           "shorten the prompt or the number of new tokens.",
           which(s), cache.length + len, cfg_.max_position_embeddings);
    for (int64_t i = 0; i < len; ++i)
      if (g.tokens[size_t(i)] < 0 || g.tokens[size_t(i)] >= V)
        fail(Status::InvalidArgument,
             "{}token id {} at index {} is outside the vocabulary [0, {}).", which(s),
             g.tokens[size_t(i)], i, V);
    for (size_t t = 0; t < s; ++t)
      if (segs[t].cache == g.cache)
        fail(Status::InvalidArgument,
             "segments {} and {} share one KV cache; a sequence takes one segment per pass.", t, s);
    p.first.push_back(p.n());
    for (int64_t i = 0; i < len; ++i) {
      p.ids.push_back(g.tokens[size_t(i)]);
      p.rows.push_back({g.cache, g.cache->length + i});
    }
  }
  p.first.push_back(p.n());
  return p;
}

// Token embeddings (project_in when word_embed_proj_dim != hidden) + learned positions. Without
// padding, HF's position ids are just the positions.
std::vector<float> CpuEngine::embed_rows(const Pass& p) {
  const int64_t n = p.n(), H = cfg_.hidden_size, E = cfg_.word_embed_proj_dim;
  std::vector<float> h(size_t(n * H));    // [n, hidden] the residual stream
  std::vector<float> emb(size_t(n * E));  // [n, word_embed_proj_dim]
#pragma omp parallel for schedule(static) if (n * E >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < E; ++j)
      emb[size_t(i * E + j)] = load_as_float(embed_tokens_->data, embed_tokens_->dtype,
                                             size_t(p.ids[size_t(i)] * E + j));
  if (project_in_)
    linear(*project_in_, cfg_.names.project_in, emb.data(), n, h.data());
  else
    h = std::move(emb);
  if (embed_pos_) {
#pragma omp parallel for schedule(static) if (n * H >= kParallelMinWork)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = p.rows[size_t(i)].pos + cfg_.position_offset;
      for (int64_t j = 0; j < H; ++j)
        h[size_t(i * H + j)] +=
            load_as_float(embed_pos_->data, embed_pos_->dtype, size_t(pos * H + j));
    }
  }
  return h;
}

// Decoder layer l over the pass's rows of h, in place. Pre-norm: x + f(norm(x)); post-norm:
// norm(x + f(x)).
void CpuEngine::layer_forward(int64_t l, Pass& p, std::vector<float>& h) {
  const int64_t n = p.n(), H = cfg_.hidden_size, Q = cfg_.q_dim(), KV = cfg_.kv_dim();
  const arch::TensorNames& nm = cfg_.names;
  const Layer& L = layers_[size_t(l)];
  const bool pre = cfg_.pre_norm, direct = p.direct();
  KvCache& solo = *p.rows[0].cache;
  const int64_t past = p.rows[0].pos;  // a single segment's first position (ffn_observer_'s too)
  if (p.x.size() != size_t(n * H)) {
    p.x.assign(size_t(n * H), 0.0f);     // [n, hidden] norm output
    p.tmp.assign(size_t(n * H), 0.0f);   // [n, hidden] next residual stream
    p.q.assign(size_t(n * Q), 0.0f);     // [n, q_dim] scaled queries
    p.attn.assign(size_t(n * Q), 0.0f);  // [n, q_dim] attention output, heads side by side
    p.kbuf.assign(direct ? 0 : size_t(n * KV), 0.0f);  // [n, kv_dim] a batch's new keys
    p.vbuf.assign(direct ? 0 : size_t(n * KV), 0.0f);  // [n, kv_dim] and values
  }
  std::vector<float>&x = p.x, &tmp = p.tmp, &q = p.q;

  // Self-attention.
  const float* a_in = h.data();
  if (pre) {
    norm(L.attn_norm, h.data(), x.data(), n);
    a_in = x.data();
  }
  // [n, hidden] attention input, kept for ffn_observer_: x and h are reused below
  if (ffn_observer_) p.attn_copy.assign(a_in, a_in + n * H);
  float* k_new = direct ? solo.key(l, past) : p.kbuf.data();  // [n, kv_dim], row stride KV
  float* v_new = direct ? solo.value(l, past) : p.vbuf.data();
  const std::string qn = L.prefix + nm.q, kn = L.prefix + nm.k, vn = L.prefix + nm.v;
  linears({{&L.q, &qn, q.data()}, {&L.k, &kn, k_new}, {&L.v, &vn, v_new}}, a_in, n);
  if (!inv_freq_.empty()) {
    for (size_t s = 0; s + 1 < p.first.size(); ++s) {
      const int64_t r0 = p.first[s], len = p.first[s + 1] - r0, pos0 = p.rows[size_t(r0)].pos;
      rotate(q.data() + r0 * Q, len, cfg_.num_attention_heads, Q, pos0);
      rotate(k_new + r0 * KV, len, cfg_.num_key_value_heads, KV, pos0);
    }
  }
  if (!direct)
    for (int64_t i = 0; i < n; ++i) {
      const RowPos& r = p.rows[size_t(i)];
      std::copy_n(p.kbuf.data() + i * KV, KV, r.cache->key(l, r.pos));
      std::copy_n(p.vbuf.data() + i * KV, KV, r.cache->value(l, r.pos));
    }
  // OPT scales q_proj's output (bias included) before QK^T; the others scale the scores, which
  // differs by one fp32 rounding.
  const float scaling = cfg_.scale();
  for (auto& e : q) e *= scaling;
  attention(q.data(), p.rows, l, p.attn.data());
  linear(L.o, L.prefix + nm.o, p.attn.data(), n, tmp.data(), /*residual=*/h.data());
  std::swap(h, tmp);
  if (!pre) norm(L.attn_norm, h.data(), h.data(), n);

  const float* f_in = h.data();
  if (pre) {
    norm(L.ffn_norm, h.data(), x.data(), n);
    f_in = x.data();
  }
  mlp(L, l, past, n, f_in, p.attn_copy.data(), h.data(), tmp.data());
  std::swap(h, tmp);
  if (!pre) norm(L.ffn_norm, h.data(), h.data(), n);
}

std::vector<float> CpuEngine::run(std::span<const BatchSegment> segs, bool all_logits) {
  const int64_t H = cfg_.hidden_size, E = cfg_.word_embed_proj_dim, V = cfg_.vocab_size;
  Pass p = plan(segs);
  const int64_t n = p.n(), nseg = int64_t(segs.size());

  // 1. Embeddings, 2. the decoder layers in order.
  std::vector<float> h = embed_rows(p);  // [n, hidden] the residual stream
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) layer_forward(l, p, h);
  for (const BatchSegment& g : segs) g.cache->length += int64_t(g.tokens.size());

  // 3. Head: final norm, project_out, lm_head; only the rows asked for (every row, or each
  //    segment's last).
  const int64_t out_rows = all_logits ? n : nseg;
  const float* last = h.data() + (n - 1) * H;
  std::vector<float> picked;  // [segments, hidden] a batch's last rows, side by side
  if (all_logits) {
    last = h.data();
  } else if (nseg > 1) {
    picked.resize(size_t(out_rows * H));
    for (int64_t s = 0; s < nseg; ++s)
      std::copy_n(h.data() + (p.first[size_t(s) + 1] - 1) * H, H, picked.data() + s * H);
    last = picked.data();
  }
  std::vector<float> x;  // [out_rows, hidden] final norm output
  if (cfg_.final_norm) {
    x.resize(size_t(out_rows * H));
    norm(final_norm_, last, x.data(), out_rows);
    last = x.data();
  }
  std::vector<float> out_e;  // [out_rows, word_embed_proj_dim]
  if (project_out_) {
    out_e.resize(size_t(out_rows * E));
    linear(*project_out_, cfg_.names.project_out, last, out_rows, out_e.data());
    last = out_e.data();
  }
  std::vector<float> logits(size_t(out_rows * V));  // [out_rows, vocab]
  const s24::MatrixView head{lm_head_->data, lm_head_->dtype, V, E};
  s24::gemm_dense_cpu(head, last, DType::F32, out_rows, logits.data(), DType::F32);
  return logits;
}

std::vector<float> CpuEngine::embed(std::span<const int32_t> tokens, const KvCache& cache) {
  const BatchSegment one{tokens, const_cast<KvCache*>(&cache)};  // plan() only reads the cache
  return embed_rows(plan(std::span<const BatchSegment>(&one, 1)));
}

void CpuEngine::run_layer(int64_t layer, std::vector<float>& h, KvCache& cache) {
  if (layer < 0 || layer >= cfg_.num_hidden_layers)
    fail(Status::InvalidArgument, "run_layer: layer {} is outside [0, {})", layer,
         cfg_.num_hidden_layers);
  const int64_t n = int64_t(h.size()) / cfg_.hidden_size;
  if (n == 0 || int64_t(h.size()) != n * cfg_.hidden_size)
    fail(Status::InvalidArgument, "run_layer: expected [rows, {}] hidden states, found {} values",
         cfg_.hidden_size, h.size());
  if (cache.layers != cfg_.num_hidden_layers || cache.width != cfg_.kv_dim() ||
      cache.length + n > cache.capacity || cache.length + n > cfg_.max_position_embeddings)
    fail(Status::InvalidArgument,
         "run_layer: {} more rows do not fit this KV cache or the model's positions; make the "
         "cache with make_cache()",
         n);
  Pass p;
  for (int64_t i = 0; i < n; ++i) p.rows.push_back({&cache, cache.length + i});
  p.first = {0, n};
  layer_forward(layer, p, h);
}

std::map<std::string, std::vector<float>> collect_activation_norms(
    const Model& model, std::span<const int32_t> tokens) {
  if (tokens.empty())
    fail(Status::InvalidArgument,
         "Wanda calibration needs at least one token; the calibration text is empty.");
  CpuEngine opt(model);
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
