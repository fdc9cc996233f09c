// Launchers of the OPT forward-pass kernels (src/kernels/cuda/model/*.cu): embedding, layer norm,
// the dense decode GEMV, attention over the KV cache, sampling and the per-row NLL. Host-side
// declarations only; every launcher checks its launch (SF_CUDA_CHECK_LAUNCH) and throws sf::Error.
//
// Conventions shared by all of them:
//   - `act` is the activation element type of the engine (DType code: 0 F32, 1 F16, 2 BF16), the
//     same as the weights'; the residual stream, layer-norm statistics, logits and softmax are fp32.
//   - `pos` points to a device int holding the number of tokens already in the KV cache (the
//     position of the next token). Kernels read it on the device, so a captured CUDA graph replays
//     with the position it finds there rather than one baked in at capture time.
//   - The KV cache of layer l is [batch, capacity, hidden] in `act`, row p holding token p.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/l2_prefetch.hpp"

namespace sf::cuda::model {

// ---- embedding.cu ------------------------------------------------------------------------------
// out[b, :] = tok_emb[tokens[b], :] (+ pos_emb[*pos + b_offset + 2, :] when pos_emb), for `rows` rows.
// Row r holds token tokens[r] at position (*pos) + r % seq (seq = rows for a prefill, 1 for a batch
// decode where every row is its own sequence at the same position). out_dt: 0 fp32 or act.
void launch_embed(const int32_t* tokens, int64_t rows, int64_t seq, const void* tok_emb, const void* pos_emb,
                  int emb_dt, int64_t dim, const int* pos, void* out, int out_dt, cudaStream_t stream);
// h[r, :] += pos_emb[*pos + r % seq + 2, :] (after project_in).
void launch_add_positions(float* h, int64_t rows, int64_t seq, const void* pos_emb, int emb_dt, int64_t dim,
                          const int* pos, cudaStream_t stream);

// ---- layernorm.cu ------------------------------------------------------------------------------
// y = (x - mean) / sqrt(var + eps) * w + b per row of x [rows, dim] fp32; w, b fp32 or null (no
// affine). Writes y as fp32 to out_f32 (may equal x) and/or as act to out_act (either may be null).
// `prefetch`: weights to pull into L2 while it runs (decode: the head of the next product).
void launch_layernorm(const float* x, int64_t rows, int64_t dim, const float* w, const float* b, float eps,
                      float* out_f32, void* out_act, int act_dt, cudaStream_t stream, const L2Prefetch& prefetch = {});

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
  const float* qkv = nullptr;  // [rows, 3 * hidden] fp32: q | k | v of each new token, biases added
                               // (launch_qkv_to_cache also takes them in act, see there)
  void* k_cache = nullptr;     // this layer's [batch, capacity, hidden] in act
  void* v_cache = nullptr;
  void* out = nullptr;         // [rows, hidden] in act: heads side by side
  const int* pos = nullptr;    // tokens already cached (before these)
  int64_t batch = 1, capacity = 0, hidden = 0, heads = 0, head_dim = 0;
  float scale = 1.0f;          // head_dim^-0.5, applied to q (after its bias, as HF does)
  int act_dt = 1;
  float* partials = nullptr;   // decode only: decode_attention_partial_floats() floats of workspace
  unsigned* counters = nullptr;  // decode only: [batch * heads], zero before the first launch (each launch
                                 // leaves them zero); with them the chunks' last block merges, else a kernel
  L2Prefetch prefetch;         // decode only: weights to pull into L2 while attention runs (empty: none)
};
// Workspace of the decode kernel: per (sequence, head, 128-key chunk) a max, a sum and d outputs.
size_t decode_attention_partial_floats(int64_t batch, int64_t heads, int64_t capacity, int64_t head_dim);
// One new token per sequence (rows = batch): appends its k, v at *pos, then attends over 0..*pos.
// head_dim <= 128 (every OPT model: 64, 80 or 128).
void launch_decode_attention(const AttentionArgs& a, cudaStream_t stream);
// Prefill helpers for one sequence `seq` of the batch, n new tokens at *pos..: writes k, v rows to
// the cache and the scaled q to q_out [n, hidden] (act). a.qkv's rows [n, 3 hidden] are fp32, or the
// activation type with qkv_dt = act_dt (the prefill's cuBLASLt product writes them 16-bit).
void launch_qkv_to_cache(const AttentionArgs& a, int64_t seq, int64_t n, void* q_out, cudaStream_t stream,
                         int qkv_dt = 0);
// Fused causal attention of n prompt tokens of sequence `seq` (positions past..past+n-1) over the
// cache rows 0..past+n-1 (already written by launch_qkv_to_cache), q [n, hidden] scaled, output to
// a.out [n, hidden]; flash-attention style, nothing of size n x len in memory (prefill_attention.cu).
// Supported: fp16/bf16 activations, head_dim 64, 80 or 128 (every OPT model); else the caller keeps
// the cuBLAS + causal_softmax path.
bool fused_prefill_attention_supported(int act_dt, int64_t head_dim, int64_t hidden);
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
