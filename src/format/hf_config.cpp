#include "format/hf_config.hpp"

#include <algorithm>
#include <array>

#include <fmt/ranges.h>

#include "core/error.hpp"

namespace sf::format {

using json = nlohmann::json;

namespace {

constexpr std::array<std::string_view, 2> kArchitectures = {"OPTForCausalLM", "OPTModel"};
constexpr std::array<std::string_view, 4> kActivations = {"relu", "gelu", "silu", "swish"};
// Larger than any OPT (OPT-175B: hidden 12288, 96 layers, vocab 50272); a value past these is a
// damaged file, and the bounds keep products of sizes far from int64 overflow.
constexpr int64_t kMaxDim = int64_t(1) << 20;
constexpr int64_t kMaxLayers = 4096;

}  // namespace

model::OptConfig parse_opt_config(std::string_view json_text, std::string_view where) {
  json j;
  try {
    j = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    fail(Status::Format, "{} is not valid JSON: {}. Expected a Hugging Face OPT config.json.", where, e.what());
  }
  return parse_opt_config_json(j, where);
}

model::OptConfig parse_opt_config_json(const json& j, std::string_view where) {
  if (!j.is_object()) fail(Status::Format, "{}: expected a JSON object, found {}", where, j.type_name());

  const auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string())
    fail(Status::Format, "{}: \"model_type\" is missing or not a string; expected \"opt\" (a Hugging Face "
         "OPT checkpoint)", where);
  if (mt->get<std::string>() != "opt")
    fail(Status::UnsupportedShape, "{}: model_type is \"{}\", but SparseFlow runs OPT models only "
         "(model_type \"opt\")", where, mt->get<std::string>());
  if (const auto ar = j.find("architectures"); ar != j.end() && !ar->is_null()) {
    if (!ar->is_array() || ar->empty())
      fail(Status::Format, "{}: \"architectures\" should be a non-empty list of strings, found {}", where, ar->dump());
    for (const auto& a : *ar) {
      if (!a.is_string()) fail(Status::Format, "{}: \"architectures\" holds {}, expected strings", where, a.dump());
      const auto s = a.get<std::string>();
      if (std::find(kArchitectures.begin(), kArchitectures.end(), s) == kArchitectures.end())
        fail(Status::UnsupportedShape, "{}: architecture \"{}\" is not supported; SparseFlow runs {} "
             "(decoder-only language models)", where, s, fmt::join(kArchitectures, " and "));
    }
  }

  auto get_int = [&](const char* key, bool required, int64_t fallback, int64_t lo, int64_t hi) -> int64_t {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (required) fail(Status::Format, "{}: required field \"{}\" is missing", where, key);
      return fallback;
    }
    if (!it->is_number_integer())
      fail(Status::Format, "{}: \"{}\" is {}, expected an integer", where, key, it->dump());
    const int64_t v = it->get<int64_t>();
    if (v < lo || v > hi)
      fail(Status::UnsupportedShape, "{}: \"{}\" is {}, expected {} to {}", where, key, v, lo, hi);
    return v;
  };
  auto get_bool = [&](const char* key, bool fallback) -> bool {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(Status::Format, "{}: \"{}\" is {}, expected true or false", where, key, it->dump());
    return it->get<bool>();
  };

  model::OptConfig c;
  c.vocab_size = get_int("vocab_size", true, 0, 1, kMaxDim * 4);
  c.hidden_size = get_int("hidden_size", true, 0, 1, kMaxDim);
  c.num_hidden_layers = get_int("num_hidden_layers", true, 0, 1, kMaxLayers);
  c.ffn_dim = get_int("ffn_dim", true, 0, 1, kMaxDim * 4);
  c.num_attention_heads = get_int("num_attention_heads", true, 0, 1, kMaxDim);
  c.max_position_embeddings = get_int("max_position_embeddings", true, 0, 1, kMaxDim);
  c.word_embed_proj_dim = get_int("word_embed_proj_dim", false, c.hidden_size, 1, kMaxDim);
  c.do_layer_norm_before = get_bool("do_layer_norm_before", true);
  c.remove_final_layer_norm = get_bool("_remove_final_layer_norm", false);
  c.enable_bias = get_bool("enable_bias", true);
  c.layer_norm_elementwise_affine = get_bool("layer_norm_elementwise_affine", true);
  c.tie_word_embeddings = get_bool("tie_word_embeddings", true);
  c.pad_token_id = get_int("pad_token_id", false, 1, 0, c.vocab_size - 1);
  c.bos_token_id = get_int("bos_token_id", false, 2, 0, c.vocab_size - 1);
  c.eos_token_id = get_int("eos_token_id", false, 2, 0, c.vocab_size - 1);
  if (const auto it = j.find("activation_function"); it != j.end() && !it->is_null()) {
    if (!it->is_string())
      fail(Status::Format, "{}: \"activation_function\" is {}, expected a string", where, it->dump());
    c.activation_function = it->get<std::string>();
    if (std::find(kActivations.begin(), kActivations.end(), c.activation_function) == kActivations.end())
      fail(Status::UnsupportedShape, "{}: activation_function \"{}\" is not supported (supported: {})", where,
           c.activation_function, fmt::join(kActivations, ", "));
  }
  if (c.hidden_size % c.num_attention_heads != 0)
    fail(Status::UnsupportedShape, "{}: hidden_size {} is not divisible by num_attention_heads {}; OPT needs "
         "whole heads", where, c.hidden_size, c.num_attention_heads);
  return c;
}

json opt_config_to_json(const model::OptConfig& c) {
  json j;
  j["model_type"] = "opt";
  j["architectures"] = {"OPTForCausalLM"};
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["ffn_dim"] = c.ffn_dim;
  j["num_attention_heads"] = c.num_attention_heads;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["word_embed_proj_dim"] = c.word_embed_proj_dim;
  j["do_layer_norm_before"] = c.do_layer_norm_before;
  j["_remove_final_layer_norm"] = c.remove_final_layer_norm;
  j["enable_bias"] = c.enable_bias;
  j["layer_norm_elementwise_affine"] = c.layer_norm_elementwise_affine;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["activation_function"] = c.activation_function;
  j["pad_token_id"] = c.pad_token_id;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  return j;
}

}  // namespace sf::format
