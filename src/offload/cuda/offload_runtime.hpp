// The CUDA side of neuron-level offloading: an FfnProvider (model/cuda_engine.hpp) that owns every
// layer's FFN. Per layer it holds a pool of bundle slots (hot neurons pinned, the rest an LRU
// cache), the slot map, the predictor, the active list; it runs, per decode token and layer:
//
//   main stream:  LN1 -> [predictor stage 1] -> qkv, attention, out_proj, LN2 -> wait -> fc1 -> fc2
//   side stream:          fork -> predictor stage 2 -> lookup (hits, LRU victims) -> fetch -> join
//
// so the fetch of missing bundles (a kernel reading mapped pinned host memory) overlaps attention
// and the whole step stays one CUDA graph. Prefill rows use the exact active set (all fc1 rows),
// one row at a time through the same kernels, so a prompt of up to 8 tokens matches the resident
// engine.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/cuda_engine.hpp"
#include "offload/cuda/offload_kernels.hpp"
#include "offload/neuron_store.hpp"
#include "offload/offload_options.hpp"
#include "offload/offloaded_opt.hpp"
#include "offload/planner.hpp"

namespace sf::offload {

enum class LayerMode {
  Resident,       // every neuron pinned: the sparse FFN over the active list, no traffic
  Fetch,          // pinned hot neurons + LRU cache, misses fetched from mapped host memory
  Cpu,            // pinned neurons on the GPU, the rest computed by the CPU
  Streamed,       // stream policy: the whole layer copied each token, then the dense FFN
  DenseResident,  // stream policy: the whole layer resident, dense FFN
};
const char* layer_mode_name(LayerMode m);

class OffloadRuntime final : public model::FfnProvider {
 public:
  OffloadRuntime(const model::Model& model, const NeuronStore& store, const Plan& plan,
                 const OffloadOptions& opt, const OffloadTuning& tuning, int device);
  ~OffloadRuntime() override;
  OffloadRuntime(const OffloadRuntime&) = delete;
  OffloadRuntime& operator=(const OffloadRuntime&) = delete;

  bool owns_ffn(int64_t) const override { return true; }
  void before_attention(int64_t layer, const void* x, int64_t rows, void* stream) override;
  void ffn(int64_t layer, const void* x, int64_t rows, const float* residual, float* out,
           bool decode, void* stream) override;
  // Profiled decode steps (CudaEngine::profile_decode): the FFN splits into ffn_wait (for the rest
  // of the side stream's prediction, lookup and fetch), ffn_fc1 and ffn_fc2.
  void set_stage_marker(std::function<void(const char*, double)> mark) override {
    mark_ = std::move(mark);
  }

  // After a synchronised decode step: reads its timing events, runs the recall check when due.
  void after_decode_step();
  // Cumulative counters over all layers (prefill rows included); the caller takes differences.
  OffloadStats totals() const;
  const OffloadProbe& probe() const { return probe_; }
  std::string describe() const;
  nlohmann::ordered_json describe_json() const;
  size_t device_bytes() const { return device_bytes_; }
  LayerMode mode(int64_t layer) const;
  int64_t streamed_layers() const { return streamed_layers_; }
  // Bytes over PCIe per decode token that do not depend on the token: streamed layers, the cpu
  // policy's x / y / list copies, the attention weights the plan left on the host.
  double fixed_pcie_bytes_per_token() const;
  // The q/k/v/out weights of the plan's last attention_host_layers layers, which the engine reads
  // from mapped host memory (CudaOptions::attention_host_layers): 4 hidden^2 elements per layer.
  uint64_t attention_host_bytes() const;

 private:
  struct Layer;
  struct CpuTask;
  void init(int device);
  void release();
  void* dev_alloc(size_t bytes, const char* what);
  void* host_alloc(size_t bytes, const char* what);  // pinned, mapped
  void setup_backing();
  bool register_backing_in_place();  // SPARSEFLOW_OFFLOAD_REGISTER=1; false: not registered, copy
                                     // instead
  void setup_layer(int64_t l, LayerMode mode, int64_t pinned, int64_t lru);
  void run_probe();
  cuda::BundleSource pool_source(const Layer& L) const;
  cuda::SparseFfnArgs ffn_args(const Layer& L, const void* x, const float* residual,
                               float* out) const;
  void row_sparse(Layer& L, const void* x, const uint8_t* flags, const float* residual, float* out,
                  bool allocate, cudaStream_t s);
  void row_dense(Layer& L, const void* x, const float* residual, float* out, cudaStream_t s);
  void cpu_part(Layer& L, const void* x, cudaStream_t list_stream, cudaStream_t s);
  static void CUDART_CB cpu_callback(void* task);

  const model::Model& model_;
  const NeuronStore& store_;
  Plan plan_;
  OffloadOptions opt_;
  OffloadTuning tuning_;
  int64_t L_ = 0, d_ = 0, F_ = 0;
  DType act_ = DType::F16;
  int act_code_ = 1, cw_ = 8;
  uint64_t stride_ = 0;
  bool exact_ = false;

  std::vector<void*> dev_allocs_, host_allocs_, registered_;
  bool backing_registered_ = false;  // host bundles registered in place, not copied
  size_t device_bytes_ = 0;
  std::vector<const uint8_t*>
      backing_dev_;  // per layer: device alias of the host bundles (empty: none)
  std::vector<const uint8_t*>
      backing_host_;  // per layer: the pinned host bundles (registered or copied)
  cudaStream_t side_ = nullptr, cpu_stream_ = nullptr, stats_stream_ = nullptr;

  // Shared scratch (layers run one after another on the main stream).
  float* pred_scratch_ = nullptr;
  float* fc2_partial_ = nullptr;  // the sparse fc2's class sums (k::fc2_partial_floats)
  int32_t* lookup_scratch_ = nullptr;
  uint8_t* exact_flags_ = nullptr;  // [8, ffn]
  uint8_t* stream_buf_ = nullptr;   // [ffn, stride]: one streamed layer
  int32_t* all_ids_ = nullptr;      // [ffn] every neuron in lane-class order
  int32_t* all_neg_ = nullptr;      // [ffn] -1
  int32_t* all_head_ = nullptr;     // [kHeadInts]
  void* all_h_ = nullptr;           // [ffn] act

  std::vector<Layer> layers_;
  OffloadProbe probe_;
  int64_t decode_steps_seen_ = 0;
  bool stats_events_ = false;
  int side_priority_ =
      0;  // the side stream's priority (cudaStreamCreateWithPriority; lower is higher)
  std::function<void(const char*, double)> mark_;  // set during a profiled pass only
  cudaEvent_t step_begin_ = nullptr, step_end_ = nullptr;
  double timing_[3] = {0, 0, 0};  // step, transfer, wait (ms), summed by after_decode_step
  double timed_steps_ = 0;
  int64_t streamed_layers_ = 0, cpu_layers_ = 0;
};

}  // namespace sf::offload
