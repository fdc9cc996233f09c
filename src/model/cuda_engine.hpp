// The forward pass on one CUDA GPU for every architecture the model description covers
// (arch/model_desc.hpp: OPT, Llama, Mistral, Qwen2, GPT-2), mirroring CpuEngine (cpu_engine.hpp)
// stage by stage with the same Hugging Face semantics. An interface of plain C++ types (no CUDA
// headers), so the CLI includes it in every build; the engine behind it (cuda_engine.cpp) exists
// only in builds with the CUDA backend, and backend::cuda() is the way to it from code that builds
// either way.
//
// Where things live: every weight once in device memory (dense [out, in] in the model's dtype, or
// 2:4 in the kernel layout of sf::cuda::upload_weight; q/k/v fused into one [q_dim + 2 kv_dim,
// hidden] linear; a gated MLP's gate and up fused into one [2 ffn, hidden] linear whose rows
// alternate gate j, up j (s24::fuse_gate_up); a tied lm_head shares the token embedding; the
// attention weights of the last CudaOptions::attention_host_layers layers in mapped host memory
// instead), biases, norm parameters and the rotary frequencies as fp32, the KV cache [layers,
// batch, capacity, kv_dim] in the activation type (= the weights' type), the residual stream, norm
// statistics, logits and softmax in fp32.
//
// Decode: one CUDA graph per (batch, capacity), replayed each step. The token ids and the position
// live on the device; sampling runs on the device and writes the chosen ids into pinned host
// memory, so a step needs no host work besides the graph launch and one wait for its event.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/generate.hpp"
#include "model/sampling.hpp"
#include "model/weights.hpp"

namespace sf::model {

// ---- A layer's FFN computed outside the engine (src/offload/cuda implements it)
// ---- For the layers a provider owns, CudaEngine uploads no fc1/fc2 and calls the provider where
// it would run them. Plain MLPs only (fc1, act, fc2): activation sparsity of a gated MLP is not
// modelled yet, so the engine refuses a provider for a gated model. Streams are cudaStream_t passed
// as void* (this header stays free of CUDA types); every call only enqueues work on `stream`, so
// the decode step stays one capturable CUDA graph.
class FfnProvider {
 public:
  virtual ~FfnProvider() = default;
  virtual bool owns_ffn(int64_t layer) const = 0;
  // Decode (one token per sequence): the layer's attention input x [rows, hidden] (act), called
  // before the attention, so the provider can predict and prefetch while attention runs. The
  // engine overwrites x with the FFN input after the attention: a provider reads x on `stream`.
  virtual void before_attention(int64_t layer, const void* x, int64_t rows, void* stream) = 0;
  // out [rows, hidden] fp32 = residual + fc2(act(fc1(x))) for x [rows, hidden] (act, the norm2
  // output); `decode` tells a decode step (before_attention ran) from a prefill.
  virtual void ffn(int64_t layer, const void* x, int64_t rows, const float* residual, float* out,
                   bool decode, void* stream) = 0;
  // Prefill (rows = the prompt's tokens): the layer's attention input x [rows, hidden] (act),
  // before its q/k/v product. For observers (GPU calibration); the decode path passes it to
  // before_attention.
  virtual void prefill_attention_input(int64_t /*layer*/, const void* /*x*/, int64_t /*rows*/,
                                       void* /*stream*/) {}
  // Profiling (CudaEngine::profile_decode): during a profiled pass the engine hands the provider
  // its stage marker, mark(stage, bytes) records an event on the engine's stream ending `stage`, so
  // the provider can split its FFN into its own stages; an empty function after the pass.
  virtual void set_stage_marker(std::function<void(const char* stage, double bytes)> /*mark*/) {}
};
// ---- end of the FFN provider
// ------------------------------------------------------------------------

struct CudaOptions {
  int device = 0;
  FfnProvider* ffn_provider = nullptr;  // not owned, must outlive the engine; null: all resident
  // Widen every weight to fp32 on upload and compute in fp32 throughout: the exact-semantics mode
  // the tests compare with HF's fp32 logits at CPU tolerances. Twice the memory of fp16.
  bool fp32_compute = false;
  bool use_graph = true;  // false: every decode step is launched kernel by kernel (debugging)
  // The last `attention_host_layers` layers keep their q/k/v/out weight matrices (dense
  // only; biases stay on the GPU) in mapped, write-combined pinned host memory, and the same
  // kernels (decode GEMV, cuBLAS) read them over PCIe every token: the same bytes, so the same
  // output. For a GPU budget that cannot hold all the attention (src/offload/planner.hpp).
  // 0..layers.
  int64_t attention_host_layers = 0;
  // The last `host_layers` layers keep every weight matrix (attention and MLP; dense only) in
  // mapped host memory, read over PCIe by the same kernels: whole layers streamed each token, for
  // a GPU budget below the model's size when the model has no neuron-level offloading (gated MLPs:
  // activation sparsity for SwiGLU is not modelled yet). 0..layers; includes the attention of
  // those layers whatever attention_host_layers says.
  int64_t host_layers = 0;
  // Prefill attention through the fused flash-style kernel (fp16/bf16, head_dim 64/80/96/128)
  // instead of cuBLAS scores + causal softmax + cuBLAS P V. On by default: the mma.sync version
  // takes a 2046-token OPT-6.7B prefill from 53.0 to 47.1 ms on an H200 (docs/KERNELS.md); shapes
  // it does not support take the unfused path. SPARSEFLOW_FUSED_ATTENTION=0 or 1 overrides this for
  // A/B runs.
  bool fused_prefill_attention = true;
};

// Device memory the engine holds, by purpose, and what the device reported.
struct CudaMemoryReport {
  size_t weights = 0;  // every weight, bias and norm parameter in device memory
  size_t host_weights =
      0;  // weights in mapped host memory (CudaOptions::attention_host_layers, host_layers)
  size_t kv_cache = 0;
  size_t workspace = 0;  // activations, cuBLAS workspace, attention scratch, logits
  size_t device_total = 0;
  size_t device_peak_used =
      0;  // max over the engine's checkpoints of (total - free), all processes
};

struct BatchGenerateResult {
  std::vector<std::vector<int32_t>> ids;  // [batch][new tokens]; no EOS stop (benchmark semantics)
  double prefill_ms = 0.0;                // all prompts' forward passes and first tokens
  double decode_ms = 0.0;
  int64_t decode_steps = 0;  // graph replays (each produces `batch` tokens)
};

// One stage of the decode step as profile_decode() measured it (STYLE.md 2: GB/s per stage).
struct StageProfile {
  std::string stage;  // "norm", "qkv", "attention", "out_proj", "up" / "gate_up", "down", ...
  double ms = 0;      // per decode step, all layers
  double bytes = 0;   // decode: bytes the stage must read per step (weights, KV rows), all layers;
                      // prefill: the stage's flops (0 where it is not a product)
  int64_t launches = 0;  // per step
};

class CudaEngine {
 public:
  virtual ~CudaEngine() = default;

  virtual const arch::ModelDesc& config() const = 0;
  virtual const Model& model() const = 0;

  // Makes an empty KV cache for `batch` sequences of up to `capacity` tokens (reallocating only
  // when the shape changes). Like CpuEngine::make_cache, but the cache lives inside the engine.
  // Throws Error(UnsupportedShape) for a capacity past the model's sliding_window: the attention
  // kernels see the whole causal context, which equals the window's only while the context fits it.
  virtual void reset(int64_t capacity, int64_t batch = 1) = 0;
  virtual int64_t length() const = 0;  // tokens cached per sequence
  virtual int64_t capacity() const = 0;
  virtual int64_t batch() const = 0;

  // CpuEngine::forward for a batch-1 cache: runs `tokens` at positions length().., appends their
  // keys and values, returns logits [n, vocab] when all_logits, else the last position's [vocab]
  // (fp32, copied to the host). One token runs the decode path (graph when enabled), more the
  // prefill.
  virtual std::vector<float> forward(std::span<const int32_t> tokens, bool all_logits = false) = 0;

  // Generation with the same contract as model::generate (stop after EOS, on_token per token), with
  // sampling on the GPU: greedy is identical to Sampler's argmax; otherwise temperature, top-k and
  // top-p with a Philox generator keyed by (seed, position) (same seed, same text on a given GPU;
  // not the CPU Sampler's random stream).
  virtual GenerateResult generate(std::span<const int32_t> prompt, int64_t max_new_tokens,
                                  const SamplingParams& sampling,
                                  const std::function<void(int32_t)>& on_token = {}) = 0;
  // `batch` prompts of equal length decoded together (M = batch in every GEMM): exactly
  // max_new_tokens each, no EOS stop. Used by the benchmark.
  virtual BatchGenerateResult generate_batch(const std::vector<std::vector<int32_t>>& prompts,
                                             int64_t max_new_tokens,
                                             const SamplingParams& sampling) = 0;
  // Perplexity over non-overlapping windows, as model::perplexity; the NLL is computed on the GPU.
  virtual PerplexityResult perplexity(std::span<const int32_t> ids, int64_t context = 0) = 0;

  // Bytes a decode step must read: every weight once (2:4: values + metadata), plus the KV cache
  // rows attended at sequence length `len` for `batch` sequences.
  virtual size_t weight_bytes_per_step() const = 0;
  virtual size_t kv_bytes_per_step(int64_t len, int64_t batch) const = 0;
  virtual CudaMemoryReport memory() const = 0;
  // Runs `steps` decode steps eagerly (no graph) after a `prompt_tokens`-token prefill of token 2
  // at batch `batch`, with an event after every stage; returns per-stage time and bytes per step,
  // in the order the step runs them. Event gaps include launch overhead the graph hides, so the
  // sum exceeds a graph step; the split is what it is for.
  virtual std::vector<StageProfile> profile_decode(int64_t prompt_tokens, int64_t steps,
                                                   int64_t batch = 1) = 0;
  // The same split on the decode step as a CUDA graph (the events recorded inside it), replayed
  // `steps` times: no eager launch gaps, the overlaps of the timed steps; each event node costs a
  // little (its sum exceeds a plain graph step by that much).
  virtual std::vector<StageProfile> profile_decode_graph(int64_t prompt_tokens, int64_t steps,
                                                         int64_t batch = 1) = 0;
  // One eager prefill of n tokens (batch 1, cache emptied before and after), timed per stage over
  // all layers; StageProfile::bytes holds flops here.
  virtual std::vector<StageProfile> profile_prefill(int64_t n) = 0;
  // Milliseconds cuBLAS alone takes for the dense fp16/bf16 GEMMs of one prefill of n tokens (every
  // layer's qkv, out_proj, up (gate/up fused for gated MLPs), down at M = n, outputs in the
  // activation type): the throughput a
  // prefill is compared with. Uses scratch buffers of its own, freed on return.
  virtual double dense_gemm_prefill_ms(int64_t n) = 0;
  // HBM read bandwidth a streaming kernel reaches now (bytes per second): the decode ceiling.
  virtual double measure_read_bandwidth() = 0;
  virtual std::string device_name() const = 0;
  // The cuBLASLt plans the dense prefill products use (kernels/cuda/lt_linear.hpp), one per line.
  virtual std::string prefill_plans() const = 0;
  virtual bool sparse() const = 0;
  // Device-to-device copy bandwidth measured now (bytes read + written per second), the figure
  // the HBM limit is taken against (DESIGN.md).
  virtual double measure_copy_bandwidth(size_t bytes = size_t(1) << 30) = 0;

  // ---- One decoder layer at a time, for calibration that changes a layer's weights before the
  // next one runs (SparseGPT on the GPU; CpuEngine::embed / run_layer on the CPU). Batch-1 cache,
  // empty (length() 0), positions 0..n-1; length() stays 0. Device pointers of this engine's GPU.
  //
  // While set, a prefill hands the observer the input of every decoder linear as it runs:
  // `linears` are the HF linears that read it ("model.layers.3.self_attn.q_proj", k_proj and
  // v_proj share one input; "...mlp.gate_proj" and up_proj another), x is [rows, in] in the
  // engine's activation type, and `stream` (a cudaStream_t) is where the observer enqueues its
  // work, before the engine's next kernel. Unset, a prefill does no extra work.
  using DeviceInputObserver =
      std::function<void(int64_t layer, const std::vector<std::string>& linears, const void* x,
                         int64_t rows, int64_t in, void* stream)>;
  virtual void set_input_observer(DeviceInputObserver obs) = 0;
  // h [tokens.size(), hidden] fp32 (device) = the residual stream entering layer 0.
  virtual void embed_rows(std::span<const int32_t> tokens, float* h) = 0;
  // out [n, hidden] = layer `layer` applied to in [n, hidden] (fp32, device; out may be in, or
  // null to only run the observer); the layer's keys and values go to the cache rows 0..n-1.
  virtual void run_layer(int64_t layer, const float* in, float* out, int64_t n) = 0;
  // Replaces the dense decoder weight `name` ("model.layers.3.mlp.up_proj.weight") by w ([out,
  // in] of dtype dt, host memory), rounded to the activation type. Throws Error(NotFound) for a
  // name that is not a decoder linear, Error(UnsupportedShape) for a 2:4 engine.
  virtual void replace_weight(const std::string& name, const void* w, DType dt) = 0;
  virtual void* stream_handle() const = 0;     // the cudaStream_t the engine's work runs on
  virtual DType activation_dtype() const = 0;  // of the activations (= the weights' type)
};

// The engine on one GPU: uploads the model (which must outlive it). Throws Error(NoDevice) without
// a usable GPU, Error(OutOfMemory) naming what was needed and what is free, Error(Format) like
// CpuEngine, Error(UnsupportedShape) for what the kernels do not run (a head_dim past 128, an
// FfnProvider with a gated MLP, 2:4 attention weights in host memory). Defined by the CUDA backend
// only: host code that must also build without CUDA opens it through
// backend::require_cuda(...).open_model (backend/backends.hpp).
std::unique_ptr<CudaEngine> make_cuda_engine(const Model& model, const CudaOptions& options = {});

// "" when a CUDA device is usable, else why not (a sentence a user can act on). CUDA backend only,
// like make_cuda_engine; host code asks backend::cuda_unavailable_reason().
std::string cuda_unavailable_reason();

}  // namespace sf::model
