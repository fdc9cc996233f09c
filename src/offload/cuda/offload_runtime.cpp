// The offload runtime (offload_runtime.hpp): setup of pools, maps, predictors and host backing; the
// per-layer decode and prefill paths of each policy; the CPU share; stats.
#include "offload/cuda/offload_runtime.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string_view>

#include <fmt/format.h>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "model/weights.hpp"
#include "offload/cuda/lru_policy.hpp"

namespace sf::offload {

namespace k = sf::offload::cuda;

const char* layer_mode_name(LayerMode m) {
  switch (m) {
    case LayerMode::Resident:
      return "resident";
    case LayerMode::Fetch:
      return "fetch";
    case LayerMode::Cpu:
      return "cpu";
    case LayerMode::Streamed:
      return "streamed";
    case LayerMode::DenseResident:
      return "dense-resident";
  }
  return "?";
}

namespace {

constexpr size_t kStageBytes = size_t(64)
                               << 20;  // pinned staging for the one-time upload of hot bundles

int act_code(DType t) {
  return t == DType::F16 ? 1 : t == DType::BF16 ? 2 : 0;
}

std::string mib(double b) {
  return fmt::format("{:.1f} MiB", b / double(1 << 20));
}

cudaStream_t as_stream(void* s) {
  return static_cast<cudaStream_t>(s);
}

// Timing events go into a captured graph as external event-record nodes, so that replays record
// them.
void record_timing(cudaEvent_t e, cudaStream_t s) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  SF_CUDA_CHECK(cudaStreamIsCapturing(s, &st));
  SF_CUDA_CHECK(cudaEventRecordWithFlags(
      e, s,
      st == cudaStreamCaptureStatusActive ? cudaEventRecordExternal : cudaEventRecordDefault));
}

float elapsed_or(cudaEvent_t a, cudaEvent_t b, float fallback) {
  float ms = 0;
  if (cudaEventElapsedTime(&ms, a, b) != cudaSuccess) {
    cudaGetLastError();
    return fallback;
  }
  return ms;
}

}  // namespace

struct OffloadRuntime::CpuTask {
  const uint8_t* bundles = nullptr;  // host
  BundleLayout layout;
  int64_t d = 0;
  const float* b1 = nullptr;  // host [ffn] fp32
  int32_t* head = nullptr;    // pinned copies of the list, written by cudaMemcpyAsync
  int32_t* ids = nullptr;
  int32_t* slot = nullptr;
  void* x = nullptr;       // pinned [d] act
  float* y = nullptr;      // pinned mapped [d] fp32, written here
  float* y_dev = nullptr;  // its device alias, read by the fc2 kernel
  std::vector<float> b1_host;
};

struct OffloadRuntime::Layer {
  int64_t index = 0;
  LayerMode mode = LayerMode::Fetch;
  int64_t pinned = 0, lru = 0;
  k::CacheView cache{};
  float* b1 = nullptr;   // [ffn] fp32
  float* b2 = nullptr;   // [d] fp32
  void* u = nullptr;     // predictor [d, rank] act
  void* v = nullptr;     // [rank, ffn] act
  float* thr = nullptr;  // [ffn]
  int64_t rank = 0;
  uint8_t* flags = nullptr;  // [ffn] the step's predicted (or exact) flags
  k::ActiveList list{};
  k::FetchList fetch{};
  uint32_t* step = nullptr;
  uint64_t* stats = nullptr;    // [kStatCount]
  void* x_save = nullptr;       // [d] act: the FFN input of the last step (--stats)
  int32_t* all_slot = nullptr;  // dense-resident: slot of each entry of the all-list
  const uint8_t* host = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr, cpu_fork = nullptr, cpu_done = nullptr;
  cudaEvent_t t_begin = nullptr, t_end = nullptr, t_wait = nullptr;
  bool timed = false;
  std::unique_ptr<CpuTask> cpu;
};

void* OffloadRuntime::dev_alloc(size_t bytes, const char* what) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    fail(Status::OutOfMemory,
         "out of GPU memory: the offload runtime needs {} for {}, but only {} of {} is free "
         "(it holds {} already).\n---> HINT: lower --gpu-memory so the plan leaves room, or lower "
         "--gpu-cache-ratio.",
         mib(double(bytes)), what, mib(double(fr)), mib(double(tot)), mib(double(device_bytes_)));
  }
  dev_allocs_.push_back(p);
  device_bytes_ += bytes;
  return p;
}

void* OffloadRuntime::host_alloc(size_t bytes, const char* what) {
  void* p = nullptr;
  if (cudaHostAlloc(&p, std::max<size_t>(bytes, 64), cudaHostAllocMapped | cudaHostAllocPortable) !=
      cudaSuccess) {
    cudaGetLastError();
    fail(Status::OutOfMemory,
         "cannot allocate {} of pinned host memory for {}.\n---> HINT: the host is short of "
         "page-locked memory; free some, or lower the model size.",
         mib(double(bytes)), what);
  }
  host_allocs_.push_back(p);
  return p;
}

OffloadRuntime::OffloadRuntime(const model::Model& model, const NeuronStore& store,
                               const Plan& plan, const OffloadOptions& opt,
                               const OffloadTuning& tuning, int device)
    : model_(model), store_(store), plan_(plan), opt_(opt), tuning_(tuning) {
  try {
    init(device);
  } catch (...) {
    release();  // the destructor does not run for a constructor that throws
    throw;
  }
}

void OffloadRuntime::init(int device) {
  const model::Model& model = model_;
  const NeuronStore& store = store_;
  const Plan& plan = plan_;
  const OffloadOptions& opt = opt_;
  const OffloadTuning& tuning = tuning_;
  SF_CUDA_CHECK(cudaSetDevice(device));
  L_ = store.layers();
  d_ = store.hidden();
  F_ = store.ffn();
  act_ = store.dtype();
  act_code_ = act_code(act_);
  cw_ = int(16 / dtype_size(act_));
  stride_ = store.layout().stride;
  exact_ = opt.predictor == PredictorMode::Exact;
  stats_events_ = opt.stats;
  if (model.dtype() != act_)
    fail(Status::UnsupportedShape,
         "the neuron bundles are {} but the model computes in {}; offloading needs one type.",
         dtype_name(act_), dtype_name(model.dtype()));
  if (d_ % (2 * cw_) != 0 && d_ % cw_ != 0)
    fail(Status::UnsupportedShape,
         "offloading needs hidden_size % {} == 0 (16-byte rows); this model has {}.", cw_, d_);
  if (F_ % cw_ != 0)
    fail(Status::UnsupportedShape, "offloading needs ffn_dim % {} == 0; this model has {}.", cw_,
         F_);
  if (stride_ % 16 != 0)
    fail(Status::Internal, "bundle stride {} is not a multiple of 16", stride_);
  if (int64_t(plan.layers.size()) != L_)
    fail(Status::InvalidArgument, "the placement plan has {} layers, the model {}.",
         plan.layers.size(), L_);
  if (plan.attention_host_layers < 0 || plan.attention_host_layers > L_)
    fail(Status::InvalidArgument,
         "the placement plan puts {} layers' attention on the host; the model has {}.",
         plan.attention_host_layers, L_);
  if (!exact_ && !store.has_predictor() && opt.policy != OffloadPolicy::Stream)
    fail(Status::NotFound,
         "this model has no activation predictors.\n---> HINT: run `sparseflow calibrate` on it "
         "first, or use --predictor exact (slow: reads every fc1 row) or --offload-policy stream.");

  // With SPARSEFLOW_SIDE_PRIORITY=1 (opt-in until measured), the side stream (prediction, lookup,
  // fetch, overlapping attention) runs at the device's highest priority: its small kernels are
  // forked while the main stream's q/k/v GEMV has the whole GPU queued, and at equal priority they
  // wait for its blocks, so the main stream then waits for them (ffn_wait in benchmark --profile).
  // The decode graph keeps per-node priorities (CudaEngine instantiates it with them).
  int least = 0, greatest = 0;
  SF_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  const char* prio_env = std::getenv("SPARSEFLOW_SIDE_PRIORITY");
  side_priority_ = prio_env && std::string_view(prio_env) == "1" ? greatest : 0;
  SF_CUDA_CHECK(cudaStreamCreateWithPriority(&side_, cudaStreamNonBlocking, side_priority_));
  SF_CUDA_CHECK(cudaStreamCreateWithFlags(&cpu_stream_, cudaStreamNonBlocking));
  SF_CUDA_CHECK(cudaStreamCreateWithFlags(&stats_stream_, cudaStreamNonBlocking));
  SF_CUDA_CHECK(cudaEventCreate(&step_begin_));
  SF_CUDA_CHECK(cudaEventCreate(&step_end_));

  // Per-layer modes from the policy and the plan.
  std::vector<LayerMode> modes(static_cast<size_t>(L_));
  std::vector<int64_t> pinned(static_cast<size_t>(L_)), lru(static_cast<size_t>(L_));
  const uint64_t layer_bytes = uint64_t(F_) * stride_;
  if (opt.policy == OffloadPolicy::Stream) {
    // The naive baseline: whole layers resident while the FFN budget lasts (one layer's worth is
    // kept for the streaming buffer), the rest copied whole every token.
    int64_t resident = L_;
    if (!plan.whole_model_resident) {
      const uint64_t budget = plan.ffn_budget > layer_bytes ? plan.ffn_budget - layer_bytes : 0;
      resident = std::min<int64_t>(L_, int64_t(budget / layer_bytes));
    }
    for (int64_t l = 0; l < L_; ++l) {
      modes[size_t(l)] = l < resident ? LayerMode::DenseResident : LayerMode::Streamed;
      pinned[size_t(l)] = l < resident ? F_ : 0;
    }
  } else {
    for (int64_t l = 0; l < L_; ++l) {
      const LayerPlan& lp = plan.layers[size_t(l)];
      pinned[size_t(l)] = std::clamp<int64_t>(lp.hot, 0, F_);
      lru[size_t(l)] = std::clamp<int64_t>(lp.cache_slots, 0, F_ - pinned[size_t(l)]);
      if (pinned[size_t(l)] == F_)
        modes[size_t(l)] = LayerMode::Resident;
      else if (opt.policy == OffloadPolicy::Cpu)
        modes[size_t(l)] = LayerMode::Cpu;
      else
        modes[size_t(l)] = LayerMode::Fetch;
    }
  }

  bool need_backing = false;
  for (auto m : modes)
    need_backing |= m == LayerMode::Fetch || m == LayerMode::Cpu || m == LayerMode::Streamed;
  // Setup takes seconds for a large model (pinning gigabytes of host memory); say where they go.
  auto t_phase = std::chrono::steady_clock::now();
  auto phase = [&](const char* what) {
    const auto now = std::chrono::steady_clock::now();
    fmt::print(stderr, "offload setup: {} in {:.2f} s\n", what,
               std::chrono::duration<double>(now - t_phase).count());
    t_phase = now;
  };
  if (need_backing || opt.policy == OffloadPolicy::Auto) {
    setup_backing();
    phase(backing_registered_ ? "host bundles registered in place (mapped, pinned)"
                              : "host bundles copied into pinned mapped memory");
  }
  if (tuning.probe && need_backing) {
    run_probe();
    phase(fmt::format("bandwidth probe (PCIe kernel {:.1f} GB/s, DMA {:.1f} GB/s, CPU {:.1f} GB/s)",
                      probe_.pcie_kernel_GBps, probe_.pcie_dma_GBps, probe_.cpu_GBps)
              .c_str());
  }

  if (opt.policy == OffloadPolicy::Auto) {
    // Per layer: fetch misses over PCIe (hidden behind attention) or compute them on the CPU (a
    // host node of ~50 us plus the CPU's time). Expected misses per token: the firings of the
    // neurons that are not pinned (profile), or 3% of them without one.
    const double fetch_s =
        probe_.pcie_kernel_GBps > 0 ? double(stride_) / (probe_.pcie_kernel_GBps * 1e9) : 1e-6;
    const double cpu_s = probe_.cpu_GBps > 0
                             ? double(2 * d_ * int64_t(dtype_size(act_))) / (probe_.cpu_GBps * 1e9)
                             : 1.0;
    for (int64_t l = 0; l < L_; ++l) {
      if (modes[size_t(l)] == LayerMode::Resident) continue;
      const NeuronLayer& NL = store.layer(l);
      double misses = 0.03 * double(F_ - pinned[size_t(l)]);
      if (NL.firing_rate) {
        const auto hot = store.hottest(l, F_);
        misses = 0;
        for (int64_t i = pinned[size_t(l)]; i < F_; ++i) misses += NL.firing_rate[hot[size_t(i)]];
      }
      const double t_fetch = misses * fetch_s, t_cpu = 50e-6 + misses * cpu_s;
      if (t_cpu < t_fetch) {
        modes[size_t(l)] = LayerMode::Cpu;
        pinned[size_t(l)] =
            std::min(F_, pinned[size_t(l)] + lru[size_t(l)]);  // CPU layers cache nothing
        lru[size_t(l)] = 0;
      }
    }
  }
  for (int64_t l = 0; l < L_; ++l)
    if (modes[size_t(l)] == LayerMode::Cpu) {
      pinned[size_t(l)] = std::min(F_, pinned[size_t(l)] + lru[size_t(l)]);
      lru[size_t(l)] = 0;
    }

  // Shared buffers.
  if (!exact_ && store.has_predictor()) {
    size_t n = 0;
    for (int64_t l = 0; l < L_; ++l)
      n = std::max(n, k::predictor_scratch_floats(d_, store.predictor(l).rank, F_));
    pred_scratch_ = static_cast<float*>(dev_alloc(n * 4, "predictor scratch"));
    SF_CUDA_CHECK(cudaMemset(pred_scratch_, 0, n * 4));  // the stage-2 counters start at zero
  }
  int64_t max_slots = 0;
  for (int64_t l = 0; l < L_; ++l)
    max_slots = std::max(max_slots, pinned[size_t(l)] + lru[size_t(l)]);
  lookup_scratch_ =
      static_cast<int32_t*>(dev_alloc(k::lookup_scratch_ints(F_, max_slots) * 4, "lookup scratch"));
  exact_flags_ = static_cast<uint8_t*>(dev_alloc(size_t(8 * F_), "exact flags"));
  fc2_partial_ =
      static_cast<float*>(dev_alloc(size_t(k::fc2_partial_floats(d_)) * 4, "fc2 class sums"));
  for (auto m : modes)
    if (m == LayerMode::Streamed && !stream_buf_)
      stream_buf_ = static_cast<uint8_t*>(dev_alloc(layer_bytes, "the streamed layer's buffer"));
  {
    std::vector<uint8_t> ones(size_t(F_), 1);
    std::array<int32_t, 33> cs{};
    const auto ids = lane_class_order(ones, cw_, &cs);
    std::vector<int32_t> head(k::kHeadInts, 0);
    head[k::kHeadCount] = int32_t(F_);
    for (int i = 0; i < 33; ++i) head[size_t(k::kHeadClass + i)] = cs[size_t(i)];
    all_ids_ = static_cast<int32_t*>(dev_alloc(size_t(F_) * 4, "the all-neuron list"));
    all_neg_ = static_cast<int32_t*>(dev_alloc(size_t(F_) * 4, "the all-neuron list"));
    all_head_ = static_cast<int32_t*>(dev_alloc(k::kHeadInts * 4, "the all-neuron list"));
    all_h_ = dev_alloc(size_t(F_) * dtype_size(act_), "the all-neuron list");
    SF_CUDA_CHECK(cudaMemcpy(all_ids_, ids.data(), size_t(F_) * 4, cudaMemcpyHostToDevice));
    SF_CUDA_CHECK(cudaMemset(all_neg_, 0xff, size_t(F_) * 4));
    SF_CUDA_CHECK(cudaMemcpy(all_head_, head.data(), head.size() * 4, cudaMemcpyHostToDevice));
  }

  layers_.resize(size_t(L_));
  for (int64_t l = 0; l < L_; ++l)
    setup_layer(l, modes[size_t(l)], pinned[size_t(l)], lru[size_t(l)]);
  SF_CUDA_CHECK(cudaDeviceSynchronize());
  if (need_backing) phase("layers (hot neurons uploaded, caches, predictors)");
}

OffloadRuntime::~OffloadRuntime() {
  release();
}

void OffloadRuntime::release() {
  cudaDeviceSynchronize();
  for (auto& L : layers_)
    for (cudaEvent_t e : {L.fork, L.join, L.cpu_fork, L.cpu_done, L.t_begin, L.t_end, L.t_wait})
      if (e) cudaEventDestroy(e);
  for (cudaEvent_t e : {step_begin_, step_end_})
    if (e) cudaEventDestroy(e);
  for (void* p : dev_allocs_) cudaFree(p);
  for (void* p : host_allocs_) cudaFreeHost(p);
  for (void* p : registered_) cudaHostUnregister(p);
  for (cudaStream_t s : {side_, cpu_stream_, stats_stream_})
    if (s) cudaStreamDestroy(s);
  layers_.clear();
  dev_allocs_.clear();
  host_allocs_.clear();
  registered_.clear();
  side_ = cpu_stream_ = stats_stream_ = nullptr;
  step_begin_ = step_end_ = nullptr;
  cudaGetLastError();
}

LayerMode OffloadRuntime::mode(int64_t layer) const {
  return layers_[size_t(layer)].mode;
}

// The host bundles become mapped pinned memory: copied into cudaHostAlloc'ed memory, or, with
// SPARSEFLOW_OFFLOAD_REGISTER=1, registered in place (the .sf mmap, read-only, or the store's
// packed buffers) when that works. The fetch kernel then reads the bundles straight from there.
void OffloadRuntime::setup_backing() {
  backing_dev_.assign(size_t(L_), nullptr);
  backing_host_.assign(size_t(L_), nullptr);
  if (plan_.host == HostPlacement::Mmap)
    fail(Status::UnsupportedShape,
         "--host-memory below the size of the non-resident bundles asks for reading them "
         "from the .sf mmap; the CUDA offload runtime does not implement that path yet (it needs "
         "the bundles in "
         "pinned host memory).\n---> HINT: drop --host-memory, or give it at least {}.",
         mib(double(plan_.host_bytes)));
  // In place (no second host copy) only when asked: pinning a file-backed mapping page by page can
  // take far longer than copying it (it did on a lent H200 VM: minutes for 8 GB), and the copy
  // leaves the page cache reclaimable.
  const char* reg_env = std::getenv("SPARSEFLOW_OFFLOAD_REGISTER");
  if (reg_env && std::string_view(reg_env) == "1" && register_backing_in_place()) return;
  // A pinned copy per layer.
  for (int64_t l = 0; l < L_; ++l) {
    const NeuronLayer& NL = store_.layer(l);
    auto* h = static_cast<uint8_t*>(host_alloc(NL.bytes(), "the host copy of the neuron bundles"));
    const int64_t piece = int64_t(1) << 20, bytes = int64_t(NL.bytes());
#pragma omp parallel for schedule(dynamic)
    for (int64_t b = 0; b < bytes; b += piece)
      std::memcpy(h + b, NL.bundles + b, size_t(std::min(piece, bytes - b)));
    void* dp = nullptr;
    SF_CUDA_CHECK(cudaHostGetDevicePointer(&dp, h, 0));
    backing_dev_[size_t(l)] = static_cast<const uint8_t*>(dp);
    backing_host_[size_t(l)] = h;
  }
}

// Registers the page ranges holding every layer's bundles (merged, page-aligned) as mapped host
// memory; on any failure undoes what it registered and returns false (the caller copies instead).
bool OffloadRuntime::register_backing_in_place() {
  const uint64_t page = 4096;
  struct Range {
    uintptr_t lo, hi;
  };
  std::vector<Range> ranges;
  for (int64_t l = 0; l < L_; ++l) {
    const auto p = reinterpret_cast<uintptr_t>(store_.layer(l).bundles);
    ranges.push_back({p / page * page, (p + store_.layer(l).bytes() + page - 1) / page * page});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.lo < b.lo; });
  std::vector<Range> merged;
  for (const Range& r : ranges) {
    if (!merged.empty() && r.lo <= merged.back().hi)
      merged.back().hi = std::max(merged.back().hi, r.hi);
    else
      merged.push_back(r);
  }
  for (const Range& r : merged) {
    void* p = reinterpret_cast<void*>(r.lo);
    cudaError_t e =
        cudaHostRegister(p, r.hi - r.lo, cudaHostRegisterMapped | cudaHostRegisterReadOnly);
    if (e != cudaSuccess) {
      cudaGetLastError();
      e = cudaHostRegister(p, r.hi - r.lo, cudaHostRegisterMapped);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      for (void* q : registered_) cudaHostUnregister(q);
      registered_.clear();
      cudaGetLastError();
      return false;
    }
    registered_.push_back(p);
  }
  for (int64_t l = 0; l < L_; ++l) {
    void* dp = nullptr;
    SF_CUDA_CHECK(cudaHostGetDevicePointer(&dp, const_cast<uint8_t*>(store_.layer(l).bundles), 0));
    backing_dev_[size_t(l)] = static_cast<const uint8_t*>(dp);
    backing_host_[size_t(l)] = store_.layer(l).bundles;
  }
  backing_registered_ = true;
  return true;
}

void OffloadRuntime::setup_layer(int64_t l, LayerMode mode, int64_t pinned, int64_t lru) {
  Layer& L = layers_[size_t(l)];
  const NeuronLayer& NL = store_.layer(l);
  L.index = l;
  L.mode = mode;
  L.pinned = pinned;
  L.lru = lru;
  L.host = backing_host_.empty() ? NL.bundles
                                 : backing_host_[size_t(l)];  // pinned when there is a backing
  const size_t es = dtype_size(act_);

  // Pinned neurons: the hottest (by the profile) in slots [0, pinned); identity order when the
  // whole layer is resident for the dense path, so that slot == neuron there.
  std::vector<int32_t> hot;
  if (mode == LayerMode::DenseResident) {
    hot.resize(size_t(F_));
    std::iota(hot.begin(), hot.end(), 0);
  } else {
    hot = store_.hottest(l, pinned);
  }
  LruState st = LruState::make(F_, hot, int32_t(lru));
  L.cache.pinned = st.pinned;
  L.cache.slots = st.slots;
  L.cache.pool = static_cast<uint8_t*>(dev_alloc(size_t(st.slots) * stride_, "neuron cache slots"));
  L.cache.slot_of = static_cast<int32_t*>(dev_alloc(size_t(F_) * 4, "the neuron -> slot map"));
  L.cache.owner =
      static_cast<int32_t*>(dev_alloc(size_t(std::max(st.slots, 1)) * 4, "the slot owners"));
  L.cache.stamp =
      static_cast<uint32_t*>(dev_alloc(size_t(std::max(st.slots, 1)) * 4, "the slot stamps"));
  SF_CUDA_CHECK(
      cudaMemcpy(L.cache.slot_of, st.slot_of.data(), size_t(F_) * 4, cudaMemcpyHostToDevice));
  if (st.slots > 0) {
    SF_CUDA_CHECK(
        cudaMemcpy(L.cache.owner, st.owner.data(), size_t(st.slots) * 4, cudaMemcpyHostToDevice));
    SF_CUDA_CHECK(cudaMemset(L.cache.stamp, 0, size_t(st.slots) * 4));
  }
  // Hot bundles into their slots, through a pinned staging buffer.
  if (pinned > 0) {
    void* stage = nullptr;
    SF_CUDA_CHECK(cudaMallocHost(&stage, kStageBytes));
    const int64_t per = std::max<int64_t>(1, int64_t(kStageBytes / stride_));
    for (int64_t k0 = 0; k0 < pinned; k0 += per) {
      const int64_t n = std::min(per, pinned - k0);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(static_cast<uint8_t*>(stage) + uint64_t(i) * stride_,
                    NL.bundle(hot[size_t(k0 + i)]), stride_);
      SF_CUDA_CHECK(cudaMemcpy(L.cache.pool + uint64_t(k0) * stride_, stage, uint64_t(n) * stride_,
                               cudaMemcpyHostToDevice));
    }
    cudaFreeHost(stage);
  }

  // Biases as fp32 (the resident engine's epilogue adds fp32 biases: same values, same order).
  std::vector<float> b1(static_cast<size_t>(F_)), b2(static_cast<size_t>(d_), 0.0f);
  for (int64_t j = 0; j < F_; ++j) b1[size_t(j)] = NL.fc1_bias(j);
  if (NL.fc2_bias)
    for (int64_t i = 0; i < d_; ++i)
      b2[size_t(i)] = load_as_float(NL.fc2_bias, NL.layout.dtype, size_t(i));
  L.b1 = static_cast<float*>(dev_alloc(size_t(F_) * 4, "fc1 biases"));
  L.b2 = static_cast<float*>(dev_alloc(size_t(d_) * 4, "fc2 biases"));
  SF_CUDA_CHECK(cudaMemcpy(L.b1, b1.data(), b1.size() * 4, cudaMemcpyHostToDevice));
  SF_CUDA_CHECK(cudaMemcpy(L.b2, b2.data(), b2.size() * 4, cudaMemcpyHostToDevice));

  const bool listed =
      mode == LayerMode::Resident || mode == LayerMode::Fetch || mode == LayerMode::Cpu;
  if (listed && !exact_) {
    const PredictorLayer& P = store_.predictor(l);
    L.rank = P.rank;
    if (P.rank % cw_ != 0)
      fail(Status::UnsupportedShape, "predictor rank {} of layer {} is not a multiple of {}.",
           P.rank, l, cw_);
    auto upload = [&](const model::Tensor& t, const char* what) {
      void* p = dev_alloc(size_t(t.numel()) * es, what);
      if (t.dtype == act_) {
        SF_CUDA_CHECK(cudaMemcpy(p, t.data, size_t(t.numel()) * es, cudaMemcpyHostToDevice));
      } else {
        const auto conv = model::convert_elements(t, act_);
        SF_CUDA_CHECK(cudaMemcpy(p, conv.data(), conv.size(), cudaMemcpyHostToDevice));
      }
      return p;
    };
    L.u = upload(*P.u, "predictor U");
    L.v = upload(*P.v, "predictor V");
    L.thr = static_cast<float*>(dev_alloc(size_t(F_) * 4, "predictor thresholds"));
    SF_CUDA_CHECK(cudaMemcpy(L.thr, P.threshold->data, size_t(F_) * 4, cudaMemcpyHostToDevice));
  }
  L.flags = static_cast<uint8_t*>(dev_alloc(size_t(F_), "active flags"));
  SF_CUDA_CHECK(cudaMemset(L.flags, 0, size_t(F_)));
  if (listed) {
    L.list.ids = static_cast<int32_t*>(dev_alloc(size_t(F_) * 4, "the active list"));
    L.list.slot = static_cast<int32_t*>(dev_alloc(size_t(F_) * 4, "the active list"));
    L.list.h = dev_alloc(size_t(F_) * es, "the active list");
    L.list.head = static_cast<int32_t*>(dev_alloc(k::kHeadInts * 4, "the active list"));
    SF_CUDA_CHECK(cudaMemset(L.list.head, 0, k::kHeadInts * 4));
    L.fetch.ids = static_cast<int32_t*>(dev_alloc(size_t(F_) * 4, "the fetch list"));
    L.fetch.slots = static_cast<int32_t*>(dev_alloc(size_t(F_) * 4, "the fetch list"));
  }
  L.step = static_cast<uint32_t*>(dev_alloc(4, "the step counter"));
  SF_CUDA_CHECK(cudaMemset(L.step, 0, 4));
  L.stats = static_cast<uint64_t*>(dev_alloc(k::kStatCount * 8, "stats counters"));
  SF_CUDA_CHECK(cudaMemset(L.stats, 0, k::kStatCount * 8));
  if (opt_.stats) L.x_save = dev_alloc(size_t(d_) * es, "the saved FFN input");
  if (mode == LayerMode::DenseResident) {
    // all_ids_ order: slot == neuron (identity pinning above).
    L.all_slot = all_ids_;
  }
  if (mode == LayerMode::Cpu) {
    auto t = std::make_unique<CpuTask>();
    t->bundles = L.host;
    t->layout = NL.layout;
    t->d = d_;
    t->b1_host = b1;
    t->b1 = t->b1_host.data();
    t->head = static_cast<int32_t*>(host_alloc(k::kHeadInts * 4, "the CPU share's list"));
    t->ids = static_cast<int32_t*>(host_alloc(size_t(F_) * 4, "the CPU share's list"));
    t->slot = static_cast<int32_t*>(host_alloc(size_t(F_) * 4, "the CPU share's list"));
    t->x = host_alloc(size_t(d_) * es, "the CPU share's input");
    t->y = static_cast<float*>(host_alloc(size_t(d_) * 4, "the CPU share's output"));
    void* yd = nullptr;
    SF_CUDA_CHECK(cudaHostGetDevicePointer(&yd, t->y, 0));
    t->y_dev = static_cast<float*>(yd);
    L.cpu = std::move(t);
  }
  for (cudaEvent_t* e : {&L.fork, &L.join, &L.cpu_fork, &L.cpu_done})
    SF_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
  for (cudaEvent_t* e : {&L.t_begin, &L.t_end, &L.t_wait}) SF_CUDA_CHECK(cudaEventCreate(e));
  if (mode == LayerMode::Streamed) ++streamed_layers_;
  if (mode == LayerMode::Cpu) ++cpu_layers_;
}

// Zero-copy kernel vs DMA engine, 64 MiB from pinned host memory; the CPU's cold-neuron rate.
void OffloadRuntime::run_probe() {
  const size_t bytes = size_t(64) << 20;
  void *h = nullptr, *dv = nullptr, *hd = nullptr;
  if (cudaHostAlloc(&h, bytes, cudaHostAllocMapped) != cudaSuccess ||
      cudaMalloc(&dv, bytes) != cudaSuccess) {
    cudaGetLastError();
    if (h) cudaFreeHost(h);
    return;
  }
  std::memset(h, 1, bytes);
  SF_CUDA_CHECK(cudaHostGetDevicePointer(&hd, h, 0));
  cudaEvent_t e0, e1;
  SF_CUDA_CHECK(cudaEventCreate(&e0));
  SF_CUDA_CHECK(cudaEventCreate(&e1));
  auto time = [&](auto&& body) {
    body();  // warm-up
    SF_CUDA_CHECK(cudaEventRecord(e0, side_));
    for (int i = 0; i < 3; ++i) body();
    SF_CUDA_CHECK(cudaEventRecord(e1, side_));
    SF_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    SF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    return 3.0 * double(bytes) / (double(ms) * 1e-3) / 1e9;
  };
  probe_.pcie_kernel_GBps =
      time([&] { k::launch_copy_kernel(hd, dv, bytes, tuning_.fetch_grid, side_); });
  probe_.pcie_dma_GBps =
      time([&] { SF_CUDA_CHECK(cudaMemcpyAsync(dv, h, bytes, cudaMemcpyHostToDevice, side_)); });
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(dv);
  cudaFreeHost(h);

  // CPU: 256 bundles of layer 0 spread over the layer, as cpu_callback computes them.
  CpuTask t;
  t.bundles = store_.layer(0).bundles;
  t.layout = store_.layout();
  t.d = d_;
  t.b1_host.assign(size_t(F_), 0.0f);
  t.b1 = t.b1_host.data();
  const int n = int(std::min<int64_t>(256, F_));
  std::vector<int32_t> head(k::kHeadInts, 0), ids(static_cast<size_t>(n)),
      slot(static_cast<size_t>(n), -1);
  head[k::kHeadCount] = n;
  for (int i = 0; i < n; ++i) ids[size_t(i)] = int32_t((int64_t(i) * 7919) % F_);
  std::vector<uint8_t> x(size_t(d_) * dtype_size(act_), 0);
  for (int64_t i = 0; i < d_; ++i)
    store_from_float(x.data(), act_, size_t(i), 0.01f * float(i % 13));
  std::vector<float> y(static_cast<size_t>(d_));
  t.head = head.data();
  t.ids = ids.data();
  t.slot = slot.data();
  t.x = x.data();
  t.y = y.data();
  cpu_callback(&t);  // warm-up (page faults)
  const auto c0 = std::chrono::steady_clock::now();
  for (int r = 0; r < 3; ++r) cpu_callback(&t);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
  probe_.cpu_GBps = 3.0 * double(n) * double(2 * d_ * int64_t(dtype_size(act_))) / s / 1e9;
}

// The CPU's share of a layer: every listed entry without a GPU slot, h = act(relu(x . fc1 + b1))
// (rounded like the GPU's), y = sum h fc2 in fp32; threads take contiguous ranges of entries and
// their partial sums are added in thread order.
void CUDART_CB OffloadRuntime::cpu_callback(void* task) {
  auto* t = static_cast<CpuTask*>(task);
  const int n = t->head[k::kHeadCount];
  const int64_t d = t->d;
  const DType dt = t->layout.dtype;
  std::vector<int32_t> cold;
  for (int p = 0; p < n; ++p)
    if (t->slot[p] < 0) cold.push_back(t->ids[p]);
  std::vector<float> x(static_cast<size_t>(d));
  for (int64_t i = 0; i < d; ++i) x[size_t(i)] = load_as_float(t->x, dt, size_t(i));
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), int(cold.size())));
  std::vector<std::vector<float>> part(size_t(threads), std::vector<float>(size_t(d), 0.0f));
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    const size_t per = (cold.size() + size_t(threads) - 1) / size_t(threads);
    const size_t lo = std::min(cold.size(), size_t(tid) * per),
                 hi = std::min(cold.size(), lo + per);
    std::vector<float>& y = part[size_t(tid)];
    for (size_t c = lo; c < hi; ++c) {
      const int32_t j = cold[c];
      const uint8_t* b = t->bundles + uint64_t(j) * t->layout.stride;
      float z = 0.0f;
      for (int64_t i = 0; i < d; ++i)
        z += x[size_t(i)] * load_as_float(b + t->layout.fc1_offset, dt, size_t(i));
      z += t->b1[j];
      if (!(z > 0.0f)) continue;
      uint8_t hb[8];
      store_from_float(hb, dt, 0, z);
      const float h = load_as_float(hb, dt, 0);
      if (h == 0.0f) continue;
      for (int64_t i = 0; i < d; ++i)
        y[size_t(i)] += h * load_as_float(b + t->layout.fc2_offset, dt, size_t(i));
    }
  }
  for (int64_t i = 0; i < d; ++i) {
    float s = 0.0f;
    for (int k2 = 0; k2 < threads; ++k2) s += part[size_t(k2)][size_t(i)];
    t->y[i] = s;
  }
}

cuda::BundleSource OffloadRuntime::pool_source(const Layer& L) const {
  cuda::BundleSource s;
  s.base = L.cache.pool;
  s.stride = stride_;
  s.fc2_offset = store_.layout().fc2_offset;
  return s;
}

cuda::SparseFfnArgs OffloadRuntime::ffn_args(const Layer& L, const void* x, const float* residual,
                                             float* out) const {
  cuda::SparseFfnArgs a;
  a.x = x;
  a.d = d_;
  a.ffn = F_;
  a.b1 = L.b1;
  a.b2 = L.b2;
  a.residual = residual;
  a.y = out;
  a.pool = pool_source(L);
  a.backing.base = backing_dev_.empty() ? nullptr : backing_dev_[size_t(L.index)];
  a.backing.stride = stride_;
  a.backing.fc2_offset = store_.layout().fc2_offset;
  a.fc2_partial = fc2_partial_;  // every FFN launch is on the main stream
  a.act = act_code_;
  return a;
}

// One row through the active-list path: lookup (allocating cache slots when asked), fetch, fc1,
// fc2.
void OffloadRuntime::row_sparse(Layer& L, const void* x, const uint8_t* flags,
                                const float* residual, float* out, bool allocate, cudaStream_t s) {
  k::launch_lookup(flags, F_, cw_, L.cache, L.list, L.fetch, L.step, allocate, lookup_scratch_,
                   L.stats, s);
  if (allocate && L.lru > 0)
    k::launch_fetch({backing_dev_[size_t(L.index)], stride_, store_.layout().fc2_offset}, L.cache,
                    stride_, L.fetch, L.list.head, tuning_.fetch_grid, s);
  const k::SparseFfnArgs a = ffn_args(L, x, residual, out);
  k::launch_sparse_fc1(a, L.list, 0, s);
  k::launch_sparse_fc2(a, L.list, s);
}

// One row through the dense path: every neuron, from the pool (dense-resident) or the streamed
// copy.
void OffloadRuntime::row_dense(Layer& L, const void* x, const float* residual, float* out,
                               cudaStream_t s) {
  k::SparseFfnArgs a = ffn_args(L, x, residual, out);
  k::ActiveList all;
  all.ids = all_ids_;
  all.h = all_h_;
  all.head = all_head_;
  if (L.mode == LayerMode::DenseResident) {
    all.slot = L.all_slot;
  } else {
    all.slot = all_neg_;
    a.backing.base = stream_buf_;
  }
  k::launch_sparse_fc1(a, all, 0, s);
  k::launch_sparse_fc2(a, all, s);
}

// The cpu policy's share, enqueued on `s` after the list is known: copy x and the list to the host,
// compute the entries without a slot there (a host node on the CPU stream), fc1 of the GPU's share
// meanwhile, fc2 adding the CPU's y.
void OffloadRuntime::cpu_part(Layer& L, const void* x, cudaStream_t list_stream, cudaStream_t s) {
  CpuTask& t = *L.cpu;
  if (list_stream != s) {
    SF_CUDA_CHECK(cudaEventRecord(L.cpu_fork, list_stream));
    SF_CUDA_CHECK(cudaStreamWaitEvent(s, L.cpu_fork, 0));
  }
  SF_CUDA_CHECK(cudaMemcpyAsync(t.head, L.list.head, k::kHeadInts * 4, cudaMemcpyDeviceToHost, s));
  SF_CUDA_CHECK(cudaMemcpyAsync(t.ids, L.list.ids, size_t(F_) * 4, cudaMemcpyDeviceToHost, s));
  SF_CUDA_CHECK(cudaMemcpyAsync(t.slot, L.list.slot, size_t(F_) * 4, cudaMemcpyDeviceToHost, s));
  SF_CUDA_CHECK(cudaMemcpyAsync(t.x, x, size_t(d_) * dtype_size(act_), cudaMemcpyDeviceToHost, s));
  SF_CUDA_CHECK(cudaEventRecord(L.cpu_fork, s));
  SF_CUDA_CHECK(cudaStreamWaitEvent(cpu_stream_, L.cpu_fork, 0));
  SF_CUDA_CHECK(cudaLaunchHostFunc(cpu_stream_, &OffloadRuntime::cpu_callback, &t));
  SF_CUDA_CHECK(cudaEventRecord(L.cpu_done, cpu_stream_));
}

void OffloadRuntime::before_attention(int64_t layer, const void* x, int64_t rows, void* stream) {
  if (rows != 1)
    fail(Status::UnsupportedShape,
         "the offloaded engine decodes one sequence at a time (batch 1); got {} rows.", rows);
  const cudaStream_t s = as_stream(stream);
  Layer& L = layers_[size_t(layer)];
  if (layer == 0 && stats_events_) record_timing(step_begin_, s);
  L.timed = false;
  const bool listed =
      L.mode == LayerMode::Resident || L.mode == LayerMode::Fetch || L.mode == LayerMode::Cpu;
  if (listed && !exact_) {
    // The prediction's second half, the lookup and the fetch run on the side stream during q/k/v
    // and attention; its first product (a U, the one read of x) runs on the main stream before the
    // fork, since x (LN1's output) is overwritten with the FFN input later. (Running it on the side
    // stream too measured slower: docs/OFFLOAD.md.)
    k::launch_predictor_t(x, L.u, d_, L.rank, F_, pred_scratch_, act_code_, s);
    SF_CUDA_CHECK(cudaEventRecord(L.fork, s));
    SF_CUDA_CHECK(cudaStreamWaitEvent(side_, L.fork, 0));
    if (stats_events_) record_timing(L.t_begin, side_);
    k::launch_predictor_flags(L.v, L.thr, d_, L.rank, F_, pred_scratch_, L.flags, act_code_, side_);
    const bool allocate = L.mode == LayerMode::Fetch;
    k::launch_lookup(L.flags, F_, cw_, L.cache, L.list, L.fetch, L.step, allocate, lookup_scratch_,
                     L.stats, side_);
    if (allocate && L.lru > 0)
      k::launch_fetch({backing_dev_[size_t(layer)], stride_, store_.layout().fc2_offset}, L.cache,
                      stride_, L.fetch, L.list.head, tuning_.fetch_grid, side_);
    if (stats_events_) record_timing(L.t_end, side_);
    SF_CUDA_CHECK(cudaEventRecord(L.join, side_));
    L.timed = stats_events_;
  } else if (L.mode == LayerMode::Streamed) {
    SF_CUDA_CHECK(cudaEventRecord(L.fork, s));
    SF_CUDA_CHECK(cudaStreamWaitEvent(side_, L.fork, 0));
    if (stats_events_) record_timing(L.t_begin, side_);
    SF_CUDA_CHECK(cudaMemcpyAsync(stream_buf_, L.host, uint64_t(F_) * stride_,
                                  cudaMemcpyHostToDevice, side_));
    if (stats_events_) record_timing(L.t_end, side_);
    SF_CUDA_CHECK(cudaEventRecord(L.join, side_));
    L.timed = stats_events_;
  }
}

void OffloadRuntime::ffn(int64_t layer, const void* x, int64_t rows, const float* residual,
                         float* out, bool decode, void* stream) {
  const cudaStream_t s = as_stream(stream);
  Layer& L = layers_[size_t(layer)];
  const size_t row_bytes = size_t(d_) * dtype_size(act_);
  const bool listed =
      L.mode == LayerMode::Resident || L.mode == LayerMode::Fetch || L.mode == LayerMode::Cpu;
  if (decode && rows == 1) {
    if (L.timed) record_timing(L.t_wait, s);
    if (listed && !exact_) {
      SF_CUDA_CHECK(cudaStreamWaitEvent(s, L.join, 0));
      if (mark_) mark_("ffn_wait", 0);
      k::SparseFfnArgs a = ffn_args(L, x, residual, out);
      a.x_save = L.x_save;
      if (L.mode == LayerMode::Cpu) {
        cpu_part(L, x, s, s);
        a.skip_backing = true;
        a.extra = L.cpu->y_dev;
        k::launch_sparse_fc1(a, L.list, 0, s);
        SF_CUDA_CHECK(cudaStreamWaitEvent(s, L.cpu_done, 0));
      } else {
        k::launch_sparse_fc1(a, L.list, 0, s);
      }
      if (mark_) mark_("ffn_fc1", 0);
      k::launch_sparse_fc2(a, L.list, s);
      if (mark_) mark_("ffn_fc2", 0);
    } else if (listed) {
      // Exact: the active set from the true FFN input (reads every fc1 row; tests).
      k::launch_exact_flags(x, 1, d_, F_, L.b1, L.cache,
                            {backing_dev_.empty() ? nullptr : backing_dev_[size_t(layer)], stride_,
                             store_.layout().fc2_offset},
                            L.flags, act_code_, s);
      if (L.mode == LayerMode::Cpu) {
        k::launch_lookup(L.flags, F_, cw_, L.cache, L.list, L.fetch, L.step, false, lookup_scratch_,
                         L.stats, s);
        k::SparseFfnArgs a = ffn_args(L, x, residual, out);
        cpu_part(L, x, s, s);
        a.skip_backing = true;
        a.extra = L.cpu->y_dev;
        k::launch_sparse_fc1(a, L.list, 0, s);
        SF_CUDA_CHECK(cudaStreamWaitEvent(s, L.cpu_done, 0));
        k::launch_sparse_fc2(a, L.list, s);
      } else {
        row_sparse(L, x, L.flags, residual, out, L.mode == LayerMode::Fetch, s);
      }
    } else {
      if (L.mode == LayerMode::Streamed) SF_CUDA_CHECK(cudaStreamWaitEvent(s, L.join, 0));
      row_dense(L, x, residual, out, s);
    }
    if (layer == L_ - 1 && stats_events_) record_timing(step_end_, s);
    return;
  }
  if (decode)
    fail(Status::UnsupportedShape,
         "the offloaded engine decodes one sequence at a time (batch 1); got {} rows.", rows);
  // Prefill: row by row; the exact active set of up to 8 rows at a time (one pass over fc1).
  if (L.mode == LayerMode::Streamed)
    SF_CUDA_CHECK(
        cudaMemcpyAsync(stream_buf_, L.host, uint64_t(F_) * stride_, cudaMemcpyHostToDevice, s));
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {
    const int64_t n = std::min<int64_t>(8, rows - r0);
    const auto* xr = static_cast<const uint8_t*>(x) + size_t(r0) * row_bytes;
    if (listed)
      k::launch_exact_flags(xr, n, d_, F_, L.b1, L.cache,
                            {backing_dev_.empty() ? nullptr : backing_dev_[size_t(layer)], stride_,
                             store_.layout().fc2_offset},
                            exact_flags_, act_code_, s);
    for (int64_t r = 0; r < n; ++r) {
      const void* xi = xr + size_t(r) * row_bytes;
      const float* res = residual + (r0 + r) * d_;
      float* o = out + (r0 + r) * d_;
      if (listed)
        row_sparse(L, xi, exact_flags_ + r * F_, res, o, L.mode == LayerMode::Fetch, s);
      else
        row_dense(L, xi, res, o, s);
    }
  }
}

void OffloadRuntime::after_decode_step() {
  ++decode_steps_seen_;
  if (!stats_events_) return;
  float step = elapsed_or(step_begin_, step_end_, -1.0f);
  if (step >= 0) {
    timing_[0] += step;
    timed_steps_ += 1;
  }
  for (const Layer& L : layers_) {
    if (!L.timed) continue;
    timing_[1] += std::max(0.0f, elapsed_or(L.t_begin, L.t_end, 0.0f));
    timing_[2] += std::max(0.0f, elapsed_or(L.t_wait, L.t_end, 0.0f));
  }
  if (exact_ || tuning_.recall_every <= 0 || decode_steps_seen_ % tuning_.recall_every != 0) return;
  // The prediction of this step against the exact set from the saved FFN inputs (not timed).
  for (const Layer& L : layers_) {
    if (!(L.mode == LayerMode::Resident || L.mode == LayerMode::Fetch ||
          L.mode == LayerMode::Cpu) ||
        !L.x_save)
      continue;
    k::launch_exact_flags(L.x_save, 1, d_, F_, L.b1, L.cache,
                          {backing_dev_.empty() ? nullptr : backing_dev_[size_t(L.index)], stride_,
                           store_.layout().fc2_offset},
                          exact_flags_, act_code_, stats_stream_);
    k::launch_count_recall(L.flags, exact_flags_, F_, L.stats, stats_stream_);
  }
  SF_CUDA_CHECK(cudaStreamSynchronize(stats_stream_));
}

OffloadStats OffloadRuntime::totals() const {
  OffloadStats t;
  std::vector<uint64_t> c(k::kStatCount);
  for (const Layer& L : layers_) {
    SF_CUDA_CHECK(cudaMemcpy(c.data(), L.stats, c.size() * 8, cudaMemcpyDeviceToHost));
    t.active += double(c[k::kStatActive]);
    t.hits += double(c[k::kStatHits]);
    t.fetched += double(c[k::kStatFetched]);
    if (L.mode == LayerMode::Cpu) {
      t.cpu_neurons += double(c[k::kStatOverflow]);
    } else {
      t.overflow += double(c[k::kStatOverflow]);
      t.pcie_bytes += double(c[k::kStatOverflow]) * double(2 * d_ * int64_t(dtype_size(act_)));
    }
    t.pcie_bytes += double(c[k::kStatFetched]) * double(stride_);
    t.exact_rows += double(c[k::kStatExactRows]);
    t.exact_active += double(c[k::kStatExactActive]);
    t.true_pos += double(c[k::kStatTruePos]);
    t.false_pos += double(c[k::kStatFalsePos]);
  }
  t.step_ms = timing_[0];
  t.transfer_ms = timing_[1];
  t.wait_ms = timing_[2];
  t.timed_steps = timed_steps_;
  return t;
}

uint64_t OffloadRuntime::attention_host_bytes() const {
  return uint64_t(plan_.attention_host_layers) * 4 * uint64_t(d_) * uint64_t(d_) * dtype_size(act_);
}

double OffloadRuntime::fixed_pcie_bytes_per_token() const {
  const double es = double(dtype_size(act_));
  return double(streamed_layers_) * double(F_) * double(stride_) +
         double(cpu_layers_) * (double(d_) * (es + 4) + double(k::kHeadInts + 2 * F_) * 4) +
         double(attention_host_bytes());
}

std::string OffloadRuntime::describe() const {
  std::string s = fmt::format(
      "offload runtime: {} layers, hidden {}, ffn {}, bundle {} B, predictor {}; GPU memory "
      "{}\n",
      L_, d_, F_, stride_, exact_ ? "exact (oracle)" : "model", mib(double(device_bytes_)));
  if (probe_.pcie_kernel_GBps > 0)
    s += fmt::format(
        "  host->GPU: kernel reading mapped memory {:.1f} GB/s, DMA copy {:.1f} GB/s; CPU cold "
        "neurons "
        "{:.1f} GB/s\n",
        probe_.pcie_kernel_GBps, probe_.pcie_dma_GBps, probe_.cpu_GBps);
  s += fmt::format(
      "  side stream ({}prediction, lookup, fetch): {}\n", "the second half of the ",
      side_priority_ ? "highest priority (SPARSEFLOW_SIDE_PRIORITY=1)" : "default priority");
  if (plan_.attention_host_layers > 0)
    s += fmt::format(
        "  attention weights of layers {}-{} in mapped host memory: {} read over PCIe per token\n",
        L_ - plan_.attention_host_layers, L_ - 1, mib(double(attention_host_bytes())));
  for (int64_t l = 0; l < L_; ++l) {
    const Layer& L = layers_[size_t(l)];
    // Collapse runs of identical layers.
    int64_t e = l;
    while (e + 1 < L_ && layers_[size_t(e + 1)].mode == L.mode &&
           layers_[size_t(e + 1)].pinned == L.pinned && layers_[size_t(e + 1)].lru == L.lru)
      ++e;
    s += fmt::format("  layers {:>2}-{:<2} {:<14} pinned {:>6}  LRU slots {:>6}  ({})\n", l, e,
                     layer_mode_name(L.mode), L.pinned, L.lru,
                     mib(double(L.pinned + L.lru) * double(stride_)));
    l = e;
  }
  return s;
}

nlohmann::ordered_json OffloadRuntime::describe_json() const {
  nlohmann::ordered_json j = {{"layers", L_},
                              {"hidden", d_},
                              {"ffn", F_},
                              {"bundle_bytes", stride_},
                              {"predictor", exact_ ? "exact" : "model"},
                              {"device_bytes", device_bytes_},
                              {"pcie_kernel_GBps", probe_.pcie_kernel_GBps},
                              {"pcie_dma_GBps", probe_.pcie_dma_GBps},
                              {"cpu_GBps", probe_.cpu_GBps},
                              {"attention_host_layers", plan_.attention_host_layers},
                              {"attention_host_bytes", attention_host_bytes()},
                              {"per_layer", nlohmann::json::array()}};
  for (const Layer& L : layers_)
    j["per_layer"].push_back(
        {{"mode", layer_mode_name(L.mode)}, {"pinned", L.pinned}, {"lru_slots", L.lru}});
  return j;
}

}  // namespace sf::offload
