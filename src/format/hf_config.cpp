#include "format/hf_config.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>

#include <fmt/ranges.h>

#include "core/error.hpp"

namespace sf::format {

using json = nlohmann::json;

namespace {

struct Family {
  std::string_view model_type;
  std::array<std::string_view, 2> architectures;
};
constexpr std::array<Family, 5> kFamilies = {{
    {"opt", {"OPTForCausalLM", "OPTModel"}},
    {"llama", {"LlamaForCausalLM", "LlamaModel"}},
    {"mistral", {"MistralForCausalLM", "MistralModel"}},
    {"qwen2", {"Qwen2ForCausalLM", "Qwen2Model"}},
    {"gpt2", {"GPT2LMHeadModel", "GPT2Model"}},
}};

constexpr int64_t kMaxInt = int64_t(1) << 40;

// Typed access to one config object, every message naming the file and the field.
class Fields {
 public:
  Fields(const json& j, std::string_view where) : j_(j), where_(where) {}

  bool has(const char* key) const {
    const auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  int64_t integer(const char* key, std::optional<int64_t> fallback, int64_t lo = 1,
                  int64_t hi = kMaxInt) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      if (!fallback) fail(Status::Format, "{}: required field \"{}\" is missing", where_, key);
      return *fallback;
    }
    if (!it->is_number_integer())
      fail(Status::Format, "{}: \"{}\" is {}, expected an integer", where_, key, it->dump());
    const int64_t v = it->get<int64_t>();
    if (v < lo || v > hi)
      fail(Status::UnsupportedShape, "{}: \"{}\" is {}, expected {} to {}", where_, key, v, lo, hi);
    return v;
  }
  double number(const char* key, double fallback) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_number() || !std::isfinite(it->get<double>()))
      fail(Status::Format, "{}: \"{}\" is {}, expected a number", where_, key, it->dump());
    return it->get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_boolean())
      fail(Status::Format, "{}: \"{}\" is {}, expected true or false", where_, key, it->dump());
    return it->get<bool>();
  }
  std::string string(const char* key, std::string fallback) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_string())
      fail(Status::Format, "{}: \"{}\" is {}, expected a string", where_, key, it->dump());
    return it->get<std::string>();
  }
  // An id, a list of ids (the first is the id, the rest go to `extra`), null (HF's None: no such
  // token, -1) or absent (the config class's default, `fallback`).
  int64_t token(const char* key, int64_t fallback, std::vector<int64_t>* extra = nullptr) const {
    const auto it = j_.find(key);
    if (it == j_.end()) return fallback;
    if (it->is_null()) return -1;
    auto one = [&](const json& v) {
      if (!v.is_number_integer())
        fail(Status::Format, "{}: \"{}\" holds {}, expected a token id", where_, key, v.dump());
      return v.get<int64_t>();
    };
    if (!it->is_array()) return one(*it);
    if (it->empty() || !extra)
      fail(Status::Format, "{}: \"{}\" is {}, expected one token id", where_, key, it->dump());
    for (size_t i = 1; i < it->size(); ++i) extra->push_back(one((*it)[i]));
    return one((*it)[0]);
  }
  const json& raw() const { return j_; }
  std::string_view where() const { return where_; }

 private:
  const json& j_;
  std::string_view where_;
};

arch::Act parse_act(const std::string& s, std::string_view where, const char* key) {
  if (s == "relu") return arch::Act::ReLU;
  if (s == "gelu") return arch::Act::GELU;
  if (s == "gelu_new" || s == "gelu_pytorch_tanh") return arch::Act::GELUTanh;
  if (s == "silu" || s == "swish") return arch::Act::SiLU;
  fail(Status::UnsupportedShape,
       "{}: {} \"{}\" is not supported (supported: relu, gelu, gelu_new, gelu_pytorch_tanh, silu)",
       where, key, s);
}

std::string act_name(arch::Act a) {
  switch (a) {
    case arch::Act::ReLU:
      return "relu";
    case arch::Act::GELU:
      return "gelu";
    case arch::Act::GELUTanh:
      return "gelu_new";
    case arch::Act::SiLU:
      return "silu";
  }
  return "relu";
}

void parse_opt(const Fields& f, arch::ModelDesc& d) {
  d.vocab_size = f.integer("vocab_size", std::nullopt);
  d.hidden_size = f.integer("hidden_size", std::nullopt);
  d.num_hidden_layers = f.integer("num_hidden_layers", std::nullopt);
  d.ffn_dim = f.integer("ffn_dim", std::nullopt);
  d.num_attention_heads = f.integer("num_attention_heads", std::nullopt, 1);
  d.num_key_value_heads = d.num_attention_heads;
  d.max_position_embeddings = f.integer("max_position_embeddings", std::nullopt);
  d.word_embed_proj_dim = f.integer("word_embed_proj_dim", d.hidden_size);
  d.pre_norm = f.boolean("do_layer_norm_before", true);
  // HF builds final_layer_norm only for pre-LN models not marked _remove_final_layer_norm.
  d.final_norm = d.pre_norm && !f.boolean("_remove_final_layer_norm", false);
  const bool bias = f.boolean("enable_bias", true);
  d.qkv_bias = d.o_bias = d.mlp_bias = bias;
  d.norm = arch::Norm::LayerNorm;
  d.norm_eps = 1e-5;  // nn.LayerNorm's default, which OPT uses
  d.norm_affine = f.boolean("layer_norm_elementwise_affine", true);
  d.tie_word_embeddings = f.boolean("tie_word_embeddings", true);
  d.act = parse_act(f.string("activation_function", "relu"), f.where(), "activation_function");
  d.positions = arch::Positions::Learned;
  d.position_offset = 2;  // OPT's learned positions start at row 2
  d.pad_token_id = f.token("pad_token_id", 1);
  d.bos_token_id = f.token("bos_token_id", 2);
  d.eos_token_id = f.token("eos_token_id", 2, &d.extra_eos_ids);
  if (d.hidden_size % d.num_attention_heads != 0)
    fail(Status::UnsupportedShape,
         "{}: hidden_size {} is not divisible by num_attention_heads {}; OPT needs whole heads",
         f.where(), d.hidden_size, d.num_attention_heads);
  d.head_dim = d.hidden_size / d.num_attention_heads;
}

void parse_gpt2(const Fields& f, arch::ModelDesc& d) {
  d.vocab_size = f.integer("vocab_size", 50257);
  d.hidden_size = f.integer("n_embd", 768);
  d.num_hidden_layers = f.integer("n_layer", 12);
  d.num_attention_heads = f.integer("n_head", 12, 1);
  d.num_key_value_heads = d.num_attention_heads;
  d.ffn_dim = f.integer("n_inner", 4 * d.hidden_size);
  d.max_position_embeddings = f.integer("n_positions", 1024);
  d.word_embed_proj_dim = d.hidden_size;
  d.norm = arch::Norm::LayerNorm;
  d.norm_eps = f.number("layer_norm_epsilon", 1e-5);
  d.act = parse_act(f.string("activation_function", "gelu_new"), f.where(), "activation_function");
  d.qkv_bias = d.o_bias = d.mlp_bias = true;
  d.positions = arch::Positions::Learned;
  d.position_offset = 0;
  d.tie_word_embeddings = true;  // GPT2LMHeadModel always ties lm_head to wte
  d.bos_token_id = f.token("bos_token_id", 50256);
  d.eos_token_id = f.token("eos_token_id", 50256, &d.extra_eos_ids);
  d.pad_token_id = f.token("pad_token_id", -1);
  if (!f.boolean("scale_attn_weights", true))
    fail(Status::UnsupportedShape, "{}: scale_attn_weights false is not supported", f.where());
  if (f.boolean("scale_attn_by_inverse_layer_idx", false))
    fail(Status::UnsupportedShape, "{}: scale_attn_by_inverse_layer_idx is not supported",
         f.where());
  if (d.hidden_size % d.num_attention_heads != 0)
    fail(Status::UnsupportedShape, "{}: n_embd {} is not divisible by n_head {}", f.where(),
         d.hidden_size, d.num_attention_heads);
  d.head_dim = d.hidden_size / d.num_attention_heads;
}

// rope_theta, rope_scaling and partial_rotary_factor; newer transformers nest them in
// "rope_parameters", older ones name the scaling kind "type".
void parse_rope(const Fields& f, arch::ModelDesc& d, double default_theta) {
  arch::Rope& r = d.rope;
  const json* params = nullptr;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    const auto it = f.raw().find(key);
    if (it == f.raw().end() || it->is_null()) continue;
    if (!it->is_object())
      fail(Status::Format, "{}: \"{}\" is {}, expected an object", f.where(), key, it->dump());
    params = &*it;
    break;
  }
  r.theta = f.number("rope_theta", default_theta);
  r.dims = d.head_dim;
  const double partial = f.number("partial_rotary_factor", 1.0);
  if (!(partial > 0 && partial <= 1))
    fail(Status::UnsupportedShape, "{}: partial_rotary_factor is {}, expected (0, 1]", f.where(),
         partial);
  r.dims = int64_t(double(d.head_dim) * partial);
  if (!params) return;
  const Fields p(*params, f.where());
  r.theta = p.number("rope_theta", r.theta);
  std::string kind = p.string("rope_type", p.string("type", "default"));
  if (kind == "default") return;
  r.factor = p.number("factor", 1.0);
  if (kind == "linear") {
    r.scaling = arch::RopeScaling::Linear;
  } else if (kind == "llama3") {
    r.scaling = arch::RopeScaling::Llama3;
    r.low_freq_factor = p.number("low_freq_factor", 1.0);
    r.high_freq_factor = p.number("high_freq_factor", 4.0);
    r.original_max_positions = p.integer("original_max_position_embeddings", std::nullopt, 1);
  } else if (kind == "yarn") {
    r.scaling = arch::RopeScaling::Yarn;
    r.original_max_positions =
        p.integer("original_max_position_embeddings", d.max_position_embeddings, 1);
    r.beta_fast = p.number("beta_fast", 32.0);
    r.beta_slow = p.number("beta_slow", 1.0);
    r.attention_factor = p.number("attention_factor", 0.0);
    if (p.has("mscale") || p.has("mscale_all_dim") || p.has("truncate"))
      fail(Status::UnsupportedShape,
           "{}: yarn rope scaling with mscale / mscale_all_dim / truncate is not supported",
           f.where());
  } else {
    fail(Status::UnsupportedShape,
         "{}: rope scaling \"{}\" is not supported (supported: default, linear, llama3, yarn); "
         "dynamic NTK "
         "scaling changes with the sequence length and would give other logits than transformers",
         f.where(), kind);
  }
}

// Llama, Mistral and Qwen2 share one layer: RMSNorm, rotary, GQA, SwiGLU. Their configs differ
// in defaults (the transformers config classes) and in which biases exist.
void parse_llama_family(const Fields& f, arch::ModelDesc& d, const std::string& mt) {
  const bool mistral = mt == "mistral", qwen2 = mt == "qwen2";
  d.vocab_size = f.integer("vocab_size", qwen2 ? 151936 : 32000);
  d.hidden_size = f.integer("hidden_size", 4096);
  d.ffn_dim = f.integer("intermediate_size", mistral ? 14336 : qwen2 ? 22016 : 11008);
  d.num_hidden_layers = f.integer("num_hidden_layers", 32);
  d.num_attention_heads = f.integer("num_attention_heads", 32, 1);
  d.num_key_value_heads = f.integer("num_key_value_heads", mistral ? 8 : d.num_attention_heads, 1);
  d.max_position_embeddings = f.integer("max_position_embeddings", mistral ? 4096 * 32
                                                                   : qwen2 ? 32768
                                                                           : 2048);
  if (f.has("head_dim")) {
    d.head_dim = f.integer("head_dim", std::nullopt, 1);
  } else {
    if (d.hidden_size % d.num_attention_heads != 0)
      fail(Status::UnsupportedShape,
           "{}: hidden_size {} is not divisible by num_attention_heads {} and no head_dim is given",
           f.where(), d.hidden_size, d.num_attention_heads);
    d.head_dim = d.hidden_size / d.num_attention_heads;
  }
  d.word_embed_proj_dim = d.hidden_size;
  d.norm = arch::Norm::RMSNorm;
  d.norm_eps = f.number("rms_norm_eps", 1e-6);
  d.positions = arch::Positions::Rotary;
  d.mlp = arch::Mlp::Gated;
  d.act = parse_act(f.string("hidden_act", "silu"), f.where(), "hidden_act");
  d.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  if (qwen2) {
    d.qkv_bias = true;  // Qwen2Attention always has q/k/v biases and none on o_proj
  } else {
    d.qkv_bias = d.o_bias = f.boolean("attention_bias", false);
    d.mlp_bias = f.boolean("mlp_bias", false);
  }
  parse_rope(f, d, 10000.0);
  if (mistral) {
    // null (Mistral 7B v0.2 and later) is no window; absent, MistralConfig's default of 4096.
    const auto sw = f.raw().find("sliding_window");
    d.sliding_window =
        sw != f.raw().end() && sw->is_null() ? 0 : f.integer("sliding_window", 4096, 0);
  } else if (qwen2 && f.boolean("use_sliding_window", false)) {
    // Qwen2 applies the window only to layers from max_window_layers on; the engines have one
    // attention for every layer.
    fail(Status::UnsupportedShape,
         "{}: use_sliding_window true is not supported (per-layer sliding windows)", f.where());
  }
  d.bos_token_id = f.token("bos_token_id", qwen2 ? -1 : 1);
  d.eos_token_id = f.token("eos_token_id", qwen2 ? -1 : 2, &d.extra_eos_ids);
  d.pad_token_id = f.token("pad_token_id", -1);
}

}  // namespace

arch::ModelDesc parse_hf_config(std::string_view json_text, std::string_view where) {
  json j;
  try {
    j = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    fail(Status::Format, "{} is not valid JSON: {}. Expected a Hugging Face config.json.", where,
         e.what());
  }
  return parse_hf_config_json(j, where);
}

arch::ModelDesc parse_hf_config_json(const json& j, std::string_view where) {
  if (!j.is_object())
    fail(Status::Format, "{}: expected a JSON object, found {}", where, j.type_name());
  const auto mt_it = j.find("model_type");
  if (mt_it == j.end() || !mt_it->is_string())
    fail(Status::Format,
         "{}: \"model_type\" is missing or not a string; expected one of opt, llama, mistral, "
         "qwen2, gpt2 (a Hugging Face config.json)",
         where);
  const std::string mt = mt_it->get<std::string>();
  const auto fam = std::find_if(kFamilies.begin(), kFamilies.end(),
                                [&](const Family& f) { return f.model_type == mt; });
  if (fam == kFamilies.end())
    fail(Status::UnsupportedShape,
         "{}: model_type is \"{}\", which SparseFlow does not run (it runs opt, llama, "
         "mistral, qwen2 and gpt2)",
         where, mt);
  if (const auto ar = j.find("architectures"); ar != j.end() && !ar->is_null()) {
    if (!ar->is_array() || ar->empty())
      fail(Status::Format, "{}: \"architectures\" should be a non-empty list of strings, found {}",
           where, ar->dump());
    for (const auto& a : *ar) {
      if (!a.is_string())
        fail(Status::Format, "{}: \"architectures\" holds {}, expected strings", where, a.dump());
      const auto s = a.get<std::string>();
      if (std::find(fam->architectures.begin(), fam->architectures.end(), s) ==
          fam->architectures.end())
        fail(Status::UnsupportedShape,
             "{}: architecture \"{}\" is not supported; for model_type \"{}\" SparseFlow "
             "runs {} (decoder-only language models)",
             where, s, mt, fmt::join(fam->architectures, " and "));
    }
  }
  const Fields f(j, where);
  arch::ModelDesc d;
  d.arch = mt;
  if (mt == "opt")
    parse_opt(f, d);
  else if (mt == "gpt2")
    parse_gpt2(f, d);
  else
    parse_llama_family(f, d, mt);
  d.names = arch::tensor_names(d.arch, d.has_projections());
  arch::validate(d, where);
  return d;
}

void apply_generation_config(arch::ModelDesc& d, const json& j, std::string_view where) {
  if (!j.is_object())
    fail(Status::Format, "{}: expected a JSON object, found {}", where, j.type_name());
  const Fields f(j, where);
  std::vector<int64_t> ids;
  const int64_t eos = f.token("eos_token_id", -1, &ids);
  if (eos >= 0) ids.insert(ids.begin(), eos);
  for (int64_t id : ids) {
    if (id < 0 || id >= d.vocab_size)
      fail(Status::UnsupportedShape, "{}: eos_token_id {} is outside the vocabulary of {}", where,
           id, d.vocab_size);
    if (d.eos_token_id < 0)
      d.eos_token_id = id;
    else if (!d.is_eos(id))
      d.extra_eos_ids.push_back(id);
  }
  if (d.bos_token_id < 0) d.bos_token_id = f.token("bos_token_id", -1);
}

json hf_config_json(const arch::ModelDesc& d) {
  json j;
  j["model_type"] = d.arch;
  auto eos = [&]() -> json {
    if (d.extra_eos_ids.empty()) return d.eos_token_id;
    json a = json::array({d.eos_token_id});
    for (int64_t id : d.extra_eos_ids) a.push_back(id);
    return a;
  };
  auto token = [&](const char* key, int64_t id) { j[key] = id >= 0 ? json(id) : json(nullptr); };
  if (d.arch == "opt") {
    j["architectures"] = {"OPTForCausalLM"};
    j["vocab_size"] = d.vocab_size;
    j["hidden_size"] = d.hidden_size;
    j["num_hidden_layers"] = d.num_hidden_layers;
    j["ffn_dim"] = d.ffn_dim;
    j["num_attention_heads"] = d.num_attention_heads;
    j["max_position_embeddings"] = d.max_position_embeddings;
    j["word_embed_proj_dim"] = d.word_embed_proj_dim;
    j["do_layer_norm_before"] = d.pre_norm;
    j["_remove_final_layer_norm"] = d.pre_norm && !d.final_norm;
    j["enable_bias"] = d.qkv_bias;
    j["layer_norm_elementwise_affine"] = d.norm_affine;
    j["tie_word_embeddings"] = d.tie_word_embeddings;
    j["activation_function"] = act_name(d.act);
  } else if (d.arch == "gpt2") {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["vocab_size"] = d.vocab_size;
    j["n_embd"] = d.hidden_size;
    j["n_layer"] = d.num_hidden_layers;
    j["n_head"] = d.num_attention_heads;
    j["n_inner"] = d.ffn_dim;
    j["n_positions"] = d.max_position_embeddings;
    j["layer_norm_epsilon"] = d.norm_eps;
    j["activation_function"] = act_name(d.act);
    j["tie_word_embeddings"] = true;
  } else {
    const std::string cls = d.arch == "llama"     ? "LlamaForCausalLM"
                            : d.arch == "mistral" ? "MistralForCausalLM"
                                                  : "Qwen2ForCausalLM";
    j["architectures"] = {cls};
    j["vocab_size"] = d.vocab_size;
    j["hidden_size"] = d.hidden_size;
    j["intermediate_size"] = d.ffn_dim;
    j["num_hidden_layers"] = d.num_hidden_layers;
    j["num_attention_heads"] = d.num_attention_heads;
    j["num_key_value_heads"] = d.num_key_value_heads;
    j["head_dim"] = d.head_dim;
    j["max_position_embeddings"] = d.max_position_embeddings;
    j["rms_norm_eps"] = d.norm_eps;
    j["hidden_act"] = act_name(d.act);
    j["tie_word_embeddings"] = d.tie_word_embeddings;
    j["rope_theta"] = d.rope.theta;
    if (d.rope.dims != d.head_dim)
      j["partial_rotary_factor"] = double(d.rope.dims) / double(d.head_dim);
    const arch::Rope& r = d.rope;
    if (r.scaling == arch::RopeScaling::None) {
      j["rope_scaling"] = nullptr;
    } else {
      json s = {{"rope_type", arch::name(r.scaling)}, {"factor", r.factor}};
      if (r.scaling == arch::RopeScaling::Llama3) {
        s["low_freq_factor"] = r.low_freq_factor;
        s["high_freq_factor"] = r.high_freq_factor;
        s["original_max_position_embeddings"] = r.original_max_positions;
      } else if (r.scaling == arch::RopeScaling::Yarn) {
        s["original_max_position_embeddings"] = r.original_max_positions;
        s["beta_fast"] = r.beta_fast;
        s["beta_slow"] = r.beta_slow;
        if (r.attention_factor > 0) s["attention_factor"] = r.attention_factor;
      }
      j["rope_scaling"] = s;
    }
    if (d.arch == "mistral")
      j["sliding_window"] = d.sliding_window > 0 ? json(d.sliding_window) : json(nullptr);
    if (d.arch == "qwen2") {
      j["use_sliding_window"] = false;
    } else {
      j["attention_bias"] = d.qkv_bias;
      if (d.arch == "llama") j["mlp_bias"] = d.mlp_bias;
    }
  }
  token("pad_token_id", d.pad_token_id);
  token("bos_token_id", d.bos_token_id);
  j["eos_token_id"] = d.eos_token_id >= 0 ? eos() : json(nullptr);
  return j;
}

}  // namespace sf::format
