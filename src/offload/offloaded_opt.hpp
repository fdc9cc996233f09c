// The offloaded OPT engine: the CUDA engine (model/cuda_engine.hpp) with every layer's
// FFN computed by the neuron-level offload runtime (src/offload/cuda/): hot neurons pinned on the
// GPU, an LRU cache of neuron bundles, predicted-active neurons fetched from mapped pinned host
// memory while attention runs, the sparse FFN over cache slots. Plain C++ interface (no CUDA
// types), so the CLI includes it in every build.
//
// Policies (OffloadOptions::policy): fetch (above), stream (the naive baseline: every non-resident
// layer's FFN bundles copied whole each token, then the dense FFN), cpu (cold neurons computed on
// the CPU from the host bundles, PowerInfer's choice), auto (fetch or cpu per layer from costs
// measured at startup). Predictors: the calibrated low-rank ones in the .sf file, or exact (the
// true active set, computed from all fc1 rows: for tests; its output equals the resident GEMV's
// bit for bit). Batch 1 decode. An interface: the engine exists in builds with the CUDA backend.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/cuda_engine.hpp"
#include "model/generate.hpp"
#include "offload/offload_options.hpp"
#include "offload/planner.hpp"

namespace sf::offload {

class NeuronStore;

// Knobs of the runtime that are not user options (tests and the benchmark script set them).
struct OffloadTuning {
  int recall_every =
      4;  // --stats: check the prediction against the exact set every N tokens (0: never)
  int fetch_grid = 0;             // blocks of the fetch kernel (0: 2 per SM)
  bool probe = true;              // measure PCIe (kernel and DMA) and CPU bandwidth at startup
  int64_t context_tokens = 2048;  // the KV cache the plan reserves when no plan is given
};

// What --stats reports: sums over the decode steps since the last generate() began (prefill
// excluded), per token where it says so.
struct OffloadStats {
  int64_t tokens = 0;  // decode steps
  double active = 0;   // neurons in the active lists (predicted, or exact), all layers
  double hits = 0, fetched = 0,
         overflow = 0;     // of those: on the GPU, copied in, read from the host directly
  double cpu_neurons = 0;  // computed on the CPU (cpu policy)
  double pcie_bytes = 0;   // bytes over PCIe (fetches, direct reads, streamed layers, cpu x/y)
  double exact_rows = 0, exact_active = 0, true_pos = 0, false_pos = 0;  // recall checks
  double step_ms = 0, transfer_ms = 0,
         wait_ms = 0;  // GPU time of the layers, of the transfers, waited for
  double timed_steps = 0;
  double hit_rate() const { return active > 0 ? hits / active : 1.0; }
  double recall() const { return exact_active > 0 ? true_pos / exact_active : 1.0; }
  double precision() const {
    return true_pos + false_pos > 0 ? true_pos / (true_pos + false_pos) : 1.0;
  }
  double bytes_per_token() const { return tokens ? pcie_bytes / double(tokens) : 0.0; }
  nlohmann::ordered_json to_json() const;
};

// Bandwidths measured at startup.
struct OffloadProbe {
  double pcie_kernel_GBps = 0;  // zero-copy: a kernel reading mapped pinned host memory
  double pcie_dma_GBps = 0;     // one large cudaMemcpyAsync from pinned host memory
  double cpu_GBps = 0;  // the CPU computing cold neurons from host bundles (bundle bytes / s)
};

class OffloadedOpt {
 public:
  virtual ~OffloadedOpt() = default;

  virtual model::CudaEngine& engine() = 0;  // forward / perplexity / reset go through it unchanged
  virtual const Plan& plan() const = 0;
  virtual const NeuronStore& store() const = 0;
  virtual const OffloadProbe& probe() const = 0;
  // Generation as CudaEngine::generate (batch 1), collecting stats per decode step when opt.stats.
  virtual model::GenerateResult generate(std::span<const int32_t> prompt, int64_t max_new_tokens,
                                         const model::SamplingParams& sampling,
                                         const std::function<void(int32_t)>& on_token = {}) = 0;
  virtual OffloadStats stats() const = 0;
  // Per layer: mode, pinned and cache slots; device memory of the runtime.
  virtual std::string describe() const = 0;
  virtual nlohmann::ordered_json describe_json() const = 0;
  // GPU memory the offload runtime holds (pools, predictors, buffers).
  virtual size_t device_bytes() const = 0;
};

// Opens the neuron store of `model` (packing a row-major FFN in host memory), plans the placement
// for opt.gpu_memory (or follows `plan` when given), uploads. `model` must outlive the engine.
// Throws Error(NoDevice) without a GPU, Error(InvalidArgument) for a budget that cannot work.
// Defined by the CUDA backend only; code that builds either way goes through
// backend::require_cuda(...).open_offloaded (backend/backends.hpp).
std::unique_ptr<OffloadedOpt> make_offloaded_opt(const model::Model& model,
                                                 const OffloadOptions& opt,
                                                 const model::CudaOptions& cuda = {},
                                                 const OffloadTuning& tuning = {},
                                                 std::optional<Plan> plan = std::nullopt);

}  // namespace sf::offload
