// Launchers of the forward-pass kernels of the decoder-only models (src/kernels/cuda/model/*.cu):
// embedding, layer norm / RMSNorm, the dense decode GEMV, attention over the KV cache
// (grouped-query, rotary positions), sampling and the per-row NLL. Host-side declarations only;
// every launcher checks its arguments and its launch (SF_CUDA_CHECK_LAUNCH) and throws sf::Error.
//
// Conventions shared by all of them:
//   - `act` is the activation element type of the engine (DType code: 0 F32, 1 F16, 2 BF16), the
//     same as the weights'; the residual stream, norm statistics, logits and softmax are fp32.
//   - `pos` points to a device int holding the number of tokens already in the KV cache (the
//     position of the next token). Kernels read it on the device, so a captured CUDA graph replays
//     with the position it finds there rather than one baked in at capture time.
//   - Attention has `heads` query heads and `kv_heads` key/value heads of head_dim each (OPT,
//   GPT-2:
//     kv_heads == heads); query head h reads KV head h / (heads / kv_heads). q_dim = heads *
//     head_dim and kv_dim = kv_heads * head_dim may differ from the model's hidden size.
//   - The KV cache of layer l is [batch, capacity, kv_dim] in `act`, row p holding token p (its k
//     rotated when the model has rotary positions).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/l2_prefetch.hpp"

namespace sf::cuda::model {

// ---- embedding.cu ------------------------------------------------------------------------------
// Row of the learned position table that holds position 0: OPT's table starts 2 rows in; GPT-2's at
// 0.
inline constexpr int64_t kOptPositionOffset = 2;
// out[r, :] = tok_emb[tokens[r], :] (+ pos_emb[position + pos_offset, :] when pos_emb), for `rows`
// rows. Row r holds token tokens[r] at position (*pos) + r % seq (seq = rows for a prefill, 1 for a
// batch decode where every row is its own sequence at the same position). out_dt: 0 fp32 or act.
// Rotary models pass pos_emb = null.
void launch_embed(const int32_t* tokens, int64_t rows, int64_t seq, const void* tok_emb,
                  const void* pos_emb, int emb_dt, int64_t dim, const int* pos, void* out,
                  int out_dt, cudaStream_t stream, int64_t pos_offset = kOptPositionOffset);
// h[r, :] += pos_emb[*pos + r % seq + pos_offset, :] (after project_in).
void launch_add_positions(float* h, int64_t rows, int64_t seq, const void* pos_emb, int emb_dt,
                          int64_t dim, const int* pos, cudaStream_t stream,
                          int64_t pos_offset = kOptPositionOffset);

// ---- layernorm.cu ------------------------------------------------------------------------------
// Per row of x [rows, dim] fp32, statistics in fp32:
//   Layer: y = (x - mean) / sqrt(var + eps) * w + b   (w, b fp32 or both null: no affine)
//   Rms:   y = x / sqrt(mean(x^2) + eps) * w          (w fp32 or null; b must be null)
// Writes y as fp32 to out_f32 (may equal x) and/or as act to out_act (either may be null).
// RMSNorm rounds like HF's LlamaRMSNorm (`weight * hidden.to(input_dtype)`, input_dtype taken as
// act): out_act = act(w * act(x / rms)), two roundings to act; out_f32 = x / rms * w in fp32 (the
// same formula with fp32 as the type). LayerNorm rounds once: out_act = act(y).
// `prefetch`: weights to pull into L2 while it runs (decode: the head of the next product).
enum class NormKind : int { Layer = 0, Rms = 1 };
void launch_norm(NormKind kind, const float* x, int64_t rows, int64_t dim, const float* w,
                 const float* b, float eps, float* out_f32, void* out_act, int act_dt,
                 cudaStream_t stream, const L2Prefetch& prefetch = {});
inline void launch_layernorm(const float* x, int64_t rows, int64_t dim, const float* w,
                             const float* b, float eps, float* out_f32, void* out_act, int act_dt,
                             cudaStream_t stream, const L2Prefetch& prefetch = {}) {
  launch_norm(NormKind::Layer, x, rows, dim, w, b, eps, out_f32, out_act, act_dt, stream, prefetch);
}

// out = x converted to act, n elements (post-layernorm models need the residual stream as input).
void launch_cast(const float* x, int64_t n, void* out, int act_dt, cudaStream_t stream);

// ---- gemv.cu -----------------------------------------------------------------------------------
// The dense decode product for small M: y[m, n] = epilogue(x[m, :] . W[n, :]), W [N, K] row-major
// in `w_dt` (F32/F16/BF16), x [M, K] in the same type. One warp per output row, 16-byte loads of W
// streamed once, x re-read from L1/L2. Needs K % (16 / sizeof) == 0 and 16-byte aligned W and x
// rows; returns false (launching nothing) otherwise so the caller can use cuBLAS instead.
// ep.gated: W is a fused gate/up weight (rows 2j, 2j + 1; s24::fuse_gate_up), n = 2F its rows, and
// y [m, F] (ep.ldy = F); an odd n returns false.
inline constexpr int kGemvMaxM = 8;
// `next`: the head of the next product's weights, which the blocks of the last waves ask to be
// prefetched into L2 (decode; empty: none).
bool launch_gemv(const void* w, int w_dt, const void* x, int64_t m, int64_t n, int64_t k, const EpilogueParams& ep,
                 cudaStream_t stream, const L2Prefetch& next = {});
// Whether launch_gemv runs the tensor-core kernel (mma.sync, fp16/bf16) for this M and K: M in
// [gemv_mma_min_m(), 8] (check.hpp), K a multiple of 32, no persistent / bulk GEMV variant asked for.
bool gemv_uses_tensor_cores(int w_dt, int64_t m, int64_t k);

// ---- attention.cu ------------------------------------------------------------------------------
struct AttentionArgs {
  const float* qkv = nullptr;  // [rows, q_dim + 2 kv_dim] fp32: q | k | v of each new token, biases
                               // added (launch_qkv_to_cache also takes them in act, see there)
  void* k_cache = nullptr;  // this layer's [batch, capacity, kv_dim] in act
  void* v_cache = nullptr;
  void* out = nullptr;         // [rows, q_dim] in act: heads side by side
  const int* pos = nullptr;    // tokens already cached (before these)
  int64_t batch = 1, capacity = 0, heads = 0, kv_heads = 0, head_dim = 0;  // kv_heads divides heads
  float scale = 0.0f;  // applied to q after its bias and rotation; 0: head_dim^-0.5
  int act_dt = 1;
  // Rotary positions, HF's rotate_half convention (kernels/cpu/rope.hpp), applied to q and to k as
  // it is written to the cache; null rope_inv_freq: none (learned positions). Token at position p:
  // within the first rotary_dims elements of each head (even, <= head_dim; the rest pass through)
  // element i < rotary_dims / 2 pairs with i + rotary_dims / 2 at angle p * rope_inv_freq[i]. The
  // steps round where HF's do in act: cos, sin (times rope_attention_factor) to act, then x cos,
  // rotate_half(x) sin and their sum each to act; q and k enter them rounded to act.
  const float* rope_inv_freq =
      nullptr;  // [rotary_dims / 2] fp32 on the device (cpu::rope_inv_freq)
  int64_t rotary_dims = 0;
  float rope_attention_factor = 1.0f;  // cpu::rope_attention_factor (yarn's mscale; 1 otherwise)
  float* partials = nullptr;   // decode only: decode_attention_partial_floats() floats of workspace
  unsigned* counters = nullptr;  // decode only: [batch * kv_heads] (or more), zero before the first
                                 // launch (each launch leaves them zero); with them the chunks'
                                 // last block merges, else a second kernel does
  L2Prefetch prefetch;         // decode only: weights to pull into L2 while attention runs (empty: none)
};
// `a` with its scale resolved (0: head_dim^-0.5), after checking what every attention launcher
// needs: kv_heads dividing heads, positive sizes, rotary_dims even and <= head_dim when rotary.
// Throws Error(InvalidArgument / UnsupportedShape) naming `what` otherwise.
AttentionArgs checked_attention_args(const AttentionArgs& a, const char* what);
// Workspace of the decode kernel: per (sequence, query head, 32-key chunk) a max, a sum and d
// outputs.
size_t decode_attention_partial_floats(int64_t batch, int64_t heads, int64_t capacity, int64_t head_dim);
// One new token per sequence (rows = batch): appends its k (rotated), v at *pos, then attends over
// 0..*pos. One block per (KV head, sequence, 32-key chunk) serves every query head of the group, so
// each cached row is read once per group. head_dim <= 128.
void launch_decode_attention(const AttentionArgs& a, cudaStream_t stream);
// Prefill helpers for one sequence `seq` of the batch, n new tokens at *pos..: writes k (rotated),
// v rows to the cache and the rotated, scaled q to q_out [n, q_dim] (act). a.qkv's rows
// [n, q_dim + 2 kv_dim] are fp32, or the activation type with qkv_dt = act_dt (the prefill's
// cuBLASLt product writes them 16-bit). rotary_dims <= 512.
void launch_qkv_to_cache(const AttentionArgs& a, int64_t seq, int64_t n, void* q_out, cudaStream_t stream,
                         int qkv_dt = 0);
// Fused causal attention of n prompt tokens of sequence `seq` (positions past..past+n-1) over the
// cache rows 0..past+n-1 (already written by launch_qkv_to_cache), q [n, q_dim] rotated and scaled,
// output to a.out [n, q_dim]; flash-attention style, nothing of size n x len in memory
// (prefill_attention.cu). Supported: fp16/bf16 activations, head_dim 64, 80, 96 or 128, rows
// (`row_width`: q_dim and kv_dim) a multiple of 8 elements; else the caller keeps the cuBLAS +
// causal_softmax path.
bool fused_prefill_attention_supported(int act_dt, int64_t head_dim, int64_t row_width);
void launch_prefill_attention(const AttentionArgs& a, int64_t seq, int64_t n, int64_t past, const void* q,
                              cudaStream_t stream);
// Causal softmax over scores [heads, queries, ld] fp32 (one chunk of a prefill's queries against
// its first len keys): query i sees keys 0..first_visible + i - 1 (first_visible = past + the
// chunk's first query + 1); writes the probabilities as act to probs [heads, queries, ld], zeros
// over the keys it does not see up to len. ld: a multiple of 4, >= len.
void launch_causal_softmax(const float* scores, int64_t heads, int64_t queries, int64_t len, int64_t ld,
                           int64_t first_visible, void* probs, int act_dt, cudaStream_t stream);

// ---- sampling.cu -------------------------------------------------------------------------------
struct SampleArgs {
  const float* logits = nullptr;  // [rows, vocab] fp32
  int64_t rows = 1, vocab = 0;
  bool greedy = true;
  float temperature = 1.0f;
  int64_t top_k = 0;              // 0: all
  float top_p = 1.0f;             // 1: all
  uint64_t seed = 0;
  int32_t* tokens = nullptr;      // [rows] output: the next input of the decode step
  int32_t* history = nullptr;     // optional [capacity, rows] ring: row (*pos - first) gets tokens
  int* pos = nullptr;             // advanced by `advance` after sampling (the step's last kernel)
  int advance = 0;
};
// Greedy: argmax, lowest id among ties, NaN never chosen unless all are. Otherwise softmax(logits
// / T) restricted to top-k and then top-p (found by bisection on the logit threshold), sampled with
// Philox keyed by (seed, row, *pos) so a given seed reproduces the same tokens.
void launch_sample(const SampleArgs& a, cudaStream_t stream);
// nll[r] = logsumexp(logits[r, :]) - logits[r, target[r]] in fp64, for r < rows.
void launch_row_nll(const float* logits, int64_t rows, int64_t vocab, const int32_t* targets, double* nll,
                    cudaStream_t stream);

}  // namespace sf::cuda::model
