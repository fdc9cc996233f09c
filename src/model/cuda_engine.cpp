// The forward pass on a CUDA GPU for every architecture the model description covers (see
// cuda_engine.hpp). Host code: uploads, buffers, one layer body for prefill and decode alike (rows
// = the prompt's tokens or one per sequence), the decode graph, the generation loops.
#include "model/cuda_engine.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
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
#include "kernels/cuda/sparse_gemm.hpp"
#include "model/engine_checks.hpp"
#include "model/rope_params.hpp"

namespace sf::model {

namespace kk = sf::cuda::model;

namespace {

constexpr size_t kStagingBytes = size_t(64) << 20;  // per pinned staging buffer (two)
constexpr size_t kCublasWorkspace = size_t(32) << 20;
constexpr size_t kAttnScratchBudget = size_t(256) << 20;  // prefill scores + probabilities
// Queries per pass of the unfused prefill attention: chunk c computes scores against the keys up to
// its last query only, so the causal upper triangle costs (1 + chunk / n) / 2 of the full square.
constexpr int64_t kAttnQueryChunk = 256;
// The decode attention kernel keeps a head's q and its partial outputs in registers of one block.
constexpr int64_t kMaxHeadDim = 128;

std::string gib(size_t b) {
  return fmt::format("{:.2f} GiB", double(b) / double(size_t(1) << 30));
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
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
    for (int64_t b = 0; b < bytes; b += piece)
      std::memcpy(out + b, in + b, size_t(std::min(piece, bytes - b)));
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      store_from_float(out, dst_dt, size_t(i), load_as_float(in, src_dt, size_t(i)));
  }
}

// The dense [out, in] weight of a linear on the host: a view of the model's tensor, or the 2:4
// weight decompressed into `buf`.
s24::MatrixView host_dense(const Linear& l, std::vector<uint8_t>& buf) {
  if (l.dense) return {l.dense->data, l.dense->dtype, l.out_features, l.in_features};
  buf.resize(size_t(l.out_features * l.in_features) * dtype_size(l.sparse->dtype));
  s24::decompress(*l.sparse, buf.data());
  return {buf.data(), l.sparse->dtype, l.out_features, l.in_features};
}

}  // namespace

std::string cuda_unavailable_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    return fmt::format(
        "no usable CUDA device ({}); check the driver with nvidia-smi, or use --device cpu",
        cudaGetErrorString(e));
  if (n == 0) return "no CUDA device is visible; use --device cpu";
  return "";
}

// ---- the engine ------------------------------------------------------------------------------
class CudaEngineImpl final : public CudaEngine {
 public:
  CudaEngineImpl(const Model& model, const CudaOptions& options);
  ~CudaEngineImpl() override;
  CudaEngineImpl(const CudaEngineImpl&) = delete;
  CudaEngineImpl& operator=(const CudaEngineImpl&) = delete;

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
  double measure_copy_bandwidth(size_t bytes = size_t(1) << 30) override;
  void set_input_observer(DeviceInputObserver obs) override;
  void embed_rows(std::span<const int32_t> tokens, float* h) override;
  void run_layer(int64_t layer, const float* in, float* out, int64_t n) override;
  void replace_weight(const std::string& name, const void* w, DType dt) override;
  void* stream_handle() const override;
  DType activation_dtype() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- device state ------------------------------------------------------------------------------
struct DLinear {
  void* dense = nullptr;        // [out, in] in act (null when sparse)
  sf::cuda::DeviceWeight24 sp;  // 2:4 when sparse
  bool sparse = false;
  // A gated MLP's fused gate/up weight (rows 2j, 2j + 1 = gate j, up j): the product writes
  // act(gate) * up, out / 2 columns.
  bool gated = false;
  float* bias = nullptr;     // [out] fp32 or null (gated: in the fused row order)
  void* bias_act = nullptr;  // [out] in act: the bias rounded to 16 bits, for cuBLASLt's fused
                             // epilogue where the prefill output is 16-bit (qkv, a ReLU up);
                             // counted as weights
  int64_t out = 0, in = 0;
  size_t bytes(DType act) const { return sparse ? sp.bytes() : size_t(out * in) * dtype_size(act); }
  int64_t out_cols() const { return gated ? out / 2 : out; }
};

struct DNorm {
  float* w = nullptr;  // [hidden] fp32; null without an affine
  float* b = nullptr;  // [hidden] fp32; LayerNorm with an affine only
};

struct DLayer {
  DNorm norm1, norm2;  // before attention / the MLP (pre-norm), after them (post-norm)
  DLinear qkv;         // [q_dim + 2 kv_dim, hidden], rows q | k | v
  DLinear out;         // [hidden, q_dim]
  DLinear up;          // [ffn, hidden]; gated: gate and up fused, [2 ffn, hidden]
  DLinear down;        // [hidden, ffn]
};

// What one pass of the layer body runs over.
struct Rows {
  int64_t n = 0;        // rows: the prompt's tokens (prefill) or one token per sequence (decode)
  bool decode = false;  // decode: the rows are the batch's sequences at the device position
  int64_t seq = 0;      // prefill: the sequence of the batch whose cache rows it writes
  int64_t past = 0;     // tokens cached before these (the stage profile's KV bytes)
};

struct CudaEngineImpl::Impl {
  const Model& model;
  CudaOptions opt;
  arch::ModelDesc cfg;
  int64_t H = 0, F = 0, E = 0, V = 0, L = 0, heads = 0, kv_heads = 0, hd = 0;
  int64_t Q = 0, KV = 0;  // q_dim, kv_dim
  DType act = DType::F16;
  int act_dt = 1;
  size_t act_size = 2;
  bool pre = true, gated = false;
  s24::Activation mlp_act = s24::Activation::ReLU;
  kk::NormKind norm_kind = kk::NormKind::Layer;
  float norm_eps = 1e-5f;
  std::string gpu;

  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  // Dense products of more than kGemvMaxM rows (prefill) with their bias / ReLU / residual fused
  // into cuBLASLt's GEMM; off with SPARSEFLOW_PREFILL_LT=0 (the A/B of the bench).
  std::optional<sf::cuda::LtLinear> lt;
  void* lt_workspace = nullptr;
  std::unique_ptr<sf::cuda::SparseGemm> sgemm;

  // Weights.
  std::vector<void*> allocations;       // everything cudaMalloc'ed, freed in the destructor
  std::vector<void*> host_allocations;  // cudaHostAlloc'ed weights (attention on the host)
  size_t weight_bytes = 0, kv_bytes = 0, work_bytes = 0, host_weight_bytes = 0;
  size_t peak_used = 0, total_mem = 0;
  void* embed_tokens = nullptr;  // [V, E] act
  void* embed_pos = nullptr;     // [max_pos + offset, H] act; null for rotary models
  DLinear lm_head;               // dense [V, E]; shares embed_tokens when tied
  std::optional<DLinear> project_in, project_out;
  DNorm final_norm;
  float* rope_inv_freq = nullptr;  // [rotary dims / 2] fp32; null for learned positions
  float rope_factor = 1.0f;        // yarn's attention factor on cos and sin
  std::vector<DLayer> layers;
  bool any_sparse = false;
  size_t sparse_dense_bytes = 0;  // the largest 2:4 weight decompressed (for dense_scratch)
  void* dense_scratch =
      nullptr;  // workspace: one 2:4 weight decompressed for a cuBLASLt prefill product

  // Sequence state and buffers (reset()).
  int64_t cap = 0, batch = 0, rows_cap = 0, length = 0;
  void* k_cache = nullptr;  // [L, batch, cap, KV] act
  void* v_cache = nullptr;
  float *h = nullptr, *h2 = nullptr;  // [rows, H] fp32 residual stream (ping-pong)
  void* x = nullptr;                  // [rows, max(H, E)] act: norm output / linear input
  void* e = nullptr;        // [rows, E] act: embeddings before project_in, project_out output
  float* qkv = nullptr;     // [rows, Q + 2 KV] fp32 (16-bit in a prefill, see layer())
  void* q = nullptr;        // [rows, Q] act (prefill: rotated, scaled)
  void* attn = nullptr;     // [rows, Q] act
  void* ff = nullptr;       // [rows, F] act: the MLP's hidden activations
  float* acc = nullptr;     // [rows, max(Q + 2 KV, F or 2F, E, H)] fp32: cuBLAS output before the
                            // epilogue, and the gate/up pairs of a cuBLASLt gated product
  float* logits = nullptr;  // [rows, V] fp32
  float* scores = nullptr;  // prefill attention scores, kAttnScratchBudget bytes
  void* probs = nullptr;
  int64_t attn_heads_per_pass = 1;  // unfused prefill: KV heads per pass
  int64_t attn_chunk = 0,
          attn_ld = 0;        // queries per pass, scores' row stride (keys, multiple of 4)
  float* partials = nullptr;  // decode attention workspace
  unsigned* attn_counters =
      nullptr;  // decode attention: the chunks' arrival counters per (sequence, KV head)
  void* cublas_ws = nullptr;
  int32_t* d_tokens = nullptr;   // [max(rows, batch)] input ids
  int32_t* d_targets = nullptr;  // [rows] perplexity targets
  double* d_nll = nullptr;       // [rows]
  int* d_pos = nullptr;
  int32_t* history = nullptr;  // pinned, mapped: [cap + 1, batch] sampled ids by position
  std::vector<void*> buffer_allocs;
  cudaGraphExec_t graph = nullptr;
  // profile_decode(): an event after each stage of an eager step; off (no events) otherwise.
  bool profiling = false;
  std::vector<cudaEvent_t> prof_events;
  // Per recorded event: the stage, its bytes (or flops), and what each further cached position
  // adds (the attention's KV rows): a graph captured at one length replays at longer ones.
  struct Mark {
    const char* stage;
    double work;
    double per_position;
  };
  std::vector<Mark> prof_marks;

  // Calibration (set_input_observer, replace_weight): each layer's HF linears by the input they
  // read, and where each HF linear's rows live in the fused device weights.
  struct InputNames {
    std::vector<std::string> qkv, o, up, down;
  };
  std::vector<InputNames> input_names;
  CudaEngine::DeviceInputObserver input_obs;
  struct WeightSlot {
    DLinear* lin = nullptr;
    int64_t row0 = 0;  // stacked (q | k | v): the first row; gate/up: 0
    int part = 0;      // gate/up: 0 gate, 1 up (rows interleave)
    int64_t rows = 0;
  };
  std::map<std::string, WeightSlot> weight_slots;  // by "model.layers.3.mlp.up_proj.weight"
  void observe(int64_t li, const std::vector<std::string>& names, const void* xin, int64_t n,
               int64_t in) {
    if (input_obs) input_obs(li, names, xin, n, in, stream);
  }
  void mark(const char* stage, double bytes, double per_position = 0) {
    if (!profiling) return;
    if (prof_marks.size() + 1 >= prof_events.size()) {
      cudaEvent_t ev;
      SF_CUDA_CHECK(cudaEventCreate(&ev));
      prof_events.push_back(ev);
    }
    record_mark(prof_events[prof_marks.size() + 1]);
    prof_marks.push_back({stage, bytes, per_position});
  }
  // Inside a stream capture a plain record is only a dependency marker; an external record becomes
  // an event node that the replayed graph records, so its time can be read.
  void record_mark(cudaEvent_t ev) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    SF_CUDA_CHECK(cudaStreamIsCapturing(stream, &cs));
    if (cs == cudaStreamCaptureStatusActive)
      SF_CUDA_CHECK(cudaEventRecordWithFlags(ev, stream, cudaEventRecordExternal));
    else
      SF_CUDA_CHECK(cudaEventRecord(ev, stream));
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
  void* dev_alloc(size_t bytes, const std::string& what, size_t* counter,
                  std::vector<void*>* list) {
    void* p = nullptr;
    if (bytes == 0) return nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error state
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      fail(Status::OutOfMemory,
           "out of GPU memory: {} needs {}, but only {} of {} is free on {} (this model "
           "already holds {} of weights, {} of KV cache, {} of workspace).\n---> HINT: use a 2:4 "
           "model (0.56x the weight bytes), a shorter context or fewer new tokens, a smaller "
           "--batch, or a GPU with more memory.",
           what, gib(bytes), gib(fr), gib(tot), gpu, gib(weight_bytes), gib(kv_bytes),
           gib(work_bytes));
    }
    list->push_back(p);
    *counter += bytes;
    return p;
  }
  void* weight_alloc(size_t bytes, const std::string& what) {
    return dev_alloc(bytes, what, &weight_bytes, &allocations);
  }
  // A weight the GPU reads over PCIe: pinned, mapped host memory, write-combined (the CPU writes
  // it once and never reads it; the GPU's reads then skip snooping the CPU caches). Returns the
  // device alias the kernels take; *host is the CPU's pointer, for filling.
  void* host_weight_alloc(size_t bytes, const std::string& what, void** host) {
    void* hp = nullptr;
    const cudaError_t err =
        cudaHostAlloc(&hp, bytes, cudaHostAllocMapped | cudaHostAllocWriteCombined);
    if (err != cudaSuccess) {
      cudaGetLastError();
      fail(Status::OutOfMemory,
           "out of pinned host memory: {} needs {} of mapped host memory ({}); {} of attention "
           "weights are pinned already.\n---> HINT: give the GPU a larger budget, so fewer "
           "layers' attention lives on the host, or free host memory.",
           what, gib(bytes), cudaGetErrorString(err), gib(host_weight_bytes));
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
  // Converts src on the host into a staging buffer and copies that, so src may be freed on return.
  void upload(void* dst, const void* src, DType src_dt, int64_t count, DType dst_dt) {
    const size_t out_elem = dtype_size(dst_dt), in_elem = dtype_size(src_dt);
    const int64_t per_chunk = int64_t(kStagingBytes / out_elem);
    for (int64_t off = 0; off < count; off += per_chunk) {
      const int64_t n = std::min(per_chunk, count - off);
      const int s = stage_next;
      stage_next ^= 1;
      SF_CUDA_CHECK(cudaEventSynchronize(staged[s]));  // the copy that last used it is done
      char* st = static_cast<char*>(staging[s]);
      convert(st, static_cast<const char*>(src) + size_t(off) * in_elem, src_dt, n, dst_dt);
      SF_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + size_t(off) * out_elem, st,
                                    size_t(n) * out_elem, cudaMemcpyHostToDevice, stream));
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
  // Dense elements in act at dst: device memory through the staging buffers, or mapped host
  // memory (`host`: dst is the CPU's pointer) written directly.
  void put(void* dst, const void* src, DType dt, int64_t n, bool host) {
    if (host)
      convert(dst, src, dt, n, act);
    else
      upload(dst, src, dt, n, act);
  }

  DLinear make_linear(const std::vector<Linear>& parts, const std::string& name,
                      bool weight_on_host = false, bool gate_up = false);
  DNorm load_norm(const std::string& prefix);
  void load();
  void alloc_buffers(int64_t capacity, int64_t b);
  void free_buffers();

  // -- the forward pass
  void linear(const DLinear& l, const void* xin, int64_t m, void* y, DType y_dt,
              const float* residual = nullptr, s24::Activation a = s24::Activation::None);
  void norm(const DNorm& w, const float* in, int64_t rows, float* out_f32, void* out_act) {
    kk::launch_norm(norm_kind, in, rows, H, w.w, w.b, norm_eps, out_f32, out_act, act_dt, stream);
  }
  void embed(const int32_t* tokens, int64_t rows, int64_t seq);
  void layer(int64_t li, const Rows& r);
  void attention(int64_t li, const Rows& r, bool qkv16);
  void mlp(int64_t li, const Rows& r);
  // What a product costs, for the stage profile: the bytes it reads in a decode step, its flops in
  // a prefill.
  double work(const DLinear& l, const Rows& r) const {
    return r.decode ? double(l.bytes(act)) : 2.0 * double(r.n) * double(l.out) * double(l.in);
  }
  // profile_decode / profile_prefill: run a marked pass, gather its stage times.
  void profiled(const std::function<void()>& pass);
  void collect_marks(std::vector<StageProfile>& out, int64_t positions_since_capture = 0);
  void end_profile();
  void start_marks();
  void stop_marks();
  cudaGraphExec_t capture_step(const SamplingParams& s);
  void prepare_decode_profile(CudaEngineImpl& self, const char* what, int64_t prompt_tokens,
                              int64_t steps, int64_t b);
  // Whether the provider computes this layer's FFN.
  bool ffn_owned(int64_t li) const { return opt.ffn_provider && opt.ffn_provider->owns_ffn(li); }
  kk::AttentionArgs attention_args(int64_t li) const;
  void head(int64_t first_row, int64_t n_rows, float* out_logits);
  void prefill(const int32_t* tokens, int64_t seq, int64_t n, bool all_logits, float* out_logits);
  void decode_step_kernels(const SamplingParams& s);
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

CudaEngineImpl::Impl::~Impl() {
  free_buffers();  // also destroys the decode graph (exactly once: a second destroy is an error)
  for (auto& l : layers)
    for (DLinear* d : {&l.qkv, &l.out, &l.up, &l.down})
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

// One device linear from the model's linears: stacked along `out` (q | k | v), or with `gate_up`
// gate and up interleaved row by row (s24::fuse_gate_up; 2:4 rows interleave exactly, the groups
// run along `in`). With `weight_on_host` the weight matrix lives in mapped host memory (the bias
// stays on the GPU). Biases go to fp32 in the same row order.
DLinear CudaEngineImpl::Impl::make_linear(const std::vector<Linear>& parts, const std::string& name,
                                          bool weight_on_host, bool gate_up) {
  DLinear d;
  d.in = parts[0].in_features;
  d.gated = gate_up;
  for (const auto& p : parts) d.out += p.out_features;
  // fp32 mode decompresses 2:4 weights (the 2:4 kernels take fp16/bf16).
  const bool sparse =
      act != DType::F32 &&
      std::all_of(parts.begin(), parts.end(), [](const Linear& p) { return p.sparse != nullptr; });
  if (sparse && weight_on_host)
    fail(Status::UnsupportedShape,
         "{} is 2:4-sparse, and weights in host memory are read by the dense kernels only (the "
         "2:4 kernels take device memory).\n---> HINT: give the GPU a budget that holds the "
         "2:4 weights, or run a dense model under this budget.",
         name);
  if (sparse) {
    s24::Compressed c;
    if (gate_up) {
      c = s24::fuse_gate_up(*parts[0].sparse, *parts[1].sparse);
    } else {
      // 2:4 rows stack when every part fills whole 16-row blocks.
      c = *parts[0].sparse;
      for (size_t i = 1; i < parts.size(); ++i) {
        const auto& s = *parts[i].sparse;
        if (s.rows != s.rows_padded || c.rows != c.rows_padded || s.cols_padded != c.cols_padded ||
            s.dtype != c.dtype)
          fail(Status::UnsupportedShape,
               "{}: cannot stack 2:4 weights of {} rows (padded {}) after {} rows (padded {}); "
               "the GPU backend needs q_dim and kv_dim multiples of 16 for 2:4 models.\n---> "
               "HINT: run this model dense, or with --device cpu.",
               name, s.rows, s.rows_padded, c.rows, c.rows_padded);
        c.values.insert(c.values.end(), s.values.begin(), s.values.end());
        c.meta.insert(c.meta.end(), s.meta.begin(), s.meta.end());
        c.rows += s.rows;
        c.rows_padded += s.rows_padded;
      }
    }
    note_usage();
    size_t fr = 0, tot = 0;
    SF_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    const size_t need =
        size_t(c.rows_padded) * size_t(c.cols_padded + 128) + size_t(64) * c.rows_padded;
    if (need > fr)
      fail(Status::OutOfMemory,
           "out of GPU memory: 2:4 weight {} needs about {}, but only {} of {} is free "
           "(weights so far: {}).\n---> HINT: use a GPU with more memory or a smaller model.",
           name, gib(need), gib(fr), gib(tot), gib(weight_bytes));
    d.sp = sf::cuda::upload_weight(c, stream);
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
    if (gate_up) {
      std::vector<uint8_t> gbuf, ubuf;
      s24::MatrixView g = host_dense(parts[0], gbuf), u = host_dense(parts[1], ubuf);
      std::vector<float> gf, uf;  // a common dtype when gate and up are stored apart
      if (g.dtype != u.dtype) {
        gf.resize(size_t(g.rows * g.cols));
        uf.resize(size_t(u.rows * u.cols));
        convert(gf.data(), g.data, g.dtype, g.rows * g.cols, DType::F32);
        convert(uf.data(), u.data, u.dtype, u.rows * u.cols, DType::F32);
        g = {gf.data(), DType::F32, g.rows, g.cols};
        u = {uf.data(), DType::F32, u.rows, u.cols};
      }
      std::vector<uint8_t> fused(size_t(d.out * d.in) * dtype_size(g.dtype));
      s24::fuse_gate_up(g, u, fused.data());
      put(dst, fused.data(), g.dtype, d.out * d.in, weight_on_host);
    } else {
      for (const auto& p : parts) {
        std::vector<uint8_t> buf;
        const s24::MatrixView w = host_dense(p, buf);
        put(dst, w.data, w.dtype, w.rows * w.cols, weight_on_host);
        dst += size_t(p.out_features * p.in_features) * act_size;
      }
    }
    // Drains the write-combining buffers, so the GPU's first read sees every byte.
    if (weight_on_host) std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  if (std::any_of(parts.begin(), parts.end(), [](const Linear& p) { return p.bias != nullptr; })) {
    std::vector<float> b(size_t(d.out), 0.0f);  // a part without a bias adds zeros
    int64_t row = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      const Linear& p = parts[i];
      for (int64_t j = 0; p.bias && j < p.out_features; ++j)
        b[size_t(gate_up ? 2 * j + int64_t(i) : row + j)] =
            load_as_float(p.bias->data, p.bias->dtype, size_t(j));
      row += p.out_features;
    }
    d.bias = static_cast<float*>(weight_alloc(size_t(d.out) * 4, name + ".bias"));
    upload(d.bias, b.data(), DType::F32, d.out, DType::F32);
  }
  return d;
}

DNorm CudaEngineImpl::Impl::load_norm(const std::string& prefix) {
  DNorm n;
  if (!cfg.norm_affine) return n;
  const Tensor& w = model.tensor(prefix + ".weight");
  expect_shape(w, prefix + ".weight", {H});
  n.w = upload_f32(w, prefix + ".weight");
  if (cfg.norm == arch::Norm::LayerNorm) {
    const Tensor& b = model.tensor(prefix + ".bias");
    expect_shape(b, prefix + ".bias", {H});
    n.b = upload_f32(b, prefix + ".bias");
  }
  return n;
}

void CudaEngineImpl::Impl::load() {
  arch::validate(cfg, "the model's description");
  H = cfg.hidden_size, F = cfg.ffn_dim, E = cfg.word_embed_proj_dim, V = cfg.vocab_size;
  L = cfg.num_hidden_layers;
  heads = cfg.num_attention_heads, kv_heads = cfg.num_key_value_heads, hd = cfg.head_dim;
  Q = cfg.q_dim(), KV = cfg.kv_dim();
  pre = cfg.pre_norm;
  gated = cfg.is_gated();
  mlp_act = s24_activation(cfg.act);
  norm_kind = cfg.norm == arch::Norm::RMSNorm ? kk::NormKind::Rms : kk::NormKind::Layer;
  norm_eps = float(cfg.norm_eps);
  if (hd > kMaxHeadDim)
    fail(Status::UnsupportedShape,
         "the CUDA attention kernels take head_dim up to {}; this model ({}) has {}.\n---> HINT: "
         "run it with --device cpu.",
         kMaxHeadDim, arch::summary(cfg), hd);
  if (gated && opt.ffn_provider)
    fail(Status::UnsupportedShape,
         "offloaded FFNs (an FfnProvider: --gpu-memory, GPU calibration) take plain fc1/fc2 MLPs; "
         "this model has a gated MLP ({}), whose activation sparsity is not modelled yet.\n---> "
         "HINT: run it resident on the GPU (no --gpu-memory) or with --device cpu.",
         arch::summary(cfg));
  act = opt.fp32_compute ? DType::F32 : model.dtype();
  if (act != DType::F16 && act != DType::BF16 && act != DType::F32)
    fail(Status::UnsupportedShape,
         "the CUDA backend computes in fp16, bf16 or fp32; the model's weights are {}.",
         dtype_name(act));
  act_dt = int(act);
  act_size = dtype_size(act);
  if (opt.attention_host_layers < 0 || opt.attention_host_layers > L)
    fail(Status::InvalidArgument,
         "attention_host_layers {} must be in [0, {}] (the model's layers).",
         opt.attention_host_layers, L);
  if (opt.host_layers < 0 || opt.host_layers > L)
    fail(Status::InvalidArgument, "host_layers {} must be in [0, {}] (the model's layers).",
         opt.host_layers, L);

  SF_CUDA_CHECK(cudaSetDevice(opt.device));
  cudaDeviceProp prop{};
  SF_CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device));
  gpu = prop.name;
  SF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  SF_CUBLAS_CHECK(cublasCreate(&cublas));
  SF_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  if (const char* env = std::getenv("SPARSEFLOW_PREFILL_LT");
      act != DType::F32 && !(env && std::string_view(env) == "0"))
    lt.emplace();
  cublas_ws = dev_alloc(kCublasWorkspace, "the cuBLAS workspace", &work_bytes, &allocations);
  SF_CUBLAS_CHECK(cublasSetWorkspace(cublas, cublas_ws, kCublasWorkspace));
  for (int i = 0; i < 2; ++i) {
    SF_CUDA_CHECK(cudaMallocHost(&staging[i], kStagingBytes));
    SF_CUDA_CHECK(cudaEventCreateWithFlags(&staged[i], cudaEventDisableTiming));
    SF_CUDA_CHECK(cudaEventRecord(staged[i], stream));
  }

  const arch::TensorNames& nm = cfg.names;
  const Tensor& tok = model.tensor(nm.embed + ".weight");
  expect_shape(tok, nm.embed + ".weight", {V, E});
  embed_tokens = upload_act(tok, nm.embed);
  if (cfg.positions == arch::Positions::Learned) {
    const Tensor& pos = model.tensor(nm.positions + ".weight");
    expect_shape(pos, nm.positions + ".weight",
                 {cfg.max_position_embeddings + cfg.position_offset, H});
    embed_pos = upload_act(pos, nm.positions);
  } else {
    const cpu::RopeParams rp = rope_params(cfg);
    const std::vector<float> inv = cpu::rope_inv_freq(rp);
    rope_inv_freq = static_cast<float*>(weight_alloc(inv.size() * 4, "the rotary frequencies"));
    upload(rope_inv_freq, inv.data(), DType::F32, int64_t(inv.size()), DType::F32);
    rope_factor = cpu::rope_attention_factor(rp);
  }
  const Tensor& head_t = model.lm_head();
  expect_shape(head_t, "lm_head.weight", {V, E});
  lm_head.out = V;
  lm_head.in = E;
  lm_head.dense = head_t.data == tok.data ? embed_tokens : upload_act(head_t, "lm_head");

  // A linear of the checkpoint with the shape (and bias) the description implies.
  auto get = [&](const std::string& name, int64_t out, int64_t in, bool bias) {
    Linear l = model.linear(name);
    if (l.out_features != out || l.in_features != in)
      fail(Status::Format, "linear {} is [{}, {}], expected [{}, {}] from the model's config.",
           name, l.out_features, l.in_features, out, in);
    if (bias && !l.bias)
      fail(Status::NotFound,
           "linear {} has no bias, but the model's config says it has one. Missing tensor: "
           "{}.bias",
           name, name);
    if (l.bias) expect_shape(*l.bias, name + ".bias", {out});
    return l;
  };
  if (cfg.has_projections()) {
    project_in = make_linear({get(nm.project_in, H, E, false)}, nm.project_in);
    project_out = make_linear({get(nm.project_out, E, H, false)}, nm.project_out);
  }
  if (cfg.final_norm) final_norm = load_norm(nm.final_norm);
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = cfg.layer_prefix(i);
    DLayer Ly;
    Ly.norm1 = load_norm(p + nm.attn_norm);
    Ly.norm2 = load_norm(p + nm.ffn_norm);
    // The last host_layers layers' weights, and the last attention_host_layers layers' attention
    // weights, in mapped host memory.
    const bool layer_on_host = i >= L - opt.host_layers;
    const bool attn_on_host = layer_on_host || i >= L - opt.attention_host_layers;
    Ly.qkv = make_linear({get(p + nm.q, Q, H, cfg.qkv_bias), get(p + nm.k, KV, H, cfg.qkv_bias),
                          get(p + nm.v, KV, H, cfg.qkv_bias)},
                         p + "self_attn.qkv", attn_on_host);
    Ly.out = make_linear({get(p + nm.o, H, Q, cfg.o_bias)}, p + nm.o, attn_on_host);
    // An owned layer's FFN lives in the provider (its file may have no fc1/fc2).
    if (!ffn_owned(i)) {
      if (model.ffn_neurons(i))
        fail(Status::UnsupportedShape,
             "{}: the FFN is stored neuron-major (ffn_neurons bundles, `convert --neuron-major`), "
             "which the resident CUDA engine does not read.\n---> HINT: run it offloaded "
             "(--gpu-memory) or with --device cpu, or convert the checkpoint without "
             "--neuron-major.",
             p);
      if (gated)
        Ly.up =
            make_linear({get(p + nm.gate, F, H, cfg.mlp_bias), get(p + nm.up, F, H, cfg.mlp_bias)},
                        p + "mlp.gate_up", layer_on_host, /*gate_up=*/true);
      else
        Ly.up = make_linear({get(p + nm.up, F, H, cfg.mlp_bias)}, p + nm.up, layer_on_host);
      Ly.down = make_linear({get(p + nm.down, H, F, cfg.mlp_bias)}, p + nm.down, layer_on_host);
    }
    // The products whose prefill output is 16-bit (a ReLU up; qkv, read back by qkv_to_cache) get
    // a 16-bit copy of their bias: cuBLASLt fuses bias (+ ReLU) into a 16-bit output only with a
    // 16-bit bias (measured on the H200: no algorithm with the fp32 one, and OPT's fc1 GEMM +
    // epilogue fallback ran at 366 TFLOP/s).
    const bool relu_up = !gated && mlp_act == s24::Activation::ReLU;
    for (DLinear* d : {&Ly.qkv, relu_up ? &Ly.up : nullptr}) {
      if (!d || !lt || !d->bias || (!d->dense && !d->sparse)) continue;
      d->bias_act = weight_alloc(size_t(d->out) * act_size, p + "bias (16-bit copy)");
      kk::launch_cast(d->bias, d->out, d->bias_act, act_dt, stream);
    }
    layers.push_back(Ly);
    InputNames in;
    in.qkv = {p + nm.q, p + nm.k, p + nm.v};
    in.o = {p + nm.o};
    in.up = gated ? std::vector<std::string>{p + nm.gate, p + nm.up} : std::vector{p + nm.up};
    in.down = {p + nm.down};
    input_names.push_back(std::move(in));
  }
  for (int64_t i = 0; i < L; ++i) {  // `layers` no longer moves
    const std::string p = cfg.layer_prefix(i);
    DLayer& Ly = layers[size_t(i)];
    weight_slots[p + nm.q + ".weight"] = {&Ly.qkv, 0, 0, Q};
    weight_slots[p + nm.k + ".weight"] = {&Ly.qkv, Q, 0, KV};
    weight_slots[p + nm.v + ".weight"] = {&Ly.qkv, Q + KV, 0, KV};
    weight_slots[p + nm.o + ".weight"] = {&Ly.out, 0, 0, H};
    if (ffn_owned(i)) continue;
    if (gated) {
      weight_slots[p + nm.gate + ".weight"] = {&Ly.up, 0, 0, F};
      weight_slots[p + nm.up + ".weight"] = {&Ly.up, 0, 1, F};
    } else {
      weight_slots[p + nm.up + ".weight"] = {&Ly.up, 0, 0, F};
    }
    weight_slots[p + nm.down + ".weight"] = {&Ly.down, 0, 0, H};
  }
  SF_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (any_sparse) sgemm = std::make_unique<sf::cuda::SparseGemm>(stream);
  note_usage();
}

void CudaEngineImpl::Impl::free_buffers() {
  if (graph) {
    cudaGraphExecDestroy(graph);
    graph = nullptr;
  }
  graph_valid = false;
  for (void* p : buffer_allocs) cudaFree(p);
  buffer_allocs.clear();
  lt_workspace = dense_scratch = nullptr;
  scores = nullptr;
  probs = nullptr;
  if (history) cudaFreeHost(history);
  history = nullptr;
  kv_bytes = 0;
  work_bytes = kCublasWorkspace;
  cap = batch = rows_cap = 0;
}

void CudaEngineImpl::Impl::alloc_buffers(int64_t capacity, int64_t b) {
  if (capacity <= 0 || b <= 0)
    fail(Status::InvalidArgument, "KV cache capacity and batch must be positive, got {} and {}",
         capacity, b);
  if (capacity > cfg.max_position_embeddings)
    fail(Status::InvalidArgument,
         "a KV cache of {} tokens exceeds the model's max_position_embeddings ({}).", capacity,
         cfg.max_position_embeddings);
  if (cfg.sliding_window > 0 && capacity > cfg.sliding_window)
    fail(Status::UnsupportedShape,
         "a context of {} tokens is longer than the model's sliding attention window ({} tokens), "
         "and the CUDA attention kernels attend over the whole causal context (the same thing "
         "only while it fits the window).\n---> HINT: ask for at most {} tokens (prompt + new "
         "tokens, or perplexity's --context), or run with --device cpu, which applies the window.",
         capacity, cfg.sliding_window, cfg.sliding_window);
  SF_CUDA_CHECK(cudaStreamSynchronize(stream));
  free_buffers();
  cap = capacity;
  batch = b;
  rows_cap = std::max(capacity, b);
  const size_t R = size_t(rows_cap);
  auto kv = [&](size_t bytes, const char* what) {
    return dev_alloc(bytes, what, &kv_bytes, &buffer_allocs);
  };
  auto ws = [&](size_t bytes, const char* what) {
    return dev_alloc(bytes, what, &work_bytes, &buffer_allocs);
  };
  const size_t kv_each = size_t(L) * size_t(b) * size_t(cap) * size_t(KV) * act_size;
  k_cache = kv(kv_each, "the KV cache (keys)");
  v_cache = kv(kv_each, "the KV cache (values)");
  h = static_cast<float*>(ws(R * H * 4, "the residual stream"));
  h2 = static_cast<float*>(ws(R * H * 4, "the residual stream"));
  x = ws(R * std::max(H, E) * act_size, "activations");
  e = cfg.has_projections() ? ws(R * E * act_size, "activations") : nullptr;
  qkv = static_cast<float*>(ws(R * (Q + 2 * KV) * 4, "q/k/v activations"));
  q = ws(R * Q * act_size, "activations");
  attn = ws(R * Q * act_size, "activations");
  ff = ws(R * F * act_size, "MLP activations");
  acc = static_cast<float*>(
      ws(R * std::max({Q + 2 * KV, gated ? 2 * F : F, E, H}) * 4, "GEMM accumulators"));
  logits = static_cast<float*>(ws(R * V * 4, "logits"));
  // Prefill attention: fused (nothing of size n x len) when asked for and supported, else per
  // chunk of queries the scores (fp32) + probabilities (act) of the keys that chunk sees, for as
  // many KV heads per pass as fit the scratch budget.
  const char* fused_env = std::getenv("SPARSEFLOW_FUSED_ATTENTION");
  const bool fused_wanted =
      fused_env && *fused_env ? std::string_view(fused_env) == "1" : opt.fused_prefill_attention;
  const bool fused = fused_wanted && kk::fused_prefill_attention_supported(act_dt, hd, Q) &&
                     kk::fused_prefill_attention_supported(act_dt, hd, KV);
  if (!fused) {
    attn_ld = (cap + 3) / 4 * 4;
    attn_chunk = std::min<int64_t>(kAttnQueryChunk, cap);
    size_t per_head = size_t(attn_chunk) * size_t(attn_ld) * (4 + act_size);
    while (per_head > kAttnScratchBudget && attn_chunk > 16) {
      attn_chunk /= 2;
      per_head = size_t(attn_chunk) * size_t(attn_ld) * (4 + act_size);
    }
    attn_heads_per_pass = std::clamp<int64_t>(
        int64_t(kAttnScratchBudget / std::max<size_t>(per_head, 1)), 1, kv_heads);
    scores =
        static_cast<float*>(ws(per_head * size_t(attn_heads_per_pass), "prefill attention scores"));
    probs = reinterpret_cast<char*>(scores) +
            size_t(attn_chunk) * size_t(attn_ld) * 4 * size_t(attn_heads_per_pass);
  }
  partials = static_cast<float*>(
      ws(kk::decode_attention_partial_floats(b, heads, cap, hd) * 4, "decode attention partials"));
  attn_counters = static_cast<unsigned*>(ws(size_t(b * kv_heads) * 4, "decode attention counters"));
  // The kernel leaves them at zero after every launch.
  SF_CUDA_CHECK(cudaMemset(attn_counters, 0, size_t(b * kv_heads) * 4));
  if (lt) lt_workspace = ws(sf::cuda::LtLinear::kWorkspaceBytes, "the cuBLASLt workspace");
  // 2:4 prefill products the kernel table sends to the dense fallback are decompressed here and
  // run through cuBLASLt with the dense path's fused epilogues (one weight at a time).
  // Not under an FFN provider: the offload planner's budget has no room for it (those products
  // then take the SparseGemm fallback, which sizes its own scratch).
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
// through the fused GEMV for M <= 8, else cuBLASLt with its fused epilogue, else cuBLAS + the
// epilogue kernel. A gated weight writes act(gate) * up (y [m, out / 2]).
void CudaEngineImpl::Impl::linear(const DLinear& l, const void* xin, int64_t m, void* y, DType y_dt,
                                  const float* residual, s24::Activation a) {
  if (l.sparse) {
    sf::cuda::DeviceEpilogue de;
    de.bias = l.bias;
    de.bias_dtype = DType::F32;
    de.act = a;
    de.residual = residual;
    de.residual_dtype = DType::F32;
    de.gated = l.gated;
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
    return linear(dl, xin, m, y, y_dt, residual, a);
  }
  sf::cuda::EpilogueParams ep;
  ep.bias = l.bias;
  ep.bias_dt = 0;
  ep.residual = residual;
  ep.residual_dt = 0;
  ep.y = y;
  ep.y_dt = int(y_dt);
  ep.act = int(a);
  ep.ldy = l.out_cols();
  ep.gated = l.gated ? 1 : 0;
  if (m <= kk::kGemvMaxM && kk::launch_gemv(l.dense, act_dt, xin, m, l.out, l.in, ep, stream))
    return;
  // cuBLASLt fuses bias and ReLU; a gated product goes through its gate/up workspace (acc, fp32,
  // so gate and up are not rounded before the activation); GELU and SiLU take the epilogue kernel.
  const bool lt_epilogue = a == s24::Activation::None || a == s24::Activation::ReLU || l.gated;
  if (lt && lt_workspace && lt_epilogue) {
    sf::cuda::LtProduct p;
    p.w = l.dense;
    p.x = xin;
    p.m = m;
    p.out = l.out;
    p.in = l.in;
    p.act_dt = act_dt;
    const bool b16 = l.bias_act && y_dt != DType::F32 && !l.gated;
    p.bias = b16 ? l.bias_act : static_cast<const void*>(l.bias);
    p.bias_dt = b16 ? act_dt : 0;
    p.relu = a == s24::Activation::ReLU && !l.gated;
    p.residual = residual;
    p.y = y;
    p.y_dt = int(y_dt);
    if (l.gated) {
      p.gated = true;
      p.gated_act = int(a);
      p.gate_up = acc;
      p.gate_up_dt = 0;
    }
    if (lt->run(p, lt_workspace, sf::cuda::LtLinear::kWorkspaceBytes, stream)) return;
  }
  const bool direct =
      !l.bias && !residual && a == s24::Activation::None && !l.gated && y_dt == DType::F32;
  float* out = direct ? static_cast<float*>(y) : acc;
  const float one = 1.0f, zero = 0.0f;
  // Column-major view: y^T [out, m] = W (row-major [out, in] = col-major [in, out], transposed)
  // x^T.
  SF_CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(l.out), int(m), int(l.in),
                               &one, l.dense, cuda_type(act), int(l.in), xin, cuda_type(act),
                               int(l.in), &zero, out, CUDA_R_32F, int(l.out), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
  if (!direct) sf::cuda::launch_epilogue(out, m, l.out, ep, stream);
}

// h = embed_tokens[tokens] (-> project_in) (+ learned positions); for post-norm also x = act(h).
void CudaEngineImpl::Impl::embed(const int32_t* tokens, int64_t rows, int64_t seq) {
  const int64_t offset = cfg.position_offset;
  if (project_in) {
    kk::launch_embed(tokens, rows, seq, embed_tokens, nullptr, act_dt, E, d_pos, e, act_dt, stream,
                     offset);
    linear(*project_in, e, rows, h, DType::F32);
    if (embed_pos)
      kk::launch_add_positions(h, rows, seq, embed_pos, act_dt, H, d_pos, stream, offset);
  } else {
    kk::launch_embed(tokens, rows, seq, embed_tokens, embed_pos, act_dt, H, d_pos, h, 0, stream,
                     offset);
  }
  if (!pre) kk::launch_cast(h, rows * H, x, act_dt, stream);
}

// The attention arguments layer `li` shares between prefill and decode: its slice of the KV cache,
// the heads, the rotary table.
kk::AttentionArgs CudaEngineImpl::Impl::attention_args(int64_t li) const {
  kk::AttentionArgs a;
  a.qkv = qkv;
  const size_t layer_bytes = size_t(li) * size_t(batch * cap * KV) * act_size;
  a.k_cache = static_cast<char*>(k_cache) + layer_bytes;
  a.v_cache = static_cast<char*>(v_cache) + layer_bytes;
  a.pos = d_pos;
  a.batch = batch;
  a.capacity = cap;
  a.heads = heads;
  a.kv_heads = kv_heads;
  a.head_dim = hd;
  a.scale = cfg.scale();
  a.act_dt = act_dt;
  a.rope_inv_freq = rope_inv_freq;
  a.rotary_dims = rope_inv_freq ? cfg.rope.dims : 0;
  a.rope_attention_factor = rope_factor;
  return a;
}

// One decoder layer over r.n rows, prefill and decode alike.
//   pre-norm:  h += attn(norm1(h)); h += mlp(norm2(h))
//   post-norm: h = norm1(h + attn(h)); h = norm2(h + mlp(h))   (x holds act(h) on entry)
// Marks: decode stages carry the bytes they must read, prefill stages their flops (work()).
void CudaEngineImpl::Impl::layer(int64_t li, const Rows& r) {
  const DLayer& Ly = layers[size_t(li)];
  const int64_t n = r.n;
  // A norm reads the fp32 residual and writes act (post-norm: fp32 in place as well).
  const double norm_bytes = r.decode ? double(n * H) * (4 + double(act_size) + (pre ? 0 : 4)) : 0.0;
  if (pre) {
    norm(Ly.norm1, h, n, nullptr, x);
    mark("norm", norm_bytes);
  }
  if (ffn_owned(li)) {
    if (r.decode) {
      opt.ffn_provider->before_attention(li, x, n, stream);  // predict + prefetch
      mark("ffn_predict", 0);
    } else {
      opt.ffn_provider->prefill_attention_input(li, x, n, stream);
    }
  }
  // The decode attention reads q/k/v in fp32. A prefill writes them 16-bit where the bias (if any)
  // can be fused in 16 bits: half the bytes written and re-read, and k and v are stored 16-bit in
  // the cache anyway (HF's q_proj output is 16-bit too).
  const bool qkv16 = !r.decode && act != DType::F32 && (!Ly.qkv.bias || Ly.qkv.bias_act);
  const bool observed = input_obs && !r.decode;
  if (observed) observe(li, input_names[size_t(li)].qkv, x, n, H);
  linear(Ly.qkv, x, n, qkv, qkv16 ? act : DType::F32);
  mark("qkv", work(Ly.qkv, r));
  attention(li, r, qkv16);
  if (observed) observe(li, input_names[size_t(li)].o, attn, n, Q);
  linear(Ly.out, attn, n, h2, DType::F32, /*residual=*/h);
  mark("out_proj", work(Ly.out, r));
  std::swap(h, h2);
  if (pre)
    norm(Ly.norm2, h, n, nullptr, x);
  else
    norm(Ly.norm1, h, n, h, x);
  mark("norm", norm_bytes);
  mlp(li, r);
  std::swap(h, h2);
  if (!pre) {
    norm(Ly.norm2, h, n, h, x);
    mark("norm", norm_bytes);
  }
}

// attn [n, Q] = the layer's causal attention of the n rows, their k (rotated) and v appended to
// the cache. Decode: one kernel over the cache (the rows are sequences at the device position).
// Prefill: qkv_to_cache (rotary, scale), then the fused kernel, or per chunk of queries cuBLAS
// scores, the causal softmax and cuBLAS P V.
void CudaEngineImpl::Impl::attention(int64_t li, const Rows& r, bool qkv16) {
  kk::AttentionArgs a = attention_args(li);
  a.out = attn;
  if (r.decode) {
    a.partials = partials;
    a.counters = attn_counters;
    kk::launch_decode_attention(a, stream);
    const double kv_row_bytes = 2.0 * double(r.n * KV) * double(act_size);
    mark("attention", kv_row_bytes * double(r.past + 1), kv_row_bytes);
    return;
  }
  const int64_t n = r.n, past = r.past, group = cfg.group();
  kk::launch_qkv_to_cache(a, r.seq, n, q, stream, qkv16 ? act_dt : 0);
  mark("qkv_to_cache", 0);
  const double fl = 2.0 * double(n);
  if (!scores) {
    kk::launch_prefill_attention(a, r.seq, n, past, q, stream);
    mark("attention_fused", 2.0 * fl * double(past + (n + 1) / 2) * double(Q));  // QK^T + PV
    return;
  }
  // Per chunk of queries [q0, q0 + qn), query head j of every group and pass of KV heads
  // [g0, g0 + gn), through cuBLAS's strided-batched GEMM (column-major views; KV head g serves
  // query heads g * group + j), over the keys the chunk sees (len_c = past + q0 + qn):
  //   S_g^T [len_c, qn] = K_g [len_c, d] Q_h^T,   O_h^T [d, qn] = V_g^T [d, len_c] P_g^T.
  const char* K = static_cast<const char*>(a.k_cache) + size_t(r.seq * cap * KV) * act_size;
  const char* Vc = static_cast<const char*>(a.v_cache) + size_t(r.seq * cap * KV) * act_size;
  const cudaDataType t = cuda_type(act);
  const float one = 1.0f, zero = 0.0f;
  for (int64_t q0 = 0; q0 < n; q0 += attn_chunk) {
    const int64_t qn = std::min(attn_chunk, n - q0), len_c = past + q0 + qn, ld = attn_ld;
    for (int64_t j = 0; j < group; ++j)
      for (int64_t g0 = 0; g0 < kv_heads; g0 += attn_heads_per_pass) {
        const int64_t gn = std::min(attn_heads_per_pass, kv_heads - g0);
        const size_t kv_off = size_t(g0 * hd) * act_size;
        const size_t q_off = size_t(q0 * Q + (g0 * group + j) * hd) * act_size;
        SF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
            cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(len_c), int(qn), int(hd), &one, K + kv_off, t,
            int(KV), hd, static_cast<const char*>(q) + q_off, t, int(Q), group * hd, &zero, scores,
            CUDA_R_32F, int(ld), qn * ld, int(gn), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        mark("attention_scores", fl / double(n) * double(qn * len_c * hd * gn));
        kk::launch_causal_softmax(scores, gn, qn, len_c, ld, past + q0 + 1, probs, act_dt, stream);
        mark("attention_softmax", 0);
        SF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
            cublas, CUBLAS_OP_N, CUBLAS_OP_N, int(hd), int(qn), int(len_c), &one, Vc + kv_off, t,
            int(KV), hd, probs, t, int(ld), qn * ld, &zero, static_cast<char*>(attn) + q_off, t,
            int(Q), group * hd, int(gn), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        mark("attention_pv", fl / double(n) * double(qn * len_c * hd * gn));
      }
  }
}

// h2 = h + mlp(x): the provider's FFN for a layer it owns; plain: down(act(up x)), the activation
// in up's epilogue; gated: down(act(gate x) * up x), both halves one product over the fused
// weight with the gated epilogue.
void CudaEngineImpl::Impl::mlp(int64_t li, const Rows& r) {
  if (ffn_owned(li)) {
    opt.ffn_provider->ffn(li, x, r.n, h, h2, r.decode, stream);
    mark("ffn_offloaded", 0);
    return;
  }
  const DLayer& Ly = layers[size_t(li)];
  const bool observed = input_obs && !r.decode;
  if (observed) observe(li, input_names[size_t(li)].up, x, r.n, H);
  linear(Ly.up, x, r.n, ff, act, nullptr, mlp_act);
  mark(gated ? "gate_up" : "up", work(Ly.up, r));
  if (observed) observe(li, input_names[size_t(li)].down, ff, r.n, F);
  linear(Ly.down, ff, r.n, h2, DType::F32, /*residual=*/h);
  mark("down", work(Ly.down, r));
}

// The final norm (or a cast for pre-norm models without one; post-norm leaves act(h) in x),
// project_out, lm_head over rows [first_row, first_row + n_rows) of the residual stream, logits to
// out_logits [n_rows, V].
void CudaEngineImpl::Impl::head(int64_t first_row, int64_t n_rows, float* out_logits) {
  const float* hr = h + first_row * H;
  void* xin = static_cast<char*>(x) + size_t(first_row * H) * act_size;
  if (cfg.final_norm) {
    norm(final_norm, hr, n_rows, nullptr, x);
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

// n prompt tokens of sequence `seq` at positions length.. (the device position), their keys and
// values into the cache, logits of every row or the last one.
void CudaEngineImpl::Impl::prefill(const int32_t* tokens, int64_t seq, int64_t n, bool all_logits,
                                   float* out_logits) {
  embed(tokens, n, n);
  mark("embed", 0);
  const Rows r{n, /*decode=*/false, seq, length};
  for (int64_t li = 0; li < L; ++li) layer(li, r);
  const int64_t rows = all_logits ? n : 1;
  head(n - rows, rows, out_logits);
  mark("lm_head", 2.0 * double(rows) * double(V) * double(E));
}

void CudaEngineImpl::Impl::decode_step_kernels(const SamplingParams& s) {
  embed(d_tokens, batch, 1);
  mark("embed", 0);
  const Rows r{batch, /*decode=*/true, 0, length};
  for (int64_t li = 0; li < L; ++li) layer(li, r);
  head(0, batch, logits);
  mark("lm_head", double(lm_head.bytes(act)) + (project_out ? double(project_out->bytes(act)) : 0));
  kk::launch_sample(sample_args(s, batch, 1), stream);
  mark("sample", double(batch * V) * 4);
}

// One decode step: the captured graph when there is one for these settings, else the kernels one
// by one (the first step after reset() runs eagerly and sizes every workspace, then is captured).
void CudaEngineImpl::Impl::decode_step(const SamplingParams& s) {
  const bool same = graph_valid && s.greedy == graph_sampling.greedy &&
                    s.temperature == graph_sampling.temperature &&
                    s.top_k == graph_sampling.top_k && s.top_p == graph_sampling.top_p &&
                    s.seed == graph_sampling.seed;
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
cudaGraphExec_t CudaEngineImpl::Impl::capture_step(const SamplingParams& s) {
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

// ---- CudaEngine
// ----------------------------------------------------------------------------------
std::unique_ptr<CudaEngine> make_cuda_engine(const Model& model, const CudaOptions& options) {
  return std::make_unique<CudaEngineImpl>(model, options);
}

CudaEngineImpl::CudaEngineImpl(const Model& model, const CudaOptions& options)
    : impl_(std::make_unique<Impl>(model, options)) {
  if (const std::string why = cuda_unavailable_reason(); !why.empty())
    fail(Status::NoDevice, "{}", why);
  impl_->load();
}
CudaEngineImpl::~CudaEngineImpl() = default;

const arch::ModelDesc& CudaEngineImpl::config() const {
  return impl_->cfg;
}
const Model& CudaEngineImpl::model() const {
  return impl_->model;
}
int64_t CudaEngineImpl::length() const {
  return impl_->length;
}
int64_t CudaEngineImpl::capacity() const {
  return impl_->cap;
}
int64_t CudaEngineImpl::batch() const {
  return impl_->batch;
}
std::string CudaEngineImpl::device_name() const {
  return impl_->gpu;
}
std::string CudaEngineImpl::prefill_plans() const {
  return impl_->lt ? impl_->lt->describe_plans() : std::string();
}
bool CudaEngineImpl::sparse() const {
  return impl_->any_sparse;
}
void CudaEngineImpl::reset(int64_t capacity, int64_t batch) {
  auto& m = *impl_;
  if (capacity != m.cap || batch != m.batch) m.alloc_buffers(capacity, batch);
  m.length = 0;
  m.set_pos(0);
}

std::vector<float> CudaEngineImpl::forward(std::span<const int32_t> tokens, bool all_logits) {
  auto& m = *impl_;
  const int64_t n = int64_t(tokens.size());
  if (m.cap == 0)
    fail(Status::InvalidArgument, "CudaEngine::forward before reset(): make the KV cache first.");
  if (m.batch != 1)
    fail(Status::InvalidArgument,
         "CudaEngine::forward runs a batch-1 cache; this one has batch {}.", m.batch);
  if (n == 0) fail(Status::InvalidArgument, "forward() got no tokens; pass at least one token id.");
  if (m.length + n > m.cap)
    fail(Status::InvalidArgument,
         "sequence of {} tokens does not fit the KV cache of {} tokens; make a larger cache.",
         m.length + n, m.cap);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= m.V)
      fail(Status::InvalidArgument, "token id {} at index {} is outside the vocabulary [0, {}).",
           tokens[size_t(i)], i, m.V);
  SF_CUDA_CHECK(
      cudaMemcpyAsync(m.d_tokens, tokens.data(), size_t(n) * 4, cudaMemcpyHostToDevice, m.stream));
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
  SF_CUDA_CHECK(
      cudaMemcpyAsync(out.data(), m.logits, out.size() * 4, cudaMemcpyDeviceToHost, m.stream));
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  m.note_usage();
  return out;
}

GenerateResult CudaEngineImpl::generate(std::span<const int32_t> prompt, int64_t max_new_tokens,
                                        const SamplingParams& sampling,
                                        const std::function<void(int32_t)>& on_token) {
  auto& m = *impl_;
  if (prompt.empty())
    fail(Status::InvalidArgument, "generate() needs a prompt of at least one token.");
  if (max_new_tokens < 0)
    fail(Status::InvalidArgument, "max_new_tokens must be >= 0, got {}.", max_new_tokens);
  const int64_t n = int64_t(prompt.size()), total = n + max_new_tokens;
  if (total > m.cfg.max_position_embeddings)
    fail(Status::InvalidArgument,
         "prompt ({} tokens) + max new tokens ({}) = {} exceeds the model's "
         "max_position_embeddings ({}); ask for fewer new tokens or shorten the prompt.",
         n, max_new_tokens, total, m.cfg.max_position_embeddings);
  Sampler check(sampling);  // validates temperature / top-k / top-p with the CPU sampler's messages
  for (int64_t i = 0; i < n; ++i)
    if (prompt[size_t(i)] < 0 || prompt[size_t(i)] >= m.V)
      fail(Status::InvalidArgument, "token id {} at index {} is outside the vocabulary [0, {}).",
           prompt[size_t(i)], i, m.V);
  GenerateResult res;
  if (max_new_tokens == 0) return res;
  reset(std::max(total, m.cap), 1);
  volatile int32_t* hist = m.history;

  auto t0 = std::chrono::steady_clock::now();
  SF_CUDA_CHECK(
      cudaMemcpyAsync(m.d_tokens, prompt.data(), size_t(n) * 4, cudaMemcpyHostToDevice, m.stream));
  m.prefill(m.d_tokens, 0, n, false, m.logits);
  kk::launch_sample(m.sample_args(sampling, 1, int(n)), m.stream);
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  res.prefill_ms = ms_since(t0);
  m.length = n;
  for (;;) {
    const int32_t next = hist[m.length];
    res.ids.push_back(next);
    if (on_token) on_token(next);
    if (m.cfg.is_eos(next) || int64_t(res.ids.size()) == max_new_tokens) break;
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

BatchGenerateResult CudaEngineImpl::generate_batch(const std::vector<std::vector<int32_t>>& prompts,
                                                   int64_t max_new_tokens,
                                                   const SamplingParams& sampling) {
  auto& m = *impl_;
  const int64_t B = int64_t(prompts.size());
  if (B == 0 || prompts[0].empty())
    fail(Status::InvalidArgument, "generate_batch needs at least one non-empty prompt.");
  const int64_t n = int64_t(prompts[0].size());
  for (const auto& p : prompts)
    if (int64_t(p.size()) != n)
      fail(Status::InvalidArgument,
           "generate_batch needs prompts of equal length ({} vs {} tokens).", p.size(), n);
  if (max_new_tokens < 1)
    fail(Status::InvalidArgument, "max_new_tokens must be >= 1, got {}.", max_new_tokens);
  const int64_t total = n + max_new_tokens;
  if (total > m.cfg.max_position_embeddings)
    fail(Status::InvalidArgument,
         "prompt ({}) + new tokens ({}) exceeds max_position_embeddings ({}).", n, max_new_tokens,
         m.cfg.max_position_embeddings);
  Sampler check(sampling);
  reset(total, B);
  BatchGenerateResult res;
  res.ids.assign(size_t(B), {});
  auto t0 = std::chrono::steady_clock::now();
  // Each prompt's prefill at positions 0..n-1 into its own cache rows, its last logits into row b.
  for (int64_t b = 0; b < B; ++b) {
    SF_CUDA_CHECK(cudaMemcpyAsync(m.d_tokens, prompts[size_t(b)].data(), size_t(n) * 4,
                                  cudaMemcpyHostToDevice, m.stream));
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
void CudaEngineImpl::Impl::collect_marks(std::vector<StageProfile>& out,
                                         int64_t positions_since_capture) {
  for (size_t i = 0; i < prof_marks.size(); ++i) {
    float ms = 0;
    SF_CUDA_CHECK(cudaEventElapsedTime(&ms, prof_events[i], prof_events[i + 1]));
    const auto [stage, captured_work, per_position] = prof_marks[i];
    const double work = captured_work + per_position * double(positions_since_capture);
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const StageProfile& st) { return st.stage == stage; });
    if (it == out.end()) it = out.insert(out.end(), StageProfile{stage});
    it->ms += ms;
    it->bytes += work;
    ++it->launches;
  }
}

// Runs `pass` with an event after each marked stage; the marks' events stay in prof_events until
// the caller destroys them.
void CudaEngineImpl::Impl::profiled(const std::function<void()>& pass) {
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

// Marks on: the start event exists, the list is empty, mark() records, and the FFN provider has the
// marker.
void CudaEngineImpl::Impl::start_marks() {
  if (prof_events.empty()) {
    cudaEvent_t start = nullptr;
    SF_CUDA_CHECK(cudaEventCreate(&start));
    prof_events.push_back(start);
  }
  prof_marks.clear();
  profiling = true;
  if (opt.ffn_provider)
    opt.ffn_provider->set_stage_marker([this](const char* st, double b) { mark(st, b); });
}

void CudaEngineImpl::Impl::stop_marks() {
  profiling = false;
  if (opt.ffn_provider) opt.ffn_provider->set_stage_marker({});
}

void CudaEngineImpl::Impl::end_profile() {
  for (auto* e : prof_events) cudaEventDestroy(e);
  prof_events.clear();
  prof_marks.clear();
}

// Both decode profiles: a prefill and `steps` graph steps (warm, every workspace sized), then back
// to the prompt, so the profiled steps attend over the same lengths the benchmark's do and
// overwrite the cache rows past the prompt.
void CudaEngineImpl::Impl::prepare_decode_profile(CudaEngineImpl& self, const char* what,
                                                  int64_t prompt_tokens, int64_t steps, int64_t b) {
  if (prompt_tokens < 1 || steps < 1 || b < 1)
    fail(Status::InvalidArgument,
         "{} needs a prompt, steps and batch of at least 1 (got {}, {}, {}).", what, prompt_tokens,
         steps, b);
  const std::vector<std::vector<int32_t>> prompts(size_t(b),
                                                  std::vector<int32_t>(size_t(prompt_tokens), 2));
  self.generate_batch(prompts, steps + 1, SamplingParams{});
  length = prompt_tokens;
  set_pos(prompt_tokens);
}

// Per-step means over `steps` collected passes. Every marked stage stays, also one that took no
// time (a wait that found its event done), so the eager and graph lists name the same stages.
static void average_stages(std::vector<StageProfile>& out, int64_t steps) {
  const double n = double(std::max<int64_t>(1, steps));
  for (auto& st : out) {
    st.ms /= n;
    st.bytes /= n;
    st.launches = int64_t(double(st.launches) / n + 0.5);
  }
}

std::vector<StageProfile> CudaEngineImpl::profile_decode(int64_t prompt_tokens, int64_t steps,
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

std::vector<StageProfile> CudaEngineImpl::profile_decode_graph(int64_t prompt_tokens, int64_t steps,
                                                               int64_t batch) {
  auto& m = *impl_;
  m.prepare_decode_profile(*this, "profile_decode_graph", prompt_tokens, steps, batch);
  SamplingParams greedy;
  // One eager marked step first: it creates every event outside the capture. Then back to the
  // prompt.
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

std::vector<StageProfile> CudaEngineImpl::profile_prefill(int64_t n) {
  auto& m = *impl_;
  if (n < 2 || n > m.cfg.max_position_embeddings)
    fail(Status::InvalidArgument,
         "profile_prefill needs a prompt of 2..{} tokens (max_position_embeddings), got {}.",
         m.cfg.max_position_embeddings, n);
  reset(std::max(n, m.cap), 1);
  std::vector<int32_t> ids(size_t(n), 2);
  if (m.cfg.bos_token_id >= 0) ids[0] = int32_t(m.cfg.bos_token_id);
  SF_CUDA_CHECK(
      cudaMemcpyAsync(m.d_tokens, ids.data(), size_t(n) * 4, cudaMemcpyHostToDevice, m.stream));
  m.prefill(m.d_tokens, 0, n, false, m.logits);  // warm: cuBLAS heuristics, caches
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  std::vector<StageProfile> out;
  m.profiled([&] { m.prefill(m.d_tokens, 0, n, false, m.logits); });
  m.collect_marks(out);
  m.end_profile();
  m.length = 0;
  m.set_pos(0);
  return out;
}

double CudaEngineImpl::dense_gemm_prefill_ms(int64_t n) {
  auto& m = *impl_;
  if (n < 1) fail(Status::InvalidArgument, "dense_gemm_prefill_ms needs n >= 1, got {}.", n);
  const int64_t H = m.H, F = m.F, QKV = m.Q + 2 * m.KV, UP = m.gated ? 2 * F : F;
  const std::pair<int64_t, int64_t> shapes[] = {{QKV, H}, {H, m.Q}, {UP, H}, {H, F}};  // [out, in]
  const size_t wmax = size_t(std::max({QKV * H, H * m.Q, UP * H})) * m.act_size;
  const size_t xmax = size_t(n * std::max({H, m.Q, F})) * m.act_size;
  const size_t ymax = size_t(n * std::max({QKV, UP, H})) * m.act_size;
  std::vector<void*> bufs;
  auto alloc = [&](size_t b) {
    void* p = nullptr;
    if (cudaMalloc(&p, b) != cudaSuccess) {
      cudaGetLastError();
      for (void* q : bufs) cudaFree(q);
      fail(Status::OutOfMemory,
           "timing cuBLAS's prefill GEMMs at M = {} needs {:.2f} GB of scratch; not free.", n,
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
        SF_CUDA_CHECK(cudaMemcpy(static_cast<char*>(p) + o, block.data(),
                                 std::min(bytes - o, block.size() * 2), cudaMemcpyHostToDevice));
  }
  const float one = 1.0f, zero = 0.0f;
  auto layer = [&] {
    for (auto [out, in] : shapes)
      SF_CUBLAS_CHECK(cublasGemmEx(m.cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(n), int(in),
                                   &one, w, cuda_type(m.act), int(in), xin, cuda_type(m.act),
                                   int(in), &zero, y, cuda_type(m.act), int(out),
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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

double CudaEngineImpl::measure_read_bandwidth() {
  impl_->note_usage();
  return sf::cuda::measure_read_tbps(size_t(1) << 30, impl_->stream) * 1e12;
}

PerplexityResult CudaEngineImpl::perplexity(std::span<const int32_t> ids, int64_t context) {
  auto& m = *impl_;
  if (context == 0) context = m.cfg.max_position_embeddings;
  if (context < 2 || context > m.cfg.max_position_embeddings)
    fail(Status::InvalidArgument, "context must be in [2, {}] (max_position_embeddings), got {}.",
         m.cfg.max_position_embeddings, context);
  if (ids.size() < 2)
    fail(Status::InvalidArgument,
         "perplexity needs at least 2 tokens (the first is context only), got {}.", ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= m.V)
      fail(Status::InvalidArgument, "token id {} at index {} is outside the vocabulary [0, {}).",
           ids[i], i, m.V);
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
    SF_CUDA_CHECK(
        cudaMemcpyAsync(m.d_tokens, ids.data() + start, len * 4, cudaMemcpyHostToDevice, m.stream));
    SF_CUDA_CHECK(cudaMemcpyAsync(m.d_targets, ids.data() + start + 1, (len - 1) * 4,
                                  cudaMemcpyHostToDevice, m.stream));
    m.prefill(m.d_tokens, 0, int64_t(len), /*all_logits=*/true, m.logits);
    kk::launch_row_nll(m.logits, int64_t(len) - 1, m.V, m.d_targets, m.d_nll, m.stream);
    nll.resize(len - 1);
    SF_CUDA_CHECK(
        cudaMemcpyAsync(nll.data(), m.d_nll, nll.size() * 8, cudaMemcpyDeviceToHost, m.stream));
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

size_t CudaEngineImpl::weight_bytes_per_step() const {
  const auto& m = *impl_;
  size_t b = m.lm_head.bytes(m.act);
  for (const auto& l : m.layers)
    b += l.qkv.bytes(m.act) + l.out.bytes(m.act) + l.up.bytes(m.act) + l.down.bytes(m.act);
  if (m.project_in) b += m.project_in->bytes(m.act) + m.project_out->bytes(m.act);
  return b;
}

size_t CudaEngineImpl::kv_bytes_per_step(int64_t len, int64_t batch) const {
  const auto& m = *impl_;
  return size_t(2) * size_t(m.L) * size_t(batch) * size_t(len) * size_t(m.KV) * m.act_size;
}

CudaMemoryReport CudaEngineImpl::memory() const {
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

double CudaEngineImpl::measure_copy_bandwidth(size_t bytes) {
  auto& m = *impl_;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaGetLastError();
    if (a) cudaFree(a);
    fail(Status::OutOfMemory,
         "measuring copy bandwidth needs 2 x {} of free GPU memory; none left after the model.",
         gib(bytes));
  }
  SF_CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, m.stream));
  cudaEvent_t e0, e1;
  SF_CUDA_CHECK(cudaEventCreate(&e0));
  SF_CUDA_CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i)
    SF_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, m.stream));
  constexpr int kIters = 10;
  SF_CUDA_CHECK(cudaEventRecord(e0, m.stream));
  for (int i = 0; i < kIters; ++i)
    SF_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, m.stream));
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

void CudaEngineImpl::set_input_observer(DeviceInputObserver obs) {
  impl_->input_obs = std::move(obs);
}

void* CudaEngineImpl::stream_handle() const {
  return impl_->stream;
}

DType CudaEngineImpl::activation_dtype() const {
  return impl_->act;
}

void CudaEngineImpl::embed_rows(std::span<const int32_t> tokens, float* out) {
  auto& m = *impl_;
  const int64_t n = int64_t(tokens.size());
  if (n == 0) fail(Status::InvalidArgument, "embed_rows() got no tokens; pass at least one id.");
  if (m.batch != 1 || m.length != 0 || n > m.cap)
    fail(Status::InvalidArgument,
         "embed_rows: {} tokens need an empty batch-1 cache of at least {} tokens (this one: "
         "batch {}, {} of {} held); call reset({}) first.",
         n, n, m.batch, m.length, m.cap, n);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= m.V)
      fail(Status::InvalidArgument, "token id {} at index {} is outside the vocabulary [0, {}).",
           tokens[size_t(i)], i, m.V);
  SF_CUDA_CHECK(
      cudaMemcpyAsync(m.d_tokens, tokens.data(), size_t(n) * 4, cudaMemcpyHostToDevice, m.stream));
  m.embed(m.d_tokens, n, n);
  SF_CUDA_CHECK(cudaMemcpyAsync(out, m.h, size_t(n * m.H) * 4, cudaMemcpyDeviceToDevice, m.stream));
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));  // `tokens` may go once this returns
}

void CudaEngineImpl::run_layer(int64_t layer, const float* in, float* out, int64_t n) {
  auto& m = *impl_;
  if (layer < 0 || layer >= m.L)
    fail(Status::InvalidArgument, "run_layer: layer {} is outside [0, {})", layer, m.L);
  if (n <= 0 || m.batch != 1 || m.length != 0 || n > m.cap)
    fail(Status::InvalidArgument,
         "run_layer: {} rows need an empty batch-1 cache of at least {} tokens (this one: batch "
         "{}, {} of {} held); call reset({}) first.",
         n, n, m.batch, m.length, m.cap, n);
  SF_CUDA_CHECK(cudaMemcpyAsync(m.h, in, size_t(n * m.H) * 4, cudaMemcpyDeviceToDevice, m.stream));
  if (!m.pre) kk::launch_cast(m.h, n * m.H, m.x, m.act_dt, m.stream);  // post-norm reads act(h)
  m.layer(layer, Rows{n, /*decode=*/false, 0, 0});
  if (out)
    SF_CUDA_CHECK(
        cudaMemcpyAsync(out, m.h, size_t(n * m.H) * 4, cudaMemcpyDeviceToDevice, m.stream));
}

void CudaEngineImpl::replace_weight(const std::string& name, const void* w, DType dt) {
  auto& m = *impl_;
  const auto it = m.weight_slots.find(name);
  if (it == m.weight_slots.end())
    fail(Status::NotFound,
         "replace_weight: {} is not a decoder linear weight of this engine (expected a name like "
         "{}self_attn.q_proj.weight)",
         name, m.cfg.layer_prefix(0));
  const Impl::WeightSlot& s = it->second;
  const DLinear& d = *s.lin;
  if (d.sparse || !d.dense)
    fail(Status::UnsupportedShape,
         "replace_weight: {} is 2:4 on this GPU; weights are replaced in dense engines only", name);
  const size_t row_bytes = size_t(d.in) * m.act_size;
  std::vector<uint8_t> buf(size_t(s.rows) * row_bytes);
  convert(buf.data(), w, dt, s.rows * d.in, m.act);
  char* base = static_cast<char*>(d.dense);
  if (d.gated)  // rows 2j + part
    SF_CUDA_CHECK(cudaMemcpy2DAsync(base + size_t(s.part) * row_bytes, 2 * row_bytes, buf.data(),
                                    row_bytes, row_bytes, size_t(s.rows), cudaMemcpyDefault,
                                    m.stream));
  else
    SF_CUDA_CHECK(cudaMemcpyAsync(base + size_t(s.row0) * row_bytes, buf.data(), buf.size(),
                                  cudaMemcpyDefault, m.stream));
  SF_CUDA_CHECK(cudaStreamSynchronize(m.stream));  // buf goes out of scope
}

}  // namespace sf::model
