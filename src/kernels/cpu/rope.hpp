// Rotary position embeddings (RoPE) as Hugging Face transformers computes them, for every engine:
// the host builds the inverse-frequency table once per model (rope_inv_freq), the CUDA kernels
// (attention.cu) and the CPU engine rotate q and k with it.
//
// Convention: HF's rotate_half. Within the first rotary_dims elements of a head, element i < half
// (half = rotary_dims / 2) pairs with element i + half, both at angle pos * inv_freq[i]:
//   out[i]        = x[i] cos - x[i + half] sin
//   out[i + half] = x[i + half] cos + x[i] sin
// and elements rotary_dims..head_dim-1 pass through (partial rotary).
//
// HF's order of operations and the dtype of each step (LlamaRotaryEmbedding.forward and
// apply_rotary_pos_emb; the table from modeling_rope_utils.py, computed in fp32 on the CPU):
//   freqs = float(pos) * inv_freq[i]                              fp32, one rounding
//   cos, sin = cos(freqs), sin(freqs), each times attention_factor  fp32
//   cos, sin -> the activation dtype (.to(x.dtype))
//   x cos, rotate_half(x) sin, their sum                          each rounded to the activation
//   dtype
// rope_cos_sin / apply_rope_cpu are that sequence for fp32 activations (no narrowing); the CUDA
// kernels round at the same three points for fp16 / bf16. cos and sin are computed in fp64 here and
// rounded to fp32 (PyTorch's fp32 kernels are within 1-2 ulp of that).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace sf::cpu {

struct RopeParams {
  enum Scaling : uint8_t { None, Linear, Llama3, Yarn };
  double theta = 10000.0;   // rope_theta
  int64_t rotary_dims = 0;  // even, 2..head_dim: head_dim, or int(head_dim * partial_rotary_factor)
  Scaling scaling = None;   // rope_type: "default", "linear", "llama3", "yarn"
  double factor = 1.0;      // linear, llama3, yarn
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int64_t original_max_positions = 0;        // llama3, yarn: original_max_position_embeddings
  double beta_fast = 32.0, beta_slow = 1.0;  // yarn
  double attention_factor =
      0.0;  // yarn: the cos/sin scale; 0: HF's default 0.1 ln(factor) + 1 (1 if factor <= 1)
  bool yarn_truncate = true;  // yarn: HF's "truncate" (floor / ceil the correction range)
};

// inv_freq [rotary_dims / 2] in fp32, as HF's _compute_default_rope_parameters,
// _compute_linear_scaling_rope_parameters, _compute_llama3_parameters and _compute_yarn_parameters
// build it (the same fp32 steps). Throws Error(InvalidArgument) for parameters HF would not accept
// (rotary_dims odd or < 2, theta <= 0, factor <= 0, llama3 / yarn without original_max_positions,
// llama3 with high_freq_factor <= low_freq_factor).
std::vector<float> rope_inv_freq(const RopeParams& p);

// The factor cos and sin are multiplied by: yarn's attention_factor (or its default), else 1.
float rope_attention_factor(const RopeParams& p);

// cos[i], sin[i] for i < inv_freq.size() at position pos, in fp32, HF's steps up to (not including)
// the cast to the activation dtype.
void rope_cos_sin(int64_t pos, std::span<const float> inv_freq, float attention_factor, float* cos,
                  float* sin);

// Rotates one token's heads in place: x [heads, head_dim] fp32, rotary_dims = 2 * inv_freq.size()
// (<= head_dim). fp32 arithmetic in HF's order (the result an fp32 model gets).
void apply_rope_cpu(float* x, int64_t heads, int64_t head_dim, int64_t pos,
                    std::span<const float> inv_freq, float attention_factor);

}  // namespace sf::cpu
