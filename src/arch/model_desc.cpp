#include "arch/model_desc.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.hpp"

namespace sf::arch {

namespace {

// Larger than any released decoder (hidden 16384, 126 layers, vocab 256000); a value past these is
// a damaged config, and the bounds keep products of sizes far from int64 overflow.
constexpr int64_t kMaxDim = int64_t(1) << 20;
constexpr int64_t kMaxLayers = 4096;

std::string weight(const std::string& prefix) {
  return prefix + ".weight";
}
std::string bias(const std::string& prefix) {
  return prefix + ".bias";
}

}  // namespace

std::string_view name(Norm n) {
  return n == Norm::LayerNorm ? "LayerNorm" : "RMSNorm";
}
std::string_view name(Positions p) {
  return p == Positions::Learned ? "learned" : "rotary";
}
std::string_view name(Mlp m) {
  return m == Mlp::Plain ? "plain" : "gated";
}
std::string_view name(Act a) {
  switch (a) {
    case Act::ReLU:
      return "relu";
    case Act::GELU:
      return "gelu";
    case Act::GELUTanh:
      return "gelu_tanh";
    case Act::SiLU:
      return "silu";
  }
  return "?";
}
std::string_view name(RopeScaling s) {
  switch (s) {
    case RopeScaling::None:
      return "none";
    case RopeScaling::Linear:
      return "linear";
    case RopeScaling::Llama3:
      return "llama3";
    case RopeScaling::Yarn:
      return "yarn";
  }
  return "?";
}

float ModelDesc::scale() const {
  return attn_scale > 0 ? float(attn_scale) : 1.0f / std::sqrt(float(head_dim));
}

std::string ModelDesc::layer_prefix(int64_t layer) const {
  std::string p = names.layer;
  const auto at = p.find("{}");
  return p.replace(at, 2, std::to_string(layer));
}

std::vector<std::string> ModelDesc::layer_linears() const {
  std::vector<std::string> v = {names.q, names.k, names.v, names.o};
  if (is_gated()) v.push_back(names.gate);
  v.push_back(names.up);
  v.push_back(names.down);
  return v;
}

bool ModelDesc::is_eos(int64_t id) const {
  return id == eos_token_id ||
         std::find(extra_eos_ids.begin(), extra_eos_ids.end(), id) != extra_eos_ids.end();
}

void validate(const ModelDesc& d, std::string_view where) {
  auto in_range = [&](const char* field, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
      fail(Status::UnsupportedShape, "{}: \"{}\" is {}, expected {} to {}", where, field, v, lo,
           hi);
  };
  in_range("vocab_size", d.vocab_size, 1, kMaxDim * 4);
  in_range("hidden_size", d.hidden_size, 1, kMaxDim);
  in_range("num_hidden_layers", d.num_hidden_layers, 1, kMaxLayers);
  in_range("num_attention_heads", d.num_attention_heads, 1, d.hidden_size * 4);
  in_range("num_key_value_heads", d.num_key_value_heads, 1, d.num_attention_heads);
  in_range("head_dim", d.head_dim, 1, 1024);
  in_range("ffn size", d.ffn_dim, 1, kMaxDim * 4);
  in_range("max_position_embeddings", d.max_position_embeddings, 1, kMaxDim * 4);
  in_range("word_embed_proj_dim", d.word_embed_proj_dim, 1, kMaxDim);
  in_range("sliding_window", d.sliding_window, 0, kMaxDim * 4);
  if (d.num_attention_heads % d.num_key_value_heads != 0)
    fail(Status::UnsupportedShape,
         "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}; grouped-query "
         "attention needs whole groups",
         where, d.num_attention_heads, d.num_key_value_heads);
  if (d.names.layer.find("{}") == std::string::npos)
    fail(Status::UnsupportedShape, "{}: the layer tensor prefix \"{}\" has no {{}} for the index",
         where, d.names.layer);
  if (!(d.norm_eps > 0 && d.norm_eps < 1))
    fail(Status::UnsupportedShape, "{}: the norm epsilon is {}, expected a small positive number",
         where, d.norm_eps);
  if (d.norm == Norm::RMSNorm && !d.norm_affine)
    fail(Status::UnsupportedShape, "{}: an RMSNorm without a weight is not supported", where);
  if (d.is_gated() && d.act == Act::ReLU)
    fail(Status::UnsupportedShape, "{}: a gated MLP with ReLU is not supported (SwiGLU uses silu)",
         where);
  if (d.positions == Positions::Learned) {
    in_range("position_offset", d.position_offset, 0, 1024);
  } else {
    const Rope& r = d.rope;
    if (r.dims <= 0 || r.dims > d.head_dim || r.dims % 2 != 0)
      fail(Status::UnsupportedShape,
           "{}: the rotary dimensions are {}, expected an even number from 2 to head_dim {}", where,
           r.dims, d.head_dim);
    if (!(r.theta > 1.0) || !std::isfinite(r.theta))
      fail(Status::UnsupportedShape, "{}: rope_theta is {}, expected a number above 1", where,
           r.theta);
    if (r.scaling != RopeScaling::None && !(r.factor >= 1.0 && r.factor < 1e6))
      fail(Status::UnsupportedShape, "{}: the rope scaling factor is {}, expected 1 or more", where,
           r.factor);
    if ((r.scaling == RopeScaling::Llama3 || r.scaling == RopeScaling::Yarn) &&
        r.original_max_positions <= 0)
      fail(Status::UnsupportedShape,
           "{}: {} rope scaling needs original_max_position_embeddings, which is missing", where,
           name(r.scaling));
    if (r.scaling == RopeScaling::Llama3 && !(r.high_freq_factor > r.low_freq_factor))
      fail(Status::UnsupportedShape,
           "{}: llama3 rope scaling needs high_freq_factor > low_freq_factor, found {} and {}",
           where, r.high_freq_factor, r.low_freq_factor);
  }
  auto token = [&](const char* field, int64_t id) {
    if (id < -1 || id >= d.vocab_size)
      fail(Status::UnsupportedShape, "{}: \"{}\" is {}, outside the vocabulary of {}", where, field,
           id, d.vocab_size);
  };
  token("pad_token_id", d.pad_token_id);
  token("bos_token_id", d.bos_token_id);
  token("eos_token_id", d.eos_token_id);
  for (int64_t id : d.extra_eos_ids) token("an eos_token_id", id);
}

std::string summary(const ModelDesc& d) {
  std::string s = fmt::format("{}: {} layers, hidden {}, {} heads", d.arch, d.num_hidden_layers,
                              d.hidden_size, d.num_attention_heads);
  if (d.num_key_value_heads != d.num_attention_heads)
    s += fmt::format(" / {} KV heads", d.num_key_value_heads);
  s += fmt::format(" of {}, ", d.head_dim);
  if (d.is_gated())
    s += fmt::format("{}-gated MLP {}", name(d.act), d.ffn_dim);
  else
    s += fmt::format("{} MLP {}", name(d.act), d.ffn_dim);
  s += fmt::format(", {}{}", d.pre_norm ? "" : "post-", name(d.norm));
  if (d.positions == Positions::Rotary) {
    s += fmt::format(", rope theta {:g}", d.rope.theta);
    if (d.rope.dims != d.head_dim) s += fmt::format(" on {} dims", d.rope.dims);
    if (d.rope.scaling != RopeScaling::None)
      s += fmt::format(" ({} x{:g})", name(d.rope.scaling), d.rope.factor);
  } else {
    s += ", learned positions";
  }
  s += fmt::format(", vocab {}, context {}", d.vocab_size, d.max_position_embeddings);
  if (d.tie_word_embeddings) s += ", tied";
  return s;
}

ModelDesc preset(std::string_view arch) {
  ModelDesc d;
  d.arch = std::string(arch);
  if (arch == "opt") {
    d.norm = Norm::LayerNorm;
    d.norm_eps = 1e-5;
    d.positions = Positions::Learned;
    d.position_offset = 2;
    d.qkv_bias = d.o_bias = d.mlp_bias = true;
    d.act = Act::ReLU;
    d.tie_word_embeddings = true;
    d.pad_token_id = 1;
    d.bos_token_id = d.eos_token_id = 2;
  } else if (arch == "gpt2") {
    d.norm = Norm::LayerNorm;
    d.norm_eps = 1e-5;
    d.positions = Positions::Learned;
    d.qkv_bias = d.o_bias = d.mlp_bias = true;
    d.act = Act::GELUTanh;
    d.tie_word_embeddings = true;
    d.bos_token_id = d.eos_token_id = 50256;
  } else if (arch == "llama" || arch == "mistral" || arch == "qwen2") {
    d.norm = Norm::RMSNorm;
    d.norm_eps = 1e-6;
    d.positions = Positions::Rotary;
    d.mlp = Mlp::Gated;
    d.act = Act::SiLU;
    d.tie_word_embeddings = false;
    d.qkv_bias = arch == "qwen2";
    if (arch != "qwen2") {
      d.bos_token_id = 1;
      d.eos_token_id = 2;
    }
  } else {
    tensor_names(arch, false);  // throws, naming the architectures there are
  }
  return d;
}

void complete(ModelDesc& d) {
  if (d.num_key_value_heads == 0) d.num_key_value_heads = d.num_attention_heads;
  if (d.head_dim == 0 && d.num_attention_heads > 0)
    d.head_dim = d.hidden_size / d.num_attention_heads;
  if (d.word_embed_proj_dim == 0) d.word_embed_proj_dim = d.hidden_size;
  if (d.positions == Positions::Rotary && d.rope.dims == 0) d.rope.dims = d.head_dim;
  if (d.arch == "opt" && !d.pre_norm)
    d.final_norm = false;  // HF builds final_layer_norm for pre-LN OPT only
  d.names = tensor_names(d.arch, d.has_projections());
  validate(d, fmt::format("the {} description", d.arch));
}

TensorNames tensor_names(std::string_view arch, bool projections) {
  TensorNames n;
  n.lm_head = "lm_head";
  if (arch == "opt") {
    n.embed = "model.decoder.embed_tokens";
    n.positions = "model.decoder.embed_positions";
    n.final_norm = "model.decoder.final_layer_norm";
    if (projections) {
      n.project_in = "model.decoder.project_in";
      n.project_out = "model.decoder.project_out";
    }
    n.layer = "model.decoder.layers.{}.";
    n.attn_norm = "self_attn_layer_norm";
    n.ffn_norm = "final_layer_norm";
    n.q = "self_attn.q_proj";
    n.k = "self_attn.k_proj";
    n.v = "self_attn.v_proj";
    n.o = "self_attn.out_proj";
    n.up = "fc1";
    n.down = "fc2";
  } else if (arch == "llama" || arch == "mistral" || arch == "qwen2") {
    n.embed = "model.embed_tokens";
    n.final_norm = "model.norm";
    n.layer = "model.layers.{}.";
    n.attn_norm = "input_layernorm";
    n.ffn_norm = "post_attention_layernorm";
    n.q = "self_attn.q_proj";
    n.k = "self_attn.k_proj";
    n.v = "self_attn.v_proj";
    n.o = "self_attn.o_proj";
    n.gate = "mlp.gate_proj";
    n.up = "mlp.up_proj";
    n.down = "mlp.down_proj";
  } else if (arch == "gpt2") {
    // GPT-2 stores q, k, v as one Conv1D (attn.c_attn, [in, 3 out]); the loaders split it into
    // these three names and transpose every Conv1D to the [out, in] of a linear layer.
    n.embed = "transformer.wte";
    n.positions = "transformer.wpe";
    n.final_norm = "transformer.ln_f";
    n.layer = "transformer.h.{}.";
    n.attn_norm = "ln_1";
    n.ffn_norm = "ln_2";
    n.q = "attn.q_proj";
    n.k = "attn.k_proj";
    n.v = "attn.v_proj";
    n.o = "attn.c_proj";
    n.up = "mlp.c_fc";
    n.down = "mlp.c_proj";
  } else {
    fail(Status::UnsupportedShape,
         "architecture \"{}\" is not one SparseFlow runs (opt, llama, mistral, qwen2, gpt2)", arch);
  }
  return n;
}

std::vector<ExpectedTensor> expected_tensors(const ModelDesc& d, bool untied_lm_head) {
  const int64_t h = d.hidden_size, e = d.word_embed_proj_dim, f = d.ffn_dim;
  const TensorNames& n = d.names;
  std::vector<ExpectedTensor> v;
  v.push_back({weight(n.embed), {d.vocab_size, e}, false});
  if (d.positions == Positions::Learned)
    v.push_back({weight(n.positions), {d.max_position_embeddings + d.position_offset, h}, false});
  if (d.has_projections()) {
    v.push_back({weight(n.project_in), {h, e}, false});
    v.push_back({weight(n.project_out), {e, h}, false});
  }
  auto norm = [&](const std::string& p) {
    if (!d.norm_affine) return;
    v.push_back({weight(p), {h}, false});
    if (d.norm == Norm::LayerNorm) v.push_back({bias(p), {h}, false});
  };
  auto linear = [&](const std::string& p, int64_t out, int64_t in, bool has_bias) {
    v.push_back({weight(p), {out, in}, true});
    if (has_bias) v.push_back({bias(p), {out}, false});
  };
  for (int64_t i = 0; i < d.num_hidden_layers; ++i) {
    const std::string l = d.layer_prefix(i);
    linear(l + n.q, d.q_dim(), h, d.qkv_bias);
    linear(l + n.k, d.kv_dim(), h, d.qkv_bias);
    linear(l + n.v, d.kv_dim(), h, d.qkv_bias);
    linear(l + n.o, h, d.q_dim(), d.o_bias);
    norm(l + n.attn_norm);
    if (d.is_gated()) linear(l + n.gate, f, h, d.mlp_bias);
    linear(l + n.up, f, h, d.mlp_bias);
    linear(l + n.down, h, f, d.mlp_bias);
    norm(l + n.ffn_norm);
  }
  if (d.final_norm) norm(n.final_norm);
  if (untied_lm_head) v.push_back({weight(n.lm_head), {d.vocab_size, e}, false});
  return v;
}

}  // namespace sf::arch
