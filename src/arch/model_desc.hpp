// A decoder-only language model described as data: sizes, the norm, the positions, the attention
// heads and KV heads, the MLP, the biases, the tying and the tensor names. Every engine (CPU,
// CUDA, offloaded) is one forward pass driven by this description; an architecture (OPT, Llama,
// Mistral, Qwen2, GPT-2) is one way of filling it in (presets.cpp, and the HF config parser in
// format/hf_config.cpp), not a copy of the engine.
//
// The layer body every engine runs:
//   pre_norm:  h += attn(norm1(h)); h += mlp(norm2(h))
//   post_norm: h = norm1(h + attn(h)); h = norm2(h + mlp(h))          (OPT-350m)
//   attn: q, k, v = x Wq^T (+bq), x Wk^T (+bk), x Wv^T (+bv); rotary on q, k when positions are
//         rotary; softmax(q k^T * scale) over the causal window, kv head = q head / group; o proj
//   mlp:  plain: down(act(up x)); gated: down(act(gate x) * (up x))   (SwiGLU when act is SiLU)
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sf::arch {

enum class Norm : uint8_t { LayerNorm, RMSNorm };
enum class Positions : uint8_t { Learned, Rotary };
enum class Mlp : uint8_t { Plain, Gated };
// GELU is the exact (erf) form; GELUTanh is HF's "gelu_new" / "gelu_pytorch_tanh" (GPT-2).
enum class Act : uint8_t { ReLU, GELU, GELUTanh, SiLU };
enum class RopeScaling : uint8_t { None, Linear, Llama3, Yarn };

std::string_view name(Norm n);
std::string_view name(Positions p);
std::string_view name(Mlp m);
std::string_view name(Act a);
std::string_view name(RopeScaling s);

// Rotary position embeddings in HF's rotate_half convention: within the first `dims` elements of
// a head, element i pairs with element i + dims/2; the rest of the head passes through.
struct Rope {
  double theta = 10000.0;
  int64_t dims = 0;  // rotary elements per head: head_dim, or fewer (partial_rotary_factor)
  RopeScaling scaling = RopeScaling::None;
  double factor = 1.0;                                   // linear, llama3, yarn
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int64_t original_max_positions = 0;                    // llama3, yarn
  double beta_fast = 32.0, beta_slow = 1.0;              // yarn
  double attention_factor = 0.0;                         // yarn; 0: HF's default 0.1 ln(factor) + 1
  bool operator==(const Rope&) const = default;
};

// Tensor names without ".weight" / ".bias". `layer` holds "{}" where the layer index goes. Empty
// names are roles the architecture does not have (positions for rotary models, gate for plain
// MLPs, project_in/out unless embed_dim != hidden).
struct TensorNames {
  std::string embed, positions, final_norm, lm_head, project_in, project_out;
  std::string layer;
  std::string attn_norm, ffn_norm, q, k, v, o, gate, up, down;
  bool operator==(const TensorNames&) const = default;
};

struct ModelDesc {
  std::string
      arch;  // "opt", "llama", "mistral", "qwen2", "gpt2": names the preset, the tensor names
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // == num_attention_heads without GQA
  int64_t head_dim = 0;             // explicit: Mistral and Qwen3 set it apart from hidden / heads
  int64_t ffn_dim = 0;              // OPT ffn_dim, Llama intermediate_size, GPT-2 n_inner
  int64_t max_position_embeddings = 0;
  int64_t word_embed_proj_dim =
      0;                       // token-embedding width; != hidden_size: project_in/out (OPT-350m)
  int64_t sliding_window = 0;  // Mistral: a key is visible iff query pos - key pos < window; 0: off

  Norm norm = Norm::LayerNorm;
  double norm_eps = 1e-5;
  bool norm_affine = true;  // LayerNorm with weight and bias (every model but a few OPT exports)
  bool pre_norm = true;     // false: post-norm
  bool final_norm = true;   // a norm after the last layer

  Positions positions = Positions::Learned;
  int64_t position_offset = 0;  // learned: row of position 0 in the table (OPT: 2)
  Rope rope;

  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  Mlp mlp = Mlp::Plain;
  Act act = Act::ReLU;
  bool tie_word_embeddings = true;  // lm_head reads the token embedding
  double attn_scale = 0.0;          // 0: head_dim^-0.5
  int64_t pad_token_id = -1, bos_token_id = -1, eos_token_id = -1;
  std::vector<int64_t> extra_eos_ids;  // further end-of-turn ids (generation_config: Llama 3)

  TensorNames names;

  bool operator==(const ModelDesc&) const = default;

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t group() const {
    return num_attention_heads / num_key_value_heads;
  }  // q heads per kv head
  float scale() const;
  bool has_projections() const { return word_embed_proj_dim != hidden_size; }
  bool is_gated() const { return mlp == Mlp::Gated; }
  bool has_bias() const { return qkv_bias || o_bias || mlp_bias; }
  std::string layer_prefix(int64_t layer) const;  // "model.layers.3." (with the trailing dot)
  // The linear layers of a decoder layer, by their name suffix ("self_attn.q_proj", ...), in the
  // order the layer runs them.
  std::vector<std::string> layer_linears() const;
  bool is_eos(int64_t id) const;
};

// Throws Error(UnsupportedShape) naming the field when the description is not one the engines
// can run (sizes not positive or beyond limits, heads that do not divide, rotary dims odd or
// larger than the head, a gated MLP with ReLU, ...). `where` names the source in the message.
void validate(const ModelDesc& d, std::string_view where);

// An architecture's defaults (those of its transformers config class: norm, positions, MLP,
// biases, tying, special ids) with no sizes yet. Throws for an unknown arch.
ModelDesc preset(std::string_view arch);
// Fills what follows from the sizes: KV heads (= heads), head_dim (= hidden / heads),
// word_embed_proj_dim (= hidden) and rotary dims (= head_dim) where they are 0, and the tensor
// names. Then validate().
void complete(ModelDesc& d);

// The tensor names of an architecture. Throws for an unknown arch.
TensorNames tensor_names(std::string_view arch, bool projections);

// One line: "llama: 30 layers, hidden 576, 9 heads / 3 KV heads of 64, SwiGLU 1536, RMSNorm, rope
// 1e+05".
std::string summary(const ModelDesc& d);

// One tensor a checkpoint of this description holds, with the shape it implies.
struct ExpectedTensor {
  std::string name;  // full name with ".weight" / ".bias"
  std::vector<int64_t> shape;
  bool prunable = false;  // a decoder linear weight: a 2:4 candidate
};
// Every tensor in a canonical order (embeddings, layers, final norm, lm_head). lm_head.weight is
// listed only when `untied_lm_head`.
std::vector<ExpectedTensor> expected_tensors(const ModelDesc& d, bool untied_lm_head);

}  // namespace sf::arch
