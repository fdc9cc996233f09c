// format::parse_hf_config on hand-written config.json texts of every model_type it reads: fields
// left out take the defaults of the transformers config class (LlamaConfig, MistralConfig,
// Qwen2Config, GPT2Config), the rope settings in each spelling transformers has written
// ("type" / "rope_type" in rope_scaling, transformers 5's rope_parameters), eos lists, and the
// configs it must refuse, with the words the message must say. Every accepted config also survives
// the round trip through hf_config_json (what .sf headers store).
#include <gtest/gtest.h>

#include <string>

#include "core/error.hpp"
#include "format/hf_config.hpp"

namespace sf::format {
namespace {

arch::ModelDesc parse(const std::string& text) {
  arch::ModelDesc d = parse_hf_config(text, "test/config.json");
  EXPECT_EQ(parse_hf_config_json(hf_config_json(d), "round trip"), d) << text;
  return d;
}

// The error parse_hf_config throws for `text` (a failed expectation when it accepts it).
Error refusal(const std::string& text) {
  try {
    parse_hf_config(text, "test/config.json");
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << text;
  return Error(Status::Ok, "");
}

void expect_refused(const std::string& text, Status status, const std::string& needle) {
  const Error e = refusal(text);
  EXPECT_EQ(e.status(), status) << text << "\n" << e.what();
  EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
      << "message lacks \"" << needle << "\": " << e.what();
  EXPECT_NE(std::string(e.what()).find("test/config.json"), std::string::npos) << e.what();
}

// A small Llama-family config with `extra` (a JSON fragment starting with a comma, naming none of
// the fields given here) appended; kv_heads 0 leaves num_key_value_heads out.
std::string llama(const std::string& extra = "", const std::string& type = "llama",
                  int kv_heads = 2) {
  std::string kv = kv_heads ? R"(, "num_key_value_heads": )" + std::to_string(kv_heads) : "";
  return R"({"model_type": ")" + type +
         R"(", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 8, "max_position_embeddings": 128)" +
         kv + extra + "}";
}

TEST(HfConfigDefaults, LlamaConfigClassDefaults) {
  const auto d = parse(R"({"model_type": "llama"})");
  EXPECT_EQ(d.arch, "llama");
  EXPECT_EQ(d.vocab_size, 32000);
  EXPECT_EQ(d.hidden_size, 4096);
  EXPECT_EQ(d.ffn_dim, 11008);
  EXPECT_EQ(d.num_hidden_layers, 32);
  EXPECT_EQ(d.num_attention_heads, 32);
  EXPECT_EQ(d.num_key_value_heads, 32);  // num_key_value_heads defaults to the heads
  EXPECT_EQ(d.head_dim, 128);
  EXPECT_EQ(d.max_position_embeddings, 2048);
  EXPECT_EQ(d.norm, arch::Norm::RMSNorm);
  EXPECT_DOUBLE_EQ(d.norm_eps, 1e-6);
  EXPECT_EQ(d.positions, arch::Positions::Rotary);
  EXPECT_DOUBLE_EQ(d.rope.theta, 10000.0);
  EXPECT_EQ(d.rope.dims, 128);
  EXPECT_EQ(d.rope.scaling, arch::RopeScaling::None);
  EXPECT_EQ(d.mlp, arch::Mlp::Gated);
  EXPECT_EQ(d.act, arch::Act::SiLU);
  EXPECT_FALSE(d.qkv_bias || d.o_bias || d.mlp_bias);
  EXPECT_FALSE(d.tie_word_embeddings);
  EXPECT_EQ(d.sliding_window, 0);
  EXPECT_EQ(d.bos_token_id, 1);
  EXPECT_EQ(d.eos_token_id, 2);
  EXPECT_EQ(d.pad_token_id, -1);
  EXPECT_EQ(d.names.q, "self_attn.q_proj");
  EXPECT_EQ(d.layer_prefix(3), "model.layers.3.");
}

TEST(HfConfigDefaults, MistralConfigClassDefaults) {
  const auto d = parse(R"({"model_type": "mistral"})");
  EXPECT_EQ(d.arch, "mistral");
  EXPECT_EQ(d.ffn_dim, 14336);
  EXPECT_EQ(d.num_attention_heads, 32);
  EXPECT_EQ(d.num_key_value_heads, 8);
  EXPECT_EQ(d.head_dim, 128);
  EXPECT_EQ(d.max_position_embeddings, 4096 * 32);
  EXPECT_EQ(d.sliding_window, 4096);
  EXPECT_DOUBLE_EQ(d.rope.theta, 10000.0);
  EXPECT_FALSE(d.qkv_bias || d.o_bias || d.mlp_bias);
  EXPECT_FALSE(d.tie_word_embeddings);
  EXPECT_EQ(d.bos_token_id, 1);
  EXPECT_EQ(d.eos_token_id, 2);
  // "sliding_window": null turns the window off (Mistral v0.2 and later).
  EXPECT_EQ(parse(R"({"model_type": "mistral", "sliding_window": null})").sliding_window, 0);
  EXPECT_EQ(parse(llama(R"(, "sliding_window": 8)", "mistral")).sliding_window, 8);
}

TEST(HfConfigDefaults, Qwen2ConfigClassDefaults) {
  const auto d = parse(R"({"model_type": "qwen2"})");
  EXPECT_EQ(d.arch, "qwen2");
  EXPECT_EQ(d.vocab_size, 151936);
  EXPECT_EQ(d.ffn_dim, 22016);
  EXPECT_EQ(d.num_key_value_heads, 32);
  EXPECT_EQ(d.max_position_embeddings, 32768);
  // Qwen2Attention always has q/k/v biases and none on o_proj or the MLP.
  EXPECT_TRUE(d.qkv_bias);
  EXPECT_FALSE(d.o_bias || d.mlp_bias);
  EXPECT_FALSE(d.tie_word_embeddings);
  EXPECT_EQ(d.sliding_window, 0);  // use_sliding_window defaults to false; the window is unused
  EXPECT_EQ(d.bos_token_id, -1);
  EXPECT_EQ(d.eos_token_id, -1);
  const auto tied = parse(llama(R"(, "tie_word_embeddings": true, "sliding_window": 4096,
                                    "use_sliding_window": false, "max_window_layers": 28)",
                                "qwen2"));
  EXPECT_TRUE(tied.tie_word_embeddings);
  EXPECT_EQ(tied.sliding_window, 0);
}

TEST(HfConfigDefaults, Gpt2ConfigClassDefaults) {
  const auto d = parse(R"({"model_type": "gpt2"})");
  EXPECT_EQ(d.arch, "gpt2");
  EXPECT_EQ(d.vocab_size, 50257);
  EXPECT_EQ(d.hidden_size, 768);
  EXPECT_EQ(d.num_hidden_layers, 12);
  EXPECT_EQ(d.num_attention_heads, 12);
  EXPECT_EQ(d.head_dim, 64);
  EXPECT_EQ(d.ffn_dim, 4 * 768);  // n_inner null: 4 x n_embd
  EXPECT_EQ(d.max_position_embeddings, 1024);
  EXPECT_EQ(d.norm, arch::Norm::LayerNorm);
  EXPECT_DOUBLE_EQ(d.norm_eps, 1e-5);
  EXPECT_EQ(d.positions, arch::Positions::Learned);
  EXPECT_EQ(d.position_offset, 0);
  EXPECT_EQ(d.act, arch::Act::GELUTanh);
  EXPECT_EQ(d.mlp, arch::Mlp::Plain);
  EXPECT_TRUE(d.qkv_bias && d.o_bias && d.mlp_bias);
  EXPECT_TRUE(d.tie_word_embeddings);
  EXPECT_EQ(d.bos_token_id, 50256);
  EXPECT_EQ(d.eos_token_id, 50256);
  EXPECT_EQ(d.names.embed, "transformer.wte");
  EXPECT_EQ(d.names.q, "attn.q_proj");  // the loader splits c_attn into q, k, v
  const auto small = parse(R"({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2,
                               "n_positions": 64, "n_inner": 96, "vocab_size": 256,
                               "activation_function": "gelu_pytorch_tanh", "bos_token_id": 1,
                               "eos_token_id": 2})");
  EXPECT_EQ(small.ffn_dim, 96);
  EXPECT_EQ(small.head_dim, 16);
  EXPECT_EQ(small.act, arch::Act::GELUTanh);
}

TEST(HfConfigFields, BiasesHeadDimAndActivation) {
  const auto b = parse(llama(R"(, "attention_bias": true, "mlp_bias": true)"));
  EXPECT_TRUE(b.qkv_bias && b.o_bias && b.mlp_bias);
  // Qwen2 has its biases whatever attention_bias says.
  const auto q = parse(llama(R"(, "attention_bias": false)", "qwen2"));
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
  // An explicit head_dim wins over hidden / heads, and need not divide hidden.
  const auto h = parse(llama(R"(, "head_dim": 24)", "mistral"));
  EXPECT_EQ(h.head_dim, 24);
  EXPECT_EQ(h.q_dim(), 8 * 24);
  EXPECT_EQ(h.kv_dim(), 2 * 24);
  EXPECT_EQ(h.rope.dims, 24);
  EXPECT_EQ(parse(R"({"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3,
                      "head_dim": 32})")
                .head_dim,
            32);
  EXPECT_EQ(parse(llama(R"(, "hidden_act": "gelu")")).act, arch::Act::GELU);
  EXPECT_DOUBLE_EQ(parse(llama(R"(, "rms_norm_eps": 1e-5)")).norm_eps, 1e-5);
}

TEST(HfConfigRope, ScalingInEverySpelling) {
  // transformers 4.x before 4.42 named the kind "type".
  const auto lin = parse(llama(R"(, "rope_scaling": {"type": "linear", "factor": 4.0})"));
  EXPECT_EQ(lin.rope.scaling, arch::RopeScaling::Linear);
  EXPECT_DOUBLE_EQ(lin.rope.factor, 4.0);
  // Both keys (what 4.4x writes back after reading "type"): the same.
  EXPECT_EQ(
      parse(llama(R"(, "rope_scaling": {"type": "linear", "rope_type": "linear", "factor": 4})"))
          .rope,
      lin.rope);

  const auto l3 = parse(llama(R"(, "rope_theta": 500000,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})"));
  EXPECT_EQ(l3.rope.scaling, arch::RopeScaling::Llama3);
  EXPECT_DOUBLE_EQ(l3.rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(l3.rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(l3.rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(l3.rope.high_freq_factor, 4.0);
  EXPECT_EQ(l3.rope.original_max_positions, 8192);

  // transformers 5 nests rope_theta with the rest in rope_parameters.
  const auto v5 =
      parse(llama(R"(, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
      "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192})"));
  EXPECT_EQ(v5.rope, l3.rope);
  const auto plain5 = parse(
      llama(R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0})", "qwen2"));
  EXPECT_EQ(plain5.rope.scaling, arch::RopeScaling::None);
  EXPECT_DOUBLE_EQ(plain5.rope.theta, 1e6);
  EXPECT_EQ(parse(llama(R"(, "rope_scaling": null, "rope_theta": 1e6)")).rope, plain5.rope);

  const auto yarn = parse(llama(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
      "original_max_position_embeddings": 32})"));
  EXPECT_EQ(yarn.rope.scaling, arch::RopeScaling::Yarn);
  EXPECT_EQ(yarn.rope.original_max_positions, 32);
  EXPECT_DOUBLE_EQ(yarn.rope.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(yarn.rope.beta_slow, 1.0);
  // yarn without original_max_position_embeddings: max_position_embeddings, as HF does.
  EXPECT_EQ(parse(llama(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0})"))
                .rope.original_max_positions,
            128);

  const auto half = parse(llama(R"(, "partial_rotary_factor": 0.5)"));
  EXPECT_EQ(half.head_dim, 8);
  EXPECT_EQ(half.rope.dims, 4);
}

TEST(HfConfigTokens, EosListsAndIds) {
  // Llama 3.1 instruct: eos is a list; the first is the id, the rest end a turn too.
  const auto d = parse(R"({"model_type": "llama", "vocab_size": 128256, "hidden_size": 64,
      "num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 64,
      "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})");
  EXPECT_EQ(d.bos_token_id, 128000);
  EXPECT_EQ(d.eos_token_id, 128001);
  EXPECT_EQ(d.extra_eos_ids, (std::vector<int64_t>{128008, 128009}));
  EXPECT_TRUE(d.is_eos(128009));
  EXPECT_FALSE(d.is_eos(128000));
  EXPECT_EQ(parse(llama(R"(, "eos_token_id": [5])")).extra_eos_ids.size(), 0u);
  // null is HF's None (no such token), not the config class's default (absent).
  const auto none = parse(llama(R"(, "bos_token_id": null, "eos_token_id": null)"));
  EXPECT_EQ(none.bos_token_id, -1);
  EXPECT_EQ(none.eos_token_id, -1);
  EXPECT_EQ(parse(R"({"model_type": "gpt2", "bos_token_id": null})").bos_token_id, -1);
}

TEST(HfConfigRefusals, WhatTheEnginesDoNotRun) {
  // Dynamic NTK scaling changes with the sequence length: refused in either spelling.
  expect_refused(llama(R"(, "rope_scaling": {"type": "dynamic", "factor": 2.0})"),
                 Status::UnsupportedShape, "dynamic");
  expect_refused(llama(R"(, "rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4,
                          "factor": 2.0})"),
                 Status::UnsupportedShape, "rope scaling \"dynamic\" is not supported");
  expect_refused(llama(R"(, "rope_scaling": {"rope_type": "longrope", "factor": 2.0})"),
                 Status::UnsupportedShape, "\"longrope\" is not supported");
  expect_refused(llama(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "mscale": 1.0})"),
                 Status::UnsupportedShape, "mscale");
  // Qwen2's per-layer window (layers from max_window_layers on).
  expect_refused(llama(R"(, "use_sliding_window": true, "sliding_window": 4096)", "qwen2"),
                 Status::UnsupportedShape, "use_sliding_window true is not supported");
  // Heads that do not divide.
  expect_refused(llama("", "llama", 3), Status::UnsupportedShape,
                 "not a multiple of num_key_value_heads");
  expect_refused(R"({"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3})",
                 Status::UnsupportedShape, "no head_dim is given");
  expect_refused(R"({"model_type": "gpt2", "n_embd": 100, "n_head": 3})", Status::UnsupportedShape,
                 "not divisible by n_head");
  expect_refused(
      R"({"model_type": "opt", "vocab_size": 50, "hidden_size": 100, "num_hidden_layers": 1,
                     "ffn_dim": 64, "num_attention_heads": 3, "max_position_embeddings": 16})",
      Status::UnsupportedShape, "not divisible by num_attention_heads");
  expect_refused(R"({"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": true})",
                 Status::UnsupportedShape, "scale_attn_by_inverse_layer_idx");
}

TEST(HfConfigRefusals, MalformedFields) {
  expect_refused(llama(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0})"),
                 Status::Format, "\"original_max_position_embeddings\" is missing");
  expect_refused(llama(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 32})"),
                 Status::UnsupportedShape, "high_freq_factor > low_freq_factor");
  expect_refused(llama(R"(, "rope_scaling": "linear")"), Status::Format, "expected an object");
  expect_refused(llama(R"(, "rope_theta": "big")"), Status::Format, "\"rope_theta\"");
  expect_refused(llama(R"(, "partial_rotary_factor": 1.5)"), Status::UnsupportedShape,
                 "partial_rotary_factor");
  expect_refused(llama(R"(, "head_dim": 0)"), Status::UnsupportedShape, "\"head_dim\" is 0");
  expect_refused(llama("", "llama", 16), Status::UnsupportedShape, "\"num_key_value_heads\" is 16");
  expect_refused(llama(R"(, "hidden_act": "relu2")"), Status::UnsupportedShape,
                 "\"relu2\" is not supported");
  expect_refused(llama(R"(, "eos_token_id": [])"), Status::Format, "expected one token id");
  expect_refused(llama(R"(, "bos_token_id": [1, 2])"), Status::Format, "expected one token id");
  expect_refused(llama(R"(, "eos_token_id": [2, 300])"), Status::UnsupportedShape,
                 "outside the vocabulary");
  expect_refused(llama(R"(, "eos_token_id": "2")"), Status::Format, "expected a token id");
  expect_refused(llama(R"(, "tie_word_embeddings": "yes")"), Status::Format, "true or false");
  expect_refused(llama(R"(, "sliding_window": -1)", "mistral"), Status::UnsupportedShape,
                 "\"sliding_window\" is -1");
  expect_refused(llama(R"(, "architectures": ["MistralForCausalLM"])"), Status::UnsupportedShape,
                 "architecture \"MistralForCausalLM\" is not supported");
  expect_refused(R"({"model_type": "phi3"})", Status::UnsupportedShape, "\"phi3\"");
}

}  // namespace
}  // namespace sf::format
