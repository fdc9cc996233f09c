// The OPT forward pass on a CUDA GPU (see opt_cuda.hpp). Host code: uploads, buffers, the forward
// pass as one function per phase (prefill, decode step), the decode graph, the generation loops.
#include "model/opt_cuda.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/progress.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/decode_kernels.hpp"
#include "kernels/cuda/lt_linear.hpp"
#include "kernels/cuda/membw.hpp"
#include "kernels/cuda/model/model_kernels.hpp"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/sparse_gemm.hpp"

namespace sf::model {

namespace kk = sf::cuda::model;

namespace {

constexpr float kLayerNormEps = 1e-5f;
constexpr size_t kStagingBytes = size_t(64) << 20;         // per pinned staging buffer (two)
constexpr size_t kCublasWorkspace = size_t(32) << 20;
constexpr size_t kAttnScratchBudget = size_t(256) << 20;   // prefill scores + probabilities
// Queries per pass of the unfused prefill attention: chunk c computes scores against the keys up to
// its last query only, so the causal upper triangle costs (1 + chunk / n) / 2 of the full square.
constexpr int64_t kAttnQueryChunk = 256;

std::string gib(size_t b) { return fmt::format("{:.2f} GiB", double(b) / double(size_t(1) << 30)); }

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void expect_shape(const Tensor& t, const std::string& name, const std::vector<int64_t>& want) {
  if (t.shape != want)
    fail(Status::Format, "tensor {} has shape {}, expected {} from the model's config. The checkpoint and its "
         "config.json disagree: re-export the model or fix config.json.", name, shape_str(t.shape), shape_str(want));
  if (!dtype_is_float(t.dtype))
    fail(Status::Format, "tensor {} has dtype {}, expected a float type (F32, F16 or BF16).", name, dtype_name(t.dtype));
}

cudaDataType cuda_type(DType t) {
  return t == DType::F16 ? CUDA_R_16F : t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

// n elements of src_dt at src as dst_dt at dst, on all cores (the source is usually an mmap, and
// page faults are served per thread). The one conversion every weight goes through, so a weight in
// host memory holds the bytes the same weight would hold in device memory.
void convert(void* dst, const void* src, DType src_dt, int64_t n, DType dst_dt) {
  char* out = static_cast<char*>(dst);
  const char* in = static_cast<const char*>(src);
  if (src_dt == dst_dt) {
    const int64_t bytes = n * int64_t(dtype_size(dst_dt)), piece = int64_t(1) << 20;
#pragma omp parallel for schedule(dynamic)
    for (int64_t b = 0; b < bytes; b += piece) std::memcpy(out + b, in + b, size_t(std::min(piece, bytes - b)));
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) store_from_float(out, dst_dt, size_t(i), load_as_float(in, src_dt, size_t(i)));
  }
}

}  // namespace

std::string cuda_unavailable_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    return fmt::format("no usable CUDA device ({}); check the driver with nvidia-smi, or use --device cpu",
                       cudaGetErrorString(e));
  if (n == 0) return "no CUDA device is visible; use --device cpu";
  return "";
}

// ---- the engine
// ----------------------------------------------------------------------------------
class OptCudaEngine final : public OptCuda {
 public:
  OptCudaEngine(const Model& model, const CudaOptions& options);
  ~OptCudaEngine() override;
  OptCudaEngine(const OptCudaEngine&) = delete;
  OptCudaEngine& operator=(const OptCudaEngine&) = delete;

  const arch::ModelDesc& config() const override;
  const Model& model() const override;
  void reset(int64_t capacity, int64_t batch = 1) override;
  int64_t length() const override;
  int64_t capacity() const override;
  int64_t batch() const override;
  std::vector<float> forward(std::span<const int32_t> tokens, bool all_logits = false) override;
  GenerateResult generate(std::span<const int32_t> prompt, int64_t max_new_tokens,
                          const SamplingParams& sampling,
                          const std::function<void(int32_t)>& on_token = {}) override;
  BatchGenerateResult generate_batch(const std::vector<std::vector<int32_t>>& prompts,
                                     int64_t max_new_tokens,
                                     const SamplingParams& sampling) override;
  PerplexityResult perplexity(std::span<const int32_t> ids, int64_t context = 0) override;
  size_t weight_bytes_per_step() const override;
  size_t kv_bytes_per_step(int64_t len, int64_t batch) const override;
  CudaMemoryReport memory() const override;
  std::vector<StageProfile> profile_decode(int64_t prompt_tokens, int64_t steps,
                                           int64_t batch = 1) override;
  std::vector<StageProfile> profile_decode_graph(int64_t prompt_tokens, int64_t steps,
                                                 int64_t batch = 1) override;
  std::vector<StageProfile> profile_prefill(int64_t n) override;
  double dense_gemm_prefill_ms(int64_t n) override;
  double measure_read_bandwidth() override;
  std::string device_name() const override;
  std::string prefill_plans() const override;
  bool sparse() const override;
  bool pdl() const override;
  size_t decode_l2_prefetch_bytes() const override;
  double measure_copy_bandwidth(size_t bytes = size_t(1) << 30) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- device state ------------------------------------------------------------------------------
struct DLinear {
  void* dense = nullptr;            // [out, in] in act (null when sparse)
  sf::cuda::DeviceWeight24 sp;      // 2:4 when sparse
  bool sparse = false;
  float* bias = nullptr;            // [out] fp32 or null
  void* bias_act = nullptr;         // [out] in act: the bias rounded to 16 bits, for cuBLASLt's fused epilogue
                                    // where the prefill output is 16-bit (fc1, qkv); counted as weights
  int64_t out = 0, in = 0;
  size_t bytes(DType act) const { return sparse ? sp.bytes() : size_t(out * in) * dtype_size(act); }
};

struct DLayer {
  DLinear qkv, out, fc1, fc2;       // qkv: [3 hidden, hidden], rows q | k | v
  float *ln1_w = nullptr, *ln1_b = nullptr, *ln2_w = nullptr, *ln2_b = nullptr;  // null without affine
};

struct OptCudaEngine::Impl {
  const Model& model;
  CudaOptions opt;
  arch::ModelDesc cfg;
  int64_t H = 0, F = 0, E = 0, V = 0, L = 0, heads = 0, hd = 0;
  DType act = DType::F16;
  int act_dt = 1;
  size_t act_size = 2;
  bool pre = true, has_final_ln = false, relu = true;
  std::string gpu;
  bool pdl = false;  // kernels launched with programmatic dependent launch (pdl.cuh)
  size_t l2_prefetch = 0;  // CudaOptions::decode_l2_prefetch_mib in bytes

  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  // Dense products of more than kGemvMaxM rows (prefill) with their bias / ReLU / residual fused into
  // cuBLASLt's GEMM; off with SPARSEFLOW_PREFILL_LT=0 (the A/B of the bench).
  std::optional<sf::cuda::LtLinear> lt;
  void* lt_workspace = nullptr;
  std::unique_ptr<sf::cuda::SparseGemm> sgemm;

  // Weights.
  std::vector<void*> allocations;  // everything cudaMalloc'ed, freed in the destructor
  std::vector<void*> host_allocations;  // cudaHostAlloc'ed weights (attention on the host), freed there too
  size_t weight_bytes = 0, kv_bytes = 0, work_bytes = 0, host_weight_bytes = 0;
  size_t peak_used = 0, total_mem = 0;
  void* embed_tokens = nullptr;    // [V, E] act
  void* embed_pos = nullptr;       // [max_pos + 2, H] act
  DLinear lm_head;                 // dense [V, E]; shares embed_tokens when tied
  std::optional<DLinear> project_in, project_out;
  float *final_w = nullptr, *final_b = nullptr;
  std::vector<DLayer> layers;
  bool any_sparse = false;
  size_t sparse_dense_bytes = 0;   // the largest 2:4 weight decompressed (for dense_scratch)
  void* dense_scratch = nullptr;   // workspace: one 2:4 weight decompressed for a cuBLASLt prefill product

  // Sequence state and buffers (reset()).
  int64_t cap = 0, batch = 0, rows_cap = 0, length = 0;
  void* k_cache = nullptr;         // [L, batch, cap, H] act
  void* v_cache = nullptr;
  float *h = nullptr, *h2 = nullptr;  // [rows, H] fp32 residual stream (ping-pong)
  void* x = nullptr;               // [rows, max(H, E)] act: layer-norm output / linear input
  void* e = nullptr;               // [rows, E] act: embeddings before project_in, project_out output
  float* qkv = nullptr;            // [rows, 3H] fp32
  void* q = nullptr;               // [rows, H] act (prefill)
  void* attn = nullptr;            // [rows, H] act
  void* ff = nullptr;              // [rows, F] act
  float* acc = nullptr;            // [rows, max(3H, F, H)] fp32: cuBLAS output before the epilogue
  float* logits = nullptr;         // [rows, V] fp32
  float* scores = nullptr;         // prefill attention scores, kAttnScratchBudget bytes
  void* probs = nullptr;
  int64_t attn_heads_per_pass = 1;
  int64_t attn_chunk = 0, attn_ld = 0;  // queries per pass, scores' row stride (keys, multiple of 4)
  float* partials = nullptr;       // decode attention workspace
  unsigned* attn_counters = nullptr;  // decode attention: the chunks' arrival counters per (sequence, head)
  void* cublas_ws = nullptr;
  int32_t* d_tokens = nullptr;     // [max(rows, batch)] input ids
  int32_t* d_targets = nullptr;    // [rows] perplexity targets
  double* d_nll = nullptr;         // [rows]
  int* d_pos = nullptr;
  int32_t* history = nullptr;      // pinned, mapped: [cap + 1, batch] sampled ids by position
  std::vector<void*> buffer_allocs;
  cudaGraphExec_t graph = nullptr;
  // profile_decode(): an event after each stage of an eager step; off (no events) otherwise.
  bool profiling = false;
  std::vector<cudaEvent_t> prof_events;
  // Per recorded event: the stage, its bytes (or flops), and what each further cached position adds
  // (the attention's KV rows): a graph captured at one length replays at longer ones.
  struct Mark {
    const char* stage;
    double work;
    double per_position;
  };
  std::vector<Mark> prof_marks;
  void mark(const char* stage, double bytes, double per_position = 0) {
    if (!profiling) return;
    if (prof_marks.size() + 1 >= prof_events.size()) {
      cudaEvent_t e;
      SF_CUDA_CHECK(cudaEventCreate(&e));
      prof_events.push_back(e);
    }
    record_mark(prof_events[prof_marks.size() + 1]);
    prof_marks.push_back({stage, bytes, per_position});
  }
  // Inside a stream capture a plain record is only a dependency marker; an external record becomes an
  // event node that the replayed graph records, so its time can be read.
  void record_mark(cudaEvent_t e) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    SF_CUDA_CHECK(cudaStreamIsCapturing(stream, &cs));
    if (cs == cudaStreamCaptureStatusActive)
      SF_CUDA_CHECK(cudaEventRecordWithFlags(e, stream, cudaEventRecordExternal));
    else
      SF_CUDA_CHECK(cudaEventRecord(e, stream));
  }
  SamplingParams graph_sampling;
  bool graph_valid = false;

  Impl(const Model& m, const CudaOptions& o) : model(m), opt(o), cfg(m.config()) {}
  ~Impl();

  // -- memory
  void note_usage() {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
      total_mem = tot;
      peak_used = std::max(peak_used, tot - fr);
    }
  }
  void* dev_alloc(size_t bytes, const std::string& what, size_t* counter, std::vector<void*>* list) {
    void* p = nullptr;
    if (bytes == 0) return nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error state
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      fail(Status::OutOfMemory, "out of GPU memory: {} needs {}, but only {} of {} is free on {} (this model "
           "already holds {} of weights, {} of KV cache, {} of workspace).\n---> HINT: use a 2:4 model (0.56x the "
           "weight bytes), a shorter context or fewer new tokens, a smaller --batch, or a GPU with more memory.",
           what, gib(bytes), gib(fr), gib(tot), gpu, gib(weight_bytes), gib(kv_bytes), gib(work_bytes));
    }
    list->push_back(p);
    *counter += bytes;
    return p;
  }
  void* weight_alloc(size_t bytes, const std::string& what) { return dev_alloc(bytes, what, &weight_bytes, &allocations); }
  // A weight the GPU reads over PCIe: pinned, mapped host memory, write-combined (the CPU writes it
  // once and never reads it; the GPU's reads then skip snooping the CPU caches). Returns the device
  // alias the kernels take; *host is the CPU's pointer, for filling.
  void* host_weight_alloc(size_t bytes, const std::string& what, void** host) {
    void* hp = nullptr;
    const cudaError_t err = cudaHostAlloc(&hp, bytes, cudaHostAllocMapped | cudaHostAllocWriteCombined);
    if (err != cudaSuccess) {
      cudaGetLastError();
      fail(Status::OutOfMemory, "out of pinned host memory: {} needs {} of mapped host memory ({}); {} of attention "
           "weights are pinned already.\n---> HINT: give the GPU a larger budget, so fewer layers' attention lives on "
           "the host, or free host memory.", what, gib(bytes), cudaGetErrorString(err), gib(host_weight_bytes));
    }
    host_allocations.push_back(hp);
    host_weight_bytes += bytes;
    void* dp = nullptr;
    SF_CUDA_CHECK(cudaHostGetDevicePointer(&dp, hp, 0));
    *host = hp;
    return dp;
  }

  // -- upload through two pinned staging buffers
  void* staging[2] = {nullptr, nullptr};
  cudaEvent_t staged[2] = {nullptr, nullptr};
  int stage_next = 0;
  void upload(void* dst, const void* src, DType src_dt, int64_t count, DType dst_dt) {
    const size_t out_elem = dtype_size(dst_dt), in_elem = dtype_size(src_dt);
    const int64_t per_chunk = int64_t(kStagingBytes / out_elem);
    for (int64_t off = 0; off < count; off += per_chunk) {
      const int64_t n = std::min(per_chunk, count - off);
      const int s = stage_next;
      stage_next ^= 1;
      SF_CUDA_CHECK(cudaEventSynchronize(staged[s]));  // the copy that last used this buffer is done
      char* st = static_cast<char*>(staging[s]);
      convert(st, static_cast<const char*>(src) + size_t(off) * in_elem, src_dt, n, dst_dt);
      SF_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + size_t(off) * out_elem, st, size_t(n) * out_elem,
                                    cudaMemcpyHostToDevice, stream));
      SF_CUDA_CHECK(cudaEventRecord(staged[s], stream));
    }
  }
  float* upload_f32(const Tensor& t, const std::string& what) {
    auto* p = static_cast<float*>(weight_alloc(size_t(t.numel()) * 4, what));
    upload(p, t.data, t.dtype, t.numel(), DType::F32);
    return p;
  }
  void* upload_act(const Tensor& t, const std::string& what) {
    void* p = weight_alloc(size_t(t.numel()) * act_size, what);
    upload(p, t.data, t.dtype, t.numel(), act);
    return p;
  }

  // Dense W of a Linear in act at dst (2:4 ones decompressed, for fp32 mode): device memory through
  // the staging buffers, or mapped host memory (`host`: dst is the CPU's pointer) written directly.
  void upload_linear_rows(const Linear& l, void* dst, bool host = false) {
    auto put = [&](const void* src, DType dt, int64_t n) {
      if (host) convert(dst, src, dt, n, act);
      else upload(dst, src, dt, n, act);
    };
    if (l.dense) {
      put(l.dense->data, l.dense->dtype, l.dense->numel());
    } else {
      std::vector<uint8_t> dense(size_t(l.out_features * l.in_features) * dtype_size(l.sparse->dtype));
      s24::decompress(*l.sparse, dense.data());
      put(dense.data(), l.sparse->dtype, l.out_features * l.in_features);
      if (!host) SF_CUDA_CHECK(cudaStreamSynchronize(stream));  // `dense` dies here
    }
  }

  // One device linear from one or more model linears stacked along `out` (q | k | v); with
  // `weight_on_host` its weight matrix lives in mapped host memory (the bias stays on the GPU).
  DLinear make_linear(const std::vector<Linear>& parts, const std::string& name, bool want_bias,
                      bool weight_on_host = false) {
    DLinear d;
    d.in = parts[0].in_features;
    for (const auto& p : parts) d.out += p.out_features;
    const bool sparse = parts[0].sparse && act != DType::F32;
    if (sparse && weight_on_host)
      fail(Status::UnsupportedShape, "{} is 2:4-sparse, and attention weights on the host are read by the dense "
           "kernels only (the 2:4 kernels take device memory).\n---> HINT: give the GPU a budget that holds all the "
           "attention, or use a model with dense attention.", name);
    if (sparse) {
      // 2:4 rows stack when every part fills whole 16-row blocks (hidden % 16 == 0 in every OPT).
      s24::Compressed c = parts.size() == 1 ? s24::Compressed{} : *parts[0].sparse;
      if (parts.size() > 1) {
        for (size_t i = 1; i < parts.size(); ++i) {
          const auto& s = *parts[i].sparse;
          if (s.rows != s.rows_padded || c.rows != c.rows_padded || s.cols_padded != c.cols_padded || s.dtype != c.dtype)
            fail(Status::UnsupportedShape, "{}: cannot stack 2:4 weights of {} rows (padded {}); the GPU backend "
                 "needs hidden_size % 16 == 0 for 2:4 models", name, s.rows, s.rows_padded);
          c.values.insert(c.values.end(), s.values.begin(), s.values.end());
          c.meta.insert(c.meta.end(), s.meta.begin(), s.meta.end());
          c.rows += s.rows;
          c.rows_padded += s.rows_padded;
        }
      }
      const s24::Compressed& src = parts.size() == 1 ? *parts[0].sparse : c;
      note_usage();
      size_t fr = 0, tot = 0;
      SF_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
      const size_t need = size_t(src.rows_padded) * size_t(src.cols_padded + 128) + size_t(64) * src.rows_padded;
      if (need > fr)
        fail(Status::OutOfMemory, "out of GPU memory: 2:4 weight {} needs about {}, but only {} of {} is free "
             "(weights so far: {}).\n---> HINT: use a GPU with more memory or a smaller model.", name, gib(need),
             gib(fr), gib(tot), gib(weight_bytes));
      d.sp = sf::cuda::upload_weight(src, stream);
      d.sparse = true;
      weight_bytes += d.sp.bytes();
      any_sparse = true;
      sparse_dense_bytes = std::max(sparse_dense_bytes, size_t(d.out * d.in) * act_size);
    } else {
      const size_t bytes = size_t(d.out * d.in) * act_size;
      void* host = nullptr;
      d.dense = weight_on_host ? host_weight_alloc(bytes, name + ".weight", &host)
                               : weight_alloc(bytes, name + ".weight");
      char* dst = static_cast<char*>(weight_on_host ? host : d.dense);
      for (const auto& p : parts) {
        upload_linear_rows(p, dst, weight_on_host);
        dst += size_t(p.out_features * p.in_features) * act_size;
      }
      // Drains the write-combining buffers, so the GPU's first read sees every byte.
      if (weight_on_host) std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    if (want_bias && parts[0].bias) {
      d.bias = static_cast<float*>(weight_alloc(size_t(d.out) * 4, name + ".bias"));
      float* dst = d.bias;
      for (const auto& p : parts) {
        upload(dst, p.bias->data, p.bias->dtype, p.bias->numel(), DType::F32);
        dst += p.out_features;
      }
    }
    return d;
  }

  void load();
  void alloc_buffers(int64_t capacity, int64_t b);
  void free_buffers();

  // -- the forward pass
  void linear(const DLinear& l, const void* xin, int64_t m, void* y, DType y_dt, const float* residual = nullptr,
              bool activate = false, const sf::cuda::L2Prefetch& next = {});
  void embed(const int32_t* tokens, int64_t rows, int64_t seq);
  void layer_prefill(int64_t li, int64_t seq, int64_t n, int64_t past);
  void layer_decode(int64_t li);
  // profile_decode / profile_prefill: run a marked pass, gather its stage times.
  void profiled(const std::function<void()>& pass);
  void collect_marks(std::vector<StageProfile>& out, int64_t positions_since_capture = 0);
  void end_profile();
  void start_marks();
  void stop_marks();
  cudaGraphExec_t capture_step(const SamplingParams& s);
  void prepare_decode_profile(OptCudaEngine& self, const char* what, int64_t prompt_tokens,
                              int64_t steps, int64_t b);
  // issue 6 hook: h2 = h + FFN(x) for n rows, by the provider when it owns the layer.
  bool ffn_owned(int64_t li) const { return opt.ffn_provider && opt.ffn_provider->owns_ffn(li); }
  void ffn_block(int64_t li, int64_t n, bool decode) {
    const DLayer& Ly = layers[size_t(li)];
    if (ffn_owned(li)) {
      opt.ffn_provider->ffn(li, x, n, h, h2, decode, stream);
      return;
    }
    // Decode: each product's last blocks prefetch the head of the next one (empty when off).
    const sf::cuda::L2Prefetch after_fc1 = decode ? prefetch_of({&Ly.fc2}, kGapPrefetch) : sf::cuda::L2Prefetch{};
    linear(Ly.fc1, x, n, ff, act, nullptr, /*activate=*/true, after_fc1);
    linear(Ly.fc2, ff, n, h2, DType::F32, /*residual=*/h, false, decode ? after_fc2(li) : sf::cuda::L2Prefetch{});
  }
  kk::AttentionArgs attention_args(int64_t li) const;
  void head(int64_t rows_in, int64_t first_row, int64_t n_rows, float* out_logits);
  void prefill(const int32_t* tokens, int64_t seq, int64_t n, bool all_logits, float* out_logits);
  void decode_step_kernels(const SamplingParams& s);
  // Decode L2 prefetch (CudaOptions::decode_l2_prefetch_mib): up to `budget` bytes (and at most
  // l2_prefetch) of the weights of `ds` in order; empty when off. kGapPrefetch: what HBM delivers in
  // the ~4 us of a layer norm or of a kernel's tail and the launch gap after it.
  static constexpr size_t kGapPrefetch = size_t(16) << 20;
  sf::cuda::L2Prefetch prefetch_of(std::initializer_list<const DLinear*> ds, size_t budget) const;
  bool attention_on_host(int64_t li) const { return li >= L - opt.attention_host_layers; }
  // After fc2 of layer li: the next layer's qkv (unless its weights are in host memory), or lm_head.
  sf::cuda::L2Prefetch after_fc2(int64_t li) const {
    if (li + 1 < L) return prefetch_of({attention_on_host(li + 1) ? nullptr : &layers[size_t(li + 1)].qkv}, kGapPrefetch);
    return prefetch_of({&lm_head}, kGapPrefetch);
  }
  void decode_step(const SamplingParams& s);
  void set_pos(int64_t p) {
    const int v = int(p);
    SF_CUDA_CHECK(cudaMemcpyAsync(d_pos, &v, sizeof(int), cudaMemcpyHostToDevice, stream));
    SF_CUDA_CHECK(cudaStreamSynchronize(stream));  // `v` is on this stack frame
  }
  kk::SampleArgs sample_args(const SamplingParams& s, int64_t rows, int advance) const {
    kk::SampleArgs a;
    a.logits = logits;
    a.rows = rows;
    a.vocab = V;
    a.greedy = s.greedy;
    a.temperature = s.temperature;
    a.top_k = s.top_k;
    a.top_p = s.top_p;
    a.seed = s.seed;
    a.tokens = d_tokens;
    a.history = history;
    a.pos = d_pos;
    a.advance = advance;
    return a;
  }
};

OptCudaEngine::Impl::~Impl() {
  free_buffers();  // also destroys the decode graph (exactly once: a second destroy is an API error)
  for (auto& l : layers)
    for (DLinear* d : {&l.qkv, &l.out, &l.fc1, &l.fc2})
      if (d->sparse) sf::cuda::free_weight(d->sp);
  for (auto* d : {&project_in, &project_out})
    if (*d && (*d)->sparse) sf::cuda::free_weight((*d)->sp);
  for (void* p : allocations) cudaFree(p);
  for (void* p : host_allocations) cudaFreeHost(p);
  for (int i = 0; i < 2; ++i) {
    if (staging[i]) cudaFreeHost(staging[i]);
    if (staged[i]) cudaEventDestroy(staged[i]);
  }
  sgemm.reset();
  if (cublas) cublasDestroy(cublas);
  if (stream) cudaStreamDestroy(stream);
  // A failed cleanup call must not surface as the next kernel's launch error in another engine.
  cudaGetLastError();
}

void OptCudaEngine::Impl::load() {
  H = cfg.hidden_size, F = cfg.ffn_dim, E = cfg.word_embed_proj_dim, V = cfg.vocab_size, L = cfg.num_hidden_layers;
  heads = cfg.num_attention_heads;
  if (H <= 0 || F <= 0 || V <= 0 || E <= 0 || L <= 0 || heads <= 0 || cfg.max_position_embeddings <= 0 || H % heads)
    fail(Status::Format, "OPT config has an invalid size (hidden {}, ffn {}, vocab {}, word_embed_proj_dim {}, "
         "layers {}, heads {}); hidden must be a multiple of heads.", H, F, V, E, L, heads);
  hd = H / heads;
  if (cfg.arch != "opt" || cfg.act != arch::Act::ReLU)
    fail(Status::UnsupportedShape, "the CUDA engine runs OPT with ReLU so far; this model is {}. Use --device cpu.",
         arch::summary(cfg));
  act = opt.fp32_compute ? DType::F32 : model.dtype();
  if (act != DType::F16 && act != DType::BF16 && act != DType::F32)
    fail(Status::UnsupportedShape, "the CUDA backend computes in fp16, bf16 or fp32; the model's weights are {}.",
         dtype_name(act));
  act_dt = int(act);
  act_size = dtype_size(act);
  if (opt.attention_host_layers < 0 || opt.attention_host_layers > L)
    fail(Status::InvalidArgument, "attention_host_layers {} must be in [0, {}] (the model's layers).",
         opt.attention_host_layers, L);
  pre = cfg.pre_norm;
  has_final_ln = cfg.final_norm;

  SF_CUDA_CHECK(cudaSetDevice(opt.device));
  cudaDeviceProp prop{};
  SF_CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device));
  gpu = prop.name;
  pdl = sf::cuda::pdl_enabled();  // probes the device once, outside any stream capture
  int64_t pf_mib = opt.decode_l2_prefetch_mib;
  if (pf_mib < 0) {
    pf_mib = 0;
    if (const char* e = std::getenv("SPARSEFLOW_L2_PREFETCH"); e && *e) {
      char* end = nullptr;
      const long long v = std::strtoll(e, &end, 10);
      if (*end != '\0' || v < 0)
        fail(Status::InvalidArgument, "SPARSEFLOW_L2_PREFETCH={}: expected MiB of weights per layer (0 turns it off)",
             e);
      pf_mib = v;
    }
  }
  l2_prefetch = size_t(pf_mib) << 20;
  SF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  SF_CUBLAS_CHECK(cublasCreate(&cublas));
  SF_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  if (const char* e = std::getenv("SPARSEFLOW_PREFILL_LT"); act != DType::F32 && !(e && std::string_view(e) == "0"))
    lt.emplace();
  cublas_ws = dev_alloc(kCublasWorkspace, "the cuBLAS workspace", &work_bytes, &allocations);
  SF_CUBLAS_CHECK(cublasSetWorkspace(cublas, cublas_ws, kCublasWorkspace));
  for (int i = 0; i < 2; ++i) {
    SF_CUDA_CHECK(cudaMallocHost(&staging[i], kStagingBytes));
    SF_CUDA_CHECK(cudaEventCreateWithFlags(&staged[i], cudaEventDisableTiming));
    SF_CUDA_CHECK(cudaEventRecord(staged[i], stream));
  }

  const std::string d = "model.decoder.";
  const Tensor& tok = model.tensor(d + "embed_tokens.weight");
  expect_shape(tok, d + "embed_tokens.weight", {V, E});
  const Tensor& pos = model.tensor(d + "embed_positions.weight");
  expect_shape(pos, d + "embed_positions.weight", {cfg.max_position_embeddings + cfg.position_offset, H});
  const Tensor& head_t = model.lm_head();
  expect_shape(head_t, "lm_head.weight", {V, E});
  embed_tokens = upload_act(tok, "embed_tokens");
  embed_pos = upload_act(pos, "embed_positions");
  lm_head.out = V;
  lm_head.in = E;
  lm_head.dense = head_t.data == tok.data ? embed_tokens : upload_act(head_t, "lm_head");  // tied: shared
  if (E != H) {
    const Linear pin = model.linear(d + "project_in"), pout = model.linear(d + "project_out");
    if (pin.out_features != H || pin.in_features != E || pout.out_features != E || pout.in_features != H)
      fail(Status::Format, "project_in/project_out are [{}, {}] / [{}, {}], expected [{}, {}] / [{}, {}].",
           pin.out_features, pin.in_features, pout.out_features, pout.in_features, H, E, E, H);
    project_in = make_linear({pin}, d + "project_in", false);
    project_out = make_linear({pout}, d + "project_out", false);
  }
  auto load_ln = [&](const std::string& prefix, float** w, float** b) {
    if (!cfg.norm_affine) return;
    const Tensor& tw = model.tensor(prefix + ".weight");
    const Tensor& tb = model.tensor(prefix + ".bias");
    expect_shape(tw, prefix + ".weight", {H});
    expect_shape(tb, prefix + ".bias", {H});
    *w = upload_f32(tw, prefix + ".weight");
    *b = upload_f32(tb, prefix + ".bias");
  };
  if (has_final_ln) load_ln(d + "final_layer_norm", &final_w, &final_b);
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = d + "layers." + std::to_string(i) + ".";
    DLayer Ly;
    load_ln(p + "self_attn_layer_norm", &Ly.ln1_w, &Ly.ln1_b);
    load_ln(p + "final_layer_norm", &Ly.ln2_w, &Ly.ln2_b);
    auto get = [&](const std::string& name, int64_t out, int64_t in) {
      Linear l = model.linear(p + name);
      if (l.out_features != out || l.in_features != in)
        fail(Status::Format, "linear {}{} is [{}, {}], expected [{}, {}] from the model's config.", p, name,
             l.out_features, l.in_features, out, in);
      if (cfg.qkv_bias && !l.bias)
        fail(Status::NotFound, "linear {}{} has no bias, but config.json says enable_bias=true.", p, name);
      if (l.bias) expect_shape(*l.bias, p + name + ".bias", {out});
      return l;
    };
    // issue 6: the last attention_host_layers layers' attention weights in mapped host memory.
    const bool attn_on_host = i >= L - opt.attention_host_layers;
    Ly.qkv = make_linear({get("self_attn.q_proj", H, H), get("self_attn.k_proj", H, H), get("self_attn.v_proj", H, H)},
                         p + "self_attn.qkv", true, attn_on_host);
    Ly.out = make_linear({get("self_attn.out_proj", H, H)}, p + "self_attn.out_proj", true, attn_on_host);
    if (!ffn_owned(i)) {  // issue 6: an owned layer's FFN lives in the provider (its file may have no fc1/fc2)
      Ly.fc1 = make_linear({get("fc1", F, H)}, p + "fc1", true);
      Ly.fc2 = make_linear({get("fc2", H, F)}, p + "fc2", true);
    }
    // The products whose prefill output is 16-bit (fc1; qkv, read back by qkv_to_cache) get a 16-bit copy
    // of their bias: cuBLASLt fuses bias (+ ReLU) into a 16-bit output only with a 16-bit bias (measured on
    // the H200: no algorithm with the fp32 one, and fc1's GEMM + epilogue fallback ran at 366 TFLOP/s).
    for (auto [d, name] : {std::pair{&Ly.fc1, "fc1"}, std::pair{&Ly.qkv, "self_attn.qkv"}}) {
      if (!lt || !d->bias || (!d->dense && !d->sparse) || act == DType::F32) continue;
      d->bias_act = weight_alloc(size_t(d->out) * act_size, p + name + ".bias (16-bit copy)");
      kk::launch_cast(d->bias, d->out, d->bias_act, act_dt, stream);
    }
    layers.push_back(Ly);
  }
  SF_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (any_sparse) sgemm = std::make_unique<sf::cuda::SparseGemm>(stream);
  note_usage();
}

void OptCudaEngine::Impl::free_buffers() {
  if (graph) {
    cudaGraphExecDestroy(graph);
    graph = nullptr;
  }
  graph_valid = false;
  for (void* p : buffer_allocs) cudaFree(p);
  buffer_allocs.clear();
  lt_workspace = dense_scratch = nullptr;
  if (history) cudaFreeHost(history);
  history = nullptr;
  kv_bytes = 0;
  work_bytes = kCublasWorkspace;
  cap = batch = rows_cap = 0;
}

void OptCudaEngine::Impl::alloc_buffers(int64_t capacity, int64_t b) {
  if (capacity <= 0 || b <= 0)
    fail(Status::InvalidArgument, "KV cache capacity and batch must be positive, got {} and {}", capacity, b);
  if (capacity > cfg.max_position_embeddings)
    fail(Status::InvalidArgument, "a KV cache of {} tokens exceeds the model's max_position_embeddings ({}).",
         capacity, cfg.max_position_embeddings);
  SF_CUDA_CHECK(cudaStreamSynchronize(stream));
  free_buffers();
  cap = capacity;
  batch = b;
  rows_cap = std::max(capacity, b);
  const size_t R = size_t(rows_cap);
  auto kv = [&](size_t bytes, const char* what) { return dev_alloc(bytes, what, &kv_bytes, &buffer_allocs); };
  auto ws = [&](size_t bytes, const char* what) { return dev_alloc(bytes, what, &work_bytes, &buffer_allocs); };
  const size_t kv_each = size_t(L) * size_t(b) * size_t(cap) * size_t(H) * act_size;
  k_cache = kv(kv_each, "the KV cache (keys)");
  v_cache = kv(kv_each, "the KV cache (values)");
  h = static_cast<float*>(ws(R * H * 4, "the residual stream"));
  h2 = static_cast<float*>(ws(R * H * 4, "the residual stream"));
  x = ws(R * std::max(H, E) * act_size, "activations");
  e = ws(R * E * act_size, "activations");
  qkv = static_cast<float*>(ws(R * 3 * H * 4, "q/k/v activations"));
  q = ws(R * H * act_size, "activations");
  attn = ws(R * H * act_size, "activations");
  ff = ws(R * F * act_size, "FFN activations");
  acc = static_cast<float*>(ws(R * std::max({3 * H, F, E}) * 4, "GEMM accumulators"));
  logits = static_cast<float*>(ws(R * V * 4, "logits"));
  // Prefill attention: fused (nothing of size n x len) when asked for and supported, else per chunk
  // of queries the scores (fp32) + probabilities (act) of the keys that chunk sees, for as many heads
  // per pass as fit the scratch budget.
  const char* fused_env = std::getenv("SPARSEFLOW_FUSED_ATTENTION");
  const bool fused_wanted = fused_env && *fused_env ? std::string_view(fused_env) == "1" : opt.fused_prefill_attention;
  const bool fused = fused_wanted && kk::fused_prefill_attention_supported(act_dt, hd, H);
  if (!fused) {
    attn_ld = (cap + 3) / 4 * 4;
    attn_chunk = std::min<int64_t>(kAttnQueryChunk, cap);
    size_t per_head = size_t(attn_chunk) * size_t(attn_ld) * (4 + act_size);
    while (per_head > kAttnScratchBudget && attn_chunk > 16) {
      attn_chunk /= 2;
      per_head = size_t(attn_chunk) * size_t(attn_ld) * (4 + act_size);
    }
    attn_heads_per_pass = std::clamp<int64_t>(int64_t(kAttnScratchBudget / std::max<size_t>(per_head, 1)), 1, heads);
    scores = static_cast<float*>(ws(per_head * size_t(attn_heads_per_pass), "prefill attention scores"));
    probs = reinterpret_cast<char*>(scores) + size_t(attn_chunk) * size_t(attn_ld) * 4 * size_t(attn_heads_per_pass);
  }
  partials = static_cast<float*>(
      ws(kk::decode_attention_partial_floats(b, heads, cap, hd) * 4, "decode attention partials"));
  attn_counters = static_cast<unsigned*>(ws(size_t(b * heads) * 4, "decode attention counters"));
  SF_CUDA_CHECK(cudaMemset(attn_counters, 0, size_t(b * heads) * 4));  // the kernel keeps them at zero after
  if (lt) lt_workspace = ws(sf::cuda::LtLinear::kWorkspaceBytes, "the cuBLASLt workspace");
  // 2:4 prefill products the kernel table sends to the dense fallback are decompressed here and run
  // through cuBLASLt with the dense path's fused epilogues (one weight at a time).
  // Not under an FFN provider: the offload planner's budget has no room for it (those products then
  // take the SparseGemm fallback, which sizes its own scratch).
  if (lt && any_sparse && rows_cap > kk::kGemvMaxM && !opt.ffn_provider)
    dense_scratch = ws(sparse_dense_bytes, "one 2:4 weight decompressed (prefill)");
  d_tokens = static_cast<int32_t*>(ws(R * 4, "token ids"));
  d_targets = static_cast<int32_t*>(ws(R * 4, "token ids"));
  d_nll = static_cast<double*>(ws(R * 8, "per-token NLL"));
  d_pos = static_cast<int*>(ws(sizeof(int), "the position"));
  void* hp = nullptr;
  SF_CUDA_CHECK(cudaHostAlloc(&hp, size_t(cap + 2) * size_t(b) * 4, cudaHostAllocMapped));
  history = static_cast<int32_t*>(hp);
  length = 0;
  set_pos(0);
  note_usage();
}

// y = epilogue(x W^T): 2:4 through SparseGemm (which picks its dense fallback at large M), dense
// through the fused GEMV for M <= 8, else cuBLAS + the epilogue kernel.
void OptCudaEngine::Impl::linear(const DLinear& l, const void* xin, int64_t m, void* y, DType y_dt,
                                 const float* residual, bool activate,
                                 const sf::cuda::L2Prefetch& next) {
  const s24::Activation a = activate ? s24::Activation::ReLU : s24::Activation::None;
  if (l.sparse) {
    sf::cuda::DeviceEpilogue de;
    de.bias = l.bias;
    de.bias_dtype = DType::F32;
    de.act = a;
    de.residual = residual;
    de.residual_dtype = DType::F32;
    // Products the table gives to the dense fallback (large M on sm_90) go through cuBLASLt below,
    // with the fused bias/ReLU and 16-bit output the dense path has, from a decompressed copy.
    if (!(dense_scratch && lt_workspace && m > kk::kGemvMaxM &&
          sgemm->choose(l.sp, m).path == sf::cuda::GemmPath::DenseFallback)) {
      sgemm->run(l.sp, xin, m, y, y_dt, de);
      return;
    }
    sf::cuda::decompress_on_device(l.sp, dense_scratch, stream);
    DLinear dl = l;
    dl.sparse = false;
    dl.dense = dense_scratch;
    return linear(dl, xin, m, y, y_dt, residual, activate, next);
  }
  sf::cuda::EpilogueParams ep;
  ep.bias = l.bias;
  ep.bias_dt = 0;
  ep.residual = residual;
  ep.residual_dt = 0;
  ep.y = y;
  ep.y_dt = int(y_dt);
  ep.act = int(a);
  ep.ldy = l.out;
  if (m <= kk::kGemvMaxM && kk::launch_gemv(l.dense, act_dt, xin, m, l.out, l.in, ep, stream, next)) return;
  if (lt && lt_workspace) {
    sf::cuda::LtProduct p;
    p.w = l.dense;
    p.x = xin;
    p.m = m;
    p.out = l.out;
    p.in = l.in;
    p.act_dt = act_dt;
    const bool b16 = l.bias_act && y_dt != DType::F32;
    p.bias = b16 ? l.bias_act : static_cast<const void*>(l.bias);
    p.bias_dt = b16 ? act_dt : 0;
    p.relu = activate;
    p.residual = residual;
    p.y = y;
    p.y_dt = int(y_dt);
    if (lt->run(p, lt_workspace, sf::cuda::LtLinear::kWorkspaceBytes, stream)) return;
  }
  const bool direct = !l.bias && !residual && !activate && y_dt == DType::F32;
  float* out = direct ? static_cast<float*>(y) : acc;
  const float one = 1.0f, zero = 0.0f;
  // Column-major view: y^T [out, m] = W (row-major [out, in] = col-major [in, out], transposed) x^T.
  SF_CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(l.out), int(m), int(l.in), &one, l.dense,
                               cuda_type(act), int(l.in), xin, cuda_type(act), int(l.in), &zero, out, CUDA_R_32F,
                               int(l.out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (!direct) sf::cuda::launch_epilogue(out, m, l.out, ep, stream);
}

// h = embed_tokens[tokens] (-> project_in) + positions; for post-LN also x = act(h).
void OptCudaEngine::Impl::embed(const int32_t* tokens, int64_t rows, int64_t seq) {
  if (project_in) {
    kk::launch_embed(tokens, rows, seq, embed_tokens, nullptr, act_dt, E, d_pos, e, act_dt, stream);
    linear(*project_in, e, rows, h, DType::F32);
    kk::launch_add_positions(h, rows, seq, embed_pos, act_dt, H, d_pos, stream);
  } else {
    kk::launch_embed(tokens, rows, seq, embed_tokens, embed_pos, act_dt, H, d_pos, h, 0, stream);
  }
  if (!pre) kk::launch_cast(h, rows * H, x, act_dt, stream);
}

// The attention arguments layer `li` shares between prefill and decode: its slice of the KV cache.
kk::AttentionArgs OptCudaEngine::Impl::attention_args(int64_t li) const {
  kk::AttentionArgs a;
  a.qkv = qkv;
  a.k_cache = static_cast<char*>(k_cache) + size_t(li) * size_t(batch * cap * H) * act_size;
  a.v_cache = static_cast<char*>(v_cache) + size_t(li) * size_t(batch * cap * H) * act_size;
  a.pos = d_pos;
  a.batch = batch;
  a.capacity = cap;
  a.kv_heads = heads;  // OPT: multi-head attention, q_dim == kv_dim == H
  a.heads = heads;
  a.head_dim = hd;
  a.scale = 1.0f / std::sqrt(float(hd));
  a.act_dt = act_dt;
  return a;
}

// One decoder layer over n prompt tokens of sequence `seq` (positions past..past+n-1).
// Pre-LN: h + f(LN(h)); post-LN: LN(h + f(h)) (x holds act(h) on entry).
void OptCudaEngine::Impl::layer_prefill(int64_t li, int64_t seq, int64_t n, int64_t past) {
  const DLayer& Ly = layers[size_t(li)];
  // profile_prefill() marks: the work of each stage in flops (GEMM-like) or 0.
  const double fl = 2.0 * double(n);
  if (pre) kk::launch_layernorm(h, n, H, Ly.ln1_w, Ly.ln1_b, kLayerNormEps, nullptr, x, act_dt, stream);
  if (pre) mark("layernorm", 0);
  // [n, 3H] with biases; 16-bit where cuBLASLt fuses the bias (half the bytes written and re-read; k and v
  // are stored 16-bit in the cache anyway), else fp32.
  const bool qkv16 = Ly.qkv.bias_act != nullptr;
  if (ffn_owned(li)) opt.ffn_provider->prefill_attention_input(li, x, n, stream);
  linear(Ly.qkv, x, n, qkv, qkv16 ? act : DType::F32);
  mark("qkv", fl * double(3 * H * H));
  kk::AttentionArgs a = attention_args(li);
  kk::launch_qkv_to_cache(a, seq, n, q, stream, qkv16 ? act_dt : 0);
  mark("qkv_to_cache", 0);
  if (!scores) {
    a.out = attn;
    kk::launch_prefill_attention(a, seq, n, past, q, stream);
  }
  // Otherwise: per chunk of queries [q0, q0 + qn) and group of heads, through cuBLAS's strided-batched
  // GEMM (column-major views), over the keys the chunk sees (len_c = past + q0 + qn):
  //   S_h^T [len_c, qn] = K_h [len_c, d] Q_h^T,   O_h^T [d, qn] = V_h^T [d, len_c] P_h^T.
  const char* K = static_cast<const char*>(a.k_cache) + size_t(seq * cap * H) * act_size;
  const char* Vc = static_cast<const char*>(a.v_cache) + size_t(seq * cap * H) * act_size;
  const cudaDataType t = cuda_type(act);
  const float one = 1.0f, zero = 0.0f;
  for (int64_t q0 = 0; scores && q0 < n; q0 += attn_chunk) {
    const int64_t qn = std::min(attn_chunk, n - q0), len_c = past + q0 + qn, ld = attn_ld;
    for (int64_t h0 = 0; h0 < heads; h0 += attn_heads_per_pass) {
      const int64_t hn = std::min(attn_heads_per_pass, heads - h0);
      const size_t off = size_t(h0 * hd) * act_size, qoff = size_t(q0 * H) * act_size + off;
      SF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(len_c), int(qn), int(hd), &one,
                                                 K + off, t, int(H), hd, static_cast<const char*>(q) + qoff, t, int(H),
                                                 hd, &zero, scores, CUDA_R_32F, int(ld), qn * ld, int(hn),
                                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      mark("attention_scores", fl / double(n) * double(qn * len_c * hd * hn));
      kk::launch_causal_softmax(scores, hn, qn, len_c, ld, past + q0 + 1, probs, act_dt, stream);
      mark("attention_softmax", 0);
      SF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas, CUBLAS_OP_N, CUBLAS_OP_N, int(hd), int(qn), int(len_c), &one,
                                                 Vc + off, t, int(H), hd, probs, t, int(ld), qn * ld, &zero,
                                                 static_cast<char*>(attn) + qoff, t, int(H), hd, int(hn),
                                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      mark("attention_pv", fl / double(n) * double(qn * len_c * hd * hn));
    }
  }
  if (!scores) mark("attention_fused", 2.0 * fl * double(past + (n + 1) / 2) * double(H));  // causal QK^T + PV
  linear(Ly.out, attn, n, h2, DType::F32, /*residual=*/h);
  mark("out_proj", fl * double(H * H));
  std::swap(h, h2);
  if (!pre) kk::launch_layernorm(h, n, H, Ly.ln1_w, Ly.ln1_b, kLayerNormEps, h, x, act_dt, stream);
  if (pre) kk::launch_layernorm(h, n, H, Ly.ln2_w, Ly.ln2_b, kLayerNormEps, nullptr, x, act_dt, stream);
  mark("layernorm", 0);
  if (ffn_owned(li) || !profiling) {
    ffn_block(li, n, /*decode=*/false);
    mark("ffn_offloaded", 0);
  } else {  // ffn_block's two products, timed apart
    linear(Ly.fc1, x, n, ff, act, nullptr, /*activate=*/true);
    mark("fc1", fl * double(F * H));
    linear(Ly.fc2, ff, n, h2, DType::F32, /*residual=*/h);
    mark("fc2", fl * double(F * H));
  }
  std::swap(h, h2);
  if (!pre) kk::launch_layernorm(h, n, H, Ly.ln2_w, Ly.ln2_b, kLayerNormEps, h, x, act_dt, stream);
  if (!pre) mark("layernorm", 0);
}

// The same layer for one new token per sequence (rows = batch), attention over the cache.
// A layer whose attention weights are in host memory is never prefetched (that would pull them over
// PCIe), nor is an FFN the provider owns (its DLinear holds no weights). Values, then metadata for 2:4.
sf::cuda::L2Prefetch OptCudaEngine::Impl::prefetch_of(std::initializer_list<const DLinear*> ds,
                                                      size_t budget) const {
  sf::cuda::L2Prefetch pf;
  if (l2_prefetch == 0) return pf;
  size_t left = std::min(budget, l2_prefetch);
  int r = 0;
  auto add = [&](const void* p, size_t b) {
    if (!p || left == 0 || r == sf::cuda::L2Prefetch::kRanges) return;
    pf.ptr[r] = p;
    pf.bytes[r] = std::min(b, left);
    left -= pf.bytes[r];
    ++r;
  };
  for (const DLinear* d : ds) {
    if (!d) continue;
    if (d->sparse) {
      add(d->sp.values, d->sp.value_bytes());
      add(d->sp.meta, d->sp.meta_bytes());
    } else {
      add(d->dense, size_t(d->out * d->in) * act_size);
    }
  }
  return pf;
}

void OptCudaEngine::Impl::layer_decode(int64_t li) {
  const DLayer& Ly = layers[size_t(li)];
  const int64_t n = batch;
  const double ln_bytes = double(n * H) * (4 + double(act_size));  // fp32 residual in, act out
  if (pre)
    kk::launch_layernorm(h, n, H, Ly.ln1_w, Ly.ln1_b, kLayerNormEps, nullptr, x, act_dt, stream,
                         prefetch_of({attention_on_host(li) ? nullptr : &Ly.qkv}, kGapPrefetch));
  if (pre) mark("layernorm", ln_bytes);
  if (ffn_owned(li)) {
    opt.ffn_provider->before_attention(li, x, n, stream);  // issue 6: predict + prefetch
    mark("ffn_predict", 0);
  }
  linear(Ly.qkv, x, n, qkv, DType::F32, nullptr, false,
         prefetch_of({attention_on_host(li) ? nullptr : &Ly.out}, kGapPrefetch));
  mark("qkv", double(Ly.qkv.bytes(act)));
  kk::AttentionArgs a = attention_args(li);
  a.out = attn;
  a.partials = partials;
  a.counters = attn_counters;
  // out_proj, then the head of fc1: attention leaves HBM idle (docs/KERNELS.md).
  a.prefetch = prefetch_of({attention_on_host(li) ? nullptr : &Ly.out, &Ly.fc1}, l2_prefetch);
  kk::launch_decode_attention(a, stream);
  const double kv_row_bytes = 2.0 * double(n * H) * double(act_size);
  mark("attention", kv_row_bytes * double(length + 1), kv_row_bytes);
  linear(Ly.out, attn, n, h2, DType::F32, /*residual=*/h, false, prefetch_of({&Ly.fc1}, kGapPrefetch));
  mark("out_proj", double(Ly.out.bytes(act)));
  if (ffn_owned(li)) opt.ffn_provider->before_ffn_input(li, stream);  // x is overwritten next
  std::swap(h, h2);
  if (!pre) kk::launch_layernorm(h, n, H, Ly.ln1_w, Ly.ln1_b, kLayerNormEps, h, x, act_dt, stream);
  if (pre) kk::launch_layernorm(h, n, H, Ly.ln2_w, Ly.ln2_b, kLayerNormEps, nullptr, x, act_dt, stream);
  mark("layernorm", ln_bytes);
  if (ffn_owned(li) || !profiling) {
    ffn_block(li, n, /*decode=*/true);
    mark("ffn_offloaded", 0);
  } else {  // ffn_block's two products, timed apart
    linear(Ly.fc1, x, n, ff, act, nullptr, /*activate=*/true, prefetch_of({&Ly.fc2}, kGapPrefetch));
    mark("fc1", double(Ly.fc1.bytes(act)));
    linear(Ly.fc2, ff, n, h2, DType::F32, /*residual=*/h, false, after_fc2(li));
    mark("fc2", double(Ly.fc2.bytes(act)));
  }
  std::swap(h, h2);
  if (!pre) kk::launch_layernorm(h, n, H, Ly.ln2_w, Ly.ln2_b, kLayerNormEps, h, x, act_dt, stream);
  if (!pre) mark("layernorm", 2 * ln_bytes);
}

// final_layer_norm (pre-LN only), project_out, lm_head over rows [first_row, first_row + n_rows)
// of the residual stream, logits to out_logits [n_rows, V].
void OptCudaEngine::Impl::head(int64_t /*rows_in*/, int64_t first_row, int64_t n_rows,
                               float* out_logits) {
  const float* hr = h + first_row * H;
  void* xin = static_cast<char*>(x) + size_t(first_row * H) * act_size;  // post-LN: x = act(h) already
  if (has_final_ln) {
    kk::launch_layernorm(hr, n_rows, H, final_w, final_b, kLayerNormEps, nullptr, x, act_dt, stream);
    xin = x;
  } else if (pre) {
    kk::launch_cast(hr, n_rows * H, x, act_dt, stream);
    xin = x;
  }
  if (project_out) {
    linear(*project_out, xin, n_rows, e, act);
    xin = e;
  }
  linear(lm_head, xin, n_rows, out_logits, DType::F32);
}

void OptCudaEngine::Impl::prefill(const int32_t* tokens, int64_t seq, int64_t n, bool all_logits,
                                  float* out_logits) {
  embed(tokens, n, n);
  for (int64_t li = 0; li < L; ++li) layer_prefill(li, seq, n, length);
  if (all_logits) head(n, 0, n, out_logits);
  else head(n, n - 1, 1, out_logits);
}

void OptCudaEngine::Impl::decode_step_kernels(const SamplingParams& s) {
  embed(d_tokens, batch, 1);
  mark("embed", 0);
  for (int64_t li = 0; li < L; ++li) layer_decode(li);
  head(batch, 0, batch, logits);
  mark("lm_head", double(lm_head.bytes(act)));
  kk::launch_sample(sample_args(s, batch, 1), stream);
  mark("sample", double(batch * V) * 4);
}

// One decode step: the captured graph when there is one for these settings, else the kernels one
// by one (the first step after reset() runs eagerly and sizes every workspace, then is captured).
// With PDL (pdl.cuh) the capture records programmatic edges between the step's kernels (CUDA 12.3+),
// so the replay overlaps each kernel's launch and weight prefetch with its predecessor's tail.
void OptCudaEngine::Impl::decode_step(const SamplingParams& s) {
  const bool same = graph_valid && s.greedy == graph_sampling.greedy && s.temperature == graph_sampling.temperature &&
                    s.top_k == graph_sampling.top_k && s.top_p == graph_sampling.top_p && s.seed == graph_sampling.seed;
  if (opt.use_graph && same) {
    SF_CUDA_CHECK(cudaGraphLaunch(graph, stream));
    return;
  }
  decode_step_kernels(s);
  if (!opt.use_graph) return;
  SF_CUDA_CHECK(cudaStreamSynchronize(stream));  // the eager step has grown every workspace
  if (graph) {
    SF_CUDA_CHECK(cudaGraphExecDestroy(graph));
    graph = nullptr;
  }
  graph = capture_step(s);
  graph_sampling = s;
  graph_valid = true;
}

// The decode step captured and instantiated. Per-node priorities: kernels captured from a
// higher-priority stream (the offload runtime's side stream) keep it when the graph replays; a
// driver that refuses them gets the plain instantiation. With marks on, the start event is the
// graph's first node and every mark an event node (profile_decode_graph).
cudaGraphExec_t OptCudaEngine::Impl::capture_step(const SamplingParams& s) {
  cudaGraph_t g = nullptr;
  SF_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    if (profiling) record_mark(prof_events[0]);
    decode_step_kernels(s);
  } catch (...) {
    cudaStreamEndCapture(stream, &g);
    if (g) cudaGraphDestroy(g);
    throw;
  }
  SF_CUDA_CHECK(cudaStreamEndCapture(stream, &g));
  cudaGraphExec_t exec = nullptr;
  if (cudaGraphInstantiate(&exec, g, cudaGraphInstantiateFlagUseNodePriority) != cudaSuccess) {
    cudaGetLastError();
    exec = nullptr;
    SF_CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
  }
  SF_CUDA_CHECK(cudaGraphDestroy(g));
  return exec;
}

// ---- OptCuda -------------------------------------------------------------------------------------
std::unique_ptr<OptCuda> make_opt_cuda(const Model& model, const CudaOptions& options) {
  return std::make_unique<OptCudaEngine>(model, options);
}

OptCudaEngine::OptCudaEngine(const Model& model, const CudaOptions& options)
    : impl_(std::make_unique<Impl>(model, options)) {
  if (const std::string why = cuda_unavailable_reason(); !why.empty()) fail(Status::NoDevice, "{}", why);
  impl_->load();
}
OptCudaEngine::~OptCudaEngine() = default;

const arch::ModelDesc& OptCudaEngine::config() const {
  return impl_->cfg;
}
const Model& OptCudaEngine::model() const {
  return impl_->model;
}
int64_t OptCudaEngine::length() const {
  return impl_->length;
}
int64_t OptCudaEngine::capacity() const {
  return impl_->cap;
}
int64_t OptCudaEngine::batch() const {
  return impl_->batch;
}
std::string OptCudaEngine::device_name() const {
  return impl_->gpu;
}
std::string OptCudaEngine::prefill_plans() const {
  return impl_->lt ? impl_->lt->describe_plans() : std::string();
}
bool OptCudaEngine::sparse() const {
  return impl_->any_sparse;
}
bool OptCudaEngine::pdl() const {
  return impl_->pdl;
}
size_t OptCudaEngine::decode_l2_prefetch_bytes() const {
  return impl_->l2_prefetch;
}

void OptCudaEngine::reset(int64_t capacity, int64_t batch) {
  auto& m = *impl_;
  if (capacity != m.cap || batch != m.batch) m.alloc_buffers(capacity, batch);
  m.length = 0;
  m.set_pos(0);
}

std::vector<float> OptCudaEngine::forward(std::span<const int32_t> tokens, bool all_logits) {
  auto& m = *impl_;
  const int64_t n = int64_t(tokens.size());
  if (m.cap == 0) fail(Status::InvalidArgument, "OptCuda::forward before reset(): make the KV cache first.");
  if (m.batch != 1) fail(Status::InvalidArgument, "OptCuda::forward runs a batch-1 cache; this one has batch {}.", m.batch);
  if (n == 0) fail(Status::InvalidArgument, "forward() got no tokens; pass at least one token id.");
  if (m.length + n > m.cap)
    fail(Status::InvalidArgument, "sequence of {} tokens does not fit the KV cache of {} tokens; make a larger cache.",
         m.length + n, m.cap);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= m.V)
      fail(Status::InvalidArgument, "token id {} at index {} is outside the vocabulary [0, {}).", tokens[size_t(i)], i, m.V);
  SF_CUDA_CHECK(cudaMemcpyAsync(m.d_tokens, tokens.data(), size_t(n) * 4, cudaMemcpyHostToDevice, m.stream));
  const int64_t rows = all_logits ? n : 1;
  if (n == 1) {
    // The decode path; greedy sampling advances the position like a generation step would.
    m.decode_step(SamplingParams{});
  } else {
    m.prefill(m.d_tokens, 0, n, all_logits, m.logits);
    m.set_pos(m.length + n);
  }
  m.length += n;
  std::vector<float> out(size_t(rows * m.V));
  SF_CUDA_CHECK(cudaMemcpyAsync(out.data(), m.logits, out.size() * 4, cudaMemcpyDeviceToHost, m.stream));
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  m.note_usage();
  return out;
}

GenerateResult OptCudaEngine::generate(std::span<const int32_t> prompt, int64_t max_new_tokens,
                                       const SamplingParams& sampling,
                                       const std::function<void(int32_t)>& on_token) {
  auto& m = *impl_;
  if (prompt.empty()) fail(Status::InvalidArgument, "generate() needs a prompt of at least one token.");
  if (max_new_tokens < 0) fail(Status::InvalidArgument, "max_new_tokens must be >= 0, got {}.", max_new_tokens);
  const int64_t n = int64_t(prompt.size()), total = n + max_new_tokens;
  if (total > m.cfg.max_position_embeddings)
    fail(Status::InvalidArgument, "prompt ({} tokens) + max new tokens ({}) = {} exceeds the model's "
         "max_position_embeddings ({}); ask for fewer new tokens or shorten the prompt.", n, max_new_tokens, total,
         m.cfg.max_position_embeddings);
  Sampler check(sampling);  // validates temperature / top-k / top-p with the CPU sampler's messages
  for (int64_t i = 0; i < n; ++i)
    if (prompt[size_t(i)] < 0 || prompt[size_t(i)] >= m.V)
      fail(Status::InvalidArgument, "token id {} at index {} is outside the vocabulary [0, {}).", prompt[size_t(i)], i, m.V);
  GenerateResult res;
  if (max_new_tokens == 0) return res;
  reset(std::max(total, m.cap), 1);
  volatile int32_t* hist = m.history;

  auto t0 = std::chrono::steady_clock::now();
  SF_CUDA_CHECK(cudaMemcpyAsync(m.d_tokens, prompt.data(), size_t(n) * 4, cudaMemcpyHostToDevice, m.stream));
  m.prefill(m.d_tokens, 0, n, false, m.logits);
  kk::launch_sample(m.sample_args(sampling, 1, int(n)), m.stream);
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  res.prefill_ms = ms_since(t0);
  m.length = n;
  for (;;) {
    const int32_t next = hist[m.length];
    res.ids.push_back(next);
    if (on_token) on_token(next);
    if (next == m.cfg.eos_token_id || int64_t(res.ids.size()) == max_new_tokens) break;
    t0 = std::chrono::steady_clock::now();
    m.decode_step(sampling);
    SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
    res.decode_ms += ms_since(t0);
    ++res.decode_steps;
    ++m.length;
  }
  m.note_usage();
  return res;
}

BatchGenerateResult OptCudaEngine::generate_batch(const std::vector<std::vector<int32_t>>& prompts,
                                                  int64_t max_new_tokens,
                                                  const SamplingParams& sampling) {
  auto& m = *impl_;
  const int64_t B = int64_t(prompts.size());
  if (B == 0 || prompts[0].empty()) fail(Status::InvalidArgument, "generate_batch needs at least one non-empty prompt.");
  const int64_t n = int64_t(prompts[0].size());
  for (const auto& p : prompts)
    if (int64_t(p.size()) != n)
      fail(Status::InvalidArgument, "generate_batch needs prompts of equal length ({} vs {} tokens).", p.size(), n);
  if (max_new_tokens < 1) fail(Status::InvalidArgument, "max_new_tokens must be >= 1, got {}.", max_new_tokens);
  const int64_t total = n + max_new_tokens;
  if (total > m.cfg.max_position_embeddings)
    fail(Status::InvalidArgument, "prompt ({}) + new tokens ({}) exceeds max_position_embeddings ({}).", n,
         max_new_tokens, m.cfg.max_position_embeddings);
  Sampler check(sampling);
  reset(total, B);
  BatchGenerateResult res;
  res.ids.assign(size_t(B), {});
  auto t0 = std::chrono::steady_clock::now();
  // Each prompt's prefill at positions 0..n-1 into its own cache rows, its last logits into row b.
  for (int64_t b = 0; b < B; ++b) {
    SF_CUDA_CHECK(cudaMemcpyAsync(m.d_tokens, prompts[size_t(b)].data(), size_t(n) * 4, cudaMemcpyHostToDevice,
                                  m.stream));
    m.prefill(m.d_tokens, b, n, false, m.logits + b * m.V);
    SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));  // d_tokens is reused by the next prompt
  }
  kk::launch_sample(m.sample_args(sampling, B, int(n)), m.stream);
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  res.prefill_ms = ms_since(t0);
  m.length = n;
  t0 = std::chrono::steady_clock::now();
  for (int64_t s = 1; s < max_new_tokens; ++s) {
    m.decode_step(sampling);
    ++res.decode_steps;
    ++m.length;
  }
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  res.decode_ms = ms_since(t0);
  for (int64_t p = n; p < n + max_new_tokens; ++p)
    for (int64_t b = 0; b < B; ++b) res.ids[size_t(b)].push_back(m.history[p * B + b]);
  m.note_usage();
  return res;
}

// Adds the marks of the last profiled pass to `out` (stages by name, in first-seen order).
void OptCudaEngine::Impl::collect_marks(std::vector<StageProfile>& out,
                                        int64_t positions_since_capture) {
  for (size_t i = 0; i < prof_marks.size(); ++i) {
    float ms = 0;
    SF_CUDA_CHECK(cudaEventElapsedTime(&ms, prof_events[i], prof_events[i + 1]));
    const auto [stage, captured_work, per_position] = prof_marks[i];
    const double work = captured_work + per_position * double(positions_since_capture);
    auto it = std::find_if(out.begin(), out.end(), [&](const StageProfile& st) { return st.stage == stage; });
    if (it == out.end()) it = out.insert(out.end(), StageProfile{stage});
    it->ms += ms;
    it->bytes += work;
    ++it->launches;
  }
}

// Runs `pass` with an event after each marked stage; the marks' events stay in prof_events until the caller destroys them.
void OptCudaEngine::Impl::profiled(const std::function<void()>& pass) {
  start_marks();
  SF_CUDA_CHECK(cudaEventRecord(prof_events[0], stream));
  try {
    pass();
  } catch (...) {
    stop_marks();
    throw;
  }
  stop_marks();
  SF_CUDA_CHECK(cudaStreamSynchronize(stream));
}

// Marks on: the start event exists, the list is empty, mark() records, and the FFN provider has the marker.
void OptCudaEngine::Impl::start_marks() {
  if (prof_events.empty()) {
    cudaEvent_t start = nullptr;
    SF_CUDA_CHECK(cudaEventCreate(&start));
    prof_events.push_back(start);
  }
  prof_marks.clear();
  profiling = true;
  if (opt.ffn_provider) opt.ffn_provider->set_stage_marker([this](const char* st, double b) { mark(st, b); });
}

void OptCudaEngine::Impl::stop_marks() {
  profiling = false;
  if (opt.ffn_provider) opt.ffn_provider->set_stage_marker({});
}

void OptCudaEngine::Impl::end_profile() {
  for (auto* e : prof_events) cudaEventDestroy(e);
  prof_events.clear();
  prof_marks.clear();
}

// Both decode profiles: a prefill and `steps` graph steps (warm, every workspace sized), then back to
// the prompt, so the profiled steps attend over the same lengths the benchmark's do and overwrite the
// cache rows past the prompt.
void OptCudaEngine::Impl::prepare_decode_profile(OptCudaEngine& self, const char* what,
                                                 int64_t prompt_tokens, int64_t steps, int64_t b) {
  if (prompt_tokens < 1 || steps < 1 || b < 1)
    fail(Status::InvalidArgument, "{} needs a prompt, steps and batch of at least 1 (got {}, {}, {}).", what,
         prompt_tokens, steps, b);
  const std::vector<std::vector<int32_t>> prompts(size_t(b), std::vector<int32_t>(size_t(prompt_tokens), 2));
  self.generate_batch(prompts, steps + 1, SamplingParams{});
  length = prompt_tokens;
  set_pos(prompt_tokens);
}

// Per-step means over `steps` collected passes. Every marked stage stays, also one that took no time
// (a wait that found its event done), so the eager and graph lists name the same stages.
static void average_stages(std::vector<StageProfile>& out, int64_t steps) {
  const double n = double(std::max<int64_t>(1, steps));
  for (auto& st : out) {
    st.ms /= n;
    st.bytes /= n;
    st.launches = int64_t(double(st.launches) / n + 0.5);
  }
}

std::vector<StageProfile> OptCudaEngine::profile_decode(int64_t prompt_tokens, int64_t steps,
                                                        int64_t batch) {
  auto& m = *impl_;
  m.prepare_decode_profile(*this, "profile_decode", prompt_tokens, steps, batch);
  SamplingParams greedy;
  std::vector<StageProfile> out;
  int64_t done = 0;
  for (; done < steps && m.length < m.cap; ++done) {
    m.profiled([&] { m.decode_step_kernels(greedy); });
    ++m.length;
    m.collect_marks(out);
  }
  m.end_profile();
  average_stages(out, done);
  return out;
}

std::vector<StageProfile> OptCudaEngine::profile_decode_graph(int64_t prompt_tokens, int64_t steps,
                                                              int64_t batch) {
  auto& m = *impl_;
  m.prepare_decode_profile(*this, "profile_decode_graph", prompt_tokens, steps, batch);
  SamplingParams greedy;
  // One eager marked step first: it creates every event outside the capture. Then back to the prompt.
  m.profiled([&] { m.decode_step_kernels(greedy); });
  m.length = prompt_tokens;
  m.set_pos(prompt_tokens);
  // Capture one step with its marks as event-record nodes.
  m.start_marks();
  cudaGraphExec_t exec = nullptr;
  try {
    exec = m.capture_step(greedy);
  } catch (...) {
    m.stop_marks();
    throw;
  }
  m.stop_marks();
  std::vector<StageProfile> out;
  int64_t done = 0;
  for (; done < steps && m.length < m.cap; ++done) {
    SF_CUDA_CHECK(cudaGraphLaunch(exec, m.stream));
    SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
    m.collect_marks(out, /*positions_since_capture=*/m.length - prompt_tokens);
    ++m.length;  // the graph's sampling kernel advanced the device position
  }
  cudaGraphExecDestroy(exec);
  m.end_profile();
  average_stages(out, done);
  return out;
}

std::vector<StageProfile> OptCudaEngine::profile_prefill(int64_t n) {
  auto& m = *impl_;
  if (n < 2 || n > m.cfg.max_position_embeddings)
    fail(Status::InvalidArgument, "profile_prefill needs a prompt of 2..{} tokens (max_position_embeddings), got {}.",
         m.cfg.max_position_embeddings, n);
  reset(std::max(n, m.cap), 1);
  std::vector<int32_t> ids(size_t(n), 2);
  ids[0] = int32_t(m.cfg.bos_token_id);
  SF_CUDA_CHECK(cudaMemcpyAsync(m.d_tokens, ids.data(), size_t(n) * 4, cudaMemcpyHostToDevice, m.stream));
  m.prefill(m.d_tokens, 0, n, false, m.logits);  // warm: cuBLAS heuristics, caches
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  std::vector<StageProfile> out;
  m.profiled([&] {
    m.embed(m.d_tokens, n, n);
    m.mark("embed", 0);
    for (int64_t li = 0; li < m.L; ++li) m.layer_prefill(li, 0, n, 0);
    m.head(n, n - 1, 1, m.logits);
    m.mark("lm_head", 2.0 * double(m.V * m.H));
  });
  m.collect_marks(out);
  m.end_profile();
  m.length = 0;
  m.set_pos(0);
  return out;
}

double OptCudaEngine::dense_gemm_prefill_ms(int64_t n) {
  auto& m = *impl_;
  if (n < 1) fail(Status::InvalidArgument, "dense_gemm_prefill_ms needs n >= 1, got {}.", n);
  const int64_t H = m.H, F = m.F;
  const std::pair<int64_t, int64_t> shapes[] = {{3 * H, H}, {H, H}, {F, H}, {H, F}};  // [out, in]
  const size_t wmax = size_t(std::max(3 * H * H, F * H)) * m.act_size;
  const size_t xmax = size_t(n * std::max(H, F)) * m.act_size, ymax = size_t(n * std::max(3 * H, F)) * m.act_size;
  std::vector<void*> bufs;
  auto alloc = [&](size_t b) {
    void* p = nullptr;
    if (cudaMalloc(&p, b) != cudaSuccess) {
      cudaGetLastError();
      for (void* q : bufs) cudaFree(q);
      fail(Status::OutOfMemory, "timing cuBLAS's prefill GEMMs at M = {} needs {:.2f} GB of scratch; not free.", n,
           double(wmax + xmax + ymax) / 1e9);
    }
    bufs.push_back(p);
    return p;
  };
  void* w = alloc(wmax);
  void* xin = alloc(xmax);
  void* y = alloc(ymax);
  // Random values like a model's, not zeros: tensor cores multiplying zeros draw less power, so the
  // GPU holds a higher clock and cuBLAS would look faster than it runs on real weights.
  {
    std::vector<uint16_t> block(size_t(1) << 20);
    uint64_t st = 0x9e3779b97f4a7c15ull;
    for (auto& v : block) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      const float r = (float(uint32_t(st >> 40)) / float(1u << 24) - 0.5f) * 0.1f;
      v = m.act == DType::BF16 ? float_to_bf16(r) : float_to_half(r);
    }
    for (auto [p, bytes] : {std::pair{w, wmax}, std::pair{xin, xmax}})
      for (size_t o = 0; o < bytes; o += block.size() * 2)
        SF_CUDA_CHECK(cudaMemcpy(static_cast<char*>(p) + o, block.data(), std::min(bytes - o, block.size() * 2),
                                 cudaMemcpyHostToDevice));
  }
  const float one = 1.0f, zero = 0.0f;
  auto layer = [&] {
    for (auto [out, in] : shapes)
      SF_CUBLAS_CHECK(cublasGemmEx(m.cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(n), int(in), &one, w,
                                   cuda_type(m.act), int(in), xin, cuda_type(m.act), int(in), &zero, y,
                                   cuda_type(m.act), int(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  for (int i = 0; i < 2; ++i) layer();
  cudaEvent_t e0, e1;
  SF_CUDA_CHECK(cudaEventCreate(&e0));
  SF_CUDA_CHECK(cudaEventCreate(&e1));
  constexpr int kIters = 5;
  SF_CUDA_CHECK(cudaEventRecord(e0, m.stream));
  for (int i = 0; i < kIters; ++i) layer();
  SF_CUDA_CHECK(cudaEventRecord(e1, m.stream));
  SF_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  SF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  for (void* q : bufs) cudaFree(q);
  return double(ms) / kIters * double(m.L);
}

double OptCudaEngine::measure_read_bandwidth() {
  impl_->note_usage();
  return sf::cuda::measure_read_tbps(size_t(1) << 30, impl_->stream) * 1e12;
}

PerplexityResult OptCudaEngine::perplexity(std::span<const int32_t> ids, int64_t context) {
  auto& m = *impl_;
  if (context == 0) context = m.cfg.max_position_embeddings;
  if (context < 2 || context > m.cfg.max_position_embeddings)
    fail(Status::InvalidArgument, "context must be in [2, {}] (max_position_embeddings), got {}.",
         m.cfg.max_position_embeddings, context);
  if (ids.size() < 2)
    fail(Status::InvalidArgument, "perplexity needs at least 2 tokens (the first is context only), got {}.", ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= m.V)
      fail(Status::InvalidArgument, "token id {} at index {} is outside the vocabulary [0, {}).", ids[i], i, m.V);
  const int64_t window_cap = std::min<int64_t>(context, int64_t(ids.size()));
  reset(std::max(window_cap, m.cap == 0 ? window_cap : m.cap), 1);
  PerplexityResult res;
  std::vector<double> nll;
  Progress bar("perplexity", double(ids.size()), "tokens");
  for (size_t start = 0; start < ids.size(); start += size_t(context)) {
    const size_t len = std::min(ids.size() - start, size_t(context));
    if (len < 2) break;
    bar.update(double(start));
    m.length = 0;
    m.set_pos(0);
    SF_CUDA_CHECK(cudaMemcpyAsync(m.d_tokens, ids.data() + start, len * 4, cudaMemcpyHostToDevice, m.stream));
    SF_CUDA_CHECK(cudaMemcpyAsync(m.d_targets, ids.data() + start + 1, (len - 1) * 4, cudaMemcpyHostToDevice, m.stream));
    m.prefill(m.d_tokens, 0, int64_t(len), /*all_logits=*/true, m.logits);
    kk::launch_row_nll(m.logits, int64_t(len) - 1, m.V, m.d_targets, m.d_nll, m.stream);
    nll.resize(len - 1);
    SF_CUDA_CHECK(cudaMemcpyAsync(nll.data(), m.d_nll, nll.size() * 8, cudaMemcpyDeviceToHost, m.stream));
    SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
    for (double v : nll) res.nll_sum += v;
    res.predicted += int64_t(len) - 1;
    ++res.windows;
  }
  bar.update(double(ids.size()));
  bar.finish();
  m.note_usage();
  return res;
}

size_t OptCudaEngine::weight_bytes_per_step() const {
  const auto& m = *impl_;
  size_t b = m.lm_head.bytes(m.act);
  for (const auto& l : m.layers) b += l.qkv.bytes(m.act) + l.out.bytes(m.act) + l.fc1.bytes(m.act) + l.fc2.bytes(m.act);
  if (m.project_in) b += m.project_in->bytes(m.act) + m.project_out->bytes(m.act);
  return b;
}

size_t OptCudaEngine::kv_bytes_per_step(int64_t len, int64_t batch) const {
  const auto& m = *impl_;
  return size_t(2) * size_t(m.L) * size_t(batch) * size_t(len) * size_t(m.H) * m.act_size;
}

CudaMemoryReport OptCudaEngine::memory() const {
  const auto& m = *impl_;
  CudaMemoryReport r;
  r.weights = m.weight_bytes;
  r.host_weights = m.host_weight_bytes;
  r.kv_cache = m.kv_bytes;
  r.workspace = m.work_bytes;
  r.device_total = m.total_mem;
  r.device_peak_used = m.peak_used;
  return r;
}

double OptCudaEngine::measure_copy_bandwidth(size_t bytes) {
  auto& m = *impl_;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaGetLastError();
    if (a) cudaFree(a);
    fail(Status::OutOfMemory, "measuring copy bandwidth needs 2 x {} of free GPU memory; none left after the model.",
         gib(bytes));
  }
  SF_CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, m.stream));
  cudaEvent_t e0, e1;
  SF_CUDA_CHECK(cudaEventCreate(&e0));
  SF_CUDA_CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) SF_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, m.stream));
  constexpr int kIters = 10;
  SF_CUDA_CHECK(cudaEventRecord(e0, m.stream));
  for (int i = 0; i < kIters; ++i) SF_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, m.stream));
  SF_CUDA_CHECK(cudaEventRecord(e1, m.stream));
  SF_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  SF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  m.note_usage();
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(bytes) * kIters / (double(ms) * 1e-3);  // read + written
}

}  // namespace sf::model
